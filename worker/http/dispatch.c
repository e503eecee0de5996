#include "worker/http/dispatch.h"

#include "worker/admission/security.h"
#include "worker/core/context.h"
#include "worker/handlers/direct.h"
#include "worker/handlers/proxy.h"
#include "worker/handlers/static.h"
#include "worker/http/router.h"

int fg_dispatch_route(fg_request_t *req)
{
    /* The tenant decides which tenant routes may match (worker/http/router.c). */
    const fg_config_t *cfg = req->worker ? req->worker->cfg : NULL;
    const fg_http_header_t *th =
        cfg && cfg->tenant_header ? fg_request_header(req, fg_str(cfg->tenant_header)) : NULL;
    req->tenant = th ? th->value : FG_STR_NULL;
    int asterisk = req->path.len == 1 && req->path.base[0] == '*';
    req->route = asterisk ? NULL : fg_router_match(req->server, req);
    /* Access control and rate limits first: a refused client learns nothing about routes. */
    if (fg_security_check(req) != 0)
        return -1;
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
        fg_request_error(req, 404, "not_found", "no route matches the request");
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
