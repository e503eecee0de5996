#include "shm/tunnels.h"

#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>

#include "shm/lock.h"
#include "shm/zone.h"

#define ZONE_MAGIC 0x46475431u /* "FGT1" */
#define REC_MAGIC 0x46475452u  /* "FGTR" */
#define ZONE_KIND 0x54554e4eu  /* "TUNN" */
#define ZONE_LAYOUT 2
#define FAIL_PROBES 8 /* slots looked at per address (open addressing) */

/* Failed authentications of one address in one minute. */
typedef struct {
    uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d; IPv6 as its /64 */
    uint64_t minute;  /* now_ms / 60000 + 1; 0: free */
    uint32_t count;
} fail_slot_t;

struct fg_tunnels_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    fg_shm_lock_t lock;
    uint64_t next_serial; /* under the lock */
    fg_tunnel_rec_t recs[FG_TUNNELS_MAX];
    _Alignas(FG_CACHELINE) fail_slot_t fails[FG_TUNNELS_FAIL_SLOTS]; /* under the lock */
};

static fg_tunnels_t *attached;

static fg_tunnel_rec_t *find(fg_tunnels_t *t, const char *id)
{
    for (size_t i = 0; i < FG_TUNNELS_MAX; i++)
        if (t->recs[i].used && strcmp(t->recs[i].id, id) == 0)
            return &t->recs[i];
    return NULL;
}

static fg_tunnel_rec_t *fresh(fg_tunnels_t *t, const char *id, uint64_t min_live)
{
    for (size_t i = 0; i < FG_TUNNELS_MAX; i++) {
        fg_tunnel_rec_t *r = &t->recs[i];
        if (r->used && (r->last_gen >= min_live || atomic_load(&r->live) != 0))
            continue;
        memset(r, 0, sizeof(*r));
        r->magic = REC_MAGIC;
        r->used = 1;
        snprintf(r->id, sizeof(r->id), "%s", id);
        return r;
    }
    return NULL;
}

int fg_tunnels_attach(fg_shm_t *shm, fg_config_t *cfg, uint64_t gen, uint64_t min_live_gen,
                      char *err, size_t errlen)
{
    int created = 0;
    if (cfg->tunnels.nagents == 0 && attached == NULL)
        return 0;
    fg_tunnels_t *t = fg_shm_zone_get(shm, "tunnels", sizeof(fg_tunnels_t), ZONE_KIND, ZONE_LAYOUT,
                                      gen, &created);
    if (t == NULL) {
        snprintf(err, errlen, "shm: no room for the tunnels zone (%zu bytes)", sizeof(*t));
        return -1;
    }
    if (created) {
        t->magic = ZONE_MAGIC;
        if (fg_shm_lock_init(&t->lock) != 0) {
            snprintf(err, errlen, "shm: cannot initialise the tunnels lock");
            return -1;
        }
    }
    assert(t->magic == ZONE_MAGIC);
    /* What this generation keeps first, so that recycling never takes it. */
    for (size_t i = 0; i < cfg->tunnels.nagents; i++) {
        fg_tunnel_rec_t *r = find(t, cfg->tunnels.agents[i].id);
        if (r)
            r->last_gen = gen;
        cfg->tunnels.agents[i].state = r;
    }
    for (size_t i = 0; i < cfg->tunnels.nagents; i++) {
        fg_tunnel_agent_t *a = &cfg->tunnels.agents[i];
        if (a->state == NULL && (a->state = fresh(t, a->id, min_live_gen)) == NULL) {
            snprintf(err, errlen, "tunnels: more than %d agents in the live generations",
                     FG_TUNNELS_MAX);
            return -1;
        }
        ((fg_tunnel_rec_t *)a->state)->last_gen = gen;
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fg_cluster_t *cl = &cfg->clusters[i];
        for (size_t j = 0; j < cl->ndestinations; j++) {
            fg_destination_t *d = &cl->destinations[j];
            if (d->tunnel)
                d->tunnel_rec = cfg->tunnels.agents[d->tunnel_agent].state;
        }
    }
    attached = t;
    return 0;
}

fg_tunnels_t *fg_tunnels_zone(void)
{
    return attached;
}

/* The lock, repaired when its holder died: the records stay as they are (each field is
 * meaningful alone) and a half-written failure slot only miscounts one address. */
static int lock(fg_tunnels_t *t)
{
    return fg_shm_lock(&t->lock) < 0 ? -1 : 0;
}

/* The holder of a freed slot keeps counting its streams in the total until they end; only a
 * holder that died (crashed) leaves them to be taken off here (dead). */
static void conn_free(fg_tunnel_rec_t *r, fg_tunnel_conn_t *c, int dead)
{
    if (dead)
        atomic_fetch_add(&r->streams, -atomic_load(&c->streams));
    atomic_store(&c->streams, 0);
    atomic_store(&c->pid, 0);
    atomic_store_explicit(&c->serial, 0, memory_order_release);
    atomic_fetch_sub(&r->live, 1);
}

void fg_tunnels_worker_gone(fg_tunnels_t *t, int pid)
{
    if (t == NULL || lock(t) != 0)
        return;
    for (size_t i = 0; i < FG_TUNNELS_MAX; i++) {
        fg_tunnel_rec_t *r = &t->recs[i];
        for (size_t j = 0; r->used && j < FG_TUNNEL_CONNS_MAX; j++) {
            fg_tunnel_conn_t *c = &r->conns[j];
            if (atomic_load(&c->serial) != 0 && atomic_load(&c->pid) == pid)
                conn_free(r, c, 1);
        }
    }
    fg_shm_unlock(&t->lock);
}

static int pick_once(const fg_tunnel_rec_t *rec, int self_pid, uint64_t *serial)
{
    int best = -1, best_draining = 1;
    int64_t best_streams = 0;
    *serial = 0;
    for (int i = 0; i < FG_TUNNEL_CONNS_MAX; i++) {
        const fg_tunnel_conn_t *c = &rec->conns[i];
        /* pid 0: a slot being freed (conn_free clears the pid before the serial) */
        int pid = atomic_load_explicit(&c->pid, memory_order_relaxed);
        if (atomic_load_explicit(&c->serial, memory_order_acquire) == 0 || pid == 0 ||
            pid == self_pid)
            continue;
        int draining = atomic_load_explicit(&c->draining, memory_order_relaxed) != 0;
        int64_t n = atomic_load_explicit(&c->streams, memory_order_relaxed);
        if (best < 0 || draining < best_draining ||
            (draining == best_draining && n < best_streams)) {
            best = i;
            best_draining = draining;
            best_streams = n;
        }
    }
    if (best < 0)
        return 0;
    /* Both read again: a slot freed and reused between the reads names its new holder. */
    const fg_tunnel_conn_t *c = &rec->conns[best];
    int pid = atomic_load_explicit(&c->pid, memory_order_acquire);
    *serial = atomic_load_explicit(&c->serial, memory_order_acquire);
    return *serial != 0 && pid != 0 && pid != self_pid ? pid : 0;
}

/* A connection that takes over publishes its slot before it frees the one it displaces (see
 * fg_tunnels_claim), yet a scan without the lock may read the new slot before and the old one
 * after the change and find neither: while the agent is online, scan again. */
#define PICK_SCANS 4

int fg_tunnels_pick(const fg_tunnel_rec_t *rec, int self_pid, uint64_t *serial)
{
    int pid = 0;
    *serial = 0;
    for (int i = 0; i < PICK_SCANS && pid == 0 && fg_tunnels_online(rec); i++)
        pid = pick_once(rec, self_pid, serial);
    return pid;
}

int fg_tunnels_has_other(const fg_tunnel_rec_t *rec, uint64_t serial)
{
    for (int i = 0; i < FG_TUNNEL_CONNS_MAX; i++) {
        const fg_tunnel_conn_t *c = &rec->conns[i];
        uint64_t s = atomic_load_explicit(&c->serial, memory_order_acquire);
        if (s != 0 && s != serial && !atomic_load_explicit(&c->draining, memory_order_relaxed))
            return 1;
    }
    return 0;
}

_Static_assert(FG_TUNNEL_CONNS_MAX <= 32, "make_room's mask holds every slot");

/* The connections that the new one of instance (pid, extra) displaces or replaces, as a mask
 * of slots; -1 when it is a duplicate. Under the lock; frees nothing yet. */
static int make_room(fg_tunnel_rec_t *rec, int pid, const uint8_t inst[16], int extra,
                     uint32_t *gone, fg_tunnels_claim_t *out)
{
    int same = atomic_load(&rec->live) != 0 && memcmp(rec->instance, inst, 16) == 0;
    *gone = 0;
    for (int i = 0; i < FG_TUNNEL_CONNS_MAX; i++) {
        fg_tunnel_conn_t *c = &rec->conns[i];
        uint64_t s = atomic_load(&c->serial);
        if (s == 0 || (same && (atomic_load(&c->pid) != pid || atomic_load(&c->draining))))
            continue;
        if (same && extra)
            return -1;
        out->prev_pid = atomic_load(&c->pid);
        out->prev_serial = s;
        if (same)
            out->replaced++;
        else
            out->displaced++;
        *gone |= 1u << i;
    }
    return 0;
}

void fg_tunnels_claim(fg_tunnels_t *t, fg_tunnel_rec_t *rec, int pid, int slot, uint64_t generation,
                      const char *peer, const uint8_t *instance, int extra, fg_tunnels_claim_t *out)
{
    assert(rec->magic == REC_MAGIC);
    memset(out, 0, sizeof(*out));
    out->index = -1;
    uint8_t inst[16];
    if (instance != NULL)
        memcpy(inst, instance, 16);
    else if (RAND_bytes(inst, sizeof(inst)) != 1) /* the older protocol: its own instance */
        memset(inst, 0xff, sizeof(inst));
    int locked = lock(t) == 0;
    uint32_t gone;
    if (make_room(rec, pid, inst, extra, &gone, out) != 0) {
        atomic_fetch_add(&rec->duplicates, 1);
        goto out;
    }
    fg_tunnel_conn_t *c = NULL;
    for (int i = 0; i < FG_TUNNEL_CONNS_MAX && c == NULL; i++)
        if (atomic_load(&rec->conns[i].serial) == 0)
            c = &rec->conns[out->index = i];
    int reuse = c == NULL && gone != 0;
    if (reuse) { /* every slot live: the new connection takes a displaced one's slot */
        out->index = __builtin_ctz(gone);
        gone &= gone - 1;
        c = &rec->conns[out->index];
    }
    if (c == NULL) /* every slot live: counted as a duplicate, the agent tries later */
        goto out;
    uint64_t serial = ++t->next_serial;
    if (serial == 0)
        serial = ++t->next_serial;
    memcpy(rec->instance, inst, 16);
    c->slot = slot;
    c->generation = generation;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    atomic_store(&c->since_ms, 0);
    atomic_store(&c->last_beat_ms, 0);
    atomic_store(&c->rtt_us, 0);
    atomic_store(&c->draining, 0);
    atomic_store(&c->streams, 0);
    atomic_store(&c->pid, pid);
    atomic_store_explicit(&c->serial, serial, memory_order_release);
    if (!reuse)
        atomic_fetch_add(&rec->live, 1);
    /* The connections it displaces go only now: workers read the registry without the lock,
     * and in between they would find the agent offline (503) or no holder to hop to (502). */
    for (; gone != 0; gone &= gone - 1)
        conn_free(rec, &rec->conns[__builtin_ctz(gone)], 0);
    atomic_fetch_add(&rec->connects, 1);
    if (out->displaced)
        atomic_fetch_add(&rec->takeovers, 1);
    out->serial = serial;
out:
    if (locked)
        fg_shm_unlock(&t->lock);
}

void fg_tunnels_release(fg_tunnels_t *t, fg_tunnel_rec_t *rec, int index, uint64_t serial)
{
    if (index < 0 || index >= FG_TUNNEL_CONNS_MAX)
        return;
    int locked = lock(t) == 0;
    if (atomic_load(&rec->conns[index].serial) == serial)
        conn_free(rec, &rec->conns[index], 0);
    if (locked)
        fg_shm_unlock(&t->lock);
}

void fg_tunnels_beat(fg_tunnel_conn_t *c, uint64_t wall_ms)
{
    atomic_store_explicit(&c->last_beat_ms, wall_ms, memory_order_relaxed);
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&c->since_ms, &zero, wall_ms);
}

void fg_tunnels_rtt(fg_tunnel_conn_t *c, uint64_t rtt_us)
{
    atomic_store_explicit(&c->rtt_us, rtt_us > UINT32_MAX ? UINT32_MAX : (uint32_t)rtt_us,
                          memory_order_relaxed);
}

void fg_tunnels_streams(fg_tunnel_rec_t *rec, fg_tunnel_conn_t *c, int delta)
{
    atomic_fetch_add_explicit(&rec->streams, delta, memory_order_relaxed);
    if (c != NULL)
        atomic_fetch_add_explicit(&c->streams, delta, memory_order_relaxed);
}

void fg_tunnels_bytes(fg_tunnel_rec_t *rec, uint64_t in, uint64_t out)
{
    atomic_fetch_add_explicit(&rec->bytes_in, in, memory_order_relaxed);
    atomic_fetch_add_explicit(&rec->bytes_out, out, memory_order_relaxed);
}

/* ---- authentication failures per client address ---- */

/* The budget's unit: an IPv4 address, or an IPv6 /64, the subnet one host commonly holds
 * (RFC 4291 2.5.4): counting single IPv6 addresses would give a host 2^64 budgets. */
static void addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(key, a, memcmp(a, v4mapped, 12) == 0 ? 16 : 8);
    } else if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

static size_t addr_hash(const uint8_t key[16])
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < 16; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    return (size_t)(h % FG_TUNNELS_FAIL_SLOTS);
}

/* The address's slot for this minute (created when make), or NULL. Under the lock. */
static fail_slot_t *fail_slot(fg_tunnels_t *t, const uint8_t key[16], uint64_t minute, int make)
{
    size_t h = addr_hash(key);
    fail_slot_t *spare = NULL, *fewest = NULL;
    for (size_t i = 0; i < FAIL_PROBES; i++) {
        fail_slot_t *s = &t->fails[(h + i) % FG_TUNNELS_FAIL_SLOTS];
        int stale = s->minute != minute;
        if (!stale && memcmp(s->addr, key, 16) == 0)
            return s;
        if (stale && spare == NULL)
            spare = s;
        if (!stale && (fewest == NULL || s->count < fewest->count))
            fewest = s;
    }
    if (!make)
        return NULL;
    /* All probed slots busy this minute: the address with the fewest failures loses its
     * count (bounded memory beats perfect memory for a flood of addresses), so a flood of
     * one-time failures does not clear the count of a guesser close to its budget. */
    if (spare == NULL)
        spare = fewest;
    memcpy(spare->addr, key, 16);
    spare->minute = minute;
    spare->count = 0;
    return spare;
}

int fg_tunnels_auth_blocked(fg_tunnels_t *t, const struct sockaddr *sa, unsigned max,
                            uint64_t now_ms)
{
    uint8_t key[16];
    addr_key(sa, key);
    if (t == NULL || lock(t) != 0)
        return 0;
    fail_slot_t *s = fail_slot(t, key, now_ms / 60000 + 1, 0);
    int blocked = s != NULL && s->count >= max;
    fg_shm_unlock(&t->lock);
    return blocked;
}

void fg_tunnels_auth_failed(fg_tunnels_t *t, fg_tunnel_rec_t *rec, const struct sockaddr *sa,
                            uint64_t now_ms)
{
    uint8_t key[16];
    addr_key(sa, key);
    if (rec)
        atomic_fetch_add(&rec->auth_failures, 1);
    if (t == NULL || lock(t) != 0)
        return;
    fail_slot_t *s = fail_slot(t, key, now_ms / 60000 + 1, 1);
    s->count++;
    fg_shm_unlock(&t->lock);
}
