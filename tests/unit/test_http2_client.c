/* Unit tests for the HTTP/2 client (worker/upstream/http2_client.h): the request's mapping to
 * HTTP/2 fields (RFC 9113 8.2, 8.3.1), and whole exchanges in memory against an nghttp2 server
 * session: head, body, trailers both ways, interim responses, REFUSED_STREAM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "worker/upstream/http2_client.h"

static int nv_is(const nghttp2_nv *nv, const char *n, const char *v)
{
    return nv->namelen == strlen(n) && memcmp(nv->name, n, nv->namelen) == 0 &&
           nv->valuelen == strlen(v) && memcmp(nv->value, v, nv->valuelen) == 0;
}

static const nghttp2_nv *find(const nghttp2_nv *nv, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (nv[i].namelen == strlen(name) && memcmp(nv[i].name, name, nv[i].namelen) == 0)
            return &nv[i];
    return NULL;
}

static fg_http_header_t fields[] = {
    {FG_STR_LIT("Host"), FG_STR_LIT("api.example:8443")},
    {FG_STR_LIT("Content-Type"), FG_STR_LIT("application/grpc")},
    {FG_STR_LIT("TE"), FG_STR_LIT("trailers")},
    {FG_STR_LIT("Connection"), FG_STR_LIT("keep-alive")},
    {FG_STR_LIT("Keep-Alive"), FG_STR_LIT("timeout=5")},
    {FG_STR_LIT("Transfer-Encoding"), FG_STR_LIT("chunked")},
    {FG_STR_LIT("Upgrade"), FG_STR_LIT("h2c")},
    {FG_STR_LIT("Content-Length"), FG_STR_LIT("99")},
    {FG_STR_LIT("X-Custom-Name"), FG_STR_LIT("Value")},
};

static void request_fields(void **state)
{
    fg_outreq_t out = {FG_STR_LIT("POST"),
                       FG_STR_LIT("/pkg.Svc/Call"),
                       FG_STR_LIT("a=1"),
                       {fields, sizeof(fields) / sizeof(fields[0]), 0, NULL}};
    nghttp2_nv nv[32];
    char names[512], len[24];
    int n = fg_http2_client_request_nv(&out, FG_STR_LIT("https"), 12, nv, 32, names, sizeof(names),
                                       len);
    assert_true(n > 0);
    assert_true(nv_is(&nv[0], ":method", "POST"));
    assert_true(nv_is(&nv[1], ":scheme", "https"));
    assert_true(nv_is(&nv[2], ":authority", "api.example:8443"));
    assert_true(nv_is(&nv[3], ":path", "/pkg.Svc/Call?a=1"));
    assert_non_null(find(nv, n, "content-type"));
    assert_true(nv_is(find(nv, n, "te"), "te", "trailers"));
    assert_true(nv_is(find(nv, n, "x-custom-name"), "x-custom-name", "Value"));
    assert_true(nv_is(find(nv, n, "content-length"), "content-length", "12"));
    static const char *const dropped[] = {
        "host",    "connection", "keep-alive",   "transfer-encoding",
        "upgrade", "Host",       "X-Custom-Name"};
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        assert_null(find(nv, n, dropped[i]));
    int cl = 0;
    for (int i = 0; i < n; i++)
        cl += nv[i].namelen == 14 && memcmp(nv[i].name, "content-length", 14) == 0;
    assert_int_equal(cl, 1); /* re-stated once, the caller's dropped */
}

static void te_other_than_trailers_dropped(void **state)
{
    fg_http_header_t f[] = {{FG_STR_LIT("Host"), FG_STR_LIT("h")},
                            {FG_STR_LIT("TE"), FG_STR_LIT("gzip")}};
    fg_outreq_t out = {FG_STR_LIT("GET"), FG_STR_LIT("/"), FG_STR_NULL, {f, 2, 0, NULL}};
    nghttp2_nv nv[8];
    char names[64], len[24];
    int n =
        fg_http2_client_request_nv(&out, FG_STR_LIT("http"), -1, nv, 8, names, sizeof(names), len);
    assert_int_equal(n, 4);
    assert_null(find(nv, n, "te"));
    assert_null(find(nv, n, "content-length"));
}

/* RFC 7541 6.2.2: the request id, new with every request, is never indexed (it would evict
 * the repeating fields from the dynamic table); other fields may be. */
static void request_id_never_indexed(void **state)
{
    fg_http_header_t f[] = {{FG_STR_LIT("Host"), FG_STR_LIT("h")},
                            {FG_STR_LIT("X-Request-Id"), FG_STR_LIT("0123456789abcdef")},
                            {FG_STR_LIT("Accept"), FG_STR_LIT("*/*")}};
    fg_outreq_t out = {FG_STR_LIT("GET"), FG_STR_LIT("/"), FG_STR_NULL, {f, 3, 0, NULL}};
    nghttp2_nv nv[8];
    char names[64], len[24];
    int n =
        fg_http2_client_request_nv(&out, FG_STR_LIT("http"), -1, nv, 8, names, sizeof(names), len);
    assert_int_equal(n, 6);
    const nghttp2_nv *id = find(nv, n, "x-request-id");
    assert_non_null(id);
    assert_int_equal(id->flags, NGHTTP2_NV_FLAG_NO_INDEX);
    assert_int_equal(find(nv, n, "accept")->flags, NGHTTP2_NV_FLAG_NONE);
}

static void too_small_buffers_fail(void **state)
{
    fg_outreq_t out = {FG_STR_LIT("GET"),
                       FG_STR_LIT("/"),
                       FG_STR_NULL,
                       {fields, sizeof(fields) / sizeof(fields[0]), 0, NULL}};
    nghttp2_nv nv[32];
    char names[4], len[24];
    assert_int_equal(
        fg_http2_client_request_nv(&out, FG_STR_LIT("http"), -1, nv, 32, names, sizeof(names), len),
        -1);
    assert_int_equal(
        fg_http2_client_request_nv(&out, FG_STR_LIT("http"), -1, nv, 3, names, sizeof(names), len),
        -1);
}

/* ---- exchanges against a server session ---- */

typedef struct {
    nghttp2_session *srv;
    int32_t sid;
    char req_body[256];
    size_t req_len;
    char req_trailer[64];
    int req_ended;
    /* what the handler saw */
    int interim, status;
    char body[256];
    size_t body_len;
    char trailer[64];
    int ended, failed, fail_kind;
    fg_exchange_t *x;
} peer_t;

static int srv_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
                      const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
    peer_t *p = ud;
    p->sid = f->hd.stream_id;
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS && nl == 5 && memcmp(n, "x-sum", 5) == 0)
        snprintf(p->req_trailer, sizeof(p->req_trailer), "%.*s", (int)vl, v);
    return 0;
}

static int srv_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t len,
                    void *ud)
{
    peer_t *p = ud;
    memcpy(p->req_body + p->req_len, d, len);
    p->req_len += len;
    return 0;
}

static int srv_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    peer_t *p = ud;
    if (f->hd.stream_id && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        p->req_ended = 1;
    return 0;
}

static nghttp2_session *server_new(peer_t *p)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_on_header_callback(cbs, srv_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, srv_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, srv_frame);
    assert_int_equal(nghttp2_session_server_new(&s, cbs, p), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    return s;
}

static void on_send_ready(void *arg) {}

static int on_interim(void *arg, int status, fg_http_header_t *h, size_t n)
{
    ((peer_t *)arg)->interim = status;
    return 0;
}

static int on_head(void *arg, const fg_exchange_head_t *h)
{
    ((peer_t *)arg)->status = h->status;
    return 0;
}

static int on_body(void *arg, struct evbuffer *data)
{
    peer_t *p = arg;
    size_t n = evbuffer_get_length(data);
    evbuffer_remove(data, p->body + p->body_len, n);
    p->body_len += n;
    return 0;
}

static int on_trailers(void *arg, fg_http_header_t *t, size_t n)
{
    peer_t *p = arg;
    for (size_t i = 0; i < n; i++)
        if (fg_str_eq(t[i].name, FG_STR_LIT("grpc-status")))
            snprintf(p->trailer, sizeof(p->trailer), "%.*s", (int)t[i].value.len, t[i].value.base);
    return 0;
}

static void on_end(void *arg)
{
    peer_t *p = arg;
    p->ended = 1;
    fg_exchange_release(p->x);
}

static void on_error(void *arg, const fg_exchange_fail_t *f)
{
    peer_t *p = arg;
    p->failed = 1;
    p->fail_kind = f->kind;
    fg_exchange_close(p->x);
}

static const fg_exchange_cbs_t cbs = {on_send_ready, on_interim, on_head, on_body,
                                      on_trailers,   on_end,     on_error};

/* Move bytes both ways until neither side has more to say. */
static void pump(fg_h2test_t *t, peer_t *p)
{
    struct evbuffer *b = evbuffer_new();
    for (int round = 0; round < 16; round++) {
        fg_http2_client_test_output(t, b);
        size_t n = evbuffer_get_length(b);
        if (n) {
            unsigned char *d = evbuffer_pullup(b, -1);
            assert_int_equal(nghttp2_session_mem_recv(p->srv, d, n), (ssize_t)n);
            evbuffer_drain(b, n);
        }
        const uint8_t *out;
        ssize_t m, total = 0;
        while ((m = nghttp2_session_mem_send(p->srv, &out)) > 0) {
            fg_http2_client_test_feed(t, out, (size_t)m);
            total += m;
        }
        if (n == 0 && total == 0)
            break;
    }
    evbuffer_free(b);
}

static ssize_t srv_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    memcpy(buf, "resp", 4);
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv tr[] = {{(uint8_t *)"grpc-status", (uint8_t *)"7", 11, 1, 0}};
    nghttp2_submit_trailer(s, id, tr, 1);
    return 4;
}

static void exchange_with_trailers_both_ways(void **state)
{
    peer_t p = {0};
    p.srv = server_new(&p);
    fg_http_header_t f[] = {{FG_STR_LIT("Host"), FG_STR_LIT("h")}};
    fg_outreq_t out = {FG_STR_LIT("POST"), FG_STR_LIT("/svc"), FG_STR_NULL, {f, 1, 0, NULL}};
    fg_exchange_req_t rq = {.out = &out, .content_length = -1, .has_body = 1};
    fg_h2test_t *t = fg_http2_client_test_new(&rq, &cbs, &p, &p.x);
    assert_non_null(t);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, "hello", 5);
    assert_int_equal(fg_exchange_send_body(p.x, body, 0), 0);
    fg_http_header_t tr[] = {{FG_STR_LIT("X-Sum"), FG_STR_LIT("42")}};
    assert_int_equal(fg_exchange_send_trailers(p.x, tr, 1), 0);
    pump(t, &p);
    assert_int_equal(p.req_len, 5);
    assert_memory_equal(p.req_body, "hello", 5);
    assert_string_equal(p.req_trailer, "42");
    assert_true(p.req_ended);
    /* the answer: 103, then 200 with a body and trailers */
    nghttp2_nv h103[] = {{(uint8_t *)":status", (uint8_t *)"103", 7, 3, 0}};
    assert_int_equal(nghttp2_submit_headers(p.srv, 0, p.sid, NULL, h103, 1, NULL), 0);
    nghttp2_nv h[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0}};
    nghttp2_data_provider dp = {.read_callback = srv_read};
    assert_int_equal(nghttp2_submit_response(p.srv, p.sid, h, 1, &dp), 0);
    pump(t, &p);
    assert_int_equal(p.interim, 103);
    assert_int_equal(p.status, 200);
    assert_int_equal(p.body_len, 4);
    assert_memory_equal(p.body, "resp", 4);
    assert_string_equal(p.trailer, "7");
    assert_true(p.ended);
    assert_false(p.failed);
    fg_http2_client_test_free(t);
    nghttp2_session_del(p.srv);
    evbuffer_free(body);
}

static void refused_stream_is_a_retryable_failure(void **state)
{
    peer_t p = {0};
    p.srv = server_new(&p);
    fg_http_header_t f[] = {{FG_STR_LIT("Host"), FG_STR_LIT("h")}};
    fg_outreq_t out = {FG_STR_LIT("GET"), FG_STR_LIT("/"), FG_STR_NULL, {f, 1, 0, NULL}};
    fg_exchange_req_t rq = {.out = &out, .content_length = -1};
    fg_h2test_t *t = fg_http2_client_test_new(&rq, &cbs, &p, &p.x);
    assert_non_null(t);
    pump(t, &p);
    assert_int_equal(nghttp2_submit_rst_stream(p.srv, 0, p.sid, NGHTTP2_REFUSED_STREAM), 0);
    pump(t, &p);
    assert_true(p.failed);
    assert_int_equal(p.fail_kind, FG_XERR_EOF); /* the proxy's retry on a fresh connection */
    fg_http2_client_test_free(t);
    nghttp2_session_del(p.srv);
}

static void goaway_above_the_stream_is_retryable(void **state)
{
    /* RFC 9113 6.8: streams above the GOAWAY's last stream id were not processed. */
    peer_t p = {0};
    p.srv = server_new(&p);
    fg_http_header_t f[] = {{FG_STR_LIT("Host"), FG_STR_LIT("h")}};
    fg_outreq_t out = {FG_STR_LIT("POST"), FG_STR_LIT("/"), FG_STR_NULL, {f, 1, 0, NULL}};
    fg_exchange_req_t rq = {.out = &out, .content_length = -1};
    fg_h2test_t *t = fg_http2_client_test_new(&rq, &cbs, &p, &p.x);
    assert_non_null(t);
    pump(t, &p);
    assert_int_equal(nghttp2_submit_goaway(p.srv, 0, 0, NGHTTP2_NO_ERROR, NULL, 0), 0);
    pump(t, &p);
    assert_true(p.failed);
    assert_int_equal(p.fail_kind, FG_XERR_EOF);
    fg_http2_client_test_free(t);
    nghttp2_session_del(p.srv);
}

static void garbage_fails_the_exchange(void **state)
{
    peer_t p = {0};
    fg_http_header_t f[] = {{FG_STR_LIT("Host"), FG_STR_LIT("h")}};
    fg_outreq_t out = {FG_STR_LIT("GET"), FG_STR_LIT("/"), FG_STR_NULL, {f, 1, 0, NULL}};
    fg_exchange_req_t rq = {.out = &out, .content_length = -1};
    fg_h2test_t *t = fg_http2_client_test_new(&rq, &cbs, &p, &p.x);
    assert_non_null(t);
    static const uint8_t junk[] = "HTTP/1.1 200 OK\r\n\r\n";
    fg_http2_client_test_feed(t, junk, sizeof(junk) - 1);
    assert_true(p.failed);
    assert_int_equal(p.fail_kind, FG_XERR_INVALID);
    fg_http2_client_test_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_fields),
        cmocka_unit_test(te_other_than_trailers_dropped),
        cmocka_unit_test(request_id_never_indexed),
        cmocka_unit_test(too_small_buffers_fail),
        cmocka_unit_test(exchange_with_trailers_both_ways),
        cmocka_unit_test(refused_stream_is_a_retryable_failure),
        cmocka_unit_test(goaway_above_the_stream_is_retryable),
        cmocka_unit_test(garbage_fails_the_exchange),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
