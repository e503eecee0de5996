#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/wait.h>
#include <time.h>

#include "common/config.h"
#include "common/tls.h"
#include "shm/arena.h"
#include "shm/tickets.h"
#include "tests/unit/tls_fixture.h"

static char err[1024];

/* ---- helpers ---- */

static fg_config_t *load_json(const char *json)
{
    char name[128];
    snprintf(name, sizeof(name), "%s/t.json", fx_dir);
    return fg_config_load_string(name, json, err, sizeof(err));
}

static void expect_error(const char *json, const char *msg)
{
    fg_config_t *cfg = load_json(json);
    if (cfg != NULL || strstr(err, msg) == NULL)
        fail_msg("expected \"%s\", got \"%s\"", msg, cfg ? "success" : err);
}

#define CERTS                                                                                      \
    "\"certificates\": [{\"id\": \"a\", \"chain\": \"a.crt\", \"key\": \"a.key\"},"                \
    "{\"id\": \"w\", \"chain\": \"w.crt\", \"key\": \"w.key\"},"                                   \
    "{\"id\": \"d\", \"chain\": \"d.crt\", \"key\": \"d.key\"}]"

static char warnings[2048];

static void on_warn(void *arg, const char *msg)
{
    size_t n = strlen(warnings);
    snprintf(warnings + n, sizeof(warnings) - n, "%s\n", msg);
}

/* Load and build; asserts success. */
static fg_config_t *build(const char *json, fg_shm_t *shm)
{
    fg_config_t *cfg = load_json(json);
    if (cfg == NULL)
        fail_msg("load: %s", err);
    warnings[0] = '\0';
    if (fg_tls_build(cfg, shm, 1, on_warn, NULL, err, sizeof(err)) < 0)
        fail_msg("build: %s", err);
    return cfg;
}

static void unbuild(fg_config_t *cfg)
{
    fg_tls_free(cfg);
    fg_config_free(cfg);
}

/* Build must fail with msg in the error. */
static void expect_build_error(const char *json, const char *msg)
{
    fg_config_t *cfg = load_json(json);
    if (cfg == NULL)
        fail_msg("load: %s", err);
    int rc = fg_tls_build(cfg, NULL, 0, on_warn, NULL, err, sizeof(err));
    fg_tls_free(cfg);
    fg_config_free(cfg);
    if (rc == 0 || strstr(err, msg) == NULL)
        fail_msg("expected \"%s\", got \"%s\"", msg, rc == 0 ? "success" : err);
}

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(c, fx_path("ca.crt"), NULL);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    return c;
}

/* One handshake against server s with SNI sni (NULL = none) and ALPN list alpn (wire format,
 * NULL = none) resuming sess (may be NULL). Fills *sel with the selected certificate index
 * and *reused; returns the session (caller frees) or NULL when the handshake failed. */
typedef struct {
    long cert;
    int reused;
    fg_tls_alpn_t alpn;
    int host_ok;         /* fg_tls_host_allowed for `host` */
    int alpn_alert_seen; /* the client got a no_application_protocol alert */
    char info[160];      /* fg_tls_info: "version cipher sni resumed" */
} hs_result_t;

static SSL_SESSION *handshake(const fg_server_t *s, SSL_CTX *cctx, const char *sni,
                              const unsigned char *alpn, unsigned alpn_len, SSL_SESSION *sess,
                              const char *host, hs_result_t *r)
{
    SSL *c = SSL_new(cctx), *sv = SSL_new(fg_tls_server_ctx(s));
    SSL_SESSION *out = NULL;
    memset(r, 0, sizeof(*r));
    if (sni)
        SSL_set_tlsext_host_name(c, sni);
    if (alpn)
        SSL_set_alpn_protos(c, alpn, alpn_len);
    if (sess)
        SSL_set_session(c, sess);
    ERR_clear_error();
    if (fx_handshake(c, sv) == 0) {
        r->cert = fg_tls_selected_cert(sv);
        r->reused = SSL_session_reused(sv);
        r->alpn = fg_tls_alpn(sv);
        r->host_ok = host ? fg_tls_host_allowed(sv, host, strlen(host)) : -1;
        fg_tls_info_t in;
        fg_tls_info(sv, &in);
        snprintf(r->info, sizeof(r->info), "%s %s %s %d", in.version, in.cipher,
                 in.sni[0] ? in.sni : "-", in.resumed);
        out = fx_session(c, sv);
    } else {
        r->cert = -1;
        /* client and server share this thread's error queue: look for the client's reason */
        unsigned long e;
        while ((e = ERR_get_error()) != 0)
            if (ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL)
                r->alpn_alert_seen = 1;
    }
    ERR_clear_error();
    /* A clean close: OpenSSL marks the session of an SSL freed without close_notify as not
     * resumable. */
    SSL_shutdown(c);
    SSL_shutdown(sv);
    SSL_free(c);
    SSL_free(sv);
    return out;
}

static int setup(void **state)
{
    fx_setup();
    fx_leaf("a", "a.example.test", "DNS:a.example.test,DNS:alt.example.test,IP:127.0.0.1,IP:::1",
            -60, 30 * 86400);
    fx_leaf("w", "wild", "DNS:*.example.test", -60, 30 * 86400);
    fx_leaf("d", "d.test", NULL, -60, 30 * 86400); /* CN only: names from the CN */
    fx_leaf("expired", "old.test", "DNS:old.test", -10 * 86400, -86400);
    fx_leaf("future", "new.test", "DNS:new.test", 86400, 10 * 86400);
    fx_leaf("soon", "soon.test", "DNS:soon.test", -60, 3 * 86400);
    fx_leaf("noname", "Example Client", NULL, -60, 30 * 86400);
    return 0;
}

static int teardown(void **state)
{
    fx_teardown();
    return 0;
}

static const char *server_json(const char *tls_extra)
{
    static char json[4096];
    snprintf(json, sizeof(json),
             "{%s, \"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"tls\": "
             "{\"certificates\": [\"a\", \"w\", \"d\"], \"default\": \"d\"%s}}]}",
             CERTS, tls_extra);
    return json;
}

/* ---- configuration ---- */

static void test_config_defaults(void **state)
{
    fg_config_t *cfg = load_json(server_json(""));
    assert_non_null(cfg);
    const fg_tls_server_config_t *t = cfg->servers[0].tls;
    assert_int_equal(t->min_version, FG_TLS_VERSION_1_2);
    assert_int_equal(t->max_version, FG_TLS_VERSION_1_3);
    assert_string_equal(t->groups, "X25519:P-256:P-384");
    assert_int_equal(t->nalpn, 2);
    assert_string_equal(t->alpn[0], "h2");
    assert_string_equal(t->alpn[1], "http/1.1");
    assert_true(t->session_tickets);
    assert_int_equal(t->tickets_per_handshake, 1);
    assert_null(t->hsts_header);
    assert_int_equal(t->handshake_timeout_ms, 10000);
    assert_int_equal(t->default_index, 2);
    assert_int_equal(t->cert_index[1], 1);
    assert_int_equal(cfg->tls_ticket_rotation_ms, 3600 * 1000);
    assert_string_equal(cfg->certificates[0].chain, fx_path("a.crt"));
    fg_config_free(cfg);

    cfg = load_json(server_json(", \"hsts\": {\"maxAge\": \"365d\", \"includeSubDomains\": true, "
                                "\"preload\": true}, \"protocols\": {\"min\": \"TLSv1.3\"}"));
    assert_non_null(cfg);
    assert_string_equal(cfg->servers[0].tls->hsts_header,
                        "max-age=31536000; includeSubDomains; preload");
    assert_int_equal(cfg->servers[0].tls->min_version, FG_TLS_VERSION_1_3);
    fg_config_free(cfg);

    cfg = load_json("{\"servers\": [{\"id\": \"a\", \"listen\": \"127.0.0.1:1\", "
                    "\"redirectHttps\": true}, {\"id\": \"b\", \"listen\": \"127.0.0.1:2\", "
                    "\"redirectHttps\": {\"port\": 8443, \"status\": 301}}, {\"id\": \"c\", "
                    "\"listen\": \"127.0.0.1:3\"}], \"clusters\": [{\"id\": \"k\", "
                    "\"destinations\": [{\"id\": \"d\", \"address\": \"https://127.0.0.1:1\"}], "
                    "\"httpClient\": {\"sslProtocols\": [\"Tls13\"], \"caFile\": \"ca.crt\"}}]}");
    assert_non_null(cfg);
    const fg_redirect_https_t *r = &cfg->servers[0].redirect;
    assert_true(r->enabled && r->port == 443 && r->status == 308 && r->authority == NULL);
    r = &cfg->servers[1].redirect;
    assert_true(r->enabled && r->port == 8443 && r->status == 301);
    assert_false(cfg->servers[2].redirect.enabled);
    const fg_tls_client_config_t *h = &cfg->clusters[0].http_client;
    assert_true(h->verify);
    assert_int_equal(h->min_version, FG_TLS_VERSION_1_3);
    assert_int_equal(h->max_version, FG_TLS_VERSION_1_3);
    assert_string_equal(h->ca_file, fx_path("ca.crt"));
    assert_int_equal(h->handshake_timeout_ms, 10000);
    fg_config_free(cfg);
}

static void test_config_errors(void **state)
{
    expect_error("{" CERTS ", \"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"tls\": "
                 "{\"certificates\": [\"a\", \"nope\"], \"default\": \"a\"}}]}",
                 "servers[0].tls.certificates[1]: unknown certificate id \"nope\"");
    expect_error("{\"certificates\": [{\"id\": \"a\", \"chain\": \"a.crt\", \"key\": \"a.key\"}, "
                 "{\"id\": \"a\", \"chain\": \"w.crt\", \"key\": \"w.key\"}], \"servers\": "
                 "[{\"id\": \"s\", \"listen\": \"127.0.0.1:1\"}]}",
                 "certificates[1].id: duplicate id \"a\" (first at certificates[0])");
    expect_error("{" CERTS ", \"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"tls\": "
                 "{\"certificates\": [\"a\", \"w\"]}}]}",
                 "servers[0].tls: missing \"default\"");
    expect_error("{" CERTS ", \"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"tls\": "
                 "{\"certificates\": [\"a\", \"w\"], \"default\": \"d\"}}]}",
                 "servers[0].tls.default: \"d\" is not one of this server's certificates");
    expect_error(server_json(", \"protocols\": {\"min\": \"TLSv1.1\"}"),
                 "servers[0].tls.protocols.min: TLSv1.1 is not supported");
    expect_error(server_json(", \"protocols\": {\"min\": \"TLSv1.3\", \"max\": \"TLSv1.2\"}"),
                 "protocols.min: is above max");
    expect_error(server_json(", \"alpn\": [\"spdy/3\"]"), "tls.alpn[0]: unknown protocol");
    expect_error(server_json(", \"alpn\": [\"http/1.1\", \"http/1.1\"]"), "listed twice");
    expect_error(server_json(", \"hsts\": {\"maxAge\": \"1d\", \"preload\": true}"),
                 "tls.hsts.preload: needs includeSubDomains");
    expect_error(server_json(", \"handshakeTimeout\": 0"), "handshakeTimeout: must be greater");
    expect_error(server_json(", \"ticketsPerHandshake\": 0"), "tls.ticketsPerHandshake");
    expect_error(server_json(", \"ticketsPerHandshake\": 9"), "tls.ticketsPerHandshake");
    expect_error(server_json(", \"colour\": 1"), "servers[0].tls.colour: unknown key");
    expect_error("{\"certificates\": [{\"id\": \"a\", \"chain\": \"a.crt\", \"key\": \"a.key\", "
                 "\"names\": [\"a.*.test\"]}], \"servers\": [{\"id\": \"s\", \"listen\": "
                 "\"127.0.0.1:1\"}]}",
                 "certificates[0].names[0]: \"a.*.test\" is not a host name");
    expect_error("{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"redirectHttps\": "
                 "{\"port\": 8443, \"authority\": \"x\"}}]}",
                 "redirectHttps.authority: give either port or authority");
    expect_error("{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"redirectHttps\": "
                 "\"yes\"}]}",
                 "servers[0].redirectHttps: expected true or an object, got a string");
    expect_error("{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"redirectHttps\": "
                 "{\"status\": 302}}]}",
                 "redirectHttps.status: must be 301 or 308");
    expect_error("{" CERTS ", \"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"tls\": "
                 "{\"certificates\": [\"a\"]}, \"redirectHttps\": true}]}",
                 "servers[0].redirectHttps: only a plaintext server");
    expect_error("{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\"}], \"clusters\": "
                 "[{\"id\": \"c\", \"destinations\": [{\"id\": \"d\", \"address\": "
                 "\"https://127.0.0.1:1\"}], \"httpClient\": {\"clientCertificate\": \"x\"}}]}",
                 "clusters[0].httpClient.clientCertificate: unknown certificate id \"x\"");
    expect_error("{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\"}], \"clusters\": "
                 "[{\"id\": \"c\", \"destinations\": [{\"id\": \"d\", \"address\": "
                 "\"https://127.0.0.1:1\"}], \"httpClient\": {\"sslProtocols\": [\"Tls11\"]}}]}",
                 "httpClient.sslProtocols[0]: \"Tls11\" is not supported");
}

/* ---- loading ---- */

static void test_build_refuses_bad_files(void **state)
{
#define ONE(chain, key)                                                                            \
    "{\"certificates\": [{\"id\": \"x\", \"chain\": \"" chain "\", \"key\": \"" key "\"}], "       \
    "\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\"}]}"
    char msg[256];
    /* a key that is not the certificate's */
    snprintf(msg, sizeof(msg), "certificates[0].key: %s: does not match the certificate in %s",
             fx_path("w.key"), fx_path("a.crt"));
    expect_build_error(ONE("a.crt", "w.key"), msg);
    expect_build_error(ONE("a.crt", "w.key"), "key values mismatch");
    /* unreadable */
    snprintf(msg, sizeof(msg), "certificates[0].chain: %s: cannot read: No such file",
             fx_path("missing.crt"));
    expect_build_error(ONE("missing.crt", "a.key"), msg);
    /* malformed PEM: a key where the chain should be, a certificate where the key should be */
    expect_build_error(ONE("a.key", "a.key"), "certificates[0].chain");
    expect_build_error(ONE("a.key", "a.key"), "no PEM certificate (error:");
    expect_build_error(ONE("a.crt", "a.crt"), "certificates[0].key");
    /* validity */
    expect_build_error(ONE("expired.crt", "expired.key"), "certificate /CN=old.test expired on");
    expect_build_error(ONE("future.crt", "future.key"), "is not valid before");
#undef ONE
    /* OpenSSL refuses what the schema cannot judge: named with the key */
    expect_build_error(server_json(", \"ciphers\": \"NOPE-CIPHER\""),
                       "servers[0].tls.ciphers: no usable cipher in \"NOPE-CIPHER\"");
    expect_build_error(server_json(", \"ciphersuites\": \"TLS_NOPE\""),
                       "servers[0].tls.ciphersuites: \"TLS_NOPE\" is not a valid");
    expect_build_error(server_json(", \"groups\": \"P-999\""),
                       "servers[0].tls.groups: \"P-999\" is not a valid group list");
}

static void test_expiring_soon_warns(void **state)
{
    fg_config_t *cfg = build("{\"certificates\": [{\"id\": \"x\", \"chain\": \"soon.crt\", "
                             "\"key\": \"soon.key\"}, {\"id\": \"y\", \"chain\": \"a.crt\", "
                             "\"key\": \"a.key\"}], \"servers\": [{\"id\": \"s\", \"listen\": "
                             "\"127.0.0.1:1\"}]}",
                             NULL);
    assert_non_null(strstr(warnings, "certificates[0].chain"));
    assert_non_null(strstr(warnings, "/CN=soon.test expires on"));
    assert_null(strstr(warnings, "certificates[1]")); /* 30 days left: no warning */
    unbuild(cfg);
}

/* A certificate without host names (a client certificate) loads, but a server may offer it
 * only as its default: SNI could never choose it. */
static void test_nameless_certificate(void **state)
{
#define NAMELESS(def)                                                                              \
    "{\"certificates\": [{\"id\": \"n\", \"chain\": \"noname.crt\", \"key\": \"noname.key\"}, "    \
    "{\"id\": \"a\", \"chain\": \"a.crt\", \"key\": \"a.key\"}], \"servers\": [{\"id\": \"s\", "   \
    "\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [\"n\", \"a\"], \"default\": "       \
    "\"" def "\"}}]}"
    expect_build_error(NAMELESS("a"), "servers[0].tls.certificates[0]: certificate \"n\" names "
                                      "no host");
    unbuild(build(NAMELESS("n"), NULL));
#undef NAMELESS
}

/* ---- SNI ---- */

static void test_sni_selection(void **state)
{
    fg_config_t *cfg = build(server_json(""), NULL);
    const fg_server_t *s = &cfg->servers[0];
    SSL_CTX *cctx = client_ctx();
    hs_result_t r;
    static const struct {
        const char *sni;
        long cert;
    } cases[] = {
        {"a.example.test", 0},   /* exact */
        {"A.Example.TEST", 0},   /* case-insensitive */
        {"alt.example.test", 0}, /* exact beats the wildcard */
        {"b.example.test", 1},   /* one-level wildcard */
        {"example.test", 2},     /* the wildcard does not cover its parent */
        {"x.b.example.test", 2}, /* nor two levels */
        {"d.test", 2},           /* CN of a certificate without SAN */
        {"unknown.test", 2},     /* no match: the default */
        {NULL, 2},               /* no SNI: the default */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL_SESSION *sess = handshake(s, cctx, cases[i].sni, NULL, 0, NULL, NULL, &r);
        if (r.cert != cases[i].cert)
            fail_msg("SNI %s: certificate %ld, expected %ld", cases[i].sni ? cases[i].sni : "-",
                     r.cert, cases[i].cert);
        SSL_SESSION_free(sess);
    }
    SSL_CTX_free(cctx);
    unbuild(cfg);
}

static void test_host_allowed_policy(void **state)
{
    fg_config_t *cfg = build(server_json(""), NULL);
    const fg_server_t *s = &cfg->servers[0];
    SSL_CTX *cctx = client_ctx();
    hs_result_t r;
    static const struct {
        const char *sni, *host;
        int ok;
    } cases[] = {
        {"a.example.test", "a.example.test", 1},
        {"a.example.test", "A.EXAMPLE.TEST:443", 1},
        {"a.example.test", "alt.example.test", 1}, /* another name of the same certificate */
        {"a.example.test", "b.example.test", 0},   /* another certificate's name: 421 */
        {"b.example.test", "c.example.test", 1},   /* covered by the wildcard */
        {"b.example.test", "example.test", 0},
        {"unknown.test", "unknown.test", 1}, /* the client took the default for its name */
        {NULL, "anything.test", 1},          /* no SNI: routing by Host */
        {NULL, "[::1]:8443", 1},
        /* an IP-literal Host that an IP SAN of the certificate carries */
        {"a.example.test", "127.0.0.1", 1},
        {"a.example.test", "127.0.0.1:8443", 1},
        {"a.example.test", "[::1]:8443", 1},
        {"a.example.test", "[0:0::1]", 1},
        {"a.example.test", "127.0.0.2", 0},
        {"b.example.test", "127.0.0.1", 0}, /* the wildcard certificate has no IP SAN */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL_SESSION *sess = handshake(s, cctx, cases[i].sni, NULL, 0, NULL, cases[i].host, &r);
        if (r.host_ok != cases[i].ok)
            fail_msg("SNI %s Host %s: %d, expected %d", cases[i].sni ? cases[i].sni : "-",
                     cases[i].host, r.host_ok, cases[i].ok);
        SSL_SESSION_free(sess);
    }
    SSL_CTX_free(cctx);
    unbuild(cfg);
}

/* ---- ALPN ---- */

static void test_alpn(void **state)
{
    fg_config_t *cfg = build(server_json(""), NULL);
    const fg_server_t *s = &cfg->servers[0];
    SSL_CTX *cctx = client_ctx();
    hs_result_t r;
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    static const unsigned char h11[] = "\x08http/1.1";
    static const unsigned char other[] = "\x06spdy/3";

    /* the default list prefers h2 */
    SSL_SESSION_free(handshake(s, cctx, NULL, both, sizeof(both) - 1, NULL, NULL, &r));
    assert_int_equal(r.cert, 2);
    assert_int_equal(r.alpn, FG_TLS_ALPN_H2);
    SSL_SESSION_free(handshake(s, cctx, NULL, h11, sizeof(h11) - 1, NULL, NULL, &r));
    assert_int_equal(r.alpn, FG_TLS_ALPN_HTTP11);
    assert_int_equal(strcmp(r.info + strlen(r.info) - 4, " - 0"), 0); /* no SNI, full */
    /* no ALPN offered: none negotiated, the front end's default */
    SSL_SESSION_free(handshake(s, cctx, NULL, NULL, 0, NULL, NULL, &r));
    assert_int_equal(r.cert, 2);
    assert_int_equal(r.alpn, FG_TLS_ALPN_NONE);
    /* RFC 7301 3.2: no overlap is fatal, with the no_application_protocol alert */
    assert_null(handshake(s, cctx, NULL, other, sizeof(other) - 1, NULL, NULL, &r));
    assert_int_equal(r.cert, -1);
    assert_true(r.alpn_alert_seen);
    SSL_CTX_free(cctx);
    unbuild(cfg);
}

/* ---- session tickets ---- */

static void test_ticket_keys(void **state)
{
    fg_shm_t *shm = fg_shm_new(4 * 1024 * 1024);
    fg_tickets_t *t = fg_tickets_attach(shm, 1);
    fg_ticket_key_t k0, k, again;
    assert_non_null(t);
    assert_ptr_equal(fg_tickets_attach(shm, 2), t); /* the next generation shares the keys */
    assert_int_equal(fg_tickets_current(t, 1000, 0, &k0), 0);
    assert_int_equal(fg_tickets_find(t, k0.name, 1000, 0, &k), 1);
    assert_memory_equal(k.aes_key, k0.aes_key, sizeof(k.aes_key));
    assert_int_equal(fg_tickets_rotate(t, 1000), 0);
    assert_int_equal(fg_tickets_find(t, k0.name, 1000, 0, &k), 2);
    fg_tickets_rotate(t, 1000);
    assert_int_equal(fg_tickets_find(t, k0.name, 1000, 0, &k), 2);
    fg_tickets_rotate(t, 1000);
    assert_int_equal(fg_tickets_find(t, k0.name, 1000, 0, &k), 0);
    /* lazy rotation by time: one period later the current key changes */
    assert_int_equal(fg_tickets_current(t, 2000, 60000, &k), 0);
    assert_int_equal(fg_tickets_current(t, 60999, 60000, &again), 0);
    assert_memory_equal(k.name, again.name, FG_TICKET_NAME_LEN);
    assert_int_equal(fg_tickets_current(t, 61000, 60000, &again), 0);
    assert_memory_not_equal(k.name, again.name, FG_TICKET_NAME_LEN);
    assert_int_equal(fg_tickets_find(t, k.name, 61000, 60000, &k0), 2);
    /* a long quiet spell retires every old key at once */
    assert_int_equal(fg_tickets_find(t, again.name, 61000 + 10 * 60000, 60000, &k0), 0);
    fg_shm_free(shm);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A session made under key N, after n rotations: resumed while N is one of the three kept
 * (n < 3), a full handshake after. Each session is offered once, fresh. */
static void ticket_rotation_over(const char *tls_extra, const char *version_cipher)
{
    fg_shm_t *shm = fg_shm_new(4 * 1024 * 1024);
    fg_config_t *cfg = build(server_json(tls_extra), shm);
    const fg_server_t *s = &cfg->servers[0];
    fg_tickets_t *t = fg_tickets_attach(shm, 1);
    SSL_CTX *cctx = client_ctx();
    hs_result_t r;

    for (int n = 0; n <= 3; n++) {
        SSL_SESSION *sess = handshake(s, cctx, "a.example.test", NULL, 0, NULL, NULL, &r);
        assert_non_null(sess);
        assert_false(r.reused);
        for (int i = 0; i < n; i++)
            assert_int_equal(fg_tickets_rotate(t, now_ms()), 0);
        SSL_SESSION *next = handshake(s, cctx, "a.example.test", NULL, 0, sess, NULL, &r);
        assert_non_null(next);
        if (r.reused != (n < 3))
            fail_msg("after %d rotation(s): reused %d", n, r.reused);
        /* what the access log records */
        char want[160];
        snprintf(want, sizeof(want), " a.example.test %d", n < 3);
        assert_non_null(strstr(r.info, want));
        assert_true(strncmp(r.info, version_cipher, strlen(version_cipher)) == 0);
        assert_int_equal(r.cert, 0);
        SSL_SESSION_free(next);
        SSL_SESSION_free(sess);
    }
    SSL_CTX_free(cctx);
    unbuild(cfg);
    fg_shm_free(shm);
}

static void test_ticket_resumption_across_rotation_tls13(void **state)
{
    ticket_rotation_over("", "TLSv1.3 TLS_AES_256_GCM_SHA384 ");
}

static void test_ticket_resumption_across_rotation_tls12(void **state)
{
    /* the server's cipher order: ECDSA certificate, AES-128-GCM first */
    ticket_rotation_over(", \"protocols\": {\"max\": \"TLSv1.2\"}",
                         "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 ");
}

/* A session made by one process (a worker) resumes on another, and rotations made by one are
 * seen by the other: the keys live in shared memory, not in either process's SSL_CTX (whose
 * own keys a fork would have copied). The child makes S1, rotates, makes S2 under a key that
 * exists only since the fork, and rotates twice more, retiring S1's key. */
static int send_session(int fd, SSL_SESSION *sess)
{
    unsigned char buf[8192], *p = buf + 4;
    int n = sess ? i2d_SSL_SESSION(sess, NULL) : 0;
    if (n <= 0 || n > (int)sizeof(buf) - 4)
        return -1;
    memcpy(buf, &n, 4);
    i2d_SSL_SESSION(sess, &p);
    return write(fd, buf, (size_t)n + 4) == n + 4 ? 0 : -1;
}

static SSL_SESSION *recv_session(FILE *f)
{
    unsigned char buf[8192];
    int n;
    if (fread(&n, 4, 1, f) != 1 || n <= 0 || n > (int)sizeof(buf) ||
        fread(buf, (size_t)n, 1, f) != 1)
        return NULL;
    const unsigned char *p = buf;
    return d2i_SSL_SESSION(NULL, &p, n);
}

static void test_ticket_resumption_across_fork(void **state)
{
    fg_shm_t *shm = fg_shm_new(4 * 1024 * 1024);
    fg_config_t *cfg = build(server_json(""), shm);
    const fg_server_t *s = &cfg->servers[0];
    fg_tickets_t *t = fg_tickets_attach(shm, 1);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        SSL_CTX *cctx = client_ctx();
        hs_result_t r;
        SSL_SESSION *s1 = handshake(s, cctx, "b.example.test", NULL, 0, NULL, NULL, &r);
        fg_tickets_rotate(t, now_ms());
        SSL_SESSION *s2 = handshake(s, cctx, "b.example.test", NULL, 0, NULL, NULL, &r);
        fg_tickets_rotate(t, now_ms());
        fg_tickets_rotate(t, now_ms());
        _exit(send_session(fds[1], s1) == 0 && send_session(fds[1], s2) == 0 ? 0 : 1);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    SSL_SESSION *s1 = recv_session(f), *s2 = recv_session(f);
    fclose(f);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_non_null(s1);
    assert_non_null(s2);
    SSL_CTX *cctx = client_ctx();
    hs_result_t r;
    SSL_SESSION *next = handshake(s, cctx, "b.example.test", NULL, 0, s2, NULL, &r);
    assert_true(r.reused);
    assert_int_equal(r.cert, 1);
    SSL_SESSION_free(next);
    next = handshake(s, cctx, "b.example.test", NULL, 0, s1, NULL, &r);
    assert_false(r.reused);
    SSL_SESSION_free(next);
    SSL_SESSION_free(s1);
    SSL_SESSION_free(s2);
    SSL_CTX_free(cctx);
    unbuild(cfg);
    fg_shm_free(shm);
}

/* sessionTickets false: no ticket, so no resumption. */
static void test_tickets_off(void **state)
{
    fg_shm_t *shm = fg_shm_new(4 * 1024 * 1024);
    fg_config_t *cfg = build(server_json(", \"sessionTickets\": false"), shm);
    SSL_CTX *cctx = client_ctx();
    hs_result_t r;
    SSL_SESSION *sess = handshake(&cfg->servers[0], cctx, NULL, NULL, 0, NULL, NULL, &r);
    SSL_SESSION *next = NULL;
    if (sess)
        next = handshake(&cfg->servers[0], cctx, NULL, NULL, 0, sess, NULL, &r);
    assert_false(r.reused);
    SSL_SESSION_free(next);
    SSL_SESSION_free(sess);
    SSL_CTX_free(cctx);
    unbuild(cfg);
    fg_shm_free(shm);
}

/* TLS 1.3 tickets a client receives: counted by its new-session callback. */
static int tickets_seen;

static int count_ticket(SSL *ssl, SSL_SESSION *sess)
{
    tickets_seen++;
    return 0; /* not kept: the caller still owns sess */
}

static int tickets_after(const fg_server_t *s, SSL_CTX *cctx, SSL_SESSION *resume, int *reused)
{
    hs_result_t r;
    tickets_seen = 0;
    SSL_SESSION *sess = handshake(s, cctx, NULL, NULL, 0, resume, NULL, &r);
    assert_non_null(sess); /* fx_session's byte carried the tickets sent before it */
    SSL_SESSION_free(sess);
    *reused = r.reused;
    return tickets_seen;
}

/* ticketsPerHandshake: one ticket after a full handshake by default, as configured otherwise;
 * a resumed handshake always issues exactly one. */
static void test_tickets_per_handshake(void **state)
{
    fg_shm_t *shm = fg_shm_new(4 * 1024 * 1024);
    static const char *const extra[] = {"", ", \"ticketsPerHandshake\": 3",
                                        ", \"sessionTickets\": false"};
    static const int full[] = {1, 3, 0}, resumed[] = {1, 1, 0};
    for (size_t i = 0; i < 3; i++) {
        fg_config_t *cfg = build(server_json(extra[i]), shm);
        SSL_CTX *cctx = client_ctx();
        SSL_CTX_sess_set_new_cb(cctx, count_ticket);
        hs_result_t r;
        SSL_SESSION *first = handshake(&cfg->servers[0], cctx, NULL, NULL, 0, NULL, NULL, &r);
        assert_non_null(first);
        int reused;
        assert_int_equal(tickets_after(&cfg->servers[0], cctx, NULL, &reused), full[i]);
        assert_false(reused);
        assert_int_equal(tickets_after(&cfg->servers[0], cctx, first, &reused), resumed[i]);
        assert_int_equal(reused, resumed[i]);
        SSL_SESSION_free(first);
        SSL_CTX_free(cctx);
        unbuild(cfg);
    }
    fg_shm_free(shm);
}

/* ---- redirectHttps ---- */

static void test_redirect_location(void **state)
{
    fg_redirect_https_t r = {.enabled = 1, .port = 443, .status = 308};
    char out[256];
    const char *t = "/a/b?x=1";
    assert_true(
        fg_tls_redirect_location(&r, "example.com:8080", 16, t, strlen(t), out, sizeof(out)) > 0);
    assert_string_equal(out, "https://example.com/a/b?x=1");
    r.port = 8443;
    assert_true(fg_tls_redirect_location(&r, "[::1]:8080", 10, t, strlen(t), out, sizeof(out)) > 0);
    assert_string_equal(out, "https://[::1]:8443/a/b?x=1");
    assert_true(fg_tls_redirect_location(&r, "h", 1, "", 0, out, sizeof(out)) > 0);
    assert_string_equal(out, "https://h:8443/");
    r.authority = "secure.example.com:9443";
    assert_true(fg_tls_redirect_location(&r, "other", 5, t, strlen(t), out, sizeof(out)) > 0);
    assert_string_equal(out, "https://secure.example.com:9443/a/b?x=1");
    r.authority = NULL;
    /* a host that would break the Location (or is missing) is refused: 400 */
    assert_int_equal(fg_tls_redirect_location(&r, "a b", 3, t, strlen(t), out, sizeof(out)), -1);
    assert_int_equal(fg_tls_redirect_location(&r, "evil.com/x", 10, t, strlen(t), out, sizeof(out)),
                     -1);
    assert_int_equal(fg_tls_redirect_location(&r, "", 0, t, strlen(t), out, sizeof(out)), -1);
    assert_int_equal(fg_tls_redirect_location(&r, "example.com", 11, t, strlen(t), out, 10), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_build_refuses_bad_files),
        cmocka_unit_test(test_expiring_soon_warns),
        cmocka_unit_test(test_nameless_certificate),
        cmocka_unit_test(test_sni_selection),
        cmocka_unit_test(test_host_allowed_policy),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_ticket_keys),
        cmocka_unit_test(test_ticket_resumption_across_rotation_tls13),
        cmocka_unit_test(test_ticket_resumption_across_rotation_tls12),
        cmocka_unit_test(test_ticket_resumption_across_fork),
        cmocka_unit_test(test_tickets_off),
        cmocka_unit_test(test_tickets_per_handshake),
        cmocka_unit_test(test_redirect_location),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
