#include "shm/tunnels.h"

#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "shm/lock.h"
#include "shm/zone.h"

#define ZONE_MAGIC 0x46475431u /* "FGT1" */
#define REC_MAGIC 0x46475452u  /* "FGTR" */
#define ZONE_KIND 0x54554e4eu  /* "TUNN" */
#define ZONE_LAYOUT 1
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
        if (r->used && (r->last_gen >= min_live || atomic_load(&r->serial) != 0))
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

void fg_tunnels_worker_gone(fg_tunnels_t *t, int pid)
{
    if (t == NULL || lock(t) != 0)
        return;
    for (size_t i = 0; i < FG_TUNNELS_MAX; i++) {
        fg_tunnel_rec_t *r = &t->recs[i];
        if (r->used && atomic_load(&r->pid) == pid) {
            atomic_store(&r->serial, 0);
            atomic_store(&r->pid, 0);
        }
    }
    fg_shm_unlock(&t->lock);
}

int fg_tunnels_owner(const fg_tunnel_rec_t *rec, uint64_t *serial)
{
    *serial = atomic_load_explicit(&rec->serial, memory_order_acquire);
    return *serial ? atomic_load_explicit(&rec->pid, memory_order_acquire) : 0;
}

uint64_t fg_tunnels_claim(fg_tunnels_t *t, fg_tunnel_rec_t *rec, int pid, int slot,
                          uint64_t generation, const char *peer, int *prev_pid,
                          uint64_t *prev_serial)
{
    assert(rec->magic == REC_MAGIC);
    int locked = lock(t) == 0;
    uint64_t serial = ++t->next_serial;
    if (serial == 0)
        serial = ++t->next_serial;
    *prev_serial = atomic_load(&rec->serial);
    *prev_pid = *prev_serial ? atomic_load(&rec->pid) : 0;
    rec->slot = slot;
    rec->generation = generation;
    snprintf(rec->peer, sizeof(rec->peer), "%s", peer);
    atomic_store(&rec->since_ms, 0);
    atomic_store(&rec->pid, pid);
    atomic_store_explicit(&rec->serial, serial, memory_order_release);
    atomic_fetch_add(&rec->connects, 1);
    if (*prev_serial)
        atomic_fetch_add(&rec->takeovers, 1);
    if (locked)
        fg_shm_unlock(&t->lock);
    return serial;
}

void fg_tunnels_release(fg_tunnels_t *t, fg_tunnel_rec_t *rec, uint64_t serial)
{
    int locked = lock(t) == 0;
    if (atomic_load(&rec->serial) == serial) {
        atomic_store(&rec->serial, 0);
        atomic_store(&rec->pid, 0);
    }
    if (locked)
        fg_shm_unlock(&t->lock);
}

void fg_tunnels_beat(fg_tunnel_rec_t *rec, uint64_t wall_ms)
{
    atomic_store_explicit(&rec->last_beat_ms, wall_ms, memory_order_relaxed);
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&rec->since_ms, &zero, wall_ms);
}

void fg_tunnels_rtt(fg_tunnel_rec_t *rec, uint64_t rtt_us)
{
    atomic_store_explicit(&rec->rtt_us, rtt_us, memory_order_relaxed);
}

void fg_tunnels_streams(fg_tunnel_rec_t *rec, int delta)
{
    atomic_fetch_add_explicit(&rec->streams, delta, memory_order_relaxed);
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
