/* The HTTP/2 client's requests (worker/upstream/http2_stream.h): a request head as HTTP/2
 * fields (RFC 9113 8.3.1, 8.2.2), the body's data source, submission as a stream or as an
 * extended or plain CONNECT (RFC 8441 4, RFC 9113 8.5), and the copy of a request kept while an
 * ALPN fallback may need it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/headers.h"
#include "worker/core/clock.h"
#include "worker/upstream/http2_client.h"
#include "worker/upstream/http2_stream.h"
#include "worker/upstream/http2_tunnel.h"

#define NAMES_CAP 16384      /* bytes of a request's lowercase names and path */
#define NV_ARENA (64 * 1024) /* an adopted connection's pinned request fields */

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
 * reused once the session has nothing queued (conn_flush_now, http2_conn.c), since a HEADERS
 * frame reads its fields only when packed; a request that does not fit is left for nghttp2. */
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

int fg_http2_client_submit(h2x_t *x, const fg_outreq_t *o, const fg_http_header_t *extra,
                           size_t nextra)
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
void fg_http2_client_stream_go(h2x_t *x)
{
    x->info.phase = FG_XPHASE_WAIT_HEAD;
    x->info.sent_at_us = fg_clock_now_us();
}

/* A copy of the request in one block, for a stream that may have to become an HTTP/1.1
 * exchange once ALPN answers (the caller's request need not outlive fg_client_start). */
fg_outreq_t *fg_http2_client_outreq_copy(const fg_outreq_t *o)
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
int fg_http2_client_submit_connect(h2x_t *x, const fg_http_header_t *extra, size_t nextra)
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
    fg_http2_client_stream_go(x);
    return 0;
}
