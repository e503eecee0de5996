#include "worker/http/request.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/json.h"
#include "common/http_date.h"
#include "common/log.h"
#include "common/mime.h"
#include "common/tls.h"
#include "worker/core/clock.h"
#include "worker/core/context.h"

const fg_http_header_t *fg_request_header(const fg_request_t *req, fg_str_t name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (fg_str_ieq(req->headers[i].name, name))
            return &req->headers[i];
    return NULL;
}

#define REQUEST_POOL_SIZE 4096 /* holds a typical head, its path and the response head */

fg_pool_t *fg_request_pool_take(fg_worker_t *w)
{
    if (w != NULL && w->nrequest_pools > 0)
        return w->request_pools[--w->nrequest_pools];
    return fg_pool_new(REQUEST_POOL_SIZE);
}

void fg_request_pool_give(fg_worker_t *w, fg_pool_t *pool)
{
    if (pool == NULL)
        return;
    if (w == NULL || w->nrequest_pools == FG_REQUEST_POOL_SPARES) {
        fg_pool_free(pool);
        return;
    }
    fg_pool_reset(pool);
    w->request_pools[w->nrequest_pools++] = pool;
}

void fg_request_pools_free(fg_worker_t *w)
{
    while (w->nrequest_pools > 0)
        fg_pool_free(w->request_pools[--w->nrequest_pools]);
}

int64_t fg_request_body_limit(const fg_request_t *req)
{
    if (req->route && req->route->max_request_body_size >= 0)
        return req->route->max_request_body_size;
    return req->server ? req->server->max_request_body_size : -1;
}

void fg_request_respond(fg_request_t *req, int status, const fg_headers_t *hdrs, const char *body,
                        size_t len)
{
    fg_headers_t empty;
    if (hdrs == NULL) {
        fg_headers_init(&empty, req->pool, 0);
        hdrs = &empty;
    }
    if (req->ops->send_head(req, status, hdrs, (int64_t)len) == 0 && len > 0) {
        /* The worker's scratch buffer saves an allocation per direct answer; send_body empties
         * it. Without a worker (unit tests), a buffer of our own. */
        struct evbuffer *b =
            req->worker && req->worker->scratch ? req->worker->scratch : evbuffer_new();
        if (b != NULL) {
            evbuffer_add(b, body, len);
            req->ops->send_body(req, b);
            evbuffer_drain(b, evbuffer_get_length(b));
            if (b != (req->worker ? req->worker->scratch : NULL))
                evbuffer_free(b);
        }
    }
    req->ops->finish(req);
}

/* ---- the gateway's own answers: Date, Server, errors ---- */

/* Without a worker loop (unit tests): formatted into the request's pool. */
static fg_str_t uncached_date(fg_request_t *req)
{
    char *d = fg_pool_alloc(req->pool, 30);
    if (d == NULL)
        return FG_STR_NULL;
    return (fg_str_t){d, fg_http_date(time(NULL), d)};
}

fg_str_t fg_request_date(fg_request_t *req)
{
    fg_worker_t *w = req->worker;
    if (w == NULL || w->base == NULL)
        return uncached_date(req);
    /* The wall clock of this loop turn (worker/core/clock.h). */
    struct timeval tv;
    fg_clock_wall(&tv);
    if (w->date_len == 0 || tv.tv_sec != w->date_sec) {
        w->date_len = fg_http_date(tv.tv_sec, w->date);
        w->date_sec = tv.tv_sec;
    }
    return (fg_str_t){w->date, w->date_len};
}

static int has_field(const fg_headers_t *hdrs, fg_str_t name)
{
    for (size_t i = 0; i < hdrs->n; i++)
        if (fg_str_ieq(hdrs->v[i].name, name))
            return 1;
    return 0;
}

void fg_request_stamp(fg_request_t *req, const fg_headers_t *hdrs, fg_str_t *date, fg_str_t *server)
{
    /* RFC 9110 6.6.1: an origin with a clock sends Date; a recipient that forwards a response
     * without one adds it. A destination's own Date is kept: it dates the origin's answer. */
    *date = has_field(hdrs, FG_STR_LIT("Date")) ? FG_STR_NULL : fg_request_date(req);
    /* RFC 9110 10.2.4: Server names the origin's software. A relayed response keeps the
     * destination's (or has none); the gateway names itself only in its own answers. */
    const char *sh = req->server ? req->server->responses.server_header : NULL;
    *server = sh == NULL || req->relayed || has_field(hdrs, FG_STR_LIT("Server")) ? FG_STR_NULL
                                                                                  : fg_str(sh);
}

/* Copy s into out as a JSON string body, percent-encoding bytes >= 0x80 so that the result is
 * ASCII (a path is a URI component, RFC 3986 2.1), and escaping what JSON requires. */
static char *put_json_path(char *out, fg_str_t s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.base[i];
        if (c >= 0x80) {
            *out++ = '%';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        } else {
            out += fg_json_escape(out, 6, (const char *)&c, 1);
        }
    }
    return out;
}

#define ERROR_PATH_MAX 2048 /* bytes of the path an error body shows */
#define PUT_LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

/* The JSON error body (docs/config.md "Error responses"), in pool memory; NULL without
 * memory. Built by hand: no formatted printing on an error path a flood can drive. */
static fg_str_t json_error_body(fg_request_t *req, int status, const char *error,
                                const char *message)
{
    fg_str_t shown = req->path.base ? req->path : req->target;
    if (req->error_ops != NULL) {
        /* An errorPages route failed: the client asked for the original target, not the page. */
        const char *q = memchr(req->target.base, '?', req->target.len);
        shown = req->target;
        if (q != NULL)
            shown.len = (size_t)(q - req->target.base);
    }
    if (shown.len > ERROR_PATH_MAX) /* an error body stays small whatever the request line */
        shown.len = ERROR_PATH_MAX;
    size_t el = strlen(error), ml = strlen(message), il = strlen(req->request_id);
    /* Every byte escapes to at most 6; the fixed text and the status take under 96. */
    char *b = fg_pool_alloc(req->pool, 96 + 6 * (el + ml + il + shown.len));
    if (b == NULL)
        return FG_STR_NULL;
    char *p = PUT_LIT(b, "{\"status\":");
    p = fg_put_u64(p, (uint64_t)status);
    p = PUT_LIT(p, ",\"error\":\"");
    p += fg_json_escape(p, 6 * el, error, el);
    p = PUT_LIT(p, "\",\"message\":\"");
    p += fg_json_escape(p, 6 * ml, message, ml);
    p = PUT_LIT(p, "\",\"requestId\":\"");
    p += fg_json_escape(p, 6 * il, req->request_id, il);
    p = PUT_LIT(p, "\",\"path\":\"");
    p = put_json_path(p, shown);
    p = PUT_LIT(p, "\"}\n");
    return (fg_str_t){b, (size_t)(p - b)};
}

/* The operator's page for status (errorPages), or NULL. */
static const fg_error_page_t *error_page(const fg_request_t *req, int status)
{
    const fg_config_t *cfg = req->worker ? req->worker->cfg : NULL;
    if (cfg == NULL && req->server == NULL)
        return NULL;
    return fg_config_error_page(cfg, req->server, status);
}

/* send_head while an errorPages route answers: the client sees the error's status. */
static int error_route_send_head(fg_request_t *req, int status, const fg_headers_t *hdrs,
                                 int64_t content_length)
{
    (void)status;
    return req->error_ops->send_head(req, req->error_status, hdrs, content_length);
}

/* Hand req to the errorPages route of page (worker->error_route). Only a request whose head is
 * complete and that has no body: the front end is then between reading and answering, and the
 * route's handler can own req. Returns 0 when handed over, -1 when the JSON error applies. */
static int error_route(fg_request_t *req, const fg_error_page_t *page, int status)
{
    fg_worker_t *w = req->worker;
    if (w == NULL || w->error_route == NULL || req->ops == NULL || req->has_body ||
        req->path.base == NULL || req->request_id[0] == '\0')
        return -1;
    fg_req_ops_t *ops = fg_pool_alloc(req->pool, sizeof(*ops));
    if (ops == NULL)
        return -1;
    *ops = *req->ops;
    ops->send_head = error_route_send_head;
    req->error_ops = req->ops;
    req->error_status = page->route_status ? page->route_status : status;
    req->ops = ops;
    w->error_route(req, page->route);
    return 0;
}

void fg_request_error_with(fg_request_t *req, int status, const char *error, const char *message,
                           const fg_headers_t *extra)
{
    req->error = error;
    const fg_error_page_t *page = NULL;
    if (req->error_ops != NULL) {
        /* Failed while serving an error page: the plain JSON error, logged as that failure. */
        req->ops = req->error_ops;
        if (req->termination && strcmp(req->termination, "error_page") == 0)
            req->termination = NULL;
    } else
        page = error_page(req, status);
    if (page != NULL && page->route != NULL && error_route(req, page, status) == 0)
        return;
    if (page != NULL && page->route != NULL)
        page = NULL;
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 3 + (extra ? extra->n : 0));
    fg_str_t body;
    int rc = 0;
    if (page != NULL && page->redirect != NULL) {
        /* A redirect entry sends the client to the operator's page: 302 Found (RFC 9110 15.4.3). */
        status = 302;
        body = FG_STR_LIT("");
        rc = fg_headers_add(&h, FG_STR_LIT("Location"), fg_str(page->redirect));
        extra = NULL;
    } else if (page != NULL) {
        body = (fg_str_t){page->body, page->body_len};
        const char *type = page->content_type ? page->content_type : fg_mime_type(page->file);
        rc = fg_headers_add(&h, FG_STR_LIT("Content-Type"), fg_str(type));
    } else {
        body = json_error_body(req, status, error, message);
        rc = body.base == NULL
                 ? -1
                 : fg_headers_add(&h, FG_STR_LIT("Content-Type"), FG_STR_LIT("application/json"));
    }
    for (size_t i = 0; rc == 0 && extra && i < extra->n; i++)
        rc = fg_headers_add(&h, extra->v[i].name, extra->v[i].value);
    if (rc == 0 && req->request_id[0])
        rc = fg_headers_add(&h, FG_STR_LIT("X-Request-Id"), fg_str(req->request_id));
    if (rc != 0) {
        /* Out of pool memory: the status alone still tells the client what happened. */
        fg_request_respond(req, status, NULL, NULL, 0);
        return;
    }
    fg_request_respond(req, status, &h, body.base, body.len);
}

const char *fg_request_error_kind(int status)
{
    static const struct {
        short status;
        const char *kind;
    } kinds[] = {
        {400, "bad_request"},
        {401, "unauthorized"},
        {403, "forbidden"},
        {404, "not_found"},
        {405, "method_not_allowed"},
        {408, "request_timeout"},
        {410, "gone"},
        {412, "precondition_failed"},
        {413, "payload_too_large"},
        {414, "uri_too_long"},
        {416, "range_not_satisfiable"},
        {429, "rate_limited"},
        {431, "headers_too_large"},
        {451, "unavailable_for_legal_reasons"},
        {500, "internal_error"},
        {501, "not_implemented"},
        {502, "bad_gateway"},
        {503, "service_unavailable"},
        {504, "gateway_timeout"},
        {505, "version_not_supported"},
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (kinds[i].status == status)
            return kinds[i].kind;
    return status >= 500 ? "server_error" : "client_error";
}

void fg_request_error(fg_request_t *req, int status, const char *error, const char *message)
{
    fg_request_error_with(req, status, error, message, NULL);
}

int fg_request_is_acme_challenge(const fg_request_t *req)
{
    const fg_config_t *cfg = req->worker ? req->worker->cfg : NULL;
    return cfg != NULL && cfg->acme.enabled && req->path.len > FG_ACME_CHALLENGE_PREFIX_LEN &&
           memcmp(req->path.base, FG_ACME_CHALLENGE_PREFIX, FG_ACME_CHALLENGE_PREFIX_LEN) == 0;
}

int fg_request_tls_answer(fg_request_t *req)
{
    if (req->ssl != NULL) {
        /* RFC 9110 15.5.20: the client retries on a connection for that name (HTTP/2
         * coalesces connections, HTTP/1.1 may send any Host). */
        if (fg_tls_host_allowed(req->ssl, req->host.base, req->host.len))
            return 0;
        fg_request_error(req, 421, "misdirected_request",
                         "The certificate of this connection does not cover this host");
        return 1;
    }
    /* A balancer that terminated the client's TLS said so (PROXY protocol PP2_TYPE_SSL): the
     * request is https already, and a redirect to https would send the client round again. */
    if (fg_str_ieq_c(req->scheme, "https"))
        return 0;
    const fg_redirect_https_t *r = &req->server->redirect;
    if (!r->enabled || fg_request_is_acme_challenge(req))
        return 0; /* a challenge is answered where it was asked (worker/handlers/acme_challenge.c)
                   */
    size_t cap = 300 + req->host.len + req->target.len;
    char *loc = fg_pool_alloc(req->pool, cap);
    int n = loc ? fg_tls_redirect_location(r, req->host.base, req->host.len, req->target.base,
                                           req->target.len, loc, cap)
                : -1;
    fg_headers_t hd;
    fg_headers_init(&hd, req->pool, 1);
    if (n < 0 || fg_headers_add(&hd, FG_STR_LIT("Location"), (fg_str_t){loc, (size_t)n}) != 0) {
        req->keep_alive = 0;
        fg_request_error(req, 400, "bad_request", "no valid host to redirect to");
        return 1;
    }
    fg_request_respond(req, r->status, &hd, NULL, 0);
    return 1;
}

/* A client's X-Request-Id is kept when it is short and plain enough to log and forward. */
static int plain_id(fg_str_t v)
{
    if (v.len == 0 || v.len > FG_REQUEST_ID_LEN)
        return 0;
    for (size_t i = 0; i < v.len; i++) {
        char ch = v.base[i];
        if (!((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') || ch == '-' ||
              ch == '_' || ch == '.'))
            return 0;
    }
    return 1;
}

void fg_request_make_id(fg_request_t *req)
{
    const fg_http_header_t *f = fg_request_header(req, FG_STR_LIT("X-Request-Id"));
    if (f != NULL && plain_id(f->value)) {
        memcpy(req->request_id, f->value.base, f->value.len);
        req->request_id[f->value.len] = '\0';
        return;
    }
    /* 32 hex digits: start time, pid, per-worker sequence: unique across workers and restarts.
     * Formatted by hand: this runs for every request. */
    fg_worker_t *w = req->worker;
    uint64_t seq = ++w->request_seq ^ (uint64_t)w->slot << 56;
    fg_put_hex64(req->request_id, (req->start_us << 16) ^ (uint64_t)w->pid);
    fg_put_hex64(req->request_id + 16, seq);
    req->request_id[32] = '\0';
}
