#include "worker/request.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "common/json.h"
#include "common/log.h"
#include "worker/direct.h"
#include "worker/proxy.h"
#include "worker/router.h"
#include "worker/security.h"
#include "worker/static.h"
#include "worker/worker.h"

uint64_t fg_request_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const fg_http_header_t *fg_request_header(const fg_request_t *req, fg_str_t name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (fg_str_ieq(req->headers[i].name, name))
            return &req->headers[i];
    return NULL;
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

void fg_request_error(fg_request_t *req, int status, const char *error, const char *message)
{
    char esc_path[512], esc_msg[512];
    fg_str_t shown = req->path.base ? req->path : req->target;
    size_t pl = fg_json_escape(esc_path, sizeof(esc_path), shown.base, shown.len);
    size_t ml = fg_json_escape(esc_msg, sizeof(esc_msg), message, strlen(message));
    char body[1400];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":%d,\"error\":\"%s\",\"message\":\"%.*s\",\"requestId\":\"%s\","
                     "\"path\":\"%.*s\"}\n",
                     status, error, (int)ml, esc_msg, req->request_id, (int)pl, esc_path);
    if (n < 0 || n >= (int)sizeof(body))
        n = (int)strlen(body);
    req->error = error;
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 2);
    fg_headers_add(&h, FG_STR_LIT("Content-Type"), FG_STR_LIT("application/json"));
    if (req->request_id[0])
        fg_headers_add(&h, FG_STR_LIT("X-Request-Id"), fg_str(req->request_id));
    fg_request_respond(req, status, &h, body, (size_t)n);
}

int fg_request_route(fg_request_t *req)
{
    /* The tenant decides which tenant routes may match (worker/router.c). */
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

void fg_request_run(fg_request_t *req)
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
