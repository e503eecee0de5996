/* Secret files holding base64url keys (common/secret.c, fg_secret_load_b64url): the ACME
 * external account's MAC key. The plain reader's cases are in test_tunnel_proto.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/secret.h"

static char dir[64];

static const char *put(const char *name, const char *text, mode_t mode)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static int load(const char *text, uint8_t *key, size_t cap, size_t min, char *err)
{
    return fg_secret_load_b64url(put("k", text, 0600), key, cap, min, err, 256);
}

static void test_decodes_with_and_without_padding(void **state)
{
    (void)state;
    uint8_t key[64];
    char err[256];
    /* RFC 4648 10's vectors, in the URL-safe alphabet */
    assert_int_equal(load("Zm9vYmFy\n", key, sizeof(key), 1, err), 6);
    assert_memory_equal(key, "foobar", 6);
    assert_int_equal(load("Zm9vYg==", key, sizeof(key), 1, err), 4);
    assert_memory_equal(key, "foob", 4);
    assert_int_equal(load("  Zm9vYg \n", key, sizeof(key), 1, err), 4);
    assert_memory_equal(key, "foob", 4);
    /* '-' and '_' are 62 and 63: 0xfb 0xff 0xbf */
    assert_int_equal(load("-_-_", key, sizeof(key), 1, err), 3);
    assert_memory_equal(key, "\xfb\xff\xbf", 3);
}

static void test_refuses_what_is_not_a_key(void **state)
{
    (void)state;
    uint8_t key[8];
    char err[256];
    assert_int_equal(load("Zm9v+mFy", key, sizeof(key), 1, err), -1); /* standard base64 */
    assert_non_null(strstr(err, "not a base64url key (character 5)"));
    assert_int_equal(load("Zm9vY", key, sizeof(key), 1, err), -1); /* 5 characters: 30 bits */
    assert_non_null(strstr(err, "truncated"));
    assert_int_equal(load("Zm9vYmFy", key, sizeof(key), 7, err), -1);
    assert_non_null(strstr(err, "shorter than 7 bytes"));
    assert_int_equal(load("Zm9vYmFyYmF6cXV4", key, sizeof(key), 1, err), -1); /* 12 > 8 */
    assert_non_null(strstr(err, "longer than 8 bytes"));
    assert_null(strstr(err, "Zm9v")); /* never the key */
    assert_int_equal(
        fg_secret_load_b64url(put("open", "Zm9vYmFy", 0640), key, sizeof(key), 1, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "chmod 600"));
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/fg-secret-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes_with_and_without_padding),
        cmocka_unit_test(test_refuses_what_is_not_a_key),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char path[128];
    snprintf(path, sizeof(path), "%s/k", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/open", dir);
    unlink(path);
    rmdir(dir);
    return rc;
}
