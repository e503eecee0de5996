/* Access-control lists (blacklist / whitelist), compiled in the master into sorted address
 * range sets (common/iprange.h) plus, for each list, the dynamic entries in shm that `add acl`
 * and abnormal-IP autoBlock write (shm/abnormal.h). The verdict for a request, given the lists
 * attached to it (global, its server, its route):
 *   - any enabled blacklist containing the address: deny;
 *   - else if any enabled whitelist that is non-empty is attached: allow only when one of them
 *     contains the address;
 *   - else allow.
 * A whitelist is "non-empty" when it has entries in the file or dynamic ones. */
#ifndef FG_WORKER_ACL_H
#define FG_WORKER_ACL_H

#include <stdint.h>

#include "common/config.h"
#include "common/iprange.h"
#include "shm/abnormal.h"
#include "shm/stats.h"

/* Counters of a list's statistics slot. */
enum { FG_ACLC_CHECKS = 0, FG_ACLC_HITS, FG_ACLC_DENIED };

typedef struct {
    const fg_acl_list_t *cfg; /* NULL for the built-in autoBlock list */
    const char *id;
    int whitelist;
    int enabled;
    uint64_t key; /* fg_acl_list_key(id): names the list in shm */
    fg_iprange_set_t set;
    fg_stats_slot_t *stats;
} fg_acl_t;

uint64_t fg_acl_list_key(const char *id);
/* Build l from cfg (entries were validated at load). Returns 0 or -1 (out of memory). */
int fg_acl_compile(fg_acl_t *l, const fg_acl_list_t *cfg);
void fg_acl_free(fg_acl_t *l);
/* 1 when ip is in l (file entries or live dynamic ones; dyn may be NULL). Counts a hit. */
int fg_acl_match(fg_acl_t *l, fg_acl_dyn_t *dyn, const fg_ip_t *ip, uint64_t now_ms);
/* The verdict over lists[0..n) (duplicates allowed, disabled ones skipped): 1 allow, 0 deny.
 * *deciding receives the list that decided a denial. */
int fg_acl_verdict(fg_acl_t *const *lists, size_t n, fg_acl_dyn_t *dyn, const fg_ip_t *ip,
                   uint64_t now_ms, const fg_acl_t **deciding);

#endif
