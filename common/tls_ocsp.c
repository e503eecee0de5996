/* See common/tls_ocsp.h. */
#include "common/tls_ocsp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "common/tls.h"

#define LEEWAY_S 300 /* clock skew allowed on thisUpdate and nextUpdate */

struct fg_tls_ocsp_s {
    unsigned char *der; /* the response as the file holds it: what is stapled */
    size_t len;
    time_t this_update;
    time_t next_update; /* meaningful when has_next: any value, the epoch included */
    int has_next;
};

static int to_time(const ASN1_GENERALIZEDTIME *t, time_t *out)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return -1;
    *out = timegm(&tm);
    return 0;
}

static void ossl_why(char *why, size_t len, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char r[160] = "";
    if (e != 0)
        ERR_error_string_n(e, r, sizeof(r));
    snprintf(why, len, "%s%s%s", what, r[0] ? ": " : "", r);
    ERR_clear_error();
}

X509 *fg_tls_ocsp_issuer(X509 *leaf, STACK_OF(X509) * chain)
{
    for (int i = 0; i < sk_X509_num(chain); i++)
        if (X509_check_issued(sk_X509_value(chain, i), leaf) == X509_V_OK)
            return sk_X509_value(chain, i);
    return NULL;
}

/* RFC 6960 4.2.2.2: the response is signed by the issuer itself or by a responder whose
 * certificate the issuer signed for OCSP signing; the issuer is the anchor (an intermediate
 * need not chain further: PARTIAL_CHAIN). */
static int verify(OCSP_BASICRESP *bs, X509 *issuer, STACK_OF(X509) * chain, char *why, size_t len)
{
    X509_STORE *store = X509_STORE_new();
    int ok = store != NULL && X509_STORE_add_cert(store, issuer) == 1 &&
             X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN) == 1 &&
             OCSP_basic_verify(bs, chain, store, 0) == 1;
    if (!ok)
        ossl_why(why, len, "the response's signature does not verify against the issuer");
    X509_STORE_free(store);
    return ok ? 0 : -1;
}

/* Whether bs has an entry for leaf's serial whose CertID is hashed otherwise than with SHA-1
 * (RFC 6960 4.1.1 allows any hash): the certificate may well be covered, but not in a form that
 * clients, which ask and match with SHA-1, find. */
static int other_hash(OCSP_BASICRESP *bs, X509 *leaf)
{
    for (int i = 0; i < OCSP_resp_count(bs); i++) {
        ASN1_OBJECT *md = NULL;
        ASN1_INTEGER *serial = NULL;
        const OCSP_CERTID *cid = OCSP_SINGLERESP_get0_id(OCSP_resp_get0(bs, i));
        if (OCSP_id_get0_info(NULL, &md, NULL, &serial, (OCSP_CERTID *)cid) == 1 &&
            OBJ_obj2nid(md) != NID_sha1 &&
            ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(leaf)) == 0)
            return 1;
    }
    return 0;
}

/* Checks of a parsed response for leaf; fills r's times. Returns FG_TLS_OCSP_CURRENT, or
 * another FG_TLS_OCSP_* with the reason in why. */
static int check(OCSP_RESPONSE *resp, X509 *leaf, STACK_OF(X509) * chain, fg_tls_ocsp_t *r,
                 char *why, size_t len)
{
    int st = OCSP_response_status(resp);
    if (st != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        snprintf(why, len, "the response status is %s, not successful",
                 OCSP_response_status_str(st));
        return FG_TLS_OCSP_INVALID;
    }
    X509 *issuer = fg_tls_ocsp_issuer(leaf, chain);
    if (issuer == NULL) {
        snprintf(why, len,
                 "the chain file holds no issuer of the certificate: an OCSP response is checked "
                 "against it (add the intermediate after the certificate)");
        return FG_TLS_OCSP_INVALID;
    }
    OCSP_BASICRESP *bs = OCSP_response_get1_basic(resp);
    OCSP_CERTID *id = OCSP_cert_to_id(NULL, leaf, issuer);
    int status = -1, reason = 0, rc = FG_TLS_OCSP_INVALID;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    if (bs == NULL || id == NULL) {
        ossl_why(why, len, "not a basic OCSP response");
        goto out;
    }
    if (OCSP_resp_find_status(bs, id, &status, &reason, &rev, &thisupd, &nextupd) != 1) {
        char serial[80] = "?";
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        if (hex)
            snprintf(serial, sizeof(serial), "%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);
        snprintf(why, len, "the response does not cover this certificate (serial %s)%s", serial,
                 other_hash(bs, leaf) ? ": it has an entry for the serial whose CertID is not "
                                        "hashed with SHA-1, which clients match (RFC 5019 "
                                        "2.1.1); ask for a SHA-1 one (openssl ocsp's default)"
                                      : "");
        goto out;
    }
    if (verify(bs, issuer, chain, why, len) < 0)
        goto out;
    /* RFC 6960 4.2.1: responses is a SEQUENCE OF SingleResponse, and more than one may be for
     * this certificate. OCSP_resp_find_status reads the first; a client that reads them all
     * sees a later revoked or unknown one too: the status is good only when every one is. */
    for (int i = OCSP_resp_find(bs, id, -1); status == V_OCSP_CERTSTATUS_GOOD && i >= 0;
         i = OCSP_resp_find(bs, id, i)) {
        int why_revoked = -1;
        ASN1_GENERALIZEDTIME *t = NULL;
        int s = OCSP_single_get0_status(OCSP_resp_get0(bs, i), &why_revoked, &t, NULL, NULL);
        if (s != V_OCSP_CERTSTATUS_GOOD)
            status = s, reason = why_revoked, rev = t;
    }
    if (status != V_OCSP_CERTSTATUS_GOOD) {
        char when[64] = "";
        if (rev)
            fg_tls_format_time(rev, when, sizeof(when));
        snprintf(why, len, "the certificate's status is %s%s%s%s%s", OCSP_cert_status_str(status),
                 rev ? " since " : "", when,
                 status == V_OCSP_CERTSTATUS_REVOKED && reason >= 0 ? ", reason: " : "",
                 status == V_OCSP_CERTSTATUS_REVOKED && reason >= 0 ? OCSP_crl_reason_str(reason)
                                                                    : "");
        rc = status == V_OCSP_CERTSTATUS_REVOKED ? FG_TLS_OCSP_REVOKED : FG_TLS_OCSP_UNKNOWN;
        goto out;
    }
    r->has_next = nextupd != NULL;
    if (to_time(thisupd, &r->this_update) < 0 ||
        (r->has_next && to_time(nextupd, &r->next_update) < 0)) {
        ossl_why(why, len, "the response's thisUpdate or nextUpdate is not a valid time");
        goto out;
    }
    rc = FG_TLS_OCSP_CURRENT;
    /* OpenSSL's check also gives nextUpdate the leeway; the handshake does not (on_status):
     * warn whenever nothing would be stapled now. */
    if (OCSP_check_validity(thisupd, nextupd, LEEWAY_S, -1) != 1 ||
        !fg_tls_ocsp_stapled(r, time(NULL))) {
        char a[64] = "", b[64] = "";
        fg_tls_format_time(thisupd, a, sizeof(a));
        if (nextupd)
            fg_tls_format_time(nextupd, b, sizeof(b));
        ERR_clear_error();
        snprintf(why, len,
                 "the response is out of date (thisUpdate %s, nextUpdate %s): it is not stapled", a,
                 nextupd ? b : "none");
        rc = FG_TLS_OCSP_STALE;
    }
out:
    OCSP_CERTID_free(id);
    OCSP_BASICRESP_free(bs);
    return rc;
}

fg_tls_ocsp_t *fg_tls_ocsp_parse(const unsigned char *der, size_t len, X509 *leaf,
                                 STACK_OF(X509) * chain, char *why, size_t whylen, int *state)
{
    *state = FG_TLS_OCSP_INVALID;
    if (len > FG_TLS_OCSP_MAX) {
        snprintf(why, whylen, "larger than %d bytes: not an OCSP response", FG_TLS_OCSP_MAX);
        return NULL;
    }
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = len ? d2i_OCSP_RESPONSE(NULL, &p, (long)len) : NULL;
    if (resp == NULL || p != der + len) {
        OCSP_RESPONSE_free(resp);
        ossl_why(why, whylen, "not a DER OCSP response (openssl ocsp -respout writes one)");
        return NULL;
    }
    fg_tls_ocsp_t *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->der = malloc(len)) == NULL)
        abort();
    memcpy(r->der, der, len);
    r->len = len;
    *state = check(resp, leaf, chain, r, why, whylen);
    OCSP_RESPONSE_free(resp);
    if (*state == FG_TLS_OCSP_CURRENT || *state == FG_TLS_OCSP_STALE)
        return r;
    fg_tls_ocsp_free(r);
    return NULL;
}

fg_tls_ocsp_t *fg_tls_ocsp_load(const char *path, X509 *leaf, STACK_OF(X509) * chain, char *why,
                                size_t whylen, int *state)
{
    *state = FG_TLS_OCSP_INVALID;
    BIO *b = fg_tls_open_pem(path, why, whylen); /* any regular file, read as a BIO */
    if (b == NULL)
        return NULL;
    /* one byte more than the largest accepted: a larger file is refused, not cut */
    unsigned char *buf = malloc(FG_TLS_OCSP_MAX + 1);
    if (buf == NULL)
        abort();
    size_t len = 0;
    int n;
    while (len <= FG_TLS_OCSP_MAX &&
           (n = BIO_read(b, buf + len, (int)(FG_TLS_OCSP_MAX + 1 - len))) > 0)
        len += (size_t)n;
    BIO_free(b);
    fg_tls_ocsp_t *r = fg_tls_ocsp_parse(buf, len, leaf, chain, why, whylen, state);
    free(buf);
    return r;
}

int fg_tls_ocsp_responder(X509 *leaf, char *url, size_t len)
{
    STACK_OF(OPENSSL_STRING) *aia = X509_get1_ocsp(leaf);
    int rc = -1;
    for (int i = 0; i < sk_OPENSSL_STRING_num(aia) && rc < 0; i++) {
        const char *u = sk_OPENSSL_STRING_value(aia, i);
        if ((strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0) && strlen(u) < len &&
            strpbrk(u, " \t\r\n") == NULL) {
            snprintf(url, len, "%s", u);
            rc = 0;
        }
    }
    X509_email_free(aia);
    return rc;
}

/* RFC 6960 4.2.2.1: a response is reliable from thisUpdate (with the leeway a client gives it)
 * until nextUpdate, when one is given; one whose nextUpdate is before its thisUpdate is never
 * (OCSP_check_validity, as clients apply it, refuses it whatever the time). */
int fg_tls_ocsp_stapled(const fg_tls_ocsp_t *r, time_t now)
{
    if (now < r->this_update - LEEWAY_S)
        return 0;
    return !r->has_next || (r->next_update >= r->this_update && now < r->next_update);
}

/* RFC 6066 8: a client's status_request is answered with the response (in TLS 1.3, in the
 * certificate's entry, RFC 8446 4.4.2.1); outside thisUpdate..nextUpdate none is sent, as a
 * stale one would fail the client's check (RFC 6960 4.2.2.1). OpenSSL frees the copy it is given.
 */
static int on_status(SSL *ssl, void *arg)
{
    const fg_tls_ocsp_t *r = arg;
    if (!fg_tls_ocsp_stapled(r, time(NULL)))
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *p = OPENSSL_memdup(r->der, r->len);
    if (p == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_set_tlsext_status_ocsp_resp(ssl, p, (long)r->len) != 1) {
        OPENSSL_free(p);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

void fg_tls_ocsp_apply(const fg_tls_ocsp_t *r, SSL_CTX *ctx)
{
    SSL_CTX_set_tlsext_status_cb(ctx, on_status);
    SSL_CTX_set_tlsext_status_arg(ctx, (void *)r);
}

int fg_tls_ocsp_times(const fg_tls_ocsp_t *r, time_t *this_update, time_t *next_update)
{
    *this_update = r->this_update;
    *next_update = r->next_update;
    return r->has_next;
}

void fg_tls_ocsp_free(fg_tls_ocsp_t *r)
{
    if (r == NULL)
        return;
    free(r->der);
    free(r);
}
