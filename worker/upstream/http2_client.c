/* The HTTP/2 client (worker/upstream/http2_client.h): its streams as fg_exchange. A stream's
 * lifetime and failure, the exchange operations, and where a stream starts: on a shared or
 * private connection to a destination (the worker's pool of them), on a connection adopted by
 * a tunnel, or in memory for the tests. The connections are in http2_conn.c, the request's
 * framing in http2_request.c, the response's in http2_response.c. nghttp2 callbacks run inside
 * nghttp2_session_mem_recv; the handler's callbacks are made from them, so every object
 * carries a busy count and a dead flag, and nothing is sent while a receive is under way (the
 * receive path flushes once it returns). */
#include "worker/upstream/http2_client.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "worker/core/clock.h"
#include "worker/upstream/http1_client.h"
#include "worker/upstream/http2_stream.h"
#include "worker/upstream/http2_tunnel.h"
#include "worker/upstream/upstream.h"

static void dest_free(fg_upstream_ext_t *ext);

/* Tell an adopting owner how many streams are open now. */
static void tell_streams(h2conn_t *c)
{
    if (c->owner && c->owner->on_streams)
        c->owner->on_streams(c->owner_arg, c->nstreams);
}

/* ---- lifetimes ---- */

static void x_free(h2x_t *x)
{
    if (x->t_ev)
        event_free(x->t_ev);
    if (x->body)
        evbuffer_free(x->body);
    if (x->in)
        evbuffer_free(x->in);
    free(x->trailers);
    if (x->hb != x->hin)
        free(x->hb);
    if (x->head_hb != x->hin)
        free(x->head_hb);
    free(x->out_copy);
    free(x);
}

/* Returns 1 when x is gone. */
int fg_http2_client_stream_leave(h2x_t *x)
{
    if (--x->busy > 0)
        return x->dead;
    if (!x->dead)
        return 0;
    x_free(x);
    return 1;
}

/* Take x off its connection: the session forgets it (its stream, if open, is reset with
 * `code` unless 0 and already closed). */
void fg_http2_client_stream_detach(h2x_t *x, uint32_t code)
{
    h2conn_t *c = x->conn;
    if (c == NULL)
        return;
    x->conn = NULL;
    if (x->id > 0) {
        nghttp2_session_set_stream_user_data(c->s, x->id, NULL);
        /* A stream done both ways needs no reset (RFC 9113 5.1). */
        int done = x->ended && x->info.req_sent;
        if (!x->closed && !c->dead && !done)
            nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, x->id, code);
    }
    if (x->prev)
        x->prev->next = x->next;
    else
        c->streams = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    c->nstreams--;
    c->nplain -= x->plain;
    if (!c->dead) {
        tell_streams(c);
        fg_http2_client_flush(c);
        fg_http2_client_conn_maybe_idle(c);
    }
}

static void x_end(h2x_t *x, uint32_t code)
{
    fg_http2_client_stream_detach(x, code);
    x->dead = 1;
    x->busy++;
    fg_http2_client_stream_leave(x);
}

void fg_http2_client_stream_end(h2x_t *x, uint32_t code)
{
    x_end(x, code);
}

/* ---- failure ---- */

void fg_http2_client_stream_fail(h2x_t *x, fg_exchange_error_t kind, int err, const char *detail)
{
    if (x->finished)
        return;
    x->finished = 1;
    x->info.reusable = 0;
    fg_exchange_fail_t f = {kind, err, x->info.phase, detail};
    x->busy++;
    x->cbs->on_error(x->arg, &f);
    if (!x->dead)
        x_end(x, NGHTTP2_CANCEL);
    fg_http2_client_stream_leave(x);
}

static void x_finish(h2x_t *x)
{
    if (x->finished)
        return;
    x->finished = 1;
    x->info.phase = FG_XPHASE_DONE;
    x->cbs->on_end(x->arg);
}

/* ---- exchange vtable ---- */

static int xs_send_body(fg_exchange_t *b, struct evbuffer *data, int end)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner)
        return fg_exchange_send_body(x->inner, data, end);
    /* An upgrade has no body: after the switch the stream's DATA are the relay's, and an end
     * here would be END_STREAM, the tunnel's half-close (RFC 8441 4). The call sends the
     * head. */
    if (x->upgrade || x->connect) {
        if (data)
            evbuffer_drain(data, evbuffer_get_length(data));
        if (x->conn == NULL || x->id <= 0 || x->relay)
            return 0;
        x->busy++;
        fg_http2_client_flush(x->conn);
        return fg_http2_client_stream_leave(x) || x->dead ? -1 : 0;
    }
    if (x->conn == NULL || x->body_end || x->closed) {
        if (data)
            evbuffer_drain(data, evbuffer_get_length(data));
        return 0;
    }
    if (data)
        evbuffer_add_buffer(x->body, data);
    x->body_end |= !!end;
    if (evbuffer_get_length(x->body) > BODY_LOW)
        x->wait_ready = 1;
    h2conn_t *c = x->conn;
    if (x->id > 0 && x->deferred) {
        x->deferred = 0;
        nghttp2_session_resume_data(c->s, x->id);
    }
    x->busy++;
    fg_http2_client_flush(c);
    return fg_http2_client_stream_leave(x) || x->dead ? -1 : 0;
}

/* Trailers close the body (RFC 9113 8.1: a HEADERS frame with END_STREAM after the DATA). */
static int xs_send_trailers(fg_exchange_t *b, const fg_http_header_t *t, size_t n)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner)
        return fg_exchange_send_trailers(x->inner, t, n);
    if (x->conn == NULL || x->body_end || x->trailers != NULL || n == 0)
        return xs_send_body(b, NULL, 1);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += t[i].name.len + t[i].value.len;
    x->trailers = malloc(n * sizeof(nghttp2_nv) + bytes);
    if (x->trailers == NULL)
        return xs_send_body(b, NULL, 1);
    char *p = (char *)(x->trailers + n);
    for (size_t i = 0; i < n; i++) {
        char *nm = p;
        for (size_t k = 0; k < t[i].name.len; k++) {
            char ch = t[i].name.base[k];
            *p++ = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        memcpy(p, t[i].value.base, t[i].value.len);
        x->trailers[i] = mknv(nm, t[i].name.len, p, t[i].value.len);
        p += t[i].value.len;
    }
    x->ntrailers = n;
    return xs_send_body(b, NULL, 1);
}

static size_t xs_pending(const fg_exchange_t *b)
{
    const h2x_t *x = (const h2x_t *)b;
    if (x->inner)
        return fg_exchange_pending(x->inner);
    return x->body ? evbuffer_get_length(x->body) : 0;
}

/* Give the handler what waits in `in` and its window back to the peer. Returns 1 when x is
 * gone. */
int fg_http2_client_deliver(h2x_t *x)
{
    size_t n = evbuffer_get_length(x->in);
    if (n > 0 && !x->finished) {
        x->cbs->on_body(x->arg, x->in);
        if (x->dead)
            return 1;
    }
    if (x->unconsumed > 0 && x->conn != NULL && x->id > 0) {
        fg_http2_client_consumed(x->conn, x->id, x->unconsumed);
        x->unconsumed = 0;
    }
    if (x->ended && !x->paused) {
        x_finish(x);
        return x->dead;
    }
    return 0;
}

static void xs_pause(fg_exchange_t *b, int paused)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner) {
        fg_exchange_pause(x->inner, paused);
        return;
    }
    if (x->paused == (unsigned)!!paused)
        return;
    x->paused = !!paused;
    if (paused)
        return;
    h2conn_t *c = x->conn;
    x->busy++;
    if (c)
        fg_http2_client_conn_enter(c);
    fg_http2_client_deliver(x);
    if (c) {
        if (!c->dead)
            fg_http2_client_flush(c);
        fg_http2_client_conn_leave(c);
    }
    fg_http2_client_stream_leave(x);
}

static const fg_exchange_info_t *xs_info(const fg_exchange_t *b)
{
    const h2x_t *x = (const h2x_t *)b;
    return x->inner ? fg_exchange_info(x->inner) : &x->info;
}

static int64_t xs_raw_left(const fg_exchange_t *b)
{
    const h2x_t *x = (const h2x_t *)b;
    return x->inner ? fg_exchange_raw_left(x->inner) : -1; /* frames: never spliced */
}

static fg_conn_t *xs_raw_begin(fg_exchange_t *b)
{
    h2x_t *x = (h2x_t *)b;
    return x->inner ? fg_exchange_raw_begin(x->inner) : NULL;
}

static void xs_raw_consumed(fg_exchange_t *b, size_t n)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner)
        fg_exchange_raw_consumed(x->inner, n);
}

static void xs_release(fg_exchange_t *b)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner) {
        fg_exchange_t *in = x->inner;
        x->inner = NULL;
        fg_exchange_release(in);
    }
    /* A stream whose response ended while our body still flowed: RFC 9113 8.1 lets the server
     * answer early; NO_ERROR tells it we stop sending. */
    x_end(x, NGHTTP2_NO_ERROR);
}

static void xs_close(fg_exchange_t *b)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner) {
        fg_exchange_t *in = x->inner;
        x->inner = NULL;
        fg_exchange_close(in);
    }
    x_end(x, NGHTTP2_CANCEL);
}

static fg_conn_t *xs_take_over(fg_exchange_t *b, struct evbuffer *rest)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner) {
        fg_exchange_t *in = x->inner;
        x->inner = NULL;
        fg_conn_t *c = fg_exchange_take_over(in, rest);
        x_end(x, NGHTTP2_CANCEL);
        return c;
    }
    x_end(x, NGHTTP2_CANCEL);
    return NULL; /* a stream has no connection to give: fg_exchange_relay_end */
}

/* The extended CONNECT was answered 2xx (RFC 8441 5): the stream becomes the relay's end. */
static int xs_relay_end(fg_exchange_t *b, fg_relay_t *r)
{
    h2x_t *x = (h2x_t *)b;
    if (x->inner || !x->connect || x->conn == NULL || x->closed) {
        xs_close(b);
        return -1;
    }
    h2conn_t *c = x->conn;
    if (fg_http2_tunnel_attach(x, r) != 0)
        return -1;
    fg_http2_client_conn_busy_read(c);
    return 0;
}

static const fg_exchange_vt_t h2_vt = {
    .send_body = xs_send_body,
    .send_trailers = xs_send_trailers,
    .pending = xs_pending,
    .pause = xs_pause,
    .info = xs_info,
    .raw_left = xs_raw_left,
    .raw_begin = xs_raw_begin,
    .raw_consumed = xs_raw_consumed,
    .release = xs_release,
    .close = xs_close,
    .take_over = xs_take_over,
    .relay_end = xs_relay_end,
};

static h2x_t *x_new(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                    const fg_exchange_cbs_t *cbs, void *arg)
{
    h2x_t *x = malloc(sizeof(*x));
    if (x == NULL)
        return NULL;
    memset(x, 0, offsetof(h2x_t, hoff));
    x->base.vt = &h2_vt;
    x->cbs = cbs;
    x->arg = arg;
    if (t)
        x->t = *t;
    x->content_length = rq->content_length;
    x->has_body = rq->has_body;
    x->up_head = fg_str_eq(rq->out->method, FG_STR_LIT("HEAD"));
    x->info.phase = FG_XPHASE_CONNECTING;
    x->clen = -1;
    x->body = evbuffer_new();
    x->in = evbuffer_new();
    if (x->body == NULL || x->in == NULL) {
        x_free(x);
        return NULL;
    }
    if (rq->replay) {
        /* Copied, not drained: the caller keeps it for another attempt. */
        struct evbuffer_iovec v[16];
        int nv = evbuffer_peek(rq->replay, -1, NULL, v, 16);
        for (int i = 0; i < nv && i < 16; i++)
            evbuffer_add(x->body, v[i].iov_base, v[i].iov_len);
    }
    return x;
}

static void attach(h2x_t *x, h2conn_t *c)
{
    x->conn = c;
    x->next = c->streams;
    if (c->streams)
        c->streams->prev = x;
    c->streams = x;
    c->nstreams++;
}

/* A shared connection to the destination with room for one more stream, or NULL. */
static h2conn_t *conn_find(h2dest_t *dest)
{
    for (h2conn_t *c = dest->conns; c; c = c->next)
        if (!c->dead && !c->goaway &&
            c->nstreams < (c->ready ? fg_http2_client_conn_max_streams(c) : DEFAULT_STREAMS))
            return c;
    return NULL;
}

static h2dest_t *dest_of(const fg_exchange_target_t *t)
{
    if (t->cl == NULL)
        return NULL;
    fg_upstream_ext_t **slot = fg_upstream_h2_slot(t->w, t->cl, t->di);
    if (*slot == NULL) {
        h2dest_t *d = calloc(1, sizeof(h2dest_t));
        if (d == NULL)
            return NULL;
        d->ext.release = dest_free;
        *slot = &d->ext;
    }
    return (h2dest_t *)*slot;
}

/* An upgrade (a WebSocket) to an HTTP/2 destination: an extended CONNECT stream when the
 * connection's peer allows it (RFC 8441 3), else an HTTP/1.1 Upgrade on a connection of its own
 * (ALPN http/1.1 alone over TLS). A connection whose peer's SETTINGS did not arrive yet holds
 * the stream, not submitted, until they do (decide_upgrades). */
static fg_exchange_t *upgrade_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                    const fg_exchange_cbs_t *cbs, void *arg, h2dest_t *dest)
{
    fg_exchange_target_t t1 = *t;
    t1.http1_alpn = 1;
    int exact = t->cl && t->cl->version_policy == FG_VERSION_EXACT;
    h2conn_t *c = dest && !t->fresh ? conn_find(dest) : NULL;
    int named = rq->protocol.len > 0 && rq->protocol.len < sizeof(((h2x_t *)0)->protocol);
    if ((dest && dest->h1_only) || !named ||
        (c && c->got_settings && !fg_http2_client_connect_allowed(c))) {
        if (exact) {
            errno = EPROTONOSUPPORT; /* HTTP/2 exactly, and no extended CONNECT there */
            return NULL;
        }
        return fg_http1_client_start(&t1, rq, cbs, arg);
    }
    h2x_t *x = x_new(&t1, rq, cbs, arg);
    if (x == NULL || (x->out_copy = fg_http2_client_outreq_copy(rq->out)) == NULL)
        goto out_free_x;
    memcpy(x->protocol, rq->protocol.base, rq->protocol.len);
    x->upgrade = 1;
    if (c == NULL && (c = fg_http2_client_conn_new(t, dest)) == NULL) {
        int e = errno;
        x_free(x);
        errno = e;
        return NULL;
    }
    attach(x, c);
    x->info.reused = 1; /* as any stream (fg_http2_client_start) */
    if (c->got_settings) {
        x->upgrade = 0;
        if (fg_http2_client_submit_connect(x, NULL, 0) != 0) {
            x_end(x, NGHTTP2_CANCEL);
            errno = ENOMEM;
            return NULL;
        }
    }
    if (c->ready)
        fg_http2_client_conn_busy_read(c);
    return &x->base;
out_free_x:
    if (x)
        x_free(x);
    errno = ENOMEM;
    return NULL;
}

fg_exchange_t *fg_http2_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                     const fg_exchange_cbs_t *cbs, void *arg)
{
    h2dest_t *dest = dest_of(t);
    if (t->cl != NULL && dest == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (rq->upgrade)
        return upgrade_start(t, rq, cbs, arg, dest);
    /* A destination whose ALPN chose http/1.1 is spoken to in HTTP/1.1. */
    if (dest && dest->h1_only)
        return fg_http1_client_start(t, rq, cbs, arg);
    h2x_t *x = x_new(t, rq, cbs, arg);
    if (x == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    h2conn_t *c = dest && !t->fresh ? conn_find(dest) : NULL;
    if (c == NULL && (c = fg_http2_client_conn_new(t, dest)) == NULL) {
        int e = errno;
        x_free(x);
        errno = e;
        return NULL;
    }
    attach(x, c);
    /* Every stream counts as riding a pooled connection: the caller keeps a copy of a small
     * body and queues it at once, so that a stream the destination refused (RFC 9113 8.7) or
     * lost to a connection closed before answering can go again on a fresh connection. */
    x->info.reused = 1;
    int may_fall_back = !c->ready && c->https && c->cl->version_policy != FG_VERSION_EXACT;
    if (fg_http2_client_submit(x, rq->out, NULL, 0) != 0 ||
        (may_fall_back && (x->out_copy = fg_http2_client_outreq_copy(rq->out)) == NULL)) {
        x_end(x, NGHTTP2_CANCEL);
        errno = ENOMEM;
        return NULL;
    }
    if (c->ready) {
        fg_http2_client_stream_go(x); /* the caller's first send_body sends */
        fg_http2_client_conn_busy_read(c);
    }
    return &x->base;
}

/* The destination's connections closed, every stream failed (the pools are being freed). */
static void dest_free(fg_upstream_ext_t *ext)
{
    h2dest_t *dest = (h2dest_t *)ext;
    while (dest->conns) {
        h2conn_t *c = dest->conns;
        fg_http2_client_conn_fail(c, FG_XERR_RESET, ECONNABORTED,
                                  "worker exiting"); /* unlinks and frees */
    }
    free(dest);
}

/* An upgrade on an adopted connection: an extended CONNECT stream (RFC 8441 4), to a peer
 * that allows them (RFC 8441 3). There is no HTTP/1.1 to fall back to: EPROTONOSUPPORT. The
 * stream has no activity timeout of its own: once switched, the relay's idle timeout rules. */
static fg_exchange_t *upgrade_on(h2conn_t *c, const fg_exchange_req_t *rq,
                                 const fg_http_header_t *extra, size_t nextra,
                                 const fg_exchange_cbs_t *cbs, void *arg)
{
    /* a plain CONNECT (RFC 9113 8.5) needs no setting; an extended one does (RFC 8441 3) */
    int plain = rq->protocol.len == sizeof(FG_TCP_PROTOCOL) - 1 &&
                strncasecmp(rq->protocol.base, FG_TCP_PROTOCOL, rq->protocol.len) == 0;
    if (rq->protocol.len == 0 || rq->protocol.len >= sizeof(((h2x_t *)0)->protocol) ||
        (!plain && (!c->got_settings || !fg_http2_client_connect_allowed(c)))) {
        errno = EPROTONOSUPPORT;
        return NULL;
    }
    h2x_t *x = x_new(NULL, rq, cbs, arg);
    if (x == NULL || (x->out_copy = fg_http2_client_outreq_copy(rq->out)) == NULL) {
        if (x)
            x_free(x);
        errno = ENOMEM;
        return NULL;
    }
    memcpy(x->protocol, rq->protocol.base, rq->protocol.len);
    attach(x, c);
    x->plain = (unsigned)plain;
    c->nplain += x->plain;
    x->info.reused = 1;
    x->heard_us = fg_clock_now_us();
    if (fg_http2_client_submit_connect(x, extra, nextra) != 0) {
        x_end(x, NGHTTP2_CANCEL);
        errno = EINVAL;
        return NULL;
    }
    tell_streams(c);
    return &x->base; /* the head leaves with the caller's first send (xs_send_body) */
}

fg_exchange_t *fg_http2_client_start_on(fg_h2client_t *h, const fg_exchange_target_t *t,
                                        const fg_exchange_req_t *rq, const fg_http_header_t *extra,
                                        size_t nextra, const fg_exchange_cbs_t *cbs, void *arg)
{
    h2conn_t *c = (h2conn_t *)h;
    if (!fg_http2_client_available(h)) {
        errno = c->dead || c->goaway ? ENOTCONN : EAGAIN;
        return NULL;
    }
    if (rq->upgrade)
        return upgrade_on(c, rq, extra, nextra, cbs, arg);
    h2x_t *x = x_new(NULL, rq, cbs, arg);
    if (x == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    attach(x, c);
    x->info.reused = 1; /* as on a shared connection: a refused stream may go again */
    x->idle_ms = t->activity_timeout_ms;
    x->heard_us = fg_clock_now_us();
    x->exempt = t->exempt_event_streams;
    if (fg_http2_client_submit(x, rq->out, extra, nextra) != 0) {
        x_end(x, NGHTTP2_CANCEL);
        errno = EINVAL;
        return NULL;
    }
    tell_streams(c);
    fg_http2_client_stream_go(x); /* the caller's first send_body sends */
    return &x->base;
}

/* ---- memory mode (tests, fuzzing) ---- */

struct fg_h2test_s {
    h2conn_t *c;
};

fg_h2test_t *fg_http2_client_test_new(const fg_exchange_req_t *rq, const fg_exchange_cbs_t *cbs,
                                      void *arg, fg_exchange_t **xp)
{
    fg_h2test_t *t = calloc(1, sizeof(*t));
    h2conn_t *c = calloc(1, sizeof(*c));
    h2x_t *x = NULL;
    if (t == NULL || c == NULL || (c->mem = evbuffer_new()) == NULL ||
        fg_http2_client_session_new(c) != 0 || (x = x_new(NULL, rq, cbs, arg)) == NULL) {
        free(t);
        if (c)
            fg_http2_client_conn_free(c);
        return NULL;
    }
    t->c = c;
    c->ready = 1;
    x->info.phase = FG_XPHASE_WAIT_HEAD;
    c->connect_at = fg_clock_now_us();
    attach(x, c);
    if (fg_http2_client_submit(x, rq->out, NULL, 0) != 0) {
        x_end(x, 0);
        fg_http2_client_conn_free(c);
        free(t);
        return NULL;
    }
    *xp = &x->base;
    fg_http2_client_flush(c);
    return t;
}

ssize_t fg_http2_client_test_feed(fg_h2test_t *t, const uint8_t *data, size_t len)
{
    h2conn_t *c = t->c;
    if (c->dead)
        return -1;
    fg_http2_client_conn_enter(c);
    c->in_recv = 1;
    ssize_t n = nghttp2_session_mem_recv(c->s, data, len);
    c->in_recv = 0;
    if (!c->dead && n < 0)
        fg_http2_client_conn_fail(c, FG_XERR_INVALID, 0, "invalid HTTP/2 from upstream");
    if (!c->dead)
        fg_http2_client_flush(c);
    int gone = c->dead;
    fg_http2_client_conn_leave(c);
    return gone ? -1 : n;
}

void fg_http2_client_test_output(fg_h2test_t *t, struct evbuffer *out)
{
    if (!t->c->dead)
        evbuffer_add_buffer(out, t->c->mem);
}

void fg_http2_client_test_free(fg_h2test_t *t)
{
    h2conn_t *c = t->c;
    fg_http2_client_conn_fail(c, FG_XERR_RESET, ECONNABORTED, "test over");
    fg_http2_client_conn_free(c);
    free(t);
}
