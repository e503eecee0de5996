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
#include "tables/security_table.h"
#include "worker/core/context.h"
#include "worker/core/clock.h"

#define SHOW_ABNORMAL_MAX 100
#define SHOW_DYNAMIC_MAX 1000

/* ---- worker ---- */

void fg_security_worker_init(const fg_config_t *cfg)
{
#ifdef FG_TEST_HOOKS
    const char *hook = getenv("FG_TEST_RATELIMIT_HOLD");
    if (hook && *hook && fg_ratelimit_set_fault_hook(hook) < 0)
        fg_log_error("FG_TEST_RATELIMIT_HOLD: not an absolute file name; test hook not armed");
#endif
}

static int resolve_ip(const fg_security_table_t *s, fg_request_t *req)
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
    const fg_security_table_t *s = req->worker ? req->worker->cfg->security_compiled : NULL;
    if (s == NULL || req->server == NULL)
        return 0;
    size_t si = (size_t)(req->server - s->cfg->servers);
    size_t ri = req->route ? (size_t)(req->route - s->cfg->routes) : s->nroutes;
    if (si >= s->nservers || ri > s->nroutes)
        return 0;
    const fg_security_plan_t *p = &s->plans[si * (s->nroutes + 1) + ri];
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
    const fg_security_table_t *s =
        req->worker && req->worker->cfg ? req->worker->cfg->security_compiled : NULL;
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
        int rc = fg_acl_dyn_add(s->dyn, fg_acl_list_key(FG_SECURITY_AUTOBLOCK_ID), &ip, 128,
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
    const fg_security_table_t *s = cfg->security_compiled;
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

static json_t *dyn_entries(const fg_security_table_t *s, const fg_acl_t *l, uint64_t now)
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

static json_t *list_json(const fg_security_table_t *s, const fg_acl_t *l, uint64_t now)
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
    const fg_security_table_t *s = cfg->security_compiled;
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
    const fg_security_table_t *s = cfg->security_compiled;
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
    const fg_security_table_t *s = cfg->security_compiled;
    const char *verb = add ? "add acl" : "del acl";
    char list_id[128], addr[128], extra[8];
    int nf = sscanf(args, "%127s %127s %7s", list_id, addr, extra);
    if (nf != 2)
        return cmd_error("usage: %s LIST-ID ADDRESS|CIDR", verb);
    fg_acl_t *l = s ? fg_security_table_list(s, list_id) : NULL;
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
