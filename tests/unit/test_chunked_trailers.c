/* Unit tests for the chunked decoder's trailer capture (common/http1_parser.h,
 * fg_http1_chunked_keep_trailers): fields kept in caller memory, bounded, in one step or
 * byte by byte, and nothing asked of a message without trailers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/http1_parser.h"

static char trbuf[8192];

/* Decode msg fed `step` bytes at a time; the payload goes to body. Returns the final step's
 * result (1 when complete) and the number of times the decoder asked for trailer memory. */
static int decode(fg_http1_chunked_t *d, const char *msg, size_t step, char *body, int *asked)
{
    size_t len = strlen(msg), off = 0, have = 0, blen = 0;
    *asked = 0;
    fg_http1_chunked_init(d);
    fg_http1_chunked_keep_trailers(d);
    while (off < len) {
        have = have + step <= len - off ? have + step : len - off;
        size_t consumed = 0, data = 0;
        int r = fg_http1_chunked_step(d, msg + off, have, &consumed, &data);
        if (r < 0)
            return r;
        if (fg_http1_chunked_wants_buf(d)) {
            (*asked)++;
            fg_http1_chunked_set_buf(d, trbuf, sizeof(trbuf));
        }
        if (data) {
            memcpy(body + blen, msg + off, data);
            blen += data;
        }
        off += consumed;
        have -= consumed;
        if (r == 1) {
            body[blen] = '\0';
            return 1;
        }
    }
    return 0;
}

static void trailers_kept(void **state)
{
    static const char msg[] = "5\r\nhello\r\n0\r\ngrpc-status: 0\r\nX-Sum:\t abc \r\n\r\n";
    for (size_t step = 1; step <= sizeof(msg); step++) {
        fg_http1_chunked_t d;
        char body[64];
        int asked;
        assert_int_equal(decode(&d, msg, step, body, &asked), 1);
        assert_string_equal(body, "hello");
        assert_int_equal(asked, 1);
        assert_int_equal(fg_http1_chunked_trailer_count(&d), 2);
        fg_http_header_t t[4];
        assert_int_equal(fg_http1_chunked_trailers(&d, t, 4), 2);
        assert_true(t[0].name.len == 11 && memcmp(t[0].name.base, "grpc-status", 11) == 0);
        assert_true(t[0].value.len == 1 && t[0].value.base[0] == '0');
        assert_true(t[1].name.len == 5 && memcmp(t[1].name.base, "X-Sum", 5) == 0);
        assert_true(t[1].value.len == 3 && memcmp(t[1].value.base, "abc", 3) == 0);
    }
}

static void no_trailers_no_memory(void **state)
{
    fg_http1_chunked_t d;
    char body[64];
    int asked;
    assert_int_equal(decode(&d, "3\r\nabc\r\n0\r\n\r\n", 1, body, &asked), 1);
    assert_int_equal(asked, 0);
    assert_int_equal(fg_http1_chunked_trailer_count(&d), 0);
}

static void cap_bounds_the_fields(void **state)
{
    fg_http1_chunked_t d;
    char body[64];
    int asked;
    assert_int_equal(decode(&d, "0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n", 4, body, &asked), 1);
    fg_http_header_t t[2];
    assert_int_equal(fg_http1_chunked_trailers(&d, t, 2), 2); /* the third is discarded */
    assert_int_equal(fg_http1_chunked_trailer_count(&d), 3);
}

static void oversized_trailers_rejected(void **state)
{
    static char msg[20000];
    strcpy(msg, "0\r\nx: ");
    memset(msg + 6, 'a', 9000);
    strcpy(msg + 9006, "\r\n\r\n");
    fg_http1_chunked_t d;
    char body[64];
    int asked;
    assert_int_equal(decode(&d, msg, 512, body, &asked), FG_HTTP1_ERR_BAD);
}

static void invalid_trailer_rejected(void **state)
{
    fg_http1_chunked_t d;
    char body[64];
    int asked;
    assert_int_equal(decode(&d, "0\r\nbad field: 1\r\n\r\n", 64, body, &asked), FG_HTTP1_ERR_BAD);
    assert_int_equal(decode(&d, "0\r\n folded: 1\r\n\r\n", 64, body, &asked), FG_HTTP1_ERR_BAD);
}

static void not_kept_without_memory(void **state)
{
    /* A caller that gives no memory when asked: the fields are checked and discarded. */
    static const char msg[] = "0\r\nk: v\r\n\r\n";
    fg_http1_chunked_t d;
    fg_http1_chunked_init(&d);
    fg_http1_chunked_keep_trailers(&d);
    size_t off = 0, consumed, data;
    int r;
    do {
        r = fg_http1_chunked_step(&d, msg + off, strlen(msg) - off, &consumed, &data);
        off += consumed;
    } while (r == 0);
    assert_int_equal(r, 1);
    assert_int_equal(off, strlen(msg));
    assert_int_equal(fg_http1_chunked_trailer_count(&d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trailers_kept),
        cmocka_unit_test(no_trailers_no_memory),
        cmocka_unit_test(cap_bounds_the_fields),
        cmocka_unit_test(oversized_trailers_rejected),
        cmocka_unit_test(invalid_trailer_rejected),
        cmocka_unit_test(not_kept_without_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
