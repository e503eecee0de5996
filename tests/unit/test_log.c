/* common/log.c: the access-log field vocabulary, text escaping for error-log lines, and the
 * log.accessLogFields key that selects fields (validated at load). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"

static void test_field_names_round_trip(void **state)
{
    for (int f = 0; f < FG_AL_COUNT; f++) {
        const char *name = fg_log_access_field_name(f);
        assert_true(name[0] != '\0');
        assert_int_equal(fg_log_access_field(name), f);
    }
    assert_int_equal(fg_log_access_field("usrAgent"), -1);
    assert_int_equal(fg_log_access_field("UserAgent"), -1); /* names are case-sensitive */
    assert_int_equal(fg_log_access_field(""), -1);
    assert_true(FG_AL_COUNT <= 64);
}

/* A client's bytes cannot end a text line or its quoting: everything but printable ASCII,
 * and '"' and '\\', becomes \xHH; truncation never splits an escape. */
static void test_escape_text(void **state)
{
    char out[64];
    const char *in = "a\"b\\\r\n\x01\xff z";
    size_t n = fg_log_escape_text(out, sizeof(out), in, strlen(in));
    const char *want = "a\\x22b\\x5c\\x0d\\x0a\\x01\\xff z";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    assert_int_equal(fg_log_escape_text(out, 4, "a\n", 2), 1);
}

static fg_config_t *load(const char *fields, char *err, size_t errlen)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:8080\"}], "
             "\"log\": {\"accessLogFields\": %s}}",
             fields);
    return fg_config_load_string("t.json", json, err, errlen);
}

static void test_fields_selected(void **state)
{
    char err[256] = "";
    fg_config_t *cfg = load("[\"requestId\", \"status\", \"userAgent\"]", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->log.access_fields, FG_AL_BIT(FG_AL_REQUEST_ID) | FG_AL_BIT(FG_AL_STATUS) |
                                                 FG_AL_BIT(FG_AL_USER_AGENT));
    fg_config_free(cfg);
}

static void test_fields_errors(void **state)
{
    static const struct {
        const char *fields, *err;
    } cases[] = {
        {"[\"time\", \"usrAgent\"]",
         "t.json: log.accessLogFields[1]: unknown access log field \"usrAgent\" (see "
         "docs/logging.md)"},
        {"[\"status\", \"status\"]",
         "t.json: log.accessLogFields[1]: field \"status\" listed twice"},
        {"[\"status\", 3]",
         "t.json: log.accessLogFields[1]: expected a field name, got an integer"},
        {"[]", "t.json: log.accessLogFields: must name at least one field"},
        {"\"status\"", "t.json: log.accessLogFields: expected an array, got a string"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        fg_config_t *cfg = load(cases[i].fields, err, sizeof(err));
        if (cfg != NULL) {
            fg_config_free(cfg);
            fail_msg("case %zu loaded", i);
        }
        assert_string_equal(err, cases[i].err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_names_round_trip),
        cmocka_unit_test(test_escape_text),
        cmocka_unit_test(test_fields_selected),
        cmocka_unit_test(test_fields_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
