/* See master/acme.h. The requests are RFC 8555's: JWS with ES256 (7515, 7518 3.4), the account
 * key's JWK thumbprint in the key authorizations (7638), POST-as-GET for reads (6.3), a fresh
 * Replay-Nonce for every request (6.5, one retry on badNonce). */
#include "master/acme.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/atomic_file.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/str.h"
#include "common/tls.h"
#include "common/x509gen.h"
#include "master/http_fetch.h"

#define TIMEOUT_S 30 /* each connect, send and receive */

/* TIMEOUT_S; test builds only (-DFG_TEST_HOOKS, build/test/fastgateway): FG_TEST_ACME_TIMEOUT=N
 * in the environment makes it N seconds, so that a test sees a stalled CA time out. */
static unsigned timeout_s(void)
{
#ifdef FG_TEST_HOOKS
    const char *e = getenv("FG_TEST_ACME_TIMEOUT");
    if (e != NULL && atoi(e) > 0)
        return (unsigned)atoi(e);
#endif
    return TIMEOUT_S;
}
#define POLL_TRIES 90
#define POLL_WAIT_S 1

typedef struct {
    const fg_config_t *cfg;
    SSL_CTX *ctx;
    EVP_PKEY *key;   /* the account's */
    char jwk[256];   /* its public key, RFC 7638 3.2's member order */
    char thumb[64];  /* its thumbprint, base64url */
    char nonce[256]; /* the next request's, "" = fetch one */
    char new_nonce[1024], new_account[1024], new_order[1024];
    char kid[2048];   /* the account URL */
    int eab_required; /* the directory's meta.externalAccountRequired */
    char err[1536];   /* why the last step failed */
} acme_t;

/* why the current step failed, into a->err; the CA's text (problem details, URLs) is in it,
 * so a control character is escaped (\xHH) and cannot start a line of the error log */
__attribute__((format(printf, 2, 3))) static void seterr(acme_t *a, const char *fmt, ...)
{
    static const char hex[] = "0123456789abcdef";
    char raw[sizeof(a->err)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    size_t n = 0;
    for (const char *p = raw; *p && n + 5 <= sizeof(a->err); p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != 0x7f) {
            a->err[n++] = (char)c;
        } else {
            a->err[n++] = '\\';
            a->err[n++] = 'x';
            a->err[n++] = hex[c >> 4];
            a->err[n++] = hex[c & 15];
        }
    }
    a->err[n] = '\0';
}

/* ---- encoding ---- */

/* RFC 4648 5 without padding; malloc'd. */
static char *b64url(const unsigned char *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out == NULL)
        abort();
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

static char *b64url_str(const char *s)
{
    return b64url((const unsigned char *)s, strlen(s));
}

/* ---- files ---- */

/* An encrypted PEM key is refused, never asked for on a terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

__attribute__((format(printf, 3, 4))) static void put(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

#define TMP_SUFFIX ".acme-new" /* a file being written: fg_atomic_file_prepare */

/* Whether path's temporary file can be written, tried before an order: a CA that issued a
 * certificate the client cannot store would be asked again at every check. */
static int writable(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    if (fg_atomic_file_prepare(path, TMP_SUFFIX, "", 0, 0600, tmp, sizeof(tmp), err, errlen) < 0)
        return -1;
    unlink(tmp);
    return 0;
}

/* path and, like mkdir -p, its missing parents (0755); path itself gets mode. */
static int make_dir(const char *path, mode_t mode, char *err, size_t errlen)
{
    char p[4096];
    if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p)) {
        put(err, errlen, "%s: path too long", path);
        return -1;
    }
    for (char *s = strchr(p + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            put(err, errlen, "cannot create %s: %s", p, strerror(errno));
            return -1;
        }
        *s = '/';
    }
    if (mkdir(p, mode) == 0 || errno == EEXIST)
        return 0;
    put(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

/* stateDir/account.key, made on first use (0600). */
static EVP_PKEY *account_key(acme_t *a)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/account.key", a->cfg->acme.state_dir);
    FILE *f = fopen(path, "re");
    if (f != NULL) {
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (k == NULL)
            seterr(a, "%s: not a PEM private key", path);
        ERR_clear_error();
        return k;
    }
    if (errno != ENOENT) {
        seterr(a, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = fg_x509gen_key();
    BIO *b = BIO_new(BIO_s_mem());
    char *pem = NULL;
    long n = 0;
    if (k == NULL || b == NULL || PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(b, &pem)) <= 0 ||
        fg_atomic_file_write(path, TMP_SUFFIX, pem, (size_t)n, 0600, a->err, sizeof(a->err)) < 0) {
        if (a->err[0] == '\0')
            seterr(a, "cannot make the account key");
        EVP_PKEY_free(k);
        k = NULL;
    } else {
        fg_log_notice("acme: new account key %s", path);
    }
    BIO_free(b);
    return k;
}

/* ---- JWS ---- */

static int make_jwk(acme_t *a)
{
    BIGNUM *x = NULL, *y = NULL;
    unsigned char xb[32], yb[32], md[32];
    int ok = EVP_PKEY_get_bn_param(a->key, OSSL_PKEY_PARAM_EC_PUB_X, &x) == 1 &&
             EVP_PKEY_get_bn_param(a->key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) == 1 &&
             BN_bn2binpad(x, xb, 32) == 32 && BN_bn2binpad(y, yb, 32) == 32;
    BN_free(x);
    BN_free(y);
    if (!ok) {
        seterr(a, "the account key is not a P-256 key");
        return -1;
    }
    char *xs = b64url(xb, 32), *ys = b64url(yb, 32);
    snprintf(a->jwk, sizeof(a->jwk), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
             xs, ys);
    free(xs);
    free(ys);
    SHA256((const unsigned char *)a->jwk, strlen(a->jwk), md);
    char *t = b64url(md, sizeof(md));
    snprintf(a->thumb, sizeof(a->thumb), "%s", t);
    free(t);
    return 0;
}

/* A flattened JWS (RFC 7515 7.2.2) being made: its protected header and payload in base64url
 * and the signing input they make (RFC 7515 5.1). */
typedef struct {
    char *p64, *pl64, *input;
    size_t ilen;
} jws_input_t;

/* The input for the header prot (taken) and payload. */
static void jws_begin(jws_input_t *j, json_t *prot, const char *payload)
{
    char *ptext = json_dumps(prot, JSON_COMPACT);
    json_decref(prot);
    j->p64 = b64url_str(ptext);
    j->pl64 = b64url_str(payload);
    free(ptext);
    j->ilen = strlen(j->p64) + 1 + strlen(j->pl64);
    j->input = malloc(j->ilen + 1);
    if (j->input == NULL)
        abort();
    snprintf(j->input, j->ilen + 1, "%s.%s", j->p64, j->pl64);
}

/* The JWS object with signature sig (NULL: signing failed, NULL returned); j is released. */
static json_t *jws_end(jws_input_t *j, const unsigned char *sig, size_t len)
{
    json_t *out = NULL;
    if (sig != NULL) {
        char *s64 = b64url(sig, len);
        out =
            json_pack("{s:s, s:s, s:s}", "protected", j->p64, "payload", j->pl64, "signature", s64);
        free(s64);
    }
    free(j->input);
    free(j->p64);
    free(j->pl64);
    return out;
}

/* The flattened JWS of payload (NULL: POST-as-GET, an empty payload) for url, signed ES256 by
 * the account key (RFC 8555 6.2); malloc'd. */
static char *jws(acme_t *a, const char *url, const char *payload, int with_jwk)
{
    json_t *prot = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "nonce", a->nonce, "url", url);
    if (with_jwk)
        json_object_set_new(prot, "jwk", json_loads(a->jwk, 0, NULL));
    else
        json_object_set_new(prot, "kid", json_string(a->kid));
    jws_input_t j;
    jws_begin(&j, prot, payload ? payload : "");
    unsigned char der[128], raw[64];
    size_t dlen = sizeof(der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ECDSA_SIG *sig = NULL;
    const unsigned char *dp = der;
    int ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, a->key) == 1 &&
             EVP_DigestSign(md, der, &dlen, (const unsigned char *)j.input, j.ilen) == 1 &&
             (sig = d2i_ECDSA_SIG(NULL, &dp, (long)dlen)) != NULL &&
             BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32) == 32 &&
             BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32) == 32;
    EVP_MD_CTX_free(md);
    ECDSA_SIG_free(sig);
    json_t *body = jws_end(&j, ok ? raw : NULL, sizeof(raw));
    char *out = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return out;
}

/* ---- requests ---- */

/* "HTTP 403: urn:ietf:params:acme:error:unauthorized: detail" for a problem document. */
/* One exchange with the CA. RFC 8555 6.1: HTTPS only, also for the URLs its answers name. */
static int acme_http(acme_t *a, const char *method, const char *url, const char *body,
                     fg_http_fetch_resp_t *r, char *why, size_t wlen)
{
    if (strncmp(url, "https://", 8) != 0) {
        memset(r, 0, sizeof(*r));
        snprintf(why, wlen, "URL: %s: not https (RFC 8555 6.1)", url);
        return -1;
    }
    fg_http_fetch_req_t req = {
        .method = method,
        .url = url,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .content_type = "application/jose+json",
        .accept = "application/json, application/pem-certificate-chain",
    };
    return fg_http_fetch(a->ctx, &req, timeout_s(), r, why, wlen);
}

static void problem(acme_t *a, const char *step, const fg_http_fetch_resp_t *r)
{
    json_t *doc = json_loads(r->body ? r->body : "", 0, NULL);
    const char *type = json_string_value(json_object_get(doc, "type"));
    const char *detail = json_string_value(json_object_get(doc, "detail"));
    seterr(a, "%s: HTTP %d%s%s%s%s", step, r->status, type ? ": " : "", type ? type : "",
           detail ? ": " : "", detail ? detail : "");
    json_decref(doc);
}

static int is_bad_nonce(const fg_http_fetch_resp_t *r)
{
    return r->status == 400 && r->body && strstr(r->body, "urn:ietf:params:acme:error:badNonce");
}

static int fetch_nonce(acme_t *a)
{
    fg_http_fetch_resp_t r;
    char why[512];
    if (acme_http(a, "HEAD", a->new_nonce, NULL, &r, why, sizeof(why)) < 0) {
        seterr(a, "newNonce %s: %s", a->new_nonce, why);
        return -1;
    }
    snprintf(a->nonce, sizeof(a->nonce), "%s", r.nonce);
    fg_http_fetch_free(&r);
    if (a->nonce[0] == '\0') {
        seterr(a, "newNonce %s: no Replay-Nonce", a->new_nonce);
        return -1;
    }
    return 0;
}

/* A signed POST; 0 with r filled (2xx or 3xx), or -1 with a->err set. */
static int post(acme_t *a, const char *step, const char *url, const char *payload, int with_jwk,
                fg_http_fetch_resp_t *r)
{
    char why[512];
    for (int attempt = 0; attempt < 3; attempt++) {
        if (a->nonce[0] == '\0' && fetch_nonce(a) < 0)
            return -1;
        char *body = jws(a, url, payload, with_jwk);
        a->nonce[0] = '\0';
        if (body == NULL) {
            seterr(a, "%s: cannot sign the request", step);
            return -1;
        }
        int rc = acme_http(a, "POST", url, body, r, why, sizeof(why));
        free(body);
        if (rc < 0) {
            seterr(a, "%s %s: %s", step, url, why);
            return -1;
        }
        snprintf(a->nonce, sizeof(a->nonce), "%s", r->nonce);
        if (is_bad_nonce(r) && attempt < 2) {
            fg_http_fetch_free(r);
            continue;
        }
        if (r->status >= 400) {
            problem(a, step, r);
            fg_http_fetch_free(r);
            return -1;
        }
        return 0;
    }
    return -1;
}

/* A POST-as-GET of url whose body is a JSON object; NULL with a->err set. */
static json_t *get_json(acme_t *a, const char *step, const char *url)
{
    fg_http_fetch_resp_t r;
    if (post(a, step, url, NULL, 0, &r) < 0)
        return NULL;
    json_t *doc = json_loads(r.body, 0, NULL);
    fg_http_fetch_free(&r);
    if (!json_is_object(doc)) {
        seterr(a, "%s: the answer is not a JSON object", step);
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static int directory(acme_t *a)
{
    const char *url = a->cfg->acme.directory;
    fg_http_fetch_resp_t r;
    char why[512];
    if (acme_http(a, "GET", url, NULL, &r, why, sizeof(why)) < 0) {
        seterr(a, "directory %s: %s", url, why);
        return -1;
    }
    json_t *doc = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    const char *nn = json_string_value(json_object_get(doc, "newNonce"));
    const char *na = json_string_value(json_object_get(doc, "newAccount"));
    const char *no = json_string_value(json_object_get(doc, "newOrder"));
    int rc = -1;
    a->eab_required =
        json_is_true(json_object_get(json_object_get(doc, "meta"), "externalAccountRequired"));
    if (nn && na && no) {
        snprintf(a->new_nonce, sizeof(a->new_nonce), "%s", nn);
        snprintf(a->new_account, sizeof(a->new_account), "%s", na);
        snprintf(a->new_order, sizeof(a->new_order), "%s", no);
        rc = 0;
    } else {
        seterr(a, "directory %s: HTTP %d, not an ACME directory", url, r.status);
    }
    json_decref(doc);
    fg_http_fetch_free(&r);
    return rc;
}

/* RFC 8555 7.3.4: the binding of the account key to the CA's external account: a JWS with
 * the account's JWK as payload, MACed (HS256) with the key the CA gave for keyId, for the
 * newAccount URL. */
static json_t *external_binding(acme_t *a)
{
    const fg_acme_config_t *ac = &a->cfg->acme;
    uint8_t key[FG_ACME_EAB_KEY_MAX];
    char why[512];
    int klen = fg_secret_load_b64url(ac->eab_mac_file, key, sizeof(key), FG_ACME_EAB_KEY_MIN, why,
                                     sizeof(why));
    if (klen < 0) {
        seterr(a, "externalAccount.macKeyFile: %s", why);
        return NULL;
    }
    jws_input_t j;
    jws_begin(
        &j,
        json_pack("{s:s, s:s, s:s}", "alg", "HS256", "kid", ac->eab_key_id, "url", a->new_account),
        a->jwk);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    int ok =
        HMAC(EVP_sha256(), key, klen, (const unsigned char *)j.input, j.ilen, mac, &mlen) != NULL;
    OPENSSL_cleanse(key, sizeof(key));
    json_t *out = jws_end(&j, ok ? mac : NULL, mlen);
    if (out == NULL)
        seterr(a, "externalAccount: HMAC-SHA256 failed");
    return out;
}

/* RFC 8555 7.3: the account of the key, created (terms agreed) or found. */
static int account(acme_t *a)
{
    if (a->eab_required && a->cfg->acme.eab_key_id == NULL) {
        seterr(a, "the CA requires an external account binding (meta.externalAccountRequired): "
                  "set acme.externalAccount (keyId, macKeyFile) to the CA's key id and MAC key");
        return -1;
    }
    json_t *p = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    if (a->cfg->acme.email) {
        char mailto[512];
        snprintf(mailto, sizeof(mailto), "mailto:%s", a->cfg->acme.email);
        json_object_set_new(p, "contact", json_pack("[s]", mailto));
    }
    if (a->cfg->acme.eab_key_id) {
        json_t *eab = external_binding(a);
        if (eab == NULL) {
            json_decref(p);
            return -1;
        }
        json_object_set_new(p, "externalAccountBinding", eab);
    }
    char *payload = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    fg_http_fetch_resp_t r;
    int rc = post(a, "newAccount", a->new_account, payload, 1, &r);
    free(payload);
    if (rc < 0)
        return -1;
    snprintf(a->kid, sizeof(a->kid), "%s", r.location);
    fg_http_fetch_free(&r);
    if (a->kid[0] == '\0') {
        seterr(a, "newAccount: no Location (account URL)");
        return -1;
    }
    return 0;
}

/* Poll url (POST-as-GET) until its status leaves "pending"/"processing"; the document. */
static json_t *poll(acme_t *a, const char *step, const char *url)
{
    for (int i = 0; i < POLL_TRIES; i++) {
        json_t *doc = get_json(a, step, url);
        if (doc == NULL)
            return NULL;
        const char *st = json_string_value(json_object_get(doc, "status"));
        if (st == NULL || (strcmp(st, "pending") != 0 && strcmp(st, "processing") != 0))
            return doc;
        json_decref(doc);
        sleep(POLL_WAIT_S);
    }
    seterr(a, "%s: still pending after %d s", step, POLL_TRIES * POLL_WAIT_S);
    return NULL;
}

/* ---- one order ---- */

typedef struct {
    char **paths; /* challenge files written, removed at the end */
    size_t n;
} written_t;

static void written_clear(written_t *w)
{
    for (size_t i = 0; i < w->n; i++) {
        unlink(w->paths[i]);
        free(w->paths[i]);
    }
    free(w->paths);
    w->paths = NULL;
    w->n = 0;
}

/* RFC 8555 7.5, 8.3: the http-01 challenge of an authorization, answered and validated. */
static int authorize(acme_t *a, const char *authz_url, written_t *w)
{
    json_t *authz = get_json(a, "authorization", authz_url);
    if (authz == NULL)
        return -1;
    const char *st = json_string_value(json_object_get(authz, "status"));
    const char *name =
        json_string_value(json_object_get(json_object_get(authz, "identifier"), "value"));
    if (st && strcmp(st, "valid") == 0) {
        json_decref(authz);
        return 0;
    }
    const char *url = NULL, *token = NULL;
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(authz, "challenges"), i, ch)
    {
        const char *type = json_string_value(json_object_get(ch, "type"));
        if (type && strcmp(type, "http-01") == 0) {
            url = json_string_value(json_object_get(ch, "url"));
            token = json_string_value(json_object_get(ch, "token"));
        }
    }
    int rc = -1;
    char path[4096], keyauth[FG_ACME_TOKEN_MAX + 80];
    if (url == NULL || token == NULL || !fg_str_is_base64url(fg_str(token), FG_ACME_TOKEN_MAX)) {
        seterr(a, "authorization for %s: no usable http-01 challenge", name ? name : "?");
        goto out;
    }
    snprintf(path, sizeof(path), "%s/challenges/%s", a->cfg->acme.state_dir, token);
    snprintf(keyauth, sizeof(keyauth), "%s.%s", token, a->thumb);
    if (fg_atomic_file_write(path, TMP_SUFFIX, keyauth, strlen(keyauth), 0644, a->err,
                             sizeof(a->err)) < 0)
        goto out;
    char **grown = realloc(w->paths, (w->n + 1) * sizeof(char *));
    if (grown == NULL || (grown[w->n] = strdup(path)) == NULL)
        abort();
    w->paths = grown;
    w->n++;
    fg_http_fetch_resp_t r;
    if (post(a, "challenge", url, "{}", 0, &r) < 0)
        goto out;
    fg_http_fetch_free(&r);
    json_t *done = poll(a, "authorization", authz_url);
    if (done == NULL)
        goto out;
    st = json_string_value(json_object_get(done, "status"));
    if (st && strcmp(st, "valid") == 0) {
        rc = 0;
    } else {
        /* the challenge's error says why (RFC 8555 8: "error" of the challenge object) */
        const char *detail = NULL;
        json_array_foreach(json_object_get(done, "challenges"), i, ch)
        {
            const char *d =
                json_string_value(json_object_get(json_object_get(ch, "error"), "detail"));
            if (d)
                detail = d;
        }
        seterr(a, "authorization for %s: %s%s%s", name ? name : "?", st ? st : "no status",
               detail ? ": " : "", detail ? detail : "");
    }
    json_decref(done);
out:
    json_decref(authz);
    return rc;
}

/* A certificate of the answer within its dates now, as common/tls.c requires of every
 * certificate of a chain it loads (n: 0 the leaf, else the n-th intermediate). */
static int check_dates(acme_t *a, X509 *x, int n)
{
    char when[64];
    const char *what = n == 0 ? "the certificate" : "an intermediate certificate";
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        fg_tls_format_time(X509_get0_notAfter(x), when, sizeof(when));
        seterr(a, "certificate: %s expired on %s", what, when);
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        fg_tls_format_time(X509_get0_notBefore(x), when, sizeof(when));
        seterr(a, "certificate: %s is not valid before %s", what, when);
        return -1;
    }
    return 0;
}

/* The answer (RFC 8555 7.4.2: PEM, the leaf first) is what the next reload will load: every
 * block a certificate within its dates, the leaf of key and covering every name. */
static int check_issued(acme_t *a, const fg_tls_cert_config_t *c, const char *pem, size_t len,
                        EVP_PKEY *key, X509 **leaf)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    ERR_clear_error();
    if (x == NULL || X509_check_private_key(x, key) != 1) {
        seterr(a, "certificate: %s",
               x ? "does not match the key of the request" : "no PEM certificate in the answer");
        goto fail;
    }
    for (size_t i = 0; i < c->nnames; i++) {
        if (X509_check_host(x, c->names[i], 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) != 1) {
            seterr(a, "certificate: does not cover %s", c->names[i]);
            goto fail;
        }
    }
    if (check_dates(a, x, 0) < 0)
        goto fail;
    X509 *im;
    for (int n = 1; (im = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL; n++) {
        int bad = check_dates(a, im, n);
        X509_free(im);
        if (bad < 0)
            goto fail;
    }
    /* the loop ends at the end of the answer (no start line) or at a malformed block */
    unsigned long e = ERR_peek_last_error();
    if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        seterr(a, "certificate: malformed PEM in the chain");
        goto fail;
    }
    ERR_clear_error();
    BIO_free(b);
    *leaf = x;
    return 0;
fail:
    ERR_clear_error();
    BIO_free(b);
    X509_free(x);
    return -1;
}

static int issue(acme_t *a, size_t ci)
{
    const fg_tls_cert_config_t *c = &a->cfg->certificates[ci];
    json_t *ids = json_array();
    for (size_t i = 0; i < c->nnames; i++)
        json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "dns", "value", c->names[i]));
    json_t *p = json_pack("{s:o}", "identifiers", ids);
    char *payload = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    fg_http_fetch_resp_t r = {0};
    written_t w = {0};
    json_t *order = NULL, *done = NULL;
    EVP_PKEY *key = NULL;
    X509_REQ *csr = NULL;
    X509 *leaf = NULL;
    char *csr64 = NULL, order_url[2048];
    int rc = -1;

    if (writable(c->key, a->err, sizeof(a->err)) < 0 ||
        writable(c->chain, a->err, sizeof(a->err)) < 0)
        goto out;
    if (post(a, "newOrder", a->new_order, payload, 0, &r) < 0)
        goto out;
    snprintf(order_url, sizeof(order_url), "%s", r.location);
    order = json_loads(r.body, 0, NULL);
    fg_http_fetch_free(&r);
    const char *finalize = json_string_value(json_object_get(order, "finalize"));
    if (order_url[0] == '\0' || finalize == NULL) {
        seterr(a, "newOrder: no order URL or finalize URL");
        goto out;
    }
    size_t i;
    json_t *az;
    json_array_foreach(json_object_get(order, "authorizations"), i, az)
    {
        if (!json_is_string(az) || authorize(a, json_string_value(az), &w) < 0)
            goto out;
    }
    /* RFC 8555 7.4: finalize with a request for a new key */
    key = fg_x509gen_key();
    csr = key ? fg_x509gen_csr(key, c->names, c->nnames) : NULL;
    unsigned char *der = NULL;
    int dlen = csr ? i2d_X509_REQ(csr, &der) : -1;
    if (dlen <= 0) {
        seterr(a, "cannot make the certificate request");
        goto out;
    }
    csr64 = b64url(der, (size_t)dlen);
    OPENSSL_free(der);
    json_t *fp = json_pack("{s:s}", "csr", csr64);
    char *fpayload = json_dumps(fp, JSON_COMPACT);
    json_decref(fp);
    int frc = post(a, "finalize", finalize, fpayload, 0, &r);
    free(fpayload);
    if (frc < 0)
        goto out;
    fg_http_fetch_free(&r);
    done = poll(a, "order", order_url);
    const char *st = json_string_value(json_object_get(done, "status"));
    const char *cert_url = json_string_value(json_object_get(done, "certificate"));
    if (done == NULL)
        goto out;
    if (st == NULL || strcmp(st, "valid") != 0 || cert_url == NULL) {
        seterr(a, "order: %s", st ? st : "no status");
        goto out;
    }
    if (post(a, "certificate", cert_url, NULL, 0, &r) < 0)
        goto out;
    if (check_issued(a, c, r.body, r.len, key, &leaf) < 0)
        goto out;
    /* Both files written under their temporary names first, so that one that cannot be
     * written leaves the old pair in place; then the key, then the chain, renamed: a reload
     * between the two renames refuses the pair and keeps serving. */
    BIO *kb = BIO_new(BIO_s_mem());
    char *kpem = NULL, ktmp[4096] = "", ctmp[4096] = "";
    long klen = 0;
    int kok = kb != NULL && PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) == 1 &&
              (klen = BIO_get_mem_data(kb, &kpem)) > 0 &&
              fg_atomic_file_prepare(c->key, TMP_SUFFIX, kpem, (size_t)klen, 0600, ktmp,
                                     sizeof(ktmp), a->err, sizeof(a->err)) == 0 &&
              fg_atomic_file_prepare(c->chain, TMP_SUFFIX, r.body, r.len, 0644, ctmp, sizeof(ctmp),
                                     a->err, sizeof(a->err)) == 0;
    /* no stop (the master's SIGTERM, the child's alarm) between the two renames */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    kok = kok && fg_atomic_file_commit(ktmp, c->key, a->err, sizeof(a->err)) == 0 &&
          fg_atomic_file_commit(ctmp, c->chain, a->err, sizeof(a->err)) == 0;
    sigprocmask(SIG_SETMASK, &old, NULL);
    BIO_free(kb);
    if (!kok) {
        if (ktmp[0])
            unlink(ktmp);
        if (ctmp[0])
            unlink(ctmp);
        goto out;
    }
    char until[64], issuer[256];
    fg_tls_format_time(X509_get0_notAfter(leaf), until, sizeof(until));
    X509_NAME_oneline(X509_get_issuer_name(leaf), issuer, sizeof(issuer));
    fg_log_notice("acme: certificates[%zu] (%s): issued by %s, valid until %s; written to %s", ci,
                  c->id, issuer, until, c->chain);
    rc = 0;
out:
    written_clear(&w);
    fg_http_fetch_free(&r);
    json_decref(order);
    json_decref(done);
    free(payload);
    free(csr64);
    X509_REQ_free(csr);
    X509_free(leaf);
    EVP_PKEY_free(key);
    return rc;
}

/* ---- checks ---- */

/* Whether the key file holds the private key of x. */
static int key_matches(const char *path, X509 *x)
{
    FILE *f = fopen(path, "re");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, no_password, NULL) : NULL;
    if (f)
        fclose(f);
    int ok = k != NULL && X509_check_private_key(x, k) == 1;
    EVP_PKEY_free(k);
    ERR_clear_error();
    return ok;
}

int fg_acme_due(const fg_config_t *cfg, size_t i, char *why, size_t len)
{
    const fg_tls_cert_config_t *c = &cfg->certificates[i];
    if (access(c->key, F_OK) != 0) {
        snprintf(why, len, "no key file %s", c->key);
        return 1;
    }
    FILE *f = fopen(c->chain, "re");
    if (f == NULL) {
        snprintf(why, len, "no certificate file %s", c->chain);
        return 1;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    int due = 1;
    char when[64];
    /* Renewal starts renewBefore ahead of the expiry, or a third of the lifetime ahead when the
     * CA issues certificates that live less than three times renewBefore: a 6-day certificate
     * is renewed after 4 days, not ordered again at every check. */
    time_t soon = time(NULL) + (time_t)(cfg->acme.renew_before_ms / 1000);
    int life_days = 0, life_secs = 0;
    if (x != NULL && ASN1_TIME_diff(&life_days, &life_secs, X509_get0_notBefore(x),
                                    X509_get0_notAfter(x)) == 1) {
        int64_t third = ((int64_t)life_days * 86400 + life_secs) / 3;
        if (third > 0 && third < (int64_t)(cfg->acme.renew_before_ms / 1000))
            soon = time(NULL) + (time_t)third;
    }
    if (x == NULL) {
        snprintf(why, len, "%s holds no PEM certificate", c->chain);
    } else if (fg_x509gen_is_placeholder(x)) {
        snprintf(why, len, "a placeholder");
    } else if (X509_cmp_time(X509_get0_notAfter(x), &soon) < 0) {
        fg_tls_format_time(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(why, len, "expires on %s", when);
    } else if (!key_matches(c->key, x)) {
        /* a stop between the two renames, a key copied by hand: no reload takes the pair */
        snprintf(why, len, "the key file %s does not match the certificate", c->key);
    } else {
        due = 0;
        for (size_t k = 0; k < c->nnames && !due; k++) {
            if (X509_check_host(x, c->names[k], 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) != 1) {
                snprintf(why, len, "does not cover %s", c->names[k]);
                due = 1;
            }
        }
    }
    X509_free(x);
    return due;
}

int fg_acme_check(const fg_config_t *cfg, volatile sig_atomic_t *bits)
{
    acme_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return *bits |= FG_ACME_FAILED;
    a->cfg = cfg;
    char why[512], dir[4096];
    int due = 0;
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        if (!cfg->certificates[i].acme)
            continue;
        if (fg_acme_due(cfg, i, why, sizeof(why))) {
            fg_log_info("acme: certificates[%zu] (%s): ordering: %s", i, cfg->certificates[i].id,
                        why);
            due++;
        }
    }
    if (due == 0)
        goto out;
    snprintf(dir, sizeof(dir), "%s/challenges", cfg->acme.state_dir);
    /* stateDir 0711: workers reach challenges/, nobody lists the account key's directory */
    if (make_dir(cfg->acme.state_dir, 0711, a->err, sizeof(a->err)) < 0 ||
        make_dir(dir, 0755, a->err, sizeof(a->err)) < 0 ||
        (a->ctx = fg_http_fetch_ctx(cfg->acme.ca_file, a->err, sizeof(a->err))) == NULL ||
        directory(a) < 0 || (a->key = account_key(a)) == NULL || make_jwk(a) < 0 ||
        account(a) < 0) {
        fg_log_error("acme: %s", a->err);
        *bits |= FG_ACME_FAILED;
        goto out;
    }
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        if (!cfg->certificates[i].acme || !fg_acme_due(cfg, i, why, sizeof(why)))
            continue;
        a->err[0] = '\0';
        if (issue(a, i) == 0) {
            *bits |= FG_ACME_CHANGED;
        } else {
            fg_log_error("acme: certificates[%zu] (%s): %s", i, cfg->certificates[i].id, a->err);
            *bits |= FG_ACME_FAILED;
        }
    }
out:
    EVP_PKEY_free(a->key);
    SSL_CTX_free(a->ctx);
    free(a);
    return *bits;
}
