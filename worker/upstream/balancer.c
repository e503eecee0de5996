#include "worker/upstream/balancer.h"

#include <stdlib.h>
#include <string.h>

#include "shm/health.h"
#include "shm/tunnels.h"

#define RR_SCAN_MAX 64 /* sequence steps a RoundRobin choice may skip over */

struct fg_balancer_s {
    uint64_t rng;
    uint64_t local_rr; /* when the cluster has no shared record (tests, hand-built configs) */
    uint16_t *seq;     /* smooth weighted round-robin order of destination indexes */
    size_t nseq;
};

/* xorshift64*: enough for spreading load, and per worker so nothing is shared. */
static uint64_t rnd(fg_balancer_t *b)
{
    uint64_t x = b->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    b->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int gcd(int a, int b)
{
    while (b != 0) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* nginx's smooth weighted round-robin, run once over a whole period (the sum of weights, after
 * dividing them by their common divisor, so 300:100 costs what 3:1 does): each step adds every
 * weight to its destination's current value, takes the largest, and subtracts the total from
 * it. The result interleaves (a a b a for 3:1) instead of bunching. */
static int build_sequence(fg_balancer_t *b, const fg_cluster_t *cl)
{
    size_t n = cl->ndestinations, total = 0;
    int g = 0;
    for (size_t i = 0; i < n; i++)
        if (cl->destinations[i].enabled)
            g = gcd(cl->destinations[i].weight, g);
    if (g <= 0)
        return 0; /* no weight at all: hand-built configurations only */
    for (size_t i = 0; i < n; i++)
        if (cl->destinations[i].enabled)
            total += (size_t)(cl->destinations[i].weight / g);
    if (total == 0)
        return 0;
    long long cur[FG_BALANCER_MAX_DESTS] = {0};
    b->seq = calloc(total, sizeof(*b->seq));
    if (b->seq == NULL)
        return -1;
    for (size_t k = 0; k < total; k++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            if (!cl->destinations[i].enabled)
                continue;
            cur[i] += cl->destinations[i].weight / g;
            if (best == n || cur[i] > cur[best])
                best = i;
        }
        cur[best] -= (long long)total;
        b->seq[k] = (uint16_t)best;
    }
    b->nseq = total;
    return 0;
}

fg_balancer_t *fg_balancer_new(const fg_cluster_t *cl, uint64_t seed)
{
    if (cl->ndestinations > FG_BALANCER_MAX_DESTS)
        return NULL;
    fg_balancer_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
    if (build_sequence(b, cl) != 0) {
        free(b);
        return NULL;
    }
    return b;
}

void fg_balancer_free(fg_balancer_t *b)
{
    if (b == NULL)
        return;
    free(b->seq);
    free(b);
}

/* ---- candidates ---- */

static fg_hdest_t *hdest(const fg_cluster_t *cl, size_t i)
{
    return cl->destinations[i].state;
}

int64_t fg_balancer_inflight(const fg_cluster_t *cl, size_t i)
{
    fg_hdest_t *d = hdest(cl, i);
    return d ? fg_health_inflight(d) : 0;
}

static int ready(const fg_cluster_t *cl, size_t i)
{
    fg_hdest_t *d = hdest(cl, i);
    const fg_destination_t *dest = &cl->destinations[i];
    /* A tunnel whose agent is offline is no candidate, not even in panic mode: nothing could
     * carry the request (docs/tunnels.md). */
    if (dest->tunnel && !fg_tunnels_online(dest->tunnel_rec))
        return 0;
    return dest->enabled && (d == NULL || fg_health_admin(d) == FG_ADMIN_READY);
}

int fg_balancer_available(const fg_cluster_t *cl, size_t i, uint64_t now_ms)
{
    fg_hdest_t *d = hdest(cl, i);
    return ready(cl, i) && (d == NULL || fg_health_usable(d, &cl->health, now_ms));
}

static int tried(const fg_pick_t *pk, size_t i)
{
    return pk->tried != NULL && (pk->tried[i / 64] >> (i % 64)) & 1;
}

/* Fill cand with the indexes that may be chosen; returns how many. */
static size_t candidates(const fg_cluster_t *cl, const fg_pick_t *pk, int *cand, int *panic)
{
    size_t k = 0, n = cl->ndestinations;
    *panic = 0;
    for (size_t i = 0; i < n; i++)
        if (!tried(pk, i) && fg_balancer_available(cl, i, pk->now_ms))
            cand[k++] = (int)i;
    if (k == 0 && cl->health.availability == FG_AVAIL_HEALTHY_OR_PANIC) {
        /* YARP's panic mode: no healthy destination, so try them all rather than fail. */
        for (size_t i = 0; i < n; i++)
            if (!tried(pk, i) && ready(cl, i))
                cand[k++] = (int)i;
        *panic = k > 0;
    }
    if (k > 1 && pk->avoid >= 0) {
        for (size_t j = 0; j < k; j++) {
            if (cand[j] == pk->avoid) {
                cand[j] = cand[--k];
                break;
            }
        }
    }
    return k;
}

/* ---- policies ---- */

static int weight(const fg_cluster_t *cl, int i)
{
    return cl->destinations[i].weight > 0 ? cl->destinations[i].weight : 1;
}

/* A candidate drawn with probability proportional to its weight, skipping position `skip`
 * (-1 = none). Returns the position in cand. */
static size_t weighted_draw(fg_balancer_t *b, const fg_cluster_t *cl, const int *cand, size_t k,
                            size_t skip)
{
    uint64_t total = 0;
    for (size_t j = 0; j < k; j++)
        if (j != skip)
            total += (uint64_t)weight(cl, cand[j]);
    if (total == 0) /* no candidate besides skip: callers never ask, but stay defined */
        return 0;
    uint64_t r = rnd(b) % total;
    for (size_t j = 0; j < k; j++) {
        if (j == skip)
            continue;
        uint64_t w = (uint64_t)weight(cl, cand[j]);
        if (r < w)
            return j;
        r -= w;
    }
    return skip == 0 ? 1 : 0;
}

/* Load relative to weight: a has less when inflight_a / w_a < inflight_b / w_b. */
static int less_loaded(const fg_cluster_t *cl, int a, int b)
{
    int64_t la = fg_balancer_inflight(cl, (size_t)a), lb = fg_balancer_inflight(cl, (size_t)b);
    return la * weight(cl, b) < lb * weight(cl, a);
}

static int power_of_two(fg_balancer_t *b, const fg_cluster_t *cl, const int *cand, size_t k)
{
    size_t x = weighted_draw(b, cl, cand, k, (size_t)-1);
    size_t y = weighted_draw(b, cl, cand, k, x);
    /* Equal loads keep the first draw, so idle destinations share traffic by weight. */
    return less_loaded(cl, cand[y], cand[x]) ? cand[y] : cand[x];
}

static int least_requests(fg_balancer_t *b, const fg_cluster_t *cl, const int *cand, size_t k)
{
    /* Start at a candidate drawn by weight: ties keep it, so equal loads split by weight. */
    size_t start = weighted_draw(b, cl, cand, k, (size_t)-1);
    int best = cand[start];
    for (size_t t = 1; t < k; t++) {
        int c = cand[(start + t) % k];
        if (less_loaded(cl, c, best))
            best = c;
    }
    return best;
}

static int round_robin(fg_balancer_t *b, const fg_cluster_t *cl, const int *cand, size_t k)
{
    if (b->nseq == 0)
        return cand[0];
    uint64_t ok[FG_BALANCER_MAX_DESTS / 64] = {0};
    for (size_t j = 0; j < k; j++)
        ok[cand[j] / 64] |= 1ULL << (cand[j] % 64);
    fg_hcluster_t *hc = cl->state;
    uint64_t pos = hc ? fg_health_rr_next(hc) : b->local_rr++;
    /* One shared cursor walks the sequence for all workers; a destination that cannot take
     * the request passes its turn to the next one in the sequence. The walk is bounded: when
     * the few candidates left are far apart in a long sequence, a draw by weight among them
     * gives the same shares without a scan as long as the sum of weights. */
    size_t steps = b->nseq < RR_SCAN_MAX ? b->nseq : RR_SCAN_MAX;
    for (size_t t = 0; t < steps; t++) {
        int i = b->seq[(pos + t) % b->nseq];
        if (ok[i / 64] >> (i % 64) & 1)
            return i;
    }
    return cand[weighted_draw(b, cl, cand, k, (size_t)-1)];
}

/* Ordinal comparison ignoring case as .NET's OrdinalIgnoreCase does it (YARP's
 * FirstLoadBalancingPolicy): letters are folded to upper case, so "_" sorts after "A". */
static int ordinal_icmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        int x = (unsigned char)*a, y = (unsigned char)*b;
        x = x >= 'a' && x <= 'z' ? x - 32 : x;
        y = y >= 'a' && y <= 'z' ? y - 32 : y;
        if (x != y || x == 0)
            return x - y;
    }
}

static int first_alphabetical(const fg_cluster_t *cl, const int *cand, size_t k)
{
    int best = cand[0];
    for (size_t j = 1; j < k; j++)
        if (ordinal_icmp(cl->destinations[cand[j]].id, cl->destinations[best].id) < 0)
            best = cand[j];
    return best;
}

int fg_balancer_select(fg_balancer_t *b, const fg_cluster_t *cl, const fg_pick_t *pk, int *panic)
{
    int cand[FG_BALANCER_MAX_DESTS], pan = 0;
    size_t k = candidates(cl, pk, cand, &pan);
    if (panic)
        *panic = pan;
    if (k == 0)
        return -1;
    if (k == 1)
        return cand[0];
    switch (cl->lb_policy) {
    case FG_LB_ROUND_ROBIN:
        return round_robin(b, cl, cand, k);
    case FG_LB_LEAST_REQUESTS:
        return least_requests(b, cl, cand, k);
    case FG_LB_RANDOM:
        return cand[weighted_draw(b, cl, cand, k, (size_t)-1)];
    case FG_LB_FIRST_ALPHABETICAL:
        return first_alphabetical(cl, cand, k);
    default:
        return power_of_two(b, cl, cand, k);
    }
}
