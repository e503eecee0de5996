#include "worker/http/dispatch.h"

#include <string.h>

#include "common/tls_clientauth.h"
#include "worker/admission/security.h"
#include "worker/handlers/acme_challenge.h"
#include "worker/core/context.h"
#include "worker/handlers/direct.h"
#include "worker/handlers/proxy.h"
#include "worker/handlers/static.h"
#include "worker/http/router.h"
#include "worker/tunnel/endpoint.h"

int fg_dispatch_route(fg_request_t *req)
{
    /* The tenant decides which tenant routes may match (worker/http/router.c). */
    const fg_config_t *cfg = req->worker ? req->worker->cfg : NULL;
    const fg_http_header_t *th =
        cfg && cfg->tenant_header ? fg_request_header(req, fg_str(cfg->tenant_header)) : NULL;
    req->tenant = th ? th->value : FG_STR_NULL;
    if (fg_acme_challenge_answer(req))
        return -1;
    int asterisk = req->path.len == 1 && req->path.base[0] == '*';
    /* The tunnel path never reaches a route; agents come by HTTP/1.1 (the front end hands
     * their upgrades to worker/tunnel/endpoint.c before dispatch). */
    if (cfg && req->server && fg_tunnel_endpoint_match(cfg, req->server, req->path)) {
        fg_request_error(req, 400, "bad_request",
                         "tunnel agents connect by WebSocket over HTTP/1.1");
        return -1;
    }
    req->route = asterisk ? NULL : fg_router_match(req->server, req);
    /* Access control and rate limits first: a refused client learns nothing about routes. */
    if (fg_security_check(req) != 0)
        return -1;
    if (req->protocol.len > 0 && (req->route == NULL || req->route->kind != FG_ROUTE_CLUSTER)) {
        /* RFC 8441 4: only a cluster route relays a protocol (the proxy checks the route's
         * upgradeProtocols); elsewhere 501 names the method's extension as not implemented
         * (RFC 9110 15.6.2). */
        fg_request_error(req, 501, "not_implemented",
                         "extended CONNECT (:protocol) is not supported on this route");
        return -1;
    }
    if (asterisk) {
        /* RFC 9112 3.2.4: "*" is for OPTIONS only, and names the server, not a resource: the
         * gateway answers for itself (RFC 9110 9.3.7) with the methods it relays. */
        if (!fg_str_eq(req->method, FG_STR_LIT("OPTIONS"))) {
            fg_request_error(req, 400, "bad_request", "the \"*\" target is for OPTIONS only");
            return -1;
        }
        fg_headers_t h;
        fg_headers_init(&h, req->pool, 1);
        fg_headers_add(&h, FG_STR_LIT("Allow"),
                       FG_STR_LIT("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"));
        fg_request_respond(req, 200, &h, NULL, 0);
        return -1;
    }
    if (req->route == NULL) {
        /* RFC 9110 15.5.6: the target exists for other methods: 405 with Allow. */
        char allow[128];
        fg_headers_t h;
        if (fg_router_allowed(req->server, req, allow, sizeof(allow)) > 0) {
            fg_headers_init(&h, req->pool, 1);
            const char *v = fg_pool_str(req->pool, fg_str(allow)).base;
            if (v != NULL && fg_headers_add(&h, FG_STR_LIT("Allow"), fg_str(v)) == 0) {
                fg_request_error_with(req, 405, "method_not_allowed",
                                      "the route does not accept this method", &h);
                return -1;
            }
        }
        fg_request_error(req, 404, "not_found", "no route matches the request");
        return -1;
    }
    if (req->route->require_client_cert &&
        (req->ssl == NULL || fg_tls_client_cert(req->ssl) == NULL)) {
        fg_request_error(req, 403, "client_certificate_required",
                         "this route requires a TLS client certificate");
        return -1;
    }
    int64_t limit = fg_request_body_limit(req);
    if (limit >= 0 && req->content_length > limit) {
        fg_request_error(req, 413, "payload_too_large", "request body too large");
        return -1;
    }
    return 0;
}

void fg_dispatch_run(fg_request_t *req)
{
    /* An errorPages route runs under the filter its failed request already has, if any. */
    if (req->route->compress_any && req->compress == NULL && req->worker->filter_response)
        req->worker->filter_response(req);
    switch (req->route->kind) {
    case FG_ROUTE_CLUSTER:
        fg_proxy_handle(req);
        break;
    case FG_ROUTE_STATIC:
        fg_static_handle(req);
        break;
    case FG_ROUTE_DIRECT:
        fg_direct_handle(req);
        break;
    case FG_ROUTE_REDIRECT:
        fg_redirect_handle(req);
        break;
    default:
        fg_request_error(req, 500, "internal_error", "unknown route kind");
        break;
    }
}

/* Fields an error page route must not see: the client's own X-Original-URI (the route must not
 * be told a forged one), and the conditionals and Range, which concern the resource that failed.
 * RFC 9110 13.2.1: preconditions are evaluated only where the answer would be 2xx, and an error
 * answer is not; RFC 9110 14.2: a server may ignore Range. */
static int page_drops(fg_str_t name)
{
    static const fg_str_t drop[] = {
        FG_STR_LIT("X-Original-URI"),     FG_STR_LIT("Range"),
        FG_STR_LIT("If-Range"),           FG_STR_LIT("If-Match"),
        FG_STR_LIT("If-None-Match"),      FG_STR_LIT("If-Modified-Since"),
        FG_STR_LIT("If-Unmodified-Since")};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (fg_str_ieq(name, drop[i]))
            return 1;
    return 0;
}

/* req's headers as an error page route sees them (page_drops), with X-Original-URI set to the
 * request target. Returns 0 or -1 without memory. */
static int page_headers(fg_request_t *req)
{
    fg_http_header_t *v = fg_pool_alloc(req->pool, (req->nheaders + 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        if (!page_drops(req->headers[i].name))
            v[n++] = req->headers[i];
    v[n] = (fg_http_header_t){0};
    v[n].name = FG_STR_LIT("X-Original-URI");
    v[n].value = req->target;
    req->headers = v;
    req->nheaders = n + 1;
    return 0;
}

void fg_dispatch_error_route(fg_request_t *req, const fg_route_t *route)
{
    if (page_headers(req) != 0) {
        fg_request_error(req, 500, "internal_error", "out of memory");
        return;
    }
    /* nginx's error_page: the internal redirect is a GET, a HEAD stays a HEAD (RFC 9110 9.3.2:
     * the same head, no body). */
    if (!fg_str_eq(req->method, FG_STR_LIT("HEAD")))
        req->method = FG_STR_LIT("GET");
    const char *path = route->match.path;
    if (path != NULL && strchr(path, '{') == NULL) {
        req->path = fg_str(path);
        req->query = FG_STR_LIT("");
    }
    req->ncaptures = 0;
    req->route = route;
    req->handler = NULL; /* the handler that raised the error is done with req */
    req->handler_data = NULL;
    req->termination = "error_page";
    fg_dispatch_run(req);
}
