/* Configuration: rate limits, access-control lists, where they attach (top-level "security",
 * servers, routes), the client address source, abnormal-IP tracking and the shm zone sizes
 * they use. Schema: docs/config.md, section "Security". */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/config_impl.h"
#include "common/iprange.h"

#define MIB (1024ULL * 1024ULL)
#define MAX_REQUESTS 1000000000LL
#define MAX_WINDOW_MS (30ULL * 24 * 3600 * 1000)

/* The list that abnormal-IP autoBlock fills; operators can also "add acl autoBlock IP". */
#define AUTOBLOCK_LIST "autoBlock"

static void free_strings(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_attach(fg_security_attach_t *a)
{
    free_strings(a->ratelimits, a->nratelimits);
    free_strings(a->acls, a->nacls);
    memset(a, 0, sizeof(*a));
}

/* "rateLimits": [ids], "accessControl": [ids] in obj. */
static int load_attach(fg_config_ctx_t *c, const json_t *obj, fg_security_attach_t *a)
{
    if (fg_config_get_strings(c, obj, "rateLimits", &a->ratelimits, &a->nratelimits) < 0 ||
        fg_config_get_strings(c, obj, "accessControl", &a->acls, &a->nacls) < 0)
        return -1;
    return 0;
}

/* An ipPattern is a CIDR (has '/') or a glob: "*", "prefix*", "*suffix" or exact. */
static int check_pattern(fg_config_ctx_t *c, const char *key, const char *p, int ip)
{
    size_t n = strlen(p);
    const char *star = strchr(p, '*');
    if (ip && strchr(p, '/')) {
        fg_iprange_t r;
        int plen;
        char why[160];
        if (fg_iprange_parse(p, &r, &plen, why, sizeof(why)) < 0 || plen < 0)
            return fg_config_fail(c, key, "invalid CIDR %s", why);
        size_t mark = fg_config_push_key(c, key);
        fg_config_warn_cidr(c, p);
        fg_config_pop(c, mark);
        return 0;
    }
    if (star && !(n == 1 || star == p + n - 1 || (star == p && strchr(p + 1, '*') == NULL)))
        return fg_config_fail(
            c, key, "\"%s\": '*' may only stand alone, end a prefix or start a suffix", p);
    return 0;
}

static int load_rule(fg_config_ctx_t *c, const json_t *o, fg_ratelimit_rule_t *r)
{
    static const char *const keys[] = {"id",     "name",        "enabled",     "type",
                                       "scope",  "header",      "maxRequests", "window",
                                       "burst",  "pathPattern", "ipPattern",   "methods",
                                       "dryRun", "ipv6Prefix",  NULL};
    static const char *const types[] = {"SlidingWindow", "FixedWindow", "TokenBucket", NULL};
    static const char *const scopes[] = {"Global", "PerIp", "PerRoute", "PerHeader", NULL};
    long long maxr = 0, burst = 0, v6prefix = 64;

    r->enabled = 1;
    r->scope = FG_RLS_PER_IP;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &r->id) < 0 ||
        fg_config_get_string(c, o, "name", 0, &r->name) < 0 ||
        fg_config_get_bool(c, o, "enabled", &r->enabled) < 0 ||
        fg_config_get_enum(c, o, "type", types, &r->type) < 0 ||
        fg_config_get_enum(c, o, "scope", scopes, &r->scope) < 0 ||
        fg_config_get_string(c, o, "header", 1, &r->header) < 0 ||
        fg_config_get_bool(c, o, "dryRun", &r->dry_run) < 0 ||
        fg_config_get_string(c, o, "pathPattern", 1, &r->path_pattern) < 0 ||
        fg_config_get_string(c, o, "ipPattern", 1, &r->ip_pattern) < 0 ||
        fg_config_get_strings(c, o, "methods", &r->methods, &r->nmethods) < 0)
        return -1;
    int rc = fg_config_get_int(c, o, "maxRequests", 1, MAX_REQUESTS, &maxr);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return fg_config_fail(c, "maxRequests", "is required");
    r->max_requests = (uint64_t)maxr;
    rc = fg_config_get_duration(c, o, "window", &r->window_ms);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return fg_config_fail(c, "window", "is required");
    if (r->window_ms == 0 || r->window_ms > MAX_WINDOW_MS)
        return fg_config_fail(c, "window", "must be between 1ms and 30d");
    rc = fg_config_get_int(c, o, "burst", 1, MAX_REQUESTS, &burst);
    if (rc < 0)
        return -1;
    if (rc == 1 && r->type != FG_RLT_TOKEN)
        return fg_config_fail(c, "burst", "only applies to type \"TokenBucket\"");
    r->burst = (uint64_t)burst;
    rc = fg_config_get_int(c, o, "ipv6Prefix", 1, 128, &v6prefix);
    if (rc < 0)
        return -1;
    if (rc == 1 && r->scope != FG_RLS_PER_IP)
        return fg_config_fail(c, "ipv6Prefix", "only applies to scope \"PerIp\"");
    r->ipv6_prefix = (unsigned)v6prefix;
    if (r->scope == FG_RLS_PER_HEADER && r->header == NULL)
        return fg_config_fail(c, "header", "is required with scope \"PerHeader\"");
    if (r->scope != FG_RLS_PER_HEADER && r->header)
        return fg_config_fail(c, "header", "only applies to scope \"PerHeader\"");
    if (r->header && !fg_config_is_token(r->header))
        return fg_config_fail(c, "header", "\"%s\" is not a valid header name", r->header);
    if ((r->path_pattern && check_pattern(c, "pathPattern", r->path_pattern, 0) < 0) ||
        (r->ip_pattern && check_pattern(c, "ipPattern", r->ip_pattern, 1) < 0))
        return -1;
    for (size_t i = 0; i < r->nmethods; i++) {
        if (!fg_config_is_token(r->methods[i]))
            return fg_config_fail(c, "methods", "\"%s\" is not a method", r->methods[i]);
        for (char *p = r->methods[i]; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
    }
    return 0;
}

/* key's n strings v are addresses or CIDR ranges (fg_iprange_parse); a range with host bits set
 * is warned about. Returns 0, or -1 with the parser's reason under key[i]. */
static int check_ranges(fg_config_ctx_t *c, const char *key, char *const *v, size_t n)
{
    size_t mark = fg_config_push_key(c, key);
    for (size_t i = 0; i < n; i++) {
        fg_iprange_t r;
        int plen;
        char why[160];
        size_t m = fg_config_push_index(c, i);
        if (fg_iprange_parse(v[i], &r, &plen, why, sizeof(why)) < 0)
            return fg_config_fail(c, NULL, "%s", why);
        fg_config_warn_cidr(c, v[i]);
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return 0;
}

static int load_list(fg_config_ctx_t *c, const json_t *o, fg_acl_list_t *l)
{
    static const char *const keys[] = {"id", "name", "enabled", "type", "entries", NULL};
    static const char *const types[] = {"blacklist", "whitelist", NULL};
    l->enabled = 1;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &l->id) < 0 ||
        fg_config_get_string(c, o, "name", 0, &l->name) < 0 ||
        fg_config_get_bool(c, o, "enabled", &l->enabled) < 0)
        return -1;
    int rc = fg_config_get_enum(c, o, "type", types, &l->whitelist);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return fg_config_fail(c, "type", "is required (\"blacklist\" or \"whitelist\")");
    if (strcmp(l->id, AUTOBLOCK_LIST) == 0)
        return fg_config_fail(c, "id", "\"%s\" is reserved for abnormalIp.autoBlock",
                              AUTOBLOCK_LIST);
    if (fg_config_get_strings(c, o, "entries", &l->entries, &l->nentries) < 0)
        return -1;
    return check_ranges(c, "entries", l->entries, l->nentries);
}

static int load_rule_item(fg_config_ctx_t *c, const json_t *o, void *out)
{
    return load_rule(c, o, out);
}

static int load_list_item(fg_config_ctx_t *c, const json_t *o, void *out)
{
    return load_list(c, o, out);
}

static int load_rules(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    void *items;
    int rc = fg_config_load_list(c, root, "rateLimits", sizeof(fg_ratelimit_rule_t),
                                 offsetof(fg_ratelimit_rule_t, id), load_rule_item, &items,
                                 &cfg->nratelimits);
    cfg->ratelimits = items;
    return rc;
}

static int load_lists(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    void *items;
    int rc = fg_config_load_list(c, root, "accessControl", sizeof(fg_acl_list_t),
                                 offsetof(fg_acl_list_t, id), load_list_item, &items, &cfg->nacls);
    cfg->acls = items;
    return rc;
}

static int load_abnormal(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const keys[] = {"enabled", "window", "threshold", "autoBlock", NULL};
    static const char *const ab_keys[] = {"enabled", "threshold", "duration", NULL};
    fg_abnormal_config_t *a = &c->cfg->abnormal;
    json_t *o = NULL, *ab = NULL;
    long long th = 20, abth = 0;

    a->window_ms = 60 * 1000;
    a->autoblock_ms = 30 * 60 * 1000;
    if (fg_config_get_object(c, root, "abnormalIp", keys, &o) <= 0)
        return o ? 0 : (json_object_get(root, "abnormalIp") ? -1 : 0);
    a->enabled = 1;
    size_t mark = fg_config_push_key(c, "abnormalIp");
    if (fg_config_get_bool(c, o, "enabled", &a->enabled) < 0 ||
        fg_config_get_duration(c, o, "window", &a->window_ms) < 0 ||
        fg_config_get_int(c, o, "threshold", 1, MAX_REQUESTS, &th) < 0 ||
        fg_config_get_object(c, o, "autoBlock", ab_keys, &ab) < 0)
        return -1;
    if (a->window_ms == 0 || a->window_ms > MAX_WINDOW_MS)
        return fg_config_fail(c, "window", "must be between 1ms and 30d");
    a->threshold = (uint64_t)th;
    abth = th;
    fg_config_push_key(c, "autoBlock");
    if (fg_config_get_bool(c, ab, "enabled", &a->autoblock) < 0 ||
        fg_config_get_int(c, ab, "threshold", 1, MAX_REQUESTS, &abth) < 0 ||
        fg_config_get_duration(c, ab, "duration", &a->autoblock_ms) < 0)
        return -1;
    if (a->autoblock_ms == 0)
        return fg_config_fail(c, "duration", "must be greater than 0");
    if (ab && json_object_get(ab, "enabled") == NULL)
        a->autoblock = 1; /* an autoBlock object means "on" unless it says otherwise */
    a->autoblock_threshold = (uint64_t)abth;
    fg_config_pop(c, mark);
    return 0;
}

static int load_zone_size(fg_config_ctx_t *c, const json_t *shm, const char *key, size_t *out)
{
    uint64_t v = *out;
    int rc = fg_config_get_size(c, shm, key, &v);
    if (rc < 0)
        return -1;
    if (v < 64 * 1024 || v > 4096 * MIB)
        return fg_config_fail(c, key, "must be between 64k and 4g");
    *out = (size_t)v;
    return 0;
}

int fg_config_load_security(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    json_t *sec = NULL, *shm = json_object_get(root, "shm");
    static const char *const sec_keys[] = {"rateLimits", "accessControl", NULL};

    cfg->shm_ratelimit_zone = 8 * MIB;
    cfg->shm_acl_zone = 1 * MIB;
    cfg->shm_abnormal_zone = 4 * MIB;
    size_t mark = fg_config_push_key(c, "shm");
    if (load_zone_size(c, shm, "rateLimitZone", &cfg->shm_ratelimit_zone) < 0 ||
        load_zone_size(c, shm, "accessControlZone", &cfg->shm_acl_zone) < 0 ||
        load_zone_size(c, shm, "abnormalIpZone", &cfg->shm_abnormal_zone) < 0)
        return -1;
    fg_config_pop(c, mark);
    if (load_rules(c, root) < 0 || load_lists(c, root) < 0 || load_abnormal(c, root) < 0 ||
        fg_config_get_object(c, root, "security", sec_keys, &sec) < 0)
        return -1;
    /* Zones exist only for features in use; each must fit twice, old beside new, during a
     * reload that changes it. 1m is kept for the statistics table. */
    uint64_t zones = MIB;
    if (cfg->nratelimits)
        zones += cfg->shm_ratelimit_zone;
    if (cfg->nacls || (cfg->abnormal.enabled && cfg->abnormal.autoblock))
        zones += cfg->shm_acl_zone;
    if (cfg->abnormal.enabled)
        zones += cfg->shm_abnormal_zone;
    if (zones > MIB && 2 * zones > cfg->shm_size)
        return fg_config_fail(c, "shm",
                              "size: the zones in use (%llu bytes with the statistics "
                              "table) must fit twice in shm.size (%zu), so that a "
                              "reload can build changed zones beside the old ones",
                              (unsigned long long)zones, cfg->shm_size);
    mark = fg_config_push_key(c, "security");
    int rc = load_attach(c, sec, &cfg->security);
    fg_config_pop(c, mark);
    return rc;
}

/* "proxyProtocol": true | {timeout, trustedPeers}. */
static int load_proxy_protocol(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const keys[] = {"timeout", "trustedPeers", NULL};
    fg_proxy_protocol_config_t *pp = &s->proxy_protocol;
    json_t *v = json_object_get(srv, "proxyProtocol"), *o = NULL;
    if (v == NULL || json_is_false(v))
        return 0;
    if (!json_is_true(v) && !json_is_object(v))
        return fg_config_fail(c, "proxyProtocol", "expected true or an object, got %s",
                              fg_config_type_name(v));
    if (json_is_object(v) && fg_config_get_object(c, srv, "proxyProtocol", keys, &o) < 0)
        return -1;
    pp->enabled = 1;
    pp->timeout_ms = 5000;
    fg_iprange_set_init(&pp->trusted);
    size_t mark = fg_config_push_key(c, "proxyProtocol");
    int rc = -1;
    if (fg_config_get_duration(c, o, "timeout", &pp->timeout_ms) < 0 ||
        fg_config_get_strings(c, o, "trustedPeers", &pp->trusted_peers, &pp->ntrusted_peers) < 0 ||
        check_ranges(c, "trustedPeers", pp->trusted_peers, pp->ntrusted_peers) < 0)
        goto out;
    if (pp->timeout_ms == 0) {
        fg_config_fail(c, "timeout", "must be greater than 0");
        goto out;
    }
    if (pp->ntrusted_peers == 0 && o != NULL && json_object_get(o, "trustedPeers") != NULL) {
        fg_config_fail(c, "trustedPeers",
                       "is empty: leave it out to let any peer connect, or list the balancers");
        goto out;
    }
    for (size_t i = 0; i < pp->ntrusted_peers; i++) {
        fg_iprange_t r;
        int plen;
        char why[160];
        if (fg_iprange_parse(pp->trusted_peers[i], &r, &plen, why, sizeof(why)) < 0 ||
            fg_iprange_set_add(&pp->trusted, &r) < 0)
            abort(); /* parsed above; only memory can fail */
    }
    fg_iprange_set_finish(&pp->trusted);
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

int fg_config_load_server_security(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const sources[] = {"socket", "X-Forwarded-For", "X-Real-IP",
                                          "CF-Connecting-IP", NULL};
    if (load_attach(c, srv, &s->security) < 0 ||
        fg_config_get_enum(c, srv, "clientIpSource", sources, &s->client_ip_source) < 0 ||
        fg_config_get_strings(c, srv, "trustedProxies", &s->trusted_proxies, &s->ntrusted_proxies) <
            0)
        return -1;
    if (check_ranges(c, "trustedProxies", s->trusted_proxies, s->ntrusted_proxies) < 0)
        return -1;
    if (s->client_ip_source != FG_CIP_SOCKET && s->ntrusted_proxies == 0)
        return fg_config_fail(c, "trustedProxies",
                              "is required when clientIpSource is not \"socket\" (a forwarded "
                              "header is believed only from these peers)");
    return load_proxy_protocol(c, srv, s);
}

int fg_config_load_route_security(fg_config_ctx_t *c, const json_t *route, fg_route_t *r)
{
    return load_attach(c, route, &r->security);
}

/* Indexes of cfg->ratelimits and cfg->acls by id, and which of them something attaches. */
typedef struct {
    fg_config_index_t *rules, *acls;
    unsigned char *rule_used, *acl_used;
} attach_index_t;

/* Every attached id must name a rule or a list; the path names where it is attached. */
static int resolve(fg_config_ctx_t *c, const fg_security_attach_t *a, attach_index_t *ix)
{
    size_t pos;
    for (size_t i = 0; i < a->nratelimits; i++) {
        if (fg_config_index_find(ix->rules, a->ratelimits[i], &pos)) {
            ix->rule_used[pos] = 1;
        } else {
            fg_config_push_key(c, "rateLimits");
            fg_config_push_index(c, i);
            return fg_config_fail(c, NULL, "unknown rate limit \"%s\" (not in \"rateLimits\")",
                                  a->ratelimits[i]);
        }
    }
    for (size_t i = 0; i < a->nacls; i++) {
        if (fg_config_index_find(ix->acls, a->acls[i], &pos)) {
            ix->acl_used[pos] = 1;
        } else {
            fg_config_push_key(c, "accessControl");
            fg_config_push_index(c, i);
            return fg_config_fail(c, NULL,
                                  "unknown access-control list \"%s\" (not in \"accessControl\")",
                                  a->acls[i]);
        }
    }
    return 0;
}

static int resolve_all(fg_config_ctx_t *c, attach_index_t *ix)
{
    fg_config_t *cfg = c->cfg;
    size_t mark = fg_config_push_key(c, "security");
    if (resolve(c, &cfg->security, ix) < 0)
        return -1;
    fg_config_pop(c, mark);
    for (size_t i = 0; i < cfg->nservers; i++) {
        mark = fg_config_push_key(c, "servers");
        fg_config_push_index(c, i);
        if (resolve(c, &cfg->servers[i].security, ix) < 0)
            return -1;
        fg_config_pop(c, mark);
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        mark = fg_config_push_key(c, "routes");
        fg_config_push_index(c, i);
        if (resolve(c, &cfg->routes[i].security, ix) < 0)
            return -1;
        fg_config_pop(c, mark);
    }
    return 0;
}

static void warn_one(fg_config_ctx_t *c, const char *key, size_t i, const char *kind,
                     const char *id)
{
    size_t mark = fg_config_push_key(c, key);
    fg_config_push_index(c, i);
    fg_config_warn(c, NULL,
                   "%s \"%s\" is attached to no route, server or \"security\" section: it has "
                   "no effect",
                   kind, id);
    fg_config_pop(c, mark);
}

/* A rule or list nothing attaches does nothing: say so, since it is usually a forgotten
 * attachment rather than intent. */
static void warn_unattached(fg_config_ctx_t *c, const attach_index_t *ix)
{
    const fg_config_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->nratelimits; i++)
        if (!ix->rule_used[i])
            warn_one(c, "rateLimits", i, "rate limit", cfg->ratelimits[i].id);
    for (size_t i = 0; i < cfg->nacls; i++)
        if (!ix->acl_used[i])
            warn_one(c, "accessControl", i, "access-control list", cfg->acls[i].id);
}

int fg_config_resolve_security(fg_config_ctx_t *c)
{
    fg_config_t *cfg = c->cfg;
    attach_index_t ix = {
        .rules = fg_config_index_of(cfg->ratelimits, cfg->nratelimits, sizeof(fg_ratelimit_rule_t),
                                    offsetof(fg_ratelimit_rule_t, id)),
        .acls = fg_config_index_of(cfg->acls, cfg->nacls, sizeof(fg_acl_list_t),
                                   offsetof(fg_acl_list_t, id)),
        .rule_used = fg_config_xcalloc(cfg->nratelimits + 1, 1),
        .acl_used = fg_config_xcalloc(cfg->nacls + 1, 1),
    };
    int rc = resolve_all(c, &ix);
    if (rc == 0)
        warn_unattached(c, &ix);
    free(ix.acl_used);
    free(ix.rule_used);
    fg_config_index_free(ix.acls);
    fg_config_index_free(ix.rules);
    return rc;
}

void fg_config_free_security(fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nratelimits; i++) {
        fg_ratelimit_rule_t *r = &cfg->ratelimits[i];
        free(r->id);
        free(r->name);
        free(r->header);
        free(r->path_pattern);
        free(r->ip_pattern);
        free_strings(r->methods, r->nmethods);
    }
    free(cfg->ratelimits);
    for (size_t i = 0; i < cfg->nacls; i++) {
        fg_acl_list_t *l = &cfg->acls[i];
        free(l->id);
        free(l->name);
        free_strings(l->entries, l->nentries);
    }
    free(cfg->acls);
    free_attach(&cfg->security);
    for (size_t i = 0; i < cfg->nservers; i++) {
        free_attach(&cfg->servers[i].security);
        free_strings(cfg->servers[i].trusted_proxies, cfg->servers[i].ntrusted_proxies);
        fg_proxy_protocol_config_t *pp = &cfg->servers[i].proxy_protocol;
        free_strings(pp->trusted_peers, pp->ntrusted_peers);
        if (pp->enabled)
            fg_iprange_set_free(&pp->trusted);
    }
    for (size_t i = 0; i < cfg->nroutes; i++)
        free_attach(&cfg->routes[i].security);
    cfg->ratelimits = NULL;
    cfg->acls = NULL;
    cfg->nratelimits = cfg->nacls = 0;
}
