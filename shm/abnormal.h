/* Abnormal-IP tracking and dynamic access-control entries, both in shm hash zones.
 *
 * Abnormal tracking counts, per client address, the responses with status >= 400 and the proxy
 * errors over a sliding window (two-window weighted count, as in shm/ratelimit.h). Crossing the
 * autoBlock threshold reports "block now" once per block period; the caller then adds the
 * address to the dynamic "autoBlock" list, which every worker consults.
 *
 * Dynamic entries (address or CIDR, per list, optional expiry) are what `add acl` / `del acl`
 * and autoBlock write. They never get evicted: a full zone refuses new entries (counted). A
 * lookup first reads the entry count without the lock, so an empty zone costs one atomic load;
 * otherwise one lock and one hash probe per prefix length in use. Times are CLOCK_MONOTONIC
 * milliseconds, the same in every process. */
#ifndef FG_SHM_ABNORMAL_H
#define FG_SHM_ABNORMAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/iprange.h"
#include "shm/hash.h"

typedef struct {
    uint64_t t, cur, prev; /* window start, this window's and the previous window's errors */
    uint64_t total;
    uint64_t last_ms;
    uint64_t blocked_until;
} fg_abnormal_entry_t;

typedef struct {
    fg_ip_t ip;
    uint64_t count; /* errors in the window now (weighted) */
    uint64_t total;
    uint64_t last_ms;
    uint64_t blocked_until;
} fg_abnormal_info_t;

/* Zone of abnormal counters: a hash table keyed by address. */
fg_shm_hash_t *fg_abnormal_init(void *mem, size_t size, uint64_t seed);
/* Count one error of ip at now. Returns 1 when autoBlock should block ip now (block_threshold
 * > 0 and reached, and not already blocked), 0 otherwise, <0 when the zone could not be
 * locked. */
int fg_abnormal_record(fg_shm_hash_t *h, const fg_ip_t *ip, uint64_t now, uint64_t window_ms,
                       uint64_t block_threshold, uint64_t block_ms);
/* The worst addresses (highest count now), at most max, count >= min_count. */
size_t fg_abnormal_top(fg_shm_hash_t *h, uint64_t now, uint64_t window_ms, uint64_t min_count,
                       fg_abnormal_info_t *out, size_t max);

/* ---- dynamic access-control entries ---- */

typedef struct fg_acl_dyn_s fg_acl_dyn_t;

typedef struct {
    uint64_t list;       /* list key (hash of its id) */
    fg_ip_t ip;          /* masked */
    unsigned plen;       /* 0..128 in the IPv6 space */
    uint64_t expires_ms; /* 0 = never */
    uint64_t added_ms;
    uint64_t hits;
} fg_acl_dyn_info_t;

/* Lists that can hold dynamic entries over a zone's life (each list keeps its slot). */
#define FG_ACL_DYN_LISTS 256

fg_acl_dyn_t *fg_acl_dyn_init(void *mem, size_t size, uint64_t seed);
/* Add or refresh an entry; expires_ms 0 = never. Refreshing only ever extends an entry's life.
 * Returns 0 added, 1 refreshed, -ENOSPC when full (or when FG_ACL_DYN_LISTS other lists already
 * hold entries), other <0 on lock errors. */
int fg_acl_dyn_add(fg_acl_dyn_t *d, uint64_t list, const fg_ip_t *ip, unsigned plen,
                   uint64_t expires_ms, uint64_t now);
/* Returns 0, or -ENOENT when there is no such entry. */
int fg_acl_dyn_del(fg_acl_dyn_t *d, uint64_t list, const fg_ip_t *ip, unsigned plen);
/* 1 when ip is covered by a live entry of list (expired ones are removed on the way). */
int fg_acl_dyn_match(fg_acl_dyn_t *d, uint64_t list, const fg_ip_t *ip, uint64_t now);
/* Live entries of list (all lists when list is 0), at most max. */
size_t fg_acl_dyn_list(fg_acl_dyn_t *d, uint64_t list, uint64_t now, fg_acl_dyn_info_t *out,
                       size_t max);
uint64_t fg_acl_dyn_count(const fg_acl_dyn_t *d);
/* Whether list has live entries (expired ones not yet swept count), without the lock. */
int fg_acl_dyn_has(fg_acl_dyn_t *d, uint64_t list);
fg_shm_hash_t *fg_acl_dyn_table(fg_acl_dyn_t *d);

#endif
