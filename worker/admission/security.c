#include "worker/admission/security.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/iprange.h"
#include "common/log.h"
#include "shm/abnormal.h"
#include "shm/hash.h"
#include "shm/stats.h"
#include "shm/zone.h"
#include "worker/admission/acl.h"
#include "worker/admission/clientip.h"
#include "worker/admission/ratelimit.h"
#include "worker/core/worker.h"
#include "worker/core/clock.h"

#define STATS_ZONE_SIZE (1024 * 1024)
#define STATS_LAYOUT 1
#define ACL_LAYOUT 2
#define ABNORMAL_LAYOUT 1
#define AUTOBLOCK_ID "autoBlock"
#define SHOW_ABNORMAL_MAX 100
#define SHOW_DYNAMIC_MAX 1000

enum { STATS_KIND_RULE = 1, STATS_KIND_LIST };

typedef struct {
    fg_rl_rule_t **rules;
    size_t nrules;
    fg_acl_t **acls;
    size_t nacls;
} plan_t;

typedef struct {
    uint64_t gen;
    fg_stats_t *stats;
    fg_shm_hash_t *rl_zone;
    fg_acl_dyn_t *dyn;
    fg_shm_hash_t *abn_zone;
    fg_rl_rule_t *rules;
    size_t nrules;
    fg_acl_t *acls; /* nacls configured lists, then the autoBlock list */
    size_t nacls;
    int autoblock;
    fg_iprange_set_t *trusted; /* per server */
    size_t nservers, nroutes;
    plan_t *plans; /* [server * (nroutes + 1) + route], route nroutes = no route matched */
    const fg_config_t *cfg;
} sec_t;

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
        s = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    return s;
}

/* ---- build (master) ---- */

static void *zone(fg_shm_t *shm, const char *name, size_t size, uint32_t kind, uint64_t layout,
                  uint64_t gen, int *created, char *err, size_t errlen)
{
    void *mem = fg_shm_zone_get(shm, name, size, kind, layout, gen, created);
    if (mem == NULL)
        snprintf(err, errlen,
                 "shm: no room for zone \"%s\" (%zu bytes) in the arena (%zu bytes, %llu in "
                 "zones); raise shm.size (takes effect at restart) or lower the zone size",
                 name, size, fg_shm_size(shm), (unsigned long long)fg_shm_zone_bytes(shm));
    return mem;
}

/* Layout words fold in the sizes, so a zone is rebuilt when its entry format changes. */
static int build_zones(sec_t *s, const fg_config_t *cfg, fg_shm_t *shm, char *err, size_t errlen)
{
    int created;
    void *mem = zone(shm, "stats", STATS_ZONE_SIZE, FG_ZONE_STATS, STATS_LAYOUT, s->gen, &created,
                     err, errlen);
    if (mem == NULL)
        return -1;
    s->stats = created ? fg_stats_init(mem, STATS_ZONE_SIZE) : mem;
    if (cfg->nratelimits) {
        mem = zone(shm, "ratelimit", cfg->shm_ratelimit_zone, FG_ZONE_RATELIMIT, FG_RL_LAYOUT,
                   s->gen, &created, err, errlen);
        if (mem == NULL)
            return -1;
        s->rl_zone = created ? fg_shm_hash_init(mem, cfg->shm_ratelimit_zone, FG_RL_KEY_SIZE,
                                                FG_RL_VALUE_SIZE, random_seed())
                             : mem;
    }
    if (cfg->nacls || s->autoblock) {
        mem = zone(shm, "acl", cfg->shm_acl_zone, FG_ZONE_ACL, ACL_LAYOUT, s->gen, &created, err,
                   errlen);
        if (mem == NULL)
            return -1;
        s->dyn = created ? fg_acl_dyn_init(mem, cfg->shm_acl_zone, random_seed()) : mem;
    }
    if (cfg->abnormal.enabled) {
        mem = zone(shm, "abnormal", cfg->shm_abnormal_zone, FG_ZONE_ABNORMAL, ABNORMAL_LAYOUT,
                   s->gen, &created, err, errlen);
        if (mem == NULL)
            return -1;
        s->abn_zone = created ? fg_abnormal_init(mem, cfg->shm_abnormal_zone, random_seed()) : mem;
    }
    if (s->stats == NULL || (cfg->nratelimits && s->rl_zone == NULL) ||
        ((cfg->nacls || s->autoblock) && s->dyn == NULL) ||
        (cfg->abnormal.enabled && s->abn_zone == NULL)) {
        snprintf(err, errlen, "shm: a zone is too small for its table");
        return -1;
    }
    return 0;
}

static int build_rules_lists(sec_t *s, const fg_config_t *cfg, char *err, size_t errlen)
{
    s->nrules = cfg->nratelimits;
    s->rules = calloc(s->nrules + 1, sizeof(*s->rules));
    s->nacls = cfg->nacls;
    s->acls = calloc(s->nacls + 1, sizeof(*s->acls));
    if (s->rules == NULL || s->acls == NULL)
        goto oom;
    for (size_t i = 0; i < s->nrules; i++) {
        fg_rl_rule_t *r = &s->rules[i];
        if (fg_ratelimit_compile(r, &cfg->ratelimits[i]) < 0)
            goto oom;
        r->stats = fg_stats_slot(s->stats, STATS_KIND_RULE, r->fingerprint, r->cfg->id, s->gen);
        r->stats_index = fg_stats_index(s->stats, r->stats);
    }
    for (size_t i = 0; i < s->nacls; i++) {
        fg_acl_t *l = &s->acls[i];
        if (fg_acl_compile(l, &cfg->acls[i]) < 0)
            goto oom;
        l->stats = fg_stats_slot(s->stats, STATS_KIND_LIST, l->key, l->id, s->gen);
    }
    fg_acl_t *ab = &s->acls[s->nacls];
    memset(ab, 0, sizeof(*ab));
    fg_iprange_set_init(&ab->set);
    ab->id = AUTOBLOCK_ID;
    ab->enabled = 1;
    ab->key = fg_acl_list_key(AUTOBLOCK_ID);
    ab->stats = fg_stats_slot(s->stats, STATS_KIND_LIST, ab->key, ab->id, s->gen);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int plan_add_rule(plan_t *p, fg_rl_rule_t *r)
{
    if (!r->cfg->enabled)
        return 0;
    for (size_t i = 0; i < p->nrules; i++)
        if (p->rules[i] == r)
            return 0;
    p->rules[p->nrules++] = r;
    return 0;
}

static void plan_add_list(plan_t *p, fg_acl_t *l)
{
    if (!l->enabled)
        return;
    for (size_t i = 0; i < p->nacls; i++)
        if (p->acls[i] == l)
            return;
    p->acls[p->nacls++] = l;
}

static fg_rl_rule_t *find_rule(sec_t *s, const char *id)
{
    for (size_t i = 0; i < s->nrules; i++)
        if (strcmp(s->rules[i].cfg->id, id) == 0)
            return &s->rules[i];
    return NULL;
}

static fg_acl_t *find_list(const sec_t *s, const char *id)
{
    for (size_t i = 0; i < s->nacls; i++)
        if (strcmp(s->acls[i].id, id) == 0)
            return &s->acls[i];
    if (s->autoblock && strcmp(id, AUTOBLOCK_ID) == 0)
        return &s->acls[s->nacls];
    return NULL;
}

static void plan_attach(sec_t *s, plan_t *p, const fg_security_attach_t *a)
{
    for (size_t i = 0; i < a->nratelimits; i++) {
        fg_rl_rule_t *r = find_rule(s, a->ratelimits[i]);
        if (r)
            plan_add_rule(p, r);
    }
    for (size_t i = 0; i < a->nacls; i++) {
        fg_acl_t *l = find_list(s, a->acls[i]);
        if (l)
            plan_add_list(p, l);
    }
}

static int route_on_server(const fg_route_t *r, const fg_server_t *srv)
{
    for (size_t i = 0; i < srv->nroutes; i++)
        if (srv->routes[i] == r)
            return 1;
    return 0;
}

static int build_plans(sec_t *s, const fg_config_t *cfg)
{
    size_t per = s->nroutes + 1, cap_r = s->nrules + 1, cap_l = s->nacls + 2;
    s->plans = calloc(s->nservers * per + 1, sizeof(*s->plans));
    if (s->plans == NULL)
        return -1;
    for (size_t si = 0; si < s->nservers; si++) {
        const fg_server_t *srv = &cfg->servers[si];
        for (size_t ri = 0; ri < per; ri++) {
            plan_t *p = &s->plans[si * per + ri];
            p->rules = calloc(cap_r, sizeof(*p->rules));
            p->acls = calloc(cap_l, sizeof(*p->acls));
            if (p->rules == NULL || p->acls == NULL)
                return -1;
            /* autoBlock first: a blocked address is refused before any list is consulted. */
            if (s->autoblock)
                plan_add_list(p, &s->acls[s->nacls]);
            plan_attach(s, p, &cfg->security);
            plan_attach(s, p, &srv->security);
            if (ri < s->nroutes && route_on_server(&cfg->routes[ri], srv))
                plan_attach(s, p, &cfg->routes[ri].security);
        }
    }
    return 0;
}

static int build_trusted(sec_t *s, const fg_config_t *cfg)
{
    s->trusted = calloc(s->nservers + 1, sizeof(*s->trusted));
    if (s->trusted == NULL)
        return -1;
    for (size_t i = 0; i < s->nservers; i++) {
        const fg_server_t *srv = &cfg->servers[i];
        fg_iprange_set_init(&s->trusted[i]);
        for (size_t j = 0; j < srv->ntrusted_proxies; j++) {
            fg_iprange_t r;
            int plen;
            char why[128];
            if (fg_iprange_parse(srv->trusted_proxies[j], &r, &plen, why, sizeof(why)) == 0 &&
                fg_iprange_set_add(&s->trusted[i], &r) < 0)
                return -1;
        }
        fg_iprange_set_finish(&s->trusted[i]);
    }
    return 0;
}

static void sec_free(sec_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->rules && i < s->nrules; i++)
        fg_ratelimit_free(&s->rules[i]);
    for (size_t i = 0; s->acls && i <= s->nacls; i++)
        fg_acl_free(&s->acls[i]);
    free(s->rules);
    free(s->acls);
    for (size_t i = 0; s->trusted && i < s->nservers; i++)
        fg_iprange_set_free(&s->trusted[i]);
    free(s->trusted);
    for (size_t i = 0; s->plans && i < s->nservers * (s->nroutes + 1); i++) {
        free(s->plans[i].rules);
        free(s->plans[i].acls);
    }
    free(s->plans);
    free(s);
}

int fg_security_build(fg_config_t *cfg, fg_shm_t *shm, uint64_t gen, char *err, size_t errlen)
{
    int trusted = 0;
    for (size_t i = 0; i < cfg->nservers; i++)
        trusted |= cfg->servers[i].ntrusted_proxies > 0;
    if (cfg->nratelimits == 0 && cfg->nacls == 0 && !cfg->abnormal.enabled && !trusted) {
        cfg->security_compiled = NULL;
        return 0;
    }
    sec_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->gen = gen;
    s->cfg = cfg;
    s->nservers = cfg->nservers;
    s->nroutes = cfg->nroutes;
    s->autoblock = cfg->abnormal.enabled && cfg->abnormal.autoblock;
    if (build_zones(s, cfg, shm, err, errlen) < 0 || build_rules_lists(s, cfg, err, errlen) < 0)
        goto fail;
    if (build_plans(s, cfg) < 0 || build_trusted(s, cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    cfg->security_compiled = s;
    return 0;
fail:
    sec_free(s);
    return -1;
}

void fg_security_free(fg_config_t *cfg)
{
    sec_free(cfg->security_compiled);
    cfg->security_compiled = NULL;
}

/* ---- worker ---- */

void fg_security_worker_init(const fg_config_t *cfg)
{
#ifdef FG_TEST_HOOKS
    const char *hook = getenv("FG_TEST_RATELIMIT_HOLD");
    if (hook && *hook && fg_ratelimit_set_fault_hook(hook) < 0)
        fg_log_error("FG_TEST_RATELIMIT_HOLD: not an absolute file name; test hook not armed");
#endif
}

static int resolve_ip(const sec_t *s, fg_request_t *req)
{
    if (req->real_ip_set)
        return 0;
    if (req->server == NULL)
        return -1;
    size_t si = (size_t)(req->server - s->cfg->servers);
    if (si >= s->nservers)
        return -1;
    fg_ip_t ip;
    if (fg_clientip_resolve(req, req->server->client_ip_source, &s->trusted[si], &ip) < 0)
        return -1;
    memcpy(req->real_ip, ip.b, 16);
    req->real_ip_set = 1;
    fg_clientip_apply(req, &ip);
    return 0;
}

int fg_security_check(fg_request_t *req)
{
    const sec_t *s = req->worker ? req->worker->cfg->security_compiled : NULL;
    if (s == NULL || req->server == NULL)
        return 0;
    size_t si = (size_t)(req->server - s->cfg->servers);
    size_t ri = req->route ? (size_t)(req->route - s->cfg->routes) : s->nroutes;
    if (si >= s->nservers || ri > s->nroutes)
        return 0;
    const plan_t *p = &s->plans[si * (s->nroutes + 1) + ri];
    /* The client a trusted proxy names is logged and forwarded even where nothing judges it. */
    if (p->nrules == 0 && p->nacls == 0) {
        if (req->server->ntrusted_proxies && req->server->client_ip_source != FG_CIP_SOCKET)
            resolve_ip(s, req);
        return 0;
    }
    if (resolve_ip(s, req) < 0)
        return 0; /* no usable address (not an IP socket): nothing to judge by */
    fg_ip_t ip;
    memcpy(ip.b, req->real_ip, 16);
    uint64_t now = fg_clock_now_ms();
    if (p->nacls) {
        const fg_acl_t *by;
        if (!fg_acl_verdict(p->acls, p->nacls, s->dyn, &ip, now, &by)) {
            req->security_denied = 1;
            /* The list's id tells a prober how the gateway is configured: named only when
             * the operator asks (exposeAccessListIds). */
            char msg[160] = "access denied";
            if (req->server->responses.expose_acl_ids)
                snprintf(msg, sizeof(msg), "access denied by %s \"%s\"",
                         by && by->whitelist ? "whitelist" : "blacklist", by ? by->id : "");
            fg_request_error(req, 403, "forbidden", msg);
            return -1;
        }
    }
    for (size_t i = 0; i < p->nrules; i++) {
        fg_rl_result_t res;
        if (!fg_ratelimit_check(s->rl_zone, s->stats, p->rules[i], req, &ip, now, &res)) {
            req->security_denied = 1;
            fg_ratelimit_reject(req, p->rules[i], &res);
            return -1;
        }
    }
    return 0;
}

void fg_security_on_finish(fg_request_t *req)
{
    const sec_t *s = req->worker && req->worker->cfg ? req->worker->cfg->security_compiled : NULL;
    if (s == NULL || s->abn_zone == NULL || req->status < 400 || req->security_denied)
        return;
    if (resolve_ip(s, req) < 0)
        return;
    const fg_abnormal_config_t *a = &s->cfg->abnormal;
    fg_ip_t ip;
    memcpy(ip.b, req->real_ip, 16);
    uint64_t now = fg_clock_now_ms();
    int block = fg_abnormal_record(s->abn_zone, &ip, now, a->window_ms,
                                   s->autoblock ? a->autoblock_threshold : 0, a->autoblock_ms);
    if (block == 1 && s->dyn) {
        char text[64];
        int rc = fg_acl_dyn_add(s->dyn, fg_acl_list_key(AUTOBLOCK_ID), &ip, 128,
                                now + a->autoblock_ms, now);
        fg_ip_format(&ip, text, sizeof(text));
        if (rc < 0)
            fg_log_error("abnormalIp: cannot block %s: %s", text, strerror(-rc));
        else
            fg_log_warn("abnormalIp: %s blocked for %llu s after %llu errors", text,
                        (unsigned long long)(a->autoblock_ms / 1000),
                        (unsigned long long)a->autoblock_threshold);
    }
}

/* ---- status socket (master) ---- */

static const char *const type_names[] = {"SlidingWindow", "FixedWindow", "TokenBucket"};
static const char *const scope_names[] = {"Global", "PerIp", "PerRoute", "PerHeader"};

static json_t *zone_json(fg_shm_hash_t *h)
{
    fg_shm_hash_stats_t st;
    if (h == NULL)
        return json_null();
    fg_shm_hash_get_stats(h, &st);
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "slots", (json_int_t)st.slots, "entries",
                     (json_int_t)st.entries, "evictions", (json_int_t)st.evictions,
                     "allocationFailures", (json_int_t)st.alloc_failures, "lockRecoveries",
                     (json_int_t)st.recoveries);
}

json_t *fg_security_show_ratelimits(const fg_config_t *cfg)
{
    const sec_t *s = cfg->security_compiled;
    json_t *list = json_array();
    for (size_t i = 0; s && i < s->nrules; i++) {
        const fg_rl_rule_t *r = &s->rules[i];
        const fg_ratelimit_rule_t *c = r->cfg;
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:b, s:s, s:s, s:I, s:I, s:I, s:b, s:I, s:I, s:I, s:I, "
                      "s:I, s:I}",
                      "id", c->id, "name", c->name ? c->name : "", "enabled", c->enabled, "type",
                      type_names[c->type], "scope", scope_names[c->scope], "maxRequests",
                      (json_int_t)c->max_requests, "windowMs", (json_int_t)c->window_ms, "burst",
                      (json_int_t)(c->burst ? c->burst : c->max_requests), "dryRun", c->dry_run,
                      "allowed", (json_int_t)fg_stats_get(r->stats, FG_RLC_ALLOWED), "limited",
                      (json_int_t)fg_stats_get(r->stats, FG_RLC_LIMITED), "dryRunLimited",
                      (json_int_t)fg_stats_get(r->stats, FG_RLC_DRYRUN), "activeKeys",
                      (json_int_t)fg_stats_get(r->stats, FG_RLC_ACTIVE), "evictions",
                      (json_int_t)fg_stats_get(r->stats, FG_RLC_EVICTIONS), "unchecked",
                      (json_int_t)fg_stats_get(r->stats, FG_RLC_UNCHECKED)));
    }
    return json_pack("{s:o, s:o}", "rules", list, "zone", zone_json(s ? s->rl_zone : NULL));
}

static json_t *dyn_entries(const sec_t *s, const fg_acl_t *l, uint64_t now)
{
    json_t *arr = json_array();
    if (s->dyn == NULL)
        return arr;
    fg_acl_dyn_info_t *v = calloc(SHOW_DYNAMIC_MAX, sizeof(*v));
    if (v == NULL)
        return arr;
    size_t n = fg_acl_dyn_list(s->dyn, l->key, now, v, SHOW_DYNAMIC_MAX);
    for (size_t i = 0; i < n; i++) {
        char text[64], entry[80];
        fg_ip_format(&v[i].ip, text, sizeof(text));
        unsigned plen = v[i].plen;
        if (plen == 128)
            snprintf(entry, sizeof(entry), "%s", text);
        else
            snprintf(entry, sizeof(entry), "%s/%u", text,
                     fg_ip_is_v4(&v[i].ip) && plen >= 96 ? plen - 96 : plen);
        json_t *e = json_pack("{s:s, s:I}", "entry", entry, "hits", (json_int_t)v[i].hits);
        json_object_set_new(e, "expiresIn",
                            v[i].expires_ms
                                ? json_integer((json_int_t)((v[i].expires_ms - now + 999) / 1000))
                                : json_null());
        json_array_append_new(arr, e);
    }
    free(v);
    return arr;
}

static json_t *list_json(const sec_t *s, const fg_acl_t *l, uint64_t now)
{
    return json_pack("{s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:o}", "id", l->id, "name",
                     l->cfg && l->cfg->name ? l->cfg->name : "", "type",
                     l->whitelist ? "whitelist" : "blacklist", "enabled", l->enabled, "entries",
                     (json_int_t)(l->cfg ? l->cfg->nentries : 0), "ranges", (json_int_t)l->set.n,
                     "checks", (json_int_t)fg_stats_get(l->stats, FG_ACLC_CHECKS), "hits",
                     (json_int_t)fg_stats_get(l->stats, FG_ACLC_HITS), "denied",
                     (json_int_t)fg_stats_get(l->stats, FG_ACLC_DENIED), "dynamic",
                     dyn_entries(s, l, now));
}

json_t *fg_security_show_acl(const fg_config_t *cfg)
{
    const sec_t *s = cfg->security_compiled;
    json_t *lists = json_array();
    uint64_t now = fg_clock_now_ms();
    for (size_t i = 0; s && i < s->nacls; i++)
        json_array_append_new(lists, list_json(s, &s->acls[i], now));
    if (s && s->autoblock)
        json_array_append_new(lists, list_json(s, &s->acls[s->nacls], now));
    return json_pack("{s:o, s:o}", "lists", lists, "zone",
                     zone_json(s && s->dyn ? fg_acl_dyn_table(s->dyn) : NULL));
}

json_t *fg_security_show_abnormal(const fg_config_t *cfg)
{
    const sec_t *s = cfg->security_compiled;
    const fg_abnormal_config_t *a = &cfg->abnormal;
    if (s == NULL || s->abn_zone == NULL)
        return json_pack("{s:b, s:[]}", "enabled", 0, "addresses");
    fg_abnormal_info_t *v = calloc(SHOW_ABNORMAL_MAX, sizeof(*v));
    json_t *arr = json_array();
    uint64_t now = fg_clock_now_ms();
    size_t n = v ? fg_abnormal_top(s->abn_zone, now, a->window_ms, 1, v, SHOW_ABNORMAL_MAX) : 0;
    for (size_t i = 0; i < n; i++) {
        char text[64];
        fg_ip_format(&v[i].ip, text, sizeof(text));
        int blocked = v[i].blocked_until > now;
        json_array_append_new(
            arr,
            json_pack("{s:s, s:I, s:I, s:b, s:b, s:I, s:I}", "ip", text, "errors",
                      (json_int_t)v[i].count, "total", (json_int_t)v[i].total, "abnormal",
                      v[i].count >= a->threshold, "blocked", blocked, "blockedFor",
                      (json_int_t)(blocked ? (v[i].blocked_until - now + 999) / 1000 : 0),
                      "lastSeenMsAgo", (json_int_t)(now > v[i].last_ms ? now - v[i].last_ms : 0)));
    }
    free(v);
    return json_pack("{s:b, s:I, s:I, s:{s:b, s:I, s:I}, s:o, s:o}", "enabled", 1, "windowMs",
                     (json_int_t)a->window_ms, "threshold", (json_int_t)a->threshold, "autoBlock",
                     "enabled", a->autoblock, "threshold", (json_int_t)a->autoblock_threshold,
                     "durationMs", (json_int_t)a->autoblock_ms, "addresses", arr, "zone",
                     zone_json(s->abn_zone));
}

static json_t *cmd_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *cmd_error(const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:s}", "error", msg);
}

json_t *fg_security_acl_command(const fg_config_t *cfg, int add, const char *args)
{
    const sec_t *s = cfg->security_compiled;
    const char *verb = add ? "add acl" : "del acl";
    char list_id[128], addr[128], extra[8];
    int nf = sscanf(args, "%127s %127s %7s", list_id, addr, extra);
    if (nf != 2)
        return cmd_error("usage: %s LIST-ID ADDRESS|CIDR", verb);
    fg_acl_t *l = s ? find_list(s, list_id) : NULL;
    if (l == NULL || s->dyn == NULL)
        return cmd_error("unknown access-control list \"%s\"", list_id);
    fg_iprange_t r;
    int plen;
    char why[160];
    if (fg_iprange_parse_cidr(addr, &r, &plen, why, sizeof(why)) < 0) {
        /* The command takes an address or a CIDR; say so for a well-formed range, and report
         * anything else as the address it fails to be. */
        char ignored[160];
        if (fg_iprange_parse(addr, &r, &plen, ignored, sizeof(ignored)) == 0)
            return cmd_error("\"%s\": ranges (a-b) belong in the configuration file; use an "
                             "address or a CIDR",
                             addr);
        return cmd_error("%s", why);
    }
    int rc, existed;
    if (add) {
        rc = fg_acl_dyn_add(s->dyn, l->key, &r.lo, (unsigned)plen, 0, fg_clock_now_ms());
        existed = rc == 1;
    } else {
        rc = fg_acl_dyn_del(s->dyn, l->key, &r.lo, (unsigned)plen);
        existed = rc == 0;
        if (rc == -ENOENT && fg_iprange_set_contains(&l->set, &r.lo))
            return cmd_error("\"%s\" comes from the configuration file of list \"%s\": remove "
                             "it there and reload",
                             addr, list_id);
        else if (rc == -ENOENT)
            return cmd_error("no dynamic entry \"%s\" in list \"%s\"", addr, list_id);
    }
    if (rc == -ENOSPC)
        return cmd_error("the access-control zone is full (shm.accessControlZone), or %d other "
                         "lists already hold dynamic entries",
                         FG_ACL_DYN_LISTS);
    if (rc < 0)
        return cmd_error("cannot update list \"%s\": %s", list_id, strerror(-rc));
    return json_pack("{s:b, s:s, s:s, s:s, s:b}", "ok", 1, "list", list_id, "entry", addr, "action",
                     add ? "added" : "deleted", "existed", existed);
}

json_t *fg_security_show_zones(fg_shm_t *shm)
{
    fg_shm_zone_info_t z[FG_SHM_MAX_ZONES];
    size_t n = fg_shm_zone_list(shm, z, FG_SHM_MAX_ZONES);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        fg_shm_hash_t *h = NULL;
        uint64_t entries = 0, used = 0, slots = 0, ev = 0, fails = 0;
        if (z[i].kind == FG_ZONE_RATELIMIT || z[i].kind == FG_ZONE_ABNORMAL)
            h = z[i].mem;
        else if (z[i].kind == FG_ZONE_ACL)
            h = fg_acl_dyn_table(z[i].mem);
        if (h) {
            fg_shm_hash_stats_t st;
            fg_shm_hash_get_stats(h, &st);
            entries = st.entries;
            slots = st.slots;
            ev = st.evictions;
            fails = st.alloc_failures;
            used = slots ? (uint64_t)((double)z[i].size * (double)entries / (double)slots) : 0;
        } else if (z[i].kind == FG_ZONE_STATS) {
            entries = fg_stats_used(z[i].mem);
            slots = fg_stats_capacity(z[i].mem);
            used = slots ? z[i].size * entries / slots : 0;
        }
        json_array_append_new(
            arr, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "name", z[i].name,
                           "size", (json_int_t)z[i].size, "used", (json_int_t)used, "entries",
                           (json_int_t)entries, "capacity", (json_int_t)slots, "evictions",
                           (json_int_t)ev, "allocationFailures", (json_int_t)fails, "offset",
                           (json_int_t)z[i].offset, "firstGeneration", (json_int_t)z[i].min_gen,
                           "lastGeneration", (json_int_t)z[i].max_gen));
    }
    return arr;
}
