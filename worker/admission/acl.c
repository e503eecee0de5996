#include "worker/admission/acl.h"

#include <string.h>

#include "common/hash.h"

uint64_t fg_acl_list_key(const char *id)
{
    uint64_t h = fg_hash_fnv1a(FG_HASH_FNV_BASIS, id, strlen(id));
    return h ? h : 1; /* 0 means "every list" to fg_acl_dyn_list */
}

int fg_acl_compile(fg_acl_t *l, const fg_acl_list_t *cfg)
{
    memset(l, 0, sizeof(*l));
    fg_iprange_set_init(&l->set);
    l->cfg = cfg;
    l->id = cfg->id;
    l->whitelist = cfg->whitelist;
    l->enabled = cfg->enabled;
    l->key = fg_acl_list_key(cfg->id);
    for (size_t i = 0; i < cfg->nentries; i++) {
        fg_iprange_t r;
        int plen;
        char err[160];
        if (fg_iprange_parse(cfg->entries[i], &r, &plen, err, sizeof(err)) < 0)
            continue; /* validated at load; nothing else can fail here */
        if (fg_iprange_set_add(&l->set, &r) < 0)
            return -1;
    }
    fg_iprange_set_finish(&l->set);
    return 0;
}

void fg_acl_free(fg_acl_t *l)
{
    fg_iprange_set_free(&l->set);
}

int fg_acl_match(fg_acl_t *l, fg_acl_dyn_t *dyn, const fg_ip_t *ip, uint64_t now_ms)
{
    fg_stats_add(l->stats, FG_ACLC_CHECKS, 1);
    int hit = fg_iprange_set_contains(&l->set, ip) ||
              (dyn != NULL && fg_acl_dyn_match(dyn, l->key, ip, now_ms));
    if (hit)
        fg_stats_add(l->stats, FG_ACLC_HITS, 1);
    return hit;
}

/* Dynamic entries are counted in the acl zone itself: a count kept anywhere else could
 * outlive them (a rebuilt zone) and leave a whitelist denying everyone. */
static int nonempty(const fg_acl_t *l, fg_acl_dyn_t *dyn)
{
    return l->set.n > 0 || (dyn != NULL && fg_acl_dyn_has(dyn, l->key));
}

int fg_acl_verdict(fg_acl_t *const *lists, size_t n, fg_acl_dyn_t *dyn, const fg_ip_t *ip,
                   uint64_t now_ms, const fg_acl_t **deciding)
{
    const fg_acl_t *first_white = NULL;
    *deciding = NULL;
    for (size_t i = 0; i < n; i++) {
        fg_acl_t *l = lists[i];
        if (!l->enabled || l->whitelist)
            continue;
        if (fg_acl_match(l, dyn, ip, now_ms)) {
            fg_stats_add(l->stats, FG_ACLC_DENIED, 1);
            *deciding = l;
            return 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        fg_acl_t *l = lists[i];
        if (!l->enabled || !l->whitelist || !nonempty(l, dyn))
            continue; /* an empty whitelist admits everyone, as in FastGateway */
        if (fg_acl_match(l, dyn, ip, now_ms))
            return 1;
        if (first_white == NULL)
            first_white = l;
    }
    if (first_white) {
        fg_stats_add(first_white->stats, FG_ACLC_DENIED, 1);
        *deciding = first_white;
        return 0;
    }
    return 1;
}
