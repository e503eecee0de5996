#include "worker/http/compress.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <zlib.h>

#include "common/log.h"
#include "worker/core/context.h"

/* deflate's window and hash sizes. zlib's defaults (15, 8) cost about 256 KiB a stream; 13 and 7
 * cost about 100 KiB (FG_COMPRESS_STREAM_MEMORY), so FG_COMPRESS_MAX_STREAMS streams stay near
 * 25 MiB per worker. An 8 KiB window still finds the repeats of markup and JSON (tag and key
 * names recur within a few KiB); the ratio is a few percent below the defaults'. */
#define WINDOW_BITS 13
#define MEM_LEVEL 7
#define GZIP_WRAPPER 16 /* added to windowBits: a gzip header and trailer (RFC 1952) */

#define OUT_CHUNK 16384  /* deflate output reserved in the evbuffer per call */
#define FILE_CHUNK 16384 /* bytes of a file read and deflated at a time */
#define FILE_BURST 16    /* chunks per turn, so that one file does not hold the loop */
/* Queued to the client above this, the file waits for on_writable: the handlers' high-water
 * mark (the proxy's too). Front ends write out at once above it, so what stays queued past it
 * is what the socket did not take, and its draining brings on_writable. */
#define FILE_HIGH (256 * 1024)

/* What send_head does: pass the head on, add Vary, add Vary and weaken the ETag of a 304 that
 * stands for a coded 200, or code the response. */
typedef enum { SEND_AS_IS, SEND_VARY, SEND_VARY_WEAK, SEND_GZIP } verdict_t;

struct fg_compress_s {
    fg_req_ops_t ops;         /* req->ops while attached */
    const fg_req_ops_t *next; /* the ops it was attached over (the front end's) */
    const fg_compression_config_t *conf;
    const fg_req_handler_t *handler; /* the handler's callbacks, while deflating */
    z_stream z;
    struct evbuffer *out; /* deflate output on its way to next->send_body */
    struct event *turn;   /* the next burst of a file, or the flush of a turn's body bytes */
    int fd;               /* a send_file being read and deflated, or -1 */
    off_t file_off;
    off_t file_left;
    unsigned on : 1;           /* this response is gzip-coded */
    unsigned live : 1;         /* z holds deflate state, counted in worker->ncompressing */
    unsigned ended : 1;        /* the gzip trailer went out */
    unsigned failed : 1;       /* a read or deflate failed: the response can only abort */
    unsigned handler_done : 1; /* the handler called finish (or abort): it hears no more */
    unsigned finish_due : 1;   /* finish waits for the file to be deflated */
    unsigned flush_due : 1;    /* body bytes deflated this turn: s->turn flushes them */
};

static void on_body(fg_request_t *req);
static void on_writable(fg_request_t *req);
static void on_abort(fg_request_t *req);
static void on_turn(evutil_socket_t fd, short what, void *arg);
static void flush_turn(fg_request_t *req, struct fg_compress_s *s);
static const fg_req_handler_t wrap_handler = {on_body, on_writable, on_abort};

/* ---- Accept-Encoding (RFC 9110 12.5.3) ---- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A qvalue (RFC 9110 12.4.2) of p..e: 1 when above 0, 0 when 0, -1 when malformed. */
static int qvalue_positive(const char *p, const char *e)
{
    if (p == e || (*p != '0' && *p != '1'))
        return -1;
    int pos = *p == '1';
    p++;
    if (p == e)
        return pos;
    if (*p++ != '.' || e - p > 3)
        return -1;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9' || (pos && *p != '0'))
            return -1;
        if (*p != '0')
            pos = 1;
    }
    return pos;
}

/* The weight of one list element p..e: 1 (q above 0, or no q), 0 (q=0, or a q that cannot be
 * read: "q = 0", "q=0.0000"; a client that weighed the coding is not given it on a guess).
 * *name receives the coding. */
static int element_weight(const char *p, const char *e, fg_str_t *name)
{
    const char *semi = memchr(p, ';', (size_t)(e - p));
    const char *ne = semi ? semi : e;
    while (ne > p && is_ows(ne[-1]))
        ne--;
    *name = (fg_str_t){(char *)p, (size_t)(ne - p)};
    int w = 1;
    while (semi != NULL) {
        p = semi + 1;
        semi = memchr(p, ';', (size_t)(e - p));
        const char *pe = semi ? semi : e;
        while (p < pe && is_ows(*p))
            p++;
        while (pe > p && is_ows(pe[-1]))
            pe--;
        if (pe > p && (p[0] == 'q' || p[0] == 'Q')) {
            const char *q = p + 1;
            while (q < pe && is_ows(*q))
                q++;
            if (q < pe && *q == '=') {
                for (q++; q < pe && is_ows(*q);)
                    q++;
                w = qvalue_positive(q, pe);
            } else if (q == pe || q > p + 1) {
                w = -1; /* "q" alone, or "q" then blanks and no "=" */
            }
            if (w < 0)
                return 0;
        }
    }
    return w;
}

int fg_compress_accepts_gzip(const fg_str_t *v, size_t n)
{
    int gzip = -1, star = -1; /* -1: not named */
    for (size_t i = 0; i < n; i++) {
        const char *p = v[i].base, *end = p + v[i].len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            while (p < e && is_ows(*p))
                p++;
            fg_str_t name;
            int w = p < e ? element_weight(p, e, &name) : -1;
            /* RFC 9110 12.5.3: "x-gzip" is gzip; the most specific reference wins over "*".
             * Several mentions of one coding: the first counts. */
            if (w >= 0 &&
                (fg_str_ieq(name, FG_STR_LIT("gzip")) || fg_str_ieq(name, FG_STR_LIT("x-gzip")))) {
                if (gzip < 0)
                    gzip = w;
            } else if (w >= 0 && fg_str_eq(name, FG_STR_LIT("*")) && star < 0) {
                star = w;
            }
            p = comma ? comma + 1 : end;
        }
    }
    return gzip >= 0 ? gzip : star > 0;
}

/* ---- response fields ---- */

int fg_compress_type_listed(const fg_compression_config_t *conf, fg_str_t ct)
{
    const char *semi = memchr(ct.base, ';', ct.len);
    size_t len = semi ? (size_t)(semi - ct.base) : ct.len;
    while (len > 0 && is_ows(ct.base[len - 1]))
        len--;
    const char *slash = memchr(ct.base, '/', len);
    if (slash == NULL)
        return 0;
    size_t tlen = (size_t)(slash - ct.base) + 1; /* "type/" */
    for (size_t i = 0; i < conf->ntypes; i++) {
        const char *t = conf->types[i];
        size_t n = strlen(t);
        if (strcmp(t, "*/*") == 0)
            return 1;
        if (n >= 2 && t[n - 1] == '*' && t[n - 2] == '/') {
            if (n - 1 == tlen && strncasecmp(t, ct.base, tlen) == 0)
                return 1;
        } else if (n == len && strncasecmp(t, ct.base, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Whether a field with a comma-separated list value names token (case-insensitively), with or
 * without "=argument" after it. */
static int list_has(fg_str_t value, fg_str_t token)
{
    const char *p = value.base, *end = p + value.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        while (p < e && is_ows(*p))
            p++;
        const char *ne = p;
        while (ne < e && *ne != '=' && !is_ows(*ne))
            ne++;
        if (fg_str_ieq((fg_str_t){(char *)p, (size_t)(ne - p)}, token))
            return 1;
        p = comma ? comma + 1 : end;
    }
    return 0;
}

int fg_compress_vary(fg_headers_t *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (fg_str_ieq(h->v[i].name, FG_STR_LIT("Vary")) &&
            (list_has(h->v[i].value, FG_STR_LIT("*")) ||
             list_has(h->v[i].value, FG_STR_LIT("Accept-Encoding"))))
            return 0;
    return fg_headers_append(h, FG_STR_LIT("Vary"), FG_STR_LIT("Accept-Encoding"));
}

int fg_compress_weaken_etag(fg_headers_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        fg_http_header_t *f = &h->v[i];
        if (!fg_str_ieq(f->name, FG_STR_LIT("ETag")) || f->value.len == 0 ||
            f->value.base[0] != '"')
            continue;
        char *w = fg_pool_alloc(h->pool, f->value.len + 2);
        if (w == NULL)
            return -1;
        memcpy(w, "W/", 2);
        memcpy(w + 2, f->value.base, f->value.len);
        f->value = (fg_str_t){w, f->value.len + 2};
    }
    return 0;
}

/* ---- the decision ---- */

static int request_has(const fg_request_t *req, fg_str_t name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (fg_str_ieq(req->headers[i].name, name))
            return 1;
    return 0;
}

static int client_accepts_gzip(const fg_request_t *req)
{
    fg_str_t v[8];
    size_t n = 0;
    for (size_t i = 0; i < req->nheaders && n < 8; i++)
        if (fg_str_ieq(req->headers[i].name, FG_STR_LIT("Accept-Encoding")))
            v[n++] = req->headers[i].value;
    return fg_compress_accepts_gzip(v, n);
}

/* What send_head does with a response of status, hdrs and length cl. */
static verdict_t decide(const fg_request_t *req, const fg_compression_config_t *conf, int status,
                        const fg_headers_t *hdrs, int64_t cl)
{
    /* 1xx, 204 and 304 have no content; 206 is a part of the identity-coded representation
     * (RFC 9110 14.4: its ranges count bytes of the selected representation as it is). */
    /* RFC 9110 15.4.5: a 304 carries the ETag and Vary the 200 would have: the coded one's,
     * when the client accepts gzip (its Content-Type is not known here; a weak tag still
     * matches If-None-Match, which compares weakly, RFC 9110 13.1.2). */
    if (status == 304 && client_accepts_gzip(req))
        return SEND_VARY_WEAK;
    if (status < 200 || status == 204 || status == 206 || status == 304)
        return SEND_AS_IS;
    /* A switch of protocols or a tunnel carries no representation. */
    if (req->upgrade.len > 0 || req->protocol.len > 0 ||
        fg_str_eq(req->method, FG_STR_LIT("CONNECT")))
        return SEND_AS_IS;
    if (cl >= 0 && (uint64_t)cl < conf->min_length)
        return SEND_AS_IS;
    const fg_http_header_t *ct = NULL;
    for (size_t i = 0; i < hdrs->n; i++) {
        fg_str_t name = hdrs->v[i].name;
        /* Coded already, or a part of something (Content-Range on a 200 is odd, but then its
         * bytes are meant as they are). */
        if (fg_str_ieq(name, FG_STR_LIT("Content-Encoding")) ||
            fg_str_ieq(name, FG_STR_LIT("Content-Range")))
            return SEND_AS_IS;
        /* RFC 9110 7.7: a proxy must not change the content coding of a no-transform message. */
        if (fg_str_ieq(name, FG_STR_LIT("Cache-Control")) &&
            list_has(hdrs->v[i].value, FG_STR_LIT("no-transform")))
            return SEND_AS_IS;
        if (ct == NULL && fg_str_ieq(name, FG_STR_LIT("Content-Type")))
            ct = &hdrs->v[i];
    }
    if (ct == NULL || !fg_compress_type_listed(conf, ct->value))
        return SEND_AS_IS;
    /* From here the coding depends on the request: RFC 9110 12.5.5, Vary either way. HEAD has
     * no content to code; a Range request is answered as the identity bytes it counts. */
    if (fg_str_eq(req->method, FG_STR_LIT("HEAD")) || request_has(req, FG_STR_LIT("Range")) ||
        !client_accepts_gzip(req))
        return SEND_VARY;
    if (req->worker != NULL && req->worker->ncompressing >= FG_COMPRESS_MAX_STREAMS)
        return SEND_VARY;
    return SEND_GZIP;
}

/* ---- deflate ---- */

/* Start s's deflate state. Returns 0 or -1 (no memory). */
static int start(fg_request_t *req, struct fg_compress_s *s)
{
    s->out = evbuffer_new();
    if (s->out == NULL)
        return -1;
    int rc = deflateInit2(&s->z, s->conf->level, Z_DEFLATED, WINDOW_BITS + GZIP_WRAPPER, MEM_LEVEL,
                          Z_DEFAULT_STRATEGY);
    if (rc != Z_OK) {
        fg_log_warn("compress: deflateInit2 failed (%d): sending %.*s uncompressed", rc,
                    (int)req->path.len, req->path.base);
        evbuffer_free(s->out);
        s->out = NULL;
        return -1;
    }
    s->live = 1;
    if (req->worker != NULL)
        req->worker->ncompressing++;
    return 0;
}

/* Free what s holds: deflate state, its slot in the worker's count, the file. Idempotent. */
static void release(fg_request_t *req, struct fg_compress_s *s)
{
    if (s->live) {
        deflateEnd(&s->z);
        s->live = 0;
        if (req->worker != NULL)
            req->worker->ncompressing--;
    }
    if (s->out != NULL) {
        evbuffer_free(s->out);
        s->out = NULL;
    }
    if (s->turn != NULL) {
        event_free(s->turn);
        s->turn = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

#ifdef FG_TEST_HOOKS
/* Test builds only (-DFG_TEST_HOOKS, build/test/fastgateway; docs/operations.md): with
 * FG_TEST_DEFLATE_FAIL=N in the environment, deflate fails once a response has made more than N
 * coded bytes, so that a test can see a failure abort the response. */
static long long fault_after = -1; /* -1: the environment not read yet; 0: off */

static int fault(const struct fg_compress_s *s)
{
    if (fault_after < 0) {
        const char *e = getenv("FG_TEST_DEFLATE_FAIL");
        fault_after = e != NULL && *e != '\0' ? atoll(e) : 0;
        if (fault_after > 0)
            fg_log_warn("TEST FAULT HOOK ARMED (FG_TEST_DEFLATE_FAIL is set): deflate fails after "
                        "%lld bytes of a response; never set this variable in production",
                        fault_after);
    }
    return fault_after > 0 && s->z.total_out > (uLong)fault_after;
}
#endif

/* Deflate n bytes at p with flush (Z_NO_FLUSH, Z_SYNC_FLUSH, Z_FINISH) into s->out. Returns 0
 * or -1 (zlib failed, or no memory for output). */
static int deflate_bytes(struct fg_compress_s *s, const void *p, size_t n, int flush)
{
#ifdef FG_TEST_HOOKS
    if (fault(s))
        return -1;
#endif
    s->z.next_in = (Bytef *)p;
    s->z.avail_in = (uInt)n;
    do {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(s->out, OUT_CHUNK, &v, 1) < 1)
            return -1;
        size_t room = v.iov_len < OUT_CHUNK ? v.iov_len : OUT_CHUNK;
        s->z.next_out = v.iov_base;
        s->z.avail_out = (uInt)room;
        int rc = deflate(&s->z, flush);
        /* Z_BUF_ERROR: nothing to do (a flush with no new input), not a failure. */
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
            return -1;
        v.iov_len = room - s->z.avail_out;
        if (evbuffer_commit_space(s->out, &v, 1) != 0)
            return -1;
    } while (s->z.avail_out == 0);
    return s->z.avail_in == 0 ? 0 : -1;
}

/* Deflate all of buf (drained) with flush after its last byte. Returns 0 or -1. */
static int deflate_buffer(struct fg_compress_s *s, struct evbuffer *buf, int flush)
{
    size_t left = evbuffer_get_length(buf);
    if (left == 0)
        return deflate_bytes(s, NULL, 0, flush);
    while (left > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(buf, -1, NULL, &v, 1) < 1)
            return -1;
        size_t n = v.iov_len < left ? v.iov_len : left;
        if (deflate_bytes(s, v.iov_base, n, n == left ? flush : Z_NO_FLUSH) != 0)
            return -1;
        evbuffer_drain(buf, n);
        left -= n;
    }
    return 0;
}

/* Hand s->out to the front end. Returns 0 or <0 (the client is gone). */
static int push(fg_request_t *req, struct fg_compress_s *s)
{
    if (evbuffer_get_length(s->out) == 0)
        return 0;
    return s->next->send_body(req, s->out);
}

/* Read and deflate more of the file being sent: stops above FILE_HIGH queued (on_writable
 * resumes it) or after FILE_BURST chunks (s->turn resumes it in the next turn of the loop, after
 * the other connections had theirs). Without a loop (unit tests), reads to the end. Returns 0
 * or -1. */
static int pump_file(fg_request_t *req, struct fg_compress_s *s)
{
    unsigned char buf[FILE_CHUNK];
    int loop = req->worker != NULL && req->worker->base != NULL;
    int i;
    for (i = 0; (i < FILE_BURST || !loop) && s->file_left > 0; i++) {
        if (s->next->pending(req) > FILE_HIGH)
            break;
        size_t want = s->file_left < FILE_CHUNK ? (size_t)s->file_left : FILE_CHUNK;
        ssize_t n = pread(s->fd, buf, want, s->file_off);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            fg_log_error("compress: reading %.*s: %s", (int)req->path.len, req->path.base,
                         n == 0 ? "the file is shorter than when opened" : strerror(errno));
            return -1;
        }
        s->file_off += n;
        s->file_left -= n;
        /* The end of the file is the end of what the handler queued: flush it out. */
        if (deflate_bytes(s, buf, (size_t)n, s->file_left == 0 ? Z_SYNC_FLUSH : Z_NO_FLUSH) != 0) {
            fg_log_error("compress: deflate failed on %.*s", (int)req->path.len, req->path.base);
            return -1;
        }
        if (push(req, s) != 0)
            return -1;
    }
    if (s->file_left == 0) {
        close(s->fd);
        s->fd = -1;
    } else if (i == FILE_BURST) {
        if (s->turn == NULL &&
            (s->turn = event_new(req->worker->base, -1, 0, on_turn, req)) == NULL)
            return -1;
        event_active(s->turn, EV_TIMEOUT, 1);
    }
    return 0;
}

/* The gzip trailer, then the front end's finish (or abort when the trailer cannot be made).
 * req is gone after. */
static void complete(fg_request_t *req, struct fg_compress_s *s)
{
    int rc = 0;
    if (!s->ended) {
        rc = deflate_bytes(s, NULL, 0, Z_FINISH);
        if (rc != 0)
            fg_log_error("compress: deflate failed finishing %.*s", (int)req->path.len,
                         req->path.base);
        else
            rc = push(req, s);
        s->ended = 1;
    }
    release(req, s);
    if (rc != 0)
        s->next->abort(req);
    else
        s->next->finish(req);
}

/* ---- the ops table ---- */

static int c_send_head(fg_request_t *req, int status, const fg_headers_t *hdrs,
                       int64_t content_length)
{
    struct fg_compress_s *s = req->compress;
    verdict_t v = decide(req, s->conf, status, hdrs, content_length);
    if (v == SEND_AS_IS)
        return s->next->send_head(req, status, hdrs, content_length);
    fg_headers_t h;
    fg_headers_init(&h, req->pool, hdrs->n + 3);
    for (size_t i = 0; i < hdrs->n; i++)
        if (fg_headers_add(&h, hdrs->v[i].name, hdrs->v[i].value) != 0)
            return -1;
    if (fg_compress_vary(&h) != 0 || (v == SEND_VARY_WEAK && fg_compress_weaken_etag(&h) != 0))
        return -1;
    if (v == SEND_GZIP && start(req, s) == 0) {
        /* The coded length is not known before the end: HTTP/1.1 frames it chunked, HTTP/2
         * ends it with END_STREAM. */
        fg_headers_remove(&h, FG_STR_LIT("Content-Length"));
        if (fg_headers_add(&h, FG_STR_LIT("Content-Encoding"), FG_STR_LIT("gzip")) != 0 ||
            fg_compress_weaken_etag(&h) != 0) {
            release(req, s);
            return -1;
        }
        content_length = -1;
        s->on = 1;
        req->gzip = 1;
        s->handler = req->handler;
        req->handler = &wrap_handler;
    }
    return s->next->send_head(req, status, &h, content_length);
}

static int c_send_body(fg_request_t *req, struct evbuffer *buf)
{
    struct fg_compress_s *s = req->compress;
    if (!s->on)
        return s->next->send_body(req, buf);
    if (s->failed || s->ended || s->fd >= 0) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        s->failed = 1;
        return -1;
    }
    /* What the handler sends in one turn of the loop (the chunks of one read from the
     * destination) is deflated together and flushed once at the end of the turn (on_turn): a
     * server-sent event or a streamed chunk still reaches the client without waiting for more,
     * and a body relayed in many small pieces is not coded piece by piece (a sync flush per
     * piece costs at least 5 bytes and resets the match search). Without a loop (unit tests),
     * each call is flushed. */
    int loop = req->worker != NULL && req->worker->base != NULL;
    if (deflate_buffer(s, buf, loop ? Z_NO_FLUSH : Z_SYNC_FLUSH) != 0) {
        fg_log_error("compress: deflate failed on %.*s", (int)req->path.len, req->path.base);
        evbuffer_drain(buf, evbuffer_get_length(buf));
        s->failed = 1;
        return -1;
    }
    if (loop && !s->flush_due) {
        if (s->turn == NULL &&
            (s->turn = event_new(req->worker->base, -1, 0, on_turn, req)) == NULL) {
            s->failed = 1;
            return -1;
        }
        s->flush_due = 1;
        event_active(s->turn, EV_TIMEOUT, 1);
    }
    return push(req, s);
}

/* The end of the turn in which the handler sent body bytes: flush them out. */
static void flush_turn(fg_request_t *req, struct fg_compress_s *s)
{
    s->flush_due = 0;
    if (s->failed || s->ended)
        return;
    if (deflate_bytes(s, NULL, 0, Z_SYNC_FLUSH) != 0) {
        fg_log_error("compress: deflate failed on %.*s", (int)req->path.len, req->path.base);
        s->failed = 1;
        return;
    }
    if (push(req, s) != 0)
        s->failed = 1;
}

static int c_send_file(fg_request_t *req, int fd, off_t off, off_t len)
{
    struct fg_compress_s *s = req->compress;
    if (!s->on)
        return s->next->send_file(req, fd, off, len);
    if (s->failed || s->ended || s->fd >= 0) {
        close(fd);
        s->failed = 1;
        return -1;
    }
    if (len == 0) {
        close(fd);
        return 0;
    }
    s->fd = fd;
    s->file_off = off;
    s->file_left = len;
    /* A failure is reported to the handler; finish then aborts (the handler may call it next). */
    if (pump_file(req, s) != 0) {
        s->failed = 1;
        return -1;
    }
    return 0;
}

static int c_send_trailers(fg_request_t *req, const fg_headers_t *trailers)
{
    struct fg_compress_s *s = req->compress;
    if (s->on && !s->ended && !s->failed && s->fd < 0) {
        /* Trailers follow the content: the gzip trailer goes first. */
        s->ended = 1;
        if (deflate_bytes(s, NULL, 0, Z_FINISH) != 0 || push(req, s) != 0) {
            s->failed = 1;
            return -1;
        }
    }
    return s->next->send_trailers(req, trailers);
}

static void c_finish(fg_request_t *req)
{
    struct fg_compress_s *s = req->compress;
    if (!s->on) {
        s->next->finish(req);
        return;
    }
    s->handler_done = 1;
    if (s->failed) {
        release(req, s);
        s->next->abort(req);
        return;
    }
    if (s->fd >= 0) {
        s->finish_due = 1; /* on_writable completes it once the file is deflated */
        return;
    }
    complete(req, s);
}

static void c_abort(fg_request_t *req)
{
    struct fg_compress_s *s = req->compress;
    s->handler_done = 1;
    release(req, s);
    s->next->abort(req);
}

static struct fg_conn_s *c_raw_conn(fg_request_t *req)
{
    struct fg_compress_s *s = req->compress;
    /* Coded bytes are made here: nothing of the handler's may bypass the filter. */
    if (s->on)
        return NULL;
    return s->next->raw_conn(req);
}

/* ---- the handler's callbacks, while deflating ---- */

static void on_body(fg_request_t *req)
{
    struct fg_compress_s *s = req->compress;
    if (!s->handler_done && s->handler != NULL && s->handler->on_body != NULL)
        s->handler->on_body(req);
}

/* More of the file; the response completed once it is all out and the handler finished.
 * Returns 1 while the file is not done (or req is gone), 0 when it is. */
static int resume_file(fg_request_t *req, struct fg_compress_s *s)
{
    if (s->fd < 0)
        return 0;
    if (pump_file(req, s) != 0) {
        s->failed = 1;
        if (s->handler_done) {
            release(req, s);
            s->next->abort(req);
        }
        return 1;
    }
    if (s->fd >= 0)
        return 1;
    if (s->finish_due) {
        complete(req, s);
        return 1;
    }
    return 0;
}

static void on_turn(evutil_socket_t fd, short what, void *arg)
{
    fg_request_t *req = arg;
    struct fg_compress_s *s = req->compress;
    (void)fd;
    (void)what;
    if (s->flush_due)
        flush_turn(req, s);
    resume_file(req, s);
}

static void on_writable(fg_request_t *req)
{
    struct fg_compress_s *s = req->compress;
    if (resume_file(req, s))
        return;
    if (!s->handler_done && s->handler != NULL && s->handler->on_writable != NULL)
        s->handler->on_writable(req);
}

static void on_abort(fg_request_t *req)
{
    struct fg_compress_s *s = req->compress;
    release(req, s);
    if (!s->handler_done && s->handler != NULL && s->handler->on_abort != NULL) {
        s->handler_done = 1;
        s->handler->on_abort(req);
    }
}

void fg_compress_attach(fg_request_t *req)
{
    const fg_compression_config_t *conf = &req->route->compression;
    if (req->route->compression_from_server)
        conf = req->server != NULL ? &req->server->compression : NULL;
    if (conf == NULL || !conf->enabled)
        return;
    struct fg_compress_s *s = fg_pool_calloc(req->pool, sizeof(*s));
    if (s == NULL)
        return;
    s->next = req->ops;
    s->conf = conf;
    s->fd = -1;
    s->ops = *req->ops;
    s->ops.send_head = c_send_head;
    s->ops.send_body = c_send_body;
    s->ops.send_file = c_send_file;
    if (s->ops.send_trailers != NULL)
        s->ops.send_trailers = c_send_trailers;
    s->ops.finish = c_finish;
    s->ops.abort = c_abort;
    if (s->ops.raw_conn != NULL)
        s->ops.raw_conn = c_raw_conn;
    req->compress = s;
    req->ops = &s->ops;
}
