#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/config.h"
#include "common/tls.h"
#include "common/tls_client.h"
#include "tests/unit/tls_fixture.h"

static char err[1024];
static fg_config_t *cfg;

/* Servers use this module's own contexts (cert "a" for a.example.test, "ip" for 127.0.0.1);
 * each cluster is one way of reaching them. */
static const char *json =
    "{\"certificates\": ["
    "{\"id\": \"a\", \"chain\": \"a.crt\", \"key\": \"a.key\"},"
    "{\"id\": \"ip\", \"chain\": \"ip.crt\", \"key\": \"ip.key\", \"names\": [\"ip.test\"]},"
    "{\"id\": \"client\", \"chain\": \"client.crt\", \"key\": \"client.key\"}],"
    "\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": "
    "[\"a\", \"ip\"], \"default\": \"ip\"}}],"
    "\"clusters\": ["
    "{\"id\": \"ok\", \"destinations\": [{\"id\": \"d\", \"address\": \"https://127.0.0.1:1\", "
    "\"host\": \"a.example.test:8443\"}], \"httpClient\": {\"caFile\": \"ca.crt\"}},"
    "{\"id\": \"sysca\", \"destinations\": [{\"id\": \"d\", \"address\": \"https://127.0.0.1:1\", "
    "\"host\": \"a.example.test\"}]},"
    "{\"id\": \"wrongname\", \"destinations\": [{\"id\": \"d\", \"address\": "
    "\"https://127.0.0.1:1\"}], \"httpClient\": {\"caFile\": \"ca.crt\", \"serverName\": "
    "\"wrong.example.net\"}},"
    "{\"id\": \"any\", \"destinations\": [{\"id\": \"d\", \"address\": \"https://127.0.0.1:1\", "
    "\"host\": \"a.example.test\"}], \"httpClient\": {\"dangerousAcceptAnyServerCertificate\": "
    "true}},"
    "{\"id\": \"byip\", \"destinations\": [{\"id\": \"d\", \"address\": \"https://127.0.0.1:1\"}],"
    " \"httpClient\": {\"caFile\": \"ca.crt\", \"sslProtocols\": [\"Tls12\"]}},"
    "{\"id\": \"mtls\", \"destinations\": [{\"id\": \"d\", \"address\": \"https://127.0.0.1:1\", "
    "\"host\": \"a.example.test\"}], \"httpClient\": {\"caFile\": \"ca.crt\", "
    "\"clientCertificate\": \"client\"}}]}";

static const fg_cluster_t *cluster(const char *id)
{
    return fg_config_find_cluster(cfg, id);
}

static int setup(void **state)
{
    char name[128];
    fx_setup();
    fx_leaf("a", "a.example.test", "DNS:a.example.test", -60, 30 * 86400);
    fx_leaf("ip", "ip", "IP:127.0.0.1", -60, 30 * 86400);
    fx_leaf("client", "client.example.test", "DNS:client.example.test", -60, 30 * 86400);
    snprintf(name, sizeof(name), "%s/t.json", fx_dir);
    cfg = fg_config_load_string(name, json, err, sizeof(err));
    if (cfg == NULL || fg_tls_build(cfg, NULL, 0, NULL, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    fg_tls_free(cfg);
    fg_config_free(cfg);
    fx_teardown();
    return 0;
}

typedef struct {
    int ok;
    long verify; /* the client's verify result */
    int reused;
    int alpn_http11;
    char sni[64];   /* what the server received */
    char peer[128]; /* the client certificate the server saw, or "" */
} result_t;

/* One handshake from cluster cl's destination 0 to server_ctx; keeps the session. */
static void connect_to(const fg_cluster_t *cl, SSL_CTX *server_ctx, result_t *r)
{
    SSL *c = fg_tls_client_ssl_new(cl, 0), *s = SSL_new(server_ctx);
    assert_non_null(c);
    memset(r, 0, sizeof(*r));
    r->ok = fx_handshake(c, s) == 0;
    r->verify = SSL_get_verify_result(c);
    if (r->ok) {
        const unsigned char *p;
        unsigned len;
        SSL_get0_alpn_selected(c, &p, &len);
        r->alpn_http11 = len == 8 && memcmp(p, "http/1.1", 8) == 0;
        r->reused = SSL_session_reused(c);
        const char *sni = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
        snprintf(r->sni, sizeof(r->sni), "%s", sni ? sni : "");
        X509 *peer = SSL_get1_peer_certificate(s);
        if (peer)
            X509_NAME_oneline(X509_get_subject_name(peer), r->peer, sizeof(r->peer));
        X509_free(peer);
        SSL_SESSION_free(fx_session(c, s));
        SSL_shutdown(c);
        SSL_shutdown(s);
    }
    ERR_clear_error();
    SSL_free(c);
    SSL_free(s);
}

static SSL_CTX *gateway_ctx(void)
{
    return fg_tls_server_ctx(&cfg->servers[0]);
}

static void test_names(void **state)
{
    assert_string_equal(fg_tls_client_name(cluster("ok"), 0), "a.example.test");
    assert_string_equal(fg_tls_client_name(cluster("wrongname"), 0), "wrong.example.net");
    assert_string_equal(fg_tls_client_name(cluster("byip"), 0), "127.0.0.1");
}

static void test_verify_ok_with_sni_alpn_and_reuse(void **state)
{
    result_t r;
    connect_to(cluster("ok"), gateway_ctx(), &r);
    assert_true(r.ok);
    assert_int_equal(r.verify, X509_V_OK);
    assert_string_equal(r.sni, "a.example.test"); /* from the destination's host, port removed */
    assert_true(r.alpn_http11);
    assert_false(r.reused);
    connect_to(cluster("ok"), gateway_ctx(), &r);
    assert_true(r.ok);
    assert_true(r.reused); /* the kept session */
}

static void test_verify_fails_without_the_ca(void **state)
{
    result_t r;
    connect_to(cluster("sysca"), gateway_ctx(), &r);
    assert_false(r.ok);
    assert_int_not_equal(r.verify, X509_V_OK);
}

static void test_verify_fails_on_hostname_mismatch(void **state)
{
    result_t r;
    connect_to(cluster("wrongname"), gateway_ctx(), &r);
    assert_false(r.ok);
    assert_int_equal(r.verify, X509_V_ERR_HOSTNAME_MISMATCH);
}

static void test_accept_any_certificate(void **state)
{
    result_t r;
    connect_to(cluster("any"), gateway_ctx(), &r);
    assert_true(r.ok);
}

/* An IP address: no SNI (RFC 6066 3), the default certificate, checked against its IP SAN. */
static void test_ip_destination(void **state)
{
    result_t r;
    connect_to(cluster("byip"), gateway_ctx(), &r);
    assert_true(r.ok);
    assert_int_equal(r.verify, X509_V_OK);
    assert_string_equal(r.sni, "");
}

/* A destination that demands a client certificate signed by the test CA. */
static void test_mutual_tls(void **state)
{
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate_file(s, fx_path("a.crt"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(s, fx_path("a.key"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_load_verify_locations(s, fx_path("ca.crt"), NULL), 1);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    result_t r;
    connect_to(cluster("mtls"), s, &r);
    assert_true(r.ok);
    assert_string_equal(r.peer, "/CN=client.example.test");
    /* without a client certificate the destination refuses (TLS 1.3 fails it after the
     * client's Finished: read what the server says) */
    SSL *c = fg_tls_client_ssl_new(cluster("ok"), 0), *sv = SSL_new(s);
    int ok = fx_handshake(c, sv) == 0;
    char b;
    if (ok)
        ok = SSL_write(sv, "x", 1) == 1 && SSL_read(c, &b, 1) == 1;
    assert_false(ok);
    ERR_clear_error();
    SSL_free(c);
    SSL_free(sv);
    SSL_CTX_free(s);
}

static void test_bad_ca_file_refused(void **state)
{
    char name[128];
    snprintf(name, sizeof(name), "%s/t.json", fx_dir);
    fg_config_t *c = fg_config_load_string(
        name,
        "{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\"}], \"clusters\": [{\"id\": "
        "\"c\", \"destinations\": [{\"id\": \"d\", \"address\": \"https://127.0.0.1:1\"}], "
        "\"httpClient\": {\"caFile\": \"nope.crt\"}}]}",
        err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(fg_tls_build(c, NULL, 0, NULL, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "clusters[0].httpClient.caFile: "));
    assert_non_null(strstr(err, "nope.crt"));
    fg_tls_free(c);
    fg_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_verify_ok_with_sni_alpn_and_reuse),
        cmocka_unit_test(test_verify_fails_without_the_ca),
        cmocka_unit_test(test_verify_fails_on_hostname_mismatch),
        cmocka_unit_test(test_accept_any_certificate),
        cmocka_unit_test(test_ip_destination),
        cmocka_unit_test(test_mutual_tls),
        cmocka_unit_test(test_bad_ca_file_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
