/* TLS termination policy (common/tls.h): certificates, per-server contexts, SNI, ALPN,
 * session tickets from shared memory, the Host check and the https redirect target. */
#include "common/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/hash.h"
#include "common/secret.h"
#include "common/tls_client.h"
#include "common/tls_clientauth.h"
#include "common/tls_ocsp.h"
#include "common/x509gen.h"
#include "shm/tickets.h"

#define NAME_MAX_LEN 253 /* RFC 1035 2.3.4, without the trailing dot */

typedef struct {
    X509 *leaf;
    STACK_OF(X509) * chain; /* intermediates */
    EVP_PKEY *pkey;
    SSL_CTX *ctx; /* the certificate's own context: where the key was checked against it */
    char **names; /* lower case; "*.x.y" for wildcards */
    size_t nnames;
    fg_tls_ocsp_t *ocsp; /* "ocspFile": the response stapled; NULL = none */
} cert_t;

typedef struct {
    const char *name; /* NULL = empty slot; points into a cert_t's names */
    size_t len;
    size_t cert; /* index into the server's offered certificates */
} slot_t;

typedef struct {
    slot_t *slots;
    size_t mask;
} table_t;

typedef struct server_tls_s server_tls_t;

/* App data of each of a server's contexts. */
typedef struct {
    server_tls_t *srv;
    size_t cert; /* index into the server's offered certificates */
} ctx_rec_t;

struct server_tls_s {
    const fg_tls_server_config_t *conf;
    struct tls_s *tls;
    size_t n;
    SSL_CTX **ctx;
    ctx_rec_t *recs;
    const cert_t **certs;
    table_t exact, wild;    /* wild holds "x.y" for "*.x.y" */
    unsigned char alpn[64]; /* the server's list in wire format (RFC 7301 3.1) */
    unsigned alpn_len;
    fg_tls_clientauth_t *clientauth;           /* "clientAuth"; NULL = off */
    unsigned char sid[SSL_MAX_SID_CTX_LENGTH]; /* the server's session id context */
    size_t sid_len;
};

typedef struct tls_s {
    cert_t *certs;
    size_t ncerts;
    fg_tickets_t *tickets;
    uint64_t rotation_ms;
    /* Fetched once: EVP_aes_256_cbc() would make every ticket's EVP_CipherInit look the
     * implementation up again in OpenSSL 3's provider store (a name lookup under a lock). */
    EVP_CIPHER *ticket_cipher;
    EVP_MD *sid_md; /* SHA-256, for each connection's session id context (on_client_hello) */
} tls_t;

/* ---- errors ---- */

/* OpenSSL's first queued reason into buf (or fallback), and the queue emptied. */
static const char *ossl_reason(char *buf, size_t len, const char *fallback)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, len, "%s", fallback);
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* "what (OpenSSL's reason)" into buf. */
static const char *reason(const char *what, char *buf, size_t len)
{
    char r[160];
    snprintf(buf, len, "%s (%s)", what, ossl_reason(r, sizeof(r), "no detail"));
    return buf;
}

/* ---- names ---- */

int fg_tls_name_valid(const char *s)
{
    size_t labels = 0, len = 0;
    const char *p = s;

    if (strncmp(p, "*.", 2) == 0)
        p += 2;
    for (; *p; p++) {
        char ch = *p;
        if (ch == '.') {
            if (len == 0 || len > 63)
                return 0;
            labels++;
            len = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
        len++;
    }
    if (len == 0 || len > 63 || strlen(s) > NAME_MAX_LEN)
        return 0;
    labels++;
    return s[0] != '*' || labels >= 2;
}

/* name (len bytes) lower-cased into out without a trailing dot; 0 or -1 when too long. */
static int normalize(const char *name, size_t len, char out[NAME_MAX_LEN + 1], size_t *olen)
{
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > NAME_MAX_LEN)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        out[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    out[len] = '\0';
    *olen = len;
    return 0;
}

static void add_name(cert_t *c, const char *s, size_t len)
{
    char buf[NAME_MAX_LEN + 1];
    size_t n;
    if (memchr(s, '\0', len) || normalize(s, len, buf, &n) < 0 || !fg_tls_name_valid(buf))
        return; /* IP addresses, partial wildcards and the like select nothing */
    for (size_t i = 0; i < c->nnames; i++)
        if (strcmp(c->names[i], buf) == 0)
            return;
    char **nn = realloc(c->names, (c->nnames + 1) * sizeof(char *));
    if (nn == NULL || (nn[c->nnames] = strdup(buf)) == NULL)
        abort(); /* load time: out of memory is fatal (STYLE.md) */
    c->names = nn;
    c->nnames++;
}

/* DNS subjectAltNames; the subject's CN only when there is no SAN at all (RFC 6125 6.4.4). */
static void names_from_cert(cert_t *c)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(c->leaf, NID_subject_alt_name, NULL, NULL);
    if (sans != NULL) {
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
            if (g->type == GEN_DNS)
                add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                         (size_t)ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(sans);
        return;
    }
    const X509_NAME *subj = X509_get_subject_name(c->leaf);
    int at = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (at < 0)
        return;
    const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, at));
    add_name(c, (const char *)ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn));
}

/* ---- reading and checking a certificate ---- */

void fg_tls_format_time(const ASN1_TIME *t, char *buf, size_t len)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1 || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, len, "(unreadable date)");
}

typedef struct {
    const char *file; /* configuration file */
    size_t index;
    const fg_tls_cert_config_t *conf;
    fg_tls_warn_fn warn;
    void *arg;
    char *err;
    size_t errlen;
} load_t;

static int fail(load_t *l, const char *key, const char *path, const char *reason)
{
    snprintf(l->err, l->errlen, "%s: certificates[%zu].%s: %s: %s", l->file, l->index, key, path,
             reason);
    return -1;
}

/* Validity of one certificate of the chain file (n = its position, 0 = the leaf). */
static int check_dates(load_t *l, X509 *x, int n)
{
    char when[64], why[256], subj[128];
    X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
    const char *what = n == 0 ? "certificate" : "intermediate certificate";
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        fg_tls_format_time(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(why, sizeof(why), "%s %s expired on %s", what, subj, when);
        return fail(l, "chain", l->conf->chain, why);
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        fg_tls_format_time(X509_get0_notBefore(x), when, sizeof(when));
        snprintf(why, sizeof(why), "%s %s is not valid before %s", what, subj, when);
        return fail(l, "chain", l->conf->chain, why);
    }
    time_t soon = time(NULL) + FG_TLS_EXPIRY_WARN_DAYS * 86400;
    if (l->warn && X509_cmp_time(X509_get0_notAfter(x), &soon) < 0) {
        char msg[1024];
        fg_tls_format_time(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(msg, sizeof(msg), "%s: certificates[%zu].chain: %s: %s %s expires on %s", l->file,
                 l->index, l->conf->chain, what, subj, when);
        l->warn(l->arg, msg);
    }
    return 0;
}

static int no_password(char *buf, int size, int rwflag, void *u)
{
    return -1; /* an encrypted key would otherwise prompt on the terminal */
}

BIO *fg_tls_open_pem(const char *path, char *why, size_t whylen)
{
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, and the master
     * with it. Only a regular file is read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd == -1) {
        snprintf(why, whylen, "cannot read: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == -1) {
        snprintf(why, whylen, "cannot read: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "cannot read: not a regular file (%s)",
                 S_ISDIR(st.st_mode)    ? "a directory"
                 : S_ISFIFO(st.st_mode) ? "a FIFO"
                                        : "a device or socket");
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    BIO *b = f ? BIO_new_fp(f, BIO_CLOSE) : NULL;
    if (b == NULL) {
        snprintf(why, whylen, "cannot read: %s", strerror(f ? ENOMEM : errno));
        if (f)
            fclose(f);
        else
            close(fd);
        ERR_clear_error();
    }
    return b;
}

static BIO *open_file(load_t *l, const char *key, const char *path)
{
    char why[256];
    BIO *b = fg_tls_open_pem(path, why, sizeof(why));
    if (b == NULL)
        fail(l, key, path, why);
    return b;
}

static int read_chain(load_t *l, cert_t *c)
{
    char why[256];
    BIO *b = open_file(l, "chain", l->conf->chain);
    if (b == NULL)
        return -1;
    c->leaf = PEM_read_bio_X509_AUX(b, NULL, no_password, NULL);
    if (c->leaf == NULL) {
        BIO_free(b);
        return fail(l, "chain", l->conf->chain, reason("no PEM certificate", why, sizeof(why)));
    }
    c->chain = sk_X509_new_null();
    if (c->chain == NULL)
        abort();
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL)
        if (!sk_X509_push(c->chain, x))
            abort();
    unsigned long e = ERR_peek_last_error();
    BIO_free(b);
    /* The loop ends at the end of the file (no start line) or at a malformed block. */
    if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
        return fail(l, "chain", l->conf->chain, reason("malformed PEM", why, sizeof(why)));
    ERR_clear_error();
    if (check_dates(l, c->leaf, 0) < 0)
        return -1;
    for (int i = 0; i < sk_X509_num(c->chain); i++)
        if (check_dates(l, sk_X509_value(c->chain, i), i + 1) < 0)
            return -1;
    return 0;
}

static int read_key(load_t *l, cert_t *c)
{
    char why[256];
    BIO *b = open_file(l, "key", l->conf->key);
    if (b == NULL)
        return -1;
    c->pkey = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
    BIO_free(b);
    if (c->pkey == NULL)
        return fail(l, "key", l->conf->key, reason("no PEM private key", why, sizeof(why)));
    ERR_clear_error();
    return 0;
}

/* The certificate's own context: OpenSSL's check that the key belongs to the certificate. */
static int check_pair(load_t *l, cert_t *c)
{
    char why[256], msg[400];
    c->ctx = SSL_CTX_new(TLS_server_method());
    if (c->ctx == NULL)
        return fail(l, "chain", l->conf->chain, ossl_reason(why, sizeof(why), "SSL_CTX_new"));
    if (SSL_CTX_use_certificate(c->ctx, c->leaf) != 1)
        return fail(l, "chain", l->conf->chain, ossl_reason(why, sizeof(why), "unusable"));
    if (SSL_CTX_use_PrivateKey(c->ctx, c->pkey) != 1 || SSL_CTX_check_private_key(c->ctx) != 1) {
        snprintf(msg, sizeof(msg), "does not match the certificate in %s (%s)", l->conf->chain,
                 ossl_reason(why, sizeof(why), "key values mismatch"));
        return fail(l, "key", l->conf->key, msg);
    }
    if (SSL_CTX_set1_chain(c->ctx, c->chain) != 1)
        return fail(l, "chain", l->conf->chain, ossl_reason(why, sizeof(why), "bad chain"));
    return 0;
}

/* An ACME certificate not issued yet (its chain or key file absent): a self-signed placeholder
 * for its names, so that its servers start; master/acme.c writes the files, and the reload
 * that follows serves them. */
static int placeholder(load_t *l, cert_t *c)
{
    char why[256], msg[1024];
    c->pkey = fg_x509gen_key();
    c->leaf = c->pkey ? fg_x509gen_placeholder(c->pkey, l->conf->names, l->conf->nnames, 30) : NULL;
    c->chain = sk_X509_new_null();
    if (c->leaf == NULL || c->chain == NULL)
        return fail(l, "chain", l->conf->chain,
                    ossl_reason(why, sizeof(why), "cannot make a placeholder certificate"));
    if (l->warn) {
        snprintf(msg, sizeof(msg),
                 "%s: certificates[%zu] (%s): %s not issued yet or expired: a self-signed "
                 "placeholder serves until ACME issues it",
                 l->file, l->index, l->conf->id, l->conf->chain);
        l->warn(l->arg, msg);
    }
    return 0;
}

/* "ocspFile": refused when it does not fit the certificate; kept with a warning when it is only
 * out of date (an updater late for once must not stop reloads; it is not stapled meanwhile).
 * With "ocspUpdate" the master keeps the file: whatever it holds now is only warned about (and
 * not stapled) while the master fetches a new one, but a responder must be known. */
static int read_ocsp(load_t *l, cert_t *c)
{
    char why[512], msg[1024], url[1024];
    int state;
    if (l->conf->ocsp_file == NULL)
        return 0;
    if (l->conf->ocsp_update && l->conf->ocsp_responder == NULL &&
        !fg_x509gen_is_placeholder(c->leaf) &&
        fg_tls_ocsp_responder(c->leaf, url, sizeof(url)) < 0) {
        /* an ACME CA may issue certificates without one (Let's Encrypt's, since 2025): that
         * must not fail the reload after an issuance */
        if (!l->conf->acme)
            return fail(l, "ocspUpdate", l->conf->chain,
                        "the certificate names no OCSP responder (no http URL in its Authority "
                        "Information Access): set \"ocspResponder\"");
        if (l->warn) {
            snprintf(msg, sizeof(msg),
                     "%s: certificates[%zu].ocspUpdate: %s: the certificate names no OCSP "
                     "responder: nothing is fetched or stapled",
                     l->file, l->index, l->conf->chain);
            l->warn(l->arg, msg);
        }
    }
    if (l->conf->ocsp_update && access(l->conf->ocsp_file, F_OK) != 0 && errno == ENOENT) {
        if (l->warn) {
            snprintf(msg, sizeof(msg),
                     "%s: certificates[%zu].ocspFile: %s: no response yet: the master fetches "
                     "one (ocspUpdate)",
                     l->file, l->index, l->conf->ocsp_file);
            l->warn(l->arg, msg);
        }
        return 0;
    }
    c->ocsp = fg_tls_ocsp_load(l->conf->ocsp_file, c->leaf, c->chain, why, sizeof(why), &state);
    if (c->ocsp == NULL && !l->conf->ocsp_update)
        return fail(l, "ocspFile", l->conf->ocsp_file, why);
    if (state != FG_TLS_OCSP_CURRENT && l->warn) {
        snprintf(msg, sizeof(msg), "%s: certificates[%zu].ocspFile: %s: %s%s", l->file, l->index,
                 l->conf->ocsp_file, why,
                 c->ocsp == NULL ? ": not stapled; the master fetches a new one (ocspUpdate)" : "");
        l->warn(l->arg, msg);
    }
    return 0;
}

static int absent(const char *path)
{
    return access(path, F_OK) == -1 && errno == ENOENT;
}

/* An ACME certificate past its notAfter (renewals failed while the gateway was down, or for
 * weeks): it serves nobody, and refusing it would keep the gateway, and with it the ACME
 * client that replaces it, from starting. */
static int acme_expired(load_t *l)
{
    FILE *f = fopen(l->conf->chain, "re");
    X509 *x = f ? PEM_read_X509(f, NULL, no_password, NULL) : NULL;
    if (f)
        fclose(f);
    ERR_clear_error();
    int expired = x != NULL && X509_cmp_current_time(X509_get0_notAfter(x)) <= 0;
    if (expired && l->warn) {
        char when[64], msg[1024];
        fg_tls_format_time(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(msg, sizeof(msg), "%s: certificates[%zu] (%s): %s expired on %s", l->file,
                 l->index, l->conf->id, l->conf->chain, when);
        l->warn(l->arg, msg);
    }
    X509_free(x);
    return expired;
}

static int load_cert(load_t *l, cert_t *c)
{
    if (l->conf->acme && (absent(l->conf->chain) || absent(l->conf->key) || acme_expired(l))) {
        if (placeholder(l, c) < 0 || check_pair(l, c) < 0)
            return -1;
    } else if (read_chain(l, c) < 0 || read_key(l, c) < 0 || check_pair(l, c) < 0 ||
               read_ocsp(l, c) < 0) {
        return -1;
    }
    for (size_t i = 0; i < l->conf->nnames; i++)
        add_name(c, l->conf->names[i], strlen(l->conf->names[i]));
    if (l->conf->nnames == 0)
        names_from_cert(c);
    return 0;
}

static void cert_clear(cert_t *c)
{
    X509_free(c->leaf);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->pkey);
    SSL_CTX_free(c->ctx);
    fg_tls_ocsp_free(c->ocsp);
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c->names);
}

/* ---- name tables ---- */

static uint64_t name_hash(const char *s, size_t len)
{
    return fg_hash_mix64(fg_hash_fnv1a(FG_HASH_FNV_BASIS, s, len));
}

static void table_init(table_t *t, size_t n)
{
    size_t size = 8;
    while (size < 2 * n)
        size *= 2;
    t->slots = calloc(size, sizeof(slot_t));
    if (t->slots == NULL)
        abort();
    t->mask = size - 1;
}

/* First insert wins: a name two offered certificates share goes to the first listed. */
static void table_put(table_t *t, const char *name, size_t cert)
{
    size_t len = strlen(name);
    for (size_t i = name_hash(name, len) & t->mask;; i = (i + 1) & t->mask) {
        slot_t *s = &t->slots[i];
        if (s->name == NULL) {
            *s = (slot_t){name, len, cert};
            return;
        }
        if (s->len == len && memcmp(s->name, name, len) == 0)
            return;
    }
}

static const slot_t *table_get(const table_t *t, const char *name, size_t len)
{
    for (size_t i = name_hash(name, len) & t->mask;; i = (i + 1) & t->mask) {
        const slot_t *s = &t->slots[i];
        if (s->name == NULL)
            return NULL;
        if (s->len == len && memcmp(s->name, name, len) == 0)
            return s;
    }
}

static void build_tables(server_tls_t *st)
{
    size_t total = 0;
    for (size_t i = 0; i < st->n; i++)
        total += st->certs[i]->nnames;
    table_init(&st->exact, total);
    table_init(&st->wild, total);
    for (size_t i = 0; i < st->n; i++) {
        for (size_t j = 0; j < st->certs[i]->nnames; j++) {
            const char *nm = st->certs[i]->names[j];
            if (nm[0] == '*')
                table_put(&st->wild, nm + 2, i);
            else
                table_put(&st->exact, nm, i);
        }
    }
}

/* The offered certificate for a normalized name: exact, then one-level wildcard (the first
 * label replaced; it must not be empty), else the default. */
static size_t select_cert(const server_tls_t *st, const char *name, size_t len)
{
    const slot_t *s = table_get(&st->exact, name, len);
    if (s)
        return s->cert;
    const char *dot = memchr(name, '.', len);
    if (dot && dot > name) {
        s = table_get(&st->wild, dot + 1, len - (size_t)(dot + 1 - name));
        if (s)
            return s->cert;
    }
    return st->conf->default_index;
}

/* ---- callbacks ---- */

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    server_tls_t *st = arg;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char name[NAME_MAX_LEN + 1];
    size_t len, i = st->conf->default_index;

    if (sni && normalize(sni, strlen(sni), name, &len) == 0)
        i = select_cert(st, name, len);
    if (SSL_get_SSL_CTX(ssl) != st->ctx[i] && SSL_set_SSL_CTX(ssl, st->ctx[i]) == NULL) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* The first host_name of a server_name extension's body (RFC 6066 3: a ServerNameList of
 * NameType, then a 16-bit length and the name), normalized, into name; "" when it holds none. */
static void sni_of(const unsigned char *p, size_t len, char name[NAME_MAX_LEN + 1], size_t *nlen)
{
    name[0] = '\0';
    *nlen = 0;
    if (len < 2 || (size_t)(p[0] << 8 | p[1]) != len - 2)
        return;
    for (size_t i = 2; i + 3 <= len;) {
        size_t n = (size_t)(p[i + 1] << 8 | p[i + 2]);
        if (i + 3 + n > len)
            return;
        if (p[i] == TLSEXT_NAMETYPE_host_name) {
            if (memchr(p + i + 3, '\0', n) != NULL ||
                normalize((const char *)p + i + 3, n, name, nlen) < 0) {
                name[0] = '\0';
                *nlen = 0;
            }
            return;
        }
        i += 3 + n;
    }
}

/* RFC 6066 3: a server must not resume a session whose server_name differs from the one the
 * ClientHello asks for, but do a full handshake (RFC 8446 4.6.1 lets a TLS 1.3 server hold to
 * the same). Each connection's session id context is the server's hashed with that name (none:
 * the empty name), set here, before OpenSSL looks the session id or ticket up: a session of
 * another name fails OpenSSL's context check, and the handshake is a full one. */
static int on_client_hello(SSL *ssl, int *alert, void *arg)
{
    const server_tls_t *st = arg;
    const unsigned char *ext;
    size_t len, nlen;
    char name[NAME_MAX_LEN + 1];
    unsigned char in[SSL_MAX_SID_CTX_LENGTH + 1 + NAME_MAX_LEN], md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) != 1)
        len = 0; /* no name: sni_of gives "" */
    sni_of(len ? ext : NULL, len, name, &nlen);
    memcpy(in, st->sid, st->sid_len);
    in[st->sid_len] = 0; /* the server's context and the name never run together */
    memcpy(in + st->sid_len + 1, name, nlen);
    if (EVP_Digest(in, st->sid_len + 1 + nlen, md, &mdlen, st->tls->sid_md, NULL) != 1 ||
        SSL_set_session_id_context(
            ssl, md, mdlen < SSL_MAX_SID_CTX_LENGTH ? mdlen : SSL_MAX_SID_CTX_LENGTH) != 1) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* RFC 7301 3.2: the server's preference order; no overlap is a fatal no_application_protocol
 * alert (OpenSSL sends it for SSL_TLSEXT_ERR_ALERT_FATAL). */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const server_tls_t *st = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, st->alpn, st->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int ticket_mac_init(EVP_MAC_CTX *hctx, fg_ticket_key_t *k)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->hmac_key, sizeof(k->hmac_key)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_END};
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* RFC 5077 4's ticket protection with the shared keys: AES-256-CBC and HMAC-SHA256 under the
 * newest key; decryption under any of the three still kept. Returns 1 (done), 2 (decrypted
 * under an older key, or any TLS 1.3 ticket: OpenSSL issues a fresh ticket), 0 (no ticket /
 * unknown key: a full handshake), -1 (error). */
static int on_ticket(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
                     EVP_MAC_CTX *hctx, int enc)
{
    const ctx_rec_t *rec = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const tls_t *tls = rec->srv->tls;
    fg_ticket_key_t k;
    int rc;

    if (enc) {
        if (fg_tickets_current(tls->tickets, mono_ms(), tls->rotation_ms, &k) < 0 ||
            RAND_bytes(iv, EVP_CIPHER_get_iv_length(tls->ticket_cipher)) != 1)
            rc = 0;
        else if (EVP_EncryptInit_ex2(ectx, tls->ticket_cipher, k.aes_key, iv, NULL) != 1 ||
                 ticket_mac_init(hctx, &k) < 0)
            rc = -1;
        else {
            memcpy(name, k.name, FG_TICKET_NAME_LEN);
            rc = 1;
        }
    } else {
        rc = fg_tickets_find(tls->tickets, name, mono_ms(), tls->rotation_ms, &k);
        if (rc < 0)
            rc = 0; /* a lock failure costs a full handshake, not the connection */
        if (rc > 0 && (EVP_DecryptInit_ex2(ectx, tls->ticket_cipher, k.aes_key, iv, NULL) != 1 ||
                       ticket_mac_init(hctx, &k) < 0))
            rc = -1;
        /* RFC 8446 4.6.1 and C.4: a TLS 1.3 client uses a ticket once, so each resumption
         * hands out the next one (TLS 1.2 tickets stay reusable, RFC 5077 3.3). */
        else if (rc == 1 && SSL_version(ssl) == TLS1_3_VERSION)
            rc = 2;
    }
    OPENSSL_cleanse(&k, sizeof(k));
    return rc;
}

/* ---- server contexts ---- */

static int policy(server_tls_t *st, const fg_server_t *s, SSL_CTX *ctx, char *why, size_t wlen)
{
    const fg_tls_server_config_t *t = st->conf;
    uint64_t id = fg_hash_fnv1a(FG_HASH_FNV_BASIS, s->id, strlen(s->id));

    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 (t->session_tickets ? 0 : SSL_OP_NO_TICKET));
    if (SSL_CTX_set_min_proto_version(ctx, t->min_version) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, t->max_version) != 1) {
        ossl_reason(why, wlen, "protocols");
        return -1;
    }
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers ? t->ciphers : FG_TLS_DEFAULT_CIPHERS) != 1) {
        snprintf(why, wlen, "ciphers: no usable cipher in \"%s\"", t->ciphers);
        ERR_clear_error();
        return -2;
    }
    if (t->ciphersuites && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
        snprintf(why, wlen, "ciphersuites: \"%s\" is not a valid TLS 1.3 suite list",
                 t->ciphersuites);
        ERR_clear_error();
        return -2;
    }
    if (SSL_CTX_set1_groups_list(ctx, t->groups) != 1) {
        snprintf(why, wlen, "groups: \"%s\" is not a valid group list", t->groups);
        ERR_clear_error();
        return -2;
    }
    /* Sessions of one server never resume on another (RFC 5246 F.1.4, RFC 8446 4.6.1), nor for
     * another name (on_client_hello). */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)&id, sizeof(id));
    if (st->clientauth != NULL) {
        st->sid_len = fg_tls_clientauth_sid(st->clientauth, st->sid, sizeof(st->sid));
    } else {
        memcpy(st->sid, &id, sizeof(id));
        st->sid_len = sizeof(id);
    }
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, st);
    SSL_CTX_set_session_cache_mode(ctx,
                                   t->session_cache ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
    if (t->session_cache)
        SSL_CTX_sess_set_cache_size(ctx, t->session_cache);
    /* TLS 1.3 tickets after a full handshake (RFC 8446 4.6.1; OpenSSL sends 2 by default).
     * Each costs a session encoding, its encryption and MAC, a record and a write. A resumed
     * handshake issues one more in any case (on_ticket), so a client that resumes in turn
     * always holds an unused one; more only help a client that opens connections in parallel
     * right after its first. With neither tickets nor a cache, a ticket could never resume. */
    SSL_CTX_set_num_tickets(ctx,
                            t->session_tickets || t->session_cache ? t->tickets_per_handshake : 0);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, st);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, st);
    if (st->tls->tickets && t->session_tickets) {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket);
        /* A ticket stays decryptable for two more periods after its key's: promise no more. */
        SSL_CTX_set_timeout(ctx, (long)(2 * st->tls->rotation_ms / 1000));
    }
    /* Client certificates: also a session id context of their own, over the CA and CRL files. */
    if (st->clientauth != NULL && fg_tls_clientauth_apply(st->clientauth, ctx) != 0) {
        ossl_reason(why, wlen, "clientAuth");
        return -1;
    }
    return 0;
}

static int alpn_wire(server_tls_t *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->conf->nalpn; i++) {
        size_t len = strlen(st->conf->alpn[i]);
        if (len == 0 || len > 255 || n + 1 + len > sizeof(st->alpn))
            return -1;
        st->alpn[n++] = (unsigned char)len;
        memcpy(st->alpn + n, st->conf->alpn[i], len);
        n += len;
    }
    st->alpn_len = (unsigned)n;
    return 0;
}

static void server_free(server_tls_t *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->n; i++)
        SSL_CTX_free(st->ctx[i]);
    fg_tls_clientauth_free(st->clientauth);
    free(st->ctx);
    free(st->recs);
    free(st->certs);
    free(st->exact.slots);
    free(st->wild.slots);
    free(st);
}

static int build_server(tls_t *tls, fg_config_t *cfg, size_t si, fg_tls_warn_fn warn, void *arg,
                        char *err, size_t errlen)
{
    fg_server_t *s = &cfg->servers[si];
    const fg_tls_server_config_t *t = s->tls;
    server_tls_t *st = calloc(1, sizeof(*st));
    char why[512];

    if (st == NULL)
        abort();
    s->tls_compiled = st;
    st->conf = t;
    st->tls = tls;
    st->n = t->ncertificates;
    st->ctx = calloc(st->n, sizeof(SSL_CTX *));
    st->recs = calloc(st->n, sizeof(ctx_rec_t));
    st->certs = calloc(st->n, sizeof(cert_t *));
    if (st->ctx == NULL || st->recs == NULL || st->certs == NULL || alpn_wire(st) < 0)
        abort();
    if (t->client_auth != FG_TLS_CLIENT_AUTH_OFF &&
        (st->clientauth =
             fg_tls_clientauth_load(t, s->id, cfg->file, si, warn, arg, err, errlen)) == NULL)
        return -1;
    for (size_t i = 0; i < st->n; i++) {
        const cert_t *c = &tls->certs[t->cert_index[i]];
        if (c->nnames == 0 && i != t->default_index) {
            /* SNI could never choose it; only the default may go without names. */
            snprintf(err, errlen,
                     "%s: servers[%zu].tls.certificates[%zu]: certificate \"%s\" names no host "
                     "(no DNS subjectAltName, no CN that is a host name): list its \"names\"",
                     cfg->file, si, i, t->certificates[i]);
            return -1;
        }
        st->certs[i] = c;
        st->recs[i] = (ctx_rec_t){st, i};
        st->ctx[i] = SSL_CTX_new(TLS_server_method());
        if (st->ctx[i] == NULL)
            abort();
        SSL_CTX_set_app_data(st->ctx[i], &st->recs[i]);
        int rc = policy(st, s, st->ctx[i], why, sizeof(why));
        if (rc == 0 && SSL_CTX_use_cert_and_key(st->ctx[i], c->leaf, c->pkey, c->chain, 1) != 1)
            rc = -1, ossl_reason(why, sizeof(why), "certificate not usable");
        if (c->ocsp)
            fg_tls_ocsp_apply(c->ocsp, st->ctx[i]);
        if (rc < 0) {
            snprintf(err, errlen, "%s: servers[%zu].tls%s%s", cfg->file, si, rc == -2 ? "." : ": ",
                     why);
            return -1;
        }
    }
    build_tables(st);
    return 0;
}

/* ---- public ---- */

/* acme.externalAccount.macKeyFile: read and decoded at each load and by -t, so that a bad one
 * is reported before the ACME client needs it (master/acme.c reads it again then). */
static int check_eab_key(const fg_config_t *cfg, char *err, size_t errlen)
{
    uint8_t key[FG_ACME_EAB_KEY_MAX];
    char why[512];
    int n = fg_secret_load_b64url(cfg->acme.eab_mac_file, key, sizeof(key), FG_ACME_EAB_KEY_MIN,
                                  why, sizeof(why));
    OPENSSL_cleanse(key, sizeof(key));
    if (n < 0) {
        snprintf(err, errlen, "%s: acme.externalAccount.macKeyFile: %s", cfg->file, why);
        return -1;
    }
    return 0;
}

int fg_tls_build(fg_config_t *cfg, fg_shm_t *shm, uint64_t gen, fg_tls_warn_fn warn, void *arg,
                 char *err, size_t errlen)
{
    size_t nservers = 0;
    if (cfg->acme.enabled && cfg->acme.eab_mac_file && check_eab_key(cfg, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < cfg->nservers; i++)
        nservers += cfg->servers[i].tls != NULL;
    if (cfg->ncertificates == 0)
        return fg_tls_client_build(cfg, err, errlen);
    tls_t *tls = calloc(1, sizeof(*tls));
    cert_t *certs = calloc(cfg->ncertificates, sizeof(cert_t));
    if (tls == NULL || certs == NULL)
        abort();
    cfg->tls = tls;
    tls->certs = certs;
    tls->ncerts = cfg->ncertificates;
    tls->rotation_ms = cfg->tls_ticket_rotation_ms;
    ERR_clear_error();
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        load_t l = {cfg->file, i, &cfg->certificates[i], warn, arg, err, errlen};
        if (load_cert(&l, &certs[i]) < 0)
            return -1;
    }
    if (shm && nservers > 0 && (tls->tickets = fg_tickets_attach(shm, gen)) == NULL) {
        snprintf(err, errlen, "shm: no room for the session ticket keys (shm.size)");
        return -1;
    }
    if (nservers > 0 && (tls->sid_md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL) {
        char why[160];
        snprintf(err, errlen, "tls: SHA-256: %s", ossl_reason(why, sizeof(why), "not available"));
        return -1;
    }
    if (tls->tickets &&
        (tls->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) == NULL) {
        char why[160];
        snprintf(err, errlen, "tls: AES-256-CBC for session tickets: %s",
                 ossl_reason(why, sizeof(why), "not available"));
        return -1;
    }
    for (size_t i = 0; i < cfg->nservers; i++)
        if (cfg->servers[i].tls && build_server(tls, cfg, i, warn, arg, err, errlen) < 0)
            return -1;
    return fg_tls_client_build(cfg, err, errlen);
}

int fg_tls_cert_pair(const fg_config_t *cfg, size_t index, X509 **leaf, EVP_PKEY **pkey,
                     STACK_OF(X509) * *chain)
{
    const tls_t *tls = cfg->tls;
    if (tls == NULL || index >= tls->ncerts)
        return -1;
    *leaf = tls->certs[index].leaf;
    *pkey = tls->certs[index].pkey;
    *chain = tls->certs[index].chain;
    return 0;
}

int fg_tls_cert_ocsp(const fg_config_t *cfg, size_t index, time_t *this_update, time_t *next_update,
                     int *has_next, int *stapled)
{
    const tls_t *tls = cfg->tls;
    if (tls == NULL || index >= tls->ncerts || tls->certs[index].ocsp == NULL)
        return 0;
    *has_next = fg_tls_ocsp_times(tls->certs[index].ocsp, this_update, next_update);
    *stapled = fg_tls_ocsp_stapled(tls->certs[index].ocsp, time(NULL));
    return 1;
}

void fg_tls_free(fg_config_t *cfg)
{
    fg_tls_client_free(cfg);
    for (size_t i = 0; i < cfg->nservers; i++) {
        server_free(cfg->servers[i].tls_compiled);
        cfg->servers[i].tls_compiled = NULL;
    }
    tls_t *tls = cfg->tls;
    if (tls == NULL)
        return;
    for (size_t i = 0; i < tls->ncerts; i++)
        cert_clear(&tls->certs[i]);
    EVP_CIPHER_free(tls->ticket_cipher);
    EVP_MD_free(tls->sid_md);
    free(tls->certs);
    free(tls);
    cfg->tls = NULL;
}

SSL_CTX *fg_tls_server_ctx(const fg_server_t *s)
{
    const server_tls_t *st = s->tls_compiled;
    return st ? st->ctx[st->conf->default_index] : NULL;
}

fg_tls_alpn_t fg_tls_alpn(const SSL *ssl)
{
    const unsigned char *p;
    unsigned int len;
    SSL_get0_alpn_selected(ssl, &p, &len);
    if (len == 8 && memcmp(p, "http/1.1", 8) == 0)
        return FG_TLS_ALPN_HTTP11;
    if (len == 2 && memcmp(p, "h2", 2) == 0)
        return FG_TLS_ALPN_H2;
    return FG_TLS_ALPN_NONE;
}

void fg_tls_info(const SSL *ssl, fg_tls_info_t *out)
{
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    out->version = SSL_get_version(ssl);
    out->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
    out->sni = sni ? sni : "";
    out->resumed = SSL_session_reused(ssl);
}

static const ctx_rec_t *rec_of(const SSL *ssl)
{
    return SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
}

long fg_tls_selected_cert(const SSL *ssl)
{
    const ctx_rec_t *r = rec_of(ssl);
    return r ? (long)r->srv->conf->cert_index[r->cert] : -1;
}

/* host[:port] or [v6]:port -> the host part. */
static size_t host_part(const char *host, size_t len)
{
    if (len > 0 && host[0] == '[') {
        const char *end = memchr(host, ']', len);
        return end ? (size_t)(end - host) + 1 : len;
    }
    const char *colon = memchr(host, ':', len);
    return colon ? (size_t)(colon - host) : len;
}

static int covers(const cert_t *c, const char *name, size_t len)
{
    const char *dot = memchr(name, '.', len);
    for (size_t i = 0; i < c->nnames; i++) {
        const char *n = c->names[i];
        if (n[0] != '*') {
            if (strlen(n) == len && memcmp(n, name, len) == 0)
                return 1;
        } else if (dot && dot > name && strlen(n + 2) == len - (size_t)(dot + 1 - name) &&
                   memcmp(n + 2, dot + 1, strlen(n + 2)) == 0) {
            return 1;
        }
    }
    return 0;
}

/* An IP-literal Host (RFC 3986 3.2.2; IPv6 in brackets) that an IP SAN of the certificate
 * carries (RFC 5280 4.2.1.6). `name` is NUL-terminated. */
static int covers_ip(const cert_t *c, const char *name, size_t len)
{
    char ip[NAME_MAX_LEN + 1];
    if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
        memcpy(ip, name + 1, len - 2);
        ip[len - 2] = '\0';
        name = ip;
    }
    return X509_check_ip_asc(c->leaf, name, 0) == 1;
}

int fg_tls_host_allowed(const SSL *ssl, const char *host, size_t len)
{
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const ctx_rec_t *r = rec_of(ssl);
    char name[NAME_MAX_LEN + 1];
    size_t n;

    if (sni == NULL || r == NULL)
        return 1;
    len = host_part(host, len);
    if (normalize(host, len, name, &n) < 0)
        return 0;
    size_t slen = strlen(sni);
    if (slen > 0 && sni[slen - 1] == '.')
        slen--;
    if (slen == n && strncasecmp(sni, name, n) == 0)
        return 1;
    return covers(r->srv->certs[r->cert], name, n) || covers_ip(r->srv->certs[r->cert], name, n);
}

/* RFC 3986 3.2.2 reg-name or IP-literal, as far as a Location needs: no byte that would end
 * the authority or break the header. */
static int authority_ok(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || strchr("/?#@\\\"<>{}|^`", ch))
            return 0;
    }
    return 1;
}

int fg_tls_redirect_location(const fg_redirect_https_t *r, const char *host, size_t hlen,
                             const char *target, size_t tlen, char *out, size_t outlen)
{
    int n;
    if (tlen == 0 || target[0] != '/') {
        target = "/";
        tlen = 1;
    }
    if (r->authority) {
        n = snprintf(out, outlen, "https://%s%.*s", r->authority, (int)tlen, target);
    } else {
        hlen = host_part(host, hlen);
        if (!authority_ok(host, hlen))
            return -1;
        char port[8] = "";
        if (r->port != 443)
            snprintf(port, sizeof(port), ":%u", (unsigned)r->port);
        n = snprintf(out, outlen, "https://%.*s%s%.*s", (int)hlen, host, port, (int)tlen, target);
    }
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}
