#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include "common/evmem.h"

/* A freed block of a cached size is the next block of that size; other sizes are not kept. */
static void test_power_of_two_blocks_are_reused(void **state)
{
    void *a = fg_evmem_malloc(4096);
    assert_non_null(a);
    memset(a, 1, 4096);
    size_t before = fg_evmem_cached();
    fg_evmem_free(a);
    assert_true(fg_evmem_cached() > before);
    void *b = fg_evmem_malloc(4096);
    assert_ptr_equal(a, b);
    assert_int_equal(fg_evmem_cached(), before);
    /* not a class size: straight to free(), the cache unchanged */
    void *odd = fg_evmem_malloc(3000);
    assert_non_null(odd);
    fg_evmem_free(odd);
    assert_int_equal(fg_evmem_cached(), before);
    /* a small block is never cached */
    fg_evmem_free(fg_evmem_malloc(64));
    assert_int_equal(fg_evmem_cached(), before);
    fg_evmem_free(b);
    fg_evmem_free(NULL);
}

/* The cache of one size is bounded: freeing many blocks keeps at most 128 KiB of them. */
static void test_cache_is_bounded(void **state)
{
    enum { N = 200 };
    void *p[N];
    for (int i = 0; i < N; i++)
        assert_non_null(p[i] = fg_evmem_malloc(1024));
    for (int i = 0; i < N; i++)
        fg_evmem_free(p[i]);
    assert_true(fg_evmem_cached() <= 2 * 128 * 1024);
    /* and what was cached is handed out again, usable in full */
    for (int i = 0; i < N; i++) {
        assert_non_null(p[i] = fg_evmem_malloc(1024));
        memset(p[i], 0xab, 1024);
    }
    for (int i = 0; i < N; i++)
        fg_evmem_free(p[i]);
}

/* Installed, libevent's buffers run on it; memory libevent hands out is freed with free(). */
static void test_libevent_runs_on_it(void **state)
{
    fg_evmem_install();
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    for (int round = 0; round < 3; round++) {
        char data[5000];
        memset(data, 'x', sizeof(data));
        assert_int_equal(evbuffer_add(b, data, sizeof(data)), 0);
        assert_int_equal(evbuffer_add(b, "line\n", 5), 0);
        evbuffer_drain(b, sizeof(data));
        size_t n = 0;
        char *line = evbuffer_readln(b, &n, EVBUFFER_EOL_LF);
        assert_non_null(line);
        assert_string_equal(line, "line");
        free(line);
        assert_int_equal(evbuffer_get_length(b), 0);
    }
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_power_of_two_blocks_are_reused),
        cmocka_unit_test(test_cache_is_bounded),
        cmocka_unit_test(test_libevent_runs_on_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
