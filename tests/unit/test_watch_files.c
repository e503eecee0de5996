#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "master/watch_files.h"

static int listed(const fg_watch_files_t *l, const char *path)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->paths[i], path) == 0)
            return 1;
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A refused file: comments, relative and absolute names, every key that names a file; names
 * already listed are listed once; keys of the wrong type are skipped, not fatal. */
static void test_named_by_a_file_that_does_not_load(void **state)
{
    char dir[] = "/tmp/fg-watch-files-XXXXXX", conf[64];
    assert_non_null(mkdtemp(dir));
    snprintf(conf, sizeof(conf), "%s/gw.json", dir);
    write_file(
        conf,
        "// a comment\n"
        "{ \"errorPages\": {\"404\": \"pages/404.html\", \"5xx\": {\"file\": \"/abs/5.txt\"},\n"
        "                   \"403\": {\"redirect\": \"/denied\"}},\n"
        "  /* block */ \"servers\": [{\"errorPages\": {\"404\": \"pages/404.html\"}}, 7],\n"
        "  \"certificates\": [{\"chain\": \"c.pem\", \"key\": \"k.pem\"}, {\"chain\": 3}],\n"
        "  \"clusters\": [{\"httpClient\": {\"caFile\": \"ca/ca.pem\"}}, {}],\n"
        "  \"unknownKey\": true }\n");
    fg_watch_files_t l = {0};
    assert_int_equal(fg_watch_files_add_named(&l, conf), 5);
    char want[128];
    snprintf(want, sizeof(want), "%s/pages/404.html", dir);
    assert_true(listed(&l, want));
    assert_true(listed(&l, "/abs/5.txt"));
    snprintf(want, sizeof(want), "%s/c.pem", dir);
    assert_true(listed(&l, want));
    snprintf(want, sizeof(want), "%s/k.pem", dir);
    assert_true(listed(&l, want));
    snprintf(want, sizeof(want), "%s/ca/ca.pem", dir);
    assert_true(listed(&l, want));
    assert_int_equal(l.n, 5);
    /* the same names again add nothing */
    assert_int_equal(fg_watch_files_add_named(&l, conf), 0);
    fg_watch_files_free(&l);
    unlink(conf);
    rmdir(dir);
}

static void test_nothing_named_by_what_is_not_json(void **state)
{
    char dir[] = "/tmp/fg-watch-files-XXXXXX", conf[64];
    assert_non_null(mkdtemp(dir));
    snprintf(conf, sizeof(conf), "%s/gw.json", dir);
    fg_watch_files_t l = {0};
    assert_int_equal(fg_watch_files_add_named(&l, conf), 0); /* missing */
    write_file(conf, "{\"errorPages\": {\"404\": \"x.html\"}, /* unterminated");
    assert_int_equal(fg_watch_files_add_named(&l, conf), 0);
    write_file(conf, "[\"x.html\"]");
    assert_int_equal(fg_watch_files_add_named(&l, conf), 0);
    assert_int_equal(l.n, 0);
    fg_watch_files_free(&l);
    unlink(conf);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_by_a_file_that_does_not_load),
        cmocka_unit_test(test_nothing_named_by_what_is_not_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
