#include "worker/admission/ratelimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/log.h"

enum { P_ANY = 0, P_EXACT, P_PREFIX, P_SUFFIX, P_CIDR };

/* Key kinds inside a rate-limit key. */
enum { K_GLOBAL = 1, K_IP, K_ROUTE, K_HEADER, K_HEADER_HASHED };

typedef struct {
    uint64_t fingerprint;
    uint8_t kind;
    uint8_t len;
    uint8_t pad[6];
    uint8_t data[FG_RL_KEY_SIZE - 16];
} rl_key_t;

typedef struct {
    fg_rl_state_t st;
    uint32_t stats_index;
    uint32_t pad;
} rl_value_t;

_Static_assert(sizeof(rl_key_t) == FG_RL_KEY_SIZE, "rate-limit key size");
_Static_assert(sizeof(rl_value_t) == FG_RL_VALUE_SIZE, "rate-limit value size");

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fg_hash_fnv1a(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

/* Everything that changes what a counter means; the name and enabled/dryRun do not. */
static uint64_t fingerprint(const fg_ratelimit_rule_t *c)
{
    uint64_t h = FG_HASH_FNV_BASIS;
    uint64_t nums[6] = {(uint64_t)c->type, (uint64_t)c->scope, c->max_requests,
                        c->window_ms,      c->burst,           c->ipv6_prefix};
    h = fnv_str(h, c->id);
    h = fg_hash_fnv1a(h, nums, sizeof(nums));
    h = fnv_str(h, c->header);
    return h ? h : 1;
}

static int compile_pattern(fg_rl_pattern_t *p, const char *text, int ip)
{
    memset(p, 0, sizeof(*p));
    if (text == NULL || strcmp(text, "*") == 0)
        return 0;
    if (ip && strchr(text, '/')) {
        int plen;
        char err[128];
        p->kind = P_CIDR;
        return fg_iprange_parse(text, &p->range, &plen, err, sizeof(err));
    }
    size_t n = strlen(text);
    if (text[n - 1] == '*') {
        p->kind = P_PREFIX;
        p->text = strndup(text, n - 1);
    } else if (text[0] == '*') {
        p->kind = P_SUFFIX;
        p->text = strdup(text + 1);
    } else {
        p->kind = P_EXACT;
        p->text = strdup(text);
    }
    if (p->text == NULL)
        return -1;
    p->len = strlen(p->text);
    return 0;
}

int fg_ratelimit_glob(const fg_rl_pattern_t *p, const char *s, size_t n)
{
    switch (p->kind) {
    case P_ANY:
        return 1;
    case P_EXACT:
        return n == p->len && strncasecmp(s, p->text, n) == 0;
    case P_PREFIX:
        return n >= p->len && strncasecmp(s, p->text, p->len) == 0;
    case P_SUFFIX:
        return n >= p->len && strncasecmp(s + n - p->len, p->text, p->len) == 0;
    default:
        return 0;
    }
}

int fg_ratelimit_compile(fg_rl_rule_t *r, const fg_ratelimit_rule_t *cfg)
{
    static const int algo[] = {FG_RL_ALGO_SLIDING, FG_RL_ALGO_FIXED, FG_RL_ALGO_TOKEN};
    memset(r, 0, sizeof(*r));
    r->cfg = cfg;
    r->params.algo = algo[cfg->type];
    r->params.limit = cfg->max_requests;
    r->params.window_ms = cfg->window_ms;
    r->params.burst = cfg->burst;
    r->fingerprint = fingerprint(cfg);
    if (compile_pattern(&r->path, cfg->path_pattern, 0) < 0 ||
        compile_pattern(&r->ip, cfg->ip_pattern, 1) < 0)
        return -1;
    return 0;
}

void fg_ratelimit_free(fg_rl_rule_t *r)
{
    free(r->path.text);
    free(r->ip.text);
    r->path.text = r->ip.text = NULL;
}

void fg_ratelimit_on_evict(const void *key, void *value, void *arg)
{
    const rl_value_t *v = value;
    fg_stats_slot_t *s = arg ? fg_stats_at(arg, v->stats_index) : NULL;
    fg_stats_add(s, FG_RLC_ACTIVE, -1);
    fg_stats_add(s, FG_RLC_EVICTIONS, 1);
}

static int method_ok(const fg_rl_rule_t *r, const fg_request_t *req)
{
    if (r->cfg->nmethods == 0)
        return 1;
    for (size_t i = 0; i < r->cfg->nmethods; i++)
        if (fg_str_eq(req->method, fg_str(r->cfg->methods[i])))
            return 1;
    return 0;
}

static int ip_ok(const fg_rl_rule_t *r, const fg_ip_t *ip)
{
    if (r->ip.kind == P_ANY)
        return 1;
    if (r->ip.kind == P_CIDR)
        return fg_ip_cmp(ip, &r->ip.range.lo) >= 0 && fg_ip_cmp(ip, &r->ip.range.hi) <= 0;
    char text[64];
    fg_ip_format(ip, text, sizeof(text));
    return fg_ratelimit_glob(&r->ip, text, strlen(text));
}

static void put_str(rl_key_t *k, int kind, const char *s, size_t n)
{
    if (n <= sizeof(k->data)) {
        k->kind = (uint8_t)kind;
        k->len = (uint8_t)n;
        memcpy(k->data, s, n);
        return;
    }
    /* Longer values: two independent 64-bit hashes, the length and a prefix. Two keys collide
     * only if both hashes and the prefix agree. */
    uint64_t a = fg_hash_fnv1a(FG_HASH_FNV_BASIS, s, n),
             b = fg_hash_fnv1a(0x84222325cbf29ce4ull, s, n);
    k->kind = K_HEADER_HASHED;
    k->len = 255;
    memcpy(k->data, &a, 8);
    memcpy(k->data + 8, &b, 8);
    memcpy(k->data + 16, &n, sizeof(n));
    memcpy(k->data + 24, s, sizeof(k->data) - 24);
}

static void make_key(const fg_rl_rule_t *r, const fg_request_t *req, const fg_ip_t *ip, rl_key_t *k)
{
    memset(k, 0, sizeof(*k));
    k->fingerprint = r->fingerprint;
    switch (r->cfg->scope) {
    case FG_RLS_GLOBAL:
        k->kind = K_GLOBAL;
        break;
    case FG_RLS_PER_ROUTE: {
        const char *id = req->route ? req->route->id : "";
        put_str(k, K_ROUTE, id, strlen(id));
        break;
    }
    case FG_RLS_PER_HEADER: {
        /* Requests without the header share one counter: omitting it is no way around. */
        const fg_http_header_t *h = fg_request_header(req, fg_str(r->cfg->header));
        put_str(k, K_HEADER, h ? h->value.base : "", h ? h->value.len : 0);
        break;
    }
    default: {
        /* An IPv6 subscriber usually holds a whole /64 and can rotate through it at will:
         * counting per address would let one client multiply its limit. */
        fg_ip_t a = *ip;
        if (!fg_ip_is_v4(&a))
            fg_ip_mask(&a, r->cfg->ipv6_prefix ? r->cfg->ipv6_prefix : 128);
        k->kind = K_IP;
        k->len = 16;
        memcpy(k->data, a.b, 16);
        break;
    }
    }
}

_Static_assert(FG_RLC_UNCHECKED < FG_STATS_COUNTERS, "rule counters fit a stats slot");

#ifdef FG_TEST_HOOKS
/* Test-only fault hook (see the header): the pid file named by FG_TEST_RATELIMIT_HOLD. Empty
 * unless a test set the variable; the trigger path is fixed and reserved. */
static char fault_pidfile[512];

int fg_ratelimit_set_fault_hook(const char *pidfile)
{
    if (pidfile == NULL || pidfile[0] != '/' || strlen(pidfile) >= sizeof(fault_pidfile))
        return -1;
    memcpy(fault_pidfile, pidfile, strlen(pidfile) + 1);
    fg_log_warn("TEST FAULT HOOK ARMED (FG_TEST_RATELIMIT_HOLD is set): a request for %s sleeps "
                "holding the rate-limit lock; never set this variable in production",
                FG_RL_FAULT_PATH);
    return 0;
}

static void fault_hook(const fg_request_t *req)
{
    if (fault_pidfile[0] == '\0' || !fg_str_eq(req->path, FG_STR_LIT(FG_RL_FAULT_PATH)))
        return;
    FILE *f = fopen(fault_pidfile, "w");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    struct timespec ts = {60, 0};
    while (nanosleep(&ts, &ts) == -1)
        ;
}
#else
#define fault_hook(req) ((void)(req))
#endif

/* A request the zone could not judge is let through (failing every request would turn a lock
 * fault into an outage), but never silently: counted per rule and logged at most once a second
 * per rule and worker. */
static int let_through_unchecked(fg_rl_rule_t *r, uint64_t now_ms, const char *why)
{
    fg_stats_add(r->stats, FG_RLC_UNCHECKED, 1);
    if (r->last_fail_log_ms == 0 || now_ms - r->last_fail_log_ms >= 1000) {
        r->last_fail_log_ms = now_ms;
        fg_log_error("rate limit %s: %s; request let through unchecked (counted as "
                     "\"unchecked\" in show ratelimits)",
                     r->cfg->id, why);
    }
    return 1;
}

/* Find-or-insert k and run the algorithm, under one acquisition of the zone lock. Returns 0
 * with res filled, or -1 when the zone could not be consulted. */
static int zone_step(fg_shm_hash_t *zone, void *stats_table, fg_rl_rule_t *r,
                     const fg_request_t *req, const rl_key_t *k, uint64_t now_ms,
                     fg_rl_result_t *res)
{
    uint64_t hv = fg_shm_hash_key(zone, k);
    if (fg_shm_hash_lock(zone) < 0)
        return -1;
    fault_hook(req);
    rl_value_t *v = fg_shm_hash_find(zone, k, hv);
    if (v == NULL) {
        v = fg_shm_hash_insert(zone, k, hv, fg_ratelimit_on_evict, stats_table);
        if (v != NULL) {
            v->stats_index = r->stats_index;
            fg_stats_add(r->stats, FG_RLC_ACTIVE, 1);
        }
    }
    if (v != NULL)
        fg_rl_check(&r->params, &v->st, now_ms, res);
    fg_shm_hash_unlock(zone);
    return v != NULL ? 0 : -1;
}

int fg_ratelimit_check(fg_shm_hash_t *zone, void *stats_table, fg_rl_rule_t *r,
                       const fg_request_t *req, const fg_ip_t *ip, uint64_t now_ms,
                       fg_rl_result_t *res)
{
    if (!method_ok(r, req) || !fg_ratelimit_glob(&r->path, req->path.base, req->path.len) ||
        !ip_ok(r, ip))
        return 1;
    rl_key_t k;
    make_key(r, req, ip, &k);
    if (zone_step(zone, stats_table, r, req, &k, now_ms, res) < 0)
        return let_through_unchecked(r, now_ms, "zone lock or slot unavailable");
    if (res->allowed) {
        fg_stats_add(r->stats, FG_RLC_ALLOWED, 1);
        return 1;
    }
    if (r->cfg->dry_run) {
        fg_stats_add(r->stats, FG_RLC_DRYRUN, 1);
        if (now_ms - r->last_log_ms >= 1000 || r->last_log_ms == 0) {
            r->last_log_ms = now_ms;
            fg_log_warn("rate limit %s (dryRun): %.*s %.*s from %s would be limited", r->cfg->id,
                        (int)req->method.len, req->method.base, (int)req->path.len, req->path.base,
                        req->client_ip);
        }
        return 1;
    }
    fg_stats_add(r->stats, FG_RLC_LIMITED, 1);
    return 0;
}

static uint64_t ceil_s(uint64_t ms)
{
    return (ms + 999) / 1000;
}

/* v in decimal, NUL-terminated, in pool memory; NULL without memory. */
static char *u64_str(fg_pool_t *pool, uint64_t v)
{
    char *s = fg_pool_alloc(pool, 21);
    if (s != NULL)
        *fg_put_u64(s, v) = '\0';
    return s;
}

/* "rate limit exceeded: N requests per 60s" (or "per 1500ms"), in pool memory. */
static char *reject_message(fg_pool_t *pool, uint64_t limit, uint64_t window_ms)
{
    static const char head[] = "rate limit exceeded: ", mid[] = " requests per ";
    char *m = fg_pool_alloc(pool, sizeof(head) + sizeof(mid) + 2 * 20 + 3);
    if (m == NULL)
        return NULL;
    char *p = m;
    memcpy(p, head, sizeof(head) - 1);
    p = fg_put_u64(p + sizeof(head) - 1, limit);
    memcpy(p, mid, sizeof(mid) - 1);
    p += sizeof(mid) - 1;
    if (window_ms % 1000 == 0) {
        p = fg_put_u64(p, window_ms / 1000);
    } else {
        p = fg_put_u64(p, window_ms);
        *p++ = 'm';
    }
    *p++ = 's';
    *p = '\0';
    return m;
}

/* Built without formatted printing: a flood of refused requests is this function's load. */
void fg_ratelimit_reject(fg_request_t *req, const fg_rl_rule_t *r, const fg_rl_result_t *res)
{
    uint64_t retry = ceil_s(res->retry_ms);
    if (retry == 0)
        retry = 1; /* RFC 9110 10.2.3: delay-seconds; 0 would invite an immediate retry */
    char *msg = reject_message(req->pool, r->params.limit, r->cfg->window_ms);
    char *ra = u64_str(req->pool, retry);
    char *lim = u64_str(req->pool, res->limit);
    char *rem = u64_str(req->pool, res->remaining);
    char *reset = u64_str(req->pool, ceil_s(res->reset_ms));
    if (msg == NULL || ra == NULL || lim == NULL || rem == NULL || reset == NULL) {
        fg_request_error(req, 429, "rate_limited", "rate limit exceeded");
        return;
    }
    /* The common error shape (fg_request_error_with); the wait is in Retry-After. */
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 4);
    fg_headers_add(&h, FG_STR_LIT("Retry-After"), fg_str(ra));
    fg_headers_add(&h, FG_STR_LIT("X-RateLimit-Limit"), fg_str(lim));
    fg_headers_add(&h, FG_STR_LIT("X-RateLimit-Remaining"), fg_str(rem));
    fg_headers_add(&h, FG_STR_LIT("X-RateLimit-Reset"), fg_str(reset));
    fg_request_error_with(req, 429, "rate_limited", msg, &h);
}
