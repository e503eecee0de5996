#include "master/admin_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/tls.h"

#define MAX_CONNS 64
#define REQUEST_TIMEOUT_S 10
#define MAX_FIELDS 64
#define HISTORY 32

struct fg_admin_conn_s {
    struct fg_admin_conn_s *next, **pprev;
    struct bufferevent *bev;
    struct fg_admin_http_s *h;
    int closing;   /* answered: close once the output is flushed */
    int have_head; /* the head is parsed; waiting for body_len bytes */
    char *head;    /* the request head, split in place into req's strings */
    char *body;
    fg_admin_req_t req;
    uint64_t ticket; /* > 0: a deferred answer waits for this reload */
    int defer_status;
    char defer_etag[80];
    json_t *defer_doc;
};

struct fg_admin_http_s {
    struct evconnlistener *lev;
    SSL_CTX *ctx; /* admin.tls; NULL = plain HTTP */
    char *listen;
    fg_admin_handler_fn fn;
    void *arg;
    fg_admin_conn_t *conns;
    size_t nconns;
    json_t *history[HISTORY]; /* ring of reload outcomes */
    size_t nhistory;
};

static void conn_free(fg_admin_conn_t *c)
{
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    c->h->nconns--;
    bufferevent_free(c->bev);
    json_decref(c->defer_doc);
    free(c->head);
    free(c->body);
    free(c);
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 428:
        return "Precondition Required";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return status >= 500 ? "Internal Server Error" : "Error";
    }
}

void fg_admin_respond(fg_admin_conn_t *c, int status, const char *type, const char *etag,
                      const char *extra, struct evbuffer *body)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = body ? evbuffer_get_length(body) : 0;
    int head = c->req.method && strcmp(c->req.method, "HEAD") == 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s%s"
                        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                        "Connection: close\r\n\r\n",
                        status, reason(status), type ? type : "text/plain", n, etag ? "ETag: " : "",
                        etag ? etag : "", etag ? "\r\n" : "", extra ? extra : "");
    if (body && !head)
        evbuffer_add_buffer(out, body);
    else if (body)
        evbuffer_drain(body, n);
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    /* a deferred answer ran without a timeout: a client that does not read is still bounded */
    struct timeval tv = {REQUEST_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

void fg_admin_respond_json(fg_admin_conn_t *c, int status, const char *etag, json_t *doc)
{
    struct evbuffer *b = evbuffer_new();
    char *s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (b == NULL || s == NULL) {
        free(s);
        if (b)
            evbuffer_free(b);
        fg_admin_respond(c, 500, "text/plain", NULL, NULL, NULL);
        return;
    }
    evbuffer_add(b, s, strlen(s));
    evbuffer_add(b, "\n", 1);
    free(s);
    fg_admin_respond(c, status, "application/json", etag, NULL, b);
    evbuffer_free(b);
}

static void error(fg_admin_conn_t *c, int status, const char *msg)
{
    fg_admin_respond_json(c, status, NULL, json_pack("{s:s}", "error", msg));
}

void fg_admin_defer(fg_admin_conn_t *c, uint64_t ticket, int status, const char *etag, json_t *doc)
{
    c->ticket = ticket;
    c->defer_status = status;
    snprintf(c->defer_etag, sizeof(c->defer_etag), "%s", etag ? etag : "");
    c->defer_doc = doc;
    bufferevent_disable(c->bev, EV_READ);
    /* the timeout would close the connection before the reload ends */
    bufferevent_set_timeouts(c->bev, NULL, NULL);
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

void fg_admin_http_resolve(fg_admin_http_t *h, uint64_t upto, const json_t *outcome)
{
    if (h == NULL)
        return;
    record(h, outcome);
    for (fg_admin_conn_t *c = h->conns; c; c = c->next) {
        if (c->ticket == 0 || c->ticket > upto)
            continue;
        c->ticket = 0;
        json_t *doc = c->defer_doc ? c->defer_doc : json_object();
        c->defer_doc = NULL;
        const char *result = json_string_value(json_object_get(outcome, "result"));
        int ok = result && strcmp(result, "ok") == 0;
        json_object_set_new(doc, "reload", outcome ? json_deep_copy(outcome) : json_null());
        fg_admin_respond_json(c, ok ? c->defer_status : 500,
                              c->defer_etag[0] ? c->defer_etag : NULL, doc);
    }
}

int fg_admin_token_equal(const char *given, size_t given_len, const char *want, size_t want_len)
{
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)given, given_len, a);
    SHA256((const unsigned char *)want, want_len, b);
    /* unequal lengths still cost one full digest compare; the flag joins without a branch */
    return (CRYPTO_memcmp(a, b, sizeof(a)) == 0) & (given_len == want_len);
}

/* ---- parsing ---- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Parse a Content-Length value: digits only (RFC 9110 8.6), at most FG_ADMIN_MAX_BODY.
 * Returns the length, -1 when invalid, -2 when too large. */
static long content_length(const char *v)
{
    if (*v == '\0')
        return -1;
    long n = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (n > FG_ADMIN_MAX_BODY)
            return -2;
        n = n * 10 + (*p - '0');
    }
    return n > FG_ADMIN_MAX_BODY ? -2 : n;
}

/* One field line "name: value" into req; returns 0, or an HTTP status to answer. */
static int field(fg_admin_req_t *req, char *line, long *clen)
{
    char *colon = strchr(line, ':');
    /* RFC 9112 5.1: no blank between name and colon; 5.2: obs-fold is refused */
    if (colon == NULL || colon == line || line[0] == ' ' || line[0] == '\t' || colon[-1] == ' ' ||
        colon[-1] == '\t')
        return 400;
    *colon = '\0';
    char *v = trim(colon + 1);
    static const struct {
        const char *name;
        size_t off;
    } known[] = {
        {"authorization", offsetof(fg_admin_req_t, authorization)},
        {"if-match", offsetof(fg_admin_req_t, if_match)},
        {"content-type", offsetof(fg_admin_req_t, content_type)},
        {"origin", offsetof(fg_admin_req_t, origin)},
        {"host", offsetof(fg_admin_req_t, host)},
    };
    if (strcasecmp(line, "transfer-encoding") == 0)
        return 501; /* RFC 9112 6.1: a server that does not understand it answers 501 */
    if (strcasecmp(line, "content-length") == 0) {
        long n = content_length(v);
        if (n == -2)
            return 413;
        if (n < 0 || (*clen >= 0 && *clen != n))
            return 400; /* RFC 9112 6.3: an invalid or conflicting length */
        *clen = n;
        return 0;
    }
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcasecmp(line, known[i].name) == 0) {
            const char **slot = (const char **)((char *)req + known[i].off);
            if (*slot != NULL)
                return 400; /* none of these may repeat */
            *slot = v;
        }
    }
    return 0;
}

/* The request line, RFC 9112 3: "METHOD SP target SP HTTP/1.x", origin-form only. */
static int request_line(fg_admin_req_t *req, char *line)
{
    char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp1[1] != '/')
        return 400;
    *sp1 = *sp2 = '\0';
    req->method = line;
    req->path = sp1 + 1;
    char *q = strchr(req->path, '?');
    req->query = "";
    if (q) {
        *q = '\0';
        req->query = q + 1;
    }
    return 0;
}

/* Split the head (NUL-terminated, CRLF lines) into c->req; returns 0 or a status. */
static int parse_head(fg_admin_conn_t *c, long *clen)
{
    char *save = NULL, *line = strtok_r(c->head, "\n", &save);
    int nfields = 0;
    if (line == NULL)
        return 400;
    line[strcspn(line, "\r")] = '\0';
    int st = request_line(&c->req, line);
    while (st == 0 && (line = strtok_r(NULL, "\n", &save)) != NULL) {
        size_t n = strlen(line);
        if (n == 0 || line[n - 1] != '\r')
            return 400; /* a bare LF */
        line[n - 1] = '\0';
        if (line[0] == '\0')
            break;
        if (++nfields > MAX_FIELDS)
            return 431;
        st = field(&c->req, line, clen);
    }
    return st;
}

static void dispatch(fg_admin_conn_t *c)
{
    c->req.body = c->body ? c->body : "";
    SSL *ssl = c->h->ctx ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    /* SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT: a certificate, when sent, has been
     * verified against clientCaFile by the handshake; check the outcome all the same */
    c->req.client_cert =
        ssl && SSL_get0_peer_certificate(ssl) && SSL_get_verify_result(ssl) == X509_V_OK;
    c->h->fn(c->h->arg, c, &c->req);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    fg_admin_conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->closing || c->ticket)
        return;
    if (!c->have_head) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0 || end.pos + 4 > FG_ADMIN_MAX_HEAD) {
            if (end.pos >= 0 || evbuffer_get_length(in) > FG_ADMIN_MAX_HEAD)
                error(c, 431, "request head larger than 16 KiB");
            return;
        }
        size_t hlen = (size_t)end.pos + 4;
        c->head = malloc(hlen + 1);
        if (c->head == NULL) {
            error(c, 503, "out of memory");
            return;
        }
        evbuffer_remove(in, c->head, hlen);
        c->head[hlen] = '\0';
        if (memchr(c->head, '\0', hlen) != NULL) {
            error(c, 400, "NUL in the request head");
            return;
        }
        long clen = -1;
        int st = parse_head(c, &clen);
        if (st != 0) {
            error(c, st,
                  st == 501 ? "Transfer-Encoding is not supported: send Content-Length"
                            : "malformed request");
            return;
        }
        c->req.body_len = clen > 0 ? (size_t)clen : 0;
        c->have_head = 1;
    }
    if (evbuffer_get_length(in) < c->req.body_len)
        return;
    if (c->req.body_len > 0) {
        c->body = malloc(c->req.body_len + 1);
        if (c->body == NULL) {
            error(c, 503, "out of memory");
            return;
        }
        evbuffer_remove(in, c->body, c->req.body_len);
        c->body[c->req.body_len] = '\0';
    }
    bufferevent_disable(bev, EV_READ); /* one request per connection */
    dispatch(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    fg_admin_conn_t *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    fg_admin_conn_t *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return; /* the TLS handshake is done */
    /* a client that half-closed after its request still gets the deferred answer */
    if (c->ticket && (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR))
        return;
    conn_free(c); /* EOF, error or the request timeout */
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    fg_admin_http_t *h = arg;
    fg_admin_conn_t *c = h->nconns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
    struct bufferevent *bev = NULL;
    SSL *ssl = c && h->ctx ? SSL_new(h->ctx) : NULL;
    if (c != NULL && h->ctx == NULL)
        bev = bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE);
    else if (ssl != NULL)
        bev = bufferevent_openssl_socket_new(evconnlistener_get_base(lev), fd, ssl,
                                             BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        if (ssl != NULL)
            SSL_free(ssl);
        free(c);
        close(fd);
        return;
    }
    c->bev = bev;
    c->h = h;
    c->next = h->conns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &h->conns;
    h->conns = c;
    h->nconns++;
    struct timeval tv = {REQUEST_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int open_socket(const fg_admin_config_t *a, char *err, size_t errlen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->addr;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        bind(fd, sa, a->addrlen) == -1 || listen(fd, 64) == -1) {
        snprintf(err, errlen, "admin.listen %s: %s", a->listen, strerror(errno));
        if (fd != -1)
            close(fd);
        return -1;
    }
    return fd;
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
    if (make_ctx(cfg, &h->ctx, err, errlen) < 0)
        goto out_free;
    int fd = open_socket(&cfg->admin, err, errlen);
    if (fd < 0)
        goto out_free;
    h->lev = evconnlistener_new(base, on_accept, h, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (h->lev == NULL) {
        snprintf(err, errlen, "admin.listen %s: cannot register with the event loop",
                 cfg->admin.listen);
        close(fd);
        goto out_free;
    }
    return h;
out_free:
    if (h) {
        SSL_CTX_free(h->ctx);
        free(h->listen);
    }
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
        SSL_CTX_free(cur->ctx);
        cur->ctx = ctx;
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
    while (h->conns)
        conn_free(h->conns);
    evconnlistener_free(h->lev);
    SSL_CTX_free(h->ctx);
    for (size_t i = 0; i < HISTORY; i++)
        json_decref(h->history[i]);
    free(h->listen);
    free(h);
}

void fg_admin_http_close_in_child(const fg_admin_http_t *h)
{
    if (h == NULL)
        return;
    close(evconnlistener_get_fd(h->lev));
    for (const fg_admin_conn_t *c = h->conns; c; c = c->next)
        close(bufferevent_getfd(c->bev));
}
