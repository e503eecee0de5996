#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <jansson.h>

#include "common/config.h"
#include "master/admin_http.h"

/* The bearer compare hashes both sides and compares the digests with CRYPTO_memcmp, so
 * neither the position of the first difference nor a length difference changes its path. */
static void test_token_equal(void **state)
{
    const char *t = "0123456789abcdef0123";
    assert_int_equal(fg_admin_token_equal(t, strlen(t), t, strlen(t)), 1);
    assert_int_equal(fg_admin_token_equal("0123456789abcdef0124", 20, t, 20), 0);
    assert_int_equal(fg_admin_token_equal("1123456789abcdef0123", 20, t, 20), 0);
    assert_int_equal(fg_admin_token_equal(t, 19, t, 20), 0); /* a prefix */
    assert_int_equal(fg_admin_token_equal(t, 20, t, 19), 0);
    assert_int_equal(fg_admin_token_equal("", 0, t, 20), 0);
    assert_int_equal(fg_admin_token_equal("", 0, "", 0), 1);
    /* bytes after an embedded NUL count */
    assert_int_equal(fg_admin_token_equal("ab\0c", 4, "ab\0d", 4), 0);
}

static json_t *load(const char *s)
{
    json_t *v = json_loads(s, 0, NULL);
    assert_non_null(v);
    return v;
}

/* State entries replace the file's entry of the same id in place or are appended; ids under
 * "deleted" leave the file's list. */
static void test_merge_rule(void **state)
{
    json_t *root =
        load("{\"routes\": [{\"id\": \"a\", \"v\": 1}, {\"id\": \"b\"}, {\"id\": \"c\"}]}");
    json_t *st = load("{\"routes\": [{\"id\": \"c\", \"v\": 2}, {\"id\": \"d\"}],"
                      " \"deleted\": {\"routes\": [\"b\"]}, \"clusters\": [{\"id\": \"x\"}]}");
    char err[256];
    assert_int_equal(fg_config_admin_check_state(st, "s", err, sizeof(err)), 0);
    fg_config_admin_merge(root, st);
    char *got = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(got, "{\"clusters\":[{\"id\":\"x\"}],\"routes\":[{\"id\":\"a\",\"v\":1},"
                             "{\"id\":\"c\",\"v\":2},{\"id\":\"d\"}]}");
    free(got);
    json_decref(root);
    json_decref(st);
}

static void test_state_shape(void **state)
{
    char err[256];
    json_t *bad = load("{\"servers\": []}");
    assert_int_equal(fg_config_admin_check_state(bad, "s.json", err, sizeof(err)), -1);
    assert_string_equal(err, "s.json: unknown key \"servers\"");
    json_decref(bad);
    bad = load("{\"routes\": [{\"id\": 1}]}");
    assert_int_equal(fg_config_admin_check_state(bad, "s.json", err, sizeof(err)), -1);
    assert_string_equal(err, "s.json: routes[0]: expected an object with a string \"id\"");
    json_decref(bad);
    bad = load("{\"deleted\": {\"routes\": [3]}}");
    assert_int_equal(fg_config_admin_check_state(bad, "s.json", err, sizeof(err)), -1);
    assert_string_equal(err, "s.json: deleted.routes[0]: expected a string id");
    json_decref(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_equal),
        cmocka_unit_test(test_merge_rule),
        cmocka_unit_test(test_state_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
