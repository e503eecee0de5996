/* Client certificates on TLS servers: see common/tls_clientauth.h. */
#include "common/tls_clientauth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/tls.h"

/* The most a CA or CRL file may hold: a system CA bundle is about 200 KiB, a large CRL a few
 * MiB. */
#define FILE_MAX (64u << 20)

struct fg_tls_clientauth_s {
    int mode; /* FG_TLS_CLIENT_AUTH_* */
    int depth;
    int crl; /* CRLs are checked */
    X509_STORE *store;
    STACK_OF(X509_NAME) * names; /* the CAs' subjects, for the CertificateRequest */
    unsigned char sid[SSL_MAX_SID_CTX_LENGTH];
};

typedef struct {
    const char *file; /* configuration file */
    size_t si;
    char *err;
    size_t errlen;
} where_t;

static int fail(const where_t *w, const char *key, const char *path, const char *why)
{
    snprintf(w->err, w->errlen, "%s: servers[%zu].tls.clientAuth.%s: %s: %s", w->file, w->si, key,
             path, why);
    ERR_clear_error();
    return -1;
}

/* The whole file into *out (caller frees), for the parser and the session id context. */
static int read_all(const where_t *w, const char *key, const char *path, char **out, size_t *n)
{
    char why[256];
    BIO *b = fg_tls_open_pem(path, why, sizeof(why));
    if (b == NULL)
        return fail(w, key, path, why);
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL)
            abort();
        int r = BIO_read(b, buf + len, (int)(cap - len));
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap) {
            if (cap >= FILE_MAX) {
                free(buf);
                BIO_free(b);
                snprintf(why, sizeof(why), "larger than %u MiB", FILE_MAX >> 20);
                return fail(w, key, path, why);
            }
            cap *= 2;
            char *more = realloc(buf, cap);
            if (more == NULL)
                abort();
            buf = more;
        }
    }
    BIO_free(b);
    *out = buf;
    *n = len;
    return 0;
}

/* Whether the PEM reader, after `count` objects, stopped at the end of the input (no further
 * BEGIN line) rather than at a block it could not decode (a truncated or damaged file: what
 * follows would be silently left out). If not, says so in why. */
static int pem_end(int count, const char *what, char *why, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
        return 1;
    const char *r = ERR_reason_error_string(e);
    snprintf(why, len, "%s %d of the file cannot be read (%s)", what, count + 1, r ? r : "not PEM");
    return 0;
}

static int load_cas(fg_tls_clientauth_t *a, const where_t *w, const char *path, const char *pem,
                    size_t n)
{
    BIO *b = BIO_new_mem_buf(pem, (int)n);
    if (b == NULL)
        abort();
    int count = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        X509_NAME *name = X509_NAME_dup(X509_get_subject_name(x));
        if (X509_STORE_add_cert(a->store, x) != 1 || name == NULL ||
            !sk_X509_NAME_push(a->names, name))
            abort();
        X509_free(x);
        count++;
    }
    char why[256];
    int end = pem_end(count, "certificate", why, sizeof(why));
    BIO_free(b);
    ERR_clear_error(); /* the end of the file reads as an error */
    if (count == 0)
        return fail(w, "caFile", path, "no PEM certificate in the file");
    return end ? 0 : fail(w, "caFile", path, why);
}

static int load_crls(fg_tls_clientauth_t *a, const where_t *w, const char *path, const char *pem,
                     size_t n, fg_tls_warn_fn warn, void *arg)
{
    BIO *b = BIO_new_mem_buf(pem, (int)n);
    if (b == NULL)
        abort();
    int count = 0, rc = 0;
    X509_CRL *crl;
    time_t soon = time(NULL) + FG_TLS_EXPIRY_WARN_DAYS * 86400;
    while (rc == 0 && (crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        char issuer[256], when[64], why[512];
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        X509_NAME_oneline(X509_CRL_get_issuer(crl), issuer, sizeof(issuer));
        if (next != NULL && X509_cmp_current_time(next) <= 0) {
            /* Past its nextUpdate a CRL fails every certificate (RFC 5280 6.3.3 (a)(2)). */
            fg_tls_format_time(next, when, sizeof(when));
            snprintf(why, sizeof(why),
                     "the CRL of %s expired on %s (nextUpdate): every client certificate "
                     "would be refused",
                     issuer, when);
            rc = fail(w, "crlFile", path, why);
        } else {
            if (next != NULL && warn != NULL && X509_cmp_time(next, &soon) < 0) {
                fg_tls_format_time(next, when, sizeof(when));
                snprintf(why, sizeof(why),
                         "%s: servers[%zu].tls.clientAuth.crlFile: %s: the CRL of %s expires on "
                         "%s (nextUpdate)",
                         w->file, w->si, path, issuer, when);
                warn(arg, why);
            }
            if (X509_STORE_add_crl(a->store, crl) != 1)
                abort();
            count++;
        }
        X509_CRL_free(crl);
    }
    char why[256];
    int end = rc != 0 || pem_end(count, "CRL", why, sizeof(why));
    BIO_free(b);
    ERR_clear_error();
    if (rc == 0 && count == 0)
        rc = fail(w, "crlFile", path, "no PEM CRL (X509 CRL) in the file");
    else if (!end)
        rc = fail(w, "crlFile", path, why);
    return rc;
}

/* CRL_CHECK_ALL wants the CRL of every CA of a chain (RFC 5280 6.3.3): warns of the CAs of
 * caFile that no CRL of crlFile comes from, as each of their clients would be refused (unable
 * to get certificate CRL). The first WARN_CAS are named, then how many more there are (a
 * system bundle as caFile would otherwise fill the log at each reload). */
#define WARN_CAS 3
static void warn_no_crl(const fg_tls_clientauth_t *a, const where_t *w, const char *path,
                        fg_tls_warn_fn warn, void *arg)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(a->store);
    char name[256], msg[768];
    int missing = 0;
    for (int i = 0; warn != NULL && i < sk_X509_NAME_num(a->names); i++) {
        const X509_NAME *ca = sk_X509_NAME_value(a->names, i);
        int found = 0;
        for (int j = 0; j < sk_X509_OBJECT_num(objs) && !found; j++) {
            X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, j));
            found = crl != NULL && X509_NAME_cmp(X509_CRL_get_issuer(crl), ca) == 0;
        }
        if (!found && ++missing <= WARN_CAS) {
            X509_NAME_oneline(ca, name, sizeof(name));
            snprintf(msg, sizeof(msg),
                     "%s: servers[%zu].tls.clientAuth.crlFile: %s: no CRL of the CA %s (caFile): "
                     "its clients will be refused (unable to get certificate CRL)",
                     w->file, w->si, path, name);
            warn(arg, msg);
        }
    }
    if (missing > WARN_CAS) {
        snprintf(msg, sizeof(msg),
                 "%s: servers[%zu].tls.clientAuth.crlFile: %s: no CRL of %d more CAs of caFile",
                 w->file, w->si, path, missing - WARN_CAS);
        warn(arg, msg);
    }
}

/* name in RFC 2253 form into buf (cut to fit); returns the length. */
static size_t name_rfc2253(const X509_NAME *name, char *buf, size_t len)
{
    BIO *b = BIO_new(BIO_s_mem());
    int n = 0;
    if (b != NULL && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0)
        n = BIO_read(b, buf, (int)len - 1);
    BIO_free(b);
    n = n > 0 ? n : 0;
    buf[n] = '\0';
    return (size_t)n;
}

/* A rejected certificate, kept on its SSL for the handshake's failure log: OpenSSL keeps no
 * peer certificate of a handshake whose verification failed. */
typedef struct {
    X509 *leaf;
    int depth; /* where the chain's verification stopped (0: the client's certificate) */
} rejected_t;

static int rejected_idx = -1;

static void rejected_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    rejected_t *r = ptr;
    if (r != NULL) {
        X509_free(r->leaf);
        free(r);
    }
}

/* Verification stops at the first error: this callback keeps the certificate and returns 0
 * (the error stands) or 1 when called for a certificate that verified. */
static int on_verify(int ok, X509_STORE_CTX *x)
{
    if (ok)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *leaf = X509_STORE_CTX_get0_cert(x);
    if (ssl == NULL || leaf == NULL || SSL_get_ex_data(ssl, rejected_idx) != NULL)
        return 0;
    rejected_t *r = malloc(sizeof(*r));
    if (r == NULL || X509_up_ref(leaf) != 1) {
        free(r);
        return 0;
    }
    *r = (rejected_t){leaf, X509_STORE_CTX_get_error_depth(x)};
    if (SSL_set_ex_data(ssl, rejected_idx, r) != 1) {
        X509_free(leaf);
        free(r);
    }
    return 0;
}

fg_tls_clientauth_t *fg_tls_clientauth_load(const fg_tls_server_config_t *t, const char *server_id,
                                            const char *file, size_t si, fg_tls_warn_fn warn,
                                            void *arg, char *err, size_t errlen)
{
    where_t w = {file, si, err, errlen};
    if (rejected_idx < 0 &&
        (rejected_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, rejected_free)) < 0)
        abort();
    fg_tls_clientauth_t *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->store = X509_STORE_new()) == NULL ||
        (a->names = sk_X509_NAME_new_null()) == NULL)
        abort();
    a->mode = t->client_auth;
    a->depth = t->client_verify_depth;
    a->crl = t->client_crl_file != NULL;
    char *ca = NULL, *crl = NULL;
    size_t nca = 0, ncrl = 0;
    int rc = read_all(&w, "caFile", t->client_ca_file, &ca, &nca);
    if (rc == 0)
        rc = load_cas(a, &w, t->client_ca_file, ca, nca);
    if (rc == 0 && a->crl) {
        rc = read_all(&w, "crlFile", t->client_crl_file, &crl, &ncrl);
        if (rc == 0)
            rc = load_crls(a, &w, t->client_crl_file, crl, ncrl, warn, arg);
        if (rc == 0)
            warn_no_crl(a, &w, t->client_crl_file, warn, arg);
    }
    if (rc == 0) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        char policy[32];
        int plen = snprintf(policy, sizeof(policy), "%d/%d/%d", a->mode, a->depth, a->crl);
        EVP_MD_CTX *h = EVP_MD_CTX_new();
        if (h == NULL || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1 ||
            EVP_DigestUpdate(h, server_id, strlen(server_id) + 1) != 1 ||
            EVP_DigestUpdate(h, policy, (size_t)plen) != 1 || EVP_DigestUpdate(h, ca, nca) != 1 ||
            (crl && EVP_DigestUpdate(h, crl, ncrl) != 1) || EVP_DigestFinal_ex(h, md, &mdlen) != 1)
            abort();
        EVP_MD_CTX_free(h);
        memcpy(a->sid, md, sizeof(a->sid) < mdlen ? sizeof(a->sid) : mdlen);
    }
    free(ca);
    free(crl);
    if (rc < 0) {
        fg_tls_clientauth_free(a);
        return NULL;
    }
    return a;
}

/* A resumed session stands for its full handshake's verification (RFC 8446 2.2, RFC 5246
 * F.1.4), which fails once any certificate of the client's path is past its notAfter (RFC 5280
 * 6.1.3 (a)(2)), the intermediates' and the anchor's too, not only the client certificate's. The
 * earliest notAfter of the chain verified in the full handshake is kept in the session (ticket
 * appdata: encrypted in a ticket with the rest of the session, copied into the sessions that a
 * resumed handshake issues), as the time the session ends. */
typedef struct {
    unsigned char tag[4]; /* "fgCE" */
    int64_t end;          /* the earliest notAfter, seconds since the epoch */
} session_end_t;

static const unsigned char END_TAG[4] = {'f', 'g', 'C', 'E'};

static int not_after(const X509 *x, time_t *out)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
        return -1;
    *out = timegm(&tm);
    return 0;
}

/* When sess stops standing for a verification: *end; returns 0, or -1 when no client
 * certificate was verified for it. */
static int session_end(SSL *ssl, SSL_SESSION *sess, time_t *end)
{
    void *data = NULL;
    size_t len = 0;
    session_end_t e;
    X509 *peer = SSL_SESSION_get0_peer(sess);
    if (peer == NULL)
        return -1;
    if (SSL_SESSION_get0_ticket_appdata(sess, &data, &len) == 1 && len == sizeof(e) &&
        memcmp(data, END_TAG, sizeof(END_TAG)) == 0) {
        memcpy(&e, data, sizeof(e));
        *end = (time_t)e.end;
        return 0;
    }
    if (not_after(peer, end) < 0)
        return -1;
    /* A full handshake (a resumed one has no verified chain): its whole path counts. */
    STACK_OF(X509) *chain = ssl && !SSL_session_reused(ssl) ? SSL_get0_verified_chain(ssl) : NULL;
    for (int i = 0; i < sk_X509_num(chain); i++) {
        time_t t;
        if (not_after(sk_X509_value(chain, i), &t) == 0 && t < *end)
            *end = t;
    }
    return 0;
}

/* Records the end in the session that a ticket (TLS 1.2 or 1.3, stateless or stateful) is
 * about to carry; a session a resumed handshake issues already has it. */
static int on_ticket_generate(SSL *ssl, void *arg)
{
    (void)arg;
    SSL_SESSION *sess = SSL_get0_session(ssl);
    time_t end;
    if (sess == NULL || session_end(ssl, sess, &end) < 0)
        return 1;
    session_end_t e;
    memcpy(e.tag, END_TAG, sizeof(END_TAG));
    e.end = (int64_t)end;
    return SSL_SESSION_set1_ticket_appdata(sess, &e, sizeof(e));
}

/* A ticket whose session has ended gives a full handshake (and a new ticket) instead of
 * resuming. Other outcomes are OpenSSL's defaults. Sessions from the server's cache
 * (sessionCache: TLS 1.2 session ids, TLS 1.3 stateful tickets) do not come here: their
 * lifetime is bounded instead (on_new_session). */
static SSL_TICKET_RETURN on_ticket_decrypted(SSL *ssl, SSL_SESSION *sess, const unsigned char *name,
                                             size_t nlen, SSL_TICKET_STATUS status, void *arg)
{
    time_t end;
    switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
        /* past the end's second, as X509_cmp_current_time(notAfter) <= 0 was */
        if (session_end(NULL, sess, &end) == 0 && time(NULL) >= end)
            return SSL_TICKET_RETURN_IGNORE_RENEW;
        return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
        return SSL_TICKET_RETURN_ABORT;
    }
}

/* The same rule for a session that the server's cache (sessionCache) keeps: its lifetime ends
 * no later than its end, so that the cache lookup finds it expired (a full handshake) once a
 * certificate of its path is. Called as the session enters the cache; returns 0: the cache
 * keeps the only reference. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    time_t end;
    if (session_end(ssl, sess, &end) < 0)
        return 0;
    /* The cache counts whole seconds and ends a session only once the clock is past its
     * creation second + timeout: one second less ends it by the end's second. */
    long left = (long)(end - time(NULL)) - 1;
    if (left < 0)
        left = 0;
    if (left < SSL_SESSION_get_timeout(sess))
        SSL_SESSION_set_timeout(sess, left);
    return 0;
}

int fg_tls_clientauth_apply(const fg_tls_clientauth_t *a, SSL_CTX *ctx)
{
    STACK_OF(X509_NAME) *names = SSL_dup_CA_list(a->names);
    if (names == NULL || SSL_CTX_set1_verify_cert_store(ctx, a->store) != 1) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return -1;
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
    /* RFC 8446 4.4.2.4: without a certificate, "required" aborts with certificate_required. */
    SSL_CTX_set_verify(
        ctx,
        SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE |
            (a->mode == FG_TLS_CLIENT_AUTH_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        on_verify);
    SSL_CTX_set_verify_depth(ctx, a->depth);
    if (a->crl)
        X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx),
                                    X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (SSL_CTX_set_session_ticket_cb(ctx, on_ticket_generate, on_ticket_decrypted, NULL) != 1)
        return -1;
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return SSL_CTX_set_session_id_context(ctx, a->sid, sizeof(a->sid)) == 1 ? 0 : -1;
}

size_t fg_tls_clientauth_sid(const fg_tls_clientauth_t *a, unsigned char *buf, size_t len)
{
    size_t n = sizeof(a->sid) < len ? sizeof(a->sid) : len;
    memcpy(buf, a->sid, n);
    return n;
}

void fg_tls_clientauth_free(fg_tls_clientauth_t *a)
{
    if (a == NULL)
        return;
    X509_STORE_free(a->store);
    sk_X509_NAME_pop_free(a->names, X509_NAME_free);
    free(a);
}

int fg_tls_clientauth_why(const SSL *ssl, unsigned long err, char *buf, size_t len)
{
    if (!(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER))
        return 0;
    if (ERR_GET_LIB(err) == ERR_LIB_SSL &&
        ERR_GET_REASON(err) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        snprintf(buf, len, "no client certificate (clientAuth mode \"required\")");
        return 1;
    }
    long v = SSL_get_verify_result(ssl);
    if (v == X509_V_OK)
        return 0;
    char subject[256] = "";
    const rejected_t *r = rejected_idx >= 0 ? SSL_get_ex_data(ssl, rejected_idx) : NULL;
    if (r != NULL)
        name_rfc2253(X509_get_subject_name(r->leaf), subject, sizeof(subject));
    snprintf(buf, len, "client certificate%s%s%s rejected: %s (verify error %ld at depth %d)",
             subject[0] ? " \"" : "", subject, subject[0] ? "\"" : "",
             X509_verify_cert_error_string(v), v, r ? r->depth : 0);
    return 1;
}

X509 *fg_tls_client_cert(const SSL *ssl)
{
    return SSL_get0_peer_certificate(ssl);
}

/* fg_tls_client_id_t and its two strings in one allocation, freed with the SSL. */
static int id_idx = -1;

static void id_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

const fg_tls_client_id_t *fg_tls_client_id(const SSL *ssl)
{
    X509 *x = SSL_get0_peer_certificate(ssl);
    if (x == NULL)
        return NULL;
    if (id_idx < 0 && (id_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, id_free)) < 0)
        return NULL;
    fg_tls_client_id_t *id = SSL_get_ex_data(ssl, id_idx);
    if (id != NULL)
        return id;
    char subject[512];
    size_t slen = name_rfc2253(X509_get_subject_name(x), subject, sizeof(subject));
    int n = i2d_X509(x, NULL);
    if (n <= 0)
        return NULL;
    size_t b64cap = (size_t)(n + 2) / 3 * 4 + 1;
    unsigned char *der = malloc((size_t)n);
    id = malloc(sizeof(*id) + slen + 1 + b64cap);
    unsigned char *p = der;
    if (der == NULL || id == NULL || i2d_X509(x, &p) != n) {
        free(der);
        free(id);
        return NULL;
    }
    char *s = (char *)(id + 1), *b = s + slen + 1;
    memcpy(s, subject, slen + 1);
    int blen = EVP_EncodeBlock((unsigned char *)b, der, n);
    free(der);
    *id = (fg_tls_client_id_t){{s, slen}, {b, (size_t)blen}};
    if (SSL_set_ex_data((SSL *)ssl, id_idx, id) != 1) {
        free(id);
        return NULL;
    }
    return id;
}
