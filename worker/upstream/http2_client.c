/* The HTTP/2 client (worker/upstream/http2_client.h): connections, streams and their mapping to
 * fg_exchange. nghttp2 callbacks run inside nghttp2_session_mem_recv; the handler's callbacks
 * are made from them, so every object carries a busy count and a dead flag, and nothing is sent
 * while a receive is under way (the receive path flushes once it returns). */
#include "worker/upstream/http2_client.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/headers.h"
#include "common/log.h"
#include "worker/core/clock.h"
#include "worker/upstream/http1_client.h"
#include "worker/upstream/http2_stream.h"
#include "worker/upstream/http2_tunnel.h"
#include "worker/upstream/upstream.h"

#define ADOPTED_READ_MAX (64 * 1024 - 128) /* one 64 KiB chain with its header */
#define ADOPTED_FRAME_MAX (64 * 1024)      /* SETTINGS_MAX_FRAME_SIZE of a tunnel */
#define NAMES_CAP 16384                    /* bytes of a request's lowercase names and path */
#define NV_ARENA (64 * 1024)               /* an adopted connection's pinned request fields */

static void conn_flush(h2conn_t *c);
static void conn_fail(h2conn_t *c, fg_exchange_error_t kind, int err, const char *detail);
static void conn_maybe_idle(h2conn_t *c);
static void dest_free(fg_upstream_ext_t *ext);
static int submit(h2x_t *x, const fg_outreq_t *o, const fg_http_header_t *extra, size_t nextra);

/* The connection the session reads and writes: pooled, adopted, or none (memory mode). */
static fg_conn_t *cconn(const h2conn_t *c)
{
    return c->u ? c->u->c : c->fc;
}

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
static int x_leave(h2x_t *x)
{
    if (--x->busy > 0)
        return x->dead;
    if (!x->dead)
        return 0;
    x_free(x);
    return 1;
}

/* Not inlined: callers hold a busy count across the calls that may free, which the
 * compiler's use-after-free analysis cannot see. */
__attribute__((noinline)) static void conn_free(h2conn_t *c)
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

static void conn_enter(h2conn_t *c)
{
    c->busy++;
}

/* Returns 1 when c is gone. */
static int conn_leave(h2conn_t *c)
{
    if (--c->busy > 0)
        return c->dead;
    if (!c->dead || c->mem || c->fc)
        return c->dead; /* memory mode and adopted: test_free / fg_http2_client_close free */
    conn_free(c);
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

/* Take x off its connection: the session forgets it (its stream, if open, is reset with
 * `code` unless 0 and already closed). */
static void detach(h2x_t *x, uint32_t code)
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
        conn_flush(c);
        conn_maybe_idle(c);
    }
}

static void x_end(h2x_t *x, uint32_t code)
{
    detach(x, code);
    x->dead = 1;
    x->busy++;
    x_leave(x);
}

void fg_http2_client_stream_end(h2x_t *x, uint32_t code)
{
    x_end(x, code);
}

int fg_http2_client_stream_leave(h2x_t *x)
{
    return x_leave(x);
}

void fg_http2_client_flush(h2conn_t *c)
{
    conn_flush(c);
}

/* ---- failure ---- */

static void x_fail(h2x_t *x, fg_exchange_error_t kind, int err, const char *detail)
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
    x_leave(x);
}

static void x_finish(h2x_t *x)
{
    if (x->finished)
        return;
    x->finished = 1;
    x->info.phase = FG_XPHASE_DONE;
    x->cbs->on_end(x->arg);
}

/* ---- request ---- */

/* Whether a request field stays out of HTTP/2: RFC 9113 8.2.2 (connection-specific; TE only
 * as "trailers"), Host (it becomes :authority, 8.3.1), and the framing, which is the stream's
 * (8.1). cls is fg_headers_class(n). */
static int conn_specific(fg_str_t n, fg_str_t v, unsigned cls)
{
    if (cls & FG_HDR_HOP)
        return !(n.len == 2 && fg_str_ieq(v, FG_STR_LIT("trailers"))); /* TE, "te" */
    return (cls & (FG_HDR_HOST | FG_HDR_CONTENT_LENGTH)) ||
           (n.len == 6 && fg_str_ieq(n, FG_STR_LIT("Expect")));
}

static nghttp2_nv mknv(const char *n, size_t nl, const char *v, size_t vl)
{
    nghttp2_nv nv = {(uint8_t *)(uintptr_t)n, (uint8_t *)(uintptr_t)v, nl, vl,
                     NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* 0x20 in each byte of x that is an ASCII upper-case letter, 0 in the others; the top bit is
 * set apart so that no sum carries into the next byte. */
static inline uint64_t upper_bits(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t low = x & ~highs;
    uint64_t ge_a = low + ones * (0x80 - 'A');
    uint64_t gt_z = low + ones * (0x80 - 'Z' - 1);
    return (ge_a & ~gt_z & ~x & highs) >> 2;
}

/* name in lower case at dst: a word at a time, then the last bytes. */
static void lower_into(char *dst, fg_str_t name)
{
    size_t k = 0;
    for (; k + 8 <= name.len; k += 8) {
        uint64_t w;
        memcpy(&w, name.base + k, 8);
        w |= upper_bits(w);
        memcpy(dst + k, &w, 8);
    }
    for (; k < name.len; k++) {
        char ch = name.base[k];
        dst[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
}

int fg_http2_client_request_nv(const fg_outreq_t *out, fg_str_t scheme, int64_t content_length,
                               nghttp2_nv *nv, size_t cap, char *names, size_t namecap,
                               char *lenbuf)
{
    const fg_headers_t *h = &out->headers;
    const fg_http_header_t *host = fg_headers_get(h, FG_STR_LIT("Host"));
    size_t n = 0, used = 0;
    if (cap < 5 + h->n)
        return -1;
    nv[n++] = mknv(":method", 7, out->method.base, out->method.len);
    nv[n++] = mknv(":scheme", 7, scheme.base, scheme.len);
    if (host)
        nv[n++] = mknv(":authority", 10, host->value.base, host->value.len);
    /* The path and query are one slice apart in the caller's memory: the path alone when there
     * is no query, else both joined in names. */
    if (out->query.len == 0) {
        nv[n++] = mknv(":path", 5, out->path.base, out->path.len);
    } else {
        size_t pl = out->path.len + 1 + out->query.len;
        if (pl > namecap)
            return -1;
        memcpy(names, out->path.base, out->path.len);
        names[out->path.len] = '?';
        memcpy(names + out->path.len + 1, out->query.base, out->query.len);
        nv[n++] = mknv(":path", 5, names, pl);
        used = pl;
    }
    for (size_t i = 0; i < h->n; i++) {
        fg_str_t nm = h->v[i].name, v = h->v[i].value;
        unsigned cls = fg_headers_class(nm);
        if (conn_specific(nm, v, cls))
            continue;
        if (used + nm.len > namecap)
            return -1;
        char *lc = names + used;
        lower_into(lc, nm); /* RFC 9113 8.2.1 */
        used += nm.len;
        nv[n] = mknv(lc, nm.len, v.base, v.len);
        /* RFC 7541 6.2.2: a value new with every request gains nothing from the dynamic table
         * and would evict the fields that repeat. */
        if (cls & FG_HDR_REQUEST_ID)
            nv[n].flags = NGHTTP2_NV_FLAG_NO_INDEX;
        n++;
    }
    if (content_length >= 0) {
        char *e = fg_put_u64(lenbuf, (uint64_t)content_length);
        nv[n++] = mknv("content-length", 14, lenbuf, (size_t)(e - lenbuf));
    }
    return (int)n;
}

/* The data source: the body bytes given so far, then the end (with trailers when given). */
static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    h2x_t *x = src->ptr;
    if (x == NULL || x->conn == NULL) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t avail = evbuffer_get_length(x->body);
    size_t n = avail < len ? avail : len;
    if (n > 0)
        evbuffer_remove(x->body, buf, n);
    if (n == avail && x->body_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (x->ntrailers > 0 && nghttp2_submit_trailer(s, id, x->trailers, x->ntrailers) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        x->info.req_sent = 1;
        return (ssize_t)n;
    }
    if (n == 0) {
        x->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* Submit x's HEADERS (and its body's data source) on its ready connection. -1 on failure. */
/* Apply a stream's extra fields to the n fields of nv (room for FG_H2CLIENT_EXTRA_MAX more):
 * an extra field replaces the request's own of that name, and one without a value only
 * removes them, so a client cannot say what only the gateway says (a tunnel's service). Names
 * are lowercase on both. Returns the new count. */
static int apply_extra(nghttp2_nv *nv, int n, const fg_http_header_t *extra, size_t nextra)
{
    for (size_t i = 0; i < nextra; i++) {
        int k = 0;
        for (int j = 0; j < n; j++) {
            if (nv[j].namelen == extra[i].name.len &&
                memcmp(nv[j].name, extra[i].name.base, nv[j].namelen) == 0)
                continue;
            if (k != j)
                nv[k] = nv[j];
            k++;
        }
        n = k;
        if (extra[i].value.base != NULL)
            nv[n++] = mknv(extra[i].name.base, extra[i].name.len, extra[i].value.base,
                           extra[i].value.len);
    }
    return n;
}

/* Where a request's lowercase names go: on an adopted connection (a tunnel), into its arena of
 * pinned fields when NAMES_CAP bytes are free there, else into the caller's buffer. */
static char *names_room(h2conn_t *c, char *stack)
{
    if (c->fc == NULL || (c->nvbuf == NULL && (c->nvbuf = malloc(NV_ARENA)) == NULL))
        return stack;
    return NV_ARENA - c->nvused >= NAMES_CAP ? c->nvbuf + c->nvused : stack;
}

/* Whether p lies in [lo, hi); compared as integers, p may point into any object. */
static int in_range(const uint8_t *p, const char *lo, const char *hi)
{
    return (uintptr_t)p >= (uintptr_t)lo && (uintptr_t)p < (uintptr_t)hi;
}

/* The end of the n bytes at p, when it lies past end; else end. */
static char *past(char *end, const uint8_t *p, size_t n)
{
    return (uintptr_t)p + n > (uintptr_t)end ? (char *)(uintptr_t)p + n : end;
}

/* Pin the n fields of nv, whose names request_nv wrote at names (in c's arena), for nghttp2
 * to pack as they are (NGHTTP2_NV_FLAG_NO_COPY_*): the values and the names that are not there
 * yet are copied behind them. Without that flag nghttp2 copies every name and value once more
 * and lowercases the names again, about 1,000 instructions for a dozen fields. The arena is
 * reused once the session has nothing queued (conn_flush_now), since a HEADERS frame reads its
 * fields only when packed; a request that does not fit is left for nghttp2 to copy. */
static void pin_fields(h2conn_t *c, nghttp2_nv *nv, int n, char *names)
{
    char *hi = names + NAMES_CAP, *end = names;
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        if (in_range(nv[i].name, names, hi))
            end = past(end, nv[i].name, nv[i].namelen);
        else
            need += nv[i].namelen;
        if (in_range(nv[i].value, names, hi))
            end = past(end, nv[i].value, nv[i].valuelen);
        else
            need += nv[i].valuelen;
    }
    if (need > (size_t)(c->nvbuf + NV_ARENA - end))
        return;
    for (int i = 0; i < n; i++) {
        if (!in_range(nv[i].name, names, hi)) {
            memcpy(end, nv[i].name, nv[i].namelen);
            nv[i].name = (uint8_t *)end;
            end += nv[i].namelen;
        }
        if (!in_range(nv[i].value, names, hi)) {
            memcpy(end, nv[i].value, nv[i].valuelen);
            nv[i].value = (uint8_t *)end;
            end += nv[i].valuelen;
        }
        nv[i].flags |= NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    }
    c->nvused = (size_t)(end - c->nvbuf);
}

static int submit(h2x_t *x, const fg_outreq_t *o, const fg_http_header_t *extra, size_t nextra)
{
    h2conn_t *c = x->conn;
    nghttp2_nv nv[FIELDS_MAX + 8 + FG_H2CLIENT_EXTRA_MAX];
    char stack[NAMES_CAP], len[24];
    char *names = names_room(c, stack);
    fg_str_t scheme = c->https ? FG_STR_LIT("https") : FG_STR_LIT("http");
    int n = fg_http2_client_request_nv(o, scheme, x->content_length, nv, FIELDS_MAX + 8, names,
                                       NAMES_CAP, len);
    if (n < 0 || nextra > FG_H2CLIENT_EXTRA_MAX)
        return -1;
    n = apply_extra(nv, n, extra, nextra);
    if (names != stack)
        pin_fields(c, nv, n, names);
    nghttp2_data_provider dp = {.source.ptr = x, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->s, NULL, nv, (size_t)n, x->has_body ? &dp : NULL, x);
    if (id < 0)
        return -1;
    x->id = id;
    if (!x->has_body)
        x->info.req_sent = 1;
    return 0;
}

/* The stream's head leaves now (the connection is up). */
static void go(h2x_t *x)
{
    x->info.phase = FG_XPHASE_WAIT_HEAD;
    x->info.sent_at_us = fg_clock_now_us();
}

/* A copy of the request in one block, for a stream that may have to become an HTTP/1.1
 * exchange once ALPN answers (the caller's request need not outlive fg_client_start). */
static fg_outreq_t *outreq_copy(const fg_outreq_t *o)
{
    size_t bytes = sizeof(fg_outreq_t) + o->headers.n * sizeof(fg_http_header_t) + o->method.len +
                   o->path.len + o->query.len;
    for (size_t i = 0; i < o->headers.n; i++)
        bytes += o->headers.v[i].name.len + o->headers.v[i].value.len;
    fg_outreq_t *c = malloc(bytes);
    if (c == NULL)
        return NULL;
    fg_http_header_t *v = (fg_http_header_t *)(c + 1);
    char *p = (char *)(v + o->headers.n);
#define COPY_STR(dst, src)                                                                         \
    do {                                                                                           \
        memcpy(p, (src).base, (src).len);                                                          \
        (dst) = (fg_str_t){p, (src).len};                                                          \
        p += (src).len;                                                                            \
    } while (0)
    COPY_STR(c->method, o->method);
    COPY_STR(c->path, o->path);
    COPY_STR(c->query, o->query);
    for (size_t i = 0; i < o->headers.n; i++) {
        COPY_STR(v[i].name, o->headers.v[i].name);
        COPY_STR(v[i].value, o->headers.v[i].value);
    }
#undef COPY_STR
    c->headers = (fg_headers_t){v, o->headers.n, o->headers.n, NULL};
    return c;
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
        conn_flush(x->conn);
        return x_leave(x) || x->dead ? -1 : 0;
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
    conn_flush(c);
    return x_leave(x) || x->dead ? -1 : 0;
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

void fg_http2_client_consumed(h2conn_t *c, int32_t id, size_t n)
{
    if (c->fc != NULL)
        nghttp2_session_consume_stream(c->s, id, n); /* the connection's reopened in on_data */
    else
        nghttp2_session_consume(c->s, id, n);
}

/* Give the handler what waits in `in` and its window back to the peer. Returns 1 when x is
 * gone. */
static int deliver(h2x_t *x)
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
        conn_enter(c);
    deliver(x);
    if (c) {
        if (!c->dead)
            conn_flush(c);
        conn_leave(c);
    }
    x_leave(x);
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

static void conn_busy_read(h2conn_t *c);

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
    conn_busy_read(c);
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

/* ---- receiving ---- */

static h2x_t *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    h2x_t *x = stream_of(s, f->hd.stream_id);
    if (x && x->head_done && x->head_hb == NULL) {
        x->head_hb = x->hb; /* the trailers get memory of their own */
        x->hb = NULL;
        x->hcap = 0;
    }
    if (x) {
        x->hlen = 0;
        x->nh = 0;
        x->status = 0;
        x->clen = -1;
    }
    return 0;
}

/* Keep a field in x's header block: bytes in hb (grown up to HEAD_MAX), offsets in hoff. */
static int keep_field(h2x_t *x, const uint8_t *n, size_t nl, const uint8_t *v, size_t vl)
{
    if (x->nh >= FIELDS_MAX || x->hlen + nl + vl > HEAD_MAX)
        return -1;
    /* A response head usually fits in the stream (hin): no allocation for it. */
    if (x->hb == NULL && x->head_hb == NULL) {
        x->hb = x->hin;
        x->hcap = sizeof(x->hin);
    }
    if (x->hlen + nl + vl > x->hcap) {
        size_t cap = x->hcap ? x->hcap : 4096;
        while (cap < x->hlen + nl + vl)
            cap *= 2;
        char *nb = x->hb == x->hin ? malloc(cap) : realloc(x->hb, cap);
        if (nb == NULL)
            return -1;
        if (x->hb == x->hin)
            memcpy(nb, x->hin, x->hlen);
        x->hb = nb;
        x->hcap = cap;
    }
    uint32_t *o = x->hoff[x->nh++];
    o[0] = (uint32_t)x->hlen;
    o[1] = (uint32_t)nl;
    memcpy(x->hb + x->hlen, n, nl);
    x->hlen += nl;
    o[2] = (uint32_t)x->hlen;
    o[3] = (uint32_t)vl;
    memcpy(x->hb + x->hlen, v, vl);
    x->hlen += vl;
    return 0;
}

static int parse_status(const uint8_t *v, size_t len)
{
    if (len != 3)
        return -1;
    int st = 0;
    for (size_t i = 0; i < 3; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        st = st * 10 + (v[i] - '0');
    }
    return st >= 100 ? st : -1;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2x_t *x = stream_of(s, f->hd.stream_id);
    if (x == NULL)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        x->status = parse_status(value, valuelen);
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        int64_t cl = 0;
        for (size_t i = 0; i < valuelen && cl >= 0; i++)
            cl = cl < ((int64_t)1 << 58) ? cl * 10 + (value[i] - '0') : -1;
        x->clen = cl; /* nghttp2 checked it is digits and matches the DATA (RFC 9113 8.1.1) */
        return 0;
    }
    if (keep_field(x, name, namelen, value, valuelen) != 0) {
        x_fail(x, FG_XERR_INVALID, 0, "upstream response head too large");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

/* The kept header block as fields (names as received: lowercase). */
static size_t fields_of(h2x_t *x, fg_http_header_t *out)
{
    for (unsigned i = 0; i < x->nh; i++) {
        out[i].name = (fg_str_t){x->hb + x->hoff[i][0], x->hoff[i][1]};
        out[i].value = (fg_str_t){x->hb + x->hoff[i][2], x->hoff[i][3]};
    }
    return x->nh;
}

/* A complete HEADERS block for x: interim, final head or trailers. Returns 1 when x is gone
 * or failed. */
static int got_headers(h2x_t *x, const nghttp2_frame *f)
{
    fg_http_header_t fields[FIELDS_MAX];
    size_t n = fields_of(x, fields);
    int eos = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (x->head_done) {
        /* A trailer section (RFC 9113 8.1); END_STREAM follows (nghttp2 checks it). */
        if (x->cbs->on_trailers && n > 0 && x->cbs->on_trailers(x->arg, fields, n) != 0)
            return 1;
        return x->dead;
    }
    if (x->status < 0 || x->status == 0) {
        x_fail(x, FG_XERR_INVALID, 0, "invalid response from upstream");
        return 1;
    }
    if (x->status < 200) {
        if (x->status == 101 || ++x->interims > INTERIM_MAX) {
            x_fail(x, FG_XERR_INVALID, 0, "invalid interim response from upstream");
            return 1;
        }
        if (x->cbs->on_interim(x->arg, x->status, fields, n) != 0)
            return 1;
        return x->dead;
    }
    x->head_done = 1;
    x->info.phase = FG_XPHASE_BODY;
    fg_exchange_head_t h = {x->status, fields, n, x->clen, 0};
    fg_str_t m = x->up_head ? FG_STR_LIT("HEAD") : FG_STR_LIT("GET");
    if (fg_http1_response_bodiless(m, x->status))
        h.bodiless = 1;
    else if (eos)
        h.content_length = 0;
    if (x->cbs->on_head(x->arg, &h) != 0 || x->dead)
        return 1;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    h2conn_t *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = 1; /* streams above last-stream-id close with REFUSED_STREAM */
        return 0;
    }
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->got_settings) {
        /* RFC 9113 3.4: the server's preface; waiting upgrades learn whether extended CONNECT
         * is allowed (RFC 8441 3) once the receive returns */
        c->got_settings = 1;
        c->settings_due = 1;
        return 0;
    }
    if (f->hd.stream_id == 0)
        return 0;
    h2x_t *x = stream_of(s, f->hd.stream_id);
    if (x != NULL && x->relay) {
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
            fg_http2_tunnel_eof(x); /* RFC 8441 4: the destination's half-close */
        return 0;
    }
    if (x == NULL || x->finished)
        return 0;
    x->busy++;
    int gone = 0;
    if (f->hd.type == NGHTTP2_HEADERS)
        gone = got_headers(x, f);
    if (!gone && !x->dead && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && x->head_done) {
        x->ended = 1;
        if (!x->paused)
            deliver(x);
    }
    x_leave(x);
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    h2conn_t *c = ud;
    h2x_t *x = stream_of(s, id);
    /* A tunnel's connection window reopens as the bytes arrive: what its streams hold unread is
     * bounded by their own windows (fg_http2_client_consumed), and one stream whose reader
     * stalls never closes the window of the others (RFC 9113 5.2.2, 6.9). */
    if (c->fc != NULL)
        nghttp2_session_consume_connection(s, len);
    if (x != NULL && x->relay) {
        fg_http2_tunnel_data(x, data, len);
        return 0;
    }
    if (x == NULL || x->finished) {
        fg_http2_client_consumed(c, id, len); /* nobody reads it: the window goes back */
        return 0;
    }
    if (!x->info.got_bytes)
        x->info.first_byte_us = fg_clock_now_us() - x->info.sent_at_us;
    x->info.got_bytes = 1;
    evbuffer_add(x->in, data, len);
    x->unconsumed += len;
    if (x->paused)
        return 0; /* held within the stream's window (STREAM_WINDOW) */
    x->busy++;
    deliver(x);
    x_leave(x);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    h2x_t *x = stream_of(s, id);
    if (x == NULL)
        return 0;
    x->closed = 1;
    if (x->relay) {
        /* Both ways ended cleanly: the relay heard the destination's end already. */
        if (!(x->ended && code == NGHTTP2_NO_ERROR))
            fg_http2_tunnel_gone(x);
        return 0;
    }
    if (x->finished || (x->ended && code == NGHTTP2_NO_ERROR))
        return 0;
    if (code == NGHTTP2_REFUSED_STREAM) {
        /* RFC 9113 8.7: not processed, so it may go again, as after a stale pooled
         * connection (the proxy retries once on a fresh connection). */
        x->info.reused = 1;
        x->info.got_bytes = 0;
        x_fail(x, FG_XERR_EOF, 0, "upstream refused the stream");
    } else if (x->info.phase == FG_XPHASE_BODY) {
        x_fail(x, FG_XERR_EOF_BODY, 0, "upstream reset the stream");
    } else {
        x_fail(x, FG_XERR_RESET, ECONNRESET, "upstream reset the stream");
    }
    return 0;
}

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    h2x_t *x = hd->stream_id ? stream_of(s, hd->stream_id) : NULL;
    if (x && x->idle_ms)
        x->heard_us = fg_clock_now_us();
    if (x && !x->info.got_bytes && hd->type == NGHTTP2_HEADERS) {
        x->info.first_byte_us = fg_clock_now_us() - x->info.sent_at_us;
        x->info.got_bytes = 1;
    }
    return 0;
}

/* ---- the connection ---- */

static unsigned max_streams(h2conn_t *c)
{
    uint32_t m = nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return m < DEFAULT_STREAMS * 10u ? m : DEFAULT_STREAMS * 10u;
}

/* Produce the session's frames into the connection's output (bounded by OUT_HIGH: the rest
 * waits for on_drain) and write them; then tell streams whose queued body drained. */
static void conn_flush_now(h2conn_t *c);

static void conn_flush(h2conn_t *c)
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
    conn_enter(c);
    do {
        c->again = 0;
        fg_conn_t *fc = cconn(c);
        struct evbuffer *out = fc ? fg_conn_output(fc) : c->mem;
        while (fc == NULL || fg_conn_pending(fc) < OUT_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (n < 0) {
                c->flushing = 0;
                conn_fail(c, FG_XERR_INVALID, 0, "HTTP/2 session failed");
                conn_leave(c);
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
            conn_fail(c, FG_XERR_RESET, fg_conn_errno(fc), NULL);
            conn_leave(c);
            return;
        }
        for (h2x_t *x = c->streams, *nx; x && !c->dead; x = nx) {
            nx = x->next;
            if (x->wait_ready && evbuffer_get_length(x->body) <= BODY_LOW) {
                x->wait_ready = 0;
                x->busy++;
                x->cbs->on_send_ready(x->arg);
                nx = x->dead ? c->streams : x->next; /* the list may have changed */
                x_leave(x);
            }
        }
    } while (c->again && !c->dead);
    c->flushing = 0;
    if (!c->dead && nghttp2_session_want_read(c->s) == 0 && nghttp2_session_want_write(c->s) == 0)
        /* The session is over: the peer's GOAWAY, or ours after its protocol error. */
        conn_fail(c, c->goaway ? FG_XERR_EOF : FG_XERR_INVALID, 0,
                  c->goaway ? "upstream ended the HTTP/2 connection"
                            : "invalid HTTP/2 from upstream");
    conn_leave(c);
}

/* Fail every stream of c and close it. */
static void conn_fail(h2conn_t *c, fg_exchange_error_t kind, int err, const char *detail)
{
    if (c->dead)
        return;
    conn_enter(c);
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
        x_fail(x, k, err, detail);
    }
    conn_leave(c);
}

/* A connection without streams: closed when private, goaway or the worker retires; else read
 * with the cluster's idle timeout. */
static void conn_maybe_idle(h2conn_t *c)
{
    if (c->nstreams > 0 || !c->ready || c->u == NULL)
        return;
    if (c->dest == NULL || c->goaway || c->w->retiring) {
        conn_enter(c);
        c->dead = 1;
        conn_unlink(c);
        conn_leave(c);
        return;
    }
    fg_conn_read(c->u->c, 1, c->cl ? c->cl->idle_timeout_ms : 0);
}

/* Read with the activity timeout while a stream waits for its destination; streams that are
 * relay ends only may be silent for long (the relay's idle timeout governs them). */
static void conn_busy_read(h2conn_t *c)
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
        x_fail(x, FG_XERR_CONNECT, e, NULL);
    else if (x->body_end) /* the whole body was given: its end too (trailers are lost) */
        fg_exchange_send_body(x->inner, NULL, 1);
    else if (fg_exchange_info(x->inner)->reused)
        x->cbs->on_send_ready(x->arg); /* a pooled connection: the body goes now */
    x_leave(x);
}

/* Hand every stream waiting on c to the HTTP/1.1 client: ALPN chose http/1.1 (RFC 7301). The
 * connection joins the HTTP/1.1 pool, where the first of them finds it. */
static void fall_back(h2conn_t *c)
{
    if (c->dest)
        c->dest->h1_only = 1;
    conn_enter(c);
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
    conn_leave(c);
}

/* A switch to FG_TCP_PROTOCOL (a tcp server's connection) is a plain CONNECT (RFC 9113 8.5):
 * :method CONNECT (nv[0], set) and :authority (the request's Host: the service it names), no
 * :scheme or :path; of the fields only the caller's extra ones (the tunnel's service). Returns
 * the count in nv. */
static size_t plain_connect(nghttp2_nv *nv, const nghttp2_nv *tmp, int n,
                            const fg_http_header_t *extra, size_t nextra)
{
    size_t k = 1;
    for (int i = 0; i < n; i++) {
        int keep = tmp[i].namelen == 10 && memcmp(tmp[i].name, ":authority", 10) == 0;
        for (size_t j = 0; !keep && j < nextra; j++)
            keep = extra[j].value.base && tmp[i].namelen == extra[j].name.len &&
                   memcmp(tmp[i].name, extra[j].name.base, extra[j].name.len) == 0;
        if (keep)
            nv[k++] = tmp[i];
    }
    return k;
}

/* An upgrade as an extended CONNECT (RFC 8441 4, 5): :method CONNECT with :protocol, then the
 * request's fields as for any request but Sec-WebSocket-Key (RFC 8441 5: the key and its
 * Accept are not used over HTTP/2). The stream stays open for the tunnel's DATA
 * (fg_http2_tunnel_read). -1 on failure. */
static int submit_connect(h2x_t *x, const fg_http_header_t *extra, size_t nextra)
{
    h2conn_t *c = x->conn;
    nghttp2_nv tmp[FIELDS_MAX + 8 + FG_H2CLIENT_EXTRA_MAX],
        nv[FIELDS_MAX + 9 + FG_H2CLIENT_EXTRA_MAX];
    char names[16384], len[24];
    fg_str_t scheme = c->https ? FG_STR_LIT("https") : FG_STR_LIT("http");
    int n = fg_http2_client_request_nv(x->out_copy, scheme, -1, tmp, FIELDS_MAX + 8, names,
                                       sizeof(names), len);
    if (n < 1 || nextra > FG_H2CLIENT_EXTRA_MAX)
        return -1;
    n = apply_extra(tmp, n, extra, nextra);
    size_t k = 0;
    nv[k++] = mknv(":method", 7, "CONNECT", 7);
    if (strcasecmp(x->protocol, FG_TCP_PROTOCOL) == 0) {
        k = plain_connect(nv, tmp, n, extra, nextra);
    } else {
        nv[k++] = mknv(":protocol", 9, x->protocol, strlen(x->protocol));
        for (int i = 1; i < n; i++) /* tmp[0] is :method */
            if (!(tmp[i].namelen == 17 && memcmp(tmp[i].name, "sec-websocket-key", 17) == 0))
                nv[k++] = tmp[i];
    }
    nghttp2_data_provider dp = {.read_callback = fg_http2_tunnel_read};
    int32_t id = nghttp2_submit_request(c->s, NULL, nv, k, &dp, x);
    if (id < 0)
        return -1;
    x->id = id;
    x->connect = 1;
    x->info.extended_connect = 1;
    free(x->out_copy);
    x->out_copy = NULL;
    go(x);
    return 0;
}

/* RFC 8441 3: extended CONNECT only to a peer that announced SETTINGS_ENABLE_CONNECT_PROTOCOL 1
 * (a peer's preface SETTINGS must have arrived). */
static int connect_allowed(h2conn_t *c)
{
    return nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1;
}

/* An upgrade the destination cannot take as extended CONNECT goes as an HTTP/1.1 Upgrade on a
 * connection of its own, unless the cluster wants HTTP/2 exactly. x is off c on return. */
static void upgrade_by_http1(h2x_t *x)
{
    x->busy++;
    detach(x, 0); /* not submitted: nothing to reset */
    if (x->t.cl && x->t.cl->version_policy == FG_VERSION_EXACT)
        x_fail(x, FG_XERR_INVALID, 0, "upstream does not allow extended CONNECT");
    else
        to_http1(x);
    x_leave(x);
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
    int ok = connect_allowed(c);
    conn_enter(c);
    for (h2x_t *x; !c->dead && (x = waiting_upgrade(c)) != NULL;) {
        x->upgrade = 0;
        if (!ok)
            upgrade_by_http1(x);
        else if (submit_connect(x, NULL, 0) != 0)
            x_fail(x, FG_XERR_INVALID, 0, "cannot send the extended CONNECT");
        else
            x->wait_ready = 1;
    }
    if (!c->dead)
        conn_flush(c);
    conn_leave(c);
}

/* Connected (TLS done): the preface and the waiting streams go out. */
static void conn_up(h2conn_t *c)
{
    if (c->u && fg_conn_ssl(c->u->c) && fg_conn_alpn(c->u->c) != FG_TLS_ALPN_H2) {
        if (c->cl && c->cl->version_policy == FG_VERSION_EXACT) {
            conn_fail(c, FG_XERR_TLS, 0, "upstream did not agree to HTTP/2 (ALPN)");
            return;
        }
        fall_back(c);
        return;
    }
    c->ready = 1;
    uint64_t connect_us = fg_clock_now_us() - c->connect_at;
    conn_enter(c);
    for (h2x_t *x = c->streams; x; x = x->next) {
        x->info.connect_us = connect_us;
        if (x->upgrade)
            continue; /* it waits for the peer's SETTINGS (decide_upgrades) */
        free(x->out_copy);
        x->out_copy = NULL;
        go(x);
        x->wait_ready = 1; /* conn_flush tells it: the body may follow the head */
    }
    conn_busy_read(c);
    conn_flush(c);
    conn_leave(c);
}

static void up_read(fg_conn_t *fc, void *arg)
{
    h2conn_t *c = arg;
    struct evbuffer *in = fg_conn_input(fc);
    conn_enter(c);
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
            conn_fail(c, FG_XERR_INVALID, 0, "invalid HTTP/2 from upstream");
            break;
        }
        c->bytes_in += (uint64_t)n;
        evbuffer_drain(in, (size_t)n);
    }
    if (!c->dead && c->settings_due)
        decide_upgrades(c);
    if (!c->dead)
        conn_flush(c);
    conn_leave(c);
}

static void up_drain(fg_conn_t *fc, void *arg)
{
    h2conn_t *c = arg;
    conn_flush(c);
}

static void up_event(fg_conn_t *fc, void *arg, int what)
{
    h2conn_t *c = arg;
    conn_enter(c);
    int connecting = !c->ready;
    switch (what) {
    case FG_CONN_CONNECTED:
        conn_up(c);
        break;
    case FG_CONN_TIMEOUT_WRITE:
        conn_fail(c, connecting ? FG_XERR_CONNECT_TIMEOUT : FG_XERR_SEND_TIMEOUT, ETIMEDOUT,
                  connecting ? "upstream connect timed out" : "upstream stopped accepting data");
        break;
    case FG_CONN_TIMEOUT_READ:
        if (c->nstreams == 0) {
            c->dead = 1; /* idle for the cluster's idleTimeout */
            conn_unlink(c);
        } else {
            conn_fail(c, FG_XERR_READ_TIMEOUT, ETIMEDOUT, "upstream did not answer in time");
        }
        break;
    case FG_CONN_TLS_FAILED:
        conn_fail(c, FG_XERR_TLS, fg_conn_errno(fc), fg_conn_tls_error(fc));
        break;
    case FG_CONN_EOF:
        conn_fail(c, FG_XERR_EOF, 0, "upstream closed the connection prematurely");
        break;
    default:
        conn_fail(c, connecting ? FG_XERR_CONNECT : FG_XERR_RESET, fg_conn_errno(fc), NULL);
        break;
    }
    conn_leave(c);
}

static const fg_conn_cbs_t up_cbs = {up_read, up_drain, up_event};

static nghttp2_session_callbacks *callbacks(void)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    return cbs;
}

/* A session for c, its SETTINGS queued (RFC 9113 3.4: the preface). -1 when out of memory. */
static int session_new(h2conn_t *c)
{
    nghttp2_option *opt;
    nghttp2_session_callbacks *cbs = callbacks(); /* the session keeps a copy */
    if (cbs == NULL)
        return -1;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -1;
    }
    /* Windows go back as the handler takes the bytes (nghttp2_session_consume), so a slow
     * client holds at most STREAM_WINDOW of its stream in memory. */
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

static h2conn_t *conn_new(const fg_exchange_target_t *t, h2dest_t *dest)
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
    if (session_new(c) != 0) {
        conn_free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->u =
        t->cl ? fg_upstream_open_timeout(t->w, t->cl, t->di, &up_cbs, c, t->connect_timeout_ms)
              : fg_upstream_open_addr(t->w, t->addr, t->addrlen, &up_cbs, c, t->connect_timeout_ms);
    if (c->u == NULL) {
        int e = errno;
        conn_free(c);
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

/* A shared connection to the destination with room for one more stream, or NULL. */
static h2conn_t *conn_find(h2dest_t *dest)
{
    for (h2conn_t *c = dest->conns; c; c = c->next)
        if (!c->dead && !c->goaway && c->nstreams < (c->ready ? max_streams(c) : DEFAULT_STREAMS))
            return c;
    return NULL;
}

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
    if ((dest && dest->h1_only) || !named || (c && c->got_settings && !connect_allowed(c))) {
        if (exact) {
            errno = EPROTONOSUPPORT; /* HTTP/2 exactly, and no extended CONNECT there */
            return NULL;
        }
        return fg_http1_client_start(&t1, rq, cbs, arg);
    }
    h2x_t *x = x_new(&t1, rq, cbs, arg);
    if (x == NULL || (x->out_copy = outreq_copy(rq->out)) == NULL)
        goto out_free_x;
    memcpy(x->protocol, rq->protocol.base, rq->protocol.len);
    x->upgrade = 1;
    if (c == NULL && (c = conn_new(t, dest)) == NULL) {
        int e = errno;
        x_free(x);
        errno = e;
        return NULL;
    }
    attach(x, c);
    x->info.reused = 1; /* as any stream (fg_http2_client_start) */
    if (c->got_settings) {
        x->upgrade = 0;
        if (submit_connect(x, NULL, 0) != 0) {
            x_end(x, NGHTTP2_CANCEL);
            errno = ENOMEM;
            return NULL;
        }
    }
    if (c->ready)
        conn_busy_read(c);
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
    if (c == NULL && (c = conn_new(t, dest)) == NULL) {
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
    if (submit(x, rq->out, NULL, 0) != 0 ||
        (may_fall_back && (x->out_copy = outreq_copy(rq->out)) == NULL)) {
        x_end(x, NGHTTP2_CANCEL);
        errno = ENOMEM;
        return NULL;
    }
    if (c->ready) {
        go(x); /* the caller's first send_body sends */
        conn_busy_read(c);
    }
    return &x->base;
}

/* The destination's connections closed, every stream failed (the pools are being freed). */
static void dest_free(fg_upstream_ext_t *ext)
{
    h2dest_t *dest = (h2dest_t *)ext;
    while (dest->conns) {
        h2conn_t *c = dest->conns;
        conn_fail(c, FG_XERR_RESET, ECONNABORTED, "worker exiting"); /* unlinks and frees */
    }
    free(dest);
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
    if (c->flush_ev == NULL || session_new(c) != 0) {
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
    conn_flush(c);
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
        conn_flush(c);
}

void fg_http2_client_close(fg_h2client_t *h, const char *detail)
{
    h2conn_t *c = (h2conn_t *)h;
    if (c == NULL)
        return;
    c->owner = NULL; /* the owner is going: nothing more is told */
    conn_fail(c, FG_XERR_EOF, 0, detail);
    if (c->busy == 0) {
        conn_free(c);
    } else {
        c->fc = NULL; /* freed by the last conn_leave, which no longer sees it as adopted */
    }
}

int fg_http2_client_available(const fg_h2client_t *h)
{
    const h2conn_t *c = (const h2conn_t *)h;
    return !c->dead && !c->goaway && c->nstreams < max_streams((h2conn_t *)c);
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
    return max_streams((h2conn_t *)h);
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
    conn_enter(c);
    /* A failure may change the list (the handler retries, or closes others): start over,
     * at most once per stream. */
    for (unsigned budget = c->nstreams; budget > 0 && !c->dead; budget--) {
        h2x_t *x = c->streams;
        while (x && !overdue(x, now_us))
            x = x->next;
        if (x == NULL)
            break;
        x_fail(x, FG_XERR_READ_TIMEOUT, ETIMEDOUT, "upstream did not answer in time");
    }
    if (!c->dead)
        conn_flush(c);
    conn_leave(c);
}

void fg_http2_client_bytes(const fg_h2client_t *h, uint64_t *in, uint64_t *out)
{
    *in = ((const h2conn_t *)h)->bytes_in;
    *out = ((const h2conn_t *)h)->bytes_out;
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
        (!plain && (!c->got_settings || !connect_allowed(c)))) {
        errno = EPROTONOSUPPORT;
        return NULL;
    }
    h2x_t *x = x_new(NULL, rq, cbs, arg);
    if (x == NULL || (x->out_copy = outreq_copy(rq->out)) == NULL) {
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
    if (submit_connect(x, extra, nextra) != 0) {
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
    if (submit(x, rq->out, extra, nextra) != 0) {
        x_end(x, NGHTTP2_CANCEL);
        errno = EINVAL;
        return NULL;
    }
    tell_streams(c);
    go(x); /* the caller's first send_body sends */
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
    if (t == NULL || c == NULL || (c->mem = evbuffer_new()) == NULL || session_new(c) != 0 ||
        (x = x_new(NULL, rq, cbs, arg)) == NULL) {
        free(t);
        if (c)
            conn_free(c);
        return NULL;
    }
    t->c = c;
    c->ready = 1;
    x->info.phase = FG_XPHASE_WAIT_HEAD;
    c->connect_at = fg_clock_now_us();
    attach(x, c);
    if (submit(x, rq->out, NULL, 0) != 0) {
        x_end(x, 0);
        conn_free(c);
        free(t);
        return NULL;
    }
    *xp = &x->base;
    conn_flush(c);
    return t;
}

ssize_t fg_http2_client_test_feed(fg_h2test_t *t, const uint8_t *data, size_t len)
{
    h2conn_t *c = t->c;
    if (c->dead)
        return -1;
    conn_enter(c);
    c->in_recv = 1;
    ssize_t n = nghttp2_session_mem_recv(c->s, data, len);
    c->in_recv = 0;
    if (!c->dead && n < 0)
        conn_fail(c, FG_XERR_INVALID, 0, "invalid HTTP/2 from upstream");
    if (!c->dead)
        conn_flush(c);
    int gone = c->dead;
    conn_leave(c);
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
    conn_fail(c, FG_XERR_RESET, ECONNABORTED, "test over");
    conn_free(c);
    free(t);
}
