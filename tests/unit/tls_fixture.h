/* Test fixtures for TLS: certificates made at run time with the X509 API (an ECDSA P-256 CA
 * and leaves signed by it, any validity window), written as PEM into a temporary directory,
 * and in-memory handshakes between two SSL objects over a BIO pair. */
#ifndef FG_TEST_TLS_FIXTURE_H
#define FG_TEST_TLS_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static char fx_dir[64];
static EVP_PKEY *fx_ca_key;
static X509 *fx_ca;

static EVP_PKEY *fx_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL)
        abort();
    return k;
}

static void fx_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    if (e == NULL || !X509_add_ext(x, e, -1))
        abort();
    X509_EXTENSION_free(e);
}

/* A certificate for key, subject CN cn, SANs san ("DNS:a,DNS:b" or NULL), valid from
 * now+from_s to now+to_s, signed by the CA (or self-signed when ca is 1). */
static X509 *fx_cert(EVP_PKEY *key, const char *cn, const char *san, long from_s, long to_s, int ca)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509 *issuer = ca ? x : fx_ca;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(issuer));
    if (ca) {
        fx_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        fx_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        fx_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
    }
    if (san)
        fx_ext(x, issuer, NID_subject_alt_name, san);
    if (!X509_sign(x, ca ? key : fx_ca_key, EVP_sha256()))
        abort();
    return x;
}

static char *fx_path(const char *name)
{
    static char buf[8][160];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 160, "%s/%s", fx_dir, name);
    return p;
}

static void fx_write_cert(const char *name, X509 *x)
{
    FILE *f = fopen(fx_path(name), "w");
    if (f == NULL || !PEM_write_X509(f, x))
        abort();
    fclose(f);
}

static void fx_write_key(const char *name, EVP_PKEY *k)
{
    FILE *f = fopen(fx_path(name), "w");
    if (f == NULL || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL))
        abort();
    fclose(f);
}

/* NAME.crt and NAME.key for a leaf signed by the CA. */
static void fx_leaf(const char *name, const char *cn, const char *san, long from_s, long to_s)
{
    char file[64];
    EVP_PKEY *k = fx_key();
    X509 *x = fx_cert(k, cn, san, from_s, to_s, 0);
    snprintf(file, sizeof(file), "%s.crt", name);
    fx_write_cert(file, x);
    snprintf(file, sizeof(file), "%s.key", name);
    fx_write_key(file, k);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void fx_setup(void)
{
    snprintf(fx_dir, sizeof(fx_dir), "/tmp/fg-test-tls-XXXXXX");
    if (mkdtemp(fx_dir) == NULL)
        abort();
    fx_ca_key = fx_key();
    fx_ca = fx_cert(fx_ca_key, "FastGateway Test CA", NULL, -60, 86400, 1);
    fx_write_cert("ca.crt", fx_ca);
}

static void fx_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", fx_dir);
    X509_free(fx_ca);
    EVP_PKEY_free(fx_ca_key);
}

/* Drive both ends until both finished or one failed. Returns 0 when both completed. */
static int fx_handshake(SSL *client, SSL *server)
{
    BIO *bc, *bs;
    if (!BIO_new_bio_pair(&bc, 0, &bs, 0))
        abort();
    SSL_set_bio(client, bc, bc);
    SSL_set_bio(server, bs, bs);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int rc = SSL_do_handshake(client);
            if (rc == 1)
                cdone = 1;
            else if (SSL_get_error(client, rc) != SSL_ERROR_WANT_READ)
                return -1;
        }
        if (!sdone) {
            int rc = SSL_do_handshake(server);
            if (rc == 1) {
                sdone = 1;
            } else if (SSL_get_error(server, rc) != SSL_ERROR_WANT_READ) {
                SSL_do_handshake(client); /* let the client read the server's alert */
                return -1;
            }
        }
    }
    return cdone && sdone ? 0 : -1;
}

/* After a handshake: one byte server -> client, so that the client reads TLS 1.3
 * NewSessionTicket messages (RFC 8446 4.6.1) and has a resumable session. */
static SSL_SESSION *fx_session(SSL *client, SSL *server)
{
    char b;
    if (SSL_write(server, "x", 1) != 1 || SSL_read(client, &b, 1) != 1)
        return NULL;
    return SSL_get1_session(client);
}

#endif
