#include "master/admin_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/tls.h"

#define MAX_CONNS 64
#define MAX_FIELDS 64
#define TIMEOUT_MS 10000
#define HISTORY 32

/* A deferred answer: sent once the reload with a number >= ticket ends. */
typedef struct {
    uint64_t ticket; /* 0: answered */
    int status;
    char etag[80];
    json_t *doc;
} deferred_t;

struct fg_admin_http_s {
    fg_http_server_t *srv;
    fg_http_server_conf_t conf;
    char *listen;
    fg_admin_handler_fn fn;
    void *arg;
    json_t *history[HISTORY]; /* ring of reload outcomes */
    size_t nhistory;
};

void fg_admin_respond_json(fg_admin_conn_t *c, int status, const char *etag, json_t *doc)
{
    struct evbuffer *b = evbuffer_new();
    char *s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (b == NULL || s == NULL) {
        free(s);
        if (b)
            evbuffer_free(b);
        fg_http_server_respond(c, 500, "text/plain", NULL, NULL, NULL);
        return;
    }
    evbuffer_add(b, s, strlen(s));
    evbuffer_add(b, "\n", 1);
    free(s);
    fg_http_server_respond(c, status, "application/json", etag, NULL, b);
    evbuffer_free(b);
}

static void error(void *arg, fg_admin_conn_t *c, int status, const char *msg)
{
    fg_admin_respond_json(c, status, NULL, json_pack("{s:s}", "error", msg));
}

static void deferred_free(void *data)
{
    deferred_t *d = data;
    json_decref(d->doc);
    free(d);
}

void fg_admin_defer(fg_admin_conn_t *c, uint64_t ticket, int status, const char *etag, json_t *doc)
{
    deferred_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        json_decref(doc);
        error(NULL, c, 503, "out of memory");
        return;
    }
    d->ticket = ticket;
    d->status = status;
    snprintf(d->etag, sizeof(d->etag), "%s", etag ? etag : "");
    d->doc = doc;
    fg_http_server_hold(c, d, deferred_free);
}

static void record(fg_admin_http_t *h, const json_t *outcome)
{
    char now[32];
    struct tm tm;
    time_t t = time(NULL);
    gmtime_r(&t, &tm);
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *e = outcome ? json_deep_copy(outcome) : json_object();
    json_object_set_new(e, "time", json_string(now));
    size_t slot = h->nhistory++ % HISTORY;
    json_decref(h->history[slot]);
    h->history[slot] = e;
}

json_t *fg_admin_http_history(const fg_admin_http_t *h)
{
    json_t *list = json_array();
    if (h == NULL)
        return list;
    size_t first = h->nhistory > HISTORY ? h->nhistory - HISTORY : 0;
    for (size_t i = first; i < h->nhistory; i++)
        json_array_append(list, h->history[i % HISTORY]);
    return list;
}

typedef struct {
    uint64_t upto;
    const json_t *outcome;
} resolution_t;

static void answer(void *arg, fg_admin_conn_t *c, void *data)
{
    const resolution_t *r = arg;
    deferred_t *d = data;
    if (d == NULL || d->ticket == 0 || d->ticket > r->upto)
        return;
    d->ticket = 0;
    json_t *doc = d->doc ? d->doc : json_object();
    d->doc = NULL;
    const char *result = json_string_value(json_object_get(r->outcome, "result"));
    int ok = result && strcmp(result, "ok") == 0;
    json_object_set_new(doc, "reload", r->outcome ? json_deep_copy(r->outcome) : json_null());
    fg_admin_respond_json(c, ok ? d->status : 500, d->etag[0] ? d->etag : NULL, doc);
}

void fg_admin_http_resolve(fg_admin_http_t *h, uint64_t upto, const json_t *outcome)
{
    if (h == NULL)
        return;
    record(h, outcome);
    resolution_t r = {upto, outcome};
    fg_http_server_each_held(h->srv, answer, &r);
}

int fg_admin_token_equal(const char *given, size_t given_len, const char *want, size_t want_len)
{
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)given, given_len, a);
    SHA256((const unsigned char *)want, want_len, b);
    /* unequal lengths still cost one full digest compare; the flag joins without a branch */
    return (CRYPTO_memcmp(a, b, sizeof(a)) == 0) & (given_len == want_len);
}

/* The fields the API reads; none of them may repeat. */
static const struct {
    const char *name;
    size_t off;
} known[] = {
    {"authorization", offsetof(fg_admin_req_t, authorization)},
    {"if-match", offsetof(fg_admin_req_t, if_match)},
    {"content-type", offsetof(fg_admin_req_t, content_type)},
    {"origin", offsetof(fg_admin_req_t, origin)},
};

static void handle(void *arg, fg_admin_conn_t *c, const fg_http_server_req_t *r)
{
    fg_admin_http_t *h = arg;
    fg_admin_req_t req = {
        .method = r->method,
        .path = r->path,
        .query = r->query,
        .host = r->host,
        .body = r->body,
        .body_len = r->body_len,
        .client_cert = r->client_cert,
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        size_t n;
        const char *v = fg_http_server_field(r, known[i].name, &n);
        if (n > 1) {
            error(h, c, 400, "malformed request");
            return;
        }
        *(const char **)((char *)&req + known[i].off) = v;
    }
    h->fn(h->arg, c, &req);
}

/* The TLS context of admin.tls from the certificate cfg's generation loaded (fg_tls_build):
 * *out NULL for plain HTTP. Returns 0, or -1 with err. */
static int make_ctx(const fg_config_t *cfg, SSL_CTX **out, char *err, size_t errlen)
{
    const fg_admin_config_t *a = &cfg->admin;
    X509 *leaf;
    EVP_PKEY *pkey;
    STACK_OF(X509) * chain;
    *out = NULL;
    if (a->tls_cert < 0)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || fg_tls_cert_pair(cfg, (size_t)a->tls_cert, &leaf, &pkey, &chain) < 0 ||
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, pkey) != 1)
        goto fail;
    for (int i = 0; chain && i < sk_X509_num(chain); i++)
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1)
            goto fail;
    if (a->client_ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(a->client_ca_file);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, a->client_ca_file, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    *out = ctx;
    return 0;
fail:
    snprintf(err, errlen, "admin.tls: cannot set up certificate \"%s\"%s%s", a->tls_cert_id,
             a->client_ca_file ? " or clientCaFile " : "",
             a->client_ca_file ? a->client_ca_file : "");
    SSL_CTX_free(ctx);
    return -1;
}

fg_admin_http_t *fg_admin_http_new(struct event_base *base, const fg_config_t *cfg,
                                   fg_admin_handler_fn fn, void *arg, char *err, size_t errlen)
{
    fg_admin_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->listen = strdup(cfg->admin.listen)) == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        goto out_free;
    }
    h->fn = fn;
    h->arg = arg;
    h->conf = (fg_http_server_conf_t){
        .max_head = FG_ADMIN_MAX_HEAD,
        .max_fields = MAX_FIELDS,
        .max_body = FG_ADMIN_MAX_BODY,
        .max_conns = MAX_CONNS,
        .timeout_ms = TIMEOUT_MS,
        .headers = "X-Content-Type-Options: nosniff\r\n",
        .handler = handle,
        .error = error,
        .arg = h,
    };
    SSL_CTX *ctx;
    if (make_ctx(cfg, &ctx, err, errlen) < 0)
        goto out_free;
    char label[300];
    snprintf(label, sizeof(label), "admin.listen %s", cfg->admin.listen);
    h->srv = fg_http_server_new(base, (const struct sockaddr *)&cfg->admin.addr, cfg->admin.addrlen,
                                label, &h->conf, err, errlen);
    if (h->srv == NULL) {
        SSL_CTX_free(ctx);
        goto out_free;
    }
    fg_http_server_set_tls(h->srv, ctx);
    return h;
out_free:
    if (h)
        free(h->listen);
    free(h);
    return NULL;
}

int fg_admin_http_apply(fg_admin_http_t **h, struct event_base *base, const fg_config_t *cfg,
                        fg_admin_handler_fn fn, void *arg, char *err, size_t errlen)
{
    fg_admin_http_t *cur = *h;
    if (cur && cfg->admin.listen && strcmp(cur->listen, cfg->admin.listen) == 0) {
        /* the same socket; the certificate may have changed: new connections take the new */
        SSL_CTX *ctx;
        if (make_ctx(cfg, &ctx, err, errlen) < 0)
            return -1;
        fg_http_server_set_tls(cur->srv, ctx);
        return 0;
    }
    fg_admin_http_t *next = NULL;
    if (cfg->admin.listen) {
        /* the new listener first: when it cannot listen, the old one keeps serving */
        next = fg_admin_http_new(base, cfg, fn, arg, err, errlen);
        if (next == NULL)
            return -1;
    }
    if (cur && next) {
        memcpy(next->history, cur->history, sizeof(cur->history));
        next->nhistory = cur->nhistory;
        memset(cur->history, 0, sizeof(cur->history));
    }
    fg_admin_http_free(cur);
    *h = next;
    return 0;
}

void fg_admin_http_free(fg_admin_http_t *h)
{
    if (h == NULL)
        return;
    fg_http_server_free(h->srv);
    for (size_t i = 0; i < HISTORY; i++)
        json_decref(h->history[i]);
    free(h->listen);
    free(h);
}

void fg_admin_http_close_in_child(const fg_admin_http_t *h)
{
    if (h)
        fg_http_server_close_in_child(h->srv);
}
