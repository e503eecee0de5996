#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/hash.h"
#include "shm/ratelimit.h"

typedef struct {
    uint64_t a, b;
} key_t16;

typedef struct {
    int evicted;
    uint64_t last_key;
} evict_log_t;

static void *map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void on_evict(const void *key, void *value, void *arg)
{
    evict_log_t *log = arg;
    log->evicted++;
    log->last_key = ((const key_t16 *)key)->a;
}

static uint64_t *put(fg_shm_hash_t *h, uint64_t k, evict_log_t *log)
{
    key_t16 key = {k, ~k};
    uint64_t hv = fg_shm_hash_key(h, &key);
    uint64_t *v = fg_shm_hash_find(h, &key, hv);
    if (v == NULL)
        v = fg_shm_hash_insert(h, &key, hv, on_evict, log);
    return v;
}

static uint64_t *get(fg_shm_hash_t *h, uint64_t k)
{
    key_t16 key = {k, ~k};
    return fg_shm_hash_find(h, &key, fg_shm_hash_key(h, &key));
}

static void test_init_limits(void **state)
{
    void *mem = map(1 << 16);
    assert_null(fg_shm_hash_init(mem, 64, 16, 8, 1));
    assert_null(fg_shm_hash_init((char *)mem + 8, 1 << 15, 16, 8, 1)); /* misaligned */
    fg_shm_hash_t *h = fg_shm_hash_init(mem, 1 << 16, 16, 8, 1);
    assert_non_null(h);
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(h, &st);
    assert_int_equal(st.slots, fg_shm_hash_capacity(1 << 16, 16, 8));
    assert_int_equal(st.entries, 0);
    munmap(mem, 1 << 16);
}

static void test_insert_find_remove(void **state)
{
    void *mem = map(1 << 16);
    fg_shm_hash_t *h = fg_shm_hash_init(mem, 1 << 16, 16, 8, 42);
    assert_int_equal(fg_shm_hash_lock(h), 0);
    for (uint64_t k = 1; k <= 100; k++)
        *put(h, k, NULL) = k * 10;
    for (uint64_t k = 1; k <= 100; k++)
        assert_int_equal(*get(h, k), k * 10);
    assert_null(get(h, 1000));
    fg_shm_hash_remove(h, get(h, 50));
    assert_null(get(h, 50));
    assert_int_equal(*get(h, 51), 510);
    /* A re-inserted key starts from a zeroed value. */
    assert_int_equal(*put(h, 50, NULL), 0);
    fg_shm_hash_unlock(h);
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(h, &st);
    assert_int_equal(st.entries, 100);
    munmap(mem, 1 << 16);
}

/* Full table: the least recently used entry goes, and a recently touched one stays. */
static void test_lru_eviction(void **state)
{
    size_t size = 8192;
    void *mem = map(size);
    fg_shm_hash_t *h = fg_shm_hash_init(mem, size, 16, 8, 7);
    size_t cap = fg_shm_hash_capacity(size, 16, 8);
    evict_log_t log = {0, 0};
    assert_true(cap >= 8);
    fg_shm_hash_lock(h);
    for (uint64_t k = 1; k <= cap; k++)
        *put(h, k, &log) = k;
    assert_int_equal(log.evicted, 0);
    /* Touch key 1 (the oldest): key 2 becomes the least recently used. */
    assert_non_null(get(h, 1));
    put(h, cap + 1, &log);
    assert_int_equal(log.evicted, 1);
    assert_int_equal(log.last_key, 2);
    assert_null(get(h, 2));
    assert_non_null(get(h, 1));
    /* A flood of new keys never evicts the key that keeps being used. */
    for (uint64_t k = 10000; k < 10000 + 10 * cap; k++) {
        put(h, k, &log);
        assert_non_null(get(h, 1));
    }
    assert_int_equal(*get(h, 1), 1);
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(h, &st);
    assert_int_equal(st.entries, cap);
    assert_int_equal(st.evictions, (uint64_t)log.evicted);
    /* try_insert refuses instead of evicting. */
    key_t16 k = {999999, 0};
    assert_null(fg_shm_hash_try_insert(h, &k, fg_shm_hash_key(h, &k)));
    fg_shm_hash_get_stats(h, &st);
    assert_int_equal(st.alloc_failures, 1);
    fg_shm_hash_unlock(h);
    munmap(mem, size);
}

/* 150,000 distinct keys through a table of a few thousand slots, with one active key counted by
 * the real rate-limit algorithm between every 50 of them: the active key's limit stays exact
 * (its state is never evicted), every insertion beyond the capacity is one counted eviction,
 * and a key left alone for more than a table's worth of insertions is the one that goes. */
static void test_flood_of_distinct_keys(void **state)
{
    size_t size = 512 * 1024;
    void *mem = map(size);
    fg_shm_hash_t *h = fg_shm_hash_init(mem, size, 16, sizeof(fg_rl_state_t), 99);
    size_t cap = fg_shm_hash_capacity(size, 16, sizeof(fg_rl_state_t));
    const uint64_t flood = 150000, active = 1ull << 62, idle = (1ull << 62) + 1;
    fg_rl_params_t p = {FG_RL_ALGO_FIXED, 100, 60000, 0};
    uint64_t passed = 0, checks = 0;
    evict_log_t log = {0, 0};
    assert_true(cap > 1000 && cap < flood / 10);
    assert_int_equal(fg_shm_hash_lock(h), 0);
    assert_non_null(put(h, idle, &log));
    for (uint64_t k = 0; k < flood; k++) {
        /* Scrambled so that keys do not arrive in bucket order. */
        assert_non_null(put(h, k * 0x9e3779b97f4a7c15ull, &log));
        if (k % 50 == 0) {
            fg_rl_result_t r;
            fg_rl_check(&p, (fg_rl_state_t *)put(h, active, &log), 1000, &r);
            passed += r.allowed;
            checks++;
        }
    }
    assert_int_equal(checks, flood / 50);
    assert_int_equal(passed, 100);
    assert_null(get(h, idle));
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(h, &st);
    assert_int_equal(st.entries, cap);
    assert_int_equal(st.inserts, flood + 2);
    assert_int_equal(st.evictions, flood + 2 - cap);
    assert_int_equal(st.evictions, (uint64_t)log.evicted);
    assert_int_equal(st.alloc_failures, 0);
    fg_shm_hash_unlock(h);
    munmap(mem, size);
}

static int drop_odd(const void *key, void *value, void *arg)
{
    int *seen = arg;
    (*seen)++;
    return ((const key_t16 *)key)->a % 2 == 1;
}

static void test_foreach_and_repair(void **state)
{
    void *mem = map(1 << 16);
    fg_shm_hash_t *h = fg_shm_hash_init(mem, 1 << 16, 16, 8, 3);
    fg_shm_hash_lock(h);
    for (uint64_t k = 1; k <= 20; k++)
        *put(h, k, NULL) = k;
    int seen = 0;
    fg_shm_hash_foreach(h, drop_odd, &seen);
    assert_int_equal(seen, 20);
    assert_null(get(h, 3));
    assert_int_equal(*get(h, 4), 4);
    /* Repair rebuilds chains and lists from the slots: every even key is still found. */
    fg_shm_hash_repair(h);
    for (uint64_t k = 2; k <= 20; k += 2)
        assert_int_equal(*get(h, k), k);
    assert_null(get(h, 5));
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(h, &st);
    assert_int_equal(st.entries, 10);
    fg_shm_hash_unlock(h);
    munmap(mem, 1 << 16);
}

/* A process dies holding the table lock in the middle of inserts; the next locker repairs and
 * the table is fully usable. */
static void test_dead_owner_repair(void **state)
{
    void *mem = map(1 << 16);
    fg_shm_hash_t *h = fg_shm_hash_init(mem, 1 << 16, 16, 8, 9);
    fg_shm_hash_lock(h);
    for (uint64_t k = 1; k <= 10; k++)
        *put(h, k, NULL) = k;
    fg_shm_hash_unlock(h);
    pid_t pid = fork();
    if (pid == 0) {
        fg_shm_hash_lock(h);
        for (uint64_t k = 100; k < 110; k++)
            *put(h, k, NULL) = k;
        kill(getpid(), SIGKILL);
    }
    waitpid(pid, NULL, 0);
    alarm(5);
    assert_int_equal(fg_shm_hash_lock(h), 0);
    for (uint64_t k = 1; k <= 10; k++)
        assert_int_equal(*get(h, k), k);
    for (uint64_t k = 100; k < 110; k++)
        assert_int_equal(*get(h, k), k);
    *put(h, 500, NULL) = 500;
    assert_int_equal(*get(h, 500), 500);
    fg_shm_hash_unlock(h);
    alarm(0);
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(h, &st);
    assert_int_equal(st.recoveries, 1);
    assert_int_equal(st.entries, 21);
    munmap(mem, 1 << 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_limits),       cmocka_unit_test(test_insert_find_remove),
        cmocka_unit_test(test_lru_eviction),      cmocka_unit_test(test_foreach_and_repair),
        cmocka_unit_test(test_dead_owner_repair), cmocka_unit_test(test_flood_of_distinct_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
