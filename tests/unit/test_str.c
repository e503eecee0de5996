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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_u64),
        cmocka_unit_test(test_case_insensitive_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
