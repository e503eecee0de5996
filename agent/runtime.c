/* See agent/runtime.h. */
#include "agent/runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "common/log.h"
#include "common/tls.h"
#include "shm/arena.h"
#include "tables/route_table.h"
#include "tables/security_table.h"
#include "worker/core/conn.h"
#include "worker/core/frontend.h"
#include "worker/http/dispatch.h"
#include "worker/http/http2.h"
#include "worker/http/relay.h"
#include "worker/http/request.h"
#include "worker/upstream/upstream.h"

/* The arena: the smallest the loader accepts, with the smallest zones. It is MAP_SHARED and
 * anonymous, so only the pages a zone touches count in the agent's memory. */
#define SHM_JSON                                                                                   \
    "{\"size\": \"1m\", \"rateLimitZone\": \"64k\", "                                              \
    "\"accessControlZone\": \"64k\", \"abnormalIpZone\": \"64k\"}"
/* A tunnel is idle between requests for as long as it likes: the gateway and the heartbeats
 * decide when it ends, never the HTTP/2 session's idle limits. */
#define FOREVER "3650d"
/* Idle keep-alive connections kept per local service. A burst of concurrent streams opens as
 * many connections; fewer idle slots than the streams in flight would close and reopen local
 * connections under steady load. An idle connection holds no buffers, about 1 KiB each. */
#define IDLE_CONNS 256
/* The gateway opens at most this many streams at once in one tunnel. */
#define MAX_STREAMS 1024
/* Each stream's receive window: the most a stream whose service is slow holds unread. The
 * connection's window reopens as bytes arrive (worker/http/http2.c), so what a tunnel holds
 * unread is bounded by MAX_STREAMS x STREAM_WINDOW (256 MiB), as on the gateway's side. */
#define STREAM_WINDOW "256k"

struct fg_agent_rt_s {
    fg_worker_t w; /* first: the session hook finds the runtime from the worker */
    fg_config_t *cfg;
    fg_shm_t *shm;
    fg_agent_session_fn on_session;
    void *arg;
};

static json_t *route_of(const fg_agent_service_t *s);

static const fg_frontend_t *const frontends[] = {&fg_http2_frontend, &fg_relay_frontend};

/* A tcp:// service takes only the gateway's CONNECT (RFC 9113 8.5), which the tunnel's HTTP/2
 * server turns into a switch to FG_TCP_PROTOCOL: its route relays that switch alone. An http
 * service's route relays WebSocket (the default), so a CONNECT for it is answered 501. */
static json_t *service_route(const fg_agent_service_t *s)
{
    json_t *r = route_of(s);
    if (r != NULL && strncmp(s->address, "tcp://", 6) == 0)
        json_object_set_new(r, "upgradeProtocols", json_pack("[s]", FG_TCP_PROTOCOL));
    return r;
}

static json_t *route_of(const fg_agent_service_t *s)
{
    return json_pack("{s:s+, s:{s:s, s:[{s:s, s:[s], s:b}]}, s:s, s:[{s:s}, {s:b}, {s:s}]}", "id",
                     "service-", s->name, "match", "path", "/{**any}", "headers", "name",
                     "fg-tunnel-service", "values", s->name, "isCaseSensitive", 1, "clusterId",
                     s->name, "transforms", "RequestHeaderRemove", "fg-tunnel-service",
                     "RequestHeaderOriginalHost", 1, "X-Forwarded", "Off");
}

/* The route of an http service's requests whose Host is the gateway's placeholder
 * (FG_TUNNEL_DEFAULT_AUTHORITY): without RequestHeaderOriginalHost, so the service gets its own
 * authority, the destination's (RFC 9110 7.2). Its host ranks it before the service's route. */
static json_t *default_host_route(const fg_agent_service_t *s)
{
    return json_pack("{s:s+, s:{s:s, s:[s], s:[{s:s, s:[s], s:b}]}, s:s, s:[{s:s}, {s:s}]}", "id",
                     "default-host-", s->name, "match", "path", "/{**any}", "hosts",
                     FG_TUNNEL_DEFAULT_AUTHORITY, "headers", "name", "fg-tunnel-service", "values",
                     s->name, "isCaseSensitive", 1, "clusterId", s->name, "transforms",
                     "RequestHeaderRemove", "fg-tunnel-service", "X-Forwarded", "Off");
}

static json_t *service_cluster(const fg_agent_service_t *s)
{
    json_t *cl = json_pack("{s:s, s:[{s:s, s:s}], s:{s:i, s:s}}", "id", s->name, "destinations",
                           "id", "local", "address", s->resolved ? s->resolved : s->address,
                           "keepAlive", "maxIdleConnections", IDLE_CONNS, "idleTimeout", "30s");
    if (cl != NULL && s->client != NULL)
        json_object_set(cl, "httpClient", s->client);
    /* A resolved name (agent/services.h): the destination keeps the name for its Host (when
     * the gateway's request has none) and its TLS name, as with the name in the address. */
    if (cl != NULL && s->resolved != NULL && strncmp(s->address, "tcp://", 6) != 0)
        json_object_set_new(json_array_get(json_object_get(cl, "destinations"), 0), "host",
                            json_string(s->authority));
    return cl;
}

char *fg_agent_rt_gateway_json(const fg_agent_config_t *cfg)
{
    json_error_t jerr;
    json_t *shm = json_loads(SHM_JSON, 0, &jerr);
    json_t *routes = json_array(), *clusters = json_array();
    /* The gateway applied its own limits to the client's request; the agent's are only as
     * tight as the worker's bounds need, so that nothing the gateway let through fails here. */
    json_t *root = json_pack(
        "{s:i, s:o, s:[{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:i, s:s}, s:{s:i, s:s, s:s}}], s:o, s:o}",
        "workers", 1, "shm", shm, "servers", "id", "tunnel", "listen", "127.0.0.1:1", "timeouts",
        "header", FOREVER, "keepAlive", FOREVER, "limits", "maxHeaderSize", "1m", "maxHeaders",
        1000, "maxRequestBodySize", "unlimited", "http2", "maxConcurrentStreams", MAX_STREAMS,
        "maxHeaderListSize", "1m", "initialWindowSize", STREAM_WINDOW, "routes", routes, "clusters",
        clusters);
    if (root == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->nservices; i++) {
        json_array_append_new(routes, service_route(&cfg->services[i]));
        if (strncmp(cfg->services[i].address, "tcp://", 6) != 0)
            json_array_append_new(routes, default_host_route(&cfg->services[i]));
        json_array_append_new(clusters, service_cluster(&cfg->services[i]));
    }
    /* Any other request (an unknown service, or none named): 502, as a proxy that cannot
     * reach what it was asked for (RFC 9110 15.6.3). Last by order whatever the others. */
    json_array_append_new(routes,
                          json_pack("{s:s, s:i, s:{s:s}, s:{s:i, s:{s:s}, s:s}}", "id",
                                    "unknown-service", "order", 1000000, "match", "path",
                                    "/{**any}", "direct", "status", 502, "headers", "Content-Type",
                                    "text/plain", "body", "unknown tunnel service\n"));
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

static void tls_warn(void *arg, const char *msg)
{
    (void)arg;
    fg_log_warn("%s", msg);
}

/* Load and compile the synthesized configuration, as the master does for a generation. */
static int compile(fg_agent_rt_t *rt, const fg_agent_config_t *acfg, int with_shm, char *err,
                   size_t errlen)
{
    char *json = fg_agent_rt_gateway_json(acfg);
    char why[1024], name[600];
    if (json == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Errors name the agent's file and the synthesized path (a service's httpClient). */
    snprintf(name, sizeof(name), "%s (services as a gateway configuration)", acfg->file);
    rt->cfg = fg_config_load_string(name, json, err, errlen);
    free(json);
    if (rt->cfg == NULL)
        return -1;
    rt->cfg->servers[0].accept_connect = 1; /* the gateway's CONNECT for a tcp:// service */
    if (fg_route_table_build(rt->cfg, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s: %s", name, why);
        return -1;
    }
    if (with_shm) {
        rt->shm = fg_shm_new(rt->cfg->shm_size);
        if (rt->shm == NULL) {
            snprintf(err, errlen, "shm: cannot map %zu bytes: %s", rt->cfg->shm_size,
                     strerror(errno));
            return -1;
        }
        fg_shm_set_generation(rt->shm, 1);
    }
    if (fg_security_table_build(rt->cfg, rt->shm, 1, err, errlen) < 0 ||
        fg_tls_build(rt->cfg, rt->shm, 1, tls_warn, NULL, err, errlen) < 0)
        return -1;
    /* No health zone (fg_health_attach): each cluster has one destination and no active
     * checks, and the balancer and the proxy run without shared health state, as in unit
     * tests. The zone would take 1.6 MB of the arena for nothing. */
    return 0;
}

static void session_hook(fg_worker_t *w, fg_session_t *s, int added)
{
    fg_agent_rt_t *rt = (fg_agent_rt_t *)w;
    if (rt->on_session)
        rt->on_session(rt->arg, rt, s, added);
}

fg_agent_rt_t *fg_agent_rt_new(struct event_base *base, const fg_agent_config_t *cfg,
                               fg_agent_session_fn on_session, void *arg, char *err, size_t errlen)
{
    fg_agent_rt_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (compile(rt, cfg, base != NULL, err, errlen) < 0) {
        fg_agent_rt_free(rt);
        return NULL;
    }
    if (base == NULL)
        return rt;
    fg_worker_t *w = &rt->w;
    w->base = base;
    w->cfg = rt->cfg;
    w->shm = rt->shm;
    w->pid = (int)getpid();
    w->generation = 1;
    w->error_route = fg_dispatch_error_route;
    w->session_hook = session_hook;
    rt->on_session = on_session;
    rt->arg = arg;
    w->scratch = evbuffer_new();
    w->upstreams = fg_upstream_pools_new(w);
    if (w->scratch == NULL || w->upstreams == NULL) {
        snprintf(err, errlen, "out of memory");
        fg_agent_rt_free(rt);
        return NULL;
    }
    return rt;
}

int fg_agent_rt_serve(fg_agent_rt_t *rt, fg_conn_t *c, const struct sockaddr_storage *peer)
{
    /* The gateway authenticated as we did, and resets a stream for each client that leaves. */
    if (fg_http2_adopt(&rt->w, &rt->cfg->servers[0], c, peer, FG_HTTP2_TRUSTED) != 0) {
        fg_conn_free(c);
        return -1;
    }
    return 0;
}

void fg_agent_rt_trim(fg_agent_rt_t *rt)
{
    if (rt != NULL && rt->w.base != NULL)
        fg_request_pools_free(&rt->w);
}

unsigned fg_agent_rt_sessions(const fg_agent_rt_t *rt)
{
    return (unsigned)rt->w.nconns;
}

void fg_agent_rt_free(fg_agent_rt_t *rt)
{
    if (rt == NULL)
        return;
    fg_worker_t *w = &rt->w;
    if (w->base != NULL) {
        /* Sessions closing now are not reported: the owner is going away. */
        rt->on_session = NULL;
        fg_frontend_close_all(w, frontends, sizeof(frontends) / sizeof(frontends[0]));
        fg_request_pools_free(w);
        fg_upstream_pools_free(w->upstreams);
        if (w->scratch)
            evbuffer_free(w->scratch);
    }
    if (rt->cfg != NULL) {
        fg_tls_free(rt->cfg);
        fg_security_table_free(rt->cfg);
        fg_route_table_free(rt->cfg);
        fg_config_free(rt->cfg);
    }
    if (rt->shm != NULL)
        fg_shm_free(rt->shm);
    free(rt);
}
