#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_index.h"

static void test_add_find(void **state)
{
    fg_config_index_t *ix = fg_config_index_new(0);
    size_t pos = 99;
    assert_int_equal(fg_config_index_add(ix, "a", 0, NULL), 0);
    assert_int_equal(fg_config_index_add(ix, "b", 1, NULL), 0);
    assert_int_equal(fg_config_index_find(ix, "b", &pos), 1);
    assert_int_equal(pos, 1);
    assert_int_equal(fg_config_index_find(ix, "c", &pos), 0);
    assert_int_equal(fg_config_index_find(ix, "", NULL), 0);
    assert_int_equal(fg_config_index_find(NULL, "a", NULL), 0);
    assert_int_equal(fg_config_index_count(ix), 2);
    fg_config_index_free(ix);
}

/* A duplicate reports the first position and leaves the index unchanged. */
static void test_duplicate_keeps_first(void **state)
{
    fg_config_index_t *ix = fg_config_index_new(4);
    char key[] = "route";
    size_t first = 0, pos = 0;
    assert_int_equal(fg_config_index_add(ix, "route", 3, NULL), 0);
    assert_int_equal(fg_config_index_add(ix, key, 7, &first), 1); /* equal text, other pointer */
    assert_int_equal(first, 3);
    assert_int_equal(fg_config_index_find(ix, "route", &pos), 1);
    assert_int_equal(pos, 3);
    assert_int_equal(fg_config_index_count(ix), 1);
    fg_config_index_free(ix);
}

/* Far more keys than announced: the table grows and every key stays reachable. Keys that share
 * long prefixes and differ in one character exercise the hash's low bits. */
static void test_growth_many_keys(void **state)
{
    enum { N = 200000 };
    char **keys = calloc(N, sizeof(char *));
    assert_non_null(keys);
    fg_config_index_t *ix = fg_config_index_new(8);
    for (size_t i = 0; i < N; i++) {
        keys[i] = malloc(32);
        assert_non_null(keys[i]);
        snprintf(keys[i], 32, "route-%zu", i);
        assert_int_equal(fg_config_index_add(ix, keys[i], i, NULL), 0);
    }
    assert_int_equal(fg_config_index_count(ix), N);
    for (size_t i = 0; i < N; i++) {
        size_t pos = 0, first = 0;
        char probe[32];
        snprintf(probe, sizeof(probe), "route-%zu", i);
        assert_int_equal(fg_config_index_find(ix, probe, &pos), 1);
        assert_int_equal(pos, i);
        assert_int_equal(fg_config_index_add(ix, probe, N + i, &first), 1);
        assert_int_equal(first, i);
    }
    assert_int_equal(fg_config_index_find(ix, "route-200000", NULL), 0);
    assert_int_equal(fg_config_index_find(ix, "route-", NULL), 0);
    fg_config_index_free(ix);
    for (size_t i = 0; i < N; i++)
        free(keys[i]);
    free(keys);
}

typedef struct {
    int pad;
    char *id;
} item_t;

static void test_index_of(void **state)
{
    item_t items[] = {{0, "x"}, {0, "y"}, {0, NULL}, {0, "x"}};
    fg_config_index_t *ix = fg_config_index_of(items, 4, sizeof(item_t), offsetof(item_t, id));
    size_t pos = 9;
    assert_int_equal(fg_config_index_count(ix), 2);
    assert_int_equal(fg_config_index_find(ix, "x", &pos), 1);
    assert_int_equal(pos, 0); /* the first of two equal ids */
    assert_int_equal(fg_config_index_find(ix, "y", &pos), 1);
    assert_int_equal(pos, 1);
    fg_config_index_free(ix);
    ix = fg_config_index_of(NULL, 0, sizeof(item_t), offsetof(item_t, id));
    assert_int_equal(fg_config_index_count(ix), 0);
    fg_config_index_free(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find),
        cmocka_unit_test(test_duplicate_keeps_first),
        cmocka_unit_test(test_growth_many_keys),
        cmocka_unit_test(test_index_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
