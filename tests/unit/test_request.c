/* worker/http/request.c, the gateway's own answers: the one JSON error shape, errorPages (a file or
 * a redirect, exact status before class, server before top level), the Date and Server fields
 * a front end adds (fg_request_stamp), and the serverHeader / errorPages configuration keys.
 * Driven through mock request ops that record what a front end would send. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "common/config.h"
#include "worker/http/request.h"
#include "fake_request.h"

typedef struct {
    int status;
    fg_headers_t hdrs; /* copies of the slices (they live in the request pool) */
    int64_t length;
    char body[4096];
    size_t body_len;
    int finished;
} sent_t;

static sent_t sent;

static int m_send_head(fg_request_t *req, int status, const fg_headers_t *hdrs, int64_t len)
{
    sent.status = status;
    sent.hdrs = *hdrs;
    sent.length = len;
    return 0;
}

static int m_send_body(fg_request_t *req, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    assert_true(sent.body_len + n < sizeof(sent.body));
    evbuffer_remove(buf, sent.body + sent.body_len, n);
    sent.body_len += n;
    return 0;
}

static void m_finish(fg_request_t *req)
{
    sent.finished = 1;
}

static const fg_req_ops_t ops = {
    .send_head = m_send_head, .send_body = m_send_body, .finish = m_finish};

static const char *field(const char *name)
{
    static char v[256];
    for (size_t i = 0; i < sent.hdrs.n; i++)
        if (fg_str_ieq_c(sent.hdrs.v[i].name, name)) {
            snprintf(v, sizeof(v), "%.*s", (int)sent.hdrs.v[i].value.len,
                     sent.hdrs.v[i].value.base);
            return v;
        }
    return NULL;
}

static fg_pool_t *pool;

static int setup(void **state)
{
    memset(&sent, 0, sizeof(sent));
    pool = fg_pool_new(4096);
    return pool ? 0 : -1;
}

static int teardown(void **state)
{
    fg_pool_free(pool);
    return 0;
}

static fg_request_t *make(const char *method, const char *target, ...)
{
    va_list ap;
    va_start(ap, target);
    fg_request_t *req = fake_request_va(pool, method, target, "gw.test", ap);
    va_end(ap);
    return req;
}

static fg_request_t *request(const char *method, const char *target)
{
    fg_request_t *req = make(method, target, NULL);
    req->ops = &ops;
    strcpy(req->request_id, "abc123");
    return req;
}

static void test_error_shape(void **state)
{
    fg_request_t *req = request("GET", "/a/b");
    fg_request_error(req, 404, "not_found", "no \"route\"\n here");
    assert_int_equal(sent.status, 404);
    assert_true(sent.finished);
    assert_string_equal(field("Content-Type"), "application/json");
    assert_string_equal(field("X-Request-Id"), "abc123");
    assert_int_equal(sent.length, (int64_t)sent.body_len);
    json_error_t e;
    json_t *doc = json_loadb(sent.body, sent.body_len, 0, &e);
    assert_non_null(doc);
    assert_int_equal(json_object_size(doc), 5);
    assert_int_equal(json_integer_value(json_object_get(doc, "status")), 404);
    assert_string_equal(json_string_value(json_object_get(doc, "error")), "not_found");
    assert_string_equal(json_string_value(json_object_get(doc, "message")), "no \"route\"\n here");
    assert_string_equal(json_string_value(json_object_get(doc, "requestId")), "abc123");
    assert_string_equal(json_string_value(json_object_get(doc, "path")), "/a/b");
    assert_string_equal(req->error, "not_found");
    json_decref(doc);
}

static void test_error_path_bytes_percent_encoded(void **state)
{
    fg_request_t *req = request("GET", "/x");
    req->path = FG_STR_LIT("/caf\xc3\xa9\xff\"");
    fg_request_error(req, 404, "not_found", "m");
    json_t *doc = json_loadb(sent.body, sent.body_len, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "path")), "/caf%C3%A9%FF\"");
    json_decref(doc);
}

static void test_error_path_bounded(void **state)
{
    fg_request_t *req = request("GET", "/x");
    char *long_path = fg_pool_alloc(pool, 3000);
    memset(long_path, 'a', 3000);
    long_path[0] = '/';
    req->path = (fg_str_t){long_path, 3000};
    fg_request_error(req, 414, "uri_too_long", "m");
    json_t *doc = json_loadb(sent.body, sent.body_len, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(strlen(json_string_value(json_object_get(doc, "path"))), 2048);
    json_decref(doc);
}

static void test_error_extra_fields(void **state)
{
    fg_request_t *req = request("POST", "/f");
    fg_headers_t extra;
    fg_headers_init(&extra, pool, 1);
    fg_headers_add(&extra, FG_STR_LIT("Allow"), FG_STR_LIT("GET, HEAD"));
    fg_request_error_with(req, 405, "method_not_allowed", "no", &extra);
    assert_int_equal(sent.status, 405);
    assert_string_equal(field("Allow"), "GET, HEAD");
    assert_string_equal(field("Content-Type"), "application/json");
}

static fg_error_page_t page(int status, const char *file, const char *body, const char *redirect)
{
    return (fg_error_page_t){.status = status,
                             .file = (char *)file,
                             .body = (char *)body,
                             .body_len = body ? strlen(body) : 0,
                             .redirect = (char *)redirect};
}

static void test_error_pages_precedence(void **state)
{
    fg_error_page_t top[] = {page(404, "/p/top404.html", "top 404", NULL),
                             page(5, "/p/top5.txt", "top 5xx", NULL)};
    fg_error_page_t own[] = {page(4, "/p/own4.json", "{\"own\":4}", NULL),
                             page(503, "/p/x", NULL, "https://example.test/later")};
    fg_config_t cfg = {.responses = {.error_pages = top, .nerror_pages = 2}};
    fg_server_t srv = {.responses = {.error_pages = own, .nerror_pages = 2}};
    /* exact before class within a level; the server's level before the top level */
    assert_ptr_equal(fg_config_error_page(&cfg, &srv, 404), &own[0]);
    assert_ptr_equal(fg_config_error_page(&cfg, &srv, 503), &own[1]);
    assert_ptr_equal(fg_config_error_page(&cfg, &srv, 502), &top[1]);
    assert_ptr_equal(fg_config_error_page(&cfg, NULL, 404), &top[0]);
    assert_null(fg_config_error_page(&cfg, NULL, 400));
    assert_null(fg_config_error_page(NULL, NULL, 500));

    fg_request_t *req = request("GET", "/z");
    req->server = &srv;
    fg_request_error(req, 429, "rate_limited", "slow down");
    assert_int_equal(sent.status, 429);
    assert_string_equal(field("Content-Type"), "application/json"); /* by the .json extension */
    assert_int_equal(sent.body_len, strlen("{\"own\":4}"));
    assert_memory_equal(sent.body, "{\"own\":4}", sent.body_len);
    assert_string_equal(field("X-Request-Id"), "abc123");

    memset(&sent, 0, sizeof(sent));
    req = request("GET", "/z");
    req->server = &srv;
    fg_request_error(req, 503, "service_unavailable", "busy");
    assert_int_equal(sent.status, 302);
    assert_string_equal(field("Location"), "https://example.test/later");
    assert_int_equal(sent.body_len, 0);
    assert_null(field("Content-Type"));
}

static void test_stamp(void **state)
{
    fg_server_t srv = {.responses = {.server_header = "acme/1"}};
    fg_request_t *req = request("GET", "/");
    req->server = &srv;
    fg_headers_t h;
    fg_headers_init(&h, pool, 2);
    fg_str_t date, server;
    fg_request_stamp(req, &h, &date, &server);
    assert_int_equal(date.len, 29);
    assert_memory_equal(date.base + 25, " GMT", 4);
    assert_true(fg_str_eq(server, FG_STR_LIT("acme/1")));
    /* a Date or Server already present stands */
    fg_headers_add(&h, FG_STR_LIT("date"), FG_STR_LIT("Sun, 06 Nov 1994 08:49:37 GMT"));
    fg_headers_add(&h, FG_STR_LIT("SERVER"), FG_STR_LIT("origin"));
    fg_request_stamp(req, &h, &date, &server);
    assert_int_equal(date.len, 0);
    assert_int_equal(server.len, 0);
    /* a relayed response gets a Date when it has none, never the gateway's Server */
    fg_headers_init(&h, pool, 1);
    req->relayed = 1;
    fg_request_stamp(req, &h, &date, &server);
    assert_int_equal(date.len, 29);
    assert_int_equal(server.len, 0);
    /* serverHeader false */
    req->relayed = 0;
    srv.responses.server_header = NULL;
    fg_request_stamp(req, &h, &date, &server);
    assert_int_equal(server.len, 0);
}

static void test_error_kind(void **state)
{
    assert_string_equal(fg_request_error_kind(404), "not_found");
    assert_string_equal(fg_request_error_kind(429), "rate_limited");
    assert_string_equal(fg_request_error_kind(418), "client_error");
    assert_string_equal(fg_request_error_kind(599), "server_error");
}

/* ---- configuration keys ---- */

static fg_config_t *load(const char *fmt, const char *arg, char *err, size_t errlen)
{
    char text[2048];
    snprintf(text, sizeof(text), fmt, arg, arg);
    return fg_config_load_string("/tmp/t.json", text, err, errlen);
}

static void test_config_keys(void **state)
{
    char file[] = "/tmp/fg-test-page-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "<p>gone</p>", 11), 11);
    close(fd);
    char err[512];
    fg_config_t *cfg =
        load("{\"serverHeader\": false, \"errorPages\": {\"404\": \"%s\"},"
             "\"servers\": [{\"id\": \"a\", \"listen\": \"127.0.0.1:1\"},"
             "{\"id\": \"b\", \"listen\": \"127.0.0.1:2\", \"serverHeader\": \"x/1\","
             "\"exposeAccessListIds\": true,"
             "\"errorPages\": {\"5xx\": {\"file\": \"%s\", \"contentType\": \"t/x\"}}}]}",
             file, err, sizeof(err));
    assert_non_null(cfg);
    assert_null(cfg->servers[0].responses.server_header); /* inherited false */
    assert_string_equal(cfg->servers[1].responses.server_header, "x/1");
    assert_int_equal(cfg->servers[0].responses.expose_acl_ids, 0);
    assert_int_equal(cfg->servers[1].responses.expose_acl_ids, 1);
    const fg_error_page_t *p = fg_config_error_page(cfg, &cfg->servers[1], 404);
    assert_non_null(p);
    assert_int_equal(p->body_len, 11);
    assert_memory_equal(p->body, "<p>gone</p>", 11);
    p = fg_config_error_page(cfg, &cfg->servers[1], 502);
    assert_non_null(p);
    assert_string_equal(p->content_type, "t/x");
    assert_null(fg_config_error_page(cfg, &cfg->servers[0], 502));
    fg_config_free(cfg);

    cfg =
        load("{\"servers\": [{\"id\": \"a\", \"listen\": \"127.0.0.1:1\"}]}", "", err, sizeof(err));
    assert_non_null(cfg);
    assert_string_equal(cfg->servers[0].responses.server_header, "fastgateway");
    fg_config_free(cfg);

    cfg = load("{\"servers\": [{\"id\": \"a\", \"listen\": \"127.0.0.1:1\","
               "\"errorPages\": {\"4x4\": \"%s\"}}]}",
               file, err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "servers[0].errorPages: \"4x4\" is not a status"));
    unlink(file);
    cfg = load("{\"errorPages\": {\"500\": \"%s\"}, \"servers\": []}", file, err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "errorPages.500: cannot open"));
    assert_non_null(strstr(err, "No such file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_error_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_path_bytes_percent_encoded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_path_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_extra_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_pages_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stamp, setup, teardown),
        cmocka_unit_test(test_error_kind),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
