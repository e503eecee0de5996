/* Completeness of the effective configuration (common/config_dump.c, `fastgateway -T`) against
 * the loader. tests/integration/data/full/full_config.json uses every key the loader knows;
 * the loader reports each key list it checks an object against (fg_config_load_traced), and
 * every key of every list must be written by the dump at that object's path. A key added to a
 * loader list fails here until both the full configuration and the dump carry it. Run from
 * the repository root (make unit). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "common/config.h"
#include "common/config_impl.h"

#define FULL "tests/integration/data/full/full_config.json"
#define MAX_SEEN 512

typedef struct {
    char path[512];
    const char *const *keys;
} seen_t;

typedef struct {
    seen_t items[MAX_SEEN];
    size_t n;
} seen_list_t;

static void on_keys(void *arg, const char *path, const char *const keys[])
{
    seen_list_t *s = arg;
    assert_true(s->n < MAX_SEEN);
    snprintf(s->items[s->n].path, sizeof(s->items[s->n].path), "%s", path);
    s->items[s->n++].keys = keys;
}

/* The value at a loader path ("servers[0].tls", "routes[0].transforms[3]", "" = root). */
static json_t *at_path(json_t *root, const char *path)
{
    json_t *v = root;
    const char *p = path;
    while (*p && v) {
        if (*p == '.') {
            p++;
        } else if (*p == '[') {
            char *end;
            size_t i = strtoul(p + 1, &end, 10);
            v = json_array_get(v, i);
            p = end + 1;
        } else {
            size_t len = strcspn(p, ".[");
            char key[128];
            snprintf(key, sizeof(key), "%.*s", (int)len, p);
            v = json_object_get(v, key);
            p += len;
        }
    }
    return v;
}

static fg_config_t *load_full(seen_list_t *seen)
{
    char err[1024] = "";
    fg_config_t *cfg = fg_config_load_traced(FULL, seen ? on_keys : NULL, seen, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s does not load: %s", FULL, err);
    return cfg;
}

/* Some objects take one of a list's keys at a time (an errorPages value has file or redirect,
 * a transform Set or Append), so a key counts as written when any object checked against the
 * same list has it in the dump. */
static void test_dump_writes_every_loader_key(void **state)
{
    (void)state;
    seen_list_t *seen = calloc(1, sizeof(*seen));
    assert_non_null(seen);
    fg_config_t *cfg = load_full(seen);
    json_t *doc = fg_config_dump(cfg);
    int missing = 0;

    assert_true(seen->n > 30);
    for (size_t i = 0; i < seen->n; i++) {
        for (const char *const *k = seen->items[i].keys; *k; k++) {
            int found = 0;
            for (size_t j = 0; j < seen->n && !found; j++) {
                if (seen->items[j].keys != seen->items[i].keys)
                    continue;
                json_t *o = at_path(doc, seen->items[j].path);
                found = json_is_object(o) && json_object_get(o, *k) != NULL;
            }
            if (!found) {
                print_error("key \"%s\" (list checked at \"%s\") is not in the dump\n", *k,
                            seen->items[i].path);
                missing++;
            }
        }
    }
    json_decref(doc);
    fg_config_free(cfg);
    free(seen);
    assert_int_equal(missing, 0);
}

/* Every key of the input at the same path of the dump (arrays by index). */
static int walk(const json_t *in, json_t *out, const char *path)
{
    char sub[512];
    int missing = 0;
    if (json_is_object(in)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)in, k, v)
        {
            snprintf(sub, sizeof(sub), "%s.%s", path, k);
            json_t *o = json_is_object(out) ? json_object_get(out, k) : NULL;
            if (o == NULL) {
                print_error("input key %s is not in the dump\n", sub);
                missing++;
                continue;
            }
            missing += walk(v, o, sub);
        }
    } else if (json_is_array(in)) {
        size_t i;
        json_t *v;
        json_array_foreach(in, i, v)
        {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            json_t *o = json_array_get(out, i);
            if (o == NULL) {
                print_error("input element %s is not in the dump\n", sub);
                missing++;
                continue;
            }
            missing += walk(v, o, sub);
        }
    }
    return missing;
}

static void test_dump_keeps_every_input_key(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *in = json_load_file(FULL, 0, &jerr);
    if (in == NULL)
        fail_msg("%s: %d: %s", FULL, jerr.line, jerr.text);
    fg_config_t *cfg = load_full(NULL);
    json_t *doc = fg_config_dump(cfg);
    assert_int_equal(walk(in, doc, "$"), 0);
    json_decref(doc);
    json_decref(in);
    fg_config_free(cfg);
}

/* The dump loads again (under the same name, so relative paths resolve alike) and dumps
 * identically. */
static void test_full_dump_loads_to_itself(void **state)
{
    (void)state;
    char err[1024] = "";
    fg_config_t *cfg = load_full(NULL);
    json_t *doc = fg_config_dump(cfg);
    char *text = json_dumps(doc, JSON_PRESERVE_ORDER);
    assert_non_null(text);
    fg_config_t *again = fg_config_load_string(FULL, text, err, sizeof(err));
    if (again == NULL)
        fail_msg("the dump does not load: %s\n%s", err, text);
    json_t *doc2 = fg_config_dump(again);
    if (!json_equal(doc, doc2)) {
        char *t2 = json_dumps(doc2, JSON_PRESERVE_ORDER);
        fail_msg("dumps differ:\n%s\n%s", text, t2);
    }
    json_decref(doc2);
    fg_config_free(again);
    free(text);
    json_decref(doc);
    fg_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dump_writes_every_loader_key),
        cmocka_unit_test(test_dump_keeps_every_input_key),
        cmocka_unit_test(test_full_dump_loads_to_itself),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
