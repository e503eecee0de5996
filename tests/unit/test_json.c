#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/json.h"

static void test_plain_and_escapes(void **state)
{
    char out[64];
    const char *in = "a\"b\\c\n\x01\x7f";
    size_t n = fg_json_escape(out, sizeof(out), in, strlen(in));
    assert_int_equal(n, strlen("a\\\"b\\\\c\\u000a\\u0001\\u007f"));
    assert_memory_equal(out, "a\\\"b\\\\c\\u000a\\u0001\\u007f", n);
}

static void test_utf8_passes_through(void **state)
{
    char out[16];
    const char *in = "\xc3\xa9t\xc3\xa9";
    size_t n = fg_json_escape(out, sizeof(out), in, strlen(in));
    assert_int_equal(n, strlen(in));
    assert_memory_equal(out, in, n);
}

/* Bytes that are not well-formed UTF-8 (a lone continuation, a cut sequence, an overlong form,
 * a surrogate) become \u00XX; a valid four-byte sequence next to them is kept, and never cut. */
static void test_invalid_utf8_escaped(void **state)
{
    char out[64];
    const char *in = "a\x80"
                     "b\xc3\xc0\xaf\xed\xa0\x80\xf0\x9f\x98\x80";
    size_t n = fg_json_escape(out, sizeof(out), in, strlen(in));
    const char *want = "a\\u0080"
                       "b\\u00c3\\u00c0\\u00af\\u00ed\\u00a0\\u0080\xf0\x9f\x98\x80";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    n = fg_json_escape(out, 3, "\xf0\x9f\x98\x80", 4);
    assert_int_equal(n, 0);
}

/* Truncation never splits an escape, so the result stays a valid JSON string body. */
static void test_truncates_on_whole_escapes(void **state)
{
    char out[8];
    size_t n = fg_json_escape(out, 5, "ab\ncd", 5);
    assert_int_equal(n, 2);
    n = fg_json_escape(out, 3, "a\"b", 3);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "a\\\"", 3);
    n = fg_json_escape(out, 2, "a\"b", 3);
    assert_int_equal(n, 1);
    assert_int_equal(fg_json_escape(out, 0, "abc", 3), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_and_escapes),
        cmocka_unit_test(test_invalid_utf8_escaped),
        cmocka_unit_test(test_utf8_passes_through),
        cmocka_unit_test(test_truncates_on_whole_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
