/* Unit tests for common/path.c: one cmocka test per normalisation case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/path.h"

typedef struct {
    const char *in;
    const char *want; /* NULL = rejected */
} norm_case_t;

static const norm_case_t norm_cases[] = {
    {"/", "/"},
    {"/a/b/c", "/a/b/c"},
    {"/a/./b", "/a/b"},
    {"/a/../b", "/b"},
    {"/a/b/../../c", "/c"},
    {"/a/b/..", "/a/"},
    {"/a/b/.", "/a/b/"},
    {"/.", "/"},
    {"/a/..", "/"},
    {"/..", NULL},
    {"/a/../..", NULL},
    {"/../a", NULL},
    {"/%2e%2E/", NULL},
    {"/a/%2e%2E/b", "/b"},
    {"/a/%2E/b", "/a/b"},
    {"/a/.%2e", "/"},
    {"/a%2fb", "/a%2Fb"},
    {"/a%2Fb/../c", "/c"},
    {"//a///b", "/a/b"},
    {"//", "/"},
    {"/a/b/", "/a/b/"},
    {"/a//", "/a/"},
    {"/%zz", NULL},
    {"/%4", NULL},
    {"/%", NULL},
    {"/a%4g", NULL},
    {"/%00", NULL},
    {"/a%00b", NULL},
    {"/%41%62%7e%2D%5f", "/Ab~-_"},
    {"/%3a%3F%23", "/%3A%3F%23"},
    {"/caf%c3%a9", "/caf%C3%A9"},
    {"/a%20b", "/a%20b"},
    {"/a\tb", NULL},
    {"/a\x7f", NULL},
    /* raw bytes RFC 3986 never allows in a path (regression: "/\\evil.com" echoed into a
     * redirect); their escapes stay as they are */
    {"/\\evil.com", NULL},
    {"/a\"b", NULL},
    {"/a<b>", NULL},
    {"/a{b}", NULL},
    {"/a|b", NULL},
    {"/a^b", NULL},
    {"/a`b", NULL},
    {"/a b", NULL},
    {"/%5Cevil.com", "/%5Cevil.com"},
    {"/caf\xc3\xa9", "/caf\xc3\xa9"},
    {"a/b", NULL},
    {"", NULL},
    {"/...", "/..."},
    {"/..a/a..", "/..a/a.."},
    {"/a/.hidden", "/a/.hidden"},
    {"/a/./../b/./", "/b/"},
    {"/A/B", "/A/B"},
};

#define NCASES (sizeof(norm_cases) / sizeof(norm_cases[0]))

static void run_norm(void **state)
{
    const norm_case_t *c = *state;
    size_t len = strlen(c->in);
    char out[256];
    memset(out, 'X', sizeof(out));
    long n = fg_path_normalize(c->in, len, out);
    if (c->want == NULL) {
        if (n != -1)
            fail_msg("\"%s\" should be rejected, got \"%.*s\"", c->in, (int)(n > 0 ? n : 0), out);
        return;
    }
    if (n < 0)
        fail_msg("\"%s\" rejected, want \"%s\"", c->in, c->want);
    assert_true((size_t)n <= len || len == 0);
    assert_int_equal(out[n], '\0');
    assert_string_equal(out, c->want);
}

/* The output fits in len + 1 bytes even for the longest cases. */
static void test_normalize_exact_capacity(void **state)
{
    (void)state;
    const char *in = "/a%41b/c";
    char *out = test_malloc(strlen(in) + 1);
    long n = fg_path_normalize(in, strlen(in), out);
    assert_int_equal(n, 6);
    assert_string_equal(out, "/aAb/c");
    test_free(out);
}

/* Normalising twice gives the same result (idempotence). */
static void test_normalize_idempotent(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++) {
        if (norm_cases[i].want == NULL)
            continue;
        char out[256];
        const char *w = norm_cases[i].want;
        long n = fg_path_normalize(w, strlen(w), out);
        assert_true(n >= 0);
        assert_string_equal(out, w);
    }
}

/* Only the given length is read: a path that continues with "?q" is not looked at. */
static void test_normalize_respects_length(void **state)
{
    (void)state;
    const char *in = "/a/b?x=/../..";
    char out[64];
    long n = fg_path_normalize(in, 4, out);
    assert_int_equal(n, 4);
    assert_string_equal(out, "/a/b");
}

static void test_decode_all(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(fg_path_decode("/caf%C3%A9/a%20b", 16, out), 10);
    assert_string_equal(out, "/caf\xc3\xa9/a b");
    assert_int_equal(fg_path_decode("/plain", 6, out), 6);
    assert_string_equal(out, "/plain");
    assert_int_equal(fg_path_decode("", 0, out), 0);
    assert_string_equal(out, "");
}

static void test_decode_rejects(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(fg_path_decode("/a%2fb", 6, out), -1);
    assert_int_equal(fg_path_decode("/a%2Fb", 6, out), -1);
    assert_int_equal(fg_path_decode("/a%00", 5, out), -1);
    assert_int_equal(fg_path_decode("/a%zz", 5, out), -1);
    assert_int_equal(fg_path_decode("/a%4", 4, out), -1);
    assert_int_equal(fg_path_decode("/a%", 3, out), -1);
}

int main(void)
{
    struct CMUnitTest tests[NCASES + 5];
    char names[NCASES][96];
    for (size_t i = 0; i < NCASES; i++) {
        snprintf(names[i], sizeof(names[i]), "normalize \"%s\"", norm_cases[i].in);
        for (char *p = names[i]; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        tests[i] = (struct CMUnitTest){names[i], run_norm, NULL, NULL, (void *)&norm_cases[i]};
    }
    tests[NCASES] = (struct CMUnitTest)cmocka_unit_test(test_normalize_exact_capacity);
    tests[NCASES + 1] = (struct CMUnitTest)cmocka_unit_test(test_normalize_idempotent);
    tests[NCASES + 2] = (struct CMUnitTest)cmocka_unit_test(test_normalize_respects_length);
    tests[NCASES + 3] = (struct CMUnitTest)cmocka_unit_test(test_decode_all);
    tests[NCASES + 4] = (struct CMUnitTest)cmocka_unit_test(test_decode_rejects);
    return _cmocka_run_group_tests("path", tests, NCASES + 5, NULL, NULL);
}
