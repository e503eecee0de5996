#include "worker/http/http1.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/iprange.h"
#include "common/log.h"
#include "common/path.h"
#include "common/tls.h"
#include "worker/http/accesslog.h"
#include "worker/admission/security.h"
#include "worker/core/conn.h"
#include "worker/core/connlimit.h"
#include "worker/http/dispatch.h"
#include "worker/http/request.h"
#include "worker/http/relay.h"
#include "worker/tunnel/endpoint.h"
#include "worker/tunnel/hop.h"
#include "worker/core/clock.h"

enum {
    S_IDLE = 0, /* waiting for (the rest of) a request head */
    S_BODY,     /* a handler runs; request body still arriving */
    S_WAIT,     /* a handler runs; request body complete */
    S_CLOSING,  /* flushing the last response, then close */
    S_LINGER,   /* write side shut, discarding input until the peer closes */
};

#define OUT_HIGH_WATER (256 * 1024) /* flush at once above this */
#define OUT_LOW_WATER (64 * 1024)   /* handler's on_writable below this */
#define LINGER_MS 2000              /* lingering close: the client's silence that ends it ... */
#define LINGER_TOTAL_MS 5000        /* ... and its whole length (nginx's lingering_time) */
/* Released request states a worker keeps for the next active connection: a keep-alive client
 * sending request after request would otherwise make the allocator free and take back the
 * same blocks (and trim the heap with brk) every time. */
#define MAX_SPARE 64

/* What a connection holds only while it has bytes to parse or answers to send: an idle
 * keep-alive connection keeps the small fg_http1_conn_t alone (nginx's keep-alive handler
 * releases its request pool and buffers the same way). */
typedef struct act_s {
    fg_request_t req;       /* req.pool: the request's own (fg_request_pool_take), NULL between */
    struct event *flush_ev; /* its argument is the act: owner says whose it is */
    struct fg_http1_conn_s *owner; /* the connection holding this act */
    struct act_s *next_spare;      /* in the worker's spare list */
    size_t cap;                    /* entries of hdrs */
    int64_t body_left;             /* Content-Length bytes still to read */
    fg_http1_chunked_t chunked;
    fg_http_header_t hdrs[]; /* the parser's output, max_headers entries */
} act_t;

/* A worker's released state: request states and the connections' buffers and events. */
struct fg_http1_spares_s {
    act_t *acts;
    unsigned nacts;
    fg_conn_spares_t *conn;
};

struct fg_http1_conn_s {
    fg_session_t session; /* first: the worker's list of sessions (worker/core/frontend.h) */
    fg_worker_t *w;
    const fg_server_t *server;
    fg_conn_t *c;
    act_t *act;        /* request state while the connection is active, else NULL */
    fg_request_t *req; /* &act->req, or NULL */
    int state;
    unsigned in_req : 1; /* req belongs to a handler */
    unsigned resp_started : 1;
    unsigned resp_chunked : 1;
    unsigned resp_nobody : 1;
    unsigned close_after : 1; /* this response ends the connection */
    unsigned busy : 1;        /* inside process(): defer destruction */
    unsigned dead : 1;        /* destroy when busy ends */
    unsigned body_paused : 1;
    unsigned flush_pending : 1;
    unsigned linger : 1;     /* input may hold unread request bytes when we close */
    unsigned broken : 1;     /* a write failed: the client is gone, tell handlers, then destroy */
    unsigned peer_eof : 1;   /* the client shut its sending side after whole requests */
    unsigned out_paused : 1; /* parsing held until the output backlog drains */
    unsigned plain_on_tls : 1;
    unsigned client_tls : 1; /* TLS to the balancer in front (fg_worker_t.accept_client_tls) */
    unsigned tunnel : 1;     /* an agent's upgrade on the tunnel path: hand over after process() */
    unsigned hsts : 1;
    /* a TLS connection of a server that sends Strict-Transport-Security */ /* plain HTTP on a
                                                                               TLS port: answer
                                                                               400 and close */
    unsigned nrequests;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
    char balancer_ip[48];   /* the PROXY protocol header's sender; "" = none */
    uint64_t head_start_ms; /* when the first byte of the pending head arrived; 0 = none */
    uint64_t linger_end_ms; /* lingering close ends by then whatever the client sends */
};

static void process(fg_http1_conn_t *h);
static void destroy(fg_http1_conn_t *h);
static void begin_close(fg_http1_conn_t *h);
static void on_read(fg_conn_t *c, void *arg);
static void on_drain(fg_conn_t *c, void *arg);
static void on_event(fg_conn_t *c, void *arg, int what);
static void fill_client(fg_http1_conn_t *h);
static void set_client(const fg_http1_conn_t *h, fg_request_t *req);
static void resume_parsing(fg_http1_conn_t *h);
static void on_flush_ev(evutil_socket_t fd, short what, void *arg);
static void free_act(fg_worker_t *w, act_t *a);
static void release_if_idle(fg_http1_conn_t *h);

static const fg_conn_cbs_t conn_cbs = {on_read, on_drain, on_event};

/* ---- response framing (fg_req_ops_t) ---- */

/* Reason phrases of RFC 9110 15 and the registered extensions; the phrase is informative
 * only (RFC 9112 4), so an unregistered code gets an empty one. */
static const char *reason_phrase(int status)
{
    static const struct {
        short code;
        const char *text;
    } table[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {102, "Processing"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {207, "Multi-Status"},
        {208, "Already Reported"},
        {226, "IM Used"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {305, "Use Proxy"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {423, "Locked"},
        {424, "Failed Dependency"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {451, "Unavailable For Legal Reasons"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
        {506, "Variant Also Negotiates"},
        {507, "Insufficient Storage"},
        {508, "Loop Detected"},
        {511, "Network Authentication Required"},
    };
    if (status == 200)
        return "OK"; /* most answers: no search */
    size_t lo = 0, hi = sizeof(table) / sizeof(table[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (table[mid].code == status)
            return table[mid].text;
        if (table[mid].code < status)
            lo = mid + 1;
        else
            hi = mid;
    }
    return "";
}

static void schedule_flush(fg_http1_conn_t *h)
{
    if (fg_conn_pending(h->c) >= OUT_HIGH_WATER && !h->broken) {
        if (fg_conn_flush(h->c) == 0)
            return;
        /* The caller is a handler in the middle of its work: the connection is torn down from
         * the deferred flush event, and send_body refuses more bytes until then. */
        h->broken = 1;
    }
    if (!h->flush_pending) {
        h->flush_pending = 1;
        event_active(h->act->flush_ev, EV_WRITE, 1);
    }
}

static void on_flush_ev(evutil_socket_t fd, short what, void *arg)
{
    fg_http1_conn_t *h = ((act_t *)arg)->owner;
    h->flush_pending = 0;
    if (h->broken || fg_conn_flush(h->c) != 0)
        on_event(h->c, h, FG_CONN_ERROR);
    else if (h->out_paused)
        resume_parsing(h);
    else if (!h->in_req)
        release_if_idle(h);
}

/* Whether the answers queued to the client are too many to parse another pipelined request:
 * a client that sends requests and never reads would otherwise make the worker queue answers
 * without end. A file being sent counts too, so a connection holds one open file at most. */
static int output_backlog(fg_http1_conn_t *h)
{
    return fg_conn_pending(h->c) > OUT_LOW_WATER || fg_conn_sending_file(h->c);
}

/* Parse again once a backlog that held parsing (and reading) has drained. */
static void resume_parsing(fg_http1_conn_t *h)
{
    if (h->in_req || output_backlog(h))
        return;
    h->out_paused = 0;
    /* The header timeout of a head begun before the pause runs again from here: its rest may
     * have waited in the socket while we did not read. */
    if (h->head_start_ms != 0)
        h->head_start_ms = fg_clock_now_us() / 1000;
    process(h);
}

static char *put(char *p, const char *s, size_t n)
{
    return fg_str_put(p, s, n);
}

#define PUT_LIT(p, s) put((p), (s), sizeof(s) - 1)

/* Status line and fields into a pool buffer with `extra` bytes of room left after them. */
static int format_head(fg_request_t *req, int status, const fg_headers_t *hdrs, size_t extra,
                       char **buf, char **end)
{
    const char *reason = reason_phrase(status);
    size_t reason_len = strlen(reason);
    size_t need = 16 + reason_len + extra;
    for (size_t i = 0; i < hdrs->n; i++)
        need += hdrs->v[i].name.len + hdrs->v[i].value.len + 4;
    char *p = fg_pool_alloc(req->pool, need);
    if (p == NULL)
        return -1;
    *buf = p;
    p = PUT_LIT(p, "HTTP/1.1 ");
    *p++ = (char)('0' + status / 100 % 10);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    p = put(p, reason, reason_len);
    p = PUT_LIT(p, "\r\n");
    for (size_t i = 0; i < hdrs->n; i++) {
        const fg_http_header_t *f = &hdrs->v[i];
        p = put(p, f->name.base, f->name.len);
        p = PUT_LIT(p, ": ");
        p = put(p, f->value.base, f->value.len);
        p = PUT_LIT(p, "\r\n");
    }
    *end = p;
    return 0;
}

/* An interim response (RFC 9110 15.2), e.g. 103 Early Hints. Never to an HTTP/1.0 client
 * ("a server MUST NOT send a 1xx response to an HTTP/1.0 client"), and never after the final
 * response has begun. */
static int ops_send_interim(fg_request_t *req, int status, const fg_headers_t *hdrs)
{
    fg_http1_conn_t *h = req->proto;
    if (h->resp_started || req->version < 11 || status < 102 || status > 199)
        return 0;
    if (h->broken)
        return -1; /* as send_body: the connection is going */
    char *buf, *p;
    if (format_head(req, status, hdrs, 2, &buf, &p) != 0)
        return -1;
    p = PUT_LIT(p, "\r\n");
    evbuffer_add(fg_conn_output(h->c), buf, (size_t)(p - buf));
    schedule_flush(h);
    return 0;
}

static int ops_send_head(fg_request_t *req, int status, const fg_headers_t *hdrs,
                         int64_t content_length)
{
    fg_http1_conn_t *h = req->proto;
    if (h->resp_started)
        return -1;
    h->resp_started = 1;
    req->status = status;
    /* RFC 9112 6.3: responses to HEAD, and 1xx/204/304, carry no body. */
    h->resp_nobody = fg_http1_response_bodiless(req->method, status);
    int no_length = (status >= 100 && status < 200) || status == 204 || status == 304;
    if (h->state == S_BODY || !req->keep_alive || h->w->retiring)
        h->close_after = 1;
    /* A half-closed client can send nothing more: close unless pipelined requests wait. */
    if (h->peer_eof && evbuffer_get_length(fg_conn_input(h->c)) == 0)
        h->close_after = 1;
    if (h->server->max_keepalive_requests && h->nrequests >= h->server->max_keepalive_requests)
        h->close_after = 1;
    h->resp_chunked = 0;
    if (!no_length && content_length < 0) {
        if (req->version >= 11 && !h->resp_nobody)
            h->resp_chunked = 1;
        else if (!h->resp_nobody)
            h->close_after = 1; /* HTTP/1.0: the end of the body is the close */
    }

    fg_str_t date, server;
    fg_request_stamp(req, hdrs, &date, &server);
    const char *hsts = h->hsts ? h->server->tls->hsts_header : NULL;
    size_t hsts_len = hsts ? strlen(hsts) : 0;
    char *buf, *p;
    if (format_head(req, status, hdrs, 104 + 20 + date.len + server.len + 32 + hsts_len, &buf,
                    &p) != 0)
        return -1;
    if (hsts != NULL) {
        p = PUT_LIT(p, "Strict-Transport-Security: ");
        p = put(p, hsts, hsts_len);
        p = PUT_LIT(p, "\r\n");
    }
    if (date.len) {
        p = PUT_LIT(p, "Date: ");
        p = put(p, date.base, date.len);
        p = PUT_LIT(p, "\r\n");
    }
    if (server.len) {
        p = PUT_LIT(p, "Server: ");
        p = put(p, server.base, server.len);
        p = PUT_LIT(p, "\r\n");
    }
    if (h->resp_chunked)
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    else if (!no_length && content_length >= 0) {
        p = PUT_LIT(p, "Content-Length: ");
        p = fg_put_u64(p, (uint64_t)content_length);
        p = PUT_LIT(p, "\r\n");
    }
    if (h->close_after)
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (req->version == 10)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    p = PUT_LIT(p, "\r\n");
    evbuffer_add(fg_conn_output(h->c), buf, (size_t)(p - buf));
    schedule_flush(h);
    return 0;
}

/* The chunk-size line of an n-byte chunk (RFC 9112 7.1), in hex without printf: it goes out
 * with every chunk. Writes at most 18 bytes at line; returns the length. */
static size_t chunk_line(char *line, uint64_t n)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = digits[n & 15];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < k; i++)
        line[i] = tmp[k - 1 - i];
    line[k] = '\r';
    line[k + 1] = '\n';
    return k + 2;
}

static int ops_send_body(fg_request_t *req, struct evbuffer *buf)
{
    fg_http1_conn_t *h = req->proto;
    size_t n = evbuffer_get_length(buf);
    if (h->broken || (h->state >= S_CLOSING && h->dead))
        return -1;
    if (n == 0)
        return 0;
    if (h->resp_nobody) {
        evbuffer_drain(buf, n);
        return 0;
    }
    struct evbuffer *out = fg_conn_output(h->c);
    if (h->resp_chunked) {
        char line[24];
        evbuffer_add(out, line, chunk_line(line, n));
        evbuffer_add_buffer(out, buf);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add_buffer(out, buf);
    }
    req->bytes_out += n;
    schedule_flush(h);
    return 0;
}

static int ops_send_file(fg_request_t *req, int fd, off_t off, off_t len)
{
    fg_http1_conn_t *h = req->proto;
    if (h->broken) {
        close(fd);
        return -1;
    }
    if (h->resp_nobody || len == 0) {
        close(fd);
        return 0;
    }
    if (h->resp_chunked) {
        char line[24];
        evbuffer_add(fg_conn_output(h->c), line, chunk_line(line, (uint64_t)len));
    }
    /* The conn sends it with sendfile(2) where its transport allows; no mapping, one open
     * file per connection (process() parses nothing more until it is sent). */
    if (fg_conn_send_file(h->c, fd, off, len) != 0)
        return -1;
    if (h->resp_chunked)
        evbuffer_add(fg_conn_output(h->c), "\r\n", 2);
    req->bytes_out += (uint64_t)len;
    schedule_flush(h);
    return 0;
}

/* Trailers go in the last chunk (RFC 9112 7.1.2); a response framed by Content-Length (or
 * without a body) has no room for them and they are dropped (RFC 9110 6.5.1 lets a recipient
 * discard them). */
static int ops_send_trailers(fg_request_t *req, const fg_headers_t *t)
{
    fg_http1_conn_t *h = req->proto;
    if (h->broken)
        return -1;
    if (!h->resp_chunked || h->resp_nobody)
        return 0;
    size_t need = 5;
    for (size_t i = 0; i < t->n; i++)
        need += t->v[i].name.len + t->v[i].value.len + 4;
    struct evbuffer *out = fg_conn_output(h->c);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)need, &v, 1) < 1 || v.iov_len < need)
        return -1;
    char *p = v.iov_base;
    p = PUT_LIT(p, "0\r\n");
    for (size_t i = 0; i < t->n; i++) {
        p = put(p, t->v[i].name.base, t->v[i].name.len);
        p = PUT_LIT(p, ": ");
        p = put(p, t->v[i].value.base, t->v[i].value.len);
        p = PUT_LIT(p, "\r\n");
    }
    p = PUT_LIT(p, "\r\n");
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    if (evbuffer_commit_space(out, &v, 1) != 0)
        return -1;
    h->resp_chunked = 0; /* the last chunk is written: finish adds none */
    schedule_flush(h);
    return 0;
}

static size_t ops_pending(fg_request_t *req)
{
    fg_http1_conn_t *h = req->proto;
    return fg_conn_pending(h->c);
}

static void pump_body(fg_http1_conn_t *h);

static void ops_pause_body(fg_request_t *req, int pause)
{
    fg_http1_conn_t *h = req->proto;
    h->body_paused = pause ? 1 : 0;
    if (h->state != S_BODY)
        return;
    if (pause) {
        fg_conn_read(h->c, 0, 0);
    } else {
        fg_conn_read(h->c, 1, h->server->body_timeout_ms);
        pump_body(h);
    }
}

/* Reset per-request state; keeps the connection's buffers. */
static void reset_request(fg_http1_conn_t *h)
{
    struct evbuffer *body = h->req->body;
    evbuffer_drain(body, evbuffer_get_length(body));
    /* The request's memory goes with it. */
    fg_request_pool_give(h->w, h->req->pool);
    memset(h->req, 0, sizeof(*h->req));
    h->req->body = body;
    h->in_req = 0;
    h->resp_started = h->resp_chunked = h->resp_nobody = 0;
    h->body_paused = 0;
    h->act->body_left = 0;
}

static void ops_finish(fg_request_t *req)
{
    fg_http1_conn_t *h = req->proto;
    if (!h->resp_started)
        return;
    if (h->resp_chunked)
        evbuffer_add(fg_conn_output(h->c), "0\r\n\r\n", 5);
    fg_security_on_finish(req);
    fg_accesslog_write(h->w->accesslog, req);
    if (h->w->record)
        h->w->record->requests++;
    /* A request whose body was not read to its end leaves the stream unsynchronised. */
    if (h->state == S_BODY) {
        h->close_after = 1;
        h->linger = 1;
    }
    int closing = h->close_after;
    reset_request(h);
    if (closing) {
        begin_close(h);
        return;
    }
    h->state = S_IDLE;
    if (fg_conn_flush(h->c) != 0) {
        begin_close(h);
        return;
    }
    if (!h->busy)
        process(h);
}

static void ops_abort(fg_request_t *req)
{
    fg_http1_conn_t *h = req->proto;
    h->in_req = 0;
    if (!h->resp_started)
        req->status = 502;
    fg_security_on_finish(req);
    fg_accesslog_write(h->w->accesslog, req);
    destroy(h);
}

static fg_conn_t *ops_raw_conn(fg_request_t *req)
{
    fg_http1_conn_t *h = req->proto;
    if (h->resp_chunked || h->resp_nobody || !fg_conn_can_splice(h->c) ||
        fg_conn_flush(h->c) != 0 || fg_conn_pending(h->c) > 0)
        return NULL;
    return h->c;
}

static void ops_want_writable(fg_request_t *req)
{
    fg_http1_conn_t *h = req->proto;
    fg_conn_want_write(h->c);
}

static int ops_local_addr(fg_request_t *req, char *ip, size_t iplen, uint16_t *port)
{
    fg_http1_conn_t *h = req->proto;
    return fg_conn_local_addr_text(h->c, ip, iplen, port);
}

/* The destination switched protocols (RFC 9110 7.8): the 101 goes out with "Connection:
 * upgrade" (RFC 9110 7.6.1, the Upgrade field is hop-by-hop), then the connection, with any
 * bytes the client sent after its request, becomes the relay's client end and this session
 * ends. Only after the whole request: bytes after the switch belong to the new protocol. */
static int ops_switch_protocols(fg_request_t *req, const fg_headers_t *hdrs, fg_relay_t *relay)
{
    fg_http1_conn_t *h = req->proto;
    /* Inside process() the connection is still being worked on: never hand it over there. */
    if (h->state != S_WAIT || h->resp_started || h->broken || h->dead || h->busy)
        return -1;
    fg_str_t date, server;
    fg_request_stamp(req, hdrs, &date, &server);
    char *buf, *p;
    if (format_head(req, 101, hdrs, 64 + date.len + server.len, &buf, &p) != 0)
        return -1;
    if (date.len) {
        p = PUT_LIT(p, "Date: ");
        p = put(p, date.base, date.len);
        p = PUT_LIT(p, "\r\n");
    }
    if (server.len) {
        p = PUT_LIT(p, "Server: ");
        p = put(p, server.base, server.len);
        p = PUT_LIT(p, "\r\n");
    }
    p = PUT_LIT(p, "Connection: upgrade\r\n\r\n");
    evbuffer_add(fg_conn_output(h->c), buf, (size_t)(p - buf));
    req->status = 101;
    h->resp_started = 1;
    if (h->w->record)
        h->w->record->requests++;
    fg_relay_adopt_request(relay, req);
    fg_relay_attach_conn(relay, FG_RELAY_CLIENT, h->c);
    h->c = NULL;
    h->in_req = 0;
    /* The relay's session first: a retiring worker whose last session this was must not
     * leave its loop in between. */
    fg_relay_start(relay);
    destroy(h);
    return 0;
}

static const fg_req_ops_t h1_ops = {
    .switch_protocols = ops_switch_protocols,
    .send_head = ops_send_head,
    .send_interim = ops_send_interim,
    .local_addr = ops_local_addr,
    .send_body = ops_send_body,
    .send_file = ops_send_file,
    .send_trailers = ops_send_trailers,
    .finish = ops_finish,
    .pending = ops_pending,
    .pause_body = ops_pause_body,
    .abort = ops_abort,
    .raw_conn = ops_raw_conn,
    .want_writable = ops_want_writable,
};

/* ---- connection lifecycle ---- */

/* The worker-wide spares of this front end, or NULL. */
static struct fg_http1_spares_s *spares(const fg_worker_t *w)
{
    return w->frontend_state[fg_http1_frontend.slot];
}

static size_t hdrs_cap(const fg_http1_conn_t *h)
{
    return h->server->max_headers ? h->server->max_headers : 100;
}

/* Give h its request state (pool, request, parser output, flush event) when bytes arrive,
 * from the worker's spares when one fits. Returns 0, or -1 when out of memory. */
static int activate(fg_http1_conn_t *h)
{
    if (h->act != NULL)
        return 0;
    fg_worker_t *w = h->w;
    struct fg_http1_spares_s *sp = spares(w);
    act_t *a = sp ? sp->acts : NULL;
    if (a != NULL && a->cap == hdrs_cap(h)) {
        sp->acts = a->next_spare;
        sp->nacts--;
        /* Released idle: its pool given back, its body buffer empty, its flush event idle,
         * and its request clear: reset_request cleared it when the last request ended, and
         * nothing writes the request while it is not in progress except just before it
         * begins one (start_request, reject, the 408), so release_if_idle, which takes only
         * an act with no request in progress, puts clear requests among the spares. The
         * flush event, idle, finds its connection through a->owner. */
    } else {
        /* The header array is written by the parser before it is read: no need to zero it. */
        a = malloc(sizeof(*a) + hdrs_cap(h) * sizeof(a->hdrs[0]));
        if (a == NULL)
            return -1;
        memset(a, 0, sizeof(*a));
        a->cap = hdrs_cap(h);
        a->req.body = evbuffer_new();
        a->flush_ev = event_new(w->base, -1, 0, on_flush_ev, a);
        if (a->req.body == NULL || a->flush_ev == NULL) {
            free_act(NULL, a);
            return -1;
        }
    }
    a->owner = h;
    h->act = a;
    h->req = &a->req;
    return 0;
}

/* Free a and the pool of its request, if one is still held (to w's spares; w may be NULL). */
static void free_act(fg_worker_t *w, act_t *a)
{
    if (a->flush_ev)
        event_free(a->flush_ev);
    if (a->req.body)
        evbuffer_free(a->req.body);
    fg_request_pool_give(w, a->req.pool);
    free(a);
}

/* The current request's pool, taken when its state begins (head parsed, refused or timed
 * out). NULL when out of memory. */
static fg_pool_t *req_pool(fg_http1_conn_t *h)
{
    if (h->req->pool == NULL)
        h->req->pool = fg_request_pool_take(h->w);
    return h->req->pool;
}

/* An idle keep-alive connection with nothing buffered either way keeps its small struct, the
 * conn and its read event only; everything else goes back to the worker's spares (or is freed)
 * and is taken again when bytes arrive. */
static void release_if_idle(fg_http1_conn_t *h)
{
    struct evbuffer *in = fg_conn_input(h->c); /* NULL: released already */
    if (h->in_req || h->state != S_IDLE || h->flush_pending || fg_conn_pending(h->c) > 0 ||
        (in != NULL && evbuffer_get_length(in) > 0))
        return;
    act_t *a = h->act;
    if (a != NULL) {
        h->act = NULL;
        h->req = NULL;
        struct fg_http1_spares_s *sp = spares(h->w);
        fg_request_pool_give(h->w, a->req.pool);
        a->req.pool = NULL;
        if (sp != NULL && sp->nacts < MAX_SPARE && evbuffer_get_length(a->req.body) == 0) {
            a->next_spare = sp->acts;
            sp->acts = a;
            sp->nacts++;
        } else {
            free_act(h->w, a);
        }
    }
    fg_conn_release(h->c);
}

int fg_http1_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                    const struct sockaddr_storage *peer, socklen_t len)
{
    fg_conn_t *c = fg_conn_new(w->base, fd, NULL, NULL);
    if (c == NULL)
        return -1;
    fg_connlimit_attach(w, c);
    if (fg_http1_adopt(w, srv, c, peer, 0) != 0) {
        fg_log_error("http1: out of memory for a connection: closed");
        fg_conn_free(c); /* closes fd: the caller has nothing left to close */
    }
    return 0;
}

int fg_http1_adopt(fg_worker_t *w, const fg_server_t *srv, fg_conn_t *c,
                   const struct sockaddr_storage *peer, int flags)
{
    fg_http1_conn_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    h->w = w;
    h->server = srv;
    h->plain_on_tls = (flags & FG_HTTP1_PLAIN_ON_TLS) != 0;
    h->client_tls = w->accept_client_tls && fg_conn_ssl(c) == NULL;
    fg_ip_t via; /* formatted once: each request copies the text */
    if (w->accept_balancer != NULL &&
        fg_ip_from_sockaddr((const struct sockaddr *)w->accept_balancer, &via) == 0)
        fg_ip_format(&via, h->balancer_ip, sizeof(h->balancer_ip));
    if (peer->ss_family == AF_INET)
        h->peer.in4 = *(const struct sockaddr_in *)peer;
    else if (peer->ss_family == AF_INET6)
        h->peer.in6 = *(const struct sockaddr_in6 *)peer;
    else
        h->peer.sa.sa_family = peer->ss_family;
    h->c = c;
    if (fg_conn_ssl(c) != NULL && srv->tls != NULL && srv->tls->hsts_header != NULL) {
        h->hsts = 1; /* RFC 6797 7.2: only over a secure transport */
    }
    fg_conn_set_cbs(c, &conn_cbs, h);
    fg_conn_set_write_timeout(h->c, srv->send_timeout_ms);
    fg_conn_set_low_watermark(h->c, OUT_LOW_WATER);
    struct fg_http1_spares_s *sp = spares(w);
    if (sp == NULL && (sp = calloc(1, sizeof(*sp))) != NULL &&
        (sp->conn = fg_conn_spares_new()) == NULL) {
        free(sp); /* no spares: everything is freed and allocated as needed */
        sp = NULL;
    }
    w->frontend_state[fg_http1_frontend.slot] = sp;
    if (sp != NULL)
        fg_conn_set_spares(h->c, sp->conn);
    fg_frontend_add(w, &h->session, &fg_http1_frontend);
    /* The first head is due header_timeout after the accept, not after its first byte: a
     * client that connects and waits does not get the wait for free. */
    uint64_t now = fg_clock_now_ms();
    h->head_start_ms = w->accept_ms != 0 && w->accept_ms <= now ? w->accept_ms : now;
    uint64_t spent = now - h->head_start_ms;
    fg_conn_read(h->c, 1, spent < srv->header_timeout_ms ? srv->header_timeout_ms - spent : 1);
    return 0;
}

static void destroy(fg_http1_conn_t *h)
{
    if (h->busy) {
        h->dead = 1;
        return;
    }
    fg_worker_t *w = h->w;
    if (h->in_req) {
        /* The client left before the response ended: 499 in the nginx tradition. */
        fg_request_t *req = h->req;
        h->in_req = 0;
        if (req->handler && req->handler->on_abort)
            req->handler->on_abort(req);
        if (!h->resp_started)
            req->status = 499;
        req->error = req->error ? req->error : "client_closed";
        fg_accesslog_write(w->accesslog, req);
    }
    /* A retiring worker leaves its loop once this was its last session. */
    fg_frontend_remove(w, &h->session);
    fg_conn_free(h->c);
    if (h->act)
        free_act(w, h->act);
    free(h);
}

/* Close after the pending output is written. If the client may still be sending (unread body,
 * an error mid-head), shut our side and read until it closes, so that its unread bytes do not
 * turn into a reset that destroys the response in flight (RFC 9112 9.6). */
static void begin_close(fg_http1_conn_t *h)
{
    h->state = S_CLOSING;
    fg_conn_read(h->c, 0, 0);
    fg_conn_set_low_watermark(h->c, 0);
    fg_conn_last_output(h->c);
    if (fg_conn_flush(h->c) != 0) {
        destroy(h);
        return;
    }
    if (fg_conn_pending(h->c) == 0)
        on_drain(h->c, h);
}

static void on_drain(fg_conn_t *c, void *arg)
{
    fg_http1_conn_t *h = arg;
    if (h->state == S_CLOSING) {
        if (fg_conn_pending(c) > 0)
            return;
        if (!h->linger) {
            destroy(h);
            return;
        }
        fg_conn_shutdown_write(c);
        h->state = S_LINGER;
        h->linger_end_ms = fg_clock_now_us() / 1000 + LINGER_TOTAL_MS;
        evbuffer_drain(fg_conn_input(c), evbuffer_get_length(fg_conn_input(c)));
        fg_conn_read(c, 1, LINGER_MS);
        return;
    }
    if (h->out_paused) {
        resume_parsing(h);
        return;
    }
    if (!h->in_req) {
        release_if_idle(h);
        return;
    }
    if (h->req->handler && h->req->handler->on_writable)
        h->req->handler->on_writable(h->req);
}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    fg_http1_conn_t *h = arg;
    if (what == FG_CONN_EOF && !h->in_req && h->state == S_IDLE && fg_conn_pending(c) > 0) {
        /* The client's FIN came after its last request was answered, while that answer is
         * still being written: nothing to abort, so finish writing before closing (destroying
         * here truncated large responses to `nc -N`-style clients). A partial head left over
         * is dropped. */
        evbuffer_drain(fg_conn_input(c), evbuffer_get_length(fg_conn_input(c)));
        begin_close(h);
        return;
    }
    if (what == FG_CONN_EOF && h->in_req && h->state == S_WAIT && h->server->ignore_client_abort) {
        /* A FIN after the whole request: a client that went away and one that only shut its
         * sending half (`nc -N`, some health checkers; RFC 9112 9.6) look the same. By default
         * that aborts the request (499, as nginx and YARP do); with ignoreClientAbort the
         * response is still sent, and a client that really left shows up as a failed write.
         * Reading stays off; the connection ends after the requests already buffered. */
        h->peer_eof = 1;
        return;
    }
    if (h->state == S_IDLE && !h->in_req && what == FG_CONN_TIMEOUT_READ && h->act != NULL &&
        evbuffer_get_length(fg_conn_input(c)) > 0 && !h->resp_started) {
        /* A partial head that never completed: 408 (RFC 9110 15.5.9). */
        h->req->proto = h;
        if (req_pool(h) == NULL) {
            destroy(h);
            return;
        }
        h->req->ops = &h1_ops;
        h->req->worker = h->w;
        h->req->server = h->server;
        h->req->version = 11;
        h->req->method = FG_STR_LIT("GET");
        h->close_after = 1;
        h->in_req = 1;
        fill_client(h);
        fg_request_error(h->req, 408, "request_timeout", "request head not received in time");
        return;
    }
    if (h->in_req && h->state == S_BODY && what == FG_CONN_TIMEOUT_READ && !h->resp_started) {
        fg_request_t *req = h->req;
        if (req->handler && req->handler->on_abort)
            req->handler->on_abort(req);
        req->handler = NULL;
        h->close_after = 1;
        fg_request_error(req, 408, "request_timeout", "request body not received in time");
        return;
    }
    destroy(h);
}

/* ---- requests ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    return (ch | 0x20) - 'a' + 10;
}

static void make_request_id(fg_http1_conn_t *h, fg_request_t *req)
{
    const fg_http_header_t *f = fg_request_header(req, FG_STR_LIT("X-Request-Id"));
    if (f && f->value.len > 0 && f->value.len <= FG_REQUEST_ID_LEN) {
        size_t i;
        for (i = 0; i < f->value.len; i++) {
            char ch = f->value.base[i];
            if (!((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
                  ch == '-' || ch == '_' || ch == '.'))
                break;
        }
        if (i == f->value.len) {
            memcpy(req->request_id, f->value.base, i);
            req->request_id[i] = '\0';
            return;
        }
    }
    /* 32 hex digits: start time, pid, per-worker sequence: unique across workers and restarts. */
    uint64_t seq = ++h->w->request_seq ^ (uint64_t)h->w->slot << 56;
    fg_put_hex64(req->request_id, (req->start_us << 16) ^ (uint64_t)h->w->pid);
    fg_put_hex64(req->request_id + 16, seq);
    req->request_id[32] = '\0';
    (void)hexval;
}

/* Split the request-target (RFC 9112 3.2) into path and query, normalising the path.
 * Returns 0 or -1 for a target we refuse (400). */
static int parse_target(fg_request_t *req, fg_str_t target)
{
    const char *t = target.base;
    size_t n = target.len;
    /* A fragment is never part of a request-target (RFC 9112 3.2): drop what a client sent. */
    const char *frag = memchr(t, '#', n);
    if (frag)
        n = (size_t)(frag - t);
    if (n == 1 && t[0] == '*') {
        /* asterisk-form (RFC 9112 3.2.4): the server as a whole; fg_dispatch_route answers */
        req->path = FG_STR_LIT("*");
        req->query = FG_STR_LIT("");
        return 0;
    }
    if (n > 0 && t[0] != '/') {
        /* absolute-form: the authority in the target replaces Host (RFC 9112 3.2.2). */
        const char *s = memchr(t, ':', n);
        if (s == NULL || (size_t)(s - t) + 3 > n || s[1] != '/' || s[2] != '/')
            return -1;
        const char *auth = s + 3;
        const char *end = t + n;
        const char *slash = auth;
        while (slash < end && *slash != '/' && *slash != '?')
            slash++;
        req->host = (fg_str_t){auth, (size_t)(slash - auth)};
        /* The authority replaces Host, so it is held to the same rules; userinfo in an http
         * URI is an error (RFC 9110 4.2.4), and an http URI needs a host (4.2.1). */
        if (req->host.len == 0 || !fg_http1_valid_host(req->host))
            return -1;
        if (slash == end) {
            t = "/";
            n = 1;
        } else if (*slash == '?') {
            /* "http://h?q": empty path means "/" (RFC 9112 3.2.1) */
            char *fixed = fg_pool_alloc(req->pool, (size_t)(end - slash) + 2);
            if (fixed == NULL)
                return -1;
            fixed[0] = '/';
            memcpy(fixed + 1, slash, (size_t)(end - slash));
            t = fixed;
            n = (size_t)(end - slash) + 1;
        } else {
            n = (size_t)(end - slash);
            t = slash;
        }
    }
    const char *q = memchr(t, '?', n);
    size_t plen = q ? (size_t)(q - t) : n;
    req->query = q ? (fg_str_t){q + 1, n - plen - 1} : FG_STR_NULL;
    char *path = fg_pool_alloc(req->pool, plen + 1);
    if (path == NULL)
        return -1;
    long l = fg_path_normalize(t, plen, path);
    if (l < 0)
        return -1;
    req->path = (fg_str_t){path, (size_t)l};
    return 0;
}

/* Copy the head out of the read buffer into the request pool and point every slice there, so
 * the input buffer can be drained while the request lives. One memcpy per request. */
static int adopt_head(fg_http1_conn_t *h, const char *raw, size_t len, fg_http1_head_t *head)
{
    fg_request_t *req = h->req;
    fg_pool_t *pool = req_pool(h);
    char *copy = pool ? fg_pool_alloc(pool, len) : NULL;
    if (copy == NULL)
        return -1;
    memcpy(copy, raw, len);
#define REBASE(s) ((s).base ? (fg_str_t){copy + ((s).base - raw), (s).len} : (s))
    req->method = REBASE(head->method);
    req->target = REBASE(head->target);
    req->host = REBASE(head->host);
    for (size_t i = 0; i < head->num_headers; i++) {
        h->act->hdrs[i].name = REBASE(head->headers[i].name);
        h->act->hdrs[i].value = REBASE(head->headers[i].value);
    }
#undef REBASE
    req->headers = h->act->hdrs;
    req->nheaders = head->num_headers;
    return 0;
}

/* A head the parser refused still names its client, and what was parsed of it before the
 * error (method, target, Host), for the logs. Copied: the input is drained before the answer. */
static void keep_parsed(fg_http1_conn_t *h, const fg_http1_head_t *head)
{
    fg_request_t *req = h->req;
    const fg_str_t *from[3] = {&head->method, &head->target, &head->host};
    fg_str_t *to[3] = {&req->method, &req->target, &req->host};
    fg_pool_t *pool = req_pool(h);
    for (int i = 0; i < 3 && pool != NULL; i++) {
        size_t n = from[i]->len < 1024 ? from[i]->len : 1024;
        char *copy = n ? fg_pool_alloc(pool, n) : NULL;
        if (copy != NULL) {
            memcpy(copy, from[i]->base, n);
            *to[i] = (fg_str_t){copy, n};
        }
    }
    if (head->method.len)
        req->version = head->minor_version == 0 ? 10 : 11;
}

/* A request answered before start_request ran (refused or timed-out head) still names its
 * client and gets a request id, for the logs. */
static void fill_client(fg_http1_conn_t *h)
{
    fg_request_t *req = h->req;
    if (req->client_ip[0] == '\0') {
        req->worker = h->w;
        req->server = h->server;
        req->start_us = fg_clock_now_us();
        set_client(h, req);
    }
    if (req->request_id[0] == '\0')
        make_request_id(h, req);
}

static void reject(fg_http1_conn_t *h, int status, const char *error, const char *msg)
{
    fg_request_t *req = h->req;
    if (req_pool(h) == NULL) {
        /* No memory for even an error answer: drop the connection. */
        destroy(h);
        return;
    }
    req->proto = h;
    req->ops = &h1_ops;
    req->worker = h->w; /* Date cache, errorPages and serverHeader apply to these answers too */
    req->server = h->server;
    req->ssl = fg_conn_ssl(h->c);
    fill_client(h);
    if (fg_log_level() >= FG_LOG_INFO) {
        char host[260];
        size_t hl = fg_log_escape_text(host, sizeof(host), req->host.base, req->host.len);
        fg_log_info("client sent an invalid request (%d: %s), client: %s:%u, server: %s, "
                    "host: \"%.*s\", request_id: %s",
                    status, msg, req->client_ip, (unsigned)req->client_port, h->server->id, (int)hl,
                    host, req->request_id);
    }
    if (req->version == 0)
        req->version = 11;
    if (req->method.base == NULL)
        req->method = FG_STR_LIT("GET");
    h->close_after = 1;
    h->linger = 1;
    h->in_req = 1;
    fg_request_error(req, status, error, msg);
}

/* The peer's address into req, as text too (per request: idle connections keep it binary). */
static void set_client(const fg_http1_conn_t *h, fg_request_t *req)
{
    if (h->peer.sa.sa_family == AF_INET) {
        memcpy(&req->client_addr, &h->peer.in4, sizeof(h->peer.in4));
        /* glibc's inet_ntop formats IPv4 with sprintf: too slow for every request. */
        const uint8_t *b = (const uint8_t *)&h->peer.in4.sin_addr;
        char *p = req->client_ip;
        for (int i = 0; i < 4; i++) {
            p = fg_put_u64(p, b[i]);
            *p++ = i < 3 ? '.' : '\0';
        }
        req->client_port = ntohs(h->peer.in4.sin_port);
    } else if (h->peer.sa.sa_family == AF_INET6) {
        memcpy(&req->client_addr, &h->peer.in6, sizeof(h->peer.in6));
        inet_ntop(AF_INET6, &h->peer.in6.sin6_addr, req->client_ip, sizeof(req->client_ip));
        req->client_port = ntohs(h->peer.in6.sin6_port);
    } else {
        req->client_addr.ss_family = h->peer.sa.sa_family;
    }
    if (h->balancer_ip[0])
        memcpy(req->balancer_ip, h->balancer_ip, sizeof(req->balancer_ip));
}

/* Plain HTTP on a TLS port gets 400, then close, as nginx's 497; the rest is the TLS gate
 * every front end applies. Returns 1 when answered. */
static int tls_gate(fg_http1_conn_t *h, fg_request_t *req)
{
    if (h->plain_on_tls) {
        h->close_after = 1;
        h->linger = 1;
        fg_request_error(req, 400, "plain_http_to_tls_port",
                         "The plain HTTP request was sent to a TLS port");
        return 1;
    }
    return fg_request_tls_gate(req);
}

/* Start the request whose head is the first `len` bytes of input. */
static void start_request(fg_http1_conn_t *h, const char *raw, int len, fg_http1_head_t *head)
{
    fg_request_t *req = h->req;
    struct evbuffer *in = fg_conn_input(h->c);
    req->worker = h->w;
    req->server = h->server;
    req->proto = h;
    req->ops = &h1_ops;
    req->version = head->minor_version == 0 ? 10 : 11;
    req->ssl = fg_conn_ssl(h->c);
    req->scheme = req->ssl || h->client_tls ? FG_STR_LIT("https") : FG_STR_LIT("http");
    req->start_us = fg_clock_now_us();
    req->head_bytes = (uint64_t)len;
    set_client(h, req);
    h->in_req = 1;
    h->nrequests++;
    h->close_after = 0;

    if (adopt_head(h, raw, (size_t)len, head) != 0) {
        evbuffer_drain(in, (size_t)len);
        reject(h, 500, "internal_error", "out of memory");
        return;
    }
    evbuffer_drain(in, (size_t)len);
    /* Keep-alive rules, RFC 9112 9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive". */
    req->keep_alive =
        req->version == 11 ? !head->conn_close : (head->conn_keep_alive && !head->conn_close);
    if (head->conn_upgrade && req->version == 11) {
        const fg_http_header_t *u = fg_request_header(req, FG_STR_LIT("Upgrade"));
        req->upgrade = u ? u->value : FG_STR_NULL;
    }
    make_request_id(h, req);
    if (parse_target(req, req->target) != 0) {
        reject(h, 400, "bad_request", "invalid request target");
        return;
    }
    req->content_length = head->chunked ? -1 : head->content_length;
    req->has_body = head->chunked || head->content_length > 0;
    req->expect_continue = head->expect_continue;
    if (head->chunked) {
        fg_http1_chunked_init(&h->act->chunked);
        fg_http1_chunked_keep_trailers(&h->act->chunked);
        h->act->body_left = -1;
    } else {
        h->act->body_left = head->content_length > 0 ? head->content_length : 0;
    }
    req->body_done = !req->has_body;
    h->state = req->has_body ? S_BODY : S_WAIT;

    if (tls_gate(h, req) != 0)
        return;
    if (h->server->tunnel_hop) {
        /* another worker's request for a tunnel this worker holds: never a route */
        if (fg_tunnel_hop_route(req) != 0)
            return;
    } else if (fg_tunnel_endpoint_match(h->w->cfg, h->server, req->path)) {
        if (fg_tunnel_endpoint_check(req) != 0)
            h->close_after = 1;
        else
            h->tunnel = 1;
        return;
    } else if (fg_dispatch_route(req) != 0) {
        return;
    }
    if (req->has_body && req->expect_continue && req->version == 11) {
        /* RFC 9110 10.1.1: the body is wanted, say so before the client waits it out. */
        evbuffer_add(fg_conn_output(h->c), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        fg_conn_flush(h->c);
    }
    if (req->has_body) {
        fg_conn_read(h->c, 1, h->server->body_timeout_ms);
        pump_body(h); /* what already arrived; no handler yet, so nothing is told */
    } else {
        fg_conn_read(h->c, 1, 0);
    }
    if (!h->in_req)
        return;
    fg_dispatch_run(req);
    if (h->in_req && h->state == S_BODY)
        pump_body(h);
}

/* A chunked body's trailer section begins: memory for its fields from the request's pool
 * (bounded by the decoder's trailer limit). Without memory the fields are discarded. */
static void trailer_buf(fg_request_t *req, fg_http1_chunked_t *d)
{
    size_t cap = fg_http1_chunked_trailer_max(d);
    char *buf = fg_pool_alloc(req->pool, cap);
    if (buf != NULL)
        fg_http1_chunked_set_buf(d, buf, cap);
}

/* The chunked body ended: its trailer fields become req->trailers (RFC 9110 6.5). */
static void keep_trailers(fg_request_t *req, const fg_http1_chunked_t *d)
{
    size_t n = fg_http1_chunked_trailer_count(d);
    if (n == 0)
        return;
    fg_http_header_t *t = fg_pool_alloc(req->pool, n * sizeof(*t));
    if (t == NULL)
        return;
    req->ntrailers = fg_http1_chunked_trailers(d, t, n);
    req->trailers = t;
}

/* Move request body bytes from the socket buffer to req->body and tell the handler. */
static void pump_body(fg_http1_conn_t *h)
{
    fg_request_t *req = h->req;
    struct evbuffer *in = fg_conn_input(h->c);
    size_t before = evbuffer_get_length(req->body);
    int64_t limit = fg_request_body_limit(req);
    while (h->state == S_BODY && !h->body_paused && evbuffer_get_length(in) > 0) {
        if (h->act->body_left >= 0) {
            size_t n = evbuffer_get_length(in);
            if ((int64_t)n > h->act->body_left)
                n = (size_t)h->act->body_left;
            evbuffer_remove_buffer(in, req->body, n);
            h->act->body_left -= (int64_t)n;
            req->body_bytes += n;
            if (h->act->body_left == 0) {
                req->body_done = 1;
                h->state = S_WAIT;
            }
            continue;
        }
        /* chunked: the decoder sees one contiguous chain at a time */
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t consumed = 0, data = 0;
        int r = fg_http1_chunked_step(&h->act->chunked, v.iov_base, v.iov_len, &consumed, &data);
        int asked = r == 0 && fg_http1_chunked_wants_buf(&h->act->chunked);
        if (asked)
            trailer_buf(req, &h->act->chunked);
        if (r < 0) {
            if (!h->resp_started) {
                if (req->handler && req->handler->on_abort)
                    req->handler->on_abort(req);
                req->handler = NULL;
                h->close_after = 1;
                fg_request_error(req, 400, "bad_request", "invalid chunked body");
            } else {
                destroy(h);
            }
            return;
        }
        if (data > 0) {
            evbuffer_remove_buffer(in, req->body, data);
            req->body_bytes += data;
            if (limit >= 0 && req->body_bytes > (uint64_t)limit) {
                if (req->handler && req->handler->on_abort)
                    req->handler->on_abort(req);
                req->handler = NULL;
                if (!h->resp_started) {
                    h->close_after = 1;
                    fg_request_error(req, 413, "payload_too_large", "request body too large");
                } else {
                    destroy(h);
                }
                return;
            }
        } else {
            evbuffer_drain(in, consumed);
        }
        if (r == 1) {
            keep_trailers(req, &h->act->chunked);
            req->body_done = 1;
            h->state = S_WAIT;
        }
        if (consumed == 0 && data == 0 && !asked)
            break;
    }
    if (h->state == S_WAIT)
        fg_conn_read(h->c, 1, 0);
    if (evbuffer_get_length(req->body) != before || req->body_done) {
        if (req->handler && req->handler->on_body)
            req->handler->on_body(req);
    }
}

static int head_error_status(int r, const char **error, const char **msg)
{
    switch (r) {
    case FG_HTTP1_ERR_URI_TOO_LONG:
        *error = "uri_too_long";
        *msg = "request line too long";
        return 414;
    case FG_HTTP1_ERR_HEADERS_TOO_LARGE:
        *error = "headers_too_large";
        *msg = "request header section too large";
        return 431;
    case FG_HTTP1_ERR_VERSION:
        *error = "version_not_supported";
        *msg = "HTTP version not supported";
        return 505;
    case FG_HTTP1_ERR_NOT_IMPLEMENTED:
        *error = "not_implemented";
        *msg = "transfer coding not implemented";
        return 501;
    default:
        *error = "bad_request";
        *msg = "malformed request";
        return 400;
    }
}

/* Parse and run requests while whole heads are buffered and no request is in progress. */
/* The agent's connection becomes a tunnel session; this session ends. */
static void tunnel_hand_over(fg_http1_conn_t *h)
{
    fg_request_t *req = h->req;
    fg_conn_t *c = h->c;
    h->c = NULL;
    h->in_req = 0;
    if (h->w->record)
        h->w->record->requests++;
    /* The tunnel's session first: a retiring worker whose last session this was must not
     * leave its loop in between. */
    fg_tunnel_endpoint_accept(req, c);
    fg_accesslog_write(h->w->accesslog, req);
    destroy(h);
}

static void process(fg_http1_conn_t *h)
{
    h->busy = 1;
    struct evbuffer *in = fg_conn_input(h->c);
    fg_http1_limits_t lim = {h->server->max_request_line, h->server->max_header_size,
                             (unsigned)hdrs_cap(h)};
    size_t max_head = h->server->max_header_size ? h->server->max_header_size : 32768;
    while (!h->dead && !h->in_req && h->state == S_IDLE) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0 && h->peer_eof) {
            h->busy = 0;
            begin_close(h);
            return;
        }
        if (output_backlog(h)) {
            /* Nor read: the input stays bounded while the client does not read its answers.
             * The send timeout runs on the queued output meanwhile; on_drain resumes. */
            h->out_paused = 1;
            fg_conn_read(h->c, 0, 0);
            break;
        }
        if (avail == 0) {
            release_if_idle(h);
            fg_conn_read(h->c, 1,
                         h->nrequests ? h->server->keepalive_timeout_ms
                                      : h->server->header_timeout_ms);
            break;
        }
        if (activate(h) != 0) {
            fg_log_error("http1: out of memory for a request: connection closed");
            h->dead = 1;
            break;
        }
        fg_http1_head_t head;
        memset(&head, 0, sizeof(head));
        head.headers = h->act->hdrs;
        head.headers_cap = hdrs_cap(h);
        /* Most heads sit whole in the first chain: parse there and linearise only if not. */
        struct evbuffer_iovec v;
        int r = FG_HTTP1_INCOMPLETE;
        const char *p = NULL;
        size_t n = 0;
        if (evbuffer_peek(in, -1, NULL, &v, 1) == 1 && v.iov_len < avail) {
            p = v.iov_base;
            n = v.iov_len < max_head + 1 ? v.iov_len : max_head + 1;
            r = fg_http1_parse_request(p, n, &lim, &head);
        }
        if (r == FG_HTTP1_INCOMPLETE) {
            n = avail < max_head + 1 ? avail : max_head + 1;
            p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
            memset(&head, 0, sizeof(head));
            head.headers = h->act->hdrs;
            head.headers_cap = hdrs_cap(h);
            r = fg_http1_parse_request(p, n, &lim, &head);
        }
        if (r == FG_HTTP1_INCOMPLETE) {
            if (n > max_head) {
                r = FG_HTTP1_ERR_HEADERS_TOO_LARGE;
            } else if (h->peer_eof) {
                /* The rest of this head will never come: drop it, but let the previous
                 * response finish writing. */
                evbuffer_drain(in, avail);
                h->busy = 0;
                begin_close(h);
                return;
            } else {
                /* The header timeout bounds the whole head, not the gap between its bytes: a
                 * client trickling a byte at a time (slowloris) cannot hold the connection. */
                uint64_t now = fg_clock_now_us() / 1000, limit = h->server->header_timeout_ms;
                if (h->head_start_ms == 0)
                    h->head_start_ms = now;
                uint64_t spent = now - h->head_start_ms;
                fg_conn_read(h->c, 1, spent < limit ? limit - spent : 1);
                break;
            }
        }
        if (r < 0) {
            const char *error, *msg;
            int status = head_error_status(r, &error, &msg);
            keep_parsed(h, &head);
            evbuffer_drain(in, avail);
            reject(h, status, error, msg);
            break;
        }
        h->head_start_ms = 0;
        start_request(h, p, r, &head);
    }
    h->busy = 0;
    if (h->dead)
        destroy(h);
    else if (h->tunnel)
        tunnel_hand_over(h);
}

static void on_read(fg_conn_t *c, void *arg)
{
    fg_http1_conn_t *h = arg;
    switch (h->state) {
    case S_IDLE:
        if (!h->in_req)
            process(h);
        break;
    case S_BODY:
        h->busy = 1;
        pump_body(h);
        h->busy = 0;
        if (h->dead)
            destroy(h);
        else if (h->state == S_IDLE && !h->in_req)
            process(h); /* the response ended while we were busy: pipelined requests */
        break;
    case S_WAIT:
        /* Pipelined bytes wait for the current response; stop reading once plenty arrived. */
        if (evbuffer_get_length(fg_conn_input(c)) >
            (h->server->max_header_size ? h->server->max_header_size : 32768) * 2)
            fg_conn_read(c, 0, 0);
        break;
    case S_CLOSING:
    case S_LINGER:
        evbuffer_drain(fg_conn_input(c), evbuffer_get_length(fg_conn_input(c)));
        /* a client that keeps trickling bytes cannot hold the connection for ever */
        if (h->state == S_LINGER && fg_clock_now_us() / 1000 >= h->linger_end_ms)
            destroy(h);
        break;
    }
}

/* ---- the front-end interface (worker/core/frontend.h) ---- */

static void fe_retire(fg_session_t *s)
{
    fg_http1_conn_t *h = (fg_http1_conn_t *)s;
    if (h->in_req && !h->resp_started)
        h->close_after = 1;
}

static void fe_close_idle(fg_session_t *s)
{
    fg_http1_conn_t *h = (fg_http1_conn_t *)s;
    if (!h->in_req && h->state == S_IDLE)
        destroy(h);
}

static void fe_close(fg_session_t *s)
{
    destroy((fg_http1_conn_t *)s);
}

static void fe_release(fg_worker_t *w)
{
    struct fg_http1_spares_s *sp = spares(w);
    if (sp == NULL)
        return;
    while (sp->acts != NULL) {
        act_t *a = sp->acts;
        sp->acts = a->next_spare;
        free_act(w, a);
    }
    fg_conn_spares_free(sp->conn);
    free(sp);
    w->frontend_state[fg_http1_frontend.slot] = NULL;
}

const fg_frontend_t fg_http1_frontend = {
    .name = "http/1.1",
    .slot = 0,
    .start = fg_http1_accept,
    .retire = fe_retire,
    .close_idle = fe_close_idle,
    .close = fe_close,
    .release = fe_release,
};
