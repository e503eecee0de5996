/* The status socket's commands: read-only views of the master, the workers and the shared
 * zones, and the few runtime changes operators may make without a reload. Each handler runs in
 * the master's loop and answers one JSON document. See docs/operations.md. */
#include <stdlib.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include <openssl/x509.h>

#include "common/tls.h"
#include "common/x509gen.h"
#include "master/acme.h"
#include "master/ocsp_update.h"
#include "master/master_impl.h"
#include "master/metrics_view.h"
#include "shm/health.h"
#include "shm/tunnels.h"
#include "shm/zone.h"
#include "worker/admission/security.h"
#include "worker/core/clock.h"

static void iso_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *state_name(int state)
{
    switch (state) {
    case FG_WORKER_STARTING:
        return "starting";
    case FG_WORKER_READY:
        return "ready";
    case FG_WORKER_DRAINING:
        return "draining";
    case FG_WORKER_EXITED:
        return "exited";
    default:
        return "free";
    }
}

static json_t *show_info(void *arg)
{
    master_t *m = arg;
    char start[32], last[32];
    iso_time(m->start_time, start, sizeof(start));
    static const char *const results[] = {"none", "ok", "failed"};
    json_t *lr = json_pack("{s:s}", "result", results[m->last_reload_result]);
    if (m->last_reload_result != RELOAD_NONE) {
        iso_time(m->last_reload_time, last, sizeof(last));
        json_object_set_new(lr, "time", json_string(last));
    } else {
        json_object_set_new(lr, "time", json_null());
    }
    json_object_set_new(lr, "error",
                        m->last_reload_result == RELOAD_FAILED ? json_string(m->last_reload_error)
                                                               : json_null());
    json_object_set_new(lr, "generation",
                        m->last_reload_result != RELOAD_NONE
                            ? json_integer((json_int_t)m->last_reload_generation)
                            : json_null());
    json_t *lf = json_null();
    if (m->last_failure_time != 0) {
        iso_time(m->last_failure_time, last, sizeof(last));
        lf = json_pack("{s:s, s:s*}", "time", last, "error", m->last_reload_error);
    }
    return json_pack("{s:s, s:i, s:I, s:s, s:I, s:i, s:s, s:o, s:o, s:I, s:I, s:b, s:b, s:s}",
                     "version", FG_VERSION, "pid", (int)m->pid, "uptime",
                     (json_int_t)((fg_master_mono_ms() - m->start_mono) / 1000), "configFile",
                     m->conf_file, "generation", (json_int_t)m->cur->id, "workers", m->cur->nslots,
                     "startTime", start, "lastReload", lr, "lastFailedReload", lf, "reloads",
                     (json_int_t)m->reloads, "reloadFailures", (json_int_t)m->reload_failures,
                     "reloading", m->next != NULL, "watchConfig", m->watch != NULL, "acceptBalance",
                     fg_listeners_balanced(m->ls) ? "leastConnections" : "hash");
}

static json_t *worker_json(const proc_t *p, uint64_t now)
{
    const fg_shm_worker_t *r = p->rec;
    uint64_t started = r->started_ms;
    return json_pack("{s:i, s:i, s:I, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "slot", p->slot,
                     "pid", (int)p->pid, "generation", (json_int_t)p->generation, "state",
                     state_name(__atomic_load_n(&r->state, __ATOMIC_ACQUIRE)), "retiring",
                     p->state == P_RETIRING, "connections",
                     (json_int_t)__atomic_load_n(&r->connections, __ATOMIC_RELAXED),
                     "connectionsTotal",
                     (json_int_t)__atomic_load_n(&r->connections_total, __ATOMIC_RELAXED),
                     "webSockets", (json_int_t)__atomic_load_n(&r->websockets, __ATOMIC_RELAXED),
                     "requests", (json_int_t)__atomic_load_n(&r->requests, __ATOMIC_RELAXED),
                     "restarts", (json_int_t)r->restarts, "uptime",
                     (json_int_t)(now > started ? (now - started) / 1000 : 0));
}

static int proc_cmp(const void *a, const void *b)
{
    const proc_t *x = *(proc_t *const *)a, *y = *(proc_t *const *)b;
    if (x->generation != y->generation)
        return x->generation < y->generation ? -1 : 1;
    return x->slot - y->slot;
}

static json_t *show_workers(void *arg)
{
    master_t *m = arg;
    size_t n = 0;
    for (proc_t *p = m->procs; p; p = p->next)
        n++;
    proc_t **v = calloc(n ? n : 1, sizeof(*v));
    if (v == NULL)
        return NULL;
    n = 0;
    for (proc_t *p = m->procs; p; p = p->next)
        v[n++] = p;
    qsort(v, n, sizeof(*v), proc_cmp);
    json_t *list = json_array();
    uint64_t now = fg_master_wall_ms();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, worker_json(v[i], now));
    free(v);
    return json_pack("{s:I, s:o}", "generation", (json_int_t)m->cur->id, "workers", list);
}

static json_t *show_shm(void *arg)
{
    master_t *m = arg;
    size_t size = fg_shm_size(m->shm), used = fg_shm_used(m->shm);
    int records = 0;
    for (int i = 0; i < FG_SHM_MAX_WORKERS; i++)
        records += fg_shm_worker(m->shm, i)->state != FG_WORKER_FREE;
    uint64_t zones = fg_shm_zone_bytes(m->shm);
    return json_pack("{s:I, s:I, s:I, s:{s:i, s:i}, s:o}", "size", (json_int_t)size, "used",
                     (json_int_t)(used + zones), "free", (json_int_t)(size - used - zones),
                     "workerRecords", "used", records, "max", FG_SHM_MAX_WORKERS, "zones",
                     fg_security_show_zones(m->shm));
}

static json_t *show_ratelimits(void *arg)
{
    master_t *m = arg;
    return fg_security_show_ratelimits(m->cur->cfg);
}

static json_t *show_acl(void *arg)
{
    master_t *m = arg;
    return fg_security_show_acl(m->cur->cfg);
}

static json_t *show_abnormal(void *arg)
{
    master_t *m = arg;
    return fg_security_show_abnormal(m->cur->cfg);
}

static json_t *add_acl(void *arg, const char *args)
{
    master_t *m = arg;
    return fg_security_acl_command(m->cur->cfg, 1, args);
}

static json_t *del_acl(void *arg, const char *args)
{
    master_t *m = arg;
    return fg_security_acl_command(m->cur->cfg, 0, args);
}

static json_t *show_servers(void *arg)
{
    master_t *m = arg;
    return fg_health_show_servers(m->cur->cfg, fg_clock_now_ms());
}

static json_t *set_destination(void *arg, const char *args)
{
    master_t *m = arg;
    return fg_health_set_command(fg_health_zone(m->shm), m->cur->cfg, args);
}

fg_metrics_snap_t *fg_master_metrics_snap(master_t *m)
{
    fg_metrics_process_t p = {
        .generation = m->cur->id,
        .reloads = m->reloads,
        .reload_failures = m->reload_failures,
        .last_reload_result = m->last_reload_result,
        .last_reload_time = m->last_reload_result != RELOAD_NONE ? m->last_reload_time : 0,
        .start_time = m->start_time,
    };
    for (const proc_t *q = m->procs; q; q = q->next)
        p.workers++;
    return fg_metrics_snap_new(m->cur->cfg, m->shm, &p, fg_clock_now_ms());
}

int fg_master_metrics_scrape(void *arg, struct evbuffer *out)
{
    fg_metrics_snap_t *s = fg_master_metrics_snap(arg);
    int rc = s ? fg_metrics_view_prometheus(s, out) : -1;
    fg_metrics_snap_free(s);
    return rc;
}

static json_t *tunnel_conn_json(const fg_tunnel_conn_t *c, uint64_t serial, uint64_t now)
{
    uint64_t since = atomic_load(&c->since_ms), beat = atomic_load(&c->last_beat_ms);
    char when[32];
    iso_time((time_t)(since / 1000), when, sizeof(when));
    return json_pack("{s:I, s:{s:i, s:i, s:I}, s:s, s:s, s:b, s:I, s:I, s:I}", "connection",
                     (json_int_t)serial, "worker", "slot", c->slot, "pid", atomic_load(&c->pid),
                     "generation", (json_int_t)c->generation, "peer", c->peer, "connectedSince",
                     when, "draining", atomic_load(&c->draining) != 0, "streams",
                     (json_int_t)atomic_load(&c->streams), "lastHeartbeatAgoMs",
                     (json_int_t)(now > beat ? now - beat : 0), "rttUs",
                     (json_int_t)atomic_load(&c->rtt_us));
}

/* The connection the agent-level fields describe: the newest not draining, else the newest. */
static int newest_conn(const fg_tunnel_rec_t *r)
{
    int best = -1, best_draining = 1;
    uint64_t best_serial = 0;
    for (int i = 0; i < FG_TUNNEL_CONNS_MAX; i++) {
        uint64_t serial = atomic_load(&r->conns[i].serial);
        int draining = atomic_load(&r->conns[i].draining) != 0;
        if (serial != 0 && (best < 0 || draining < best_draining ||
                            (draining == best_draining && serial > best_serial))) {
            best = i;
            best_draining = draining;
            best_serial = serial;
        }
    }
    return best;
}

static json_t *tunnel_json(const fg_tunnel_agent_t *a, uint64_t now)
{
    const fg_tunnel_rec_t *r = a->state;
    if (r == NULL)
        return json_pack("{s:s, s:b, s:[]}", "id", a->id, "online", 0, "connections");
    json_t *conns = json_array();
    for (size_t i = 0; conns != NULL && i < FG_TUNNEL_CONNS_MAX; i++) {
        uint64_t serial = atomic_load(&r->conns[i].serial);
        if (serial != 0)
            json_array_append_new(conns, tunnel_conn_json(&r->conns[i], serial, now));
    }
    uint64_t connects = atomic_load(&r->connects);
    json_t *o = json_pack(
        "{s:s, s:b, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "id", a->id, "online",
        fg_tunnels_online(r), "connections", conns, "streams", (json_int_t)atomic_load(&r->streams),
        "bytesIn", (json_int_t)atomic_load(&r->bytes_in), "bytesOut",
        (json_int_t)atomic_load(&r->bytes_out), "connects", (json_int_t)connects, "reconnects",
        (json_int_t)(connects ? connects - 1 : 0), "takeovers",
        (json_int_t)atomic_load(&r->takeovers), "duplicates",
        (json_int_t)atomic_load(&r->duplicates), "hopRequests", (json_int_t)atomic_load(&r->hops),
        "authFailures", (json_int_t)atomic_load(&r->auth_failures));
    int i = o != NULL ? newest_conn(r) : -1;
    uint64_t serial = i >= 0 ? atomic_load(&r->conns[i].serial) : 0;
    json_t *c = serial ? tunnel_conn_json(&r->conns[i], serial, now) : NULL;
    if (c == NULL)
        return o;
    /* the newest connection's figures at the agent's level too */
    static const char *const keys[] = {"worker",         "connection",         "peer",
                                       "connectedSince", "lastHeartbeatAgoMs", "rttUs"};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        json_object_set(o, keys[k], json_object_get(c, keys[k]));
    json_decref(c);
    return o;
}

/* Every configured agent: who holds its tunnel, since when, liveness and traffic
 * (docs/tunnels.md). No secret, no proof: the registry never holds one. */
static json_t *show_tunnels(void *arg)
{
    master_t *m = arg;
    const fg_tunnels_config_t *tc = &m->cur->cfg->tunnels;
    json_t *list = json_array();
    uint64_t now = fg_master_wall_ms();
    for (size_t i = 0; i < tc->nagents; i++)
        json_array_append_new(list, tunnel_json(&tc->agents[i], now));
    return json_pack("{s:s?, s:o}", "path", tc->path, "agents", list);
}

/* A certificate as it is served: names, subject, issuer, validity; "placeholder" for an ACME
 * certificate not issued yet (common/x509gen.h). */
static json_t *certificate_json(const fg_config_t *cfg, size_t i)
{
    const fg_tls_cert_config_t *c = &cfg->certificates[i];
    json_t *o = json_pack("{s:s, s:s, s:b}", "id", c->id, "chain", c->chain, "acme", c->acme);
    json_t *names = json_array();
    for (size_t k = 0; k < c->nnames; k++)
        json_array_append_new(names, json_string(c->names[k]));
    json_object_set_new(o, "names", names);
    X509 *leaf;
    EVP_PKEY *key;
    STACK_OF(X509) * chain;
    if (fg_tls_cert_pair(cfg, i, &leaf, &key, &chain) != 0)
        return o;
    char subject[256], issuer[256], until[32];
    X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof(subject));
    X509_NAME_oneline(X509_get_issuer_name(leaf), issuer, sizeof(issuer));
    struct tm tm;
    int days = 0, secs = 0;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1)
        strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(until, sizeof(until), "?");
    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(leaf));
    json_object_set_new(o, "subject", json_string(subject));
    json_object_set_new(o, "issuer", json_string(issuer));
    json_object_set_new(o, "notAfter", json_string(until));
    json_object_set_new(o, "daysLeft", json_integer(days));
    json_object_set_new(o, "placeholder", json_boolean(fg_x509gen_is_placeholder(leaf)));
    time_t this_update, next_update;
    int has_next, stapled;
    if (fg_tls_cert_ocsp(cfg, i, &this_update, &next_update, &has_next, &stapled)) {
        char a[32], b[32] = "";
        strftime(a, sizeof(a), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&this_update, &tm));
        if (has_next)
            strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&next_update, &tm));
        /* stapled: as the handshake decides now (tls_ocsp.c) */
        json_object_set_new(o, "ocsp",
                            json_pack("{s:s, s:s, s:s?, s:b}", "file", c->ocsp_file, "thisUpdate",
                                      a, "nextUpdate", has_next ? b : NULL, "stapled", stapled));
    }
    return o;
}

/* A job's last and next run; changed and unchanged name the result of a run that wrote files
 * and of one that had nothing to do or found nothing new. */
static json_t *job_json(const fg_master_job_t *j, const char *changed, const char *unchanged)
{
    char last[32] = "", next[32] = "";
    if (j->last)
        iso_time(j->last, last, sizeof(last));
    if (j->next)
        iso_time(j->next, next, sizeof(next));
    const char *result = j->last == 0                             ? NULL
                         : (j->last_bits & FG_MASTER_JOB_FAILED)  ? "failed"
                         : (j->last_bits & FG_MASTER_JOB_CHANGED) ? changed
                                                                  : unchanged;
    return json_pack("{s:b, s:s?, s:s?, s:s?}", "running", j->pid > 0, "lastCheck",
                     last[0] ? last : NULL, "lastResult", result, "nextCheck",
                     next[0] ? next : NULL);
}

static json_t *show_certificates(void *arg)
{
    master_t *m = arg;
    const fg_config_t *cfg = m->cur->cfg;
    json_t *list = json_array();
    for (size_t i = 0; i < cfg->ncertificates; i++)
        json_array_append_new(list, certificate_json(cfg, i));
    json_t *acme = json_null(), *ocsp = json_null();
    if (cfg->acme.enabled) {
        acme = job_json(&m->acme, "issued", "nothing due");
        json_object_set_new(acme, "directory", json_string(cfg->acme.directory));
    }
    if (fg_ocsp_update_enabled(cfg))
        ocsp = job_json(&m->ocsp, "updated", "unchanged");
    return json_pack("{s:o, s:o, s:o}", "certificates", list, "acme", acme, "ocspUpdate", ocsp);
}

/* `acme check`, `ocsp update`: a run of j now; what is needed for it, when it is not enabled. */
static json_t *job_now(master_t *m, fg_master_job_t *j, const char *needs)
{
    int rc = fg_master_job_run_now(m, j);
    if (rc == -1)
        return json_pack("{s:s, s:s}", "result", "failed", "error", needs);
    return json_pack("{s:s}", "result", rc == 0 ? "started" : "queued");
}

static json_t *acme_check(void *arg)
{
    master_t *m = arg;
    return job_now(m, &m->acme, "no \"acme\" section in the configuration");
}

static json_t *ocsp_update(void *arg)
{
    master_t *m = arg;
    return job_now(m, &m->ocsp, "no certificate with \"ocspUpdate\" in the configuration");
}

static json_t *show_stat(void *arg)
{
    fg_metrics_snap_t *s = fg_master_metrics_snap(arg);
    json_t *doc = s ? fg_metrics_view_json(s) : NULL;
    fg_metrics_snap_free(s);
    return doc;
}

/* A text view answered as one JSON document: {"contentType": type, "text": the view}. */
static json_t *text_view(master_t *m, int (*view)(const fg_metrics_snap_t *, struct evbuffer *),
                         const char *type)
{
    fg_metrics_snap_t *s = fg_master_metrics_snap(m);
    struct evbuffer *b = evbuffer_new();
    json_t *doc = NULL;
    if (s != NULL && b != NULL && view(s, b) == 0) {
        size_t n = evbuffer_get_length(b);
        const char *text = (const char *)evbuffer_pullup(b, -1);
        doc = json_pack("{s:s, s:s%}", "contentType", type, "text", text ? text : "", n);
    }
    if (b != NULL)
        evbuffer_free(b);
    fg_metrics_snap_free(s);
    return doc;
}

static json_t *show_metrics(void *arg)
{
    return text_view(arg, fg_metrics_view_prometheus, FG_METRICS_CONTENT_TYPE);
}

static json_t *show_stat_csv(void *arg)
{
    return text_view(arg, fg_metrics_view_csv, "text/csv");
}

const fg_status_cmd_t fg_master_status_cmds[] = {
    {"show info", "process, configuration and last reload", show_info},
    {"show workers", "every worker process, retiring ones included", show_workers},
    {"show shm", "shared memory arena size and use, and every zone", show_shm},
    {"show ratelimits", "per rate limit: allowed, limited, active keys, evictions",
     show_ratelimits},
    {"show acl", "per access-control list: checks, hits, denials, dynamic entries", show_acl},
    {"show abnormal", "addresses with the most errors in the abnormalIp window", show_abnormal},
    {"show servers", "per destination: health, admin state, in-flight, totals, weight",
     show_servers},
    {"show stat", "per server, route, cluster and destination: requests, bytes, latency",
     show_stat},
    {"show certificates",
     "per certificate: names, subject, issuer, expiry; the ACME client's last and next check",
     show_certificates},
    {"acme check", "check the ACME certificates now (results in the error log, show certificates)",
     acme_check},
    {"ocsp update",
     "fetch the OCSP response of every \"ocspUpdate\" certificate now (results in the error log, "
     "show certificates)",
     ocsp_update},
    {"show tunnels", "per tunnel agent: holder, since, heartbeat, RTT, streams, bytes",
     show_tunnels},
    {"show stat csv", "the same as CSV, in \"text\"", show_stat_csv},
    {"show metrics", "Prometheus text exposition (docs/metrics.md), in \"text\"", show_metrics},
    {NULL, NULL, NULL},
};

const fg_status_args_cmd_t fg_master_status_args_cmds[] = {
    {"add acl", "add acl LIST-ID ADDRESS|CIDR: add a dynamic entry, no reload", add_acl},
    {"del acl", "del acl LIST-ID ADDRESS|CIDR: remove a dynamic entry", del_acl},
    {"set destination", "set destination CLUSTER/DEST state ready|drain|maint", set_destination},
    {NULL, NULL, NULL},
};

/* `reload`: answered once the reload that reads the file after this request has its new
 * generation serving or has been refused. */
static json_t *reload_cmd(void *arg, uint64_t *ticket)
{
    master_t *m = arg;
    *ticket = fg_master_request_reload(m);
    if (*ticket == 0)
        return json_pack("{s:s, s:s}", "result", "failed", "error", "the master is stopping");
    return NULL;
}

const fg_status_defer_cmd_t fg_master_status_defer_cmds[] = {
    {"reload", "reload the configuration file; answers when it serves or was refused", reload_cmd},
    {NULL, NULL, NULL},
};
