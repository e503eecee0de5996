#include "worker/http/http2.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "common/iprange.h"
#include "common/log.h"
#include "common/tls.h"
#include "shm/metrics.h"
#include "worker/admission/security.h"
#include "worker/core/clock.h"
#include "worker/core/conn.h"
#include "worker/core/connlimit.h"
#include "worker/http/accesslog.h"
#include "worker/http/dispatch.h"
#include "worker/http/h2mem.h"
#include "worker/http/http2_fields.h"
#include "worker/http/relay.h"
#include "worker/http/request.h"

#define OUT_HIGH (256 * 1024)  /* frames are produced while the transport holds less */
#define STREAM_LOW (64 * 1024) /* a stream's handler hears on_writable at or below this */
#define FILE_CHUNK (64 * 1024) /* a file is read into its stream's queue this much at a time */
#define TICK_MS 1000           /* timeouts, flood budget and retirement run on this tick */
#define LINGER_MS 2000 /* a finished connection reads what the client still sends this long */
/* Response bytes queued in memory across a connection's streams. Past it, a stream holding more
 * than its fair share (CONN_QUEUED_HIGH / open streams) tells its handler to pause: without it,
 * maxConcurrentStreams streams whose client opens no window hold 256 KiB each. */
#define CONN_QUEUED_HIGH (1024 * 1024)
/* Frames that cost us work and carry no request (PING, SETTINGS, PRIORITY, RST_STREAM, empty
 * DATA): a budget of FLOOD_BURST refilled at FLOOD_RATE a second; a connection past it is closed
 * with ENHANCE_YOUR_CALM (CVE-2019-9512, -9515, -9518). WINDOW_UPDATE is not counted: a client
 * with a small window sends one per few DATA frames of a large download. */
#define FLOOD_BURST 1000
#define FLOOD_RATE 100
/* Rapid reset (CVE-2023-44487): nghttp2's token bucket for streams the client resets. */
#define RESET_BURST 1000
#define RESET_RATE 33
#define MAX_CONTINUATIONS 8 /* CONTINUATION flood (nghttp2 refuses more per header block) */
#define MAX_SETTINGS 32     /* entries in one SETTINGS frame */
#define HPACK_TABLE 4096    /* our encoder's dynamic table, whatever the client allows */
/* The client's stream ids run out at 2^31-1 (RFC 9113 5.1.1): past this one the connection
 * retires gracefully so that the client opens a new one in time. */
#define STREAM_ID_HIGH 0x7ff00000
/* One read takes up to this much: a connection multiplexes many streams' frames (and uploads
 * arrive in 16 KiB DATA frames), so a larger read than HTTP/1.1's saves system calls. */
#define READ_MAX (64 * 1024 - 128)
/* A DATA frame's payload over TLS: with its 9-byte header, one full TLS record (data_length). */
#define TLS_DATA_MAX (16384 - 9)

typedef struct stream_s stream_t;
typedef struct fg_http2_conn_s fg_http2_conn_t;

/* Spare stream buffers a worker keeps (see bufs_take). Under AddressSanitizer nothing is kept,
 * so that a use of a stream's buffer after the stream is gone is still reported. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARE_BUFS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPARE_BUFS 0
#endif
#endif
#ifndef SPARE_BUFS
#define SPARE_BUFS 64
#endif

/* A stream's request body and response queue, with the drain callback on the body. They
 * outlive their stream: the worker keeps up to SPARE_BUFS of them, empty, for the next streams,
 * since making and freeing two evbuffers and a callback entry per stream is about 1,300
 * instructions. */
typedef struct bufs_s {
    struct evbuffer *body, *out;
    struct evbuffer_cb_entry *body_cb, *out_cb;
    stream_t *s;         /* the stream they serve; NULL while spare */
    struct bufs_s *next; /* the spare list */
} bufs_t;

/* Worker-wide: the callbacks and options every session shares. */
typedef struct {
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    bufs_t *spare; /* empty stream buffers, at most SPARE_BUFS */
    unsigned nspare;
    nghttp2_option *trusted_opt; /* FG_HTTP2_TRUSTED sessions: no rapid-reset limit */
    fg_h2mem_t *mem;             /* nghttp2's allocations, every session of the worker */
    /* TICK_MS as a libevent common timeout: every connection's tick shares one queue, so
     * adding and firing them costs no heap operations. */
    const struct timeval *tick;
    struct timeval tick_tv; /* the plain timeout, should libevent refuse a common one */
} shared_t;

struct fg_http2_conn_s {
    fg_session_t session; /* first: the worker's list of sessions (worker/core/frontend.h) */
    fg_worker_t *w;
    const fg_server_t *server;
    fg_conn_t *c;
    nghttp2_session *ng;
    struct event *kick_ev; /* runs service() after a handler queued something */
    struct event *tick_ev;
    stream_t *streams;    /* open streams with a request */
    stream_t *hdr_stream; /* the last stream opened, for on_header; NULL once it is freed */
    unsigned nstreams;
    size_t out_queued;     /* bytes in the streams' out queues (on_out_change) */
    unsigned busy : 1;     /* inside nghttp2 or the handlers: destruction deferred */
    unsigned dead : 1;     /* destroy when busy ends */
    unsigned due : 1;      /* a stream has work for its handler (run_due) */
    unsigned kicked : 1;   /* kick_ev is active */
    unsigned read_off : 1; /* reading paused while the output is at its bound */
    unsigned retiring : 1; /* shutdown notice sent */
    unsigned final_goaway : 1;
    unsigned hsts : 1;
    unsigned served : 1;    /* a request arrived: the idle limit is keepAlive, not header */
    unsigned lingering : 1; /* all said, write side shut: reading until the client closes */
    unsigned trusted : 1;   /* FG_HTTP2_TRUSTED: no flood budget */
    unsigned tls : 1;       /* frames become TLS records: DATA is laid out whole (on_send_data) */
    uint64_t retire_ms;
    uint64_t linger_end_ms;
    uint64_t idle_since_ms;
    uint64_t flood_ms; /* when flood_tokens was last refilled */
    unsigned flood_tokens;
    char client_ip[64];
    uint16_t client_port;
    struct sockaddr_storage peer;
    int client_tls;       /* TLS to the balancer in front (fg_worker_t.accept_client_tls) */
    char balancer_ip[48]; /* the PROXY protocol header's sender; "" = none */
};

struct stream_s {
    fg_request_t req; /* req.proto = this; the stream lives in req.pool */
    fg_http2_conn_t *h;
    stream_t *prev, *next;
    int32_t id;
    fg_http_header_t *hdrs; /* request fields, then request trailers (tr) */
    size_t nhdrs, cap;
    fg_http_header_t *tr;
    size_t ntr, trcap;
    size_t field_bytes; /* decoded field section size, as RFC 9113 6.5.2 counts it */
    fg_str_t authority, path;
    struct evbuffer *out;   /* response body waiting for the client's window */
    struct evbuffer *after; /* body sent while a file is still queued */
    bufs_t *bufs;           /* req.body and out */
    int file_fd;
    off_t file_off, file_left;
    nghttp2_nv *trailers;
    size_t ntrailers;
    uint64_t progress_ms;   /* when bytes last moved for this stream, either way */
    unsigned in_req : 1;    /* a handler (or an error answer) owns req */
    unsigned dispatch : 1;  /* head complete, not yet dispatched */
    unsigned head : 1;      /* the request's header block ended */
    unsigned body_due : 1;  /* tell the handler about req->body */
    unsigned write_due : 1; /* tell the handler it may write again */
    unsigned want_w : 1;    /* the handler waits for on_writable */
    unsigned resp_started : 1;
    unsigned nobody : 1;     /* the response has no content (HEAD, 204, 304, length 0) */
    unsigned finished : 1;   /* the handler is done: the queue ends the response */
    unsigned deferred : 1;   /* nghttp2 waits for resume_data */
    unsigned paused : 1;     /* ops->pause_body */
    unsigned too_large : 1;  /* fields past maxHeaderListSize or maxHeaders */
    unsigned over_limit : 1; /* body past the body size limit */
    /* RFC 8441 tunnel: the stream is an end of a relay (tunnel_* below); req.body holds the
     * client's DATA bytes not yet taken, out what goes to the client. */
    unsigned tunnel : 1;
    unsigned t_reading : 1;     /* the relay takes input */
    unsigned t_read_due : 1;    /* tell the relay about input */
    unsigned t_drain_due : 1;   /* tell the relay its output went out */
    unsigned t_eof_due : 1;     /* tell the relay the client ended its sending */
    unsigned t_closing : 1;     /* nghttp2 closed the stream: no more frames for it */
    const fg_conn_cbs_t *t_cbs; /* the relay's callbacks while it holds the stream, else NULL */
    void *t_arg;
};

static void service(fg_http2_conn_t *h);
static void linger(fg_http2_conn_t *h);
static void destroy(fg_http2_conn_t *h);
static void kick(fg_http2_conn_t *h);
static const fg_req_ops_t h2_ops;
static void tunnel_due(stream_t *s);
static void tunnel_gone(stream_t *s, uint32_t code);

static shared_t *shared(const fg_worker_t *w)
{
    return w->frontend_state[fg_http2_frontend.slot];
}

static uint64_t now_ms(void)
{
    return fg_clock_now_ms();
}

/* ---- streams ---- */

static size_t queued(const stream_t *s)
{
    return evbuffer_get_length(s->out) + (size_t)s->file_left +
           (s->after ? evbuffer_get_length(s->after) : 0);
}

/* n bytes of stream id were taken (or thrown away): its window reopens by as much (RFC 9113
 * 6.9), and the connection's too, except on a trusted connection (a tunnel), whose connection
 * window reopened as the bytes arrived (on_data_chunk). */
static void give_back(fg_http2_conn_t *h, int32_t id, size_t n)
{
    if (h->trusted)
        nghttp2_session_consume_stream(h->ng, id, n);
    else
        nghttp2_session_consume(h->ng, id, n);
}

/* The handler took body bytes from req->body: open the window by as much, so that what a
 * stream holds unread never exceeds its window. */
static void on_body_drain(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    stream_t *s = ((bufs_t *)arg)->s;
    (void)buf;
    if (s == NULL || info->n_deleted == 0)
        return;
    give_back(s->h, s->id, info->n_deleted);
    s->progress_ms = now_ms();
    kick(s->h);
}

/* A stream's out queue changed: the connection's total follows (CONN_QUEUED_HIGH). */
static void on_out_change(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    stream_t *s = ((bufs_t *)arg)->s;
    (void)buf;
    if (s != NULL)
        s->h->out_queued = s->h->out_queued + info->n_added - info->n_deleted;
}

static void log_request(stream_t *s)
{
    fg_request_t *req = &s->req;
    fg_security_on_finish(req);
    fg_accesslog_write(s->h->w->accesslog, req);
    if (s->h->w->record)
        s->h->w->record->requests++;
}

/* The client's stream went away (RST_STREAM, connection end, a timeout) while a handler held
 * req: the handler lets go, and the request is logged as 499 unless it had answered. */
static void detach(stream_t *s, const char *error)
{
    fg_request_t *req = &s->req;
    if (s->t_cbs != NULL)
        tunnel_gone(s, NGHTTP2_CANCEL);
    if (!s->in_req)
        return;
    s->in_req = 0;
    if (req->handler && req->handler->on_abort)
        req->handler->on_abort(req);
    req->handler = NULL;
    if (!s->resp_started)
        req->status = 499;
    req->error = req->error ? req->error : error;
    log_request(s);
}

static void bufs_free(bufs_t *b)
{
    if (b->body)
        evbuffer_free(b->body);
    if (b->out)
        evbuffer_free(b->out);
    free(b);
}

/* Buffers for stream s: a spare set of the worker's, or a new one. NULL without memory. */
static bufs_t *bufs_take(shared_t *sh, stream_t *s)
{
    bufs_t *b = sh->spare;
    if (b != NULL) {
        sh->spare = b->next;
        sh->nspare--;
    } else {
        b = calloc(1, sizeof(*b));
        if (b == NULL)
            return NULL;
        b->body = evbuffer_new();
        b->out = evbuffer_new();
        b->body_cb = b->body ? evbuffer_add_cb(b->body, on_body_drain, b) : NULL;
        b->out_cb = b->out ? evbuffer_add_cb(b->out, on_out_change, b) : NULL;
        if (b->out_cb == NULL || b->body_cb == NULL) {
            bufs_free(b);
            return NULL;
        }
    }
    b->s = s;
    return b;
}

/* The stream is gone: its buffers are emptied (what they still hold is dropped, as freeing them
 * would) and kept for another stream, or freed beyond SPARE_BUFS. With b->s cleared first, the
 * drain tells no stream and opens no window. */
static void bufs_give(shared_t *sh, bufs_t *b)
{
    b->s = NULL;
    size_t nbody = evbuffer_get_length(b->body), nout = evbuffer_get_length(b->out);
    if (nbody > 0)
        evbuffer_drain(b->body, nbody);
    if (nout > 0)
        evbuffer_drain(b->out, nout);
    /* A buffer that did not drain (frozen) is not handed to another stream. */
    if (sh->nspare + 1 > SPARE_BUFS || (nbody > 0 && evbuffer_get_length(b->body) > 0) ||
        (nout > 0 && evbuffer_get_length(b->out) > 0)) {
        bufs_free(b);
        return;
    }
    b->next = sh->spare;
    sh->spare = b;
    sh->nspare++;
}

static void free_stream(stream_t *s)
{
    fg_http2_conn_t *h = s->h;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (--h->nstreams == 0)
        h->idle_since_ms = now_ms();
    if (h->hdr_stream == s)
        h->hdr_stream = NULL;
    fg_metrics_conn_close(FG_MG_H2_STREAMS);
    if (s->out)
        h->out_queued -= evbuffer_get_length(s->out); /* bufs_give drains it unseen */
    if (s->file_fd >= 0)
        close(s->file_fd);
    if (s->bufs)
        bufs_give(shared(h->w), s->bufs);
    if (s->after)
        evbuffer_free(s->after);
    fg_request_pool_give(h->w, s->req.pool); /* s goes with it */
}

static stream_t *new_stream(fg_http2_conn_t *h, int32_t id)
{
    fg_pool_t *pool = fg_request_pool_take(h->w);
    stream_t *s = pool ? fg_pool_calloc(pool, sizeof(*s)) : NULL;
    if (s == NULL) {
        fg_request_pool_give(h->w, pool);
        return NULL;
    }
    s->h = h;
    s->id = id;
    s->file_fd = -1;
    s->req.pool = pool;
    s->bufs = bufs_take(shared(h->w), s);
    if (s->bufs) {
        s->req.body = s->bufs->body;
        s->out = s->bufs->out;
    }
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    h->nstreams++;
    fg_metrics_conn_open(FG_MG_H2_STREAMS); /* free_stream closes it on every path */
    if (s->bufs == NULL) {
        free_stream(s);
        return NULL;
    }
    fg_request_t *req = &s->req;
    req->worker = h->w;
    req->server = h->server;
    req->proto = s;
    req->ops = &h2_ops;
    req->version = 20;
    req->ssl = fg_conn_ssl(h->c);
    req->scheme = req->ssl || h->client_tls ? FG_STR_LIT("https") : FG_STR_LIT("http");
    req->start_us = fg_clock_now_us();
    req->content_length = -1;
    memcpy(req->client_ip, h->client_ip, sizeof(req->client_ip));
    memcpy(req->balancer_ip, h->balancer_ip, sizeof(req->balancer_ip));
    req->client_port = h->client_port;
    req->client_addr = h->peer;
    s->progress_ms = req->start_us / 1000;
    h->served = 1;
    return s;
}

/* ---- response (fg_req_ops_t) ---- */

/* A field for nghttp2. Literal names and values (the gateway's own fields) are used in place;
 * others (a destination's fields, valid only while the exchange's callback runs) are copied:
 * by nghttp2 when the frame is submitted at once (keep 0), into the stream's pool when it is
 * submitted later (keep 1, trailers). */
static int add_nv_as(nghttp2_nv *nv, fg_pool_t *pool, fg_str_t name, fg_str_t value, int literal,
                     int keep)
{
    fg_str_t lower = fg_http2_lower(pool, name);
    if (lower.base == NULL)
        return -1;
    uint8_t flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    if (!literal && keep) {
        if (lower.base == name.base &&
            (lower.base = fg_pool_strndup(pool, name.base, name.len)) == NULL)
            return -1;
        if ((value.base = fg_pool_strndup(pool, value.base, value.len)) == NULL)
            return -1;
    } else if (!literal) {
        flags = NGHTTP2_NV_FLAG_NONE;
    }
    *nv = (nghttp2_nv){(uint8_t *)lower.base, (uint8_t *)value.base, lower.len, value.len, flags};
    return 0;
}

static int add_nv(nghttp2_nv *nv, fg_pool_t *pool, fg_str_t name, fg_str_t value)
{
    return add_nv_as(nv, pool, name, value, 1, 0);
}

/* ":status" and the fields of hdrs fit for HTTP/2, with `extra` spare entries after them. The
 * array and a copy of the fields' bytes (names in lowercase, RFC 9113 8.2) are one block of the
 * stream's pool, which outlives the frame (nghttp2 packs a HEADERS frame only while its stream
 * is open): nghttp2 neither copies nor lowercases them again, and a head costs one allocation
 * whatever its number of fields. */
static nghttp2_nv *head_nv(fg_request_t *req, int status, const fg_headers_t *hdrs, size_t extra,
                           size_t *n)
{
    size_t bytes = 3;
    for (size_t i = 0; i < hdrs->n; i++)
        bytes += hdrs->v[i].name.len + hdrs->v[i].value.len;
    size_t slots = hdrs->n + 1 + extra;
    nghttp2_nv *nv = fg_pool_alloc(req->pool, slots * sizeof(*nv) + bytes);
    if (nv == NULL)
        return NULL;
    char *w = (char *)(nv + slots);
    w[0] = (char)('0' + status / 100 % 10);
    w[1] = (char)('0' + status / 10 % 10);
    w[2] = (char)('0' + status % 10);
    const uint8_t flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    nv[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)w, 7, 3, flags};
    w += 3;
    size_t k = 1;
    for (size_t i = 0; i < hdrs->n; i++) {
        const fg_http_header_t *f = &hdrs->v[i];
        if (f->name.len == 0 || fg_http2_connection_specific(f->name))
            continue;
        fg_str_t name = fg_http2_lower_copy(f->name, w);
        if (name.base == w)
            w += name.len;
        uint8_t *value = (uint8_t *)w;
        w = fg_str_put(w, f->value.base, f->value.len);
        nv[k++] = (nghttp2_nv){(uint8_t *)name.base, value, name.len, f->value.len, flags};
    }
    *n = k;
    return nv;
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *arg);

static int ops_send_head(fg_request_t *req, int status, const fg_headers_t *hdrs,
                         int64_t content_length)
{
    stream_t *s = req->proto;
    fg_http2_conn_t *h = s->h;
    if (s->resp_started || h->dead)
        return -1;
    s->resp_started = 1;
    req->status = status;
    /* A response known to be empty ends with its HEADERS (END_STREAM), which a gRPC
     * "trailers-only" answer relies on (its status is in that one HEADERS frame). */
    s->nobody = fg_http1_response_bodiless(req->method, status) != 0 || content_length == 0;
    int no_length = (status >= 100 && status < 200) || status == 204 || status == 304;
    fg_str_t date, server;
    fg_request_stamp(req, hdrs, &date, &server);
    size_t n;
    nghttp2_nv *nv = head_nv(req, status, hdrs, 4, &n);
    if (nv == NULL)
        return -1;
    /* The names below are lowercase literals: add_nv copies nothing for them. */
    if (h->hsts)
        add_nv(&nv[n++], req->pool, FG_STR_LIT("strict-transport-security"),
               fg_str(h->server->tls->hsts_header));
    if (date.len)
        add_nv(&nv[n++], req->pool, FG_STR_LIT("date"), date);
    if (server.len)
        add_nv(&nv[n++], req->pool, FG_STR_LIT("server"), server);
    if (!no_length && content_length >= 0) {
        char *len = fg_pool_alloc(req->pool, 20);
        if (len == NULL)
            return -1;
        size_t l = (size_t)(fg_put_u64(len, (uint64_t)content_length) - len);
        add_nv(&nv[n++], req->pool, FG_STR_LIT("content-length"), (fg_str_t){len, l});
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_body};
    if (nghttp2_submit_response(h->ng, s->id, nv, n, s->nobody ? NULL : &prd) != 0)
        return -1;
    kick(h);
    return 0;
}

/* An interim response (RFC 9110 15.2; RFC 9113 8.1: HEADERS before the final ones). 101 has no
 * meaning in HTTP/2 (RFC 9113 8.6) and is dropped. */
static int ops_send_interim(fg_request_t *req, int status, const fg_headers_t *hdrs)
{
    stream_t *s = req->proto;
    if (s->resp_started || status < 102 || status > 199)
        return 0;
    size_t n;
    nghttp2_nv *nv = head_nv(req, status, hdrs, 0, &n);
    if (nv == NULL ||
        nghttp2_submit_headers(s->h->ng, NGHTTP2_FLAG_NONE, s->id, NULL, nv, n, NULL) < 0)
        return -1;
    kick(s->h);
    return 0;
}

static void resume(stream_t *s)
{
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(s->h->ng, s->id);
    }
    kick(s->h);
}

static int ops_send_body(fg_request_t *req, struct evbuffer *buf)
{
    stream_t *s = req->proto;
    size_t n = evbuffer_get_length(buf);
    if (s->h->dead || !s->resp_started)
        return -1;
    if (s->nobody) {
        evbuffer_drain(buf, n);
        return 0;
    }
    if (s->file_left > 0) {
        if (s->after == NULL && (s->after = evbuffer_new()) == NULL)
            return -1;
        evbuffer_add_buffer(s->after, buf);
    } else {
        evbuffer_add_buffer(s->out, buf);
    }
    req->bytes_out += n;
    if (queued(s) > STREAM_LOW)
        s->want_w = 1;
    resume(s);
    return 0;
}

/* The file is read into the stream's queue FILE_CHUNK at a time as the client's window opens
 * (read_body), so a large file costs one open descriptor and a bounded buffer. */
static int ops_send_file(fg_request_t *req, int fd, off_t off, off_t len)
{
    stream_t *s = req->proto;
    if (s->h->dead || s->file_fd >= 0 || !s->resp_started) {
        close(fd);
        return -1;
    }
    if (s->nobody || len == 0) {
        close(fd);
        return 0;
    }
    s->file_fd = fd;
    s->file_off = off;
    s->file_left = len;
    req->bytes_out += (uint64_t)len;
    resume(s);
    return 0;
}

static int ops_send_trailers(fg_request_t *req, const fg_headers_t *trailers)
{
    stream_t *s = req->proto;
    if (s->nobody || s->trailers != NULL || trailers->n == 0)
        return 0;
    nghttp2_nv *nv = fg_pool_alloc(req->pool, trailers->n * sizeof(*nv));
    if (nv == NULL)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < trailers->n; i++) {
        const fg_http_header_t *f = &trailers->v[i];
        /* RFC 9113 8.1: trailers carry no pseudo-header and no connection-specific field. */
        if (f->name.len == 0 || f->name.base[0] == ':' || fg_http2_connection_specific(f->name))
            continue;
        if (add_nv_as(&nv[k++], req->pool, f->name, f->value, 0, 1) != 0)
            return -1;
    }
    s->trailers = nv;
    s->ntrailers = k;
    return 0;
}

static void ops_finish(fg_request_t *req)
{
    stream_t *s = req->proto;
    if (!s->resp_started || !s->in_req)
        return;
    s->in_req = 0;
    s->finished = 1;
    req->handler = NULL;
    log_request(s);
    /* A body the handler did not read opens the windows as it goes (on_data_chunk). */
    size_t unread = evbuffer_get_length(req->body);
    if (unread > 0)
        evbuffer_drain(req->body, unread);
    resume(s);
}

/* What stream s has queued for the client, as a handler's pending() sees it. While the
 * connection holds more than CONN_QUEUED_HIGH in memory, a stream past its fair share reports
 * at least CONN_QUEUED_HIGH, above any handler's high-water mark, so that it pauses; it hears
 * on_writable (or its relay's drain) as its queue goes out. */
static size_t stream_pending(stream_t *s)
{
    fg_http2_conn_t *h = s->h;
    size_t q = queued(s), mem = evbuffer_get_length(s->out);
    if (h->trusted || h->out_queued <= CONN_QUEUED_HIGH || mem <= CONN_QUEUED_HIGH / h->nstreams)
        return q;
    if (s->t_cbs == NULL)
        s->want_w = 1; /* a relay hears t_drain_due instead */
    return q > CONN_QUEUED_HIGH ? q : CONN_QUEUED_HIGH;
}

static size_t ops_pending(fg_request_t *req)
{
    return stream_pending(req->proto);
}

static void ops_pause_body(fg_request_t *req, int pause)
{
    stream_t *s = req->proto;
    s->paused = pause ? 1 : 0;
    /* Pausing needs no frame: the window stays closed while the body is not taken. */
    if (!pause && (evbuffer_get_length(req->body) > 0 || req->body_done)) {
        s->body_due = 1;
        s->h->due = 1;
        kick(s->h);
    }
}

static void ops_abort(fg_request_t *req)
{
    stream_t *s = req->proto;
    if (!s->in_req)
        return;
    s->in_req = 0;
    req->handler = NULL;
    if (!s->resp_started)
        req->status = 502;
    log_request(s);
    /* RFC 9113 8.1: a response that cannot complete ends in RST_STREAM, never a short one that
     * looks whole. */
    nghttp2_submit_rst_stream(s->h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    kick(s->h);
}

static fg_conn_t *ops_raw_conn(fg_request_t *req)
{
    (void)req; /* a stream's bytes are framed: nothing can be spliced */
    return NULL;
}

static void ops_want_writable(fg_request_t *req)
{
    stream_t *s = req->proto;
    s->want_w = 1;
    if (queued(s) <= STREAM_LOW) {
        s->write_due = 1;
        s->h->due = 1;
    }
    kick(s->h);
}

static int ops_local_addr(fg_request_t *req, char *ip, size_t iplen, uint16_t *port)
{
    stream_t *s = req->proto;
    return fg_conn_local_addr_text(s->h->c, ip, iplen, port);
}

/* ---- RFC 8441 tunnels: a stream as an end of a relay (worker/http/relay.h) ---- */

static void t_set_cbs(void *obj, const fg_conn_cbs_t *cbs, void *arg)
{
    stream_t *s = obj;
    s->t_cbs = cbs;
    s->t_arg = arg;
}

static struct evbuffer *t_input(void *obj)
{
    return ((stream_t *)obj)->req.body;
}

static struct evbuffer *t_output(void *obj)
{
    return ((stream_t *)obj)->out;
}

/* DATA frames go out as the client's windows allow (read_body, on_send_data). */
static int t_flush(void *obj)
{
    stream_t *s = obj;
    if (s->h->dead || s->t_closing)
        return -1;
    resume(s);
    return 0;
}

static size_t t_pending(void *obj)
{
    return stream_pending(obj);
}

/* Input the relay does not take stays in req.body: its window stays closed (RFC 9113 6.9), so
 * the client's sending on this stream stops, and only on this stream. */
static void t_read(void *obj, int enable)
{
    stream_t *s = obj;
    s->t_reading = enable ? 1 : 0;
    if (enable && (evbuffer_get_length(s->req.body) > 0 || s->t_eof_due)) {
        s->t_read_due = 1;
        s->h->due = 1;
        kick(s->h);
    }
}

/* RFC 8441 4: our half-close is END_STREAM, after the queued DATA (read_body). */
static int t_shutdown_write(void *obj)
{
    stream_t *s = obj;
    if (s->h->dead || s->t_closing)
        return -1;
    s->finished = 1;
    resume(s);
    return 0;
}

/* The relay ended. A tunnel that did not end both ways cleanly is reset (RFC 8441 4: the
 * equivalent of a TCP reset); unread bytes give their window back. */
static void t_close(void *obj)
{
    stream_t *s = obj;
    fg_http2_conn_t *h = s->h;
    s->t_cbs = NULL;
    s->t_arg = NULL;
    evbuffer_drain(s->req.body, evbuffer_get_length(s->req.body));
    if (s->t_closing || h->dead)
        return;
    if (!(s->finished && s->req.body_done))
        nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    kick(h);
}

static const fg_relay_end_ops_t tunnel_ops = {
    .set_cbs = t_set_cbs,
    .input = t_input,
    .output = t_output,
    .flush = t_flush,
    .pending = t_pending,
    .read = t_read,
    .shutdown_write = t_shutdown_write,
    .close = t_close,
};

/* The relay hears what happened on the stream, outside nghttp2's callbacks (run_due). Each
 * call may end the relay (t_close). */
static void tunnel_due(stream_t *s)
{
    if (s->t_cbs != NULL && s->t_read_due && s->t_reading) {
        s->t_read_due = 0;
        if (evbuffer_get_length(s->req.body) > 0)
            s->t_cbs->on_read(NULL, s->t_arg);
    }
    if (s->t_cbs != NULL && s->t_drain_due) {
        s->t_drain_due = 0;
        s->t_cbs->on_drain(NULL, s->t_arg);
    }
    if (s->t_cbs != NULL && s->t_eof_due) {
        s->t_eof_due = 0;
        s->t_cbs->on_event(NULL, s->t_arg, FG_CONN_EOF);
    }
}

/* The stream closed under the relay (RST_STREAM, the connection's end). A client that had
 * ended its sending cleanly is heard as such first; what is left is an abort. */
static void tunnel_gone(stream_t *s, uint32_t code)
{
    s->t_closing = 1;
    if (s->t_cbs != NULL && s->req.body_done && code == NGHTTP2_NO_ERROR) {
        s->t_eof_due = 0;
        s->t_cbs->on_event(NULL, s->t_arg, FG_CONN_EOF);
    }
    if (s->t_cbs != NULL)
        s->t_cbs->on_event(NULL, s->t_arg, FG_CONN_ERROR);
}

/* The destination switched (RFC 8441 5): the 101 becomes a 200 on the stream, which stays
 * open (no END_STREAM) and becomes the relay's client end. The relay keeps its own copy of the
 * request's facts; their text stays in the stream's pool, which lives until the stream closes,
 * and a closing stream ends the relay first (tunnel_gone). */
static int ops_switch_protocols(fg_request_t *req, const fg_headers_t *hdrs, fg_relay_t *relay)
{
    stream_t *s = req->proto;
    fg_http2_conn_t *h = s->h;
    if (req->protocol.len == 0 || s->resp_started || !s->in_req || h->dead)
        return -1;
    fg_str_t date, server;
    fg_request_stamp(req, hdrs, &date, &server);
    size_t n;
    nghttp2_nv *nv = head_nv(req, 200, hdrs, 2, &n);
    fg_pool_t *pool = nv ? fg_request_pool_take(h->w) : NULL;
    if (pool == NULL)
        return -1;
    if (date.len)
        add_nv(&nv[n++], req->pool, FG_STR_LIT("date"), date);
    if (server.len)
        add_nv(&nv[n++], req->pool, FG_STR_LIT("server"), server);
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_body};
    if (nghttp2_submit_response(h->ng, s->id, nv, n, &prd) != 0) {
        fg_request_pool_give(h->w, pool);
        return -1;
    }
    s->resp_started = 1;
    req->status = 200;
    if (h->w->record)
        h->w->record->requests++;
    fg_request_t facts = *req;
    facts.pool = pool;
    fg_relay_adopt_request(relay, &facts);
    s->in_req = 0;
    s->paused = 0;
    s->body_due = 0;
    s->tunnel = 1;
    req->handler = NULL;
    fg_relay_attach_end(relay, FG_RELAY_CLIENT, &tunnel_ops, s);
    fg_relay_start(relay);
    kick(h);
    return 0;
}

static const fg_req_ops_t h2_ops = {
    .send_head = ops_send_head,
    .send_interim = ops_send_interim,
    .send_body = ops_send_body,
    .send_file = ops_send_file,
    .send_trailers = ops_send_trailers,
    .finish = ops_finish,
    .pending = ops_pending,
    .pause_body = ops_pause_body,
    .abort = ops_abort,
    .raw_conn = ops_raw_conn,
    .want_writable = ops_want_writable,
    .local_addr = ops_local_addr,
    .switch_protocols = ops_switch_protocols,
};

/* ---- output ---- */

/* Refill the stream's queue from its file. Returns 0 or -1 on a read error. */
static int read_file(stream_t *s)
{
    size_t want = s->file_left < FILE_CHUNK ? (size_t)s->file_left : FILE_CHUNK;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(s->out, (ev_ssize_t)want, &v, 1) < 1)
        return -1;
    ssize_t r;
    do {
        r = pread(s->file_fd, v.iov_base, want, s->file_off);
    } while (r == -1 && errno == EINTR);
    if (r <= 0) {
        fg_log_error("http2: reading a file for stream %d: %s", (int)s->id,
                     r == 0 ? "file shrank" : strerror(errno));
        return -1;
    }
    v.iov_len = (size_t)r;
    evbuffer_commit_space(s->out, &v, 1);
    s->file_off += r;
    s->file_left -= r;
    if (s->file_left == 0) {
        close(s->file_fd);
        s->file_fd = -1;
        if (s->after)
            evbuffer_add_buffer(s->out, s->after);
    }
    return 0;
}

/* nghttp2's data source: how much of the queue the next DATA frame carries (sent without a copy
 * by send_data), the end of the body, or "deferred" until the handler queues more. */
static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    stream_t *s = src->ptr;
    (void)buf;
    (void)arg;
    /* Refill before the queue runs short of a frame, so that a window opening by a few bytes
     * never leaves a tiny remainder to go out as a DATA frame of its own. */
    size_t have = evbuffer_get_length(s->out);
    if (have < length && s->file_left > 0) {
        if (read_file(s) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        have = evbuffer_get_length(s->out);
    }
    size_t n = have < length ? have : length;
    if (n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (s->finished && n == have && s->file_left == 0 &&
        (s->after == NULL || evbuffer_get_length(s->after) == 0)) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        /* RFC 9113 8.1: trailers are a HEADERS frame with END_STREAM after the DATA. */
        if (s->trailers != NULL) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(ng, id, s->trailers, s->ntrailers) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* The largest DATA payload: over TLS, what fills one 16 KiB record with the frame's header
 * (RFC 8446 5.1: 2^14 bytes of plaintext at most), so that each record carries one whole frame
 * and the transport encrypts it in place; on plain TCP nghttp2's 16 KiB. Up to the peer's
 * SETTINGS_MAX_FRAME_SIZE (RFC 9113 6.5.2) on a trusted connection (a tunnel, whose gateway
 * announces a large one), so that a frame moves whole chains of the stream's queue instead of
 * copying 16 KiB slices of them. */
static ssize_t data_length(nghttp2_session *ng, uint8_t type, int32_t id, int32_t conn_window,
                           int32_t stream_window, uint32_t peer_max, void *arg)
{
    const fg_http2_conn_t *h = arg;
    (void)ng;
    (void)type;
    (void)id;
    size_t n = h->trusted ? peer_max : h->tls ? TLS_DATA_MAX : 16384;
    if (n > (size_t)conn_window)
        n = (size_t)conn_window;
    if (n > (size_t)stream_window)
        n = (size_t)stream_window;
    return (ssize_t)(n > 0 ? n : 1);
}

/* Whether the transport may take another frame; flushes once when it is at its bound. */
static int out_room(fg_http2_conn_t *h)
{
    if (fg_conn_pending(h->c) < OUT_HIGH)
        return 1;
    if (fg_conn_flush(h->c) != 0) {
        h->dead = 1;
        return 0;
    }
    return fg_conn_pending(h->c) < OUT_HIGH;
}

static ssize_t on_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *arg)
{
    fg_http2_conn_t *h = arg;
    (void)ng;
    (void)flags;
    if (!out_room(h))
        return h->dead ? NGHTTP2_ERR_CALLBACK_FAILURE : NGHTTP2_ERR_WOULDBLOCK;
    evbuffer_add(fg_conn_output(h->c), data, len);
    return (ssize_t)len;
}

/* The frame `hd` + `length` bytes of s's queue as one contiguous piece of out: one copy, after
 * which the TLS transport encrypts the whole frame in place as one record, instead of gathering
 * a record from the header's chain and slices of the body's chains. 0, or -1 without memory. */
static int put_frame(struct evbuffer *out, stream_t *s, const uint8_t *hd, size_t length)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)(9 + length), &v, 1) < 1)
        return -1;
    memcpy(v.iov_base, hd, 9);
    if (length > 0 && evbuffer_remove(s->out, (uint8_t *)v.iov_base + 9, length) != (int)length)
        return -1;
    v.iov_len = 9 + length;
    return evbuffer_commit_space(out, &v, 1);
}

/* A DATA frame: its header, then `length` bytes of the stream's queue: copied whole behind the
 * header over TLS (put_frame), moved as chains on plain TCP, where writev sends them in place. */
static int on_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *arg)
{
    fg_http2_conn_t *h = arg;
    stream_t *s = src->ptr;
    (void)ng;
    if (!out_room(h))
        return h->dead ? NGHTTP2_ERR_CALLBACK_FAILURE : NGHTTP2_ERR_WOULDBLOCK;
    struct evbuffer *out = fg_conn_output(h->c);
    if (frame->data.padlen > 0) /* never: no padding callback is set */
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (h->tls && !h->trusted) {
        if (put_frame(out, s, framehd, length) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    } else {
        evbuffer_add(out, framehd, 9);
        evbuffer_remove_buffer(s->out, out, length);
    }
    s->progress_ms = now_ms();
    int low = (s->want_w || s->t_cbs != NULL) && queued(s) <= STREAM_LOW;
    if (low && s->want_w && s->in_req) {
        s->write_due = 1;
        h->due = 1;
    }
    if (low && s->t_cbs != NULL) {
        s->t_drain_due = 1;
        h->due = 1;
    }
    return 0;
}

/* ---- input ---- */

/* Counts a frame against the flood budget; 0 when the budget is spent. */
static int flood_ok(fg_http2_conn_t *h)
{
    uint64_t now = now_ms();
    uint64_t refill = (now - h->flood_ms) * FLOOD_RATE / 1000;
    if (refill > 0) {
        uint64_t t = h->flood_tokens + refill;
        h->flood_tokens = t > FLOOD_BURST ? FLOOD_BURST : (unsigned)t;
        h->flood_ms = now;
    }
    if (h->flood_tokens == 0)
        return 0;
    h->flood_tokens--;
    return 1;
}

static int costly_frame(const nghttp2_frame *f)
{
    switch (f->hd.type) {
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        return !(f->hd.flags & NGHTTP2_FLAG_ACK);
    case NGHTTP2_PRIORITY:
    case NGHTTP2_RST_STREAM:
        return 1;
    case NGHTTP2_DATA:
        return f->hd.length == 0 && !(f->hd.flags & NGHTTP2_FLAG_END_STREAM);
    default:
        return 0;
    }
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
    fg_http2_conn_t *h = arg;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream_t *s = new_stream(h, frame->hd.stream_id);
    if (s == NULL) {
        fg_log_error("http2: out of memory for a stream: refused");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    h->hdr_stream = s;
    if (s->id >= STREAM_ID_HIGH && !h->retiring) {
        h->retiring = 1;
        h->retire_ms = now_ms();
        nghttp2_submit_shutdown_notice(ng);
    }
    return 0;
}

/* Append a field to a pool array that doubles as it fills. */
static int push_field(fg_pool_t *pool, fg_http_header_t **v, size_t *n, size_t *cap, fg_str_t name,
                      fg_str_t value)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        fg_http_header_t *nv = fg_pool_alloc(pool, ncap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        if (*n)
            memcpy(nv, *v, *n * sizeof(*nv));
        *v = nv;
        *cap = ncap;
    }
    (*v)[*n] = (fg_http_header_t){0};
    (*v)[*n].name = name;
    (*v)[*n].value = value;
    (*n)++;
    return 0;
}

static void pseudo(stream_t *s, fg_str_t name, fg_str_t value)
{
    if (fg_str_eq(name, FG_STR_LIT(":method")))
        s->req.method = value;
    else if (fg_str_eq(name, FG_STR_LIT(":path")))
        s->path = value;
    else if (fg_str_eq(name, FG_STR_LIT(":authority")))
        s->authority = value;
    else if (fg_str_eq(name, FG_STR_LIT(":protocol")))
        s->req.protocol = value;
    /* :scheme is checked by nghttp2; the connection decides req->scheme. */
}

/* One decoded field (nghttp2 has validated it: lowercase name, no connection-specific field,
 * te only "trailers", pseudo-headers first and known). Copied into the stream's pool. */
static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *arg)
{
    fg_http2_conn_t *h = arg;
    (void)flags;
    /* A request's fields follow the opening of its stream: no lookup for each of them (ids
     * are never reused on a connection, and a freed stream leaves hdr_stream). */
    stream_t *s = h->hdr_stream;
    if (s == NULL || s->id != frame->hd.stream_id)
        s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (s == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* RFC 9113 6.5.2: 32 bytes of overhead per field. Past the limit the fields are dropped
     * (not stored: an HPACK bomb costs no memory) and the request answered 431. */
    s->field_bytes += namelen + valuelen + 32;
    if (s->too_large || s->field_bytes > h->server->http2.max_header_list_size ||
        s->ntr >= h->server->max_headers) {
        s->too_large = 1;
        return 0;
    }
    char *copy = fg_pool_alloc(s->req.pool, namelen + valuelen + 1);
    if (copy == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    fg_str_put(fg_str_put(copy, (const char *)name, namelen), (const char *)value, valuelen);
    copy[namelen + valuelen] = '\0';
    fg_str_t n = {copy, namelen}, v = {copy + namelen, valuelen};
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return push_field(s->req.pool, &s->tr, &s->ntr, &s->trcap, n, v) == 0
                   ? 0
                   : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (namelen > 0 && name[0] == ':') {
        pseudo(s, n, v);
        return 0;
    }
    if (s->nhdrs >= h->server->max_headers) {
        s->too_large = 1;
        return 0;
    }
    return push_field(s->req.pool, &s->hdrs, &s->nhdrs, &s->cap, n, v) == 0
               ? 0
               : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static void body_end(stream_t *s)
{
    s->req.body_done = 1;
    s->body_due = 1;
    s->t_eof_due = s->tunnel; /* RFC 8441 4: END_STREAM is the client's half-close */
    s->h->due = 1;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
    fg_http2_conn_t *h = arg;
    if (!h->trusted && costly_frame(frame) && !flood_ok(h)) {
        fg_log_info("http2: too many control frames from %s:%u: connection closed", h->client_ip,
                    (unsigned)h->client_port);
        nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    stream_t *s = h->hdr_stream; /* a header block ends on the stream it opened (on_header) */
    if (s == NULL || s->id != frame->hd.stream_id)
        s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        s->dispatch = 1;
        s->head = 1;
        h->due = 1;
        s->req.has_body = !end;
        s->req.body_done = end;
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS) {
        /* Request trailers (RFC 9113 8.1), before body_done as request.h promises. */
        s->req.trailers = s->tr;
        s->req.ntrailers = s->ntr;
    }
    if (end)
        body_end(s);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    fg_http2_conn_t *h = arg;
    (void)flags;
    stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    /* A trusted peer's connection window reopens on receipt: each stream's unread bytes are
     * bounded by its own window, so a stream whose destination is slow closes only its own
     * (RFC 9113 5.2.2), never the tunnel's other streams. */
    if (h->trusted)
        nghttp2_session_consume_connection(ng, len);
    if (s != NULL && s->tunnel && s->t_cbs != NULL) {
        /* The window reopens as the relay takes the bytes (on_body_drain). */
        evbuffer_add(s->req.body, data, len);
        s->progress_ms = now_ms();
        s->t_read_due = 1;
        h->due = 1;
        return 0;
    }
    if (s == NULL || s->finished || (!s->in_req && !s->dispatch)) {
        /* Nobody takes these bytes: give the window back at once. */
        give_back(h, id, len);
        return 0;
    }
    evbuffer_add(s->req.body, data, len);
    s->req.body_bytes += len;
    s->progress_ms = now_ms();
    int64_t limit = fg_request_body_limit(&s->req);
    if (limit >= 0 && s->req.body_bytes > (uint64_t)limit)
        s->over_limit = 1;
    s->body_due = 1;
    h->due = 1;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
    (void)arg;
    (void)code;
    stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (s->t_cbs != NULL)
        tunnel_gone(s, code);
    detach(s, "client_closed");
    free_stream(s);
    return 0;
}

/* ---- requests ---- */

static int64_t parse_length(const fg_request_t *req)
{
    const fg_http_header_t *f = fg_request_header(req, FG_STR_LIT("content-length"));
    if (f == NULL || f->value.len == 0 || f->value.len > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < f->value.len; i++) {
        char ch = f->value.base[i];
        if (ch < '0' || ch > '9')
            return -1;
        v = v * 10 + (ch - '0');
    }
    return v;
}

/* The request's fields into req, or an error answer. Returns 0 to dispatch. */
static int map_request(stream_t *s)
{
    fg_request_t *req = &s->req;
    if (s->too_large) {
        fg_request_error(req, 431, "headers_too_large", "request header section too large");
        return -1;
    }
    if (fg_http2_join_cookies(req->pool, s->hdrs, &s->nhdrs) != 0) {
        fg_request_error(req, 500, "internal_error", "out of memory");
        return -1;
    }
    req->headers = s->hdrs;
    req->nheaders = s->nhdrs;
    fg_request_make_id(req);
    int connect = fg_str_eq(req->method, FG_STR_LIT("CONNECT"));
    req->target = connect && req->protocol.len == 0 ? s->authority : s->path;
    if (connect && req->protocol.len == 0 && req->server && req->server->accept_connect) {
        /* RFC 9113 8.5: a byte stream to the authority; here a switch to a tcp service. */
        req->protocol = FG_STR_LIT(FG_TCP_PROTOCOL);
        req->target = FG_STR_LIT("/");
    } else if (connect && req->protocol.len == 0) {
        req->path = FG_STR_LIT("/");
        fg_request_error(req, 501, "not_implemented", "CONNECT is not supported");
        return -1;
    }
    if (fg_http2_authority(s->authority, s->hdrs, s->nhdrs, &req->host) != 0 ||
        !fg_http1_valid_host(req->host)) {
        fg_request_error(req, 400, "bad_request", "missing, invalid or conflicting authority");
        return -1;
    }
    if (fg_http2_split_path(req->pool, req->target, &req->path, &req->query) != 0) {
        fg_request_error(req, 400, "bad_request", "invalid request target");
        return -1;
    }
    req->content_length = parse_length(req);
    const fg_http_header_t *ex = fg_request_header(req, FG_STR_LIT("expect"));
    req->expect_continue = ex && fg_str_ieq_c(ex->value, "100-continue");
    req->keep_alive = 1;
    req->head_bytes = s->field_bytes;
    return fg_request_tls_gate(req) ? -1 : 0;
}

static void start_request(stream_t *s)
{
    fg_request_t *req = &s->req;
    s->in_req = 1;
    if (req->method.len == 0)
        req->method = FG_STR_LIT("GET"); /* nghttp2 refuses such a request; for the log */
    if (map_request(s) != 0 || fg_dispatch_route(req) != 0)
        return;
    if (req->expect_continue && !req->body_done) {
        /* RFC 9110 10.1.1: the body is wanted, say so before the client waits it out. */
        static const nghttp2_nv cont = {(uint8_t *)":status", (uint8_t *)"100", 7, 3,
                                        NGHTTP2_NV_FLAG_NO_COPY_NAME |
                                            NGHTTP2_NV_FLAG_NO_COPY_VALUE};
        nghttp2_submit_headers(s->h->ng, NGHTTP2_FLAG_NONE, s->id, NULL, &cont, 1, NULL);
    }
    fg_dispatch_run(req);
    if (s->in_req && (evbuffer_get_length(req->body) > 0 || req->body_done))
        s->body_due = 1;
}

/* A body past the size limit: 413 when the response has not begun, else the stream is reset. */
static void refuse_body(stream_t *s)
{
    fg_request_t *req = &s->req;
    if (req->handler && req->handler->on_abort)
        req->handler->on_abort(req);
    req->handler = NULL;
    if (!s->resp_started) {
        fg_request_error(req, 413, "payload_too_large", "request body too large");
        return;
    }
    ops_abort(req);
}

/* Handler callbacks, outside nghttp2's: dispatch, body, writability. */
static void run_due(fg_http2_conn_t *h)
{
    h->due = 0;
    for (stream_t *s = h->streams; s != NULL && !h->dead; s = s->next) {
        if (s->dispatch) {
            s->dispatch = 0;
            start_request(s);
        }
        if (s->over_limit && s->in_req) {
            s->over_limit = 0;
            refuse_body(s);
        }
        if (s->body_due && s->in_req && !s->paused) {
            s->body_due = 0;
            if (s->req.handler && s->req.handler->on_body)
                s->req.handler->on_body(&s->req);
        }
        if (s->write_due && s->in_req) {
            s->write_due = 0;
            s->want_w = 0;
            if (s->req.handler && s->req.handler->on_writable)
                s->req.handler->on_writable(&s->req);
        }
        if (s->tunnel)
            tunnel_due(s);
    }
}

/* ---- the connection ---- */

/* Run the handlers' pending work and produce frames while the transport has room; close the
 * connection once nghttp2 has nothing more to read or write. */
static void service(fg_http2_conn_t *h)
{
    if (h->busy) {
        kick(h);
        return;
    }
    h->busy = 1;
    for (int i = 0; i < 8 && !h->dead; i++) {
        if (h->due)
            run_due(h);
        if (!h->dead && nghttp2_session_send(h->ng) != 0)
            h->dead = 1;
        if (!h->due)
            break;
    }
    h->busy = 0;
    if (h->dead || fg_conn_flush(h->c) != 0) {
        destroy(h);
        return;
    }
    size_t pending = fg_conn_pending(h->c);
    if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng) && pending == 0) {
        linger(h);
        return;
    }
    /* A client that does not read its answers is not read either: its input stays bounded
     * while the send timeout runs on the output. A trusted peer (a tunnel's gateway) is read
     * on: the streams' windows bound its DATA, and a stop would hold every stream of the tunnel
     * for the few whose destinations are slow, while the peer's own writes wait for us. */
    if (pending >= OUT_HIGH && !h->read_off && !h->trusted) {
        h->read_off = 1;
        fg_conn_read(h->c, 0, 0);
    } else if (pending < OUT_HIGH && h->read_off) {
        h->read_off = 0;
        fg_conn_read(h->c, 1, 0);
    }
    if (h->due)
        kick(h);
}

/* Everything is sent (the final GOAWAY included). Closing now would turn bytes the client sent
 * meanwhile (a request crossing our GOAWAY, a WINDOW_UPDATE) into a TCP reset that can destroy
 * the end of the last response in the client's receive buffer; so shut our side and read until
 * the client closes, LINGER_MS at most. */
static void linger(fg_http2_conn_t *h)
{
    if (h->lingering)
        return;
    h->lingering = 1;
    h->linger_end_ms = now_ms() + LINGER_MS;
    if (fg_conn_shutdown_write(h->c) != 0) {
        destroy(h);
        return;
    }
    evbuffer_drain(fg_conn_input(h->c), evbuffer_get_length(fg_conn_input(h->c)));
    fg_conn_read(h->c, 1, LINGER_MS);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    fg_http2_conn_t *h = arg;
    (void)fd;
    (void)what;
    h->kicked = 0;
    if (!h->lingering)
        service(h);
}

static void kick(fg_http2_conn_t *h)
{
    if (!h->kicked) {
        h->kicked = 1;
        event_active(h->kick_ev, EV_WRITE, 1);
    }
}

static void on_read(fg_conn_t *c, void *arg)
{
    fg_http2_conn_t *h = arg;
    struct evbuffer *in = fg_conn_input(c);
    if (h->lingering) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    h->busy = 1;
    while (!h->dead && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t r = nghttp2_session_mem_recv(h->ng, v.iov_base, v.iov_len);
        if (r < 0) {
            /* A connection error: nghttp2 queued GOAWAY where the protocol wants one. */
            fg_log_info("http2: connection error from %s:%u: %s", h->client_ip,
                        (unsigned)h->client_port, nghttp2_strerror((int)r));
            evbuffer_drain(in, evbuffer_get_length(in));
            nghttp2_session_send(h->ng);
            fg_conn_flush(c);
            h->dead = 1;
            break;
        }
        evbuffer_drain(in, (size_t)r);
    }
    h->busy = 0;
    if (h->dead) {
        destroy(h);
        return;
    }
    service(h);
}

static void on_drain(fg_conn_t *c, void *arg)
{
    fg_http2_conn_t *h = arg;
    (void)c;
    if (!h->lingering)
        service(h);
}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    (void)c;
    (void)what;
    destroy(arg);
}

static const fg_conn_cbs_t conn_cbs = {on_read, on_drain, on_event};

/* Streams whose client never opens its window (a zero-window stall) or never sends the body it
 * announced: reset after the server's send or body timeout. */
static void check_streams(fg_http2_conn_t *h, uint64_t now)
{
    const fg_server_t *srv = h->server;
    for (stream_t *s = h->streams; s != NULL; s = s->next) {
        uint64_t quiet = now - s->progress_ms;
        if (!s->head && quiet >= srv->header_timeout_ms) {
            /* A header block left open past timeouts.header: no other frame may come on the
             * connection before it ends (RFC 9113 4.3), so the connection ends. */
            nghttp2_session_terminate_session(h->ng, NGHTTP2_NO_ERROR);
            return;
        }
        int stalled_out = queued(s) > 0 && quiet >= srv->send_timeout_ms;
        if (s->t_cbs != NULL) {
            /* A tunnel's client that takes nothing: the relay ends (client_timeout). */
            if (stalled_out)
                s->t_cbs->on_event(NULL, s->t_arg, FG_CONN_TIMEOUT_WRITE);
            continue;
        }
        int stalled_in = s->in_req && !s->req.body_done && !s->paused &&
                         evbuffer_get_length(s->req.body) == 0 && quiet >= srv->body_timeout_ms;
        if (stalled_in && !s->resp_started) {
            fg_request_t *req = &s->req;
            if (req->handler && req->handler->on_abort)
                req->handler->on_abort(req);
            req->handler = NULL;
            s->progress_ms = now;
            fg_request_error(req, 408, "request_timeout", "request body not received in time");
        } else if (stalled_out || stalled_in) {
            s->progress_ms = now;
            if (s->in_req)
                s->req.termination = "client_timeout";
            detach(s, "request_timeout");
            nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        }
    }
}

/* Graceful retirement, second step (RFC 9113 6.8): a round trip after the shutdown notice, the
 * final GOAWAY names the last stream that will be served. */
static void final_goaway(fg_http2_conn_t *h)
{
    h->final_goaway = 1;
    nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    fg_http2_conn_t *h = arg;
    (void)fd;
    (void)what;
    uint64_t now = now_ms();
    if (h->lingering) {
        if (now >= h->linger_end_ms)
            destroy(h);
        return;
    }
    h->busy = 1;
    check_streams(h, now);
    h->busy = 0;
    if (h->retiring && !h->final_goaway && now - h->retire_ms >= TICK_MS)
        final_goaway(h);
    uint64_t idle = h->served ? h->server->keepalive_timeout_ms : h->server->header_timeout_ms;
    if (h->nstreams == 0 && now - h->idle_since_ms >= idle && !h->final_goaway)
        final_goaway(h); /* idle: nothing in flight, so the connection ends once it is sent */
    service(h);
}

static void destroy(fg_http2_conn_t *h)
{
    if (h->busy) {
        h->dead = 1;
        return;
    }
    h->busy = 1; /* handlers' on_abort must not re-enter */
    for (stream_t *s = h->streams; s != NULL; s = s->next)
        detach(s, "client_closed");
    nghttp2_session_del(h->ng);
    while (h->streams)
        free_stream(h->streams);
    if (h->kick_ev)
        event_free(h->kick_ev);
    if (h->tick_ev)
        event_free(h->tick_ev);
    fg_frontend_remove(h->w, &h->session);
    fg_conn_free(h->c);
    free(h);
}

static void set_options(nghttp2_option *o, uint64_t reset_burst, uint64_t reset_rate)
{
    /* Windows open as handlers take the body (on_body_drain), not as bytes arrive. */
    nghttp2_option_set_no_auto_window_update(o, 1);
    nghttp2_option_set_max_settings(o, MAX_SETTINGS);
    /* Unsent PING and SETTINGS ACKs nghttp2 queues before it drops the connection without a
     * word: above the flood budget, so that a flood meets the budget's GOAWAY first. */
    nghttp2_option_set_max_outbound_ack(o, 4 * FLOOD_BURST);
    nghttp2_option_set_max_continuations(o, MAX_CONTINUATIONS);
    nghttp2_option_set_stream_reset_rate_limit(o, reset_burst, reset_rate);
    nghttp2_option_set_max_deflate_dynamic_table_size(o, HPACK_TABLE);
}

/* The callbacks and options every session of the worker shares. NULL without memory. */
static shared_t *get_shared(fg_worker_t *w)
{
    shared_t *sh = shared(w);
    if (sh != NULL)
        return sh;
    sh = calloc(1, sizeof(*sh));
    if (sh == NULL || nghttp2_session_callbacks_new(&sh->cbs) != 0 ||
        nghttp2_option_new(&sh->opt) != 0 || nghttp2_option_new(&sh->trusted_opt) != 0 ||
        (sh->mem = fg_h2mem_new()) == NULL) {
        if (sh && sh->cbs)
            nghttp2_session_callbacks_del(sh->cbs);
        if (sh && sh->opt)
            nghttp2_option_del(sh->opt);
        if (sh && sh->trusted_opt)
            nghttp2_option_del(sh->trusted_opt);
        free(sh);
        return NULL;
    }
    nghttp2_session_callbacks *cb = sh->cbs;
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cb, data_length);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    set_options(sh->opt, RESET_BURST, RESET_RATE);
    /* A trusted peer multiplexes many clients' streams, and resets one whenever a client goes
     * away: the same options, without a bound on the resets. */
    set_options(sh->trusted_opt, UINT64_MAX, UINT64_MAX);
    /* A trusted peer is the gateway, which builds every field it sends from a request it
     * validated itself (RFC 9113 8.2.1, 8.3.1, content-length), so nghttp2's own checks of each
     * field are skipped there (about 2,400 instructions a request); the connection-level
     * checks stay. Closed streams are not kept for the RFC 7540 priority tree either. */
    nghttp2_option_set_no_http_messaging(sh->trusted_opt, 1);
    nghttp2_option_set_no_closed_streams(sh->trusted_opt, 1);
    sh->tick_tv = (struct timeval){TICK_MS / 1000, 0};
    sh->tick = event_base_init_common_timeout(w->base, &sh->tick_tv);
    if (sh->tick == NULL)
        sh->tick = &sh->tick_tv;
    w->frontend_state[fg_http2_frontend.slot] = sh;
    return sh;
}

static int start_session(fg_http2_conn_t *h, shared_t *sh)
{
    const fg_http2_config_t *cf = &h->server->http2;
    if (nghttp2_session_server_new3(&h->ng, sh->cbs, h, h->trusted ? sh->trusted_opt : sh->opt,
                                    fg_h2mem_nghttp2(sh->mem)) != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cf->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cf->initial_window_size},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, cf->max_frame_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cf->max_header_list_size},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    size_t niv = sizeof(iv) / sizeof(iv[0]) - (cf->enable_connect_protocol ? 0 : 1);
    if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
        nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)cf->connection_window_size) != 0)
        return -1;
    return 0;
}

static void set_peer(fg_http2_conn_t *h, const struct sockaddr_storage *peer)
{
    h->peer = *peer;
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &a->sin_addr, h->client_ip, sizeof(h->client_ip));
        h->client_port = ntohs(a->sin_port);
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &a->sin6_addr, h->client_ip, sizeof(h->client_ip));
        h->client_port = ntohs(a->sin6_port);
    }
}

int fg_http2_adopt(fg_worker_t *w, const fg_server_t *srv, fg_conn_t *c,
                   const struct sockaddr_storage *peer, int flags)
{
    shared_t *sh = get_shared(w);
    fg_http2_conn_t *h = sh ? calloc(1, sizeof(*h)) : NULL;
    if (h == NULL)
        return -1;
    h->w = w;
    h->server = srv;
    h->c = c;
    h->trusted = (flags & FG_HTTP2_TRUSTED) != 0;
    set_peer(h, peer);
    h->tls = fg_conn_ssl(c) != NULL;
    h->client_tls = w->accept_client_tls && !h->tls;
    fg_ip_t via;
    if (w->accept_balancer != NULL &&
        fg_ip_from_sockaddr((const struct sockaddr *)w->accept_balancer, &via) == 0)
        fg_ip_format(&via, h->balancer_ip, sizeof(h->balancer_ip));
    h->hsts = h->tls && srv->tls != NULL && srv->tls->hsts_header != NULL;
    h->idle_since_ms = h->flood_ms = now_ms();
    if (w->accept_ms != 0 && w->accept_ms <= h->idle_since_ms)
        h->idle_since_ms = w->accept_ms; /* the preface's wait counts against timeouts.header */
    h->flood_tokens = FLOOD_BURST;
    h->kick_ev = event_new(w->base, -1, 0, on_kick, h);
    h->tick_ev = event_new(w->base, -1, EV_PERSIST, on_tick, h);
    if (h->kick_ev == NULL || h->tick_ev == NULL || start_session(h, sh) != 0 ||
        event_add(h->tick_ev, sh->tick) != 0) {
        if (h->ng)
            nghttp2_session_del(h->ng);
        if (h->kick_ev)
            event_free(h->kick_ev);
        if (h->tick_ev)
            event_free(h->tick_ev);
        free(h);
        return -1;
    }
    fg_conn_set_cbs(c, &conn_cbs, h);
    fg_conn_set_write_timeout(c, srv->send_timeout_ms);
    fg_conn_set_low_watermark(c, OUT_HIGH / 4);
    fg_conn_set_read_max(c, READ_MAX);
    fg_frontend_add(w, &h->session, &fg_http2_frontend);
    fg_conn_read(c, 1, 0);
    if (w->retiring)
        fg_http2_frontend.retire(&h->session);
    /* The server's SETTINGS go first (RFC 9113 3.4); bytes that came with the handshake are
     * read now. */
    if (evbuffer_get_length(fg_conn_input(c)) > 0)
        on_read(c, h);
    else
        service(h);
    return 0;
}

static int http2_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                        const struct sockaddr_storage *peer, socklen_t len)
{
    (void)len;
    fg_conn_t *c = fg_conn_new(w->base, fd, NULL, NULL);
    if (c == NULL)
        return -1;
    fg_connlimit_attach(w, c);
    if (fg_http2_adopt(w, srv, c, peer, 0) != 0) {
        fg_log_error("http2: out of memory for a connection: closed");
        fg_conn_free(c);
    }
    return 0;
}

/* ---- the front-end interface (worker/core/frontend.h) ---- */

/* First step of graceful retirement (RFC 9113 6.8): GOAWAY with the largest stream id tells the
 * client to open no more streams; in-flight ones finish. on_tick sends the final GOAWAY. */
static void fe_retire(fg_session_t *sess)
{
    fg_http2_conn_t *h = (fg_http2_conn_t *)sess;
    if (h->retiring)
        return;
    h->retiring = 1;
    h->retire_ms = now_ms();
    nghttp2_submit_shutdown_notice(h->ng);
    kick(h);
}

static void fe_close_idle(fg_session_t *sess)
{
    fg_http2_conn_t *h = (fg_http2_conn_t *)sess;
    if (h->nstreams > 0)
        return;
    if (!h->final_goaway) {
        final_goaway(h);
        h->busy = 1;
        nghttp2_session_send(h->ng);
        h->busy = 0;
        fg_conn_flush(h->c);
    }
    destroy(h);
}

static void fe_close(fg_session_t *sess)
{
    destroy((fg_http2_conn_t *)sess);
}

static void fe_release(fg_worker_t *w)
{
    shared_t *sh = shared(w);
    if (sh == NULL)
        return;
    nghttp2_session_callbacks_del(sh->cbs);
    nghttp2_option_del(sh->opt);
    while (sh->spare) {
        bufs_t *b = sh->spare;
        sh->spare = b->next;
        bufs_free(b);
    }
    nghttp2_option_del(sh->trusted_opt);
    fg_h2mem_free(sh->mem); /* after every session: close_all ran first */
    free(sh);
    w->frontend_state[fg_http2_frontend.slot] = NULL;
}

const fg_frontend_t fg_http2_frontend = {
    .name = "h2",
    .slot = 1,
    .start = http2_accept,
    .retire = fe_retire,
    .close_idle = fe_close_idle,
    .close = fe_close,
    .release = fe_release,
};
