#include "master/metrics_view.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/x509.h>

#include "common/tls.h"

#include "shm/health.h"
#include "shm/metrics.h"
#include "tables/security_table.h"

typedef struct {
    uint64_t v[FG_METRICS_FIELDS];
} vals_t;

/* One destination's shared state next to its counters. */
typedef struct {
    vals_t m;
    int64_t inflight;
    int up;    /* usable by the balancers (health and admin state) */
    int admin; /* fg_admin_state_t */
} dest_t;

struct fg_metrics_snap_s {
    const fg_config_t *cfg;
    fg_metrics_process_t proc;
    int have_metrics;
    vals_t *servers, *routes, *clusters;
    int64_t *server_open;  /* per server: open connections under maxConnections, -1 = no cap */
    vals_t *cluster_dests; /* per cluster: the sum of its destinations */
    int64_t *cluster_inflight;
    size_t *cluster_up;
    dest_t **dests; /* per cluster, per destination */
    uint64_t connections;
    int64_t gauge[FG_MG_COUNT];
    uint64_t gauge_total[FG_MG_COUNT];
};

static const char *const class_names[FG_MC_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
static const char *const admin_names[] = {"ready", "drain", "maint"};

/* ---- the snapshot ---- */

static void read_dest(dest_t *d, const fg_destination_t *cd, const fg_cluster_t *c, uint64_t now_ms)
{
    fg_metrics_read(cd->metrics, d->m.v);
    const fg_hdest_t *h = cd->state;
    if (h == NULL) {
        d->up = cd->enabled;
        return;
    }
    d->inflight = fg_health_inflight(h);
    d->admin = fg_health_admin(h) % 3;
    d->up = cd->enabled && d->admin == FG_ADMIN_READY && fg_health_usable(h, &c->health, now_ms);
}

static int read_clusters(fg_metrics_snap_t *s, uint64_t now_ms)
{
    const fg_config_t *cfg = s->cfg;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const fg_cluster_t *c = &cfg->clusters[i];
        fg_metrics_read(c->metrics, s->clusters[i].v);
        s->dests[i] = calloc(c->ndestinations + 1, sizeof(dest_t));
        if (s->dests[i] == NULL)
            return -1;
        for (size_t j = 0; j < c->ndestinations; j++) {
            dest_t *d = &s->dests[i][j];
            read_dest(d, &c->destinations[j], c, now_ms);
            for (int f = 0; f < FG_METRICS_FIELDS; f++)
                s->cluster_dests[i].v[f] += d->m.v[f];
            s->cluster_inflight[i] += d->inflight;
            s->cluster_up[i] += (size_t)d->up;
        }
    }
    return 0;
}

/* Open connections of the servers with a maxConnections (HTTP "limits" or "tcp"). */
static void read_server_open(fg_metrics_snap_t *s, fg_shm_t *shm)
{
    const fg_metrics_t *mt = shm ? fg_metrics_zone(shm) : NULL;
    for (size_t i = 0; i < s->cfg->nservers; i++) {
        const fg_server_t *srv = &s->cfg->servers[i];
        uint64_t open = 0;
        s->server_open[i] = -1;
        if (srv->max_connections == 0 && !(srv->tcp.enabled && srv->tcp.max_connections > 0))
            continue;
        fg_metrics_place_open(mt, srv->metrics, FG_MP_CONNECTIONS, &open);
        s->server_open[i] = (int64_t)open;
    }
}

static void read_process(fg_metrics_snap_t *s, fg_shm_t *shm)
{
    for (int i = 0; i < FG_SHM_MAX_WORKERS; i++) {
        const fg_shm_worker_t *w = fg_shm_worker(shm, i);
        if (__atomic_load_n(&w->state, __ATOMIC_ACQUIRE) != FG_WORKER_FREE)
            s->connections += __atomic_load_n(&w->connections, __ATOMIC_RELAXED);
    }
    const fg_metrics_t *mt = fg_metrics_zone(shm);
    s->have_metrics = mt != NULL;
    for (int g = 0; mt && g < FG_MG_COUNT; g++) {
        s->gauge[g] = fg_metrics_gauge(mt, (fg_metrics_gauge_t)g);
        s->gauge_total[g] = fg_metrics_gauge_total(mt, (fg_metrics_gauge_t)g);
    }
}

fg_metrics_snap_t *fg_metrics_snap_new(const fg_config_t *cfg, fg_shm_t *shm,
                                       const fg_metrics_process_t *proc, uint64_t now_ms)
{
    fg_metrics_snap_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cfg = cfg;
    s->proc = *proc;
    size_t nc = cfg->nclusters + 1;
    s->servers = calloc(cfg->nservers + 1, sizeof(vals_t));
    s->server_open = calloc(cfg->nservers + 1, sizeof(int64_t));
    s->routes = calloc(cfg->nroutes + 1, sizeof(vals_t));
    s->clusters = calloc(nc, sizeof(vals_t));
    s->cluster_dests = calloc(nc, sizeof(vals_t));
    s->cluster_inflight = calloc(nc, sizeof(int64_t));
    s->cluster_up = calloc(nc, sizeof(size_t));
    s->dests = calloc(nc, sizeof(dest_t *));
    if (!s->servers || !s->server_open || !s->routes || !s->clusters || !s->cluster_dests ||
        !s->cluster_inflight || !s->cluster_up || !s->dests)
        goto fail;
    for (size_t i = 0; i < cfg->nservers; i++)
        fg_metrics_read(cfg->servers[i].metrics, s->servers[i].v);
    read_server_open(s, shm);
    for (size_t i = 0; i < cfg->nroutes; i++)
        fg_metrics_read(cfg->routes[i].metrics, s->routes[i].v);
    if (read_clusters(s, now_ms) < 0)
        goto fail;
    read_process(s, shm);
    return s;
fail:
    fg_metrics_snap_free(s);
    return NULL;
}

void fg_metrics_snap_free(fg_metrics_snap_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->dests && i < s->cfg->nclusters; i++)
        free(s->dests[i]);
    free(s->dests);
    free(s->cluster_up);
    free(s->cluster_inflight);
    free(s->cluster_dests);
    free(s->clusters);
    free(s->routes);
    free(s->servers);
    free(s->server_open);
    free(s);
}

/* ---- Prometheus text exposition 0.0.4 ---- */

/* The output: an evbuffer and whether any append failed. */
typedef struct {
    struct evbuffer *b;
    int failed;
} out_t;

static void put(out_t *o, const char *s)
{
    o->failed |= evbuffer_add(o->b, s, strlen(s)) != 0;
}

static void putf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    o->failed |= evbuffer_add_vprintf(o->b, fmt, ap) < 0;
    va_end(ap);
}

/* A label value: backslash, double quote and line feed escaped (exposition format). */
static void label_value(out_t *o, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            putf(o, "\\%c", *p);
        else if (*p == '\n')
            put(o, "\\n");
        else
            o->failed |= evbuffer_add(o->b, p, 1) != 0;
    }
}

static void family(out_t *o, const char *name, const char *type, const char *help)
{
    putf(o, "# HELP fastgateway_%s %s\n# TYPE fastgateway_%s %s\n", name, help, name, type);
}

/* Labels: `keys` names them, comma-separated ("cluster,destination"); vals their values. */
static void labels(out_t *o, const char *keys, const char *const *vals, const char *extra)
{
    put(o, "{");
    int first = 1;
    for (const char *k = keys; k && *k; vals++) {
        const char *end = strchr(k, ',');
        size_t n = end ? (size_t)(end - k) : strlen(k);
        putf(o, "%s%.*s=\"", first ? "" : ",", (int)n, k);
        label_value(o, *vals);
        put(o, "\"");
        first = 0;
        k = end ? end + 1 : k + n;
    }
    if (extra)
        putf(o, "%s%s", first ? "" : ",", extra);
    put(o, "}");
}

static void sample(out_t *o, const char *name, const char *keys, const char *const *vals,
                   const char *extra, uint64_t v)
{
    putf(o, "fastgateway_%s", name);
    if (keys || extra)
        labels(o, keys, vals, extra);
    putf(o, " %llu\n", (unsigned long long)v);
}

static void by_class(out_t *o, const char *name, const char *keys, const char *const *vals,
                     const uint64_t *c)
{
    for (int k = 0; k < FG_MC_CLASSES; k++) {
        char extra[32];
        snprintf(extra, sizeof(extra), "code=\"%s\"", class_names[k]);
        sample(o, name, keys, vals, extra, c[k]);
    }
}

/* A histogram from per-bucket counts b[FG_METRICS_BUCKETS] and a sum in microseconds. */
static void histogram(out_t *o, const char *name, const char *keys, const char *const *vals,
                      const uint64_t *b, uint64_t sum_us)
{
    uint64_t cum = 0;
    char bucket[96], extra[48];
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    for (int i = 0; i < FG_METRICS_BUCKETS; i++) {
        cum += b[i];
        if (i < FG_METRICS_BUCKETS - 1)
            snprintf(extra, sizeof(extra), "le=\"%g\"", fg_metrics_bucket_bounds_us[i] / 1e6);
        else
            snprintf(extra, sizeof(extra), "le=\"+Inf\"");
        sample(o, bucket, keys, vals, extra, cum);
    }
    putf(o, "fastgateway_%s_sum", name);
    labels(o, keys, vals, NULL);
    putf(o, " %.6f\n", sum_us / 1e6);
    char count[96];
    snprintf(count, sizeof(count), "%s_count", name);
    sample(o, count, keys, vals, NULL, cum);
}

static void prom_process(out_t *o, const fg_metrics_snap_t *s)
{
    const fg_metrics_process_t *p = &s->proc;
    family(o, "process_workers", "gauge", "Worker processes alive, retiring ones included.");
    sample(o, "process_workers", NULL, NULL, NULL, (uint64_t)p->workers);
    family(o, "process_generation", "gauge", "Configuration generation serving.");
    sample(o, "process_generation", NULL, NULL, NULL, p->generation);
    family(o, "process_start_time_seconds", "gauge", "Master start time, Unix seconds.");
    sample(o, "process_start_time_seconds", NULL, NULL, NULL, (uint64_t)p->start_time);
    family(o, "process_reloads_total", "counter", "Reloads that put a new generation in place.");
    sample(o, "process_reloads_total", NULL, NULL, NULL, p->reloads);
    family(o, "process_reload_failures_total", "counter", "Reloads refused or failed.");
    sample(o, "process_reload_failures_total", NULL, NULL, NULL, p->reload_failures);
    family(o, "process_last_reload_success", "gauge",
           "1 when the last reload succeeded, 0 when it failed or none was made.");
    sample(o, "process_last_reload_success", NULL, NULL, NULL, p->last_reload_result == 1);
    family(o, "process_last_reload_timestamp_seconds", "gauge",
           "Time of the last reload, Unix seconds (0 = none).");
    sample(o, "process_last_reload_timestamp_seconds", NULL, NULL, NULL,
           (uint64_t)p->last_reload_time);
}

static void prom_conns(out_t *o, const fg_metrics_snap_t *s)
{
    static const char *const names[FG_MG_COUNT][3] = {
        {"http2_streams", "http2_streams_total", "HTTP/2 streams"},
        {"websockets", "websockets_total", "WebSocket connections"},
        {"tunnel_agents", "tunnel_agents_total", "tunnel agent connections"},
        {"tunnel_streams", "tunnel_streams_total", "streams carried by tunnels"},
        {"tcp_connections", "tcp_connections_total", "connections of tcp servers"},
    };
    family(o, "connections", "gauge", "Client connections open.");
    sample(o, "connections", NULL, NULL, NULL, s->connections);
    for (int g = 0; g < FG_MG_COUNT; g++) {
        char help[96];
        snprintf(help, sizeof(help), "Open %s.", names[g][2]);
        family(o, names[g][0], "gauge", help);
        sample(o, names[g][0], NULL, NULL, NULL, (uint64_t)s->gauge[g]);
        snprintf(help, sizeof(help), "Total %s opened.", names[g][2]);
        family(o, names[g][1], "counter", help);
        sample(o, names[g][1], NULL, NULL, NULL, s->gauge_total[g]);
    }
}

/* One counter family over the servers, from field f. */
static void prom_server_field(out_t *o, const fg_metrics_snap_t *s, const char *name,
                              const char *help, int f)
{
    family(o, name, "counter", help);
    for (size_t i = 0; i < s->cfg->nservers; i++)
        sample(o, name, "server", (const char *const[]){s->cfg->servers[i].id}, NULL,
               s->servers[i].v[f]);
}

static void prom_servers(out_t *o, const fg_metrics_snap_t *s)
{
    prom_server_field(o, s, "server_connections_total", "Client connections accepted.",
                      FG_MS_CONNECTIONS);
    family(o, "server_requests_total", "counter", "Requests answered, by status class.");
    for (size_t i = 0; i < s->cfg->nservers; i++)
        by_class(o, "server_requests_total", "server", (const char *const[]){s->cfg->servers[i].id},
                 &s->servers[i].v[FG_MS_REQUESTS]);
    prom_server_field(o, s, "server_received_bytes_total",
                      "Request bytes received (head and body).", FG_MS_BYTES_IN);
    prom_server_field(o, s, "server_sent_bytes_total", "Response body bytes sent.",
                      FG_MS_BYTES_OUT);
    prom_server_field(o, s, "server_tls_handshakes_total", "TLS handshakes completed.",
                      FG_MS_TLS_HANDSHAKES);
    prom_server_field(o, s, "server_tls_handshake_failures_total",
                      "TLS handshakes failed or timed out.", FG_MS_TLS_FAILURES);
    prom_server_field(o, s, "server_tls_resumed_handshakes_total",
                      "TLS handshakes completed by session resumption.", FG_MS_TLS_RESUMED);
    family(o, "server_connections_refused_total", "counter",
           "Connections closed at accept by limits.maxConnections (reason=\"server\"), "
           "limits.maxConnectionsPerClient (reason=\"client\"), or for want of a valid PROXY "
           "protocol header (reason=\"proxy_protocol\").");
    for (size_t i = 0; i < s->cfg->nservers; i++) {
        const char *const id[] = {s->cfg->servers[i].id};
        sample(o, "server_connections_refused_total", "server", id, "reason=\"server\"",
               s->servers[i].v[FG_MS_REFUSED_SERVER]);
        sample(o, "server_connections_refused_total", "server", id, "reason=\"client\"",
               s->servers[i].v[FG_MS_REFUSED_CLIENT]);
        if (s->cfg->servers[i].proxy_protocol.enabled)
            sample(o, "server_connections_refused_total", "server", id, "reason=\"proxy_protocol\"",
                   s->servers[i].v[FG_MS_REFUSED_PROXY]);
    }
    family(o, "server_connections_open", "gauge",
           "Open connections counted against maxConnections, all workers (servers with one).");
    for (size_t i = 0; i < s->cfg->nservers; i++)
        if (s->server_open[i] >= 0)
            sample(o, "server_connections_open", "server",
                   (const char *const[]){s->cfg->servers[i].id}, NULL, (uint64_t)s->server_open[i]);
}

static void prom_routes(out_t *o, const fg_metrics_snap_t *s)
{
    family(o, "route_requests_total", "counter", "Requests answered by a route, by status class.");
    for (size_t i = 0; i < s->cfg->nroutes; i++)
        by_class(o, "route_requests_total", "route", (const char *const[]){s->cfg->routes[i].id},
                 &s->routes[i].v[FG_MR_REQUESTS]);
    family(o, "route_request_duration_seconds", "histogram",
           "Time from the request head to the end of the response.");
    for (size_t i = 0; i < s->cfg->nroutes; i++)
        histogram(o, "route_request_duration_seconds", "route",
                  (const char *const[]){s->cfg->routes[i].id}, &s->routes[i].v[FG_MR_LATENCY],
                  s->routes[i].v[FG_MR_LATENCY_SUM]);
}

/* The same counter for clusters (sum of destinations) and for destinations. */
static void prom_upstream_field(out_t *o, const fg_metrics_snap_t *s, const char *what,
                                const char *help, int f)
{
    char name[96];
    snprintf(name, sizeof(name), "cluster_%s", what);
    family(o, name, "counter", help);
    for (size_t i = 0; i < s->cfg->nclusters; i++)
        sample(o, name, "cluster", (const char *const[]){s->cfg->clusters[i].id}, NULL,
               s->cluster_dests[i].v[f]);
    snprintf(name, sizeof(name), "destination_%s", what);
    family(o, name, "counter", help);
    for (size_t i = 0; i < s->cfg->nclusters; i++) {
        const fg_cluster_t *c = &s->cfg->clusters[i];
        for (size_t j = 0; j < c->ndestinations; j++)
            sample(o, name, "cluster,destination",
                   (const char *const[]){c->id, c->destinations[j].id}, NULL,
                   s->dests[i][j].m.v[f]);
    }
}

static void prom_upstream_hist(out_t *o, const fg_metrics_snap_t *s, const char *what,
                               const char *help, int f, int fsum)
{
    char name[96];
    snprintf(name, sizeof(name), "cluster_%s", what);
    family(o, name, "histogram", help);
    for (size_t i = 0; i < s->cfg->nclusters; i++)
        histogram(o, name, "cluster", (const char *const[]){s->cfg->clusters[i].id},
                  &s->cluster_dests[i].v[f], s->cluster_dests[i].v[fsum]);
    snprintf(name, sizeof(name), "destination_%s", what);
    family(o, name, "histogram", help);
    for (size_t i = 0; i < s->cfg->nclusters; i++) {
        const fg_cluster_t *c = &s->cfg->clusters[i];
        for (size_t j = 0; j < c->ndestinations; j++)
            histogram(o, name, "cluster,destination",
                      (const char *const[]){c->id, c->destinations[j].id}, &s->dests[i][j].m.v[f],
                      s->dests[i][j].m.v[fsum]);
    }
}

static void prom_cluster_state(out_t *o, const fg_metrics_snap_t *s)
{
    family(o, "cluster_retries_total", "counter",
           "Attempts after a request's first (new connection or failover).");
    for (size_t i = 0; i < s->cfg->nclusters; i++)
        sample(o, "cluster_retries_total", "cluster", (const char *const[]){s->cfg->clusters[i].id},
               NULL, s->clusters[i].v[FG_MCL_RETRIES]);
    family(o, "cluster_requests_in_flight", "gauge", "Requests at the cluster's destinations now.");
    for (size_t i = 0; i < s->cfg->nclusters; i++)
        sample(o, "cluster_requests_in_flight", "cluster",
               (const char *const[]){s->cfg->clusters[i].id}, NULL,
               (uint64_t)(s->cluster_inflight[i] < 0 ? 0 : s->cluster_inflight[i]));
    family(o, "cluster_destinations_up", "gauge", "Destinations the balancers may choose.");
    for (size_t i = 0; i < s->cfg->nclusters; i++)
        sample(o, "cluster_destinations_up", "cluster",
               (const char *const[]){s->cfg->clusters[i].id}, NULL, s->cluster_up[i]);
}

static void prom_dest_state(out_t *o, const fg_metrics_snap_t *s)
{
    family(o, "destination_requests_in_flight", "gauge", "Requests at the destination now.");
    for (size_t i = 0; i < s->cfg->nclusters; i++) {
        const fg_cluster_t *c = &s->cfg->clusters[i];
        for (size_t j = 0; j < c->ndestinations; j++)
            sample(o, "destination_requests_in_flight", "cluster,destination",
                   (const char *const[]){c->id, c->destinations[j].id}, NULL,
                   (uint64_t)s->dests[i][j].inflight);
    }
    family(o, "destination_up", "gauge",
           "1 when enabled, healthy (or unknown) and in the ready admin state.");
    family(o, "destination_admin_state", "gauge", "1 for the destination's admin state.");
    for (size_t i = 0; i < s->cfg->nclusters; i++) {
        const fg_cluster_t *c = &s->cfg->clusters[i];
        for (size_t j = 0; j < c->ndestinations; j++) {
            const char *const v[] = {c->id, c->destinations[j].id};
            sample(o, "destination_up", "cluster,destination", v, NULL,
                   (uint64_t)s->dests[i][j].up);
            for (int a = 0; a < 3; a++) {
                char extra[32];
                snprintf(extra, sizeof(extra), "state=\"%s\"", admin_names[a]);
                sample(o, "destination_admin_state", "cluster,destination", v, extra,
                       s->dests[i][j].admin == a);
            }
        }
    }
}

static void prom_security(out_t *o, const fg_metrics_snap_t *s)
{
    const fg_security_table_t *t = s->cfg->security_compiled;
    static const struct {
        const char *name, *help;
        int counter;
    } rl[] =
        {
            {"ratelimit_allowed_total", "Requests a rate limit let through.", FG_RLC_ALLOWED},
            {"ratelimit_limited_total", "Requests a rate limit refused (429).", FG_RLC_LIMITED},
            {"ratelimit_dry_run_limited_total", "Requests a dry-run rate limit would have refused.",
             FG_RLC_DRYRUN},
        },
      acl[] = {
          {"acl_checks_total", "Requests checked against an access-control list.", FG_ACLC_CHECKS},
          {"acl_hits_total", "Requests whose address an access-control list holds.", FG_ACLC_HITS},
          {"acl_denied_total", "Requests an access-control list refused (403).", FG_ACLC_DENIED},
      };
    for (size_t k = 0; k < sizeof(rl) / sizeof(rl[0]); k++) {
        family(o, rl[k].name, "counter", rl[k].help);
        for (size_t i = 0; t && i < t->nrules; i++)
            sample(o, rl[k].name, "ratelimit", (const char *const[]){t->rules[i].cfg->id}, NULL,
                   fg_stats_get(t->rules[i].stats, rl[k].counter));
    }
    for (size_t k = 0; k < sizeof(acl) / sizeof(acl[0]); k++) {
        family(o, acl[k].name, "counter", acl[k].help);
        for (size_t i = 0; t && i <= t->nacls; i++)
            sample(o, acl[k].name, "acl", (const char *const[]){t->acls[i].id}, NULL,
                   fg_stats_get(t->acls[i].stats, acl[k].counter));
    }
}

/* When each certificate served expires, for alerts ahead of it (an ACME renewal that keeps
 * failing, a file nobody replaced). */
static void prom_certificates(out_t *o, const fg_metrics_snap_t *s)
{
    const fg_config_t *cfg = s->cfg;
    if (cfg->ncertificates == 0)
        return;
    family(o, "certificate_expiry_timestamp_seconds", "gauge",
           "When the certificate served expires (its notAfter), in Unix time.");
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        X509 *leaf;
        EVP_PKEY *key;
        STACK_OF(X509) * chain;
        struct tm tm;
        if (fg_tls_cert_pair(cfg, i, &leaf, &key, &chain) != 0 ||
            ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) != 1)
            continue;
        time_t t = timegm(&tm);
        sample(o, "certificate_expiry_timestamp_seconds", "certificate",
               (const char *const[]){cfg->certificates[i].id}, NULL, t > 0 ? (uint64_t)t : 0);
    }
}

int fg_metrics_view_prometheus(const fg_metrics_snap_t *s, struct evbuffer *out)
{
    out_t o = {out, 0};
    prom_process(&o, s);
    prom_conns(&o, s);
    prom_servers(&o, s);
    prom_routes(&o, s);
    prom_upstream_field(&o, s, "requests_total", "Attempts sent to destinations.", FG_MD_REQUESTS);
    prom_upstream_field(&o, s, "failures_total",
                        "Attempts that failed in transport (refused, reset, timed out).",
                        FG_MD_FAILURES);
    prom_cluster_state(&o, s);
    prom_dest_state(&o, s);
    prom_upstream_hist(&o, s, "connect_duration_seconds",
                       "Time to connect to a destination (new connections only).", FG_MD_CONNECT,
                       FG_MD_CONNECT_SUM);
    prom_upstream_hist(&o, s, "response_duration_seconds",
                       "Time from the request sent to the destination's response head.",
                       FG_MD_RESPONSE, FG_MD_RESPONSE_SUM);
    prom_security(&o, s);
    prom_certificates(&o, s);
    return o.failed ? -1 : 0;
}

/* ---- HAProxy-like CSV ---- */

static uint64_t hist_count(const uint64_t *b)
{
    uint64_t n = 0;
    for (int i = 0; i < FG_METRICS_BUCKETS; i++)
        n += b[i];
    return n;
}

/* Average in milliseconds of a histogram sum (microseconds) over its count. */
static uint64_t avg_ms(uint64_t sum_us, uint64_t n)
{
    return n ? sum_us / n / 1000 : 0;
}

static void csv_field(out_t *o, const char *v)
{
    /* ids never hold a comma or a quote in practice; quote them when they do (RFC 4180) */
    if (strpbrk(v, ",\"\n") == NULL) {
        put(o, v);
        return;
    }
    put(o, "\"");
    for (const char *p = v; *p; p++)
        put(o, *p == '"' ? "\"\"" : (char[]){*p, 0});
    put(o, "\"");
}

/* One line: type, cluster, id, then the counters (0 where a type has none). */
static void csv_line(out_t *o, const char *type, const char *cluster, const char *id,
                     const uint64_t *cls, const uint64_t *n)
{
    put(o, type);
    put(o, ",");
    csv_field(o, cluster);
    put(o, ",");
    csv_field(o, id);
    for (int k = 0; k < FG_MC_CLASSES; k++)
        putf(o, ",%llu", (unsigned long long)(cls ? cls[k] : 0));
    for (int k = 0; k < 10; k++)
        putf(o, ",%llu", (unsigned long long)n[k]);
    put(o, "\n");
}

static void csv_upstreams(out_t *o, const fg_metrics_snap_t *s)
{
    for (size_t i = 0; i < s->cfg->nclusters; i++) {
        const fg_cluster_t *c = &s->cfg->clusters[i];
        const uint64_t *d = s->cluster_dests[i].v;
        uint64_t nr = hist_count(&d[FG_MD_RESPONSE]), nc = hist_count(&d[FG_MD_CONNECT]);
        uint64_t n[10] = {0,
                          d[FG_MD_REQUESTS],
                          0,
                          0,
                          d[FG_MD_FAILURES],
                          s->clusters[i].v[FG_MCL_RETRIES],
                          (uint64_t)(s->cluster_inflight[i] < 0 ? 0 : s->cluster_inflight[i]),
                          s->cluster_up[i],
                          avg_ms(d[FG_MD_CONNECT_SUM], nc),
                          avg_ms(d[FG_MD_RESPONSE_SUM], nr)};
        csv_line(o, "cluster", c->id, "", NULL, n);
        for (size_t j = 0; j < c->ndestinations; j++) {
            const dest_t *x = &s->dests[i][j];
            const uint64_t *v = x->m.v;
            uint64_t m[10] = {0,
                              v[FG_MD_REQUESTS],
                              0,
                              0,
                              v[FG_MD_FAILURES],
                              0,
                              (uint64_t)x->inflight,
                              (uint64_t)x->up,
                              avg_ms(v[FG_MD_CONNECT_SUM], hist_count(&v[FG_MD_CONNECT])),
                              avg_ms(v[FG_MD_RESPONSE_SUM], hist_count(&v[FG_MD_RESPONSE]))};
            csv_line(o, "destination", c->id, c->destinations[j].id, NULL, m);
        }
    }
}

int fg_metrics_view_csv(const fg_metrics_snap_t *s, struct evbuffer *out)
{
    out_t o = {out, 0};
    put(&o, "# type,cluster,id,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,conn_tot,"
            "req_tot,bin,bout,failures,retries,inflight,up,ctime_ms,rtime_ms\n");
    for (size_t i = 0; i < s->cfg->nservers; i++) {
        const uint64_t *v = s->servers[i].v;
        uint64_t req = 0;
        for (int k = 0; k < FG_MC_CLASSES; k++)
            req += v[FG_MS_REQUESTS + k];
        uint64_t n[10] = {v[FG_MS_CONNECTIONS], req, v[FG_MS_BYTES_IN], v[FG_MS_BYTES_OUT]};
        csv_line(&o, "server", "", s->cfg->servers[i].id, &v[FG_MS_REQUESTS], n);
    }
    for (size_t i = 0; i < s->cfg->nroutes; i++) {
        const uint64_t *v = s->routes[i].v;
        uint64_t req = hist_count(&v[FG_MR_LATENCY]);
        uint64_t n[10] = {0, req, 0, 0, 0, 0, 0, 0, 0, avg_ms(v[FG_MR_LATENCY_SUM], req)};
        const fg_route_t *r = &s->cfg->routes[i];
        csv_line(&o, "route", r->cluster ? r->cluster->id : "", r->id, &v[FG_MR_REQUESTS], n);
    }
    csv_upstreams(&o, s);
    return o.failed ? -1 : 0;
}

/* ---- `show stat` JSON ---- */

static json_t *classes_json(const uint64_t *c)
{
    json_t *o = json_object();
    for (int k = 0; k < FG_MC_CLASSES; k++)
        json_object_set_new(o, class_names[k], json_integer((json_int_t)c[k]));
    return o;
}

static json_t *hist_json(const uint64_t *b, uint64_t sum_us)
{
    json_t *buckets = json_array();
    uint64_t cum = 0;
    for (int i = 0; i < FG_METRICS_BUCKETS; i++) {
        cum += b[i];
        json_array_append_new(buckets, json_integer((json_int_t)cum));
    }
    return json_pack("{s:I, s:f, s:o}", "count", (json_int_t)cum, "sumSeconds", sum_us / 1e6,
                     "cumulative", buckets);
}

static json_t *upstream_json(const uint64_t *v)
{
    return json_pack("{s:I, s:I, s:o, s:o}", "requests", (json_int_t)v[FG_MD_REQUESTS], "failures",
                     (json_int_t)v[FG_MD_FAILURES], "connectTime",
                     hist_json(&v[FG_MD_CONNECT], v[FG_MD_CONNECT_SUM]), "responseTime",
                     hist_json(&v[FG_MD_RESPONSE], v[FG_MD_RESPONSE_SUM]));
}

static json_t *clusters_json(const fg_metrics_snap_t *s)
{
    json_t *list = json_array();
    for (size_t i = 0; i < s->cfg->nclusters; i++) {
        const fg_cluster_t *c = &s->cfg->clusters[i];
        json_t *dl = json_array();
        for (size_t j = 0; j < c->ndestinations; j++) {
            const dest_t *d = &s->dests[i][j];
            json_t *o = upstream_json(d->m.v);
            json_object_set_new(o, "id", json_string(c->destinations[j].id));
            json_object_set_new(o, "inFlight", json_integer((json_int_t)d->inflight));
            json_object_set_new(o, "up", json_boolean(d->up));
            json_object_set_new(o, "admin", json_string(admin_names[d->admin]));
            json_array_append_new(dl, o);
        }
        json_t *o = upstream_json(s->cluster_dests[i].v);
        json_object_set_new(o, "id", json_string(c->id));
        json_object_set_new(o, "retries", json_integer((json_int_t)s->clusters[i].v[0]));
        json_object_set_new(o, "inFlight", json_integer((json_int_t)s->cluster_inflight[i]));
        json_object_set_new(o, "destinationsUp", json_integer((json_int_t)s->cluster_up[i]));
        json_object_set_new(o, "destinations", dl);
        json_array_append_new(list, o);
    }
    return list;
}

static json_t *servers_routes_json(const fg_metrics_snap_t *s, json_t **routes)
{
    json_t *servers = json_array();
    for (size_t i = 0; i < s->cfg->nservers; i++) {
        const uint64_t *v = s->servers[i].v;
        json_array_append_new(servers, json_pack("{s:s, s:I, s:o, s:I, s:I, s:{s:I, s:I, s:I}}",
                                                 "id", s->cfg->servers[i].id, "connections",
                                                 (json_int_t)v[FG_MS_CONNECTIONS], "requests",
                                                 classes_json(&v[FG_MS_REQUESTS]), "bytesIn",
                                                 (json_int_t)v[FG_MS_BYTES_IN], "bytesOut",
                                                 (json_int_t)v[FG_MS_BYTES_OUT], "tls",
                                                 "handshakes", (json_int_t)v[FG_MS_TLS_HANDSHAKES],
                                                 "failures", (json_int_t)v[FG_MS_TLS_FAILURES],
                                                 "resumed", (json_int_t)v[FG_MS_TLS_RESUMED]));
    }
    *routes = json_array();
    for (size_t i = 0; i < s->cfg->nroutes; i++) {
        const uint64_t *v = s->routes[i].v;
        json_array_append_new(*routes,
                              json_pack("{s:s, s:o, s:o}", "id", s->cfg->routes[i].id, "requests",
                                        classes_json(&v[FG_MR_REQUESTS]), "latency",
                                        hist_json(&v[FG_MR_LATENCY], v[FG_MR_LATENCY_SUM])));
    }
    return servers;
}

/* Rate limits and access-control lists, from the same counters as prom_security. */
static json_t *security_json(const fg_metrics_snap_t *s)
{
    const fg_security_table_t *t = s->cfg->security_compiled;
    json_t *rl = json_array(), *acl = json_array();
    for (size_t i = 0; t && i < t->nrules; i++) {
        const fg_stats_slot_t *st = t->rules[i].stats;
        json_array_append_new(rl, json_pack("{s:s, s:I, s:I, s:I}", "id", t->rules[i].cfg->id,
                                            "allowed", (json_int_t)fg_stats_get(st, FG_RLC_ALLOWED),
                                            "limited", (json_int_t)fg_stats_get(st, FG_RLC_LIMITED),
                                            "dryRunLimited",
                                            (json_int_t)fg_stats_get(st, FG_RLC_DRYRUN)));
    }
    for (size_t i = 0; t && i <= t->nacls; i++) {
        const fg_stats_slot_t *st = t->acls[i].stats;
        json_array_append_new(acl, json_pack("{s:s, s:I, s:I, s:I}", "id", t->acls[i].id, "checks",
                                             (json_int_t)fg_stats_get(st, FG_ACLC_CHECKS), "hits",
                                             (json_int_t)fg_stats_get(st, FG_ACLC_HITS), "denied",
                                             (json_int_t)fg_stats_get(st, FG_ACLC_DENIED)));
    }
    return json_pack("{s:o, s:o}", "rateLimits", rl, "acls", acl);
}

json_t *fg_metrics_view_json(const fg_metrics_snap_t *s)
{
    json_t *routes = NULL, *servers = servers_routes_json(s, &routes);
    json_t *bounds = json_array();
    for (int i = 0; i < FG_METRICS_BUCKETS - 1; i++)
        json_array_append_new(bounds, json_real(fg_metrics_bucket_bounds_us[i] / 1e6));
    json_t *conns = json_object();
    static const char *const gnames[FG_MG_COUNT] = {"http2Streams", "webSockets", "tunnelAgents",
                                                    "tunnelStreams", "tcpConnections"};
    for (int g = 0; g < FG_MG_COUNT; g++)
        json_object_set_new(conns, gnames[g],
                            json_pack("{s:I, s:I}", "open", (json_int_t)s->gauge[g], "total",
                                      (json_int_t)s->gauge_total[g]));
    json_object_set_new(conns, "clients", json_integer((json_int_t)s->connections));
    json_t *doc = json_pack("{s:b, s:o, s:o, s:o, s:o, s:o}", "enabled", s->have_metrics,
                            "bucketBoundsSeconds", bounds, "connections", conns, "servers", servers,
                            "routes", routes, "clusters", clusters_json(s));
    if (doc != NULL)
        json_object_update_new(doc, security_json(s));
    return doc;
}
