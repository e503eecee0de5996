/* See master/ocsp_update.h. */
#include "master/ocsp_update.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>

#include "common/atomic_file.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/tls_ocsp.h"
#include "common/x509gen.h"
#include "master/http_fetch.h"

#define FETCH_TIMEOUT_S 15     /* one exchange with a responder, connect to the last byte */
#define NO_NEXT_UPDATE_S 3600  /* a response without nextUpdate is fetched again after this */
#define ASK_AGAIN_S 3600       /* a responder that had nothing newer is asked again after this */
#define TMP_SUFFIX ".ocsp-new" /* a response being written: fg_atomic_file_prepare */
#define CONTENT_TYPE "application/ocsp-response"
#define GET_URL_MAX 255 /* RFC 5019 5: the longest request URL sent by GET */

int fg_ocsp_update_enabled(const fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->ncertificates; i++)
        if (cfg->certificates[i].ocsp_update)
            return 1;
    return 0;
}

uint64_t fg_ocsp_update_fingerprint(const fg_config_t *cfg)
{
    uint64_t h = FG_HASH_FNV_BASIS;
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        const fg_tls_cert_config_t *c = &cfg->certificates[i];
        if (!c->ocsp_update)
            continue;
        const char *s[] = {c->id, c->chain, c->ocsp_file,
                           c->ocsp_responder ? c->ocsp_responder : ""};
        for (size_t k = 0; k < sizeof(s) / sizeof(s[0]); k++)
            h = fg_hash_fnv1a(h, s[k], strlen(s[k]) + 1);
    }
    return h;
}

/* The chain file as it is on disk now (what the reload that follows an update loads): the leaf
 * and the certificates after it. */
static int read_chain(const char *path, X509 **leaf, STACK_OF(X509) * *chain, char *why, size_t len)
{
    BIO *b = fg_tls_open_pem(path, why, len);
    if (b == NULL)
        return -1;
    *leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
    *chain = sk_X509_new_null();
    if (*chain == NULL)
        abort();
    X509 *x;
    while (*leaf != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        if (sk_X509_push(*chain, x) <= 0)
            abort();
    ERR_clear_error();
    BIO_free(b);
    if (*leaf == NULL) {
        snprintf(why, len, "%s holds no PEM certificate", path);
        return -1;
    }
    return 0;
}

/* Whether the file needs a new response; why (when it does) into buf. *cur_this gets the
 * thisUpdate of the current response it holds (0: none usable). */
static int due(const fg_tls_cert_config_t *c, X509 *leaf, STACK_OF(X509) * chain, time_t now,
               time_t *cur_this, char *why, size_t len)
{
    int state;
    struct stat st;
    *cur_this = 0;
    if (stat(c->ocsp_file, &st) != 0) {
        snprintf(why, len, errno == ENOENT ? "no response yet" : "%s: %s", c->ocsp_file,
                 strerror(errno));
        return 1;
    }
    fg_tls_ocsp_t *cur = fg_tls_ocsp_load(c->ocsp_file, leaf, chain, why, len, &state);
    if (cur == NULL || state != FG_TLS_OCSP_CURRENT) {
        fg_tls_ocsp_free(cur);
        return 1;
    }
    time_t this_update, next_update;
    int has_next = fg_tls_ocsp_times(cur, &this_update, &next_update);
    fg_tls_ocsp_free(cur);
    *cur_this = this_update;
    /* CA/Browser Forum Baseline Requirements 4.9.10: a CA publishes the next response before
     * half of the current one's validity has passed. The file's time is when the responder
     * was last asked: one with nothing newer yet is asked again an hour later, not at every
     * check. */
    time_t at =
        has_next ? this_update + (next_update - this_update) / 2 : this_update + NO_NEXT_UPDATE_S;
    if (now < at || now < st.st_mtime + ASK_AGAIN_S)
        return 0;
    snprintf(why, len,
             has_next ? "half of the response's validity has passed"
                      : "the response, without nextUpdate, is over an hour old");
    return 1;
}

/* The DER OCSP request (RFC 6960 4.1) for leaf, issued by issuer: one CertID, hashed with SHA-1
 * as responders of the lightweight profile expect (RFC 5019 2.1.1), without a nonce (they answer
 * with precomputed responses, RFC 5019 4). Returns its length and *der (OPENSSL_free), or -1. */
static int request_der(X509 *leaf, X509 *issuer, unsigned char **der)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *id = OCSP_cert_to_id(NULL, leaf, issuer);
    int n = -1;
    if (req != NULL && id != NULL && OCSP_request_add0_id(req, id) != NULL) {
        id = NULL; /* req owns it */
        *der = NULL;
        n = i2d_OCSP_REQUEST(req, der);
    }
    OCSP_CERTID_free(id);
    OCSP_REQUEST_free(req);
    return n;
}

/* The GET form of the request der (n bytes) to responder url, RFC 6960 A.1:
 * "{url}/{url-encoding of base64 of the DER}", into out (outlen bytes, at least
 * GET_URL_MAX + 1). RFC 5019 5 has clients use GET when the whole URL, scheme and host
 * included, is at most 255 bytes, and POST for a longer one. The base64 alphabet's "+", "/" and
 * "=" are percent-encoded (RFC 3986 2.1), so the request is one path segment; a url that ends
 * with "/" gets no second one. Returns 0, or -1 when the request goes by POST: the URL would be
 * too long, or url has a query, after which a path segment cannot go. */
static int get_url(const char *url, const unsigned char *der, int n, char *out, size_t outlen)
{
    unsigned char b64[GET_URL_MAX + 4];
    size_t len = strlen(url);
    if (strchr(url, '?') != NULL || n <= 0 || (size_t)(n + 2) / 3 * 4 > GET_URL_MAX ||
        len + 1 > GET_URL_MAX || outlen <= GET_URL_MAX)
        return -1;
    int b = EVP_EncodeBlock(b64, der, n);
    memcpy(out, url, len);
    if (len == 0 || url[len - 1] != '/')
        out[len++] = '/';
    for (int i = 0; i < b; i++) {
        int esc = b64[i] == '+' || b64[i] == '/' || b64[i] == '=';
        if (len + (esc ? 3 : 1) > GET_URL_MAX)
            return -1;
        if (esc) {
            snprintf(out + len, 4, "%%%02X", b64[i]);
            len += 3;
        } else {
            out[len++] = (char)b64[i];
        }
    }
    out[len] = '\0';
    return 0;
}

/* One exchange's limit; the test build takes FG_TEST_OCSP_TIMEOUT=N (seconds) from the
 * environment, so that a test sees a stalled responder time out. */
static unsigned fetch_timeout_s(void)
{
#ifdef FG_TEST_HOOKS
    const char *e = getenv("FG_TEST_OCSP_TIMEOUT");
    if (e != NULL && atoi(e) > 0)
        return (unsigned)atoi(e);
#endif
    return FETCH_TIMEOUT_S;
}

/* Fetches and keeps the response of certificate i; FG_OCSP_* bits. */
static int update_one(const fg_config_t *cfg, size_t i, SSL_CTX *ctx, int force)
{
    const fg_tls_cert_config_t *c = &cfg->certificates[i];
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    unsigned char *req = NULL;
    fg_http_fetch_resp_t r = {0};
    char why[512], url[1024], get[GET_URL_MAX + 1], err[768];
    int bits = FG_OCSP_FAILED, state;
    time_t cur_this;

    if (c->acme && access(c->chain, F_OK) != 0 && errno == ENOENT) {
        bits = 0; /* not issued yet: the placeholder is served, nothing to ask about */
        goto out;
    }
    if (read_chain(c->chain, &leaf, &chain, why, sizeof(why)) < 0) {
        fg_log_error("ocsp: certificates[%zu] (%s): %s: %s", i, c->id, c->chain, why);
        goto out;
    }
    if (fg_x509gen_is_placeholder(leaf)) {
        bits = 0;
        goto out;
    }
    X509 *issuer = fg_tls_ocsp_issuer(leaf, chain);
    if (issuer == NULL) {
        fg_log_error("ocsp: certificates[%zu] (%s): %s holds no issuer of the certificate: the "
                     "request names it (add the intermediate after the certificate)",
                     i, c->id, c->chain);
        goto out;
    }
    if (c->ocsp_responder) {
        snprintf(url, sizeof(url), "%s", c->ocsp_responder);
    } else if (fg_tls_ocsp_responder(leaf, url, sizeof(url)) < 0) {
        /* an issued ACME certificate may name none (Let's Encrypt's do not, since 2025) */
        if (c->acme) {
            fg_log_warn("ocsp: certificates[%zu] (%s): the certificate names no OCSP responder: "
                        "nothing to staple (\"ocspResponder\" names one)",
                        i, c->id);
            bits = 0;
        } else {
            fg_log_error("ocsp: certificates[%zu] (%s): the certificate names no OCSP "
                         "responder: set \"ocspResponder\"",
                         i, c->id);
        }
        goto out;
    }
    if (!due(c, leaf, chain, time(NULL), &cur_this, why, sizeof(why)) && !force) {
        bits = 0;
        goto out;
    }
    fg_log_info("ocsp: certificates[%zu] (%s): asking %s: %s", i, c->id, url,
                force ? "asked for (ocsp update)" : why);
    int n = request_der(leaf, issuer, &req);
    if (n <= 0) {
        fg_log_error("ocsp: certificates[%zu] (%s): cannot build the request", i, c->id);
        ERR_clear_error();
        goto out;
    }
    /* RFC 6960 A.1: GET of the request in the URL or POST of application/ocsp-request (RFC
     * 5019 5 decides which); the answer application/ocsp-response */
    fg_http_fetch_req_t q = {.method = "POST",
                             .url = url,
                             .body = req,
                             .body_len = (size_t)n,
                             .content_type = "application/ocsp-request",
                             .accept = CONTENT_TYPE};
    if (get_url(url, req, n, get, sizeof(get)) == 0)
        q = (fg_http_fetch_req_t){.method = "GET", .url = get, .accept = CONTENT_TYPE};
    if (fg_http_fetch(ctx, &q, fetch_timeout_s(), &r, err, sizeof(err)) < 0) {
        fg_log_error("ocsp: certificates[%zu] (%s): %s: %s", i, c->id, url, err);
        goto out;
    }
    if (r.status != 200) {
        fg_log_error("ocsp: certificates[%zu] (%s): %s answered %d", i, c->id, url, r.status);
        goto out;
    }
    fg_tls_ocsp_t *got = fg_tls_ocsp_parse((const unsigned char *)r.body, r.len, leaf, chain, why,
                                           sizeof(why), &state);
    time_t got_this = 0, got_next;
    if (got != NULL)
        fg_tls_ocsp_times(got, &got_this, &got_next);
    fg_tls_ocsp_free(got);
    if (state == FG_TLS_OCSP_REVOKED) {
        /* the good response the file holds is no longer true: nothing is stapled */
        int removed = unlink(c->ocsp_file) == 0;
        fg_log_error("ocsp: certificates[%zu] (%s): %s: %s: %s", i, c->id, url, why,
                     removed ? "removed the response file, nothing is stapled"
                             : "nothing is stapled");
        bits = FG_OCSP_FAILED | (removed ? FG_OCSP_CHANGED : 0);
        goto out;
    }
    if (state != FG_TLS_OCSP_CURRENT) {
        /* unknown included: a responder that lags behind its CA; the current good one stays */
        fg_log_error("ocsp: certificates[%zu] (%s): %s: the answer is not kept: %s", i, c->id, url,
                     why);
        goto out;
    }
    if (cur_this != 0 && got_this <= cur_this) {
        /* the responder has nothing newer (the same response, signed again, or an older one
         * replayed): the file stays, and its time says when it was asked */
        utimensat(AT_FDCWD, c->ocsp_file, NULL, 0);
        fg_log_info("ocsp: certificates[%zu] (%s): %s: nothing newer than the response kept", i,
                    c->id, url);
        bits = 0;
        goto out;
    }
    if (fg_atomic_file_write(c->ocsp_file, TMP_SUFFIX, r.body, r.len, 0644, err, sizeof(err)) < 0) {
        fg_log_error("ocsp: certificates[%zu] (%s): %s", i, c->id, err);
        goto out;
    }
    fg_log_notice("ocsp: certificates[%zu] (%s): a new response from %s written to %s", i, c->id,
                  url, c->ocsp_file);
    bits = FG_OCSP_CHANGED;
out:
    fg_http_fetch_free(&r);
    OPENSSL_free(req);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    return bits;
}

int fg_ocsp_update(const fg_config_t *cfg, int force, volatile sig_atomic_t *bits)
{
    char err[256];
    /* an https responder is verified against the system's CAs */
    SSL_CTX *ctx = fg_http_fetch_ctx(NULL, err, sizeof(err));
    if (ctx == NULL)
        fg_log_warn("ocsp: no TLS client for https responders: %s", err);
    for (size_t i = 0; i < cfg->ncertificates; i++)
        if (cfg->certificates[i].ocsp_update)
            *bits |= update_one(cfg, i, ctx, force);
    SSL_CTX_free(ctx);
    return *bits;
}
