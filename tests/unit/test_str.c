#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/str.h"

static void check(uint64_t v)
{
    char out[24], want[24];
    char *end = fg_put_u64(out, v);
    *end = '\0';
    snprintf(want, sizeof(want), "%llu", (unsigned long long)v);
    assert_string_equal(out, want);
}

static void test_put_u64(void **state)
{
    check(0);
    check(7);
    check(10);
    check(200);
    check(4294967296ull);
    check(UINT64_MAX);
}

static void test_case_insensitive_compare(void **state)
{
    assert_true(fg_str_ieq_c(FG_STR_LIT("Content-Length"), "content-length"));
    assert_false(fg_str_ieq_c(FG_STR_LIT("Content-Length"), "content-lengt"));
    assert_true(fg_str_eq(FG_STR_NULL, fg_str("")));
}

/* Every pair of non-NUL bytes compares as strncasecmp in the C locale does: letters fold,
 * nothing else does ('@' against '`', '[' against '{', bytes above 0x7f). */
static void test_case_fold_matches_strncasecmp(void **state)
{
    for (int x = 1; x < 256; x++) {
        for (int y = 1; y < 256; y++) {
            char a[3] = {'k', (char)x, 'Z'}, b[3] = {'K', (char)y, 'z'};
            int want = strncasecmp(a, b, 3) == 0;
            assert_int_equal(fg_str_ieq((fg_str_t){a, 3}, (fg_str_t){b, 3}), want);
        }
    }
    assert_false(fg_str_ieq(FG_STR_LIT("TE"), FG_STR_LIT("TEE")));
    assert_true(fg_str_ieq(FG_STR_NULL, FG_STR_LIT("")));
}

/* Against strncasecmp for every length from 2 to 24 and every byte at every position. */
static void test_ieq_lower(void **state)
{
    const char lower[] = "content-length-proxy-xyz";
    char buf[32];
    for (size_t len = 2; len <= 24; len++) {
        memcpy(buf, lower, len);
        assert_true(fg_str_ieq_lower(buf, lower, len));
        for (size_t i = 0; i < len; i++) {
            for (int c = 1; c < 256; c++) {
                memcpy(buf, lower, len);
                buf[i] = (char)c;
                int want = strncasecmp(buf, lower, len) == 0;
                assert_int_equal(fg_str_ieq_lower(buf, lower, len), want);
            }
        }
    }
}

/* fg_str_put copies exactly n bytes for every length on each side of its 4, 8, 16 and 32 byte
 * cases, and writes nothing before p or after p + n. */
static void test_put_copies_exactly(void **state)
{
    char src[80], dst[100];
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (char)('A' + i % 26);
    for (size_t n = 0; n <= 70; n++) {
        memset(dst, '#', sizeof(dst));
        char *end = fg_str_put(dst + 8, src + 3, n);
        assert_ptr_equal(end, dst + 8 + n);
        assert_memory_equal(dst + 8, src + 3, n);
        for (size_t k = 0; k < 8; k++)
            assert_int_equal(dst[k], '#');
        for (size_t k = 8 + n; k < sizeof(dst); k++)
            assert_int_equal(dst[k], '#');
    }
}

/* fg_put_hex64 writes what printf's %016llx writes, for every single nibble value at every
 * position and for mixed values. */
static void test_put_hex64(void **state)
{
    char got[17], want[17];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 2000; i++) {
        uint64_t v = i < 16 * 16 ? (uint64_t)(i % 16) << (4 * (i / 16))
                                 : (x = x * 6364136223846793005ull + 1442695040888963407ull);
        if (i == 0)
            v = ~0ull;
        fg_put_hex64(got, v);
        got[16] = '\0';
        snprintf(want, sizeof(want), "%016llx", (unsigned long long)v);
        assert_string_equal(got, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_u64),
        cmocka_unit_test(test_case_insensitive_compare),
        cmocka_unit_test(test_case_fold_matches_strncasecmp),
        cmocka_unit_test(test_ieq_lower),
        cmocka_unit_test(test_put_copies_exactly),
        cmocka_unit_test(test_put_hex64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
