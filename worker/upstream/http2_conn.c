/* The HTTP/2 client's connections (worker/upstream/http2_stream.h): the nghttp2 client
 * session and the fg_conn under it, pooled per destination or adopted from a tunnel. Their
 * lifetime, flushing, failure and idling, the switch to HTTP/1.1 when ALPN chooses it, the
 * upgrades that wait for the peer's SETTINGS, and the public face of an adopted session. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "worker/core/clock.h"
#include "worker/upstream/http1_client.h"
#include "worker/upstream/http2_client.h"
#include "worker/upstream/http2_stream.h"
#include "worker/upstream/http2_tunnel.h"
#include "worker/upstream/upstream.h"

#define ADOPTED_READ_MAX (64 * 1024 - 128) /* one 64 KiB chain with its header */
#define ADOPTED_FRAME_MAX (64 * 1024)      /* SETTINGS_MAX_FRAME_SIZE of a tunnel */

/* The connection the session reads and writes: pooled, adopted, or none (memory mode). */
static fg_conn_t *cconn(const h2conn_t *c)
{
    return c->u ? c->u->c : c->fc;
}

/* Not inlined: callers hold a busy count across the calls that may free, which the
 * compiler's use-after-free analysis cannot see. */
__attribute__((noinline)) void fg_http2_client_conn_free(h2conn_t *c)
{
    if (c->flush_ev)
        event_free(c->flush_ev);
    nghttp2_session_del(c->s);
    free(c->nvbuf); /* after the session: its queued HEADERS point into it */
    if (c->u)
        fg_upstream_close(c->u);
    if (c->mem)
        evbuffer_free(c->mem);
    free(c);
}

/* Returns 1 when c is gone. */
int fg_http2_client_conn_leave(h2conn_t *c)
{
    if (--c->busy > 0)
        return c->dead;
    if (!c->dead || c->mem || c->fc)
        return c->dead; /* memory mode and adopted: test_free / fg_http2_client_close free */
    fg_http2_client_conn_free(c);
    return 1;
}

static void conn_unlink(h2conn_t *c)
{
    if (c->dest == NULL)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->dest->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->dest = NULL;
}

void fg_http2_client_consumed(h2conn_t *c, int32_t id, size_t n)
{
    nghttp2_session_consume_stream(c->s, id, n); /* the connection's reopened in on_data */
}

/* ---- the connection ---- */

unsigned fg_http2_client_conn_max_streams(h2conn_t *c)
{
    uint32_t m = nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return m < DEFAULT_STREAMS * 10u ? m : DEFAULT_STREAMS * 10u;
}

/* Produce the session's frames into the connection's output (bounded by OUT_HIGH: the rest
 * waits for on_drain) and write them; then tell streams whose queued body drained. */
static void conn_flush_now(h2conn_t *c);

void fg_http2_client_flush(h2conn_t *c)
{
    if (c->flush_ev == NULL) {
        conn_flush_now(c);
    } else if (!c->flush_due && !c->dead) {
        c->flush_due = 1;
        event_active(c->flush_ev, EV_WRITE, 1);
    }
}

static void on_flush_due(evutil_socket_t fd, short what, void *arg)
{
    h2conn_t *c = arg;
    (void)fd;
    (void)what;
    c->flush_due = 0;
    conn_flush_now(c);
}

/* Produce the session's frames into the connection's output and write them. */
static void conn_flush_now(h2conn_t *c)
{
    if (c->flushing || c->in_recv) {
        c->again = 1; /* the outer flush, or the receive path once it returns, sends */
        return;
    }
    if (!c->ready || c->dead)
        return;
    c->flushing = 1;
    fg_http2_client_conn_enter(c);
    do {
        c->again = 0;
        fg_conn_t *fc = cconn(c);
        struct evbuffer *out = fc ? fg_conn_output(fc) : c->mem;
        while (fc == NULL || fg_conn_pending(fc) < OUT_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (n < 0) {
                c->flushing = 0;
                fg_http2_client_conn_fail(c, FG_XERR_INVALID, 0, "HTTP/2 session failed");
                fg_http2_client_conn_leave(c);
                return;
            }
            if (n == 0) {
                /* Every HEADERS frame submitted is packed: the pinned fields are free. */
                if (nghttp2_session_get_outbound_queue_size(c->s) == 0)
                    c->nvused = 0;
                break;
            }
            c->bytes_out += (uint64_t)n;
            evbuffer_add(out, data, (size_t)n);
        }
        if (fc && fg_conn_flush(fc) != 0) {
            c->flushing = 0;
            for (h2x_t *x = c->streams; x; x = x->next)
                x->info.write_failed = 1;
            fg_http2_client_conn_fail(c, FG_XERR_RESET, fg_conn_errno(fc), NULL);
            fg_http2_client_conn_leave(c);
            return;
        }
        for (h2x_t *x = c->streams, *nx; x && !c->dead; x = nx) {
            nx = x->next;
            if (x->wait_ready && evbuffer_get_length(x->body) <= BODY_LOW) {
                x->wait_ready = 0;
                x->busy++;
                x->cbs->on_send_ready(x->arg);
                nx = x->dead ? c->streams : x->next; /* the list may have changed */
                fg_http2_client_stream_leave(x);
            }
        }
    } while (c->again && !c->dead);
    c->flushing = 0;
    if (!c->dead && nghttp2_session_want_read(c->s) == 0 && nghttp2_session_want_write(c->s) == 0)
        /* The session is over: the peer's GOAWAY, or ours after its protocol error. */
        fg_http2_client_conn_fail(c, c->goaway ? FG_XERR_EOF : FG_XERR_INVALID, 0,
                                  c->goaway ? "upstream ended the HTTP/2 connection"
                                            : "invalid HTTP/2 from upstream");
    fg_http2_client_conn_leave(c);
}

/* Fail every stream of c and close it. */
void fg_http2_client_conn_fail(h2conn_t *c, fg_exchange_error_t kind, int err, const char *detail)
{
    if (c->dead)
        return;
    fg_http2_client_conn_enter(c);
    c->dead = 1;
    conn_unlink(c);
    if (c->owner && c->owner->on_dead)
        c->owner->on_dead(c->owner_arg, detail);
    while (c->streams) {
        h2x_t *x = c->streams;
        /* Off the connection first, so that the handler's close touches only x. */
        c->streams = x->next;
        if (c->streams)
            c->streams->prev = NULL;
        x->next = x->prev = NULL;
        x->conn = NULL;
        c->nstreams--;
        c->nplain -= x->plain;
        if (x->relay) {
            fg_http2_tunnel_gone(x);
            continue;
        }
        fg_exchange_error_t k = kind;
        if (k == FG_XERR_EOF && x->info.phase == FG_XPHASE_BODY)
            k = FG_XERR_EOF_BODY;
        if (k == FG_XERR_CONNECT && x->info.phase != FG_XPHASE_CONNECTING)
            k = FG_XERR_RESET;
        fg_http2_client_stream_fail(x, k, err, detail);
    }
    fg_http2_client_conn_leave(c);
}

/* A connection without streams: closed when private, goaway or the worker retires; else read
 * with the cluster's idle timeout. */
void fg_http2_client_conn_maybe_idle(h2conn_t *c)
{
    if (c->nstreams > 0 || !c->ready || c->u == NULL)
        return;
    if (c->dest == NULL || c->goaway || c->w->retiring) {
        fg_http2_client_conn_enter(c);
        c->dead = 1;
        conn_unlink(c);
        fg_http2_client_conn_leave(c);
        return;
    }
    fg_conn_read(c->u->c, 1, c->cl ? c->cl->idle_timeout_ms : 0);
}

/* Read with the activity timeout while a stream waits for its destination; streams that are
 * relay ends only may be silent for long (the relay's idle timeout governs them). */
void fg_http2_client_conn_busy_read(h2conn_t *c)
{
    if (c->u)
        fg_conn_read(c->u->c, 1, c->nstreams > c->ntunnels ? c->activity_ms : 0);
}

/* x, off its connection, goes to the HTTP/1.1 client (its request kept in out_copy); x then
 * stands in front of that exchange (x->inner). */
static void to_http1(h2x_t *x)
{
    fg_exchange_req_t rq = {.out = x->out_copy,
                            .content_length = x->content_length,
                            .replay = evbuffer_get_length(x->body) ? x->body : NULL,
                            .has_body = x->has_body,
                            .upgrade = x->protocol[0] != 0};
    x->busy++;
    x->inner = x->out_copy ? fg_http1_client_start(&x->t, &rq, x->cbs, x->arg) : NULL;
    int e = errno;
    evbuffer_drain(x->body, evbuffer_get_length(x->body));
    if (x->inner == NULL)
        fg_http2_client_stream_fail(x, FG_XERR_CONNECT, e, NULL);
    else if (x->body_end) /* the whole body was given: its end too (trailers are lost) */
        fg_exchange_send_body(x->inner, NULL, 1);
    else if (fg_exchange_info(x->inner)->reused)
        x->cbs->on_send_ready(x->arg); /* a pooled connection: the body goes now */
    fg_http2_client_stream_leave(x);
}

/* Hand every stream waiting on c to the HTTP/1.1 client: ALPN chose http/1.1 (RFC 7301). The
 * connection joins the HTTP/1.1 pool, where the first of them finds it. */
static void fall_back(h2conn_t *c)
{
    if (c->dest)
        c->dest->h1_only = 1;
    fg_http2_client_conn_enter(c);
    c->dead = 1;
    conn_unlink(c);
    fg_upconn_t *u = c->u;
    c->u = NULL;
    fg_upstream_release(u);
    while (c->streams) {
        h2x_t *x = c->streams;
        c->streams = x->next;
        x->next = x->prev = NULL;
        x->conn = NULL;
        c->nstreams--;
        x->upgrade = 0;
        x->t.fresh = 0;
        to_http1(x);
    }
    fg_http2_client_conn_leave(c);
}

/* RFC 8441 3: extended CONNECT only to a peer that announced SETTINGS_ENABLE_CONNECT_PROTOCOL 1
 * (a peer's preface SETTINGS must have arrived). */
int fg_http2_client_connect_allowed(h2conn_t *c)
{
    return nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1;
}

/* An upgrade the destination cannot take as extended CONNECT goes as an HTTP/1.1 Upgrade on a
 * connection of its own, unless the cluster wants HTTP/2 exactly. x is off c on return. */
static void upgrade_by_http1(h2x_t *x)
{
    x->busy++;
    fg_http2_client_stream_detach(x, 0); /* not submitted: nothing to reset */
    if (x->t.cl && x->t.cl->version_policy == FG_VERSION_EXACT)
        fg_http2_client_stream_fail(x, FG_XERR_INVALID, 0,
                                    "upstream does not allow extended CONNECT");
    else
        to_http1(x);
    fg_http2_client_stream_leave(x);
}

static h2x_t *waiting_upgrade(h2conn_t *c)
{
    for (h2x_t *x = c->streams; x; x = x->next)
        if (x->upgrade)
            return x;
    return NULL;
}

/* The peer's SETTINGS arrived: every upgrade waiting on c goes, as extended CONNECT or by
 * HTTP/1.1. */
static void decide_upgrades(h2conn_t *c)
{
    c->settings_due = 0;
    int ok = fg_http2_client_connect_allowed(c);
    fg_http2_client_conn_enter(c);
    for (h2x_t *x; !c->dead && (x = waiting_upgrade(c)) != NULL;) {
        x->upgrade = 0;
        if (!ok)
            upgrade_by_http1(x);
        else if (fg_http2_client_submit_connect(x, NULL, 0) != 0)
            fg_http2_client_stream_fail(x, FG_XERR_INVALID, 0, "cannot send the extended CONNECT");
        else
            x->wait_ready = 1;
    }
    if (!c->dead)
        fg_http2_client_flush(c);
    fg_http2_client_conn_leave(c);
}

/* Connected (TLS done): the preface and the waiting streams go out. */
static void conn_up(h2conn_t *c)
{
    if (c->u && fg_conn_ssl(c->u->c) && fg_conn_alpn(c->u->c) != FG_TLS_ALPN_H2) {
        if (c->cl && c->cl->version_policy == FG_VERSION_EXACT) {
            fg_http2_client_conn_fail(c, FG_XERR_TLS, 0, "upstream did not agree to HTTP/2 (ALPN)");
            return;
        }
        fall_back(c);
        return;
    }
    c->ready = 1;
    uint64_t connect_us = fg_clock_now_us() - c->connect_at;
    fg_http2_client_conn_enter(c);
    for (h2x_t *x = c->streams; x; x = x->next) {
        x->info.connect_us = connect_us;
        if (x->upgrade)
            continue; /* it waits for the peer's SETTINGS (decide_upgrades) */
        free(x->out_copy);
        x->out_copy = NULL;
        fg_http2_client_stream_go(x);
        x->wait_ready = 1; /* the flush tells it: the body may follow the head */
    }
    fg_http2_client_conn_busy_read(c);
    fg_http2_client_flush(c);
    fg_http2_client_conn_leave(c);
}

static void up_read(fg_conn_t *fc, void *arg)
{
    h2conn_t *c = arg;
    struct evbuffer *in = fg_conn_input(fc);
    fg_http2_client_conn_enter(c);
    while (!c->dead && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        c->in_recv = 1;
        ssize_t n = nghttp2_session_mem_recv(c->s, v.iov_base, v.iov_len);
        c->in_recv = 0;
        if (c->dead)
            break;
        if (n < 0) {
            fg_http2_client_conn_fail(c, FG_XERR_INVALID, 0, "invalid HTTP/2 from upstream");
            break;
        }
        c->bytes_in += (uint64_t)n;
        evbuffer_drain(in, (size_t)n);
    }
    if (!c->dead && c->settings_due)
        decide_upgrades(c);
    if (!c->dead)
        fg_http2_client_flush(c);
    fg_http2_client_conn_leave(c);
}

static void up_drain(fg_conn_t *fc, void *arg)
{
    h2conn_t *c = arg;
    fg_http2_client_flush(c);
}

static void up_event(fg_conn_t *fc, void *arg, int what)
{
    h2conn_t *c = arg;
    fg_http2_client_conn_enter(c);
    int connecting = !c->ready;
    switch (what) {
    case FG_CONN_CONNECTED:
        conn_up(c);
        break;
    case FG_CONN_TIMEOUT_WRITE:
        fg_http2_client_conn_fail(
            c, connecting ? FG_XERR_CONNECT_TIMEOUT : FG_XERR_SEND_TIMEOUT, ETIMEDOUT,
            connecting ? "upstream connect timed out" : "upstream stopped accepting data");
        break;
    case FG_CONN_TIMEOUT_READ:
        if (c->nstreams == 0) {
            c->dead = 1; /* idle for the cluster's idleTimeout */
            conn_unlink(c);
        } else {
            fg_http2_client_conn_fail(c, FG_XERR_READ_TIMEOUT, ETIMEDOUT,
                                      "upstream did not answer in time");
        }
        break;
    case FG_CONN_TLS_FAILED:
        fg_http2_client_conn_fail(c, FG_XERR_TLS, fg_conn_errno(fc), fg_conn_tls_error(fc));
        break;
    case FG_CONN_EOF:
        fg_http2_client_conn_fail(c, FG_XERR_EOF, 0, "upstream closed the connection prematurely");
        break;
    default:
        fg_http2_client_conn_fail(c, connecting ? FG_XERR_CONNECT : FG_XERR_RESET,
                                  fg_conn_errno(fc), NULL);
        break;
    }
    fg_http2_client_conn_leave(c);
}

static const fg_conn_cbs_t up_cbs = {up_read, up_drain, up_event};

/* A session for c, its SETTINGS queued (RFC 9113 3.4: the preface). -1 when out of memory. */
int fg_http2_client_session_new(h2conn_t *c)
{
    nghttp2_option *opt;
    nghttp2_session_callbacks *cbs = fg_http2_client_callbacks(); /* the session keeps a copy */
    if (cbs == NULL)
        return -1;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -1;
    }
    /* A stream's window goes back as the handler takes the bytes, so a slow client holds at
     * most STREAM_WINDOW of its stream in memory; the connection's as the bytes arrive. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, DEFAULT_STREAMS);
    int rc = nghttp2_session_client_new2(&c->s, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return -1;
    /* A tunnel's agent may send DATA frames as large as the WebSocket frames that carry them
     * (RFC 9113 6.5.2): fewer frames, and whole buffer chains moved on its side. */
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HEAD_MAX},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, ADOPTED_FRAME_MAX},
    };
    size_t niv = sizeof(iv) / sizeof(iv[0]) - (c->fc ? 0 : 1);
    if (nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
        nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
        return -1;
    return 0;
}

h2conn_t *fg_http2_client_conn_new(const fg_exchange_target_t *t, h2dest_t *dest)
{
    h2conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->w = t->w;
    c->cl = t->cl;
    c->di = t->di;
    c->activity_ms = t->activity_timeout_ms;
    c->connect_at = fg_clock_now_us();
    c->https = t->cl && t->cl->destinations[t->di].https;
    if (fg_http2_client_session_new(c) != 0) {
        fg_http2_client_conn_free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->u =
        t->cl ? fg_upstream_open_timeout(t->w, t->cl, t->di, &up_cbs, c, t->connect_timeout_ms)
              : fg_upstream_open_addr(t->w, t->addr, t->addrlen, &up_cbs, c, t->connect_timeout_ms);
    if (c->u == NULL) {
        int e = errno;
        fg_http2_client_conn_free(c);
        errno = e;
        return NULL;
    }
    if (dest) {
        c->dest = dest;
        c->next = dest->conns;
        if (dest->conns)
            dest->conns->prev = c;
        dest->conns = c;
    }
    return c;
}

/* ---- adopted connections (tunnels) ---- */

fg_h2client_t *fg_http2_client_adopt(fg_worker_t *w, fg_conn_t *fc, const fg_h2client_owner_t *o,
                                     void *arg)
{
    h2conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->w = w;
    c->fc = fc;
    c->owner = o;
    c->owner_arg = arg;
    c->connect_at = fg_clock_now_us();
    c->flush_ev = event_new(w->base, -1, 0, on_flush_due, c);
    if (c->flush_ev == NULL || fg_http2_client_session_new(c) != 0) {
        if (c->flush_ev)
            event_free(c->flush_ev);
        nghttp2_session_del(c->s);
        free(c);
        return NULL;
    }
    /* A tunnel carries many streams' DATA: reads as large as a WebSocket frame take them in
     * a fraction of the system calls of the default 16 KiB. */
    fg_conn_set_read_max(fc, ADOPTED_READ_MAX);
    c->ready = 1; /* the owner's connection is up: the preface leaves now */
    fg_http2_client_flush(c);
    return (fg_h2client_t *)c;
}

void fg_http2_client_input(fg_h2client_t *h)
{
    h2conn_t *c = (h2conn_t *)h;
    if (!c->dead)
        up_read(c->fc, c);
}

void fg_http2_client_drain(fg_h2client_t *h)
{
    h2conn_t *c = (h2conn_t *)h;
    if (!c->dead)
        fg_http2_client_flush(c);
}

void fg_http2_client_close(fg_h2client_t *h, const char *detail)
{
    h2conn_t *c = (h2conn_t *)h;
    if (c == NULL)
        return;
    c->owner = NULL; /* the owner is going: nothing more is told */
    fg_http2_client_conn_fail(c, FG_XERR_EOF, 0, detail);
    if (c->busy == 0) {
        fg_http2_client_conn_free(c);
    } else {
        c->fc = NULL; /* freed by the last fg_http2_client_conn_leave, which no longer sees it as
                         adopted */
    }
}

int fg_http2_client_available(const fg_h2client_t *h)
{
    const h2conn_t *c = (const h2conn_t *)h;
    return !c->dead && !c->goaway && c->nstreams < fg_http2_client_conn_max_streams((h2conn_t *)c);
}

unsigned fg_http2_client_nstreams(const fg_h2client_t *h)
{
    return ((const h2conn_t *)h)->nstreams;
}

unsigned fg_http2_client_nplain(const fg_h2client_t *h)
{
    return ((const h2conn_t *)h)->nplain;
}

unsigned fg_http2_client_max_streams(const fg_h2client_t *h)
{
    return fg_http2_client_conn_max_streams((h2conn_t *)h);
}

int fg_http2_client_goaway(const fg_h2client_t *h)
{
    return ((const h2conn_t *)h)->goaway;
}

/* Whether x has waited for its peer longer than its activity timeout: not while its handler
 * holds the body back (paused), nor in an exempt response body. */
static int overdue(const h2x_t *x, uint64_t now_us)
{
    if (x->idle_ms == 0 || x->paused || x->finished || (x->exempt && x->head_done))
        return 0;
    return now_us - x->heard_us > x->idle_ms * 1000;
}

void fg_http2_client_expire(fg_h2client_t *h, uint64_t now_us)
{
    h2conn_t *c = (h2conn_t *)h;
    fg_http2_client_conn_enter(c);
    /* A failure may change the list (the handler retries, or closes others): start over,
     * at most once per stream. */
    for (unsigned budget = c->nstreams; budget > 0 && !c->dead; budget--) {
        h2x_t *x = c->streams;
        while (x && !overdue(x, now_us))
            x = x->next;
        if (x == NULL)
            break;
        fg_http2_client_stream_fail(x, FG_XERR_READ_TIMEOUT, ETIMEDOUT,
                                    "upstream did not answer in time");
    }
    if (!c->dead)
        fg_http2_client_flush(c);
    fg_http2_client_conn_leave(c);
}

void fg_http2_client_bytes(const fg_h2client_t *h, uint64_t *in, uint64_t *out)
{
    *in = ((const h2conn_t *)h)->bytes_in;
    *out = ((const h2conn_t *)h)->bytes_out;
}
