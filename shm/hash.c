#include "shm/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/arena.h"
#include "shm/lock.h"

#define HASH_MAGIC 0x46474854u /* "FGHT" */
#define ENTRY_USED 0x55534544u /* "USED" */
#define NIL UINT32_MAX

#define HASSERT(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: shared hash check failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    uint32_t used; /* ENTRY_USED or 0: the truth that repair trusts */
    uint32_t hnext;
    uint32_t prev, next; /* LRU: prev is towards the head (most recent) */
    uint64_t hash;
    /* key, then value */
} entry_t;

struct fg_shm_hash_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t key_size, value_size, entry_size;
    uint32_t nbuckets, nslots;
    uint64_t seed;
    uint64_t buckets_off, slots_off;
    _Alignas(FG_CACHELINE) fg_shm_lock_t lock;
    uint32_t free_head, lru_head, lru_tail;
    uint64_t count, evictions, alloc_failures, inserts;
};

static void lru_push(fg_shm_hash_t *h, entry_t *e, uint32_t i);

static size_t up8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static uint32_t *buckets(fg_shm_hash_t *h)
{
    return (uint32_t *)((char *)h + h->buckets_off);
}

static entry_t *slot(fg_shm_hash_t *h, uint32_t i)
{
    HASSERT(i < h->nslots);
    return (entry_t *)((char *)h + h->slots_off + (size_t)i * h->entry_size);
}

static uint32_t index_of(fg_shm_hash_t *h, const entry_t *e)
{
    size_t off = (size_t)((const char *)e - ((char *)h + h->slots_off));
    HASSERT(off % h->entry_size == 0 && off / h->entry_size < h->nslots);
    return (uint32_t)(off / h->entry_size);
}

static void *key_of(entry_t *e)
{
    return e + 1;
}

static void *value_of(fg_shm_hash_t *h, entry_t *e)
{
    return (char *)(e + 1) + h->key_size;
}

/* Layout for a given size: header, buckets (a power of two, about one per slot), slots. */
static size_t layout(size_t size, size_t key_size, size_t value_size, uint32_t *nbuckets,
                     size_t *buckets_off, size_t *slots_off)
{
    size_t esize = sizeof(entry_t) + up8(key_size) + up8(value_size);
    size_t hdr = (sizeof(fg_shm_hash_t) + FG_CACHELINE - 1) & ~(size_t)(FG_CACHELINE - 1);
    if (size < hdr + 4 * (esize + 4))
        return 0;
    size_t n = (size - hdr) / (esize + 4);
    uint32_t nb = 1;
    while (nb < n && nb < (1u << 30))
        nb <<= 1;
    size_t boff = hdr, soff = up8(boff + (size_t)nb * 4);
    if (soff >= size)
        return 0;
    n = (size - soff) / esize;
    if (n > UINT32_MAX - 1)
        n = UINT32_MAX - 1;
    *nbuckets = nb;
    *buckets_off = boff;
    *slots_off = soff;
    return n < 4 ? 0 : n;
}

size_t fg_shm_hash_capacity(size_t size, size_t key_size, size_t value_size)
{
    uint32_t nb;
    size_t bo, so;
    return layout(size, key_size, value_size, &nb, &bo, &so);
}

static void check(const fg_shm_hash_t *h)
{
    HASSERT(h != NULL && h->magic == HASH_MAGIC);
}

/* Rebuild chains and lists from the used words. Slots are visited in index order, so the LRU
 * order afterwards is arbitrary but every entry is on it exactly once. */
void fg_shm_hash_repair(fg_shm_hash_t *h)
{
    uint32_t *b = buckets(h);
    for (uint32_t i = 0; i < h->nbuckets; i++)
        b[i] = NIL;
    h->free_head = h->lru_head = h->lru_tail = NIL;
    uint64_t count = 0;
    for (uint32_t i = h->nslots; i-- > 0;) {
        entry_t *e = slot(h, i);
        if (e->used != ENTRY_USED) {
            e->used = 0;
            e->hnext = h->free_head;
            h->free_head = i;
            continue;
        }
        uint32_t bi = (uint32_t)(e->hash & (h->nbuckets - 1));
        e->hnext = b[bi];
        b[bi] = i;
        lru_push(h, e, i);
        count++;
    }
    __atomic_store_n(&h->count, count, __ATOMIC_RELAXED);
}

fg_shm_hash_t *fg_shm_hash_init(void *mem, size_t size, size_t key_size, size_t value_size,
                                uint64_t seed)
{
    uint32_t nb;
    size_t boff, soff;
    size_t n = layout(size, key_size, value_size, &nb, &boff, &soff);
    if (n == 0 || ((uintptr_t)mem & (FG_CACHELINE - 1)) != 0)
        return NULL;
    fg_shm_hash_t *h = mem;
    memset(h, 0, sizeof(*h));
    h->key_size = (uint32_t)up8(key_size);
    h->value_size = (uint32_t)up8(value_size);
    h->entry_size = (uint32_t)(sizeof(entry_t) + h->key_size + h->value_size);
    h->nbuckets = nb;
    h->nslots = (uint32_t)n;
    h->seed = seed;
    h->buckets_off = boff;
    h->slots_off = soff;
    if (fg_shm_lock_init(&h->lock) < 0)
        return NULL;
    memset((char *)h + soff, 0, n * h->entry_size);
    fg_shm_hash_repair(h);
    h->magic = HASH_MAGIC;
    return h;
}

int fg_shm_hash_lock(fg_shm_hash_t *h)
{
    check(h);
    int rc = fg_shm_lock(&h->lock);
    if (rc == FG_SHM_LOCK_RECOVERED) {
        fg_shm_hash_repair(h);
        rc = 0;
    }
    return rc;
}

void fg_shm_hash_unlock(fg_shm_hash_t *h)
{
    fg_shm_unlock(&h->lock);
}

/* A keyed 64-bit mix over 8-byte words (keys are multiples of 8 bytes). The seed is random per
 * arena, so clients cannot aim many keys at one bucket. */
uint64_t fg_shm_hash_key(const fg_shm_hash_t *h, const void *key)
{
    const unsigned char *p = key;
    uint64_t x = h->seed ^ (h->key_size * 0x9e3779b97f4a7c15ull);
    for (uint32_t i = 0; i < h->key_size; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        x ^= w;
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 32;
        x = (x << 23 | x >> 41) * 0xc4ceb9fe1a85ec53ull;
    }
    x ^= x >> 29;
    x *= 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 32);
}

static void lru_unlink(fg_shm_hash_t *h, entry_t *e)
{
    if (e->prev != NIL)
        slot(h, e->prev)->next = e->next;
    else
        h->lru_head = e->next;
    if (e->next != NIL)
        slot(h, e->next)->prev = e->prev;
    else
        h->lru_tail = e->prev;
}

static void lru_push(fg_shm_hash_t *h, entry_t *e, uint32_t i)
{
    e->prev = NIL;
    e->next = h->lru_head;
    if (h->lru_head != NIL)
        slot(h, h->lru_head)->prev = i;
    else
        h->lru_tail = i;
    h->lru_head = i;
}

void *fg_shm_hash_find(fg_shm_hash_t *h, const void *key, uint64_t hash)
{
    check(h);
    for (uint32_t i = buckets(h)[hash & (h->nbuckets - 1)]; i != NIL;) {
        entry_t *e = slot(h, i);
        HASSERT(e->used == ENTRY_USED);
        if (e->hash == hash && memcmp(key_of(e), key, h->key_size) == 0) {
            if (h->lru_head != i) {
                lru_unlink(h, e);
                lru_push(h, e, i);
            }
            return value_of(h, e);
        }
        i = e->hnext;
    }
    return NULL;
}

static void unlink_entry(fg_shm_hash_t *h, entry_t *e, uint32_t i)
{
    e->used = 0; /* first: a death from here on leaves a free slot behind */
    uint32_t *pp = &buckets(h)[e->hash & (h->nbuckets - 1)];
    while (*pp != NIL && *pp != i)
        pp = &slot(h, *pp)->hnext;
    HASSERT(*pp == i);
    *pp = e->hnext;
    lru_unlink(h, e);
    e->hnext = h->free_head;
    h->free_head = i;
    __atomic_store_n(&h->count, h->count - 1, __ATOMIC_RELAXED);
}

void *fg_shm_hash_insert(fg_shm_hash_t *h, const void *key, uint64_t hash,
                         fg_shm_hash_evict_fn evict, void *arg)
{
    check(h);
    if (h->free_head == NIL) {
        if (h->lru_tail == NIL) {
            __atomic_store_n(&h->alloc_failures, h->alloc_failures + 1, __ATOMIC_RELAXED);
            return NULL;
        }
        entry_t *old = slot(h, h->lru_tail);
        if (evict)
            evict(key_of(old), value_of(h, old), arg);
        unlink_entry(h, old, h->lru_tail);
        __atomic_store_n(&h->evictions, h->evictions + 1, __ATOMIC_RELAXED);
    }
    uint32_t i = h->free_head;
    entry_t *e = slot(h, i);
    HASSERT(e->used == 0);
    h->free_head = e->hnext;
    e->hash = hash;
    memcpy(key_of(e), key, h->key_size);
    memset(value_of(h, e), 0, h->value_size);
    uint32_t *b = &buckets(h)[hash & (h->nbuckets - 1)];
    e->hnext = *b;
    *b = i;
    lru_push(h, e, i);
    e->used = ENTRY_USED; /* last: the entry exists for repair only once fully linked */
    __atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->inserts, h->inserts + 1, __ATOMIC_RELAXED);
    return value_of(h, e);
}

void *fg_shm_hash_try_insert(fg_shm_hash_t *h, const void *key, uint64_t hash)
{
    check(h);
    if (h->free_head == NIL) {
        __atomic_store_n(&h->alloc_failures, h->alloc_failures + 1, __ATOMIC_RELAXED);
        return NULL;
    }
    return fg_shm_hash_insert(h, key, hash, NULL, NULL);
}

void fg_shm_hash_remove(fg_shm_hash_t *h, void *value)
{
    check(h);
    entry_t *e = (entry_t *)((char *)value - h->key_size) - 1;
    HASSERT(e->used == ENTRY_USED);
    unlink_entry(h, e, index_of(h, e));
}

void fg_shm_hash_foreach(fg_shm_hash_t *h, fg_shm_hash_each_fn fn, void *arg)
{
    check(h);
    for (uint32_t i = h->lru_head; i != NIL;) {
        entry_t *e = slot(h, i);
        uint32_t next = e->next;
        if (fn(key_of(e), value_of(h, e), arg))
            unlink_entry(h, e, i);
        i = next;
    }
}

void fg_shm_hash_get_stats(const fg_shm_hash_t *h, fg_shm_hash_stats_t *st)
{
    check(h);
    st->slots = h->nslots;
    st->entries = __atomic_load_n(&h->count, __ATOMIC_RELAXED);
    st->evictions = __atomic_load_n(&h->evictions, __ATOMIC_RELAXED);
    st->alloc_failures = __atomic_load_n(&h->alloc_failures, __ATOMIC_RELAXED);
    st->inserts = __atomic_load_n(&h->inserts, __ATOMIC_RELAXED);
    st->recoveries = __atomic_load_n(&h->lock.recoveries, __ATOMIC_RELAXED);
}
