#include "shm/health.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "shm/zone.h"

#define HEALTH_MAGIC 0x46474831u /* "FGH1" */
#define DEST_MAGIC 0x46474844u   /* "FGHD" */
#define CLUSTER_MAGIC 0x46474843u
#define ZONE_KIND 0x48454c54u /* "HELT" */
#define ZONE_LAYOUT 1

struct fg_health_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    fg_hcluster_t clusters[FG_HEALTH_MAX_CLUSTERS];
    fg_hdest_t dests[FG_HEALTH_MAX_DESTS];
    /* shares[record][dest]: in-flight requests each worker record added to each destination.
     * Only that worker writes its row while it lives; the master zeroes it after the reap. */
    _Alignas(FG_CACHELINE) _Atomic int32_t shares[FG_SHM_MAX_WORKERS][FG_HEALTH_MAX_DESTS];
};

/* The zone this process attached (inherited by the workers through fork). */
static fg_health_t *attached;

static void check_dest(const fg_hdest_t *d)
{
    assert(d != NULL && d->magic == DEST_MAGIC);
    (void)d;
}

void fg_health_dest_init(fg_hdest_t *d, const char *cluster, const char *dest)
{
    memset(d, 0, sizeof(*d));
    d->magic = DEST_MAGIC;
    d->used = 1;
    snprintf(d->cluster, sizeof(d->cluster), "%s", cluster);
    snprintf(d->dest, sizeof(d->dest), "%s", dest);
}

void fg_health_cluster_init(fg_hcluster_t *c, const char *id)
{
    memset(c, 0, sizeof(*c));
    c->magic = CLUSTER_MAGIC;
    c->used = 1;
    snprintf(c->id, sizeof(c->id), "%s", id);
}

/* ---- attaching a configuration (master only) ---- */

static fg_hcluster_t *find_cluster(fg_health_t *h, const char *id)
{
    for (size_t i = 0; i < FG_HEALTH_MAX_CLUSTERS; i++)
        if (h->clusters[i].used && strcmp(h->clusters[i].id, id) == 0)
            return &h->clusters[i];
    return NULL;
}

fg_hdest_t *fg_health_find(fg_health_t *h, const char *cluster, const char *dest)
{
    if (h == NULL)
        return NULL;
    for (size_t i = 0; i < FG_HEALTH_MAX_DESTS; i++) {
        fg_hdest_t *d = &h->dests[i];
        if (d->used && strcmp(d->cluster, cluster) == 0 && strcmp(d->dest, dest) == 0)
            return d;
    }
    return NULL;
}

static fg_hcluster_t *new_cluster(fg_health_t *h, const char *id, uint64_t min_live)
{
    for (size_t i = 0; i < FG_HEALTH_MAX_CLUSTERS; i++) {
        fg_hcluster_t *c = &h->clusters[i];
        if (!c->used || c->last_gen < min_live) {
            fg_health_cluster_init(c, id);
            return c;
        }
    }
    return NULL;
}

static fg_hdest_t *new_dest(fg_health_t *h, const char *cluster, const char *dest,
                            uint64_t min_live)
{
    for (size_t i = 0; i < FG_HEALTH_MAX_DESTS; i++) {
        fg_hdest_t *d = &h->dests[i];
        if (d->used && d->last_gen >= min_live)
            continue;
        fg_health_dest_init(d, cluster, dest);
        /* A share left by a worker not reaped yet must not land on the new owner. */
        for (size_t w = 0; w < FG_SHM_MAX_WORKERS; w++)
            atomic_store(&h->shares[w][i], 0);
        return d;
    }
    return NULL;
}

int fg_health_attach(fg_shm_t *shm, fg_config_t *cfg, uint64_t gen, uint64_t min_live_gen,
                     char *err, size_t errlen)
{
    int created = 0;
    if (cfg->nclusters == 0 && attached == NULL)
        return 0;
    fg_health_t *h =
        fg_shm_zone_get(shm, "health", sizeof(fg_health_t), ZONE_KIND, ZONE_LAYOUT, gen, &created);
    if (h == NULL) {
        snprintf(err, errlen, "shm: no room for the health zone (%zu bytes)", sizeof(fg_health_t));
        return -1;
    }
    if (created) {
        h->magic = HEALTH_MAGIC;
        for (size_t i = 0; i < FG_HEALTH_MAX_DESTS; i++)
            h->dests[i].magic = DEST_MAGIC;
        for (size_t i = 0; i < FG_HEALTH_MAX_CLUSTERS; i++)
            h->clusters[i].magic = CLUSTER_MAGIC;
    }
    assert(h->magic == HEALTH_MAGIC);
    /* First mark what this generation keeps, so that recycling below never takes it. */
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fg_cluster_t *cl = &cfg->clusters[i];
        fg_hcluster_t *hc = find_cluster(h, cl->id);
        if (hc)
            hc->last_gen = gen;
        cl->state = hc;
        for (size_t j = 0; j < cl->ndestinations; j++) {
            fg_destination_t *d = &cl->destinations[j];
            fg_hdest_t *hd = fg_health_find(h, cl->id, d->id);
            if (hd)
                hd->last_gen = gen;
            d->state = hd;
        }
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fg_cluster_t *cl = &cfg->clusters[i];
        if (cl->state == NULL && (cl->state = new_cluster(h, cl->id, min_live_gen)) == NULL)
            goto full;
        ((fg_hcluster_t *)cl->state)->last_gen = gen;
        for (size_t j = 0; j < cl->ndestinations; j++) {
            fg_destination_t *d = &cl->destinations[j];
            if (d->state == NULL && (d->state = new_dest(h, cl->id, d->id, min_live_gen)) == NULL)
                goto full;
            ((fg_hdest_t *)d->state)->last_gen = gen;
        }
    }
    attached = h;
    return 0;
full:
    snprintf(err, errlen,
             "clusters: more than %d destinations or %d clusters in the live "
             "generations",
             FG_HEALTH_MAX_DESTS, FG_HEALTH_MAX_CLUSTERS);
    return -1;
}

fg_health_t *fg_health_zone(fg_shm_t *shm)
{
    (void)shm;
    return attached;
}

void fg_health_worker_gone(fg_health_t *h, int record)
{
    if (h == NULL || record < 0 || record >= FG_SHM_MAX_WORKERS)
        return;
    assert(h->magic == HEALTH_MAGIC);
    for (size_t i = 0; i < FG_HEALTH_MAX_DESTS; i++) {
        int32_t n = atomic_exchange(&h->shares[record][i], 0);
        if (n != 0)
            atomic_fetch_sub(&h->dests[i].inflight, n);
    }
}

/* ---- the request path ---- */

static _Atomic int32_t *share(fg_health_t *h, fg_hdest_t *d, int record)
{
    if (h == NULL || record < 0 || record >= FG_SHM_MAX_WORKERS || d < h->dests ||
        d >= h->dests + FG_HEALTH_MAX_DESTS)
        return NULL;
    return &h->shares[record][d - h->dests];
}

void fg_health_begin(fg_health_t *h, fg_hdest_t *d, int record)
{
    check_dest(d);
    _Atomic int32_t *s = share(h, d, record);
    /* A worker killed between the two steps (here or in fg_health_end) leaves the total one
     * low once reaped, never one high: a destination must not look busy forever, and the
     * balancer reads a negative count as 0. */
    if (s)
        atomic_fetch_add_explicit(s, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->inflight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->requests, 1, memory_order_relaxed);
}

void fg_health_end(fg_health_t *h, fg_hdest_t *d, int record)
{
    check_dest(d);
    _Atomic int32_t *s = share(h, d, record);
    atomic_fetch_sub_explicit(&d->inflight, 1, memory_order_relaxed);
    if (s)
        atomic_fetch_sub_explicit(s, 1, memory_order_relaxed);
}

/* Slice length of the passive window: FG_HEALTH_BUCKETS slices cover it. */
static uint64_t slice_ms(const fg_health_config_t *hc)
{
    uint64_t s = hc->window_ms / FG_HEALTH_BUCKETS;
    return s ? s : 1;
}

/* The bucket of slice `epoch`, emptied first when it last counted an older slice. Reporters
 * that find the same stale bucket race on its epoch: one empties it, and a count another one
 * added in between may be lost, which blurs the rate by a request, never more. A reporter whose
 * clock reading is older than another's never empties a newer slice: its own slice is either
 * still in the window (a few milliseconds behind, another bucket) or, when a later slice
 * already took its bucket, it adds to that slice as if no time had elapsed. */
static fg_hbucket_t *bucket(fg_hdest_t *d, uint64_t epoch)
{
    fg_hbucket_t *b = &d->win[epoch % FG_HEALTH_BUCKETS];
    uint64_t e = atomic_load_explicit(&b->epoch, memory_order_relaxed);
    if (e < epoch && atomic_compare_exchange_strong(&b->epoch, &e, epoch)) {
        atomic_store_explicit(&b->requests, 0, memory_order_relaxed);
        atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
    }
    return b;
}

void fg_health_passive_window(const fg_hdest_t *d, const fg_health_config_t *hc, uint64_t now_ms,
                              uint32_t *requests, uint32_t *failures)
{
    uint64_t cur = now_ms / slice_ms(hc) + 1;
    uint32_t r = 0, f = 0;
    for (size_t i = 0; i < FG_HEALTH_BUCKETS; i++) {
        const fg_hbucket_t *b = &d->win[i];
        uint64_t e = atomic_load_explicit(&b->epoch, memory_order_relaxed);
        if (e == 0 || e + FG_HEALTH_BUCKETS <= cur)
            continue; /* never used, or older than the window */
        r += atomic_load_explicit(&b->requests, memory_order_relaxed);
        f += atomic_load_explicit(&b->failures, memory_order_relaxed);
    }
    *requests = r;
    *failures = f;
}

/* Forget the window and the row: after reactivation the destination starts from a clean slate
 * (YARP's Unknown), so old failures cannot trip it again at once. */
static void clear_history(fg_hdest_t *d)
{
    atomic_store(&d->consecutive, 0);
    for (size_t i = 0; i < FG_HEALTH_BUCKETS; i++)
        atomic_store(&d->win[i].epoch, 0);
}

static int trip(fg_hdest_t *d, const fg_health_config_t *hc, uint64_t now)
{
    uint64_t until = atomic_load(&d->passive_until_ms);
    if (until > now)
        return 0; /* already unhealthy */
    if (!atomic_compare_exchange_strong(&d->passive_until_ms, &until, now + hc->reactivation_ms))
        return 0;
    atomic_fetch_add(&d->passive_trips, 1);
    clear_history(d);
    return 1;
}

/* An answer after reactivation turns Unknown into Healthy (as YARP's policy does on the next
 * proxied request); one compare-and-swap by whoever sees it first. */
static void recover(fg_hdest_t *d, uint64_t now)
{
    uint64_t until = atomic_load_explicit(&d->passive_until_ms, memory_order_relaxed);
    if (until != 0 && until <= now)
        atomic_compare_exchange_strong(&d->passive_until_ms, &until, 0);
}

int fg_health_passive_report(fg_hdest_t *d, const fg_health_config_t *hc, int outcome,
                             uint64_t now_ms)
{
    check_dest(d);
    int failed = outcome != FG_PASSIVE_OK;
    if (failed)
        atomic_fetch_add_explicit(&d->failures, 1, memory_order_relaxed);
    if (!hc->passive)
        return 0;
    fg_hbucket_t *b = bucket(d, now_ms / slice_ms(hc) + 1);
    if (outcome != FG_PASSIVE_FAILED_LATE)
        atomic_fetch_add_explicit(&b->requests, 1, memory_order_relaxed);
    if (!failed) {
        if (atomic_load_explicit(&d->consecutive, memory_order_relaxed) != 0)
            atomic_store(&d->consecutive, 0);
        recover(d, now_ms);
        return 0;
    }
    atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed);
    uint32_t row = atomic_fetch_add(&d->consecutive, 1) + 1;
    uint32_t reqs, fails;
    fg_health_passive_window(d, hc, now_ms, &reqs, &fails);
    int rate = reqs >= hc->min_requests && (double)fails >= hc->failure_rate * (double)reqs;
    if ((hc->consecutive && row >= hc->consecutive) || rate)
        return trip(d, hc, now_ms);
    return 0;
}

int fg_health_passive_state(const fg_hdest_t *d, uint64_t now_ms)
{
    check_dest(d);
    uint64_t until = atomic_load_explicit(&d->passive_until_ms, memory_order_relaxed);
    if (until > now_ms)
        return FG_HS_UNHEALTHY;
    return until != 0 ? FG_HS_UNKNOWN : FG_HS_HEALTHY;
}

/* ---- active probes ---- */

int fg_health_probe_claim(fg_hdest_t *d, uint64_t now_ms, uint64_t interval_ms)
{
    check_dest(d);
    uint64_t last = atomic_load(&d->probe_claimed_ms);
    /* The interval counts from the last claim, under whatever interval that claim was made, so
     * a reload to a shorter interval does not wait out the old one. A reading older than the
     * last claim (another worker read the clock later but claimed first) is no time elapsed. */
    if (last != 0 && (now_ms < last || now_ms - last < interval_ms))
        return 0;
    return atomic_compare_exchange_strong(&d->probe_claimed_ms, &last, now_ms ? now_ms : 1);
}

void fg_health_probe_report(fg_hdest_t *d, const fg_health_config_t *hc, int ok, int status,
                            uint64_t latency_us, const char *error, uint64_t wall_ms)
{
    check_dest(d);
    snprintf(d->last_error, sizeof(d->last_error), "%s", error ? error : "");
    atomic_store(&d->last_status, status);
    atomic_store(&d->last_latency_us, latency_us);
    atomic_fetch_add(&d->probes, 1);
    if (ok) {
        atomic_store(&d->probe_failures, 0);
        atomic_store(&d->active, FG_HS_HEALTHY);
    } else {
        uint32_t row = atomic_fetch_add(&d->probe_failures, 1) + 1;
        /* A destination never seen healthy gets no grace: traffic must not go to an Unknown
         * destination that already failed its first probe (start-up, new destination). */
        if (row >= hc->threshold || atomic_load(&d->active) == FG_HS_UNKNOWN)
            atomic_store(&d->active, FG_HS_UNHEALTHY);
    }
    /* Last, so that a reader who sees the time also sees the state. */
    atomic_store(&d->last_probe_wall_ms, wall_ms);
}

int fg_health_usable(const fg_hdest_t *d, const fg_health_config_t *hc, uint64_t now_ms)
{
    check_dest(d);
    if (hc->active && atomic_load_explicit(&d->active, memory_order_relaxed) == FG_HS_UNHEALTHY)
        return 0;
    return !hc->passive || fg_health_passive_state(d, now_ms) != FG_HS_UNHEALTHY;
}

int fg_health_admin(const fg_hdest_t *d)
{
    check_dest(d);
    return atomic_load_explicit(&d->admin, memory_order_relaxed);
}

int64_t fg_health_inflight(const fg_hdest_t *d)
{
    check_dest(d);
    int64_t n = atomic_load_explicit(&d->inflight, memory_order_relaxed);
    return n > 0 ? n : 0;
}

uint64_t fg_health_rr_next(fg_hcluster_t *c)
{
    assert(c->magic == CLUSTER_MAGIC);
    /* Relaxed: the cursor orders nothing else; every step is still taken exactly once. */
    return atomic_fetch_add_explicit(&c->rr, 1, memory_order_relaxed);
}

/* ---- status socket ---- */

static const char *const state_names[] = {"unknown", "healthy", "unhealthy"};
static const char *const admin_names[] = {"ready", "drain", "maint"};

static json_t *dest_json(const fg_cluster_t *cl, const fg_destination_t *d, uint64_t now)
{
    const fg_hdest_t *h = d->state;
    json_t *o = json_pack("{s:s, s:s, s:i, s:b}", "id", d->id, "address", d->address, "weight",
                          d->weight, "enabled", d->enabled);
    if (h == NULL)
        return o;
    int active = cl->health.active ? atomic_load(&h->active) : FG_HS_UNKNOWN;
    int passive = cl->health.passive ? fg_health_passive_state(h, now) : FG_HS_UNKNOWN;
    uint64_t until = atomic_load(&h->passive_until_ms);
    uint32_t wreq, wfail;
    fg_health_passive_window(h, &cl->health, now, &wreq, &wfail);
    uint64_t last = atomic_load(&h->last_probe_wall_ms);
    int usable = fg_health_usable(h, &cl->health, now);
    json_object_set_new(o, "admin", json_string(admin_names[fg_health_admin(h) % 3]));
    json_object_set_new(
        o, "health",
        json_string(usable ? (active == FG_HS_HEALTHY ? "healthy" : "unknown") : "unhealthy"));
    json_object_set_new(o, "active",
                        json_pack("{s:s, s:b, s:I, s:I, s:I}", "state", state_names[active % 3],
                                  "enabled", cl->health.active, "probes",
                                  (json_int_t)atomic_load(&h->probes), "consecutiveFailures",
                                  (json_int_t)atomic_load(&h->probe_failures), "lastProbeMs",
                                  (json_int_t)last));
    json_t *a = json_object_get(o, "active");
    if (last) {
        json_object_set_new(a, "latencyMs",
                            json_real((double)atomic_load(&h->last_latency_us) / 1000.0));
        json_object_set_new(a, "lastStatus", json_integer(atomic_load(&h->last_status)));
        /* The lease holder may be rewriting it: take a terminated copy (a torn one only
         * garbles this display, and json_string rejects what is not UTF-8). */
        char err[sizeof(h->last_error)];
        memcpy(err, h->last_error, sizeof(err));
        err[sizeof(err) - 1] = '\0';
        json_t *e = err[0] ? json_string(err) : NULL;
        json_object_set_new(a, "lastError", e ? e : json_null());
    }
    json_object_set_new(
        o, "passive",
        json_pack("{s:s, s:b, s:I, s:I, s:I, s:I}", "state", state_names[passive % 3], "enabled",
                  cl->health.passive, "windowRequests", (json_int_t)wreq, "windowFailures",
                  (json_int_t)wfail, "trips", (json_int_t)atomic_load(&h->passive_trips),
                  "reactivatesInMs", (json_int_t)(until > now ? until - now : 0)));
    json_object_set_new(o, "inflight", json_integer((json_int_t)atomic_load(&h->inflight)));
    json_object_set_new(o, "requests", json_integer((json_int_t)atomic_load(&h->requests)));
    json_object_set_new(o, "failures", json_integer((json_int_t)atomic_load(&h->failures)));
    return o;
}

json_t *fg_health_show_servers(const fg_config_t *cfg, uint64_t now_ms)
{
    static const char *const policies[] = {"PowerOfTwoChoices", "RoundRobin", "LeastRequests",
                                           "Random", "FirstAlphabetical"};
    static const char *const avail[] = {"HealthyOrPanic", "HealthyAndUnknown"};
    json_t *list = json_array();
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const fg_cluster_t *cl = &cfg->clusters[i];
        json_t *dests = json_array();
        for (size_t j = 0; j < cl->ndestinations; j++)
            json_array_append_new(dests, dest_json(cl, &cl->destinations[j], now_ms));
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:s, s:o}", "id", cl->id, "loadBalancingPolicy",
                                        policies[cl->lb_policy % 5], "availability",
                                        avail[cl->health.availability & 1], "destinations", dests));
    }
    return json_pack("{s:o}", "clusters", list);
}

json_t *fg_health_set_command(fg_health_t *h, const fg_config_t *cfg, const char *args)
{
    char target[2 * FG_HEALTH_ID_LEN + 2], word[16], state[16];
    if (sscanf(args, "%129s %15s %15s", target, word, state) != 3 || strcmp(word, "state") != 0)
        return json_pack("{s:s}", "error",
                         "usage: set destination CLUSTER/DEST state ready|drain|maint");
    int admin = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(state, admin_names[i]) == 0)
            admin = i;
    if (admin < 0)
        return json_pack("{s:s, s:s}", "error", "state must be ready, drain or maint", "state",
                         state);
    char *slash = strchr(target, '/');
    if (slash == NULL)
        return json_pack("{s:s}", "error", "expected CLUSTER/DEST");
    *slash = '\0';
    const fg_cluster_t *cl = fg_config_find_cluster(cfg, target);
    fg_hdest_t *d = NULL;
    for (size_t j = 0; cl && j < cl->ndestinations; j++)
        if (strcmp(cl->destinations[j].id, slash + 1) == 0)
            d = cl->destinations[j].state;
    if (d == NULL || h == NULL)
        return json_pack("{s:s, s:s, s:s}", "error", "unknown destination", "cluster", target,
                         "destination", slash + 1);
    check_dest(d);
    int before = atomic_exchange(&d->admin, admin);
    return json_pack("{s:s, s:s, s:s, s:s}", "cluster", target, "destination", slash + 1, "state",
                     admin_names[admin], "previous", admin_names[before % 3]);
}
