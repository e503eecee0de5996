/* RFC 9113 8.2-8.3 field mapping (worker/http/http2_fields.c). */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "worker/http/http2_fields.h"

static fg_http_header_t field(const char *name, const char *value)
{
    fg_http_header_t f;
    memset(&f, 0, sizeof(f));
    f.name = fg_str(name);
    f.value = fg_str(value);
    return f;
}

static void assert_str(fg_str_t s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.base, want, s.len);
}

static void test_cookie_crumbs_joined_in_place_of_the_first(void **state)
{
    fg_pool_t *pool = fg_pool_new(1024);
    fg_http_header_t v[] = {field("accept", "*/*"), field("cookie", "a=1"), field("x-one", "1"),
                            field("cookie", "b=2"), field("cookie", "c=3"), field("x-two", "2")};
    size_t n = 6;
    assert_int_equal(fg_http2_join_cookies(pool, v, &n), 0);
    assert_int_equal(n, 4);
    assert_str(v[0].name, "accept");
    assert_str(v[1].name, "cookie");
    assert_str(v[1].value, "a=1; b=2; c=3"); /* RFC 9113 8.2.3 */
    assert_str(v[2].name, "x-one");
    assert_str(v[3].name, "x-two");
    fg_pool_free(pool);
}

static void test_one_cookie_or_none_untouched(void **state)
{
    fg_pool_t *pool = fg_pool_new(1024);
    fg_http_header_t v[] = {field("cookie", "a=1"), field("accept", "*/*")};
    size_t n = 2;
    assert_int_equal(fg_http2_join_cookies(pool, v, &n), 0);
    assert_int_equal(n, 2);
    assert_str(v[0].value, "a=1");
    n = 1;
    assert_int_equal(fg_http2_join_cookies(pool, v + 1, &n), 0);
    assert_int_equal(n, 1);
    fg_pool_free(pool);
}

static void test_authority_against_host(void **state)
{
    fg_http_header_t same[] = {field("host", "Example.test")};
    fg_http_header_t other[] = {field("host", "other.test")};
    fg_str_t out;
    /* RFC 9113 8.3.1: :authority wins, and a Host that names another entity is malformed */
    assert_int_equal(fg_http2_authority(FG_STR_LIT("example.test"), same, 1, &out), 0);
    assert_str(out, "example.test");
    assert_int_equal(fg_http2_authority(FG_STR_LIT("example.test"), other, 1, &out), -1);
    assert_int_equal(fg_http2_authority(FG_STR_LIT("example.test"), NULL, 0, &out), 0);
    assert_int_equal(fg_http2_authority(FG_STR_NULL, other, 1, &out), 0);
    assert_str(out, "other.test");
    assert_int_equal(fg_http2_authority(FG_STR_NULL, NULL, 0, &out), -1);
}

static void test_path_split_and_normalised(void **state)
{
    fg_pool_t *pool = fg_pool_new(1024);
    fg_str_t path, query;
    assert_int_equal(fg_http2_split_path(pool, FG_STR_LIT("/a/./b/../c?x=1#frag"), &path, &query),
                     0);
    assert_str(path, "/a/c");
    assert_str(query, "x=1");
    assert_int_equal(fg_http2_split_path(pool, FG_STR_LIT("*"), &path, &query), 0);
    assert_str(path, "*");
    assert_int_equal(fg_http2_split_path(pool, FG_STR_LIT("/p"), &path, &query), 0);
    assert_null(query.base);
    assert_int_equal(fg_http2_split_path(pool, FG_STR_LIT("http://x/p"), &path, &query), -1);
    assert_int_equal(fg_http2_split_path(pool, FG_STR_LIT(""), &path, &query), -1);
    fg_pool_free(pool);
}

static void test_connection_specific_and_lowercase(void **state)
{
    fg_pool_t *pool = fg_pool_new(1024);
    assert_true(fg_http2_connection_specific(FG_STR_LIT("Connection")));
    assert_true(fg_http2_connection_specific(FG_STR_LIT("transfer-encoding")));
    assert_true(fg_http2_connection_specific(FG_STR_LIT("Keep-Alive")));
    assert_false(fg_http2_connection_specific(FG_STR_LIT("content-type")));
    fg_str_t lower = FG_STR_LIT("x-already");
    assert_ptr_equal(fg_http2_lower(pool, lower).base, lower.base); /* no copy */
    assert_str(fg_http2_lower(pool, FG_STR_LIT("Content-Type")), "content-type");
    fg_pool_free(pool);
}

/* Every RFC 9113 8.2.2 name in any case, and names of the same lengths that are not. */
static void test_connection_specific_names_of_each_length(void **state)
{
    const char *yes[] = {
        "te", "TE", "Upgrade", "connection", "KEEP-ALIVE", "Proxy-Connection", "Transfer-Encoding"};
    const char *no[] = {"tf",
                        "t-",
                        "upgradf",
                        "connectioo",
                        "keep_alive",
                        "proxy-connectio",
                        "proxy-connectionx",
                        "transfer-encodinh",
                        "",
                        "x"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(fg_http2_connection_specific(fg_str(yes[i])));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(fg_http2_connection_specific(fg_str(no[i])));
}

/* Word-at-a-time lowering: every byte of every length up to 40, letters at any offset, and
 * bytes next to the letters (@ [ ` {) and at or above 0x80 left alone. */
static void test_lowercase_every_byte(void **state)
{
    fg_pool_t *pool = fg_pool_new(1 << 16);
    char in[40], want[40];
    for (size_t len = 1; len <= sizeof(in); len++) {
        for (unsigned c = 1; c < 256; c++) {
            for (size_t pos = 0; pos < len; pos += 3) {
                memset(in, 'a', len);
                in[pos] = (char)c;
                memcpy(want, in, len);
                if (c >= 'A' && c <= 'Z')
                    want[pos] = (char)(c | 0x20);
                fg_str_t out = fg_http2_lower(pool, (fg_str_t){in, len});
                assert_non_null(out.base);
                assert_int_equal(out.len, len);
                assert_memory_equal(out.base, want, len);
                if (!(c >= 'A' && c <= 'Z'))
                    assert_ptr_equal(out.base, in); /* nothing to lower: no copy */
            }
            fg_pool_reset(pool);
        }
    }
    fg_pool_free(pool);
}

/* Common names come back as static lowercase literals, in whatever case they arrive; a name
 * of the same length that is not one is lowered (or kept) as any other. */
static void test_lowercase_common_names(void **state)
{
    fg_pool_t *pool = fg_pool_new(1024);
    const char *names[] = {"Date",
                           "ETAG",
                           "vary",
                           "Server",
                           "Expires",
                           "Location",
                           "Set-Cookie",
                           "Content-Type",
                           "Cache-Control",
                           "Last-Modified",
                           "Accept-Ranges",
                           "Content-Length",
                           "Content-Encoding"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        fg_str_t out = fg_http2_lower(pool, fg_str(names[i]));
        assert_int_equal(out.len, strlen(names[i]));
        for (size_t k = 0; k < out.len; k++)
            assert_int_equal(out.base[k], tolower((unsigned char)names[i][k]));
    }
    assert_str(fg_http2_lower(pool, FG_STR_LIT("Dave")), "dave");
    assert_str(fg_http2_lower(pool, FG_STR_LIT("Content_Type")), "content_type");
    fg_str_t x = FG_STR_LIT("content-typf");
    assert_ptr_equal(fg_http2_lower(pool, x).base, x.base);
    fg_pool_free(pool);
}

/* The packing variant: a common name is its literal and leaves the block untouched; any other
 * name is lowered into the block, already-lowercase ones copied too (the caller's bytes are a
 * destination's, gone after the callback), and nothing past name.len is written. */
static void test_lower_copy_into_a_block(void **state)
{
    char block[32];
    memset(block, '#', sizeof(block));
    fg_str_t out = fg_http2_lower_copy(FG_STR_LIT("Content-Type"), block);
    assert_str(out, "content-type");
    assert_true(out.base < block || out.base >= block + sizeof(block));
    assert_int_equal(block[0], '#');
    out = fg_http2_lower_copy(FG_STR_LIT("X-Request-Thing-Id"), block);
    assert_ptr_equal(out.base, block);
    assert_str(out, "x-request-thing-id");
    assert_int_equal(block[18], '#');
    char src[] = "x-lower";
    out = fg_http2_lower_copy((fg_str_t){src, 7}, block);
    assert_ptr_equal(out.base, block);
    src[0] = 'Z';
    assert_str(out, "x-lower");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cookie_crumbs_joined_in_place_of_the_first),
        cmocka_unit_test(test_one_cookie_or_none_untouched),
        cmocka_unit_test(test_authority_against_host),
        cmocka_unit_test(test_path_split_and_normalised),
        cmocka_unit_test(test_connection_specific_and_lowercase),
        cmocka_unit_test(test_connection_specific_names_of_each_length),
        cmocka_unit_test(test_lowercase_every_byte),
        cmocka_unit_test(test_lowercase_common_names),
        cmocka_unit_test(test_lower_copy_into_a_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
