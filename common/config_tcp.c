/* Configuration loader: tcp servers (docs/config.md "tcp"). A tcp server relays each accepted
 * connection's bytes to a destination of its cluster (worker/stream/tcp_proxy.h); it speaks no
 * HTTP, so the keys that configure HTTP termination do not combine with it, no route is
 * attached to it, and its cluster's destinations are raw: tcp:// or tunnel:// (a stream of the
 * agent's tunnel to a tcp service). */
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/config_impl.h"

int fg_config_load_server_tcp(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const keys[] = {"clusterId",
                                       "idleTimeout",
                                       "connectTimeout",
                                       "maxConnections",
                                       "maxConnectionsPerClient",
                                       "sendProxyProtocol",
                                       NULL};
    json_t *o = NULL;
    int rc = fg_config_get_object(c, srv, "tcp", keys, &o);
    if (rc <= 0)
        return rc;
    /* What a tcp server cannot do: it never terminates TLS or speaks HTTP to its client. */
    const char *clash = s->tls                  ? "tls"
                        : s->accept_tunnels     ? "acceptTunnels"
                        : s->redirect.enabled   ? "redirectHttps"
                        : s->http2.h2c          ? "http2"
                        : s->max_websockets > 0 ? "maxWebSockets"
                                                : NULL;
    if (clash)
        return fg_config_fail(c, clash,
                              "not for a tcp server (it relays bytes and speaks no HTTP)");
    if (s->max_connections > 0 || s->max_per_client > 0)
        return fg_config_fail(c, "limits",
                              "maxConnections and maxConnectionsPerClient of a tcp server are "
                              "tcp.maxConnections and tcp.maxConnectionsPerClient");
    fg_tcp_server_config_t *t = &s->tcp;
    t->enabled = 1;
    t->idle_timeout_ms = 3600 * 1000;
    t->connect_timeout_ms = 5 * 1000;
    long long maxc = FG_TCP_MAX_CONNECTIONS, perc = FG_TCP_MAX_PER_CLIENT, send = 0;
    size_t mark = fg_config_push_key(c, "tcp");
    rc = -1;
    if (fg_config_require_string(c, o, "clusterId", &t->cluster_id) < 0 ||
        fg_config_get_duration(c, o, "idleTimeout", &t->idle_timeout_ms) < 0 ||
        fg_config_get_duration(c, o, "connectTimeout", &t->connect_timeout_ms) < 0 ||
        fg_config_get_int(c, o, "maxConnections", 0, FG_MAX_CONN_CAP, &maxc) < 0 ||
        fg_config_get_int(c, o, "maxConnectionsPerClient", 0, FG_MAX_CONN_CAP, &perc) < 0 ||
        fg_config_get_int(c, o, "sendProxyProtocol", 0, 2, &send) < 0)
        goto out;
    if (t->connect_timeout_ms == 0) {
        fg_config_fail(c, "connectTimeout", "must be greater than 0");
        goto out;
    }
    if (maxc > 0 && perc > maxc) {
        fg_config_fail(c, "maxConnectionsPerClient",
                       "%lld is more than maxConnections (%lld): it could never apply", perc, maxc);
        goto out;
    }
    t->max_connections = (unsigned)maxc;
    t->max_per_client = (unsigned)perc;
    t->send_proxy_protocol = (int)send;
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

static int has_tcp_destinations(const fg_cluster_t *cl)
{
    for (size_t i = 0; i < cl->ndestinations; i++)
        if (cl->destinations[i].tcp)
            return 1;
    return 0;
}

/* clusters[ci] carries raw bytes, for tcp server server_id (NULL: as a cluster with tcp://
 * destinations): it has no active probes (they speak HTTP) and every destination is tcp:// or
 * tunnel://. Returns 0, or -1 with the error under clusters[ci] (naming server_id if given). */
static int check_raw_cluster(fg_config_ctx_t *c, size_t ci, const char *server_id)
{
    const fg_cluster_t *cl = &c->cfg->clusters[ci];
    size_t mark = fg_config_push_key(c, "clusters");
    fg_config_push_index(c, ci);
    if (cl->health.active && server_id)
        return fg_config_fail(c, "healthCheck.active",
                              "not for the cluster of tcp server \"%s\" (probes speak HTTP)",
                              server_id);
    if (cl->health.active)
        return fg_config_fail(c, "healthCheck.active",
                              "not for a cluster with tcp:// destinations (probes speak HTTP)");
    for (size_t i = 0; i < cl->ndestinations; i++) {
        const fg_destination_t *d = &cl->destinations[i];
        if (d->tcp || d->tunnel)
            continue;
        fg_config_push_key(c, "destinations");
        fg_config_push_index(c, i);
        if (server_id)
            return fg_config_fail(c, "address",
                                  "\"%s\" cannot serve tcp server \"%s\" (tcp://HOST:PORT or "
                                  "tunnel://AGENT/SERVICE)",
                                  d->address, server_id);
        return fg_config_fail(c, "address",
                              "\"%s\" speaks HTTP: it cannot share a cluster with tcp:// "
                              "destinations, which take raw bytes",
                              d->address);
    }
    fg_config_pop(c, mark);
    return 0;
}

/* servers[si]'s cluster: it exists and carries raw bytes (check_raw_cluster). */
static int link_server(fg_config_ctx_t *c, size_t si)
{
    fg_config_t *cfg = c->cfg;
    fg_server_t *s = &cfg->servers[si];
    size_t mark = fg_config_push_key(c, "servers");
    fg_config_push_index(c, si);
    fg_config_push_key(c, "tcp");
    const fg_cluster_t *cl = fg_config_find_cluster(cfg, s->tcp.cluster_id);
    if (cl == NULL)
        return fg_config_fail(c, "clusterId", "unknown cluster \"%s\"", s->tcp.cluster_id);
    fg_config_pop(c, mark);
    s->tcp.cluster = cl;
    return check_raw_cluster(c, (size_t)(cl - cfg->clusters), s->id);
}

/* routes[ri]: never bound to a tcp server by name; to a cluster with tcp:// destinations only
 * as a relay of the "tcp" switch (anything else would send HTTP to a raw socket). */
static int link_route(fg_config_ctx_t *c, size_t ri)
{
    fg_config_t *cfg = c->cfg;
    const fg_route_t *r = &cfg->routes[ri];
    size_t mark = fg_config_push_key(c, "routes");
    fg_config_push_index(c, ri);
    for (size_t i = 0; i < r->nserver_ids; i++)
        for (size_t j = 0; j < cfg->nservers; j++)
            if (cfg->servers[j].tcp.enabled && strcmp(cfg->servers[j].id, r->server_ids[i]) == 0)
                return fg_config_fail(c, "servers",
                                      "\"%s\" is a tcp server: it relays bytes and takes no routes",
                                      r->server_ids[i]);
    if (r->kind == FG_ROUTE_CLUSTER && r->cluster && has_tcp_destinations(r->cluster) &&
        (r->nupgrade_protocols != 1 || strcasecmp(r->upgrade_protocols[0], FG_TCP_PROTOCOL) != 0))
        return fg_config_fail(c, "clusterId",
                              "cluster \"%s\" has tcp:// destinations: a route to it must relay "
                              "\"upgradeProtocols\": [\"" FG_TCP_PROTOCOL "\"] alone",
                              r->cluster_id);
    fg_config_pop(c, mark);
    return 0;
}

/* clusters[ci] with tcp:// destinations: raw bytes only, so no destination of it speaks HTTP
 * (a request could reach one through the route's "tcp" switch, or the switch an HTTP one) and
 * no active probe goes to it. Marks it (cl->tcp) for the proxy, which sends it only the
 * switch. */
static int link_cluster(fg_config_ctx_t *c, size_t ci)
{
    if (check_raw_cluster(c, ci, NULL) < 0)
        return -1;
    c->cfg->clusters[ci].tcp = 1;
    return 0;
}

int fg_config_link_tcp(fg_config_ctx_t *c)
{
    fg_config_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->nservers; i++)
        if (cfg->servers[i].tcp.enabled && link_server(c, i) < 0)
            return -1;
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (has_tcp_destinations(&cfg->clusters[i]) && link_cluster(c, i) < 0)
            return -1;
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (link_route(c, i) < 0)
            return -1;
    return 0;
}
