/* The HTTP/1.1 client: fg_exchange over one fg_conn (plain or TLS alike: it never touches a
 * socket except to drain a last answer after a write error). */
#include "worker/upstream/http1_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/headers.h"
#include "worker/core/clock.h"
#include "worker/http/request.h"
#include "worker/upstream/upstream.h"

#define HEAD_MAX 65536
#define FIELDS_MAX 128
/* Interim responses taken per exchange. RFC 9110 15.2 sets no limit, but each one costs a
 * parse and, relayed, client output: a destination sending them without end must not make the
 * gateway work without end. Beyond this the exchange fails (502). */
#define INTERIM_MAX 8

enum { R_NONE = 0, R_LENGTH, R_CHUNKED, R_CLOSE };

typedef struct {
    fg_exchange_t base;
    const fg_exchange_cbs_t *cbs;
    void *arg;
    fg_upconn_t *u;
    uint64_t activity_ms;
    uint64_t connect_at;
    fg_exchange_info_t info;
    int mode;
    int64_t left;
    fg_http1_chunked_t dec;
    struct evbuffer *part;   /* the first bytes of the input, when only those are body */
    char *trailers;          /* the response's trailer section, when it has one */
    int busy;                /* callbacks on the stack: free deferred */
    size_t head_len;         /* the head being delivered, still at the front of the input */
    unsigned interims;       /* interim responses seen (INTERIM_MAX) */
    unsigned chunked_up : 1; /* request body framed as chunks */
    unsigned up_head : 1;    /* the method sent is HEAD */
    unsigned upgrade : 1;    /* a 101 is the answer, not an error */
    unsigned exempt_sse : 1; /* text/event-stream: no activity timeout */
    unsigned paused : 1;
    unsigned raw : 1;
    unsigned dead : 1;
} h1x_t;

static void up_read(fg_conn_t *c, void *arg);
static void up_drain(fg_conn_t *c, void *arg);
static void up_event(fg_conn_t *c, void *arg, int what);
static void process(h1x_t *x);

static const fg_conn_cbs_t up_cbs = {up_read, up_drain, up_event};

static void quiet_read(fg_conn_t *c, void *arg)
{
    fg_conn_read(c, 0, 0);
}

static void quiet_event(fg_conn_t *c, void *arg, int what)
{
    fg_conn_read(c, 0, 0);
}

/* A taken-over connection until its new owner sets its callbacks. */
static const fg_conn_cbs_t quiet_cbs = {quiet_read, NULL, quiet_event};

/* ---- lifetime ---- */

/* Exchange objects the worker keeps for reuse: a calloc and a free per proxied request cost
 * about 350 instructions (glibc's calloc bypasses its thread cache), a reused object only its
 * clearing. A worker is one process with one thread, so the list is the process's. Under
 * AddressSanitizer nothing is kept, so that a use after release is still reported. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARE_MAX 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPARE_MAX 0
#endif
#endif
#ifndef SPARE_MAX
#define SPARE_MAX 64
#endif

#if SPARE_MAX > 0
static h1x_t *spare_list[SPARE_MAX];
static unsigned nspare;
#endif

/* A cleared exchange object, or NULL when out of memory. */
static h1x_t *x_new(void)
{
#if SPARE_MAX > 0
    if (nspare > 0) {
        h1x_t *x = spare_list[--nspare];
        memset(x, 0, sizeof(*x));
        return x;
    }
#endif
    return calloc(1, sizeof(h1x_t));
}

static void x_free(h1x_t *x)
{
#if SPARE_MAX > 0
    if (nspare < SPARE_MAX) {
        spare_list[nspare++] = x;
        return;
    }
#endif
    free(x);
}

static void enter(h1x_t *x)
{
    x->busy++;
}

/* Returns 1 when x is gone (closed during the callbacks just made). */
static int leave(h1x_t *x)
{
    if (--x->busy > 0)
        return x->dead;
    if (!x->dead)
        return 0;
    if (x->part)
        evbuffer_free(x->part);
    free(x->trailers);
    x_free(x);
    return 1;
}

static void detach(h1x_t *x, int reusable)
{
    fg_upconn_t *u = x->u;
    x->u = NULL;
    x->dead = 1;
    if (u != NULL) {
        if (x->raw)
            fg_conn_set_raw(u->c, 0);
        if (reusable && u->pool != NULL)
            fg_upstream_release(u);
        else
            fg_upstream_close(u);
    }
    enter(x);
    leave(x);
}

static void x_release(fg_exchange_t *b)
{
    h1x_t *x = (h1x_t *)b;
    /* RFC 9112 9.3: persistent unless either side said close, and only after a complete
     * request and response with nothing extra in between. */
    detach(x, x->info.reusable && x->info.req_sent && x->info.phase == FG_XPHASE_DONE);
}

static void x_close(fg_exchange_t *b)
{
    detach((h1x_t *)b, 0);
}

static fg_conn_t *x_take_over(fg_exchange_t *b, struct evbuffer *rest)
{
    h1x_t *x = (h1x_t *)b;
    fg_upconn_t *u = x->u;
    fg_conn_t *c = u ? u->c : NULL;
    x->u = NULL;
    if (c != NULL) {
        struct evbuffer *in = fg_conn_input(c);
        evbuffer_drain(in, x->head_len); /* taken over from inside on_head */
        if (rest)
            evbuffer_add_buffer(rest, in);
        fg_conn_set_cbs(c, &quiet_cbs, NULL);
        free(u);
    }
    detach(x, 0);
    return c;
}

/* ---- failure ---- */

static void fail(h1x_t *x, fg_exchange_error_t kind, int err, const char *detail)
{
    fg_exchange_fail_t f = {kind, err, x->info.phase, detail};
    x->info.reusable = 0;
    x->cbs->on_error(x->arg, &f);
    if (!x->dead)
        detach(x, 0);
}

/* ---- request ---- */

static char *put(char *p, fg_str_t s)
{
    return fg_str_put(p, s.base, s.len);
}

/* Framing is the client's to state (RFC 9112 6): the caller's Content-Length is re-stated and
 * Expect was the gateway's business (it answered any 100-continue). */
static int skipped(fg_str_t name)
{
    return (name.len == 14 && fg_str_ieq(name, FG_STR_LIT("Content-Length"))) ||
           (name.len == 6 && fg_str_ieq(name, FG_STR_LIT("Expect")));
}

/* Serialise the head straight into the output: one reservation, memcpy per piece. */
static int put_head(h1x_t *x, const fg_exchange_req_t *rq, struct evbuffer *out)
{
    const fg_outreq_t *o = rq->out;
    size_t need = o->method.len + o->path.len + o->query.len + 64;
    for (size_t i = 0; i < o->headers.n; i++)
        need += o->headers.v[i].name.len + o->headers.v[i].value.len + 4;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)need, &v, 1) < 1 || v.iov_len < need)
        return -1;
    char *w = v.iov_base;
    w = put(w, o->method);
    *w++ = ' ';
    w = put(w, o->path);
    if (o->query.len) {
        *w++ = '?';
        w = put(w, o->query);
    }
    w = put(w, FG_STR_LIT(" HTTP/1.1\r\n"));
    for (size_t i = 0; i < o->headers.n; i++) {
        if (skipped(o->headers.v[i].name))
            continue;
        w = put(w, o->headers.v[i].name);
        *w++ = ':';
        *w++ = ' ';
        w = put(w, o->headers.v[i].value);
        *w++ = '\r';
        *w++ = '\n';
    }
    if (rq->content_length >= 0) { /* "Content-Length: 0" too: some servers want it */
        w = put(w, FG_STR_LIT("Content-Length: "));
        w = fg_put_u64(w, (uint64_t)rq->content_length);
        w = put(w, FG_STR_LIT("\r\n"));
    } else if (rq->has_body) {
        w = put(w, FG_STR_LIT("Transfer-Encoding: chunked\r\n"));
        x->chunked_up = 1;
    }
    *w++ = '\r';
    *w++ = '\n';
    v.iov_len = (size_t)(w - (char *)v.iov_base);
    return evbuffer_commit_space(out, &v, 1);
}

static const char hex[] = "0123456789abcdef";

/* Append n bytes of body (RFC 9112 7.1 chunk framing when the length is unknown). */
static void frame_body(h1x_t *x, struct evbuffer *out, struct evbuffer *data, int copy)
{
    size_t n = evbuffer_get_length(data);
    if (n == 0)
        return;
    if (x->chunked_up) {
        char line[20], *e = line + sizeof(line), *p = e;
        *--p = '\n';
        *--p = '\r';
        for (size_t k = n; k > 0 || p == e - 2; k >>= 4)
            *--p = hex[k & 15];
        evbuffer_add(out, p, (size_t)(e - p));
    }
    if (copy) {
        struct evbuffer_iovec v[8];
        struct evbuffer_ptr at;
        evbuffer_ptr_set(data, &at, 0, EVBUFFER_PTR_SET);
        for (size_t off = 0; off < n;) {
            int nv = evbuffer_peek(data, (ev_ssize_t)(n - off), &at, v, 8);
            if (nv <= 0)
                break;
            for (int i = 0; i < nv && i < 8; i++) {
                evbuffer_add(out, v[i].iov_base, v[i].iov_len);
                off += v[i].iov_len;
            }
            evbuffer_ptr_set(data, &at, off, EVBUFFER_PTR_SET);
        }
    } else {
        evbuffer_add_buffer(out, data);
    }
    if (x->chunked_up)
        evbuffer_add(out, "\r\n", 2);
}

/* Write what is queued. Returns -1 when the exchange failed (x may be gone). */
static int flush(h1x_t *x)
{
    if (fg_conn_flush(x->u->c) != 0) {
        x->info.write_failed = 1;
        up_event(x->u->c, x, FG_CONN_ERROR);
        return -1;
    }
    return 0;
}

static int x_send_body(fg_exchange_t *b, struct evbuffer *data, int end)
{
    h1x_t *x = (h1x_t *)b;
    if (x->u == NULL || x->info.write_failed || x->info.req_sent) {
        /* the destination answered early and stopped reading: the rest goes nowhere */
        if (data)
            evbuffer_drain(data, evbuffer_get_length(data));
        return 0;
    }
    struct evbuffer *out = fg_conn_output(x->u->c);
    if (data)
        frame_body(x, out, data, 0);
    if (end) {
        if (x->chunked_up)
            evbuffer_add(out, "0\r\n\r\n", 5);
        x->info.req_sent = 1;
        /* activityTimeout measures the destination's silence once it has the whole request;
         * while the body streams, a slow client is the body timeout's business. */
        if (x->info.phase != FG_XPHASE_CONNECTING && !x->paused && !x->raw)
            fg_conn_read(x->u->c, 1, x->activity_ms);
    }
    if (x->info.phase == FG_XPHASE_CONNECTING)
        return 0;
    enter(x);
    flush(x);
    return leave(x) ? -1 : 0;
}

/* The request body's end with trailers: in the last chunk when the body is chunked (RFC 9112
 * 7.1.2), dropped with a Content-Length framing, which has no room for them. */
static int x_send_trailers(fg_exchange_t *b, const fg_http_header_t *t, size_t n)
{
    h1x_t *x = (h1x_t *)b;
    if (x->u == NULL || x->info.write_failed || x->info.req_sent || !x->chunked_up)
        return x_send_body(b, NULL, 1);
    struct evbuffer *out = fg_conn_output(x->u->c);
    evbuffer_add(out, "0\r\n", 3);
    for (size_t i = 0; i < n; i++) {
        evbuffer_add(out, t[i].name.base, t[i].name.len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, t[i].value.base, t[i].value.len);
        evbuffer_add(out, "\r\n", 2);
    }
    x->chunked_up = 0; /* the last chunk and its trailer section are written */
    evbuffer_add(out, "\r\n", 2);
    return x_send_body(b, NULL, 1);
}

static size_t x_pending(const fg_exchange_t *b)
{
    const h1x_t *x = (const h1x_t *)b;
    return x->u ? fg_conn_pending(x->u->c) : 0;
}

static const fg_exchange_info_t *x_info(const fg_exchange_t *b)
{
    return &((const h1x_t *)b)->info;
}

/* The connection is up (pooled, or the connect completed): the queued request goes out. */
static void go(h1x_t *x)
{
    fg_conn_t *c = x->u->c;
    x->info.phase = FG_XPHASE_WAIT_HEAD;
    x->info.sent_at_us = fg_clock_now_us();
    x->u->requests++;
    fg_conn_set_write_timeout(c, x->activity_ms);
    /* An early answer is read all the same while the body streams. */
    fg_conn_read(c, 1, x->info.req_sent ? x->activity_ms : 0);
}

/* ---- response ---- */

/* Keep only end-to-end fields, in place (RFC 9110 7.6.1: hop-by-hop ones, those a Connection
 * field lists, and the framing the client re-states). A 101 keeps its Upgrade: the switch it
 * names is this exchange's, and the handler relays it (RFC 9110 7.8). */
static size_t end_to_end(const fg_http1_head_t *h)
{
    int keep_upgrade = h->status == 101;
    fg_conn_options_t co;
    fg_headers_conn_options(&co, h->headers, h->num_headers);
    size_t n = 0;
    for (size_t i = 0; i < h->num_headers; i++) {
        fg_str_t name = h->headers[i].name;
        unsigned cls = fg_headers_class(name);
        if (keep_upgrade && (cls & FG_HDR_UPGRADE)) {
            h->headers[n++] = h->headers[i];
            continue;
        }
        if ((cls & (FG_HDR_HOP | FG_HDR_CONTENT_LENGTH)) || fg_headers_conn_listed(&co, name))
            continue;
        h->headers[n++] = h->headers[i];
    }
    return n;
}

/* Decide the body's framing from a final head (RFC 9112 6.3). Returns -1 for a coding the
 * client cannot remove. */
static int framing(h1x_t *x, const fg_http1_head_t *h, fg_exchange_head_t *xh)
{
    /* RFC 9112 9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive". */
    x->info.reusable =
        h->minor_version >= 1 ? !h->conn_close : (h->conn_keep_alive && !h->conn_close);
    xh->content_length = -1;
    /* Rule 1: framed by the method actually sent, which a transform may have changed. */
    fg_str_t m = x->up_head ? FG_STR_LIT("HEAD") : FG_STR_LIT("GET");
    if (fg_http1_response_bodiless(m, h->status)) {
        x->mode = R_NONE;
        xh->bodiless = 1;
        xh->content_length = h->content_length;
    } else if (h->te_other) {
        /* A coding such as gzip under (or instead of) chunked: only chunked is removed here,
         * and Transfer-Encoding is hop-by-hop, so relaying would hand over encoded content as
         * if plain (RFC 9112 6.1). */
        return -1;
    } else if (h->chunked) {
        x->mode = R_CHUNKED;
        fg_http1_chunked_init(&x->dec);
        if (x->cbs->on_trailers != NULL)
            fg_http1_chunked_keep_trailers(&x->dec);
    } else if (h->content_length >= 0) {
        x->mode = R_LENGTH;
        x->left = h->content_length;
        xh->content_length = h->content_length;
    } else {
        x->mode = R_CLOSE; /* rule 8: the close ends it */
        x->info.reusable = 0;
    }
    return 0;
}

/* A chunked response's trailer fields to the handler (RFC 9110 6.5), before on_end. Returns
 * 1 when x is gone. */
static int relay_trailers(h1x_t *x)
{
    fg_http_header_t t[FIELDS_MAX];
    size_t n = fg_http1_chunked_trailers(&x->dec, t, FIELDS_MAX);
    if (n == 0 || x->cbs->on_trailers == NULL)
        return 0;
    if (x->cbs->on_trailers(x->arg, t, n) != 0 || x->dead) {
        if (!x->dead)
            detach(x, 0);
        return 1;
    }
    return 0;
}

static void finish(h1x_t *x)
{
    x->info.phase = FG_XPHASE_DONE;
    x->cbs->on_end(x->arg);
}

/* Server-sent events (text/event-stream) may stay silent longer than any activity timeout
 * between events: such a response is read without one. */
static void exempt_event_stream(h1x_t *x, const fg_exchange_head_t *xh)
{
    for (size_t i = 0; i < xh->num_headers; i++) {
        const fg_http_header_t *f = &xh->headers[i];
        if (f->name.len == 12 && fg_str_ieq(f->name, FG_STR_LIT("Content-Type")) &&
            f->value.len >= 17 &&
            fg_str_ieq((fg_str_t){f->value.base, 17}, FG_STR_LIT("text/event-stream"))) {
            x->activity_ms = 0;
            fg_conn_read(x->u->c, 1, 0);
            return;
        }
    }
}

/* Parse heads until the final one. Returns 0 when body bytes may follow, 1 to stop (more
 * bytes needed, or the exchange ended). */
static int read_head(h1x_t *x)
{
    for (;;) {
        struct evbuffer *in = fg_conn_input(x->u->c);
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            return 1;
        size_t n = avail < HEAD_MAX ? avail : HEAD_MAX;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        fg_http_header_t fields[FIELDS_MAX];
        fg_http1_head_t h;
        memset(&h, 0, sizeof(h));
        h.headers = fields;
        h.headers_cap = FIELDS_MAX;
        fg_http1_limits_t lim = {HEAD_MAX, HEAD_MAX, FIELDS_MAX};
        int r = fg_http1_parse_response(buf, n, &lim, &h);
        if (r == FG_HTTP1_INCOMPLETE && n < HEAD_MAX)
            return 1;
        if (r == FG_HTTP1_INCOMPLETE) {
            fail(x, FG_XERR_INVALID, 0, "upstream response head too large");
            return 1;
        }
        if (r < 0) {
            fail(x, FG_XERR_INVALID, 0, "invalid response from upstream");
            return 1;
        }
        if (h.status == 101 && !x->upgrade) {
            fail(x, FG_XERR_INVALID, 0, "unexpected protocol switch from upstream");
            return 1;
        }
        if (h.status >= 100 && h.status < 200 && h.status != 101) {
            /* Interim responses (RFC 9110 15.2): the handler decides which it forwards. */
            if (++x->interims > INTERIM_MAX) {
                fail(x, FG_XERR_INVALID, 0, "too many interim responses from upstream");
                return 1;
            }
            h.num_headers = end_to_end(&h);
            if (x->cbs->on_interim(x->arg, h.status, h.headers, h.num_headers) != 0 || x->dead) {
                if (!x->dead)
                    detach(x, 0);
                return 1;
            }
            evbuffer_drain(in, (size_t)r);
            if (x->paused)
                return 1; /* a slow client: x_pause resumes parsing */
            continue;
        }
        fg_exchange_head_t xh = {h.status, h.headers, 0, -1, 0};
        if (h.status == 101) {
            xh.bodiless = 1;
            x->mode = R_NONE;
            x->info.reusable = 0;
        } else if (framing(x, &h, &xh) != 0) {
            evbuffer_drain(in, (size_t)r);
            fail(x, FG_XERR_INVALID, 0, "unsupported transfer coding from upstream");
            return 1;
        }
        xh.num_headers = end_to_end(&h);
        if (x->exempt_sse && h.status != 101)
            exempt_event_stream(x, &xh);
        x->info.phase = FG_XPHASE_BODY;
        x->head_len = (size_t)r;
        int rc = x->cbs->on_head(x->arg, &xh);
        x->head_len = 0;
        if (rc != 0 || x->dead) {
            if (!x->dead)
                detach(x, 0);
            return 1;
        }
        evbuffer_drain(in, (size_t)r);
        if (h.status == 101) {
            x->info.phase = FG_XPHASE_DONE; /* the caller takes the connection over */
            fg_conn_read(x->u->c, 0, 0);
            return 1;
        }
        if (x->mode == R_NONE || (x->mode == R_LENGTH && x->left == 0)) {
            if (evbuffer_get_length(in) > 0)
                x->info.reusable = 0; /* bytes nobody asked for */
            finish(x);
            return 1;
        }
        return 0;
    }
}

/* Hand the first n bytes of in to the handler. Returns 1 when x is gone. */
static int deliver(h1x_t *x, struct evbuffer *in, size_t n)
{
    if (n == evbuffer_get_length(in)) {
        x->cbs->on_body(x->arg, in);
        return x->dead;
    }
    if (x->part == NULL && (x->part = evbuffer_new()) == NULL) {
        fail(x, FG_XERR_NONE, ENOMEM, "out of memory");
        return 1;
    }
    evbuffer_remove_buffer(in, x->part, n);
    x->cbs->on_body(x->arg, x->part);
    return x->dead;
}

static void read_body(h1x_t *x)
{
    struct evbuffer *in = fg_conn_input(x->u->c);
    while (evbuffer_get_length(in) > 0 && !x->paused && !x->raw) {
        if (x->mode == R_LENGTH) {
            size_t n = evbuffer_get_length(in);
            if ((int64_t)n >= x->left)
                n = (size_t)x->left;
            x->left -= (int64_t)n;
            if (deliver(x, in, n))
                return;
            if (x->left == 0) {
                if (evbuffer_get_length(in) > 0)
                    x->info.reusable = 0; /* bytes beyond the declared length */
                finish(x);
                return;
            }
        } else if (x->mode == R_CLOSE) {
            if (deliver(x, in, evbuffer_get_length(in)))
                return;
        } else {
            struct evbuffer_iovec v;
            if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
                return;
            size_t consumed = 0, data = 0;
            int r = fg_http1_chunked_step(&x->dec, v.iov_base, v.iov_len, &consumed, &data);
            int asked = r == 0 && fg_http1_chunked_wants_buf(&x->dec);
            if (asked && (x->trailers = malloc(fg_http1_chunked_trailer_max(&x->dec))) != NULL)
                fg_http1_chunked_set_buf(&x->dec, x->trailers,
                                         fg_http1_chunked_trailer_max(&x->dec));
            if (r < 0) {
                fail(x, FG_XERR_INVALID, 0, "invalid chunked body from upstream");
                return;
            }
            if (data > 0) {
                if (deliver(x, in, data))
                    return;
            } else {
                evbuffer_drain(in, consumed);
            }
            if (r == 1) {
                if (evbuffer_get_length(in) > 0)
                    x->info.reusable = 0;
                if (relay_trailers(x))
                    return;
                finish(x);
                return;
            }
            if (consumed == 0 && data == 0 && !asked)
                return;
        }
    }
}

static void process(h1x_t *x)
{
    if (x->info.phase == FG_XPHASE_WAIT_HEAD && read_head(x) != 0)
        return;
    if (!x->dead && x->info.phase == FG_XPHASE_BODY)
        read_body(x);
}

static void x_pause(fg_exchange_t *b, int paused)
{
    h1x_t *x = (h1x_t *)b;
    if (x->u == NULL || x->paused == (unsigned)!!paused)
        return;
    x->paused = !!paused;
    fg_conn_read(x->u->c, !paused, paused ? 0 : x->activity_ms);
    if (paused || x->raw)
        return;
    enter(x);
    process(x);
    leave(x);
}

/* ---- raw relay ---- */

static int64_t x_raw_left(const fg_exchange_t *b)
{
    const h1x_t *x = (const h1x_t *)b;
    if (x->u != NULL && !x->raw && !fg_conn_can_splice(x->u->c))
        return -1; /* a transport without splice (TLS) relays through user space */
    if (x->u == NULL || x->info.phase != FG_XPHASE_BODY || x->mode != R_LENGTH || x->paused ||
        evbuffer_get_length(fg_conn_input(x->u->c)) > x->head_len) /* the head: from on_head */
        return x->raw ? x->left : -1;
    return x->left;
}

static fg_conn_t *x_raw_begin(fg_exchange_t *b)
{
    h1x_t *x = (h1x_t *)b;
    x->raw = 1;
    fg_conn_set_raw(x->u->c, 1);
    return x->u->c;
}

static void x_raw_consumed(fg_exchange_t *b, size_t n)
{
    h1x_t *x = (h1x_t *)b;
    x->left -= (int64_t)n;
    if (x->left == 0)
        x->info.phase = FG_XPHASE_DONE;
}

/* ---- connection events ---- */

/* The destination stopped taking the request (a write failed) before answering as far as we
 * know. A server may answer early and close without reading the rest (a 413, RFC 9112 9.3);
 * the answer then waits in the receive buffer even after the reset. Returns 1 when that answer
 * now drives the exchange (x may be gone), 0 when the write error stands. */
static int early_answer(h1x_t *x)
{
    if (x->info.phase != FG_XPHASE_WAIT_HEAD)
        return 0;
    struct evbuffer *in = fg_conn_input(x->u->c);
    fg_conn_read_now(x->u->c);
    if (evbuffer_get_length(in) == 0)
        return 0;
    x->info.got_bytes = 1; /* answered: never sent again elsewhere */
    x->info.write_failed = 1;
    x->info.reusable = 0;
    struct evbuffer *out = fg_conn_output(x->u->c);
    evbuffer_drain(out, evbuffer_get_length(out));
    process(x);
    return x->dead || x->info.phase != FG_XPHASE_WAIT_HEAD;
}

static void up_read(fg_conn_t *c, void *arg)
{
    h1x_t *x = arg;
    enter(x);
    if (x->raw) {
        x->cbs->on_body(x->arg, NULL); /* readiness for the caller's splice */
    } else {
        if (!x->info.got_bytes && x->info.phase == FG_XPHASE_WAIT_HEAD)
            x->info.first_byte_us = fg_clock_now_us() - x->info.sent_at_us;
        x->info.got_bytes = 1;
        process(x);
    }
    leave(x);
}

static void up_drain(fg_conn_t *c, void *arg)
{
    h1x_t *x = arg;
    enter(x);
    x->cbs->on_send_ready(x->arg);
    leave(x);
}

static void on_event(h1x_t *x, fg_conn_t *c, int what)
{
    switch (what) {
    case FG_CONN_CONNECTED:
        x->info.connect_us = fg_clock_now_us() - x->connect_at;
        go(x);
        /* The handler queues what body it has first, so head and body leave in one write. */
        x->cbs->on_send_ready(x->arg);
        if (!x->dead)
            flush(x);
        return;
    case FG_CONN_EOF:
        if (x->info.phase == FG_XPHASE_BODY && x->mode == R_CLOSE) {
            process(x);
            if (!x->dead) {
                x->info.reusable = 0;
                finish(x);
            }
            return;
        }
        fail(x, x->info.phase == FG_XPHASE_BODY ? FG_XERR_EOF_BODY : FG_XERR_EOF, 0,
             "upstream closed the connection prematurely");
        return;
    case FG_CONN_TIMEOUT_WRITE:
        if (x->info.phase == FG_XPHASE_CONNECTING)
            fail(x, FG_XERR_CONNECT_TIMEOUT, ETIMEDOUT, "upstream connect timed out");
        else
            fail(x, FG_XERR_SEND_TIMEOUT, ETIMEDOUT, "upstream stopped accepting data");
        return;
    case FG_CONN_TIMEOUT_READ:
        fail(x, FG_XERR_READ_TIMEOUT, ETIMEDOUT, "upstream did not answer in time");
        return;
    case FG_CONN_TLS_FAILED:
        fail(x, FG_XERR_TLS, fg_conn_errno(c), fg_conn_tls_error(c));
        return;
    default:
        if (early_answer(x))
            return;
        fail(x, x->info.phase == FG_XPHASE_CONNECTING ? FG_XERR_CONNECT : FG_XERR_RESET,
             fg_conn_errno(c), NULL);
        return;
    }
}

static void up_event(fg_conn_t *c, void *arg, int what)
{
    h1x_t *x = arg;
    enter(x);
    on_event(x, c, what);
    leave(x);
}

/* ---- start ---- */

static const fg_exchange_vt_t h1_vt = {
    .send_body = x_send_body,
    .send_trailers = x_send_trailers,
    .pending = x_pending,
    .pause = x_pause,
    .info = x_info,
    .raw_left = x_raw_left,
    .raw_begin = x_raw_begin,
    .raw_consumed = x_raw_consumed,
    .release = x_release,
    .close = x_close,
    .take_over = x_take_over,
};

/* A new exchange object for rq on u (its head queued). NULL when out of memory (u untouched). */
static h1x_t *create(fg_upconn_t *u, const fg_exchange_req_t *rq, const fg_exchange_cbs_t *cbs,
                     void *arg, uint64_t activity_ms)
{
    h1x_t *x = x_new();
    if (x == NULL)
        return NULL;
    x->base.vt = &h1_vt;
    x->cbs = cbs;
    x->arg = arg;
    x->activity_ms = activity_ms;
    x->up_head = fg_str_eq(rq->out->method, FG_STR_LIT("HEAD"));
    x->upgrade = rq->upgrade;
    x->u = u;
    x->info.phase = FG_XPHASE_CONNECTING;
    struct evbuffer *out = fg_conn_output(u->c);
    if (put_head(x, rq, out) != 0) {
        x_free(x);
        return NULL;
    }
    if (rq->replay)
        frame_body(x, out, rq->replay, 1);
    fg_conn_set_cbs(u->c, &up_cbs, x);
    return x;
}

fg_exchange_t *fg_http1_client_attach(fg_conn_t *c, const fg_exchange_req_t *rq,
                                      const fg_exchange_cbs_t *cbs, void *arg, uint64_t activity_ms)
{
    fg_upconn_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->c = c;
    h1x_t *x = create(u, rq, cbs, arg, activity_ms);
    if (x == NULL) {
        free(u);
        return NULL;
    }
    go(x);
    return &x->base;
}

fg_exchange_t *fg_http1_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                     const fg_exchange_cbs_t *cbs, void *arg)
{
    fg_upconn_t *u = NULL;
    uint64_t connect_at = 0;
    if (t->cl != NULL && !t->fresh)
        u = fg_upstream_acquire(t->w, t->cl, t->di, t->max_idle_us);
    else if (t->pool != NULL && !t->fresh)
        u = fg_upstream_pool_acquire(t->pool, t->max_idle_us);
    int reused = u != NULL;
    if (u == NULL) {
        connect_at = fg_clock_now_us();
        if (t->cl && t->probe)
            u = fg_upstream_open_probe(t->w, t->cl, t->di, t->connect_timeout_ms);
        else if (t->cl && t->http1_alpn)
            u = fg_upstream_open_http1(t->w, t->cl, t->di, t->connect_timeout_ms);
        else if (t->cl)
            u = fg_upstream_open_timeout(t->w, t->cl, t->di, NULL, NULL, t->connect_timeout_ms);
        else
            u = fg_upstream_open_addr(t->w, t->addr, t->addrlen, NULL, NULL, t->connect_timeout_ms);
        if (u == NULL)
            return NULL;
        if (t->cl == NULL && t->pool != NULL)
            fg_upstream_pool_adopt(t->pool, u);
    }
    h1x_t *x = create(u, rq, cbs, arg, t->activity_timeout_ms);
    if (x == NULL) {
        if (reused)
            fg_upstream_release(u); /* untouched: back to the idle list */
        else
            fg_upstream_close(u);
        errno = ENOMEM;
        return NULL;
    }
    x->connect_at = connect_at;
    x->exempt_sse = t->exempt_event_streams;
    x->info.reused = reused;
    if (reused)
        go(x); /* the caller's first send_body flushes head and body in one write */
    return &x->base;
}
