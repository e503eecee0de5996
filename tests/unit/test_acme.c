/* Unit tests for the ACME client's pieces that need no CA: the HTTPS response parser
 * (master/http_fetch.c: framing by Content-Length, chunked, HEAD, malformed heads) and the
 * certificates and requests it makes (common/x509gen.c: the placeholder, the CSR with its
 * subjectAltName names, both verifiable with their key). pebble drives the whole client in
 * tests/integration/test_acme.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/x509v3.h>

#include "common/x509gen.h"
#include "master/http_fetch.h"

/* Parse text (copied: the parser writes in place). Returns its result, out filled. */
static int parse(const char *text, int head, fg_http_fetch_resp_t *out, const char **why)
{
    size_t n = strlen(text);
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    memcpy(buf, text, n + 1);
    int rc = fg_http_fetch_parse(buf, n, head, out, why);
    free(buf);
    return rc;
}

static void test_content_length_and_fields(void **state)
{
    (void)state;
    fg_http_fetch_resp_t r;
    const char *why = NULL;
    assert_int_equal(parse("HTTP/1.1 201 Created\r\nReplay-Nonce: n1\r\nLocation: "
                           "https://ca/acct/7\r\nContent-Type: application/json\r\n"
                           "Content-Length: 2\r\n\r\n{}trailing garbage",
                           0, &r, &why),
                     0);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.nonce, "n1");
    assert_string_equal(r.location, "https://ca/acct/7");
    assert_string_equal(r.content_type, "application/json");
    assert_int_equal(r.len, 2);
    assert_string_equal(r.body, "{}");
    fg_http_fetch_free(&r);
}

static void test_chunked_and_head(void **state)
{
    (void)state;
    fg_http_fetch_resp_t r;
    const char *why = NULL;
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
                           0, &r, &why),
                     0);
    assert_string_equal(r.body, "hello world");
    assert_int_equal(r.len, 11);
    fg_http_fetch_free(&r);
    /* RFC 9112 6.3: a HEAD's answer has no body, whatever Content-Length says */
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nReplay-Nonce: abc\r\nContent-Length: 99\r\n\r\n", 1, &r, &why),
        0);
    assert_int_equal(r.len, 0);
    assert_string_equal(r.nonce, "abc");
    fg_http_fetch_free(&r);
    /* without framing, the body runs to the end (the server closes) */
    assert_int_equal(parse("HTTP/1.0 200 OK\r\n\r\nall of it", 0, &r, &why), 0);
    assert_string_equal(r.body, "all of it");
    fg_http_fetch_free(&r);
}

static void test_malformed(void **state)
{
    (void)state;
    fg_http_fetch_resp_t r;
    const char *why = NULL;
    assert_int_equal(parse("", 0, &r, &why), -1);
    assert_non_null(why);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 0, &r, &why), -1);
    assert_string_equal(why, "truncated body");
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, &r, &why), -1);
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 0, &r, &why), -1);
    assert_int_equal(parse("SSH-2.0-OpenSSH\r\n\r\n", 0, &r, &why), -1);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", 0, &r, &why), -1);
}

static int has_dns(X509_EXTENSION *ext, const char *name)
{
    GENERAL_NAMES *gens = X509V3_EXT_d2i(ext);
    int found = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS &&
            strcmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), name) == 0)
            found = 1;
    }
    GENERAL_NAMES_free(gens);
    return found;
}

static void test_placeholder_and_csr(void **state)
{
    (void)state;
    char *names[] = {"a.example.test", "b.example.test"};
    EVP_PKEY *key = fg_x509gen_key();
    assert_non_null(key);
    X509 *x = fg_x509gen_placeholder(key, names, 2, 30);
    assert_non_null(x);
    assert_int_equal(fg_x509gen_is_placeholder(x), 1);
    assert_int_equal(X509_verify(x, key), 1);
    assert_int_equal(X509_check_host(x, "b.example.test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "c.example.test", 0, 0, NULL), 0);
    assert_true(X509_cmp_current_time(X509_get0_notAfter(x)) > 0);
    /* a certificate signed by another key (an issued one) is not a placeholder */
    EVP_PKEY *other = fg_x509gen_key();
    X509 *y = fg_x509gen_placeholder(other, names, 1, 30);
    X509_NAME *issuer = X509_NAME_new();
    X509_NAME_add_entry_by_txt(issuer, "CN", MBSTRING_ASC, (const unsigned char *)"Some CA", -1, -1,
                               0);
    X509_set_issuer_name(y, issuer);
    assert_int_equal(fg_x509gen_is_placeholder(y), 0);

    X509_REQ *csr = fg_x509gen_csr(key, names, 2);
    assert_non_null(csr);
    assert_int_equal(X509_REQ_verify(csr, key), 1);
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(csr);
    assert_non_null(exts);
    int san = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
    assert_true(san >= 0);
    X509_EXTENSION *ext = X509v3_get_ext(exts, san);
    assert_int_equal(has_dns(ext, "a.example.test"), 1);
    assert_int_equal(has_dns(ext, "b.example.test"), 1);
    /* a CN longer than RFC 5280's 64 characters cannot be made */
    char longname[80];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    char *bad[] = {longname};
    assert_null(fg_x509gen_csr(key, bad, 1));

    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(csr);
    X509_NAME_free(issuer);
    X509_free(y);
    X509_free(x);
    EVP_PKEY_free(other);
    EVP_PKEY_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_and_fields),
        cmocka_unit_test(test_chunked_and_head),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_placeholder_and_csr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
