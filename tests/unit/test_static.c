/* Unit tests for worker/handlers/static.c: the pure helpers (MIME, Range, HTTP dates, entity tags)
 * and the handler itself, driven through mock request ops over a temporary directory tree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <event2/buffer.h>

#include "common/http_date.h"
#include "common/mime.h"
#include "common/pool.h"
#include "worker/http/request.h"
#include "worker/handlers/static.h"

/* ---- pure helpers ---- */

static void test_mime_types(void **state)
{
    (void)state;
    assert_string_equal(fg_mime_type("/a/index.html"), "text/html; charset=utf-8");
    assert_string_equal(fg_mime_type("/A/INDEX.HTM"), "text/html; charset=utf-8");
    assert_string_equal(fg_mime_type("app.mjs"), "text/javascript; charset=utf-8");
    assert_string_equal(fg_mime_type("/r.md"), "text/markdown; charset=utf-8");
    assert_string_equal(fg_mime_type("/x.tar.gz"), "application/gzip");
    assert_string_equal(fg_mime_type("/f.woff2"), "font/woff2");
    assert_string_equal(fg_mime_type("/i.svg"), "image/svg+xml");
    assert_string_equal(fg_mime_type("/m.wasm"), "application/wasm");
    assert_string_equal(fg_mime_type("/d.csv"), "text/csv; charset=utf-8");
    /* no extension, a dot only in a directory name, a trailing dot, unknown extension */
    assert_string_equal(fg_mime_type("/LICENSE"), "application/octet-stream");
    assert_string_equal(fg_mime_type("/v1.2/README"), "application/octet-stream");
    assert_string_equal(fg_mime_type("/file."), "application/octet-stream");
    assert_string_equal(fg_mime_type("/x.exe"), "application/octet-stream");
}

static int range(const char *v, int64_t size, int64_t *a, int64_t *b)
{
    *a = *b = -7;
    return fg_static_parse_range(fg_str(v), size, a, b);
}

static void test_range_parse(void **state)
{
    (void)state;
    int64_t a, b;
    assert_int_equal(range("bytes=0-4", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(a, 0);
    assert_int_equal(b, 4);
    assert_int_equal(range("bytes=10-", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(a, 10);
    assert_int_equal(b, 99);
    assert_int_equal(range("bytes=-30", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(a, 70);
    assert_int_equal(b, 99);
    /* last-pos past the end is clamped; a suffix longer than the file selects all of it */
    assert_int_equal(range("bytes=90-5000", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(b, 99);
    assert_int_equal(range("bytes=-500", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(a, 0);
    assert_int_equal(b, 99);
    /* unit case-insensitive, OWS around the value and empty list elements accepted */
    assert_int_equal(range("  BYTES=5-5 ", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(a, 5);
    assert_int_equal(b, 5);
    assert_int_equal(range("bytes=, 1-2 ,", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(a, 1);
    /* a huge last-pos saturates instead of overflowing */
    assert_int_equal(range("bytes=1-99999999999999999999999", 100, &a, &b), FG_RANGE_OK);
    assert_int_equal(b, 99);

    assert_int_equal(range("bytes=100-", 100, &a, &b), FG_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=100-200", 100, &a, &b), FG_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=-0", 100, &a, &b), FG_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=99999999999999999999-", 100, &a, &b), FG_RANGE_UNSATISFIABLE);

    const char *ignored[] = {
        "bytes=0-1,5-6", "bytes=0-1, -3", "items=0-1", "bytes 0-1",  "bytes=5-4",
        "bytes=",        "bytes=-",       "bytes=a-b", "bytes=1-2x", "bytes=--1",
        "bytes= =1-2",   "bytes=1",       ""};
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
        int r = range(ignored[i], 100, &a, &b);
        if (r != FG_RANGE_IGNORE)
            fail_msg("\"%s\" gave %d", ignored[i], r);
    }
    /* an empty file is always sent whole */
    assert_int_equal(range("bytes=0-0", 0, &a, &b), FG_RANGE_IGNORE);
}

static void test_http_date(void **state)
{
    (void)state;
    char buf[30];
    assert_int_equal(fg_http_date(784111777, buf), 29);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    fg_http_date(0, buf);
    assert_string_equal(buf, "Thu, 01 Jan 1970 00:00:00 GMT");
    fg_http_date(951782400, buf); /* leap day */
    assert_string_equal(buf, "Tue, 29 Feb 2000 00:00:00 GMT");

    time_t t = 0;
    assert_int_equal(fg_static_parse_http_date(fg_str("Sun, 06 Nov 1994 08:49:37 GMT"), &t), 0);
    assert_int_equal(t, 784111777);
    t = 0;
    assert_int_equal(fg_static_parse_http_date(fg_str("Sunday, 06-Nov-94 08:49:37 GMT"), &t), 0);
    assert_int_equal(t, 784111777);
    t = 0;
    assert_int_equal(fg_static_parse_http_date(fg_str("Sun Nov  6 08:49:37 1994"), &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(fg_static_parse_http_date(fg_str("Tue, 29 Feb 2000 00:00:00 GMT"), &t), 0);
    assert_int_equal(t, 951782400);
    /* round trip of a recent time */
    fg_http_date(1767225599, buf);
    assert_int_equal(fg_static_parse_http_date(fg_str(buf), &t), 0);
    assert_int_equal(t, 1767225599);

    const char *bad[] = {"",
                         "Sun, 06 Nov 1994 08:49:37",
                         "Sun, 06 Nov 1994 08:49:37 UTC",
                         "Sun, 6 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 24:00:00 GMT",
                         "Sun, 32 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 08:49:37 GMTx",
                         "Sun Nov 6 08:49:37 1994",
                         "Sunday, 06-Nov-1994 08:49:37 GMT",
                         "W/\"abc\"",
                         "\"abc\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (fg_static_parse_http_date(fg_str(bad[i]), &t) == 0)
            fail_msg("\"%s\" parsed", bad[i]);
}

static void test_etag_match(void **state)
{
    (void)state;
    fg_str_t weak = fg_str("W/\"5f-10\"");
    fg_str_t strong = fg_str("\"5f-10\"");
    assert_true(fg_static_etag_match(fg_str("W/\"5f-10\""), weak, 1));
    assert_true(fg_static_etag_match(fg_str("\"5f-10\""), weak, 1));
    assert_true(fg_static_etag_match(fg_str("\"a\", W/\"5f-10\""), weak, 1));
    assert_true(fg_static_etag_match(fg_str(" ,\"a\" ,, \"5f-10\" "), weak, 1));
    assert_true(fg_static_etag_match(fg_str("*"), weak, 1));
    assert_true(fg_static_etag_match(fg_str("*"), weak, 0));
    assert_false(fg_static_etag_match(fg_str("\"5f-11\""), weak, 1));
    assert_false(fg_static_etag_match(fg_str("\"5F-10\""), weak, 1)); /* case-sensitive */
    assert_false(fg_static_etag_match(fg_str(""), weak, 1));
    /* strong comparison: both must be strong */
    assert_false(fg_static_etag_match(fg_str("W/\"5f-10\""), weak, 0));
    assert_false(fg_static_etag_match(fg_str("\"5f-10\""), weak, 0));
    assert_true(fg_static_etag_match(fg_str("\"5f-10\""), strong, 0));
    assert_false(fg_static_etag_match(fg_str("W/\"5f-10\""), strong, 0));
    /* malformed: unquoted, unterminated, garbage between tags */
    assert_false(fg_static_etag_match(fg_str("5f-10"), weak, 1));
    assert_false(fg_static_etag_match(fg_str("\"5f-10"), weak, 1));
    assert_false(fg_static_etag_match(fg_str("\"a\" x \"5f-10\""), weak, 1));
}

/* ---- the handler, through mock ops ---- */

typedef struct {
    int status;
    int64_t content_length;
    char headers[2048]; /* "Name: value\n"... */
    char body[4096];
    size_t body_len;
    int file_calls;
    off_t file_off, file_len;
    int finished;
    int heads;
} capture_t;

static capture_t cap;

static int mock_send_head(fg_request_t *req, int status, const fg_headers_t *hdrs,
                          int64_t content_length)
{
    cap.heads++;
    cap.status = status;
    cap.content_length = content_length;
    size_t w = 0;
    for (size_t i = 0; i < hdrs->n; i++)
        w += (size_t)snprintf(cap.headers + w, sizeof(cap.headers) - w, "%.*s: %.*s\n",
                              (int)hdrs->v[i].name.len, hdrs->v[i].name.base,
                              (int)hdrs->v[i].value.len, hdrs->v[i].value.base);
    return 0;
}

static int mock_send_body(fg_request_t *req, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    if (cap.body_len + n < sizeof(cap.body)) {
        evbuffer_remove(buf, cap.body + cap.body_len, n);
        cap.body_len += n;
    }
    evbuffer_drain(buf, evbuffer_get_length(buf));
    return 0;
}

/* Reads the slice like the front end would send it, then closes the fd it now owns. */
static int mock_send_file(fg_request_t *req, int fd, off_t off, off_t len)
{
    cap.file_calls++;
    cap.file_off = off;
    cap.file_len = len;
    ssize_t n = pread(fd, cap.body + cap.body_len,
                      (size_t)len < sizeof(cap.body) - cap.body_len - 1
                          ? (size_t)len
                          : sizeof(cap.body) - cap.body_len - 1,
                      off);
    if (n > 0)
        cap.body_len += (size_t)n;
    close(fd);
    return 0;
}

static void mock_finish(fg_request_t *req)
{
    cap.finished++;
}

static size_t mock_pending(fg_request_t *req)
{
    return 0;
}

static void mock_pause(fg_request_t *req, int pause) {}

static void mock_abort(fg_request_t *req)
{
    fail_msg("abort called");
}

static const fg_req_ops_t mock_ops = {
    .send_head = mock_send_head,
    .send_body = mock_send_body,
    .send_file = mock_send_file,
    .finish = mock_finish,
    .pending = mock_pending,
    .pause_body = mock_pause,
    .abort = mock_abort,
};

static char *default_index[] = {"index.html"};

typedef struct {
    char dir[64]; /* temporary directory holding root/ and outside.txt */
    char root[96];
    fg_route_t route;
    fg_pool_t *pool;
    fg_http_header_t hdrs[8];
    fg_request_t req;
} fixture_t;

static void write_file(const char *dir, const char *name, const char *content)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void sub(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    char p[256], q[256];
    strcpy(fx->dir, "/tmp/fg_static_XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    sub(fx->root, sizeof(fx->root), fx->dir, "root");
    assert_int_equal(mkdir(fx->root, 0755), 0);
    write_file(fx->dir, "outside.txt", "top secret\n");
    write_file(fx->root, "hello.txt", "hello world\n");
    write_file(fx->root, ".env", "PASSWORD=x\n");
    write_file(fx->root, "index.html", "<h1>root</h1>\n");
    const char *dirs[] = {"dir", "empty", "sub", "sub/.git", "app", "multi"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        sub(p, sizeof(p), fx->root, dirs[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    write_file(fx->root, "dir/index.html", "<h1>dir</h1>\n");
    write_file(fx->root, "sub/.git/config", "[core]\n");
    write_file(fx->root, "app/index.html", "<h1>spa</h1>\n");
    write_file(fx->root, "app/about.html", "<h1>about</h1>\n");
    write_file(fx->root, "multi/default.htm", "<p>default</p>\n");
    write_file(fx->root, "empty.txt", "");
    sub(p, sizeof(p), fx->root, "link_in.txt");
    assert_int_equal(symlink("dir/../hello.txt", p), 0);
    sub(p, sizeof(p), fx->root, "link_out.txt");
    assert_int_equal(symlink("../outside.txt", p), 0);
    sub(p, sizeof(p), fx->root, "link_abs.txt");
    sub(q, sizeof(q), fx->dir, "outside.txt");
    assert_int_equal(symlink(q, p), 0);
    sub(p, sizeof(p), fx->root, "link_dir");
    assert_int_equal(symlink("..", p), 0);
    sub(p, sizeof(p), fx->root, "fifo");
    assert_int_equal(mkfifo(p, 0644), 0);
    fx->route.id = "files";
    fx->route.kind = FG_ROUTE_STATIC;
    fx->route.match.path = "/static/{**rest}";
    fx->route.static_root = fx->root;
    fx->route.static_index = default_index; /* the config loader's default */
    fx->route.nstatic_index = 1;
    fx->pool = fg_pool_new(4096);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    char cmd[128];
    fg_static_deinit();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", fx->dir);
    fg_pool_free(fx->pool);
    free(fx);
    return 0;
}

/* A request for path (normalised form) with the catch-all capture the router would give. */
static fg_request_t *mkreq(fixture_t *fx, const char *method, const char *path)
{
    memset(&cap, 0, sizeof(cap));
    fg_pool_reset(fx->pool);
    fg_request_t *r = &fx->req;
    memset(r, 0, sizeof(*r));
    r->pool = fx->pool;
    r->route = &fx->route;
    r->method = fg_str(method);
    const char *q = strchr(path, '?');
    r->path = q ? (fg_str_t){path, (size_t)(q - path)} : fg_str(path);
    r->query = q ? fg_str(q + 1) : FG_STR_NULL;
    r->target = fg_str(path);
    r->headers = fx->hdrs;
    r->ops = &mock_ops;
    r->version = 11;
    strcpy(r->request_id, "test-id");
    if (strncmp(path, "/static/", 8) == 0 && fx->route.match.path &&
        strstr(fx->route.match.path, "{**rest}")) {
        r->captures[0].name = FG_STR_LIT("rest");
        r->captures[0].value = (fg_str_t){path + 8, r->path.len - 8};
        r->ncaptures = 1;
    }
    return r;
}

static void add_header(fg_request_t *r, const char *name, const char *value)
{
    r->headers[r->nheaders].name = fg_str(name);
    r->headers[r->nheaders].value = fg_str(value);
    r->nheaders++;
}

/* The value of response header name (copied), or NULL. */
static const char *hdr(const char *name)
{
    static char out[256];
    size_t n = strlen(name);
    for (const char *p = cap.headers; *p;) {
        const char *nl = strchr(p, '\n');
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            snprintf(out, sizeof(out), "%.*s", (int)(nl - p - n - 2), p + n + 2);
            return out;
        }
        p = nl + 1;
    }
    return NULL;
}

static void run(fg_request_t *r)
{
    fg_static_handle(r);
    assert_int_equal(cap.finished, 1);
    assert_int_equal(cap.heads, 1);
    cap.body[cap.body_len] = '\0';
}

static void expect_status(fixture_t *fx, const char *method, const char *path, int status)
{
    run(mkreq(fx, method, path));
    if (cap.status != status)
        fail_msg("%s %s: status %d, want %d", method, path, cap.status, status);
    if (status >= 400 && cap.file_calls)
        fail_msg("%s %s: a file was sent with %d", method, path, status);
}

static void set_mtime(fixture_t *fx, const char *name, time_t t)
{
    char p[256];
    sub(p, sizeof(p), fx->root, name);
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void test_get_file(void **state)
{
    fixture_t *fx = *state;
    /* changed within the current second (here: dated ahead of the clock, so that a slow run
     * or a second boundary cannot age it): the entity-tag is weak */
    set_mtime(fx, "hello.txt", time(NULL) + 60);
    run(mkreq(fx, "GET", "/static/hello.txt"));
    assert_int_equal(cap.status, 200);
    assert_int_equal(cap.content_length, 12);
    assert_int_equal(cap.file_calls, 1);
    assert_int_equal(cap.file_off, 0);
    assert_int_equal(cap.file_len, 12);
    assert_string_equal(cap.body, "hello world\n");
    assert_string_equal(hdr("Content-Type"), "text/plain; charset=utf-8");
    assert_string_equal(hdr("Accept-Ranges"), "bytes");
    assert_non_null(hdr("Last-Modified"));
    assert_int_equal(strlen(hdr("Last-Modified")), 29);
    const char *etag = hdr("ETag");
    assert_non_null(etag);
    assert_memory_equal(etag, "W/\"", 3);
    assert_non_null(strstr(etag, "-c\"")); /* size 12 in hex */
    assert_null(hdr("Content-Range"));
    assert_null(hdr("Cache-Control"));
    /* a second old or more: strong (RFC 9110 8.8.1), so that If-Range can resume */
    set_mtime(fx, "hello.txt", time(NULL) - 3600);
    run(mkreq(fx, "GET", "/static/hello.txt"));
    assert_int_equal(cap.status, 200);
    etag = hdr("ETag");
    assert_non_null(etag);
    assert_int_equal(etag[0], '"');
}

static void test_head_and_methods(void **state)
{
    fixture_t *fx = *state;
    run(mkreq(fx, "HEAD", "/static/hello.txt"));
    assert_int_equal(cap.status, 200);
    assert_int_equal(cap.content_length, 12);
    assert_int_equal(cap.file_calls, 0);
    assert_string_equal(hdr("Content-Type"), "text/plain; charset=utf-8");
    assert_non_null(hdr("ETag"));

    const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "get", "PATCH"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        expect_status(fx, methods[i], "/static/hello.txt", 405);
        assert_string_equal(hdr("Allow"), "GET, HEAD");
    }
    /* 405 even for a file that does not exist */
    expect_status(fx, "POST", "/static/nope", 405);
}

static void test_directories(void **state)
{
    fixture_t *fx = *state;
    run(mkreq(fx, "GET", "/static/dir/"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "<h1>dir</h1>\n");
    assert_string_equal(hdr("Content-Type"), "text/html; charset=utf-8");

    expect_status(fx, "GET", "/static/dir", 301);
    assert_string_equal(hdr("Location"), "/static/dir/");
    expect_status(fx, "GET", "/static/dir?a=1&b=2", 301);
    assert_string_equal(hdr("Location"), "/static/dir/?a=1&b=2");
    /* the root of the route, with and without its slash */
    run(mkreq(fx, "GET", "/static/"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "<h1>root</h1>\n");
    expect_status(fx, "GET", "/static", 301);
    assert_string_equal(hdr("Location"), "/static/");
    /* a router that leaves the trailing slash out of the capture */
    fg_request_t *r = mkreq(fx, "GET", "/static/dir/");
    r->captures[0].value = FG_STR_LIT("dir");
    run(r);
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "<h1>dir</h1>\n");
    /* no listing */
    expect_status(fx, "GET", "/static/empty/", 404);
    /* a file named with a trailing slash is not a directory */
    expect_status(fx, "GET", "/static/hello.txt/", 404);
}

static void test_index_list(void **state)
{
    fixture_t *fx = *state;
    char *names[] = {"index.html", "default.htm"};
    fx->route.static_index = names;
    fx->route.nstatic_index = 2;
    run(mkreq(fx, "GET", "/static/multi/"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "<p>default</p>\n");
    run(mkreq(fx, "GET", "/static/dir/"));
    assert_string_equal(cap.body, "<h1>dir</h1>\n");
    fx->route.nstatic_index = 0; /* an empty list: directories are never served */
    expect_status(fx, "GET", "/static/dir/", 404);
}

static void test_not_found_and_hidden(void **state)
{
    fixture_t *fx = *state;
    expect_status(fx, "GET", "/static/missing.txt", 404);
    expect_status(fx, "GET", "/static/dir/missing/deeper", 404);
    expect_status(fx, "GET", "/static/.env", 404);
    expect_status(fx, "GET", "/static/sub/.git/config", 404);
    expect_status(fx, "GET", "/static/sub/%2Egit/config", 404);
    expect_status(fx, "GET", "/static/fifo", 404); /* and does not block on the FIFO */
    expect_status(fx, "GET", "/static/empty", 301);
}

static void test_escapes(void **state)
{
    fixture_t *fx = *state;
    /* encoded slash and NUL never reach the file system */
    expect_status(fx, "GET", "/static/..%2Foutside.txt", 400);
    expect_status(fx, "GET", "/static/dir%2Findex.html", 400);
    expect_status(fx, "GET", "/static/hello.txt%00.png", 400);
    /* dot segments that would survive into a capture (the normaliser removes them first) */
    expect_status(fx, "GET", "/static/../outside.txt", 404);
    expect_status(fx, "GET", "/static/%2E%2E/outside.txt", 404);
    /* symlinks: leaving the root fails, staying inside works */
    expect_status(fx, "GET", "/static/link_out.txt", 404);
    expect_status(fx, "GET", "/static/link_abs.txt", 404);
    expect_status(fx, "GET", "/static/link_dir/outside.txt", 404);
    expect_status(fx, "GET", "/static/link_dir/root/hello.txt", 404);
    run(mkreq(fx, "GET", "/static/link_in.txt"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "hello world\n");
    /* percent-decoding of other characters */
    write_file(fx->root, "a b.txt", "space\n");
    run(mkreq(fx, "GET", "/static/a%20b.txt"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "space\n");
}

static void test_whole_path_route(void **state)
{
    fixture_t *fx = *state;
    fx->route.match.path = "/{*any}"; /* single-star catch-all */
    fg_request_t *r = mkreq(fx, "GET", "/hello.txt");
    r->captures[0].name = FG_STR_LIT("any");
    r->captures[0].value = FG_STR_LIT("hello.txt");
    r->ncaptures = 1;
    run(r);
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "hello world\n");

    fx->route.match.path = "/hello.txt"; /* no catch-all: the whole path maps */
    run(mkreq(fx, "GET", "/hello.txt"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "hello world\n");
    fx->route.match.path = NULL;
    run(mkreq(fx, "GET", "/dir/"));
    assert_string_equal(cap.body, "<h1>dir</h1>\n");
    run(mkreq(fx, "GET", "/"));
    assert_string_equal(cap.body, "<h1>root</h1>\n");
    expect_status(fx, "GET", "/.env", 404);
}

/* The response's ETag and Last-Modified for GET path. */
static void validators(fixture_t *fx, const char *path, char *etag, char *lm)
{
    run(mkreq(fx, "GET", path));
    assert_int_equal(cap.status, 200);
    strcpy(etag, hdr("ETag"));
    strcpy(lm, hdr("Last-Modified"));
}

static void test_conditional(void **state)
{
    fixture_t *fx = *state;
    char etag[128], lm[64], list[300];
    set_mtime(fx, "hello.txt", 1700000000);
    validators(fx, "/static/hello.txt", etag, lm);
    assert_string_equal(lm, "Tue, 14 Nov 2023 22:13:20 GMT");

    fg_request_t *r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-None-Match", etag);
    run(r);
    assert_int_equal(cap.status, 304);
    assert_int_equal(cap.file_calls, 0);
    assert_int_equal(cap.body_len, 0);
    assert_string_equal(hdr("ETag"), etag);
    assert_string_equal(hdr("Last-Modified"), lm);

    /* weak comparison: the weak form and a list on several lines match too */
    assert_int_equal(etag[0], '"'); /* strong: the file changed long ago */
    snprintf(list, sizeof(list), "\"x\", W/%s", etag);
    r = mkreq(fx, "HEAD", "/static/hello.txt");
    add_header(r, "If-None-Match", "\"nope\"");
    add_header(r, "if-none-match", list);
    run(r);
    assert_int_equal(cap.status, 304);

    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-None-Match", "*");
    run(r);
    assert_int_equal(cap.status, 304);

    /* If-None-Match present and not matching: If-Modified-Since is not evaluated */
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-None-Match", "W/\"0-0\"");
    add_header(r, "If-Modified-Since", lm);
    run(r);
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "hello world\n");

    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Modified-Since", lm);
    run(r);
    assert_int_equal(cap.status, 304);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Modified-Since", "Wed, 15 Nov 2023 00:00:00 GMT");
    run(r);
    assert_int_equal(cap.status, 304);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Modified-Since", "Tue, 14 Nov 2023 22:13:19 GMT");
    run(r);
    assert_int_equal(cap.status, 200);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Modified-Since", "yesterday");
    run(r);
    assert_int_equal(cap.status, 200);

    /* the ETag follows the file */
    write_file(fx->root, "hello.txt", "hello again\n!");
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-None-Match", etag);
    run(r);
    assert_int_equal(cap.status, 200);
    assert_string_not_equal(hdr("ETag"), etag);
}

static void test_preconditions_412(void **state)
{
    fixture_t *fx = *state;
    char etag[128], lm[64];
    set_mtime(fx, "hello.txt", 1700000000);
    validators(fx, "/static/hello.txt", etag, lm);
    fg_request_t *r = mkreq(fx, "GET", "/static/hello.txt");
    char weak[140];
    snprintf(weak, sizeof(weak), "W/%s", etag);
    add_header(r, "If-Match", weak); /* weak tags never match strongly */
    run(r);
    assert_int_equal(cap.status, 412);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Match", etag); /* our tag is strong: it does */
    run(r);
    assert_int_equal(cap.status, 200);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Match", "*");
    run(r);
    assert_int_equal(cap.status, 200);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Unmodified-Since", "Tue, 14 Nov 2023 22:13:19 GMT");
    run(r);
    assert_int_equal(cap.status, 412);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "If-Unmodified-Since", lm);
    run(r);
    assert_int_equal(cap.status, 200);
}

static void expect_range(fixture_t *fx, const char *method, const char *value, int status,
                         const char *body, const char *content_range)
{
    fg_request_t *r = mkreq(fx, method, "/static/hello.txt");
    add_header(r, "Range", value);
    run(r);
    if (cap.status != status)
        fail_msg("Range %s: status %d, want %d", value, cap.status, status);
    if (body && strcmp(cap.body, body) != 0)
        fail_msg("Range %s: body \"%s\", want \"%s\"", value, cap.body, body);
    const char *cr = hdr("Content-Range");
    if (content_range ? cr == NULL || strcmp(cr, content_range) != 0 : cr != NULL)
        fail_msg("Range %s: Content-Range %s", value, cr ? cr : "(none)");
}

static void test_ranges(void **state)
{
    fixture_t *fx = *state;
    expect_range(fx, "GET", "bytes=0-4", 206, "hello", "bytes 0-4/12");
    assert_int_equal(cap.file_off, 0);
    assert_int_equal(cap.content_length, 5);
    expect_range(fx, "GET", "bytes=6-", 206, "world\n", "bytes 6-11/12");
    assert_int_equal(cap.file_off, 6);
    expect_range(fx, "GET", "bytes=-6", 206, "world\n", "bytes 6-11/12");
    expect_range(fx, "GET", "bytes=11-11", 206, "\n", "bytes 11-11/12");
    expect_range(fx, "GET", "bytes=12-", 416, NULL, "bytes */12");
    assert_int_equal(cap.file_calls, 0);
    expect_range(fx, "GET", "bytes=0-1,4-5", 200, "hello world\n", NULL);
    expect_range(fx, "GET", "bytes=x", 200, "hello world\n", NULL);
    expect_range(fx, "HEAD", "bytes=0-4", 200, "", NULL); /* Range is for GET only */
    assert_int_equal(cap.content_length, 12);

    fg_request_t *r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "Range", "bytes=0-1");
    add_header(r, "Range", "bytes=3-4");
    run(r);
    assert_int_equal(cap.status, 200);

    /* an empty file is sent whole */
    r = mkreq(fx, "GET", "/static/empty.txt");
    add_header(r, "Range", "bytes=0-");
    run(r);
    assert_int_equal(cap.status, 200);
    assert_int_equal(cap.content_length, 0);
    assert_int_equal(cap.file_calls, 0);

    /* a 304 wins over Range */
    char etag[128], lm[64];
    validators(fx, "/static/hello.txt", etag, lm);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "Range", "bytes=0-1");
    add_header(r, "If-None-Match", etag);
    run(r);
    assert_int_equal(cap.status, 304);
}

static void test_if_range(void **state)
{
    fixture_t *fx = *state;
    char etag[128], lm[64];
    set_mtime(fx, "hello.txt", 1700000000);
    validators(fx, "/static/hello.txt", etag, lm);
    fg_request_t *r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "Range", "bytes=0-4");
    add_header(r, "If-Range", lm);
    run(r);
    assert_int_equal(cap.status, 206);
    assert_string_equal(cap.body, "hello");

    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "Range", "bytes=0-4");
    add_header(r, "If-Range", "Tue, 14 Nov 2023 22:13:21 GMT");
    run(r);
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "hello world\n");

    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "Range", "bytes=0-4");
    add_header(r, "If-Range", etag); /* strong and equal: the range holds */
    run(r);
    assert_int_equal(cap.status, 206);

    char weak[140];
    snprintf(weak, sizeof(weak), "W/%s", etag);
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "Range", "bytes=0-4");
    add_header(r, "If-Range", weak); /* weak: never a strong match (RFC 9110 13.1.5) */
    run(r);
    assert_int_equal(cap.status, 200);

    /* an unsatisfiable range under a failed If-Range is ignored, not 416 */
    r = mkreq(fx, "GET", "/static/hello.txt");
    add_header(r, "Range", "bytes=500-");
    add_header(r, "If-Range", "\"other\"");
    run(r);
    assert_int_equal(cap.status, 200);
}

static void test_try_files(void **state)
{
    fixture_t *fx = *state;
    char *spa[] = {"{path}", "{path}.html", "/app/index.html"};
    fx->route.static_try_files = spa;
    fx->route.nstatic_try_files = 3;
    run(mkreq(fx, "GET", "/static/hello.txt"));
    assert_string_equal(cap.body, "hello world\n");
    run(mkreq(fx, "GET", "/static/app/about"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "<h1>about</h1>\n");
    run(mkreq(fx, "GET", "/static/some/client/route"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "<h1>spa</h1>\n");
    assert_string_equal(hdr("Content-Type"), "text/html; charset=utf-8");
    /* a directory with its slash gets its index; without, it is no match */
    run(mkreq(fx, "GET", "/static/dir/"));
    assert_string_equal(cap.body, "<h1>dir</h1>\n");
    run(mkreq(fx, "GET", "/static/dir"));
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "<h1>spa</h1>\n");
    /* hidden files and escapes still fail over to the fallback, never to their content */
    run(mkreq(fx, "GET", "/static/.env"));
    assert_string_equal(cap.body, "<h1>spa</h1>\n");
    run(mkreq(fx, "GET", "/static/link_out.txt"));
    assert_string_equal(cap.body, "<h1>spa</h1>\n");
    expect_status(fx, "POST", "/static/x", 405);

    char *strict[] = {"{path}", "=404"};
    fx->route.static_try_files = strict;
    fx->route.nstatic_try_files = 2;
    expect_status(fx, "GET", "/static/nope", 404);
    expect_status(fx, "GET", "/static/hello.txt", 200);
    char *gone[] = {"{path}", "=410"};
    fx->route.static_try_files = gone;
    expect_status(fx, "GET", "/static/nope", 410);
    char *missing_fallback[] = {"{path}", "/nothing.html"};
    fx->route.static_try_files = missing_fallback;
    expect_status(fx, "GET", "/static/nope", 404);
}

static void test_root_cache(void **state)
{
    fixture_t *fx = *state;
    fg_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    fg_route_t routes[2];
    memset(routes, 0, sizeof(routes));
    routes[0].kind = FG_ROUTE_DIRECT;
    routes[1] = fx->route;
    cfg.routes = routes;
    cfg.nroutes = 2;
    assert_int_equal(fg_static_init(&cfg), 0);
    fg_request_t *r = mkreq(fx, "GET", "/static/hello.txt");
    r->route = &routes[1];
    /* the cached root fd keeps serving after the directory is renamed */
    char moved[128];
    snprintf(moved, sizeof(moved), "%s/moved", fx->dir);
    assert_int_equal(rename(fx->root, moved), 0);
    run(r);
    assert_int_equal(cap.status, 200);
    assert_string_equal(cap.body, "hello world\n");
    /* a route outside the cache opens its root per request */
    expect_status(fx, "GET", "/static/hello.txt", 500);
    fg_static_deinit();
    r = mkreq(fx, "GET", "/static/hello.txt");
    r->route = &routes[1];
    run(r);
    assert_int_equal(cap.status, 500);
    assert_int_equal(rename(moved, fx->root), 0);
    expect_status(fx, "GET", "/static/hello.txt", 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mime_types),
        cmocka_unit_test(test_range_parse),
        cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_etag_match),
        cmocka_unit_test_setup_teardown(test_get_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_and_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directories, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_and_hidden, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_path_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conditional, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preconditions_412, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_if_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_try_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_cache, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
