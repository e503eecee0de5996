/* Punycode (RFC 3492) and host names: values checked against Python's "punycode" and "idna"
 * codecs. The IDNA form folds capitals to lower case first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/punycode.h"

static void host_is(const char *in, const char *want)
{
    char out[256];
    int n = fg_punycode_host(in, strlen(in), out, sizeof(out));
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

static void test_labels(void **state)
{
    (void)state;
    host_is("bücher.example", "xn--bcher-kva.example");
    host_is("münchen.de", "xn--mnchen-3ya.de");
    host_is("例え.jp", "xn--r8jz45g.jp");
    host_is("правительство.рф", "xn--80aealotwbjpid2k.xn--p1ai");
    host_is("Ünïcödé-Test.com", "xn--ncd-test-d1a1d7d6c.com"); /* upper case folded */
    host_is("ПРАВИТЕЛЬСТВО.РФ", "xn--80aealotwbjpid2k.xn--p1ai");
}

static void test_ascii_untouched(void **state)
{
    (void)state;
    host_is("Example.COM", "Example.COM");
    host_is("*.bücher.de", "*.xn--bcher-kva.de");
}

/* RFC 3492 7.1 (L): 3<nen>B<gumi><kinpachi><sensei> */
static void test_rfc3492_sample(void **state)
{
    (void)state;
    const uint32_t cp[] = {0x0033, 0x5E74, 0x0042, 0x7D44, 0x91D1, 0x516B, 0x5148, 0x751F};
    char out[64];
    int n = fg_punycode_encode(cp, 8, out, sizeof(out));
    assert_int_equal(n, (int)strlen("3B-ww4c5e180e575a65lsy2b"));
    assert_memory_equal(out, "3B-ww4c5e180e575a65lsy2b", (size_t)n);
}

static void test_malformed_and_small(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(fg_punycode_host("a\xC3", 2, out, sizeof(out)), -1);
    assert_int_equal(fg_punycode_host("\xFF.com", 5, out, sizeof(out)), -1);
    assert_int_equal(fg_punycode_host("bücher.example", strlen("bücher.example"), out, 8), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_ascii_untouched),
        cmocka_unit_test(test_rfc3492_sample),
        cmocka_unit_test(test_malformed_and_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
