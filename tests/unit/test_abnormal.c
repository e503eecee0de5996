#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "shm/abnormal.h"

#define SIZE (256 * 1024)

static fg_ip_t ip(const char *s)
{
    fg_ip_t a;
    assert_int_equal(fg_ip_parse(s, strlen(s), &a), 0);
    return a;
}

static void *map(void)
{
    void *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void test_counts_and_autoblock(void **state)
{
    void *mem = map();
    fg_shm_hash_t *h = fg_abnormal_init(mem, SIZE, 1);
    fg_ip_t a = ip("192.0.2.1"), b = ip("192.0.2.2");
    uint64_t t = 1000;
    for (int i = 0; i < 4; i++)
        assert_int_equal(fg_abnormal_record(h, &a, t + (uint64_t)i, 60000, 5, 30000), 0);
    /* The fifth error within the window blocks, once. */
    assert_int_equal(fg_abnormal_record(h, &a, t + 10, 60000, 5, 30000), 1);
    assert_int_equal(fg_abnormal_record(h, &a, t + 11, 60000, 5, 30000), 0);
    assert_int_equal(fg_abnormal_record(h, &b, t + 12, 60000, 5, 30000), 0);
    fg_abnormal_info_t top[4];
    size_t n = fg_abnormal_top(h, t + 20, 60000, 1, top, 4);
    assert_int_equal(n, 2);
    assert_int_equal(fg_ip_cmp(&top[0].ip, &a), 0);
    assert_int_equal(top[0].count, 6);
    assert_true(top[0].blocked_until == t + 10 + 30000);
    assert_int_equal(top[1].count, 1);
    /* After two idle windows nothing is abnormal any more; min_count filters. */
    assert_int_equal(fg_abnormal_top(h, t + 200000, 60000, 1, top, 4), 0);
    /* Threshold 0 = no autoBlock. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(fg_abnormal_record(h, &b, t + 100, 60000, 0, 30000), 0);
    munmap(mem, SIZE);
}

/* The worst addresses come back largest first, whatever order the zone holds them in. */
static void test_top_keeps_the_largest(void **state)
{
    void *mem = map();
    fg_shm_hash_t *h = fg_abnormal_init(mem, SIZE, 1);
    /* address i gets (i * 37) % 101 + 1 errors: distinct counts in a scrambled order */
    for (int i = 0; i < 101; i++) {
        fg_ip_t a = ip("10.0.0.0");
        a.b[15] = (uint8_t)i;
        int errors = (i * 37) % 101 + 1;
        for (int k = 0; k < errors; k++)
            fg_abnormal_record(h, &a, 1000, 60000, 0, 0);
    }
    fg_abnormal_info_t top[5];
    assert_int_equal(fg_abnormal_top(h, 1000, 60000, 1, top, 5), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(top[i].count, 101 - i);
    munmap(mem, SIZE);
}

static void test_dynamic_entries(void **state)
{
    void *mem = map();
    fg_acl_dyn_t *d = fg_acl_dyn_init(mem, SIZE, 5);
    assert_non_null(d);
    fg_ip_t a = ip("10.1.2.3"), net = ip("10.1.0.0"), v6 = ip("2001:db8::5");
    assert_int_equal(fg_acl_dyn_match(d, 1, &a, 0), 0);
    assert_int_equal(fg_acl_dyn_add(d, 1, &net, 96 + 16, 0, 0), 0);
    assert_int_equal(fg_acl_dyn_add(d, 1, &net, 96 + 16, 0, 0), 1); /* refresh */
    assert_int_equal(fg_acl_dyn_count(d), 1);
    assert_int_equal(fg_acl_dyn_match(d, 1, &a, 5), 1);
    assert_int_equal(fg_acl_dyn_match(d, 2, &a, 5), 0); /* another list */
    fg_ip_t other = ip("10.2.0.1");
    assert_int_equal(fg_acl_dyn_match(d, 1, &other, 5), 0);
    /* Expiring entries disappear at their time. */
    assert_int_equal(fg_acl_dyn_add(d, 2, &v6, 128, 100, 0), 0);
    assert_int_equal(fg_acl_dyn_match(d, 2, &v6, 99), 1);
    assert_int_equal(fg_acl_dyn_match(d, 2, &v6, 100), 0);
    assert_int_equal(fg_acl_dyn_count(d), 1);
    fg_acl_dyn_info_t info[4];
    assert_int_equal(fg_acl_dyn_list(d, 1, 5, info, 4), 1);
    assert_int_equal(info[0].plen, 112);
    assert_int_equal(info[0].hits, 1);
    assert_int_equal(fg_acl_dyn_del(d, 1, &net, 112), 0);
    assert_int_equal(fg_acl_dyn_del(d, 1, &net, 112), -ENOENT);
    assert_int_equal(fg_acl_dyn_match(d, 1, &a, 5), 0);
    assert_int_equal(fg_acl_dyn_add(d, 1, &a, 129, 0, 0), -EINVAL);
    munmap(mem, SIZE);
}

/* A worker whose clock reading is older than the window start another worker just set counts
 * its error in that window: no time elapsed, the window is not restarted. */
static void test_older_reading_counts_in_current_window(void **state)
{
    void *mem = map();
    fg_shm_hash_t *h = fg_abnormal_init(mem, SIZE, 1);
    fg_ip_t a = ip("192.0.2.7");
    assert_int_equal(fg_abnormal_record(h, &a, 100000, 1000, 5, 30000), 0);
    /* another worker opens the next window at 101000 */
    assert_int_equal(fg_abnormal_record(h, &a, 101000, 1000, 5, 30000), 0);
    assert_int_equal(fg_abnormal_record(h, &a, 101000, 1000, 5, 30000), 0);
    assert_int_equal(fg_abnormal_record(h, &a, 100999, 1000, 5, 30000), 0);
    /* the fifth error in the weighted window blocks, although its reading is older */
    assert_int_equal(fg_abnormal_record(h, &a, 100998, 1000, 5, 30000), 1);
    fg_abnormal_info_t top[1];
    /* A status reader with an older reading sees the same count, not an empty window. */
    assert_int_equal(fg_abnormal_top(h, 100990, 1000, 1, top, 1), 1);
    assert_int_equal(top[0].count, 5);
    assert_int_equal(top[0].total, 5);
    assert_true(top[0].last_ms == 101000); /* never moves back */
    assert_int_equal(fg_abnormal_top(h, 101000, 1000, 1, top, 1), 1);
    assert_int_equal(top[0].count, 5);
    munmap(mem, SIZE);
}

/* Adding an entry again never shortens its life: an expiry computed from an older reading is
 * ignored, and a permanent entry stays permanent. */
static void test_dynamic_refresh_never_shortens(void **state)
{
    void *mem = map();
    fg_acl_dyn_t *d = fg_acl_dyn_init(mem, SIZE, 5);
    assert_non_null(d);
    fg_ip_t a = ip("198.51.100.1"), b = ip("198.51.100.2");
    assert_int_equal(fg_acl_dyn_add(d, 1, &a, 128, 31000, 1000), 0);
    assert_int_equal(fg_acl_dyn_add(d, 1, &a, 128, 30999, 999), 1);
    assert_int_equal(fg_acl_dyn_match(d, 1, &a, 30999), 1);
    assert_int_equal(fg_acl_dyn_match(d, 1, &a, 31000), 0);
    assert_int_equal(fg_acl_dyn_add(d, 1, &b, 128, 0, 1000), 0);
    assert_int_equal(fg_acl_dyn_add(d, 1, &b, 128, 5000, 1000), 1);
    assert_int_equal(fg_acl_dyn_match(d, 1, &b, 1000000), 1);
    /* a later expiry, or none, does extend */
    assert_int_equal(fg_acl_dyn_add(d, 1, &a, 128, 40000, 35000), 0);
    assert_int_equal(fg_acl_dyn_add(d, 1, &a, 128, 50000, 36000), 1);
    assert_int_equal(fg_acl_dyn_match(d, 1, &a, 49999), 1);
    assert_int_equal(fg_acl_dyn_add(d, 1, &a, 128, 0, 37000), 1);
    assert_int_equal(fg_acl_dyn_match(d, 1, &a, 1000000), 1);
    munmap(mem, SIZE);
}

static void test_dynamic_full_refuses(void **state)
{
    void *mem = map();
    fg_acl_dyn_t *d = fg_acl_dyn_init(mem, 8192, 5);
    assert_non_null(d);
    int added = 0, rc = 0;
    for (uint32_t i = 0; i < 10000 && rc == 0; i++) {
        fg_ip_t a = ip("10.0.0.0");
        a.b[14] = (uint8_t)(i >> 8);
        a.b[15] = (uint8_t)i;
        rc = fg_acl_dyn_add(d, 1, &a, 128, 0, 0);
        added += rc == 0;
    }
    assert_int_equal(rc, -ENOSPC);
    assert_true(added > 10);
    /* The first entry was not evicted to make room. */
    fg_ip_t first = ip("10.0.0.0");
    assert_int_equal(fg_acl_dyn_match(d, 1, &first, 0), 1);
    munmap(mem, SIZE);
}

/* Per-list live counts, which decide whether a whitelist is "non-empty", live in this zone
 * with the entries (regression: a count kept in the stats zone outlived the entries of a
 * rebuilt acl zone, so an empty whitelist denied everyone). */
static void test_dynamic_has_per_list(void **state)
{
    void *mem = map();
    fg_acl_dyn_t *d = fg_acl_dyn_init(mem, SIZE, 5);
    assert_non_null(d);
    fg_ip_t a = ip("10.1.2.3"), b = ip("10.1.2.4");
    assert_false(fg_acl_dyn_has(d, 7));
    assert_int_equal(fg_acl_dyn_add(d, 7, &a, 128, 0, 0), 0);
    assert_int_equal(fg_acl_dyn_add(d, 7, &a, 128, 0, 0), 1); /* refresh: still one */
    assert_int_equal(fg_acl_dyn_add(d, 7, &b, 128, 0, 0), 0);
    assert_true(fg_acl_dyn_has(d, 7));
    assert_false(fg_acl_dyn_has(d, 8));
    assert_int_equal(fg_acl_dyn_del(d, 7, &a, 128), 0);
    assert_true(fg_acl_dyn_has(d, 7));
    assert_int_equal(fg_acl_dyn_del(d, 7, &a, 128), -ENOENT); /* no double decrement */
    assert_int_equal(fg_acl_dyn_del(d, 7, &b, 128), 0);
    assert_false(fg_acl_dyn_has(d, 7));
    /* an expired entry swept by a lookup or a listing no longer counts */
    assert_int_equal(fg_acl_dyn_add(d, 8, &a, 128, 100, 0), 0);
    assert_true(fg_acl_dyn_has(d, 8));
    assert_int_equal(fg_acl_dyn_match(d, 8, &a, 100), 0);
    assert_false(fg_acl_dyn_has(d, 8));
    assert_int_equal(fg_acl_dyn_add(d, 8, &a, 128, 100, 0), 0);
    fg_acl_dyn_info_t info[4];
    assert_int_equal(fg_acl_dyn_list(d, 0, 200, info, 4), 0);
    assert_false(fg_acl_dyn_has(d, 8));
    /* a fresh zone knows nothing of the old one's lists */
    fg_acl_dyn_t *d2 = fg_acl_dyn_init(mem, SIZE, 6);
    assert_false(fg_acl_dyn_has(d2, 7));
    munmap(mem, SIZE);
}

/* An IPv6 prefix shorter than the IPv4-mapped block matches IPv6 clients only. */
static void test_dynamic_ipv6_prefix_spares_ipv4(void **state)
{
    void *mem = map();
    fg_acl_dyn_t *d = fg_acl_dyn_init(mem, SIZE, 5);
    fg_ip_t any = ip("::"), v4 = ip("10.1.2.3"), v6 = ip("2001:db8::1");
    assert_int_equal(fg_acl_dyn_add(d, 1, &any, 0, 0, 0), 0);
    assert_int_equal(fg_acl_dyn_match(d, 1, &v6, 0), 1);
    assert_int_equal(fg_acl_dyn_match(d, 1, &v4, 0), 0);
    fg_ip_t block = ip("::ffff:0:0");
    assert_int_equal(fg_acl_dyn_add(d, 1, &block, 96, 0, 0), 0);
    assert_int_equal(fg_acl_dyn_match(d, 1, &v4, 0), 1);
    munmap(mem, SIZE);
}

static void test_dynamic_list_slots_bounded(void **state)
{
    void *mem = map();
    fg_acl_dyn_t *d = fg_acl_dyn_init(mem, SIZE, 5);
    fg_ip_t a = ip("10.1.2.3");
    for (uint64_t list = 1; list <= FG_ACL_DYN_LISTS; list++)
        assert_int_equal(fg_acl_dyn_add(d, list, &a, 128, 0, 0), 0);
    assert_int_equal(fg_acl_dyn_add(d, FG_ACL_DYN_LISTS + 1, &a, 128, 0, 0), -ENOSPC);
    assert_false(fg_acl_dyn_has(d, FG_ACL_DYN_LISTS + 1));
    /* lists that have a slot keep working, even after emptying */
    for (uint64_t list = 1; list <= FG_ACL_DYN_LISTS; list++) {
        assert_true(fg_acl_dyn_has(d, list));
        assert_int_equal(fg_acl_dyn_del(d, list, &a, 128), 0);
        assert_false(fg_acl_dyn_has(d, list));
    }
    assert_int_equal(fg_acl_dyn_add(d, 3, &a, 128, 0, 0), 0);
    assert_true(fg_acl_dyn_has(d, 3));
    munmap(mem, SIZE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_autoblock),
        cmocka_unit_test(test_top_keeps_the_largest),
        cmocka_unit_test(test_older_reading_counts_in_current_window),
        cmocka_unit_test(test_dynamic_refresh_never_shortens),
        cmocka_unit_test(test_dynamic_entries),
        cmocka_unit_test(test_dynamic_full_refuses),
        cmocka_unit_test(test_dynamic_has_per_list),
        cmocka_unit_test(test_dynamic_list_slots_bounded),
        cmocka_unit_test(test_dynamic_ipv6_prefix_spares_ipv4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
