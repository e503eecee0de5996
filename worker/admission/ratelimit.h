/* Rate-limit rules, compiled in the master and evaluated in workers. A compiled rule carries
 * its algorithm parameters, a fingerprint of its definition (part of every counter key, so a
 * changed rule starts from fresh counters while an unchanged one keeps them across a reload),
 * its statistics slot and its matchers. Evaluation: cheap filters (method, path, address
 * pattern), the key for the rule's scope, then one lock of the zone for find-or-insert and the
 * algorithm step (shm/ratelimit.h). The zone is shm/hash.c with LRU eviction when full. */
#ifndef FG_WORKER_RATELIMIT_H
#define FG_WORKER_RATELIMIT_H

#include <stdint.h>

#include "common/config.h"
#include "common/iprange.h"
#include "shm/hash.h"
#include "shm/ratelimit.h"
#include "shm/stats.h"
#include "worker/http/request.h"

/* Counters of a rule's statistics slot. UNCHECKED: requests let through without a verdict
 * because the zone could not be consulted (lock not recoverable, no slot to be had). */
enum {
    FG_RLC_ALLOWED = 0,
    FG_RLC_LIMITED,
    FG_RLC_ACTIVE,
    FG_RLC_EVICTIONS,
    FG_RLC_DRYRUN,
    FG_RLC_UNCHECKED
};

/* Key and value sizes of the rate-limit zone (its layout). */
#define FG_RL_KEY_SIZE 64
#define FG_RL_VALUE_SIZE 40
#define FG_RL_LAYOUT 0x524c0001u

typedef struct {
    int kind; /* 0 any, 1 exact, 2 prefix, 3 suffix, 4 CIDR */
    char *text;
    size_t len;
    fg_iprange_t range;
} fg_rl_pattern_t;

typedef struct {
    const fg_ratelimit_rule_t *cfg;
    fg_rl_params_t params;
    uint64_t fingerprint;
    fg_stats_slot_t *stats;
    uint32_t stats_index; /* identifies the slot in zone entries */
    fg_rl_pattern_t path, ip;
    uint64_t last_log_ms;      /* this worker's copy: dry-run log rate limit */
    uint64_t last_fail_log_ms; /* this worker's copy: unchecked-request log rate limit */
} fg_rl_rule_t;

/* Build r from cfg; stats may be NULL. Returns 0 or -1 (out of memory). */
int fg_ratelimit_compile(fg_rl_rule_t *r, const fg_ratelimit_rule_t *cfg);
void fg_ratelimit_free(fg_rl_rule_t *r);
/* Evict callback for the zone: keeps the evicted entry's rule statistics right. arg is the
 * fg_stats_t of the arena. */
void fg_ratelimit_on_evict(const void *key, void *value, void *arg);

/* Evaluate r for req whose client address is ip. Returns 1 when the rule does not apply or the
 * request passes (also in dryRun), 0 when it must be rejected (res filled). now_ms: monotonic. */
int fg_ratelimit_check(fg_shm_hash_t *zone, void *stats_table, fg_rl_rule_t *r,
                       const fg_request_t *req, const fg_ip_t *ip, uint64_t now_ms,
                       fg_rl_result_t *res);
/* Answer 429 with Retry-After, X-RateLimit-Limit/-Remaining/-Reset and the JSON body
 * {error, message, retryAfter}; finishes req. */
void fg_ratelimit_reject(fg_request_t *req, const fg_rl_rule_t *r, const fg_rl_result_t *res);

#ifdef FG_TEST_HOOKS
/* Test builds only (-DFG_TEST_HOOKS, build/test/fastgateway): with a PIDFILE path (from the
 * FG_TEST_RATELIMIT_HOLD environment variable), a request for FG_RL_FAULT_PATH writes the
 * worker's pid there and sleeps holding the zone lock, so that a test can SIGKILL a lock owner.
 * Arming it is logged as a warning by every worker. Returns 0 when armed, -1 when the path is
 * unusable. */
#define FG_RL_FAULT_PATH "/__fastgateway_test/hold-ratelimit-lock"
int fg_ratelimit_set_fault_hook(const char *pidfile);
#endif

/* Match a glob pattern ("*", "prefix*", "*suffix", exact), ASCII case-insensitively, as the
 * seed does. Exposed for tests. */
int fg_ratelimit_glob(const fg_rl_pattern_t *p, const char *s, size_t n);

#endif
