#include "tables/security_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "shm/abnormal.h"
#include "shm/zone.h"

#define STATS_ZONE_SIZE (1024 * 1024)
#define STATS_LAYOUT 1
#define ACL_LAYOUT 2
#define ABNORMAL_LAYOUT 1

enum { STATS_KIND_RULE = 1, STATS_KIND_LIST };

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
        s = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    return s;
}

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
static int build_zones(fg_security_table_t *s, const fg_config_t *cfg, fg_shm_t *shm, char *err,
                       size_t errlen)
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

static int build_rules_lists(fg_security_table_t *s, const fg_config_t *cfg, char *err,
                             size_t errlen)
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
    ab->id = FG_SECURITY_AUTOBLOCK_ID;
    ab->enabled = 1;
    ab->key = fg_acl_list_key(FG_SECURITY_AUTOBLOCK_ID);
    ab->stats = fg_stats_slot(s->stats, STATS_KIND_LIST, ab->key, ab->id, s->gen);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int plan_add_rule(fg_security_plan_t *p, fg_rl_rule_t *r)
{
    if (!r->cfg->enabled)
        return 0;
    for (size_t i = 0; i < p->nrules; i++)
        if (p->rules[i] == r)
            return 0;
    p->rules[p->nrules++] = r;
    return 0;
}

static void plan_add_list(fg_security_plan_t *p, fg_acl_t *l)
{
    if (!l->enabled)
        return;
    for (size_t i = 0; i < p->nacls; i++)
        if (p->acls[i] == l)
            return;
    p->acls[p->nacls++] = l;
}

static fg_rl_rule_t *find_rule(fg_security_table_t *s, const char *id)
{
    for (size_t i = 0; i < s->nrules; i++)
        if (strcmp(s->rules[i].cfg->id, id) == 0)
            return &s->rules[i];
    return NULL;
}

fg_acl_t *fg_security_table_list(const fg_security_table_t *s, const char *id)
{
    for (size_t i = 0; i < s->nacls; i++)
        if (strcmp(s->acls[i].id, id) == 0)
            return &s->acls[i];
    if (s->autoblock && strcmp(id, FG_SECURITY_AUTOBLOCK_ID) == 0)
        return &s->acls[s->nacls];
    return NULL;
}

static void plan_attach(fg_security_table_t *s, fg_security_plan_t *p,
                        const fg_security_attach_t *a)
{
    for (size_t i = 0; i < a->nratelimits; i++) {
        fg_rl_rule_t *r = find_rule(s, a->ratelimits[i]);
        if (r)
            plan_add_rule(p, r);
    }
    for (size_t i = 0; i < a->nacls; i++) {
        fg_acl_t *l = fg_security_table_list(s, a->acls[i]);
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

static int build_plans(fg_security_table_t *s, const fg_config_t *cfg)
{
    size_t per = s->nroutes + 1, cap_r = s->nrules + 1, cap_l = s->nacls + 2;
    s->plans = calloc(s->nservers * per + 1, sizeof(*s->plans));
    if (s->plans == NULL)
        return -1;
    for (size_t si = 0; si < s->nservers; si++) {
        const fg_server_t *srv = &cfg->servers[si];
        for (size_t ri = 0; ri < per; ri++) {
            fg_security_plan_t *p = &s->plans[si * per + ri];
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

static int build_trusted(fg_security_table_t *s, const fg_config_t *cfg)
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

static void sec_free(fg_security_table_t *s)
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

int fg_security_table_build(fg_config_t *cfg, fg_shm_t *shm, uint64_t gen, char *err, size_t errlen)
{
    int trusted = 0;
    for (size_t i = 0; i < cfg->nservers; i++)
        trusted |= cfg->servers[i].ntrusted_proxies > 0;
    if (cfg->nratelimits == 0 && cfg->nacls == 0 && !cfg->abnormal.enabled && !trusted) {
        cfg->security_compiled = NULL;
        return 0;
    }
    fg_security_table_t *s = calloc(1, sizeof(*s));
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

void fg_security_table_free(fg_config_t *cfg)
{
    sec_free(cfg->security_compiled);
    cfg->security_compiled = NULL;
}
