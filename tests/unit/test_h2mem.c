#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <nghttp2/nghttp2.h>

#include "worker/http/h2mem.h"

#if defined(__SANITIZE_ADDRESS__)
#define CACHING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHING 0
#endif
#endif
#ifndef CACHING
#define CACHING 1
#endif

/* A freed small block is the next block of its class; a large one is not kept. */
static void test_small_blocks_are_reused(void **state)
{
    (void)state;
    fg_h2mem_t *m = fg_h2mem_new();
    assert_non_null(m);
    nghttp2_mem *mem = fg_h2mem_nghttp2(m);
    void *a = mem->malloc(200, mem->mem_user_data);
    assert_non_null(a);
    memset(a, 1, 200);
    mem->free(a, mem->mem_user_data);
    void *b = mem->malloc(150, mem->mem_user_data); /* same class (256 with the header) */
    if (CACHING) {
        assert_ptr_equal(a, b);
        assert_int_equal(fg_h2mem_cached(m), 0);
    }
    void *big = mem->malloc(100000, mem->mem_user_data);
    assert_non_null(big);
    memset(big, 2, 100000);
    mem->free(big, mem->mem_user_data);
    assert_int_equal(fg_h2mem_cached(m), 0);
    mem->free(b, mem->mem_user_data);
    mem->free(NULL, mem->mem_user_data);
    fg_h2mem_free(m);
}

/* The cache of a class is bounded: freeing many blocks keeps at most 256 KiB of them. */
static void test_cache_is_bounded(void **state)
{
    (void)state;
    enum { N = 2000 };
    fg_h2mem_t *m = fg_h2mem_new();
    nghttp2_mem *mem = fg_h2mem_nghttp2(m);
    void **p = calloc(N, sizeof(*p));
    assert_non_null(p);
    for (int i = 0; i < N; i++)
        assert_non_null(p[i] = mem->malloc(500, mem->mem_user_data));
    for (int i = 0; i < N; i++)
        mem->free(p[i], mem->mem_user_data);
    assert_true(fg_h2mem_cached(m) <= 256 * 1024);
    assert_true(!CACHING || fg_h2mem_cached(m) > 0);
    free(p);
    fg_h2mem_free(m);
}

/* calloc zeroes a reused block; realloc keeps the content, in place or moved. */
static void test_calloc_and_realloc(void **state)
{
    (void)state;
    fg_h2mem_t *m = fg_h2mem_new();
    nghttp2_mem *mem = fg_h2mem_nghttp2(m);
    unsigned char *a = mem->malloc(100, mem->mem_user_data);
    memset(a, 0xee, 100);
    mem->free(a, mem->mem_user_data);
    unsigned char *z = mem->calloc(10, 10, mem->mem_user_data);
    for (int i = 0; i < 100; i++)
        assert_int_equal(z[i], 0);
    for (int i = 0; i < 100; i++)
        z[i] = (unsigned char)i;
    unsigned char *r = mem->realloc(z, 5000, mem->mem_user_data); /* past the classes */
    assert_non_null(r);
    for (int i = 0; i < 100; i++)
        assert_int_equal(r[i], i);
    memset(r + 100, 7, 4900);
    r = mem->realloc(r, 20000, mem->mem_user_data);
    assert_int_equal(r[99], 99);
    assert_int_equal(r[4999], 7);
    mem->free(r, mem->mem_user_data);
    unsigned char *q = mem->realloc(NULL, 30, mem->mem_user_data);
    assert_non_null(q);
    q[0] = 5;
    q = mem->realloc(q, 40, mem->mem_user_data); /* same class: in place */
    assert_int_equal(q[0], 5);
    mem->free(q, mem->mem_user_data);
    assert_null(mem->calloc(SIZE_MAX / 4, 8, mem->mem_user_data));
    fg_h2mem_free(m);
}

static ssize_t sink(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *arg)
{
    (void)s;
    (void)data;
    (void)flags;
    *(size_t *)arg += len;
    return (ssize_t)len;
}

/* A server session runs on it: a client preface, SETTINGS and a request in, frames out. */
static void test_nghttp2_session_runs_on_it(void **state)
{
    (void)state;
    fg_h2mem_t *m = fg_h2mem_new();
    nghttp2_session_callbacks *cbs;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, sink);
    size_t sent = 0;
    for (int round = 0; round < 3; round++) {
        nghttp2_session *srv, *cli;
        size_t cli_sent = 0;
        assert_int_equal(nghttp2_session_server_new3(&srv, cbs, &sent, NULL, fg_h2mem_nghttp2(m)),
                         0);
        assert_int_equal(nghttp2_session_client_new(&cli, cbs, &cli_sent), 0);
        nghttp2_submit_settings(cli, NGHTTP2_FLAG_NONE, NULL, 0);
        const nghttp2_nv nv[] = {
            {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":path", (uint8_t *)"/", 5, 1, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":authority", (uint8_t *)"a", 10, 1, NGHTTP2_NV_FLAG_NONE},
        };
        assert_true(nghttp2_submit_request(cli, NULL, nv, 4, NULL, NULL) > 0);
        const uint8_t *out;
        ssize_t n;
        /* the client's bytes: taken from its send buffer as the sink saw them */
        while ((n = nghttp2_session_mem_send(cli, &out)) > 0)
            assert_int_equal(nghttp2_session_mem_recv(srv, out, (size_t)n), n);
        assert_int_equal(nghttp2_session_send(srv), 0);
        nghttp2_session_del(cli);
        nghttp2_session_del(srv);
    }
    assert_true(sent > 0);
    assert_true(!CACHING || fg_h2mem_cached(m) > 0);
    nghttp2_session_callbacks_del(cbs);
    fg_h2mem_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_blocks_are_reused),
        cmocka_unit_test(test_cache_is_bounded),
        cmocka_unit_test(test_calloc_and_realloc),
        cmocka_unit_test(test_nghttp2_session_runs_on_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
