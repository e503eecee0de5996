/* XXH64 against the reference implementation's published values, and the destination hash
 * YARP's HashCookie policy hands out (its HashCookieSessionAffinityPolicyTests). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/config.h"
#include "common/xxhash.h"

static void test_known_vectors(void **state)
{
    (void)state;
    assert_true(fg_xxh64("", 0, 0) == 0xEF46DB3751D8E999ull);
    assert_true(fg_xxh64("a", 1, 0) == 0xD24EC4F1A98C6E5Bull);
    assert_true(fg_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ull);
    /* 39 bytes: one 32-byte stripe, then an 8-byte and a 4-byte... tail */
    const char *s = "Nobody inspects the spammish repetition";
    assert_true(fg_xxh64(s, strlen(s), 0) == 0xFBCEA83C8A378BF1ull);
}

static void test_seed_changes_hash(void **state)
{
    (void)state;
    assert_true(fg_xxh64("abc", 3, 1) != fg_xxh64("abc", 3, 0));
}

/* HashCookieSessionAffinityPolicyTests: destination "dest-B" gets the cookie 53c079ed4c377b0d
 * (XXH64 of the upper-cased id in UTF-16LE, big-endian hex). */
static void test_yarp_destination_hash(void **state)
{
    (void)state;
    fg_destination_t d = {.id = "dest-B"};
    fg_config_destination_hash(&d);
    assert_string_equal(d.id_hash_hex, "53c079ed4c377b0d");
    fg_destination_t lower = {.id = "DEST-b"};
    fg_config_destination_hash(&lower);
    assert_string_equal(lower.id_hash_hex, "53c079ed4c377b0d");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_seed_changes_hash),
        cmocka_unit_test(test_yarp_destination_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
