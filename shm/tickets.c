#include "shm/tickets.h"

#include <assert.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "shm/lock.h"
#include "shm/zone.h"

#define TICKETS_MAGIC 0x46475454u /* "FGTT" */
#define ZONE_KIND 0x544b4559u     /* "TKEY" */
#define ZONE_LAYOUT 1

struct fg_tickets_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    fg_shm_lock_t lock;
    uint64_t rotated_ms; /* monotonic time keys[0] became the newest */
    uint64_t rotations;
    uint32_t nkeys;                        /* keys in use, 1..FG_TICKETS_KEYS */
    fg_ticket_key_t keys[FG_TICKETS_KEYS]; /* keys[0] is the newest */
};

static void check(const fg_tickets_t *t)
{
    assert(t != NULL && t->magic == TICKETS_MAGIC);
    (void)t;
}

static int new_key(fg_ticket_key_t *k)
{
    return RAND_bytes((unsigned char *)k, (int)sizeof(*k)) == 1 ? 0 : -1;
}

/* Under the lock. */
static int shift(fg_tickets_t *t, uint64_t now_ms)
{
    fg_ticket_key_t k;
    if (new_key(&k) < 0)
        return -1;
    memmove(&t->keys[1], &t->keys[0], sizeof(t->keys[0]) * (FG_TICKETS_KEYS - 1));
    t->keys[0] = k;
    OPENSSL_cleanse(&k, sizeof(k));
    if (t->nkeys < FG_TICKETS_KEYS)
        t->nkeys++;
    t->rotated_ms = now_ms;
    t->rotations++;
    return 0;
}

/* Under the lock: one shift per whole period elapsed; after three, every old key is gone
 * and the newest is fresh, so more shifts would change nothing. */
static int advance(fg_tickets_t *t, uint64_t now_ms, uint64_t period_ms)
{
    if (period_ms == 0 || now_ms < t->rotated_ms + period_ms)
        return 0;
    uint64_t n = (now_ms - t->rotated_ms) / period_ms;
    if (n >= FG_TICKETS_KEYS) {
        t->nkeys = 0;
        n = 1;
    }
    for (uint64_t i = 0; i < n; i++)
        if (shift(t, now_ms) < 0)
            return -1;
    return 0;
}

static int lock(fg_tickets_t *t)
{
    check(t);
    /* A holder that died mid-rotation left at worst a half-written key: a ticket under it
     * fails to decrypt and the client does a full handshake. Nothing to repair. */
    return fg_shm_lock(&t->lock) < 0 ? -1 : 0;
}

fg_tickets_t *fg_tickets_attach(fg_shm_t *shm, uint64_t gen)
{
    int created = 0;
    fg_tickets_t *t =
        fg_shm_zone_get(shm, "tickets", sizeof(*t), ZONE_KIND, ZONE_LAYOUT, gen, &created);
    if (t == NULL || !created) {
        if (t)
            check(t);
        return t;
    }
    if (fg_shm_lock_init(&t->lock) < 0)
        return NULL;
    t->magic = TICKETS_MAGIC;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (shift(t, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) < 0) {
        t->magic = 0;
        return NULL;
    }
    t->rotations = 0;
    return t;
}

int fg_tickets_current(fg_tickets_t *t, uint64_t now_ms, uint64_t period_ms, fg_ticket_key_t *out)
{
    if (lock(t) < 0)
        return -1;
    int rc = advance(t, now_ms, period_ms);
    if (rc == 0 && t->nkeys == 0)
        rc = shift(t, now_ms);
    if (rc == 0)
        *out = t->keys[0];
    fg_shm_unlock(&t->lock);
    return rc;
}

int fg_tickets_find(fg_tickets_t *t, const unsigned char *name, uint64_t now_ms, uint64_t period_ms,
                    fg_ticket_key_t *out)
{
    if (lock(t) < 0)
        return -1;
    int found = 0;
    if (advance(t, now_ms, period_ms) == 0) {
        for (uint32_t i = 0; i < t->nkeys && !found; i++) {
            if (CRYPTO_memcmp(t->keys[i].name, name, FG_TICKET_NAME_LEN) == 0) {
                *out = t->keys[i];
                found = i == 0 ? 1 : 2;
            }
        }
    }
    fg_shm_unlock(&t->lock);
    return found;
}

int fg_tickets_rotate(fg_tickets_t *t, uint64_t now_ms)
{
    if (lock(t) < 0)
        return -1;
    int rc = shift(t, now_ms);
    fg_shm_unlock(&t->lock);
    return rc;
}

uint64_t fg_tickets_rotations(fg_tickets_t *t)
{
    check(t);
    return __atomic_load_n(&t->rotations, __ATOMIC_RELAXED);
}
