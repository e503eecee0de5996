/* TLS to destinations (common/tls_client.h). */
#include "common/tls_client.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/tls.h"

/* Slots 0..n-1 are the destinations, n..2n-1 their `health` addresses (name NULL: no TLS
 * there). */
typedef struct {
    SSL_CTX *ctx;
    size_t n;
    char **names;           /* per slot: verified name or address */
    int *is_ip;             /* per slot: names[i] is an IP literal (no SNI) */
    SSL_SESSION **sessions; /* per slot, this process's */
} client_t;

static const unsigned char alpn_http11[] = "\x08http/1.1";
static const unsigned char alpn_h2_or_http11[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_h2[] = "\x02h2";

/* The name a destination's certificate must carry: httpClient.serverName, else the
 * destination's "host" (Host header) without its port, else its address's host; brackets of
 * an IPv6 literal removed. */
static char *host_name(const char *src, int *is_ip)
{
    size_t len = strlen(src);
    const char *start = src;
    if (src[0] == '[') {
        const char *end = strchr(src, ']');
        start = src + 1;
        len = end ? (size_t)(end - start) : len - 1;
    } else if (strchr(src, ':')) {
        len = (size_t)(strchr(src, ':') - src);
    }
    char *name = calloc(len + 1, 1);
    if (name == NULL)
        abort();
    memcpy(name, start, len);
    unsigned char buf[sizeof(struct in6_addr)];
    *is_ip = inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
    return name;
}

static char *dest_name(const fg_cluster_t *cl, const fg_destination_t *d, int *is_ip)
{
    return host_name(cl->http_client.server_name ? cl->http_client.server_name
                     : d->host_override          ? d->host_override
                                                 : d->host,
                     is_ip);
}

/* A `health` address's name: serverName, else the host of the health URL (whose authority
 * is the probe's Host); NULL when the probes to d speak plain HTTP. */
static char *health_name(const fg_cluster_t *cl, const fg_destination_t *d, int *is_ip)
{
    if (d->health == NULL || !d->health_https)
        return NULL;
    return host_name(
        cl->http_client.server_name ? cl->http_client.server_name : d->health_authority, is_ip);
}

static int fail(char *err, size_t errlen, const fg_config_t *cfg, size_t ci, const char *key,
                const char *what)
{
    char why[256];
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "failed");
    ERR_clear_error();
    snprintf(err, errlen, "%s: clusters[%zu].httpClient%s%s: %s (%s)", cfg->file, ci,
             key ? "." : "", key ? key : "", what, why);
    return -1;
}

/* A session arrived (TLS 1.2: in the handshake; TLS 1.3: a ticket read after it, RFC 8446
 * 4.6.1): it replaces the destination's slot (SSL's app data) when resumable. Returns 1 when
 * the slot took the reference. */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (slot == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1;
}

/* The CA certificates (and CRLs) of a PEM file into ctx's store, read through
 * fg_tls_open_pem so that a FIFO or a directory is refused rather than waited on. */
static int load_ca_file(fg_config_t *cfg, size_t ci, SSL_CTX *ctx, const char *path, char *err,
                        size_t errlen)
{
    char why[256];
    BIO *b = fg_tls_open_pem(path, why, sizeof(why));
    if (b == NULL) {
        snprintf(err, errlen, "%s: clusters[%zu].httpClient.caFile: %s: %s", cfg->file, ci, path,
                 why);
        return -1;
    }
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
    BIO_free(b);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int n = 0, ok = infos != NULL;
    for (int i = 0; ok && i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *in = sk_X509_INFO_value(infos, i);
        if (in->x509 && (ok = X509_STORE_add_cert(store, in->x509)) == 1)
            n++;
        if (ok && in->crl)
            ok = X509_STORE_add_crl(store, in->crl);
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    if (!ok || n == 0)
        return fail(err, errlen, cfg, ci, "caFile", n == 0 && ok ? "no PEM certificate" : path);
    ERR_clear_error();
    return 0;
}

/* ciphers, ciphersuites and groups of httpClient; checked here, at load, so that -t and a
 * reload refuse a list OpenSSL cannot use. */
static int cipher_policy(fg_config_t *cfg, size_t ci, SSL_CTX *ctx, char *err, size_t errlen)
{
    const fg_tls_client_config_t *h = &cfg->clusters[ci].http_client;
    const char *key = NULL, *val = NULL, *what = NULL;
    /* TLS 1.2 with forward secrecy and AEAD only by default, as the servers (TLS 1.3 suites
     * all are). */
    if (SSL_CTX_set_cipher_list(ctx, h->ciphers ? h->ciphers : FG_TLS_DEFAULT_CIPHERS) != 1)
        key = "ciphers", val = h->ciphers, what = "no usable cipher in";
    else if (h->ciphersuites && SSL_CTX_set_ciphersuites(ctx, h->ciphersuites) != 1)
        key = "ciphersuites", val = h->ciphersuites, what = "not a valid TLS 1.3 suite list:";
    else if (h->groups && SSL_CTX_set1_groups_list(ctx, h->groups) != 1)
        key = "groups", val = h->groups, what = "not a valid group list:";
    if (key == NULL)
        return 0;
    ERR_clear_error();
    snprintf(err, errlen, "%s: clusters[%zu].httpClient.%s: %s \"%s\"", cfg->file, ci, key, what,
             val ? val : FG_TLS_DEFAULT_CIPHERS);
    return -1;
}

static int setup_ctx(fg_config_t *cfg, size_t ci, SSL_CTX *ctx, char *err, size_t errlen)
{
    const fg_tls_client_config_t *h = &cfg->clusters[ci].http_client;

    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_min_proto_version(ctx, h->min_version) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, h->max_version) != 1)
        return fail(err, errlen, cfg, ci, "sslProtocols", "unsupported");
    if (cipher_policy(cfg, ci, ctx, err, errlen) < 0)
        return -1;
    /* RFC 7301: offer only what the HTTP/1.1 client speaks. (Returns 0 on success.) */
    if (SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof(alpn_http11) - 1) != 0)
        return fail(err, errlen, cfg, ci, NULL, "ALPN");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);
    if (!h->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (h->ca_file && load_ca_file(cfg, ci, ctx, h->ca_file, err, errlen) < 0)
            return -1;
        if (h->ca_file == NULL && SSL_CTX_set_default_verify_paths(ctx) != 1)
            return fail(err, errlen, cfg, ci, NULL, "the system's CA certificates");
    }
    if (h->client_cert_id) {
        X509 *leaf;
        EVP_PKEY *pkey;
        STACK_OF(X509) * chain;
        if (fg_tls_cert_pair(cfg, h->client_cert_index, &leaf, &pkey, &chain) < 0 ||
            SSL_CTX_use_cert_and_key(ctx, leaf, pkey, chain, 1) != 1)
            return fail(err, errlen, cfg, ci, "clientCertificate", h->client_cert_id);
    }
    return 0;
}

static void client_free(client_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < 2 * c->n; i++) {
        free(c->names[i]);
        SSL_SESSION_free(c->sessions[i]);
    }
    free(c->names);
    free(c->is_ip);
    free(c->sessions);
    SSL_CTX_free(c->ctx);
    free(c);
}

int fg_tls_client_build(fg_config_t *cfg, char *err, size_t errlen)
{
    for (size_t ci = 0; ci < cfg->nclusters; ci++) {
        fg_cluster_t *cl = &cfg->clusters[ci];
        int https = 0;
        for (size_t d = 0; d < cl->ndestinations; d++)
            https |= cl->destinations[d].https | cl->destinations[d].health_https;
        if (!https)
            continue;
        client_t *c = calloc(1, sizeof(*c));
        if (c == NULL || (c->ctx = SSL_CTX_new(TLS_client_method())) == NULL)
            abort();
        cl->tls = c;
        c->n = cl->ndestinations;
        c->names = calloc(2 * c->n, sizeof(char *));
        c->is_ip = calloc(2 * c->n, sizeof(int));
        c->sessions = calloc(2 * c->n, sizeof(SSL_SESSION *));
        if (c->names == NULL || c->is_ip == NULL || c->sessions == NULL)
            abort();
        for (size_t d = 0; d < c->n; d++) {
            c->names[d] = dest_name(cl, &cl->destinations[d], &c->is_ip[d]);
            c->names[c->n + d] = health_name(cl, &cl->destinations[d], &c->is_ip[c->n + d]);
        }
        if (setup_ctx(cfg, ci, c->ctx, err, errlen) < 0)
            return -1;
    }
    return 0;
}

void fg_tls_client_free(fg_config_t *cfg)
{
    for (size_t ci = 0; ci < cfg->nclusters; ci++) {
        client_free(cfg->clusters[ci].tls);
        cfg->clusters[ci].tls = NULL;
    }
}

/* A client SSL for slot d of c (a destination or a health address). */
static SSL *slot_ssl_new(const fg_cluster_t *cl, const client_t *c, size_t d)
{
    if (c->names[d] == NULL)
        return NULL;
    SSL *ssl = SSL_new(c->ctx);
    if (ssl == NULL)
        return NULL;
    int ok = 1;
    if (c->is_ip[d]) {
        /* RFC 6066 3: no IP literal in SNI; the address is checked against IP SANs. */
        if (cl->http_client.verify)
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->names[d]) == 1;
    } else {
        ok = SSL_set_tlsext_host_name(ssl, c->names[d]) == 1;
        if (ok && cl->http_client.verify) {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(ssl, c->names[d]) == 1;
        }
    }
    /* RFC 7301: an HTTP/2 destination is offered h2 first, and HTTP/1.1 too unless the cluster
     * wants HTTP/2 exactly (RFC 9113 3.2). SSL_set_alpn_protos returns 0 on success. A health
     * address's slot (d >= c->n) is probed in HTTP/1.1 (worker/upstream/client.c). */
    if (ok && d < c->n && cl->destinations[d].http_version == FG_HTTP_V2) {
        int exact = cl->version_policy == FG_VERSION_EXACT;
        ok = exact
                 ? SSL_set_alpn_protos(ssl, alpn_h2, sizeof(alpn_h2) - 1) == 0
                 : SSL_set_alpn_protos(ssl, alpn_h2_or_http11, sizeof(alpn_h2_or_http11) - 1) == 0;
    }
    if (ok && c->sessions[d])
        ok = SSL_set_session(ssl, c->sessions[d]) == 1;
    if (ok)
        ok = SSL_set_app_data(ssl, &c->sessions[d]) == 1;
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

SSL *fg_tls_client_ssl_new(const fg_cluster_t *cl, size_t d)
{
    const client_t *c = cl->tls;
    return c && d < c->n ? slot_ssl_new(cl, c, d) : NULL;
}

SSL *fg_tls_client_health_ssl_new(const fg_cluster_t *cl, size_t d)
{
    const client_t *c = cl->tls;
    if (c == NULL || d >= c->n)
        return NULL;
    return slot_ssl_new(cl, c, cl->destinations[d].health ? c->n + d : d);
}

const char *fg_tls_client_name(const fg_cluster_t *cl, size_t d)
{
    const client_t *c = cl->tls;
    return c && d < c->n ? c->names[d] : NULL;
}
