/* Unit tests for common/http1_parser.c: request and response heads, framing rules that stop
 * request smuggling (RFC 9112 6.1, 6.3, 11.2), limits, and the chunked decoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/http1_parser.h"

#define NHDR 128

static fg_http_header_t hdrs[NHDR];
static fg_http1_head_t head;
static char *msg; /* exact-size copy of the message under test, so ASan sees over-reads */

static void set_msg(const char *s, size_t len)
{
    free(msg);
    msg = malloc(len ? len : 1);
    assert_non_null(msg);
    memcpy(msg, s, len);
    memset(&head, 0, sizeof(head));
    head.headers = hdrs;
    head.headers_cap = NHDR;
}

static int req_n(const char *s, size_t len, const fg_http1_limits_t *lim)
{
    set_msg(s, len);
    return fg_http1_parse_request(msg, len, lim, &head);
}

static int req(const char *s)
{
    return req_n(s, strlen(s), NULL);
}

static int resp(const char *s)
{
    set_msg(s, strlen(s));
    return fg_http1_parse_response(msg, strlen(s), NULL, &head);
}

static void assert_slice(fg_str_t got, const char *want)
{
    assert_int_equal(got.len, strlen(want));
    assert_memory_equal(got.base, want, got.len);
}

static int teardown(void **state)
{
    free(msg);
    msg = NULL;
    return 0;
}

/* ---- valid requests ---- */

static void get_simple(void **state)
{
    const char *s = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_slice(head.method, "GET");
    assert_slice(head.target, "/index.html?q=1");
    assert_int_equal(head.minor_version, 1);
    assert_int_equal(head.num_headers, 1);
    assert_slice(head.headers[0].name, "Host");
    assert_slice(head.headers[0].value, "example.com");
    assert_slice(head.host, "example.com");
    assert_int_equal(head.content_length, -1);
    assert_int_equal(head.chunked, 0);
    assert_int_equal(head.te_present, 0);
    /* slices point into the buffer, no copies */
    assert_ptr_equal(head.method.base, msg);
}

static void post_content_length(void **state)
{
    const char *s = "POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nhello world!";
    assert_int_equal(req(s), (int)strlen(s) - 12);
    assert_int_equal(head.content_length, 12);
}

static void methods_various(void **state)
{
    static const char *methods[] = {"GET",   "HEAD",  "POST",     "PUT",      "DELETE",
                                    "PATCH", "TRACE", "M-SEARCH", "PROPFIND", "X_CUSTOM!"};
    char buf[128];
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        int n = snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: h\r\n\r\n", methods[i]);
        assert_int_equal(req(buf), n);
        assert_slice(head.method, methods[i]);
    }
}

static void target_forms(void **state)
{
    const char *abs =
        "GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
    assert_int_equal(req(abs), (int)strlen(abs));
    assert_slice(head.target, "http://example.com:8080/a/b?c=d");
    const char *ast = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(req(ast), (int)strlen(ast));
    assert_slice(head.target, "*");
    const char *auth = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    assert_int_equal(req(auth), (int)strlen(auth));
    assert_slice(head.method, "CONNECT");
    assert_slice(head.target, "example.com:443");
}

static void http10_without_host(void **state)
{
    const char *s = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(head.minor_version, 0);
    assert_int_equal(head.num_headers, 0);
    assert_null(head.host.base);
}

static void http11_without_host(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void host_empty_allowed(void **state)
{
    /* RFC 9112 3.2: an empty Host when the target has no authority. */
    const char *s = "GET / HTTP/1.1\r\nHost:\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_non_null(head.host.base);
    assert_int_equal(head.host.len, 0);
}

static void host_twice(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void host_invalid(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: exa mple\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), FG_HTTP1_ERR_BAD);
    const char *v6 = "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n";
    assert_int_equal(req(v6), (int)strlen(v6));
    assert_slice(head.host, "[::1]:8080");
}

static void many_headers_exact_slices(void **state)
{
    char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "GET /x HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-Field-%d: value %d\r\n", i, i * 7);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
    assert_int_equal(req(buf), (int)n);
    assert_int_equal(head.num_headers, 61);
    for (int i = 0; i < 60; i++) {
        char name[32], value[32];
        snprintf(name, sizeof(name), "X-Field-%d", i);
        snprintf(value, sizeof(value), "value %d", i * 7);
        assert_slice(head.headers[i + 1].name, name);
        assert_slice(head.headers[i + 1].value, value);
    }
}

/* A byte at any offset of a field name, for names shorter and longer than the 16-byte block
 * checked at once: tchars (RFC 9110 5.6.2) make a name, anything else is a 400, and the name
 * ends at its colon. */
static void name_bytes_at_every_offset(void **state)
{
    const char *pre = "GET / HTTP/1.1\r\nHost: h\r\n";
    const char *tchar_punct = "!#$%&'*+-.^_`|~";
    size_t plen = strlen(pre);
    for (size_t nlen = 1; nlen <= 20; nlen++) {
        for (size_t at = 0; at < nlen; at++) {
            for (int c = 1; c < 256; c++) {
                char buf[128];
                memcpy(buf, pre, plen);
                memset(buf + plen, 'n', nlen);
                buf[plen + at] = (char)c;
                /* a field after it, so that even a short name has 16 bytes to load */
                static const char tail[] = ": v\r\nX-Pad: 0123456789abcdef\r\n\r\n";
                memcpy(buf + plen + nlen, tail, sizeof(tail) - 1);
                size_t len = plen + nlen + sizeof(tail) - 1;
                int r = req_n(buf, len, NULL);
                int tchar = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
                            strchr(tchar_punct, c) != NULL;
                if (c == ':' && at > 0) {
                    /* the name ends early; the rest of it starts the value */
                    assert_int_equal(r, (int)len);
                    assert_int_equal(head.headers[1].name.len, at);
                    continue;
                }
                if (!tchar) {
                    assert_true(r < 0);
                    continue;
                }
                assert_int_equal(r, (int)len);
                assert_int_equal(head.headers[1].name.len, nlen);
                assert_int_equal(head.headers[1].name.base[at], (char)c);
            }
        }
    }
}

static void ows_trimmed(void **state)
{
    const char *s = "GET / HTTP/1.1\r\nHost:h\r\nX-A: \t a  b \t \r\nX-Empty:\r\nX-Sp:   \r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_slice(head.headers[0].value, "h");
    assert_slice(head.headers[1].value, "a  b");
    assert_slice(head.headers[2].value, "");
    assert_slice(head.headers[3].value, "");
}

static void obs_text_allowed(void **state)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9 \xff\x80\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_slice(head.headers[1].value, "caf\xc3\xa9 \xff\x80");
}

/* A control byte at any offset of a long value (where the value is scanned eight bytes at a
 * time) ends the scan there: HTAB belongs to the value, every other CTL and DEL is a 400, and
 * obs-text after a HTAB still passes. */
static void value_bytes_at_every_offset(void **state)
{
    const char *pre = "GET / HTTP/1.1\r\nHost: h\r\nX-V: ";
    size_t plen = strlen(pre);
    for (size_t vlen = 1; vlen <= 24; vlen++) {
        for (size_t at = 0; at < vlen; at++) {
            for (int c = 0; c < 256; c++) {
                char buf[128];
                memcpy(buf, pre, plen);
                memset(buf + plen, 'a', vlen);
                buf[plen + at] = (char)c;
                memcpy(buf + plen + vlen, "\r\n\r\n", 4);
                size_t len = plen + vlen + 4;
                int r = req_n(buf, len, NULL);
                int ok = c == '\t' || (c >= 0x20 && c != 0x7f);
                if (c == '\r' || c == '\n' || !ok) {
                    assert_true(r < 0);
                    continue;
                }
                assert_int_equal(r, (int)len);
                /* OWS at either end is trimmed off the value */
                size_t lo = at == 0 && (c == ' ' || c == '\t') ? 1 : 0;
                size_t hi = at == vlen - 1 && at > 0 && (c == ' ' || c == '\t') ? 1 : 0;
                assert_int_equal(head.headers[1].value.len, vlen - lo - hi);
            }
        }
    }
}

static void leading_crlf(void **state)
{
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_slice(head.method, "GET");
    assert_int_equal(req("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("\r"), FG_HTTP1_INCOMPLETE);
    assert_int_equal(req("\r\n"), FG_HTTP1_INCOMPLETE);
}

static void incremental_every_prefix(void **state)
{
    const char *s = "POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n"
                    "X-Long: abcdefghijklmnopqrstuvwxyz0123456789\r\n\r\n";
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(req_n(s, i, NULL), FG_HTTP1_INCOMPLETE);
    assert_int_equal(req_n(s, len, NULL), (int)len);
    assert_int_equal(head.content_length, 3);
}

static void pipelined(void **state)
{
    const char *first = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    char buf[256];
    snprintf(buf, sizeof(buf), "%sGET /b HTTP/1.1\r\nHost: h\r\n\r\n", first);
    assert_int_equal(req(buf), (int)strlen(first));
    assert_slice(head.target, "/a");
    assert_int_equal(req(buf + strlen(first)), (int)strlen(buf) - (int)strlen(first));
    assert_slice(head.target, "/b");
}

static void restart_same_head(void **state)
{
    /* Called again on the same head struct with the buffer grown: fresh results each time. */
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n";
    set_msg(s, strlen(s));
    assert_int_equal(fg_http1_parse_request(msg, 20, NULL, &head), FG_HTTP1_INCOMPLETE);
    assert_int_equal(fg_http1_parse_request(msg, strlen(s), NULL, &head), (int)strlen(s));
    assert_int_equal(fg_http1_parse_request(msg, strlen(s), NULL, &head), (int)strlen(s));
    assert_int_equal(head.num_headers, 2);
    assert_int_equal(head.content_length, 4);
}

/* ---- framing and smuggling vectors ---- */

static void smuggle_cl_and_te(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: 0\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void cl_list_identical(void **state)
{
    const char *s = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(head.content_length, 5);
    const char *r = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n";
    assert_int_equal(req(r), (int)strlen(r));
    assert_int_equal(head.content_length, 7);
}

static void cl_differing(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                         "Content-Length: 50\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void cl_sign(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void cl_space_inside(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void cl_letters(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5a\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void cl_overflow(void **state)
{
    /* 2^62 is out, 2^62 - 1 is in. */
    assert_int_equal(
        req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4611686018427387904\r\n\r\n"),
        FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\n"
                         "Content-Length: 99999999999999999999999999\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    const char *ok = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4611686018427387903\r\n\r\n";
    assert_int_equal(req(ok), (int)strlen(ok));
    assert_int_equal(head.content_length, INT64_C(4611686018427387903));
}

static void te_chunked(void **state)
{
    const char *s = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(head.te_present, 1);
    assert_int_equal(head.chunked, 1);
    assert_int_equal(head.content_length, -1);
    const char *up = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n";
    assert_int_equal(req(up), (int)strlen(up));
    assert_int_equal(head.chunked, 1);
}

/* RFC 9112 6.1: a coding the gateway does not decode, before the final chunked, is answered
 * 501 rather than dropped while the body goes on as if it were plain. */
static void te_other_coding_not_implemented(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
                     FG_HTTP1_ERR_NOT_IMPLEMENTED);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x, chunked\r\n\r\n"),
                     FG_HTTP1_ERR_NOT_IMPLEMENTED);
    /* Split over two fields, with an unknown coding carrying a parameter. */
    const char *two = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x-custom;q=\"a,b\"\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(req(two), FG_HTTP1_ERR_NOT_IMPLEMENTED);
    /* The RFC 9112 6.3 errors keep their 400: with Content-Length, or chunked not final. */
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n"
                         "Content-Length: 5\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(
        req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked, gzip\r\n\r\n"),
        FG_HTTP1_ERR_BAD);
}

static void te_not_ending_chunked(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         "Transfer-Encoding: identity\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void te_chunked_twice(void **state)
{
    assert_int_equal(
        req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
        FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void te_in_http10(void **state)
{
    assert_int_equal(req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void te_malformed(void **state)
{
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chun ked\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void whitespace_before_colon(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void obs_fold(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n"), FG_HTTP1_ERR_BAD);
    /* A leading SP on the first field line is the same thing. */
    assert_int_equal(req("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void nul_in_value(void **state)
{
    static const char s[] = "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n";
    assert_int_equal(req_n(s, sizeof(s) - 1, NULL), FG_HTTP1_ERR_BAD);
}

static void cr_in_value(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void ctl_and_del_in_value(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01z\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: 0123456789\x7f\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    /* HTAB is allowed inside a value */
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_slice(head.headers[1].value, "a\tb");
}

static void bare_lf_request_line(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    /* detected before the head is complete, so a strict client is not left waiting */
    assert_int_equal(req("GET / HTTP/1.1\nHo"), FG_HTTP1_ERR_BAD);
}

static void bare_lf_header(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void bare_lf_end(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\n\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\nHost: h\n\n"), FG_HTTP1_ERR_BAD);
}

static void bad_request_line(void **state)
{
    assert_int_equal(req("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET /\tx HTTP/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void bad_field_name(void **state)
{
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX(y): 1\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX\x80: 1\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void version_505(void **state)
{
    assert_int_equal(req("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_VERSION);
    assert_int_equal(req("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_VERSION);
    assert_int_equal(req("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), FG_HTTP1_ERR_VERSION);
}

static void version_malformed(void **state)
{
    assert_int_equal(req("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / http/1.1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(req("GET / HTTP/1.x\r\nHost: h\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void version_minor_kept(void **state)
{
    const char *s = "GET / HTTP/1.2\r\nHost: h\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(head.minor_version, 2);
    assert_int_equal(req("GET / HTTP/1.2\r\n\r\n"), FG_HTTP1_ERR_BAD); /* Host still required */
}

/* ---- limits ---- */

static void uri_too_long(void **state)
{
    fg_http1_limits_t lim = {.max_request_line = 32};
    /* "GET /" + 17 + " HTTP/1.1" = 31 bytes, then 32, then 33 */
    const char *ok = "GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(req_n(ok, strlen(ok), &lim), (int)strlen(ok));
    const char *bad = "GET /aaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(req_n(bad, strlen(bad), &lim), FG_HTTP1_ERR_URI_TOO_LONG);
    /* before the line is complete */
    const char *part = "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_int_equal(req_n(part, strlen(part), &lim), FG_HTTP1_ERR_URI_TOO_LONG);
    assert_int_equal(req_n(part, 32, &lim), FG_HTTP1_INCOMPLETE);
}

static void uri_too_long_default(void **state)
{
    size_t n = 9000;
    char *buf = malloc(n);
    assert_non_null(buf);
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', n - 5);
    assert_int_equal(req_n(buf, n, NULL), FG_HTTP1_ERR_URI_TOO_LONG);
    free(buf);
}

static void headers_too_large_size(void **state)
{
    fg_http1_limits_t lim = {.max_header_size = 64};
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-Long: 0123456789012345678901234567890\r\n\r\n";
    assert_int_equal(req_n(s, strlen(s), &lim), FG_HTTP1_ERR_HEADERS_TOO_LARGE);
    /* incomplete but already over */
    assert_int_equal(req_n(s, 66, &lim), FG_HTTP1_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(req_n(s, 40, &lim), FG_HTTP1_INCOMPLETE);
    /* exactly at the limit passes */
    lim.max_header_size = strlen(s);
    assert_int_equal(req_n(s, strlen(s), &lim), (int)strlen(s));
}

static void headers_too_large_count(void **state)
{
    fg_http1_limits_t lim = {.max_headers = 3};
    const char *ok = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(req_n(ok, strlen(ok), &lim), (int)strlen(ok));
    const char *bad = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_int_equal(req_n(bad, strlen(bad), &lim), FG_HTTP1_ERR_HEADERS_TOO_LARGE);
}

static void headers_over_cap(void **state)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    set_msg(s, strlen(s));
    head.headers_cap = 2;
    assert_int_equal(fg_http1_parse_request(msg, strlen(s), NULL, &head),
                     FG_HTTP1_ERR_HEADERS_TOO_LARGE);
    head.headers_cap = 3;
    assert_int_equal(fg_http1_parse_request(msg, strlen(s), NULL, &head), (int)strlen(s));
}

/* ---- connection facts ---- */

static void connection_tokens(void **state)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, UPGRADE\r\n"
                    "Connection: close\r\nUpgrade: websocket\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(head.conn_keep_alive, 1);
    assert_int_equal(head.conn_upgrade, 1);
    assert_int_equal(head.conn_close, 1);
    assert_slice(head.upgrade, "websocket");
    const char *t = "GET / HTTP/1.1\r\nHost: h\r\nConnection: closed, keep-alivex\r\n\r\n";
    assert_int_equal(req(t), (int)strlen(t));
    assert_int_equal(head.conn_close, 0);
    assert_int_equal(head.conn_keep_alive, 0);
    /* one option alone, in any case and with OWS around it */
    const char *u = "GET / HTTP/1.1\r\nHost: h\r\nConnection:  CLOSE \r\n\r\n";
    assert_int_equal(req(u), (int)strlen(u));
    assert_int_equal(head.conn_close, 1);
    assert_int_equal(head.conn_keep_alive, 0);
    const char *v = "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alivf\r\n\r\n";
    assert_int_equal(req(v), (int)strlen(v));
    assert_int_equal(head.conn_keep_alive, 0);
}

static void expect_continue(void **state)
{
    const char *s =
        "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(head.expect_continue, 1);
    const char *t = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n";
    assert_int_equal(req(t), (int)strlen(t));
    assert_int_equal(head.expect_continue, 0);
}

/* ---- responses ---- */

static void resp_simple(void **state)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nhi";
    assert_int_equal(resp(s), (int)strlen(s) - 2);
    assert_int_equal(head.status, 200);
    assert_slice(head.reason, "OK");
    assert_int_equal(head.minor_version, 1);
    assert_int_equal(head.content_length, 2);
    assert_int_equal(head.num_headers, 2);
}

static void resp_reason_spaces(void **state)
{
    const char *s = "HTTP/1.0 404 Not Found Here \r\n\r\n";
    assert_int_equal(resp(s), (int)strlen(s));
    assert_int_equal(head.status, 404);
    assert_int_equal(head.minor_version, 0);
    assert_slice(head.reason, "Not Found Here ");
}

static void resp_empty_reason(void **state)
{
    const char *s = "HTTP/1.1 204 \r\n\r\n";
    assert_int_equal(resp(s), (int)strlen(s));
    assert_int_equal(head.status, 204);
    assert_int_equal(head.reason.len, 0);
    const char *t = "HTTP/1.1 304\r\nETag: \"x\"\r\n\r\n";
    assert_int_equal(resp(t), (int)strlen(t));
    assert_int_equal(head.status, 304);
    assert_int_equal(head.reason.len, 0);
}

static void resp_te_wins_over_cl(void **state)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(resp(s), (int)strlen(s));
    assert_int_equal(head.chunked, 1);
    assert_int_equal(head.te_present, 1);
    assert_int_equal(head.content_length, -1);
}

static void resp_te_not_chunked(void **state)
{
    const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_int_equal(resp(s), (int)strlen(s));
    assert_int_equal(head.chunked, 0);
    assert_int_equal(head.te_present, 1);
    assert_int_equal(head.te_other, 1);
    assert_int_equal(head.content_length, -1);
    const char *gz =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(resp(gz), (int)strlen(gz));
    assert_int_equal(head.chunked, 1);
    assert_int_equal(head.te_other, 1); /* chunked over gzip: still a coding we cannot undo */
    const char *ch = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(resp(ch), (int)strlen(ch));
    assert_int_equal(head.te_other, 0);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
}

static void resp_cl_differing(void **state)
{
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"), FG_HTTP1_ERR_BAD);
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 3,3\r\n\r\n";
    assert_int_equal(resp(s), (int)strlen(s));
    assert_int_equal(head.content_length, 3);
}

static void resp_bad_status_line(void **state)
{
    assert_int_equal(resp("HTTP/1.1 20 OK\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 2000 OK\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 abc OK\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 099 Low\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1  200 OK\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 O\x01K\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/2.0 200 OK\r\n\r\n"), FG_HTTP1_ERR_VERSION);
    assert_int_equal(resp("HTTP/1.1 200 OK\nX: y\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

/* RFC 9112 4: the first line settles whether an answer is HTTP at all; the parser does not
 * wait for a blank line that a peer speaking something else never sends. */
static void resp_first_line_decides(void **state)
{
    assert_int_equal(resp("hello world\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("hello"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTX"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 999 OK\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\nServer: x\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/2.0 200 OK\r\n"), FG_HTTP1_ERR_VERSION);
    assert_int_equal(resp(""), FG_HTTP1_INCOMPLETE);
    assert_int_equal(resp("HTTP/1.1 200 OK"), FG_HTTP1_INCOMPLETE);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\n"), FG_HTTP1_INCOMPLETE);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nServer: x\r\n"), FG_HTTP1_INCOMPLETE);
    assert_int_equal(head.status, 0); /* nothing half-filled on an incomplete head */
}

/* RFC 9110 15: status codes are 100..599. */
static void resp_status_range(void **state)
{
    assert_int_equal(resp("HTTP/1.1 600 X\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 999 X\r\n\r\n"), FG_HTTP1_ERR_BAD);
    const char *lo = "HTTP/1.1 100 Continue\r\n\r\n";
    assert_int_equal(resp(lo), (int)strlen(lo));
    assert_int_equal(head.status, 100);
    const char *hi = "HTTP/1.1 599 X\r\n\r\n";
    assert_int_equal(resp(hi), (int)strlen(hi));
    assert_int_equal(head.status, 599);
}

static void resp_incremental(void **state)
{
    const char *s = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\n\r\n";
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        set_msg(s, i);
        assert_int_equal(fg_http1_parse_response(msg, i, NULL, &head), FG_HTTP1_INCOMPLETE);
    }
    assert_int_equal(resp(s), (int)len);
    assert_int_equal(head.status, 101);
    assert_int_equal(head.conn_upgrade, 1);
    assert_slice(head.upgrade, "websocket");
}

static void resp_headers_too_large(void **state)
{
    fg_http1_limits_t lim = {.max_header_size = 20};
    const char *s = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
    set_msg(s, strlen(s));
    assert_int_equal(fg_http1_parse_response(msg, strlen(s), &lim, &head),
                     FG_HTTP1_ERR_HEADERS_TOO_LARGE);
}

/* A response followed by its body (the head is not at the end of the buffer): the head ends at
 * the first empty line, and every rule of a head alone still holds. */
static void resp_with_body_after_head(void **state)
{
    const char *h = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\n"
                    "Connection: Keep-Alive\r\n\r\n";
    char s[256];
    snprintf(s, sizeof(s), "%shello\r\n\r\nworld", h);
    assert_int_equal(resp(s), (int)strlen(h));
    assert_int_equal(head.content_length, 12);
    assert_int_equal(head.conn_keep_alive, 1);
    assert_int_equal(head.num_headers, 3);
    /* a bare LF anywhere in the head, even with a CRLF CRLF later */
    assert_int_equal(resp("HTTP/1.1 200 OK\nServer: x\r\n\r\nbody"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nServer: x\n\r\n\r\nbody"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nA: 1\r\n\nB: 2\r\n\r\nbody"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nA: 1\r\r\n\r\nbody"), FG_HTTP1_ERR_BAD);
    /* the empty line at every offset of the word-at-a-time scan */
    for (size_t pad = 0; pad < 20; pad++) {
        char v[32];
        memset(v, 'v', pad);
        v[pad] = '\0';
        snprintf(s, sizeof(s), "HTTP/1.1 204 No Content\r\nX: a%s\r\n\r\nrest", v);
        assert_int_equal(resp(s), (int)(strlen(s) - 4));
        assert_int_equal(head.num_headers, 1);
        assert_int_equal(head.headers[0].value.len, pad + 1);
    }
    /* no empty line yet: incomplete, or too large past the limit */
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nServer: x\r\nbody\r\n"), FG_HTTP1_INCOMPLETE);
    fg_http1_limits_t lim = {.max_header_size = 24};
    const char *big = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody";
    set_msg(big, strlen(big));
    assert_int_equal(fg_http1_parse_response(msg, strlen(big), &lim, &head),
                     FG_HTTP1_ERR_HEADERS_TOO_LARGE);
}

/* Content-Length of one value and of a list, in one field or several (RFC 9110 8.6). */
static void content_length_values(void **state)
{
    assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n") > 0);
    assert_int_equal(head.content_length, 7);
    assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n") > 0);
    assert_int_equal(head.content_length, 999999999999999999LL);
    assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n") > 0);
    assert_int_equal(head.content_length, 5);
    assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n") > 0);
    assert_int_equal(head.content_length, 5);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 6\r\n\r\n"),
                     FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 4611686018427387904\r\n\r\n"),
                     FG_HTTP1_ERR_BAD); /* 2^62 */
    assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 4611686018427387903\r\n\r\n") > 0);
    assert_int_equal(head.content_length, 4611686018427387903LL);
}

static void bodiless(void **state)
{
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("HEAD"), 200), 1);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("GET"), 100), 1);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("GET"), 101), 1);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("GET"), 204), 1);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("GET"), 304), 1);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("CONNECT"), 200), 1);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("CONNECT"), 407), 0);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("GET"), 200), 0);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("POST"), 404), 0);
    assert_int_equal(fg_http1_response_bodiless(FG_STR_LIT("head"), 200), 0);
}

/* ---- chunked decoder ---- */

/* Decode in[0..len) fed `piece` bytes at a time (0: all at once); the body goes to out.
 * Returns 1 (done, *end = bytes of the message), 0 (needs more) or a negative code. */
static int decode(const char *in, size_t len, size_t piece, size_t max_trailer, char *out,
                  size_t *outlen, size_t *end)
{
    fg_http1_chunked_t d;
    fg_http1_chunked_init(&d);
    d.max_trailer = max_trailer;
    size_t pos = 0, avail = piece ? 0 : len;
    *outlen = 0;
    for (;;) {
        size_t consumed = 0, dl = 0;
        int rc = fg_http1_chunked_step(&d, in + pos, avail - pos, &consumed, &dl);
        if (rc < 0)
            return rc;
        assert_true(dl == 0 || dl == consumed);
        memcpy(out + *outlen, in + pos, dl);
        *outlen += dl;
        pos += consumed;
        if (rc == 1) {
            *end = pos;
            return 1;
        }
        if (consumed == 0) {
            if (avail == len)
                return 0;
            avail = avail + piece > len ? len : avail + piece;
        }
    }
}

static int dec(const char *in)
{
    char out[1024];
    size_t outlen, end;
    return decode(in, strlen(in), 0, 0, out, &outlen, &end);
}

static const char chunked_msg[] = "5\r\nhello\r\n6;name=value;flag\r\n world\r\n"
                                  "A ; q=\"a \\\"b\\\"\"\r\n0123456789\r\n0\r\n"
                                  "X-Trailer: yes\r\nX-Other:v\r\n\r\n"
                                  "NEXT";

static void chunked_whole(void **state)
{
    char out[256];
    size_t outlen, end;
    size_t len = strlen(chunked_msg);
    assert_int_equal(decode(chunked_msg, len, 0, 0, out, &outlen, &end), 1);
    assert_int_equal(outlen, 21);
    assert_memory_equal(out, "hello world0123456789", 21);
    assert_int_equal(end, len - 4); /* stops before the next message */
}

static void chunked_byte_by_byte(void **state)
{
    size_t len = strlen(chunked_msg);
    for (size_t piece = 1; piece <= 7; piece++) {
        char out[256];
        size_t outlen, end;
        assert_int_equal(decode(chunked_msg, len, piece, 0, out, &outlen, &end), 1);
        assert_int_equal(outlen, 21);
        assert_memory_equal(out, "hello world0123456789", 21);
        assert_int_equal(end, len - 4);
    }
}

static void chunked_incomplete(void **state)
{
    char out[256];
    size_t outlen, end;
    size_t len = strlen(chunked_msg) - 4;
    for (size_t i = 0; i < len; i++)
        assert_int_equal(decode(chunked_msg, i, 1, 0, out, &outlen, &end), 0);
}

static void chunked_uppercase_and_zeros(void **state)
{
    char out[64];
    size_t outlen, end;
    const char *s = "00000000000000A\r\n0123456789\r\n0000\r\n\r\n";
    assert_int_equal(decode(s, strlen(s), 0, 0, out, &outlen, &end), 1);
    assert_int_equal(outlen, 10);
    assert_int_equal(end, strlen(s));
}

static void chunked_size_limits(void **state)
{
    fg_http1_chunked_t d;
    size_t consumed, dl;
    /* 2^62 - 1 is a valid size */
    fg_http1_chunked_init(&d);
    assert_int_equal(fg_http1_chunked_step(&d, "3fffffffffffffff\r\n", 18, &consumed, &dl), 0);
    assert_int_equal(consumed, 18);
    assert_int_equal(d.remaining, UINT64_C(0x3fffffffffffffff));
    assert_int_equal(dec("4000000000000000\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("ffffffffffffffffff\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("00000000000000001\r\nx\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD); /* 17 */
    assert_int_equal(dec("0000000000000001\r\nx\r\n0\r\n\r\n"), 1);                 /* 16 */
}

static void chunked_invalid_sizes(void **state)
{
    assert_int_equal(dec("\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("x\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec(" 5\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("0x5\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("-1\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("+5\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5 \r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5g\r\n"), FG_HTTP1_ERR_BAD);
}

static void chunked_bad_extensions(void **state)
{
    assert_int_equal(dec("5;\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5;a=\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5;a b\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5;a=\"x\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5;a=\x01\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5 ; a = b ; c\r\nhello\r\n0\r\n\r\n"), 1);
}

static void chunked_size_line_too_long(void **state)
{
    char buf[6000];
    int n = snprintf(buf, sizeof(buf), "5;x=");
    memset(buf + n, 'a', 5000);
    snprintf(buf + n + 5000, sizeof(buf) - (size_t)n - 5000, "\r\nhello\r\n0\r\n\r\n");
    assert_int_equal(dec(buf), FG_HTTP1_ERR_BAD);
    /* 4000 bytes of extension still fit */
    buf[n + 4000] = 0;
    strcat(buf, "\r\nhello\r\n0\r\n\r\n");
    assert_int_equal(dec(buf), 1);
}

static void chunked_bare_lf(void **state)
{
    assert_int_equal(dec("5\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5\r\nhello\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5\r\nhello\r\n0\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5\r\nhello\r\n0\r\n\n"), FG_HTTP1_ERR_BAD);
}

static void chunked_data_without_crlf(void **state)
{
    assert_int_equal(dec("5\r\nhelloX\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("5\r\nhello0\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("3\r\nhello\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD); /* size too small */
    assert_int_equal(dec("5\r\nhello\r\r\n0\r\n\r\n"), FG_HTTP1_ERR_BAD);
}

static void chunked_bad_trailers(void **state)
{
    assert_int_equal(dec("0\r\nX: a\r\n b\r\n\r\n"), FG_HTTP1_ERR_BAD); /* obs-fold */
    assert_int_equal(dec("0\r\nNoColon\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("0\r\nX : a\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("0\r\nX: a\rb\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("0\r\nX: a\x7f\r\n\r\n"), FG_HTTP1_ERR_BAD);
    assert_int_equal(dec("0\r\nX: \xc3\xa9\r\n\r\n"), 1);
}

static void chunked_trailer_limit(void **state)
{
    char out[64];
    size_t outlen, end;
    const char *s = "0\r\nX-Trailer: 0123456789\r\n\r\n"; /* 25 trailer bytes */
    assert_int_equal(decode(s, strlen(s), 0, 24, out, &outlen, &end), FG_HTTP1_ERR_BAD);
    assert_int_equal(decode(s, strlen(s), 0, 25, out, &outlen, &end), 1);
    char big[10000];
    int n = snprintf(big, sizeof(big), "0\r\nX: ");
    memset(big + n, 'v', 9000);
    strcpy(big + n + 9000, "\r\n\r\n");
    assert_int_equal(dec(big), FG_HTTP1_ERR_BAD); /* default 8192 */
}

static void chunked_sticky_states(void **state)
{
    fg_http1_chunked_t d;
    size_t consumed, dl;
    fg_http1_chunked_init(&d);
    assert_int_equal(fg_http1_chunked_step(&d, "z", 1, &consumed, &dl), FG_HTTP1_ERR_BAD);
    assert_int_equal(fg_http1_chunked_step(&d, "5\r\n", 3, &consumed, &dl), FG_HTTP1_ERR_BAD);

    fg_http1_chunked_init(&d);
    assert_int_equal(fg_http1_chunked_step(&d, "0\r\n\r\nGET", 8, &consumed, &dl), 1);
    assert_int_equal(consumed, 5);
    assert_int_equal(dl, 0);
    assert_int_equal(fg_http1_chunked_step(&d, "GET", 3, &consumed, &dl), 1);
    assert_int_equal(consumed, 0);
}

static void chunked_data_at_offset_zero(void **state)
{
    fg_http1_chunked_t d;
    size_t consumed, dl;
    const char *s = "4\r\nabcd\r\n";
    fg_http1_chunked_init(&d);
    assert_int_equal(fg_http1_chunked_step(&d, s, strlen(s), &consumed, &dl), 0);
    assert_int_equal(consumed, 3);
    assert_int_equal(dl, 0);
    assert_int_equal(fg_http1_chunked_step(&d, s + 3, strlen(s) - 3, &consumed, &dl), 0);
    assert_int_equal(dl, 4);
    assert_int_equal(consumed, 4);
    assert_int_equal(fg_http1_chunked_step(&d, s + 7, 2, &consumed, &dl), 0);
    assert_int_equal(consumed, 2);
    assert_int_equal(dl, 0);
    /* partial data: only what is there */
    assert_int_equal(fg_http1_chunked_step(&d, "3\r\nab", 5, &consumed, &dl), 0);
    assert_int_equal(consumed, 3);
    assert_int_equal(fg_http1_chunked_step(&d, "ab", 2, &consumed, &dl), 0);
    assert_int_equal(dl, 2);
    assert_int_equal(d.remaining, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(get_simple, teardown),
        cmocka_unit_test_teardown(post_content_length, teardown),
        cmocka_unit_test_teardown(methods_various, teardown),
        cmocka_unit_test_teardown(target_forms, teardown),
        cmocka_unit_test_teardown(http10_without_host, teardown),
        cmocka_unit_test_teardown(http11_without_host, teardown),
        cmocka_unit_test_teardown(host_empty_allowed, teardown),
        cmocka_unit_test_teardown(host_twice, teardown),
        cmocka_unit_test_teardown(host_invalid, teardown),
        cmocka_unit_test_teardown(many_headers_exact_slices, teardown),
        cmocka_unit_test_teardown(name_bytes_at_every_offset, teardown),
        cmocka_unit_test_teardown(ows_trimmed, teardown),
        cmocka_unit_test_teardown(obs_text_allowed, teardown),
        cmocka_unit_test_teardown(value_bytes_at_every_offset, teardown),
        cmocka_unit_test_teardown(leading_crlf, teardown),
        cmocka_unit_test_teardown(incremental_every_prefix, teardown),
        cmocka_unit_test_teardown(pipelined, teardown),
        cmocka_unit_test_teardown(restart_same_head, teardown),
        cmocka_unit_test_teardown(smuggle_cl_and_te, teardown),
        cmocka_unit_test_teardown(cl_list_identical, teardown),
        cmocka_unit_test_teardown(cl_differing, teardown),
        cmocka_unit_test_teardown(cl_sign, teardown),
        cmocka_unit_test_teardown(cl_space_inside, teardown),
        cmocka_unit_test_teardown(cl_letters, teardown),
        cmocka_unit_test_teardown(cl_overflow, teardown),
        cmocka_unit_test_teardown(te_chunked, teardown),
        cmocka_unit_test_teardown(te_other_coding_not_implemented, teardown),
        cmocka_unit_test_teardown(te_not_ending_chunked, teardown),
        cmocka_unit_test_teardown(te_chunked_twice, teardown),
        cmocka_unit_test_teardown(te_in_http10, teardown),
        cmocka_unit_test_teardown(te_malformed, teardown),
        cmocka_unit_test_teardown(whitespace_before_colon, teardown),
        cmocka_unit_test_teardown(obs_fold, teardown),
        cmocka_unit_test_teardown(nul_in_value, teardown),
        cmocka_unit_test_teardown(cr_in_value, teardown),
        cmocka_unit_test_teardown(ctl_and_del_in_value, teardown),
        cmocka_unit_test_teardown(bare_lf_request_line, teardown),
        cmocka_unit_test_teardown(bare_lf_header, teardown),
        cmocka_unit_test_teardown(bare_lf_end, teardown),
        cmocka_unit_test_teardown(bad_request_line, teardown),
        cmocka_unit_test_teardown(bad_field_name, teardown),
        cmocka_unit_test_teardown(version_505, teardown),
        cmocka_unit_test_teardown(version_malformed, teardown),
        cmocka_unit_test_teardown(version_minor_kept, teardown),
        cmocka_unit_test_teardown(uri_too_long, teardown),
        cmocka_unit_test_teardown(uri_too_long_default, teardown),
        cmocka_unit_test_teardown(headers_too_large_size, teardown),
        cmocka_unit_test_teardown(headers_too_large_count, teardown),
        cmocka_unit_test_teardown(headers_over_cap, teardown),
        cmocka_unit_test_teardown(connection_tokens, teardown),
        cmocka_unit_test_teardown(expect_continue, teardown),
        cmocka_unit_test_teardown(resp_simple, teardown),
        cmocka_unit_test_teardown(resp_reason_spaces, teardown),
        cmocka_unit_test_teardown(resp_empty_reason, teardown),
        cmocka_unit_test_teardown(resp_te_wins_over_cl, teardown),
        cmocka_unit_test_teardown(resp_te_not_chunked, teardown),
        cmocka_unit_test_teardown(resp_cl_differing, teardown),
        cmocka_unit_test_teardown(resp_bad_status_line, teardown),
        cmocka_unit_test_teardown(resp_incremental, teardown),
        cmocka_unit_test_teardown(resp_first_line_decides, teardown),
        cmocka_unit_test_teardown(resp_status_range, teardown),
        cmocka_unit_test_teardown(resp_headers_too_large, teardown),
        cmocka_unit_test_teardown(resp_with_body_after_head, teardown),
        cmocka_unit_test_teardown(content_length_values, teardown),
        cmocka_unit_test(bodiless),
        cmocka_unit_test(chunked_whole),
        cmocka_unit_test(chunked_byte_by_byte),
        cmocka_unit_test(chunked_incomplete),
        cmocka_unit_test(chunked_uppercase_and_zeros),
        cmocka_unit_test(chunked_size_limits),
        cmocka_unit_test(chunked_invalid_sizes),
        cmocka_unit_test(chunked_bad_extensions),
        cmocka_unit_test(chunked_size_line_too_long),
        cmocka_unit_test(chunked_bare_lf),
        cmocka_unit_test(chunked_data_without_crlf),
        cmocka_unit_test(chunked_bad_trailers),
        cmocka_unit_test(chunked_trailer_limit),
        cmocka_unit_test(chunked_sticky_states),
        cmocka_unit_test(chunked_data_at_offset_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
