/* Unit tests for worker/http/compress.c: Accept-Encoding negotiation, the field rewrites (Vary,
 * ETag), the type list, and the filter itself driven through mock front-end ops: a body sent in
 * pieces and a file come out as one gzip stream that inflates to the original. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <zlib.h>

#include "worker/http/compress.h"

static int accepts(const char *v)
{
    fg_str_t s = fg_str(v);
    return fg_compress_accepts_gzip(&s, 1);
}

static void test_accept_encoding(void **state)
{
    (void)state;
    assert_int_equal(fg_compress_accepts_gzip(NULL, 0), 0);
    assert_int_equal(accepts("gzip"), 1);
    assert_int_equal(accepts("GZip"), 1);
    assert_int_equal(accepts("x-gzip"), 1);
    assert_int_equal(accepts("gzip, deflate, br"), 1);
    assert_int_equal(accepts("br;q=1.0, gzip;q=0.8, *;q=0.1"), 1);
    assert_int_equal(accepts("gzip;q=0"), 0);
    assert_int_equal(accepts("gzip;q=0.000"), 0);
    assert_int_equal(accepts("gzip ; q=0.001"), 1);
    assert_int_equal(accepts("gzip;Q=1"), 1);
    assert_int_equal(accepts(""), 0);
    assert_int_equal(accepts("identity"), 0);
    assert_int_equal(accepts("br, deflate"), 0);
    assert_int_equal(accepts("identity;q=0"), 0);
    assert_int_equal(accepts("*"), 1);
    assert_int_equal(accepts("*;q=0"), 0);
    /* the named coding wins over "*" (RFC 9110 12.5.3) */
    assert_int_equal(accepts("gzip;q=0, *"), 0);
    assert_int_equal(accepts("*;q=0, gzip"), 1);
    /* a weight that cannot be read is no weight for gzip, not a default of 1 or a drop
     * that lets "*" decide */
    assert_int_equal(accepts("gzip ; q = 0"), 0);
    assert_int_equal(accepts("gzip;q = 0.5"), 1);
    assert_int_equal(accepts("gzip;q=0.0000, *"), 0);
    assert_int_equal(accepts("gzip;q=1.5, *"), 0);
    assert_int_equal(accepts("gzip;q, *"), 0);
    assert_int_equal(accepts("gzip;qs=1"), 1);
    /* malformed weights */
    assert_int_equal(accepts("gzip;q=2"), 0);
    assert_int_equal(accepts("gzip;q=abc"), 0);
    assert_int_equal(accepts("gzip;q=0.1234"), 0);
    assert_int_equal(accepts("gzip;q=1.5"), 0);
    assert_int_equal(accepts("gzip;q="), 0);
    assert_int_equal(accepts("gzip;q=0, gzip"), 0); /* the first mention counts */
    assert_int_equal(accepts(" , ,gzip,"), 1);
    assert_int_equal(accepts("gzipx"), 0);
    assert_int_equal(accepts("gzip;level=9"), 1);
    /* several fields are one list */
    fg_str_t two[] = {FG_STR_LIT("br"), FG_STR_LIT("gzip")};
    assert_int_equal(fg_compress_accepts_gzip(two, 2), 1);
    fg_str_t off[] = {FG_STR_LIT("gzip;q=0"), FG_STR_LIT("gzip")};
    assert_int_equal(fg_compress_accepts_gzip(off, 2), 0);
}

static void test_type_listed(void **state)
{
    (void)state;
    char *types[] = {"text/html", "application/json", "image/*", NULL};
    fg_compression_config_t c = {.enabled = 1, .types = types, .ntypes = 3};
    assert_true(fg_compress_type_listed(&c, FG_STR_LIT("text/html")));
    assert_true(fg_compress_type_listed(&c, FG_STR_LIT("Text/HTML; charset=utf-8")));
    assert_true(fg_compress_type_listed(&c, FG_STR_LIT("application/json ;charset=utf-8")));
    assert_true(fg_compress_type_listed(&c, FG_STR_LIT("image/svg+xml")));
    assert_false(fg_compress_type_listed(&c, FG_STR_LIT("text/plain")));
    assert_false(fg_compress_type_listed(&c, FG_STR_LIT("text/htmlx")));
    assert_false(fg_compress_type_listed(&c, FG_STR_LIT("imagex/png")));
    assert_false(fg_compress_type_listed(&c, FG_STR_LIT("")));
    assert_false(fg_compress_type_listed(&c, FG_STR_LIT("text")));
    char *all[] = {"*/*", NULL};
    fg_compression_config_t any = {.enabled = 1, .types = all, .ntypes = 1};
    assert_true(fg_compress_type_listed(&any, FG_STR_LIT("font/woff2")));
}

static const char *field(const fg_headers_t *h, const char *name)
{
    static char buf[256];
    const fg_http_header_t *f = fg_headers_get(h, fg_str(name));
    if (f == NULL)
        return NULL;
    snprintf(buf, sizeof(buf), "%.*s", (int)f->value.len, f->value.base);
    return buf;
}

static void test_vary_and_etag(void **state)
{
    (void)state;
    fg_pool_t *pool = fg_pool_new(4096);
    fg_headers_t h;
    fg_headers_init(&h, pool, 4);
    assert_int_equal(fg_compress_vary(&h), 0);
    assert_string_equal(field(&h, "Vary"), "Accept-Encoding");
    assert_int_equal(fg_compress_vary(&h), 0); /* listed already: unchanged */
    assert_string_equal(field(&h, "Vary"), "Accept-Encoding");

    fg_headers_init(&h, pool, 4);
    fg_headers_add(&h, FG_STR_LIT("Vary"), FG_STR_LIT("Origin"));
    assert_int_equal(fg_compress_vary(&h), 0);
    assert_string_equal(field(&h, "Vary"), "Origin, Accept-Encoding");

    fg_headers_init(&h, pool, 4);
    fg_headers_add(&h, FG_STR_LIT("vary"), FG_STR_LIT("origin, accept-encoding"));
    assert_int_equal(fg_compress_vary(&h), 0);
    assert_string_equal(field(&h, "Vary"), "origin, accept-encoding");

    fg_headers_init(&h, pool, 4);
    fg_headers_add(&h, FG_STR_LIT("Vary"), FG_STR_LIT("*"));
    assert_int_equal(fg_compress_vary(&h), 0);
    assert_string_equal(field(&h, "Vary"), "*");

    fg_headers_init(&h, pool, 4);
    fg_headers_add(&h, FG_STR_LIT("ETag"), FG_STR_LIT("\"abc\""));
    assert_int_equal(fg_compress_weaken_etag(&h), 0);
    assert_string_equal(field(&h, "ETag"), "W/\"abc\"");
    assert_int_equal(fg_compress_weaken_etag(&h), 0); /* weak stays weak */
    assert_string_equal(field(&h, "ETag"), "W/\"abc\"");
    fg_pool_free(pool);
}

/* ---- the filter over mock front-end ops ---- */

typedef struct {
    int status;
    int64_t length;
    fg_headers_t head;
    struct evbuffer *wire;
    int finished, aborted;
} mock_t;

static mock_t mock;

static int m_send_head(fg_request_t *req, int status, const fg_headers_t *hdrs, int64_t cl)
{
    mock.status = status;
    mock.length = cl;
    fg_headers_init(&mock.head, req->pool, hdrs->n);
    for (size_t i = 0; i < hdrs->n; i++)
        fg_headers_add(&mock.head, hdrs->v[i].name, hdrs->v[i].value);
    return 0;
}

static int m_send_body(fg_request_t *req, struct evbuffer *buf)
{
    (void)req;
    evbuffer_add_buffer(mock.wire, buf);
    return 0;
}

static int m_send_file(fg_request_t *req, int fd, off_t off, off_t len)
{
    (void)req;
    char b[4096];
    while (len > 0) {
        ssize_t n = pread(fd, b, len < (off_t)sizeof(b) ? (size_t)len : sizeof(b), off);
        assert_true(n > 0);
        evbuffer_add(mock.wire, b, (size_t)n);
        off += n;
        len -= n;
    }
    close(fd);
    return 0;
}

static void m_finish(fg_request_t *req)
{
    (void)req;
    mock.finished++;
}

static void m_abort(fg_request_t *req)
{
    (void)req;
    mock.aborted++;
}

static size_t m_pending(fg_request_t *req)
{
    (void)req;
    return 0;
}

static const fg_req_ops_t mock_ops = {
    .send_head = m_send_head,
    .send_body = m_send_body,
    .send_file = m_send_file,
    .finish = m_finish,
    .pending = m_pending,
    .abort = m_abort,
};

static char *default_types[] = {"text/html", "text/plain", "application/json", NULL};
static const fg_compression_config_t conf = {
    .enabled = 1, .types = default_types, .ntypes = 3, .min_length = 1024, .level = 1};

/* A GET with Accept-Encoding ae (NULL: none) and the filter attached. */
static fg_request_t *request(fg_pool_t *pool, const char *method, const char *ae)
{
    fg_request_t *req = fg_pool_calloc(pool, sizeof(*req));
    req->pool = pool;
    req->method = fg_str(method);
    req->path = FG_STR_LIT("/x");
    req->headers = fg_pool_calloc(pool, 2 * sizeof(fg_http_header_t));
    if (ae != NULL) {
        req->headers[0].name = FG_STR_LIT("Accept-Encoding");
        req->headers[0].value = fg_str(ae);
        req->nheaders = 1;
    }
    req->ops = &mock_ops;
    static fg_route_t route;
    route.compression = conf;
    route.compress_any = 1;
    req->route = &route;
    fg_compress_attach(req);
    assert_non_null(req->compress);
    assert_ptr_not_equal(req->ops, &mock_ops);
    return req;
}

static void reset_mock(void)
{
    if (mock.wire != NULL)
        evbuffer_free(mock.wire);
    memset(&mock, 0, sizeof(mock));
    mock.wire = evbuffer_new();
}

static size_t inflate_all(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    size_t got = cap - z.avail_out;
    inflateEnd(&z);
    return got;
}

static unsigned char *text(size_t n)
{
    unsigned char *t = malloc(n);
    for (size_t i = 0; i < n; i++)
        t[i] = (unsigned char)("<p>lorem ipsum dolor sit amet</p>\n"[i % 34] + (i / 4096) % 3);
    return t;
}

static void head(fg_request_t *req, const char *type, int64_t cl, const char *extra,
                 const char *extra_value)
{
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 4);
    fg_headers_add(&h, FG_STR_LIT("Content-Type"), fg_str(type));
    fg_headers_add(&h, FG_STR_LIT("ETag"), FG_STR_LIT("\"e1\""));
    if (extra != NULL)
        fg_headers_add(&h, fg_str(extra), fg_str(extra_value));
    assert_int_equal(req->ops->send_head(req, 200, &h, cl), 0);
}

static void test_body_in_pieces_round_trip(void **state)
{
    (void)state;
    reset_mock();
    fg_pool_t *pool = fg_pool_new(4096);
    fg_request_t *req = request(pool, "GET", "gzip, br");
    const size_t n = 300000;
    unsigned char *t = text(n);
    head(req, "text/html; charset=utf-8", (int64_t)n, NULL, NULL);
    assert_int_equal(mock.length, -1);
    assert_string_equal(field(&mock.head, "Content-Encoding"), "gzip");
    assert_string_equal(field(&mock.head, "Vary"), "Accept-Encoding");
    assert_string_equal(field(&mock.head, "ETag"), "W/\"e1\"");
    struct evbuffer *b = evbuffer_new();
    size_t sent = 0, step = 1;
    while (sent < n) {
        size_t k = step < n - sent ? step : n - sent;
        evbuffer_add(b, t + sent, k);
        assert_int_equal(req->ops->send_body(req, b), 0);
        assert_int_equal(evbuffer_get_length(b), 0);
        /* every piece is flushed: what is on the wire inflates to all that was sent */
        if (step < 4096) {
            size_t wl = evbuffer_get_length(mock.wire);
            unsigned char *w = evbuffer_pullup(mock.wire, -1);
            z_stream z = {0};
            unsigned char out[8192];
            inflateInit2(&z, 16 + MAX_WBITS);
            z.next_in = w;
            z.avail_in = (uInt)wl;
            z.next_out = out;
            z.avail_out = sizeof(out);
            int rc = inflate(&z, Z_SYNC_FLUSH);
            assert_true(rc == Z_OK || rc == Z_BUF_ERROR);
            assert_int_equal(sizeof(out) - z.avail_out, sent + k);
            assert_memory_equal(out, t, sent + k);
            inflateEnd(&z);
        }
        sent += k;
        step = step * 3 + 1;
    }
    req->ops->finish(req);
    assert_int_equal(mock.finished, 1);
    unsigned char *out = malloc(n + 1);
    size_t wl = evbuffer_get_length(mock.wire);
    assert_int_equal(inflate_all(evbuffer_pullup(mock.wire, -1), wl, out, n + 1), n);
    assert_memory_equal(out, t, n);
    assert_true(wl < n / 4);
    free(out);
    free(t);
    evbuffer_free(b);
    fg_pool_free(pool);
}

static void test_file_round_trip(void **state)
{
    (void)state;
    reset_mock();
    char path[] = "/tmp/fg_compress_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    const size_t n = 1000000;
    unsigned char *t = text(n);
    assert_int_equal(write(fd, t, n), (ssize_t)n);
    fg_pool_t *pool = fg_pool_new(4096);
    fg_request_t *req = request(pool, "GET", "gzip");
    head(req, "text/plain", (int64_t)n - 10, NULL, NULL);
    assert_int_equal(req->ops->send_file(req, fd, 10, (off_t)n - 10), 0);
    req->ops->finish(req);
    assert_int_equal(mock.finished, 1);
    unsigned char *out = malloc(n);
    size_t wl = evbuffer_get_length(mock.wire);
    assert_int_equal(inflate_all(evbuffer_pullup(mock.wire, -1), wl, out, n), n - 10);
    assert_memory_equal(out, t + 10, n - 10);
    free(out);
    free(t);
    fg_pool_free(pool);
}

/* The cases that go out as they are: the head and the body untouched. */
static void as_is(const char *method, const char *ae, int status, const char *type, int64_t cl,
                  const char *extra, const char *extra_value, int vary)
{
    reset_mock();
    fg_pool_t *pool = fg_pool_new(4096);
    fg_request_t *req = request(pool, method, ae);
    fg_headers_t h;
    fg_headers_init(&h, pool, 4);
    fg_headers_add(&h, FG_STR_LIT("Content-Type"), fg_str(type));
    fg_headers_add(&h, FG_STR_LIT("ETag"), FG_STR_LIT("\"e1\""));
    if (extra != NULL)
        fg_headers_add(&h, fg_str(extra), fg_str(extra_value));
    assert_int_equal(req->ops->send_head(req, status, &h, cl), 0);
    assert_int_equal(mock.length, cl);
    const char *ce = field(&mock.head, "Content-Encoding");
    if (extra != NULL && strcmp(extra, "Content-Encoding") == 0)
        assert_string_equal(ce, extra_value);
    else
        assert_null(ce);
    assert_string_equal(field(&mock.head, "ETag"), "\"e1\"");
    assert_int_equal(field(&mock.head, "Vary") != NULL, vary);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "hello", 5);
    assert_int_equal(req->ops->send_body(req, b), 0);
    req->ops->finish(req);
    assert_int_equal(evbuffer_get_length(mock.wire), 5);
    assert_int_equal(mock.finished, 1);
    evbuffer_free(b);
    fg_pool_free(pool);
}

static void test_not_compressed(void **state)
{
    (void)state;
    as_is("GET", NULL, 200, "text/html", 5000, NULL, NULL, 1);
    as_is("GET", "gzip;q=0", 200, "text/html", 5000, NULL, NULL, 1);
    as_is("HEAD", "gzip", 200, "text/html", 5000, NULL, NULL, 1);
    as_is("GET", "gzip", 206, "text/html", 5000, NULL, NULL, 0);
    as_is("GET", NULL, 304, "text/html", -1, NULL, NULL, 0);
    as_is("GET", "gzip", 204, "text/html", -1, NULL, NULL, 0);
    as_is("GET", "gzip", 200, "image/png", 5000, NULL, NULL, 0);
    as_is("GET", "gzip", 200, "text/html", 1023, NULL, NULL, 0);
    as_is("GET", "gzip", 200, "text/html", 5000, "Content-Encoding", "br", 0);
    as_is("GET", "gzip", 200, "text/html", 5000, "Cache-Control", "max-age=1, No-Transform", 0);
}

/* RFC 9110 15.4.5: the 304 to a client that accepts gzip has the coded 200's ETag and Vary. */
static void test_not_modified_matches_the_coded_200(void **state)
{
    (void)state;
    reset_mock();
    fg_pool_t *pool = fg_pool_new(4096);
    fg_request_t *req = request(pool, "GET", "gzip");
    fg_headers_t h;
    fg_headers_init(&h, pool, 2);
    fg_headers_add(&h, FG_STR_LIT("ETag"), FG_STR_LIT("\"e1\""));
    assert_int_equal(req->ops->send_head(req, 304, &h, -1), 0);
    assert_int_equal(mock.status, 304);
    assert_int_equal(mock.length, -1);
    assert_string_equal(field(&mock.head, "ETag"), "W/\"e1\"");
    assert_string_equal(field(&mock.head, "Vary"), "Accept-Encoding");
    assert_null(field(&mock.head, "Content-Encoding"));
    req->ops->finish(req);
    assert_int_equal(mock.finished, 1);
    assert_int_equal(evbuffer_get_length(mock.wire), 0);
    fg_pool_free(pool);
}

/* A route without "compression" takes its server's; one with it keeps its own. */
static void test_server_default(void **state)
{
    (void)state;
    fg_pool_t *pool = fg_pool_new(4096);
    fg_server_t server = {0};
    fg_route_t route = {0};
    fg_request_t *req = fg_pool_calloc(pool, sizeof(*req));
    req->pool = pool;
    req->server = &server;
    req->route = &route;
    req->ops = &mock_ops;
    route.compression_from_server = 1;
    fg_compress_attach(req); /* the server's is off */
    assert_null(req->compress);
    assert_ptr_equal(req->ops, &mock_ops);
    server.compression = conf;
    fg_compress_attach(req);
    assert_non_null(req->compress);
    req->compress = NULL;
    req->ops = &mock_ops;
    route.compression_from_server = 0; /* the route's own, off, wins */
    fg_compress_attach(req);
    assert_null(req->compress);
    fg_pool_free(pool);
}

static void test_abort_releases(void **state)
{
    (void)state;
    reset_mock();
    fg_pool_t *pool = fg_pool_new(4096);
    fg_request_t *req = request(pool, "GET", "gzip");
    head(req, "text/html", -1, NULL, NULL);
    assert_non_null(field(&mock.head, "Content-Encoding"));
    req->ops->abort(req);
    assert_int_equal(mock.aborted, 1);
    assert_int_equal(mock.finished, 0);
    fg_pool_free(pool);
    evbuffer_free(mock.wire);
    mock.wire = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_encoding),
        cmocka_unit_test(test_type_listed),
        cmocka_unit_test(test_vary_and_etag),
        cmocka_unit_test(test_body_in_pieces_round_trip),
        cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_not_compressed),
        cmocka_unit_test(test_not_modified_matches_the_coded_200),
        cmocka_unit_test(test_server_default),
        cmocka_unit_test(test_abort_releases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
