/* Unit tests for worker/upstream/http1_client.c: the HTTP/1.1 client behind fg_exchange, driven
 * over a socketpair whose other end is a scripted destination (its answer written up front,
 * optionally followed by a close), on a real event loop. They check the request bytes it
 * writes, the framing it decides (RFC 9112 6.3), what reaches the handler, the failure kinds
 * and the reuse decision (RFC 9112 9.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "worker/upstream/http1_client.h"

typedef struct {
    struct event_base *base;
    fg_exchange_t *x;
    int interim[4];
    int ninterim;
    int heads;
    int status;
    int64_t clen;
    int bodiless;
    char names[512]; /* the delivered head's field names, "a,b," */
    char body[4096];
    size_t blen;
    int ended;
    int reusable;
    int failed;
    fg_exchange_error_t kind;
    fg_exchange_phase_t phase;
    int take_over; /* take the connection over on a 101 */
    char rest[64]; /* bytes after the 101's head */
    size_t restlen;
    char req[4096]; /* what the destination received */
    size_t reqlen;
} rec_t;

static void cb_ready(void *arg)
{
    (void)arg;
}

static int cb_interim(void *arg, int status, fg_http_header_t *h, size_t n)
{
    rec_t *r = arg;
    (void)h;
    (void)n;
    if (r->ninterim < 4)
        r->interim[r->ninterim++] = status;
    return 0;
}

static int cb_head(void *arg, const fg_exchange_head_t *h)
{
    rec_t *r = arg;
    r->heads++;
    r->status = h->status;
    r->clen = h->content_length;
    r->bodiless = h->bodiless;
    for (size_t i = 0; i < h->num_headers; i++) {
        strncat(r->names, h->headers[i].name.base,
                h->headers[i].name.len < 64 ? h->headers[i].name.len : 64);
        strcat(r->names, ",");
    }
    if (h->status == 101 && r->take_over) {
        struct evbuffer *rest = evbuffer_new();
        fg_conn_t *c = fg_exchange_take_over(r->x, rest);
        r->restlen = evbuffer_remove(rest, r->rest, sizeof(r->rest));
        evbuffer_free(rest);
        fg_conn_free(c);
        event_base_loopbreak(r->base);
        return -1;
    }
    return 0;
}

static int cb_body(void *arg, struct evbuffer *data)
{
    rec_t *r = arg;
    size_t n = evbuffer_get_length(data);
    if (n > sizeof(r->body) - r->blen)
        n = sizeof(r->body) - r->blen;
    evbuffer_remove(data, r->body + r->blen, n);
    r->blen += n;
    evbuffer_drain(data, evbuffer_get_length(data));
    return 0;
}

static void cb_end(void *arg)
{
    rec_t *r = arg;
    const fg_exchange_info_t *in = fg_exchange_info(r->x);
    r->ended = 1;
    r->reusable = in->reusable && in->req_sent;
    fg_exchange_release(r->x);
    event_base_loopbreak(r->base);
}

static void cb_error(void *arg, const fg_exchange_fail_t *f)
{
    rec_t *r = arg;
    r->failed = 1;
    r->kind = f->kind;
    r->phase = f->phase;
    fg_exchange_close(r->x);
    event_base_loopbreak(r->base);
}

static const fg_exchange_cbs_t cbs = {
    .on_send_ready = cb_ready,
    .on_interim = cb_interim,
    .on_head = cb_head,
    .on_body = cb_body,
    .on_end = cb_end,
    .on_error = cb_error,
};

typedef struct {
    const char *method;
    const char *answer;
    int close_after;               /* the destination closes after its answer */
    const char *body;              /* request body, NULL for none */
    int64_t content_length;        /* of the request body; -1: chunked */
    const fg_http_header_t *extra; /* request fields besides Host */
    size_t nextra;
    int upgrade; /* the request asks to switch protocols */
} script_t;

static void run(const script_t *s, rec_t *r)
{
    memset(r, 0, sizeof(*r));
    r->take_over = s->upgrade;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    r->base = event_base_new();
    assert_non_null(r->base);
    fg_conn_t *c = fg_conn_new(r->base, sv[0], NULL, NULL);
    assert_non_null(c);
    fg_http_header_t fields[8] = {{FG_STR_LIT("Host"), FG_STR_LIT("dest")}};
    for (size_t i = 0; i < s->nextra; i++)
        fields[i + 1] = s->extra[i];
    fg_outreq_t out = {
        fg_str(s->method), FG_STR_LIT("/p"), FG_STR_LIT(""), {fields, 1 + s->nextra, 8, NULL}};
    fg_exchange_req_t rq = {
        &out,       s->body ? s->content_length : -1, NULL, s->body != NULL, s->upgrade != 0,
        FG_STR_NULL};
    r->x = fg_http1_client_attach(c, &rq, &cbs, r, 2000);
    assert_non_null(r->x);
    if (s->body) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, s->body, strlen(s->body));
        assert_int_equal(fg_exchange_send_body(r->x, b, 0), 0);
        assert_int_equal(evbuffer_get_length(b), 0);
        evbuffer_free(b);
    }
    assert_int_equal(fg_exchange_send_body(r->x, NULL, 1), 0);
    size_t alen = strlen(s->answer);
    assert_int_equal(write(sv[1], s->answer, alen), (ssize_t)alen);
    if (s->close_after)
        shutdown(sv[1], SHUT_WR);
    struct timeval limit = {3, 0};
    event_base_loopexit(r->base, &limit);
    event_base_dispatch(r->base);
    if (!r->ended && !r->failed && !r->restlen)
        fg_exchange_close(r->x);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    ssize_t n = read(sv[1], r->req, sizeof(r->req) - 1);
    r->reqlen = n > 0 ? (size_t)n : 0;
    r->req[r->reqlen] = '\0';
    close(sv[1]);
    event_base_free(r->base);
}

static void test_content_length(void **state)
{
    rec_t r;
    script_t s = {.method = "GET",
                  .answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
                  .close_after = 0};
    run(&s, &r);
    assert_string_equal(r.req, "GET /p HTTP/1.1\r\nHost: dest\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.clen, 5);
    assert_string_equal(r.names, "X-A,"); /* Content-Length is the framing, stated apart */
    assert_int_equal(r.blen, 5);
    assert_memory_equal(r.body, "hello", 5);
    assert_true(r.ended);
    assert_true(r.reusable);
}

static void test_chunked_with_trailers(void **state)
{
    rec_t r;
    script_t s = {
        .method = "GET",
        .answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world"
                  "\r\n0\r\nX-Trailer: 1\r\n\r\n",
        .close_after = 0};
    run(&s, &r);
    assert_int_equal(r.clen, -1);
    assert_string_equal(r.names, ""); /* Transfer-Encoding is hop-by-hop */
    assert_int_equal(r.blen, 11);
    assert_memory_equal(r.body, "hello world", 11);
    assert_true(r.ended);
    assert_true(r.reusable);
}

static void test_close_delimited(void **state)
{
    rec_t r;
    script_t s = {.method = "GET", .answer = "HTTP/1.1 200 OK\r\n\r\nabc", .close_after = 1};
    run(&s, &r);
    assert_int_equal(r.clen, -1);
    assert_int_equal(r.blen, 3);
    assert_memory_equal(r.body, "abc", 3);
    assert_true(r.ended);
    assert_false(r.reusable);
}

static void test_head_has_no_body(void **state)
{
    rec_t r;
    script_t s = {.method = "HEAD",
                  .answer = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                  .close_after = 0};
    run(&s, &r);
    assert_true(r.bodiless);
    assert_int_equal(r.clen, 100); /* the length a GET would have had */
    assert_int_equal(r.blen, 0);
    assert_true(r.ended);
    assert_true(r.reusable);
}

static void test_204_and_304_have_no_body(void **state)
{
    rec_t r;
    script_t s = {.method = "GET", .answer = "HTTP/1.1 204 No Content\r\n\r\n", .close_after = 0};
    run(&s, &r);
    assert_int_equal(r.status, 204);
    assert_true(r.bodiless);
    assert_true(r.ended);
    assert_true(r.reusable);
    script_t s2 = {.method = "GET",
                   .answer = "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                   .close_after = 0};
    run(&s2, &r);
    assert_int_equal(r.status, 304);
    assert_true(r.bodiless);
    assert_int_equal(r.blen, 0);
    assert_true(r.ended);
    assert_true(r.reusable);
}

static void test_interim_then_final(void **state)
{
    rec_t r;
    script_t s = {
        .method = "GET",
        .answer = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        .close_after = 0};
    run(&s, &r);
    assert_int_equal(r.ninterim, 2);
    assert_int_equal(r.interim[0], 103);
    assert_int_equal(r.interim[1], 100);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "ok", 2);
    assert_true(r.ended);
}

static void test_unexpected_switch_is_invalid(void **state)
{
    rec_t r;
    script_t s = {.method = "GET",
                  .answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                  .close_after = 0};
    run(&s, &r);
    assert_true(r.failed);
    assert_int_equal(r.kind, FG_XERR_INVALID);
    assert_int_equal(r.heads, 0);
}

static void test_malformed(void **state)
{
    rec_t r;
    script_t s = {
        .method = "GET", .answer = "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", .close_after = 0};
    run(&s, &r);
    assert_true(r.failed);
    assert_int_equal(r.kind, FG_XERR_INVALID);
    assert_int_equal(r.phase, FG_XPHASE_WAIT_HEAD);
    script_t s2 = {.method = "GET",
                   .answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                   .close_after = 0};
    run(&s2, &r);
    assert_true(r.failed);
    assert_int_equal(r.kind, FG_XERR_INVALID);
    assert_int_equal(r.phase, FG_XPHASE_BODY);
    script_t s3 = {.method = "GET",
                   .answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                   .close_after = 0};
    run(&s3, &r);
    assert_true(r.failed);
    assert_int_equal(r.kind, FG_XERR_INVALID);
}

static void test_eof_before_head_and_mid_body(void **state)
{
    rec_t r;
    script_t s = {.method = "GET", .answer = "HTTP/1.1 200 O", .close_after = 1};
    run(&s, &r);
    assert_true(r.failed);
    assert_int_equal(r.kind, FG_XERR_EOF);
    script_t s2 = {.method = "GET",
                   .answer = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                   .close_after = 1};
    run(&s2, &r);
    assert_true(r.failed);
    assert_int_equal(r.kind, FG_XERR_EOF_BODY);
    assert_int_equal(r.blen, 3);
    assert_false(r.ended);
}

static void test_keep_alive_decisions(void **state)
{
    rec_t r;
    script_t s = {.method = "GET",
                  .answer = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                  .close_after = 0};
    run(&s, &r);
    assert_true(r.ended);
    assert_false(r.reusable);
    assert_string_equal(r.names, "");
    script_t s2 = {.method = "GET",
                   .answer = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
                   .close_after = 0};
    run(&s2, &r);
    assert_true(r.ended);
    assert_false(r.reusable); /* HTTP/1.0 persists only when it says so */
    script_t s3 = {.method = "GET",
                   .answer =
                       "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
                   .close_after = 0};
    run(&s3, &r);
    assert_true(r.reusable);
    script_t s4 = {.method = "GET",
                   .answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
                   .close_after = 0};
    run(&s4, &r);
    assert_true(r.ended);
    assert_false(r.reusable); /* bytes beyond the declared length */
    assert_int_equal(r.blen, 2);
}

static void test_connection_listed_fields_dropped(void **state)
{
    rec_t r;
    script_t s = {.method = "GET",
                  .answer = "HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-End: 2\r\n"
                            "Content-Length: 0\r\n\r\n",
                  .close_after = 0};
    run(&s, &r);
    assert_string_equal(r.names, "X-End,");
    assert_true(r.ended);
}

static void test_chunked_upload_framing(void **state)
{
    rec_t r;
    script_t s = {.method = "POST",
                  .answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                  .close_after = 0,
                  .body = "hello",
                  .content_length = -1};
    run(&s, &r);
    assert_string_equal(r.req,
                        "POST /p HTTP/1.1\r\nHost: dest\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n0\r\n\r\n");
    assert_true(r.ended);
}

static void test_length_restated_and_expect_dropped(void **state)
{
    rec_t r;
    const fg_http_header_t extra[] = {{FG_STR_LIT("Content-Length"), FG_STR_LIT("999")},
                                      {FG_STR_LIT("Expect"), FG_STR_LIT("100-continue")},
                                      {FG_STR_LIT("X-B"), FG_STR_LIT("b")}};
    script_t s = {.method = "PUT",
                  .answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                  .close_after = 0,
                  .body = "abc",
                  .content_length = 3,
                  .extra = extra,
                  .nextra = 3};
    run(&s, &r);
    assert_string_equal(r.req,
                        "PUT /p HTTP/1.1\r\nHost: dest\r\nX-B: b\r\nContent-Length: 3\r\n\r\nabc");
}

static void test_upgrade_takes_the_connection_over(void **state)
{
    rec_t r;
    script_t s = {.method = "GET",
                  .answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: upgrade\r\n\r\nFRAME",
                  .upgrade = 1};
    run(&s, &r);
    assert_false(r.failed);
    assert_int_equal(r.restlen, 5);
    assert_memory_equal(r.rest, "FRAME", 5);
    /* the switch's Upgrade is the handler's to relay; Connection stays hop-by-hop */
    assert_string_equal(r.names, "Upgrade,");
}

/* The client keeps released exchange objects for the next exchange: one that follows a HEAD,
 * a chunked answer with trailers and a protocol switch frames its own answer, with nothing
 * carried over from the object's previous use. */
static void test_reused_exchange_starts_clean(void **state)
{
    rec_t r;
    script_t before[] = {
        {.method = "HEAD", .answer = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"},
        {.method = "GET",
         .answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                   "0\r\nX-T: 1\r\n\r\n"},
        {.method = "GET",
         .answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: upgrade\r\n\r\nFRAME", /* run() closes none with bytes after */
         .upgrade = 1},
    };
    script_t next = {.method = "GET",
                     .answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"};
    for (size_t i = 0; i < sizeof(before) / sizeof(before[0]); i++) {
        run(&before[i], &r);
        const void *used = r.x;
        run(&next, &r);
#if !defined(__SANITIZE_ADDRESS__)
        assert_ptr_equal(r.x, used); /* the same object, taken again */
#else
        (void)used;
#endif
        assert_int_equal(r.status, 200);
        assert_false(r.bodiless);
        assert_int_equal(r.clen, 5);
        assert_int_equal(r.blen, 5);
        assert_memory_equal(r.body, "hello", 5);
        assert_true(r.ended);
        assert_true(r.reusable);
        assert_false(r.failed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked_with_trailers),
        cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_head_has_no_body),
        cmocka_unit_test(test_204_and_304_have_no_body),
        cmocka_unit_test(test_interim_then_final),
        cmocka_unit_test(test_unexpected_switch_is_invalid),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_eof_before_head_and_mid_body),
        cmocka_unit_test(test_keep_alive_decisions),
        cmocka_unit_test(test_connection_listed_fields_dropped),
        cmocka_unit_test(test_chunked_upload_framing),
        cmocka_unit_test(test_length_restated_and_expect_dropped),
        cmocka_unit_test(test_upgrade_takes_the_connection_over),
        cmocka_unit_test(test_reused_exchange_starts_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
