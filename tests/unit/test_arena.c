#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/arena.h"

static void test_new_rounds_to_pages(void **state)
{
    fg_shm_t *shm = fg_shm_new(1);
    assert_non_null(shm);
    long page = sysconf(_SC_PAGESIZE);
    assert_int_equal(fg_shm_size(shm) % (size_t)page, 0);
    /* The fixed part (header + worker table) always fits. */
    assert_true(fg_shm_size(shm) >= FG_SHM_MAX_WORKERS * sizeof(fg_shm_worker_t));
    assert_true(fg_shm_used(shm) <= fg_shm_size(shm));
    assert_int_equal(fg_shm_generation(shm), 0);
    fg_shm_free(shm);
}

static void test_records_on_own_lines(void **state)
{
    assert_int_equal(sizeof(fg_shm_worker_t) % FG_CACHELINE, 0);
    fg_shm_t *shm = fg_shm_new(1 << 20);
    assert_non_null(shm);
    for (int i = 0; i < FG_SHM_MAX_WORKERS; i++)
        assert_int_equal((uintptr_t)fg_shm_worker(shm, i) % FG_CACHELINE, 0);
    assert_null(fg_shm_worker(shm, -1));
    assert_null(fg_shm_worker(shm, FG_SHM_MAX_WORKERS));
    fg_shm_free(shm);
}

static void test_worker_alloc_release(void **state)
{
    fg_shm_t *shm = fg_shm_new(1 << 20);
    fg_shm_worker_t *w[FG_SHM_MAX_WORKERS];
    for (int i = 0; i < FG_SHM_MAX_WORKERS; i++) {
        w[i] = fg_shm_worker_alloc(shm, i % 4, 7);
        assert_non_null(w[i]);
        assert_int_equal(w[i]->state, FG_WORKER_STARTING);
        assert_int_equal(w[i]->slot, i % 4);
        assert_int_equal(w[i]->generation, 7);
    }
    /* Full table. */
    assert_null(fg_shm_worker_alloc(shm, 0, 8));

    /* A released record is reused with its counters reset. */
    w[5]->requests = 99;
    w[5]->connections_total = 3;
    fg_shm_worker_release(w[5]);
    assert_int_equal(w[5]->state, FG_WORKER_FREE);
    fg_shm_worker_t *again = fg_shm_worker_alloc(shm, 2, 8);
    assert_ptr_equal(again, w[5]);
    assert_int_equal(again->requests, 0);
    assert_int_equal(again->connections_total, 0);
    assert_int_equal(again->generation, 8);
    fg_shm_free(shm);
}

static void test_alloc_bounds(void **state)
{
    fg_shm_t *shm = fg_shm_new(256 * 1024);
    size_t size = fg_shm_size(shm);
    size_t before = fg_shm_used(shm);

    assert_null(fg_shm_alloc(shm, 0));
    assert_null(fg_shm_alloc(shm, size + 1));
    assert_null(fg_shm_alloc(shm, SIZE_MAX));

    char *a = fg_shm_alloc(shm, 10);
    char *b = fg_shm_alloc(shm, 1);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal((uintptr_t)a % FG_CACHELINE, 0);
    assert_int_equal((uintptr_t)b % FG_CACHELINE, 0);
    assert_int_equal(b - a, FG_CACHELINE);
    assert_int_equal(fg_shm_used(shm), before + 2 * FG_CACHELINE);
    /* Zone memory starts zeroed and lies inside the mapping. */
    assert_int_equal(a[0], 0);
    assert_true(b + FG_CACHELINE <= (char *)shm + size);

    /* Exactly what is left fits; one byte more does not. */
    size_t left = size - fg_shm_used(shm);
    assert_null(fg_shm_alloc(shm, left + 1));
    char *last = fg_shm_alloc(shm, left);
    assert_non_null(last);
    memset(last, 0xab, left);
    assert_int_equal(fg_shm_used(shm), size);
    assert_null(fg_shm_alloc(shm, 1));
    fg_shm_free(shm);
}

/* The point of the arena: a child forked after the mapping writes, the parent reads. */
static void test_shared_across_fork(void **state)
{
    fg_shm_t *shm = fg_shm_new(1 << 20);
    fg_shm_worker_t *rec = fg_shm_worker_alloc(shm, 3, 1);
    uint64_t *zone = fg_shm_alloc(shm, sizeof(uint64_t));
    assert_non_null(rec);
    assert_non_null(zone);
    fg_shm_set_generation(shm, 1);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < 1000; i++) {
            __atomic_fetch_add(&rec->requests, 1, __ATOMIC_RELAXED);
            __atomic_fetch_add(zone, 2, __ATOMIC_RELAXED);
        }
        rec->connections_total = 5;
        /* Zone memory allocated in the child is visible to the parent, too. */
        uint64_t *late = fg_shm_alloc(shm, sizeof(uint64_t));
        *late = 0x1234;
        fg_shm_set_generation(shm, 42);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(rec->requests, 1000);
    assert_int_equal(rec->connections_total, 5);
    assert_int_equal(*zone, 2000);
    assert_int_equal(fg_shm_generation(shm), 42);
    uint64_t *late = (uint64_t *)(zone + 8); /* next cache line */
    assert_int_equal(*late, 0x1234);
    /* The parent's bump pointer moved with the child's allocation. */
    uint64_t *next = fg_shm_alloc(shm, 8);
    assert_ptr_equal(next, zone + 16);
    fg_shm_free(shm);
}

/* A corrupted record trips the always-on check (abort), also in release builds. */
static void test_corruption_aborts(void **state)
{
    fg_shm_t *shm = fg_shm_new(1 << 20);
    fg_shm_worker_t *w = fg_shm_worker(shm, 10);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(2); /* keep the expected message out of the test output */
        w->magic = 0xdeadbeef;
        fg_shm_worker(shm, 10);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    fg_shm_free(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rounds_to_pages),  cmocka_unit_test(test_records_on_own_lines),
        cmocka_unit_test(test_worker_alloc_release), cmocka_unit_test(test_alloc_bounds),
        cmocka_unit_test(test_shared_across_fork),   cmocka_unit_test(test_corruption_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
