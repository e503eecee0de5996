#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "shm/arena.h"
#include "shm/zone.h"

#define MIB (1024 * 1024)

static void test_find_or_create(void **state)
{
    fg_shm_t *shm = fg_shm_new(4 * MIB);
    int created;
    char *a = fg_shm_zone_get(shm, "ratelimit", 100000, 2, 7, 1, &created);
    assert_non_null(a);
    assert_true(created);
    assert_int_equal((uintptr_t)a % FG_CACHELINE, 0);
    assert_true(a + 100000 <= (char *)shm + fg_shm_size(shm));
    memset(a, 0x5a, 100000);
    /* Same name, size, kind and layout in the next generation: the same bytes. */
    char *b = fg_shm_zone_get(shm, "ratelimit", 100000, 2, 7, 2, &created);
    assert_ptr_equal(a, b);
    assert_false(created);
    assert_int_equal(b[99999], 0x5a);
    /* A changed layout or size: a new zeroed zone beside the old one. */
    char *c = fg_shm_zone_get(shm, "ratelimit", 100000, 2, 8, 3, &created);
    assert_true(created);
    assert_ptr_not_equal(c, a);
    assert_int_equal(c[0], 0);
    assert_int_equal(a[0], 0x5a);
    fg_shm_zone_info_t z[8];
    assert_int_equal(fg_shm_zone_list(shm, z, 8), 2);
    assert_int_equal(z[0].min_gen, 1);
    assert_int_equal(z[0].max_gen, 2);
    fg_shm_free(shm);
}

/* Regression: zones created for a reload that failed were kept (their generation was newer
 * than every live one), and the next valid reload found no room. */
static void test_sweep_after_failed_generation(void **state)
{
    fg_shm_t *shm = fg_shm_new(4 * MIB);
    int created;
    char *kept = fg_shm_zone_get(shm, "k", 64 * 1024, 1, 1, 1, &created);
    assert_non_null(kept);
    assert_non_null(fg_shm_zone_get(shm, "z", 1 * MIB, 1, 1, 1, &created));
    /* generation 2 reuses k, makes a bigger z, then fails */
    assert_ptr_equal(fg_shm_zone_get(shm, "k", 64 * 1024, 1, 1, 2, &created), kept);
    assert_non_null(fg_shm_zone_get(shm, "z", 2 * MIB, 1, 1, 2, &created));
    uint64_t live[] = {1};
    assert_int_equal(fg_shm_zone_sweep(shm, live, 1), 1);
    assert_int_equal(fg_shm_zone_bytes(shm), 1 * MIB + 64 * 1024);
    /* the retry (same id) has the room again, and k kept its data */
    assert_non_null(fg_shm_zone_get(shm, "z", 2 * MIB, 1, 1, 2, &created));
    assert_true(created);
    assert_ptr_equal(fg_shm_zone_get(shm, "k", 64 * 1024, 1, 1, 2, &created), kept);
    assert_false(created);
    fg_shm_free(shm);
}

static void test_sweep_after_generation_exits(void **state)
{
    fg_shm_t *shm = fg_shm_new(4 * MIB);
    int created;
    char *old = fg_shm_zone_get(shm, "z", 1 * MIB, 1, 1, 1, &created);
    char *keep = fg_shm_zone_get(shm, "k", 64 * 1024, 1, 1, 1, &created);
    fg_shm_zone_get(shm, "k", 64 * 1024, 1, 1, 2, &created); /* used by generation 2 too */
    char *new = fg_shm_zone_get(shm, "z", 2 * MIB, 1, 1, 2, &created);
    assert_non_null(old);
    assert_non_null(new);
    /* Generation 1 still has workers: nothing goes. */
    uint64_t both[] = {1, 2}, second[] = {2};
    assert_int_equal(fg_shm_zone_sweep(shm, both, 2), 0);
    /* Its last worker exited: its private zone goes, the shared one stays. */
    assert_int_equal(fg_shm_zone_sweep(shm, second, 1), 1);
    fg_shm_zone_info_t z[8];
    assert_int_equal(fg_shm_zone_list(shm, z, 8), 2);
    assert_int_equal(fg_shm_zone_bytes(shm), 2 * MIB + 64 * 1024);
    /* The hole is reused: another 1m zone fits where the old one was. */
    char *again = fg_shm_zone_get(shm, "y", 1 * MIB, 1, 1, 3, &created);
    assert_ptr_equal(again, old);
    (void)keep;
    fg_shm_free(shm);
}

static void test_full_arena_and_bump_boundary(void **state)
{
    fg_shm_t *shm = fg_shm_new(2 * MIB);
    int created;
    size_t free_bytes = fg_shm_size(shm) - fg_shm_used(shm);
    assert_null(fg_shm_zone_get(shm, "big", free_bytes + 64, 1, 1, 1, &created));
    assert_false(created);
    char *z = fg_shm_zone_get(shm, "big", free_bytes - 4096, 1, 1, 1, &created);
    assert_non_null(z);
    /* Permanent bump allocations stop at the zones. */
    assert_null(fg_shm_alloc(shm, 8192));
    char *p = fg_shm_alloc(shm, 4096);
    assert_non_null(p);
    assert_true(p + 4096 <= z);
    /* Names are bounded and sizes positive. */
    assert_null(
        fg_shm_zone_get(shm, "a-name-that-is-far-too-long-for-the-dir", 64, 1, 1, 1, &created));
    assert_null(fg_shm_zone_get(shm, "zero", 0, 1, 1, 1, &created));
    fg_shm_free(shm);
}

static void test_directory_full(void **state)
{
    fg_shm_t *shm = fg_shm_new(8 * MIB);
    int created;
    char name[16];
    for (int i = 0; i < FG_SHM_MAX_ZONES; i++) {
        snprintf(name, sizeof(name), "z%d", i);
        assert_non_null(fg_shm_zone_get(shm, name, 4096, 1, 1, 1, &created));
    }
    assert_null(fg_shm_zone_get(shm, "one-more", 4096, 1, 1, 1, &created));
    fg_shm_free(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_or_create),
        cmocka_unit_test(test_sweep_after_generation_exits),
        cmocka_unit_test(test_sweep_after_failed_generation),
        cmocka_unit_test(test_full_arena_and_bump_boundary),
        cmocka_unit_test(test_directory_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
