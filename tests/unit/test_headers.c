/* Unit tests for common/headers.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/headers.h"

#define S(x) FG_STR_LIT(x)

static int setup(void **state)
{
    fg_pool_t *pool = fg_pool_new(4096);
    if (pool == NULL)
        return -1;
    *state = pool;
    return 0;
}

static int teardown(void **state)
{
    fg_pool_free(*state);
    return 0;
}

static void assert_value(const fg_headers_t *h, const char *name, const char *want)
{
    const fg_http_header_t *f = fg_headers_get(h, fg_str(name));
    if (want == NULL) {
        assert_null(f);
        return;
    }
    assert_non_null(f);
    assert_int_equal(f->value.len, strlen(want));
    assert_memory_equal(f->value.base, want, f->value.len);
}

static void test_add_get_case_insensitive(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 0);
    assert_int_equal(fg_headers_add(&h, S("Content-Type"), S("text/plain")), 0);
    assert_value(&h, "content-type", "text/plain");
    assert_value(&h, "CONTENT-TYPE", "text/plain");
    assert_value(&h, "Content-Length", NULL);
    assert_int_equal(h.n, 1);
}

static void test_add_keeps_duplicates_and_first_wins(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 2);
    fg_headers_add(&h, S("Via"), S("a"));
    fg_headers_add(&h, S("via"), S("b"));
    assert_int_equal(h.n, 2);
    assert_value(&h, "VIA", "a");
}

static void test_grows_by_doubling(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 1);
    char names[200][16];
    for (int i = 0; i < 200; i++) {
        snprintf(names[i], sizeof(names[i]), "X-H%d", i);
        assert_int_equal(fg_headers_add(&h, fg_str(names[i]), S("v")), 0);
    }
    assert_int_equal(h.n, 200);
    assert_true(h.cap >= 200 && h.cap < 400);
    for (int i = 0; i < 200; i++)
        assert_non_null(fg_headers_get(&h, fg_str(names[i])));
}

static void test_set_replaces_all_keeps_position(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 0);
    fg_headers_add(&h, S("A"), S("1"));
    fg_headers_add(&h, S("X"), S("old1"));
    fg_headers_add(&h, S("B"), S("2"));
    fg_headers_add(&h, S("x"), S("old2"));
    assert_int_equal(fg_headers_set(&h, S("X"), S("new")), 0);
    assert_int_equal(h.n, 3);
    assert_true(fg_str_eq(h.v[1].value, S("new")));
    assert_true(fg_str_eq(h.v[2].name, S("B")));
}

static void test_set_adds_when_absent(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 0);
    fg_headers_add(&h, S("A"), S("1"));
    assert_int_equal(fg_headers_set(&h, S("New"), S("v")), 0);
    assert_int_equal(h.n, 2);
    assert_true(fg_str_eq(h.v[1].name, S("New")));
}

static void test_append_combines(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 0);
    assert_int_equal(fg_headers_append(&h, S("Cache-Control"), S("no-cache")), 0);
    assert_value(&h, "cache-control", "no-cache");
    assert_int_equal(fg_headers_append(&h, S("cache-control"), S("no-store")), 0);
    assert_int_equal(h.n, 1);
    assert_value(&h, "Cache-Control", "no-cache, no-store");
}

static void test_append_to_empty_value(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 0);
    fg_headers_add(&h, S("X"), S(""));
    fg_headers_append(&h, S("X"), S("v"));
    assert_value(&h, "X", "v");
}

static void test_remove_counts_and_keeps_order(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 0);
    fg_headers_add(&h, S("A"), S("1"));
    fg_headers_add(&h, S("Cookie"), S("a"));
    fg_headers_add(&h, S("B"), S("2"));
    fg_headers_add(&h, S("COOKIE"), S("b"));
    fg_headers_add(&h, S("C"), S("3"));
    assert_int_equal(fg_headers_remove(&h, S("cookie")), 2);
    assert_int_equal(h.n, 3);
    assert_true(fg_str_eq(h.v[0].name, S("A")));
    assert_true(fg_str_eq(h.v[1].name, S("B")));
    assert_true(fg_str_eq(h.v[2].name, S("C")));
    assert_int_equal(fg_headers_remove(&h, S("cookie")), 0);
}

static void test_empty_list(void **state)
{
    fg_headers_t h;
    fg_headers_init(&h, *state, 0);
    assert_null(fg_headers_get(&h, S("A")));
    assert_int_equal(fg_headers_remove(&h, S("A")), 0);
    assert_int_equal(h.n, 0);
}

static void test_hop_by_hop(void **state)
{
    (void)state;
    const char *hop[] = {
        "Connection", "keep-alive", "PROXY-CONNECTION", "te", "Trailer", "transfer-encoding",
        "Upgrade", "Proxy-Authenticate", "proxy-authorization",
        /* YARP's RequestUtilities never forwards these either */
        "alt-svc", "ALPN", "Close", "HTTP2-Settings", "Proxy-Authentication-Info", "Proxy-Features",
        "Proxy-Instruction", "Security-Scheme", "Upgrade-Insecure-Requests"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        assert_true(fg_headers_is_hop_by_hop(fg_str(hop[i])));
    const char *e2e[] = {"Host",      "Content-Length", "Authorization",    "Trailers", "T", "TEE",
                         "Alt-Svc-X", "Closed",         "Upgrade-Insecure", "Allow",    ""};
    for (size_t i = 0; i < sizeof(e2e) / sizeof(e2e[0]); i++)
        assert_false(fg_headers_is_hop_by_hop(fg_str(e2e[i])));
}

static void test_connection_lists(void **state)
{
    (void)state;
    assert_true(fg_headers_connection_lists(S("close"), S("Close")));
    assert_true(fg_headers_connection_lists(S("keep-alive, X-Secret"), S("x-secret")));
    assert_true(fg_headers_connection_lists(S(" ,, X-A ,\tX-B\t"), S("X-B")));
    assert_true(fg_headers_connection_lists(S("X-A , X-B"), S("X-A")));
    assert_false(fg_headers_connection_lists(S("X-Secrets"), S("X-Secret")));
    assert_false(fg_headers_connection_lists(S("X-Secret"), S("X-Secrets")));
    assert_false(fg_headers_connection_lists(S(""), S("X")));
    assert_false(fg_headers_connection_lists(S(",,"), S("")));
    assert_false(fg_headers_connection_lists(S("a b"), S("a")));
}

/* Every name fg_headers_class knows, with its bits. */
static const struct {
    const char *name;
    unsigned cls;
} known_names[] = {
    {"Connection", FG_HDR_HOP | FG_HDR_FRAMING | FG_HDR_CONNECTION},
    {"Keep-Alive", FG_HDR_HOP | FG_HDR_FRAMING},
    {"Proxy-Connection", FG_HDR_HOP | FG_HDR_FRAMING},
    {"TE", FG_HDR_HOP | FG_HDR_FRAMING},
    {"Trailer", FG_HDR_HOP | FG_HDR_FRAMING},
    {"Transfer-Encoding", FG_HDR_HOP | FG_HDR_FRAMING},
    {"Upgrade", FG_HDR_HOP | FG_HDR_FRAMING | FG_HDR_UPGRADE},
    {"Proxy-Authenticate", FG_HDR_HOP},
    {"ALPN", FG_HDR_HOP},
    {"Close", FG_HDR_HOP},
    {"Alt-Svc", FG_HDR_HOP},
    {"Proxy-Features", FG_HDR_HOP},
    {"HTTP2-Settings", FG_HDR_HOP},
    {"Security-Scheme", FG_HDR_HOP},
    {"Proxy-Instruction", FG_HDR_HOP},
    {"Proxy-Authentication-Info", FG_HDR_HOP},
    {"Upgrade-Insecure-Requests", FG_HDR_HOP},
    {"Proxy-Authorization", FG_HDR_HOP},
    {"Content-Length", FG_HDR_FRAMING | FG_HDR_CONTENT_LENGTH},
    {"Host", FG_HDR_HOST},
    {"X-Request-Id", FG_HDR_REQUEST_ID},
};

#define NKNOWN (sizeof(known_names) / sizeof(known_names[0]))

/* Each known name in every letter case: as written, lower, upper, and with the case of each
 * letter flipped in turn. */
static void test_class_matches_any_case(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKNOWN; k++) {
        const char *name = known_names[k].name;
        size_t len = strlen(name);
        char buf[32];
        assert_int_equal(fg_headers_class(fg_str(name)), known_names[k].cls);
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)tolower((unsigned char)name[i]);
        assert_int_equal(fg_headers_class((fg_str_t){buf, len}), known_names[k].cls);
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)toupper((unsigned char)name[i]);
        assert_int_equal(fg_headers_class((fg_str_t){buf, len}), known_names[k].cls);
        for (size_t i = 0; i < len; i++) {
            memcpy(buf, name, len);
            if (isalpha((unsigned char)buf[i]))
                buf[i] ^= 0x20;
            assert_int_equal(fg_headers_class((fg_str_t){buf, len}), known_names[k].cls);
        }
        assert_int_equal(fg_headers_is_hop_by_hop(fg_str(name)),
                         (known_names[k].cls & FG_HDR_HOP) != 0);
        assert_int_equal(fg_headers_is_framing(fg_str(name)),
                         (known_names[k].cls & FG_HDR_FRAMING) != 0);
    }
}

/* Near misses of every known name are unknown: each byte replaced by a neighbour or by a
 * character that folds onto a letter only in a careless comparison, one byte dropped, one byte
 * added; plus other common names of the same lengths. */
static void test_class_near_misses(void **state)
{
    (void)state;
    static const char subst[] = {'-', '_', '@', '[', '`', '{', 'x', '0', '\x80'};
    for (size_t k = 0; k < NKNOWN; k++) {
        const char *name = known_names[k].name;
        size_t len = strlen(name);
        char buf[32];
        for (size_t i = 0; i < len; i++) {
            for (size_t s = 0; s < sizeof(subst); s++) {
                memcpy(buf, name, len);
                if ((buf[i] | 0x20) == (subst[s] | 0x20))
                    continue;
                buf[i] = subst[s];
                assert_int_equal(fg_headers_class((fg_str_t){buf, len}), 0);
            }
            memcpy(buf, name, len);
            buf[i] = (char)(buf[i] + 1);
            assert_int_equal(fg_headers_class((fg_str_t){buf, len}), 0);
        }
        assert_int_equal(fg_headers_class((fg_str_t){name, len - 1}), 0);
        assert_int_equal(fg_headers_class((fg_str_t){name + 1, len - 1}), 0);
        memcpy(buf, name, len);
        buf[len] = 's';
        assert_int_equal(fg_headers_class((fg_str_t){buf, len + 1}), 0);
    }
    const char *other[] = {"",
                           "T",
                           "Date",
                           "Server",
                           "Expect",
                           "Trailers",
                           "Content-Type",
                           "Cache-Control",
                           "Keep-Alivf",
                           "Upgradf",
                           "Tpgrade",
                           "Uonnection",
                           "X-Request-Ix",
                           "Authorization"};
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
        assert_int_equal(fg_headers_class(fg_str(other[i])), 0);
}

static void test_conn_options(void **state)
{
    (void)state;
    fg_http_header_t v[] = {
        {S("Connection"), S(" keep-alive ,, X-A")},
        {S("X-A"), S("1")},
        {S("connection"), S("\tX-B\t")},
        {S("X-Connection"), S("X-C")},
        {S("Keep-Alive"), S("X-D")}, /* the length of Connection, another name */
        {S("CONNECTION"), S("X-E")},
    };
    fg_conn_options_t co;
    fg_headers_conn_options(&co, v, 6);
    assert_int_equal(co.n, 4);
    assert_false(fg_headers_conn_listed(&co, S("X-D")));
    assert_true(fg_headers_conn_listed(&co, S("x-e")));
    assert_true(fg_headers_conn_listed(&co, S("x-a")));
    assert_true(fg_headers_conn_listed(&co, S("X-B")));
    assert_true(fg_headers_conn_listed(&co, S("Keep-Alive")));
    assert_false(fg_headers_conn_listed(&co, S("X-C")));
    assert_false(fg_headers_conn_listed(&co, S("X-AB")));
    assert_false(fg_headers_conn_listed(&co, S("")));
    fg_headers_conn_options(&co, v, 0);
    assert_false(fg_headers_conn_listed(&co, S("X-A")));
}

/* More options than the list keeps: the values are read field by field, with the same answers. */
static void test_conn_options_many(void **state)
{
    (void)state;
    char value[FG_HEADERS_OPTIONS_MAX * 8 + 16];
    size_t len = 0;
    for (int i = 0; i <= FG_HEADERS_OPTIONS_MAX + 2; i++)
        len += (size_t)snprintf(value + len, sizeof(value) - len, "%sX-%d", i ? ", " : "", i);
    fg_http_header_t v[] = {
        {S("Connection"), {value, len}},
        {S("Connection"), S("X-Last")},
    };
    fg_conn_options_t co;
    fg_headers_conn_options(&co, v, 2);
    char name[16];
    for (int i = 0; i <= FG_HEADERS_OPTIONS_MAX + 2; i++) {
        int n = snprintf(name, sizeof(name), "x-%d", i);
        assert_true(fg_headers_conn_listed(&co, (fg_str_t){name, (size_t)n}));
    }
    assert_true(fg_headers_conn_listed(&co, S("X-LAST")));
    assert_false(fg_headers_conn_listed(&co, S("X-99")));
    assert_false(fg_headers_conn_listed(&co, S("X-")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_get_case_insensitive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_keeps_duplicates_and_first_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grows_by_doubling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_replaces_all_keeps_position, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_adds_when_absent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_combines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_to_empty_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_counts_and_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_list, setup, teardown),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_connection_lists),
        cmocka_unit_test(test_class_matches_any_case),
        cmocka_unit_test(test_class_near_misses),
        cmocka_unit_test(test_conn_options),
        cmocka_unit_test(test_conn_options_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
