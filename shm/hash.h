/* A hash table with an LRU list in shared memory, over fixed-size slots: keys and values of a
 * size fixed at creation, so there is no allocator to fragment and a full table is handled by
 * evicting the least recently used entry (counted). One robust lock protects the whole table;
 * callers take it once per operation sequence (find-or-insert, update, unlock).
 *
 * Repair after a dead lock owner: every slot carries its own "used" word, written last on
 * insert and cleared first on removal. fg_shm_hash_lock rebuilds the bucket chains, the LRU
 * list and the free list from those words, so the table's structure is always consistent
 * afterwards. What it cannot restore: the LRU order (rebuilt in slot order), and the value the
 * dead owner was updating (at most that one update is lost or half-applied; rate-limit states
 * are a few integers, each within its valid range on its own). */
#ifndef FG_SHM_HASH_H
#define FG_SHM_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct fg_shm_hash_s fg_shm_hash_t;

typedef struct {
    uint64_t slots, entries, evictions, alloc_failures, recoveries, inserts;
} fg_shm_hash_stats_t;

/* Called for an entry removed to make room (under the lock). */
typedef void (*fg_shm_hash_evict_fn)(const void *key, void *value, void *arg);
/* Iteration callback (under the lock); return 1 to remove the entry, 0 to keep it. */
typedef int (*fg_shm_hash_each_fn)(const void *key, void *value, void *arg);

/* Build a table in mem[0..size). key_size and value_size are rounded up to 8. Returns NULL
 * when fewer than 4 slots fit or the lock cannot be made. */
fg_shm_hash_t *fg_shm_hash_init(void *mem, size_t size, size_t key_size, size_t value_size,
                                uint64_t seed);
/* Number of slots a table of these sizes would get. */
size_t fg_shm_hash_capacity(size_t size, size_t key_size, size_t value_size);

/* 0 when locked (after a repair if the previous owner died), <0 when not locked. */
int fg_shm_hash_lock(fg_shm_hash_t *h);
void fg_shm_hash_unlock(fg_shm_hash_t *h);

uint64_t fg_shm_hash_key(const fg_shm_hash_t *h, const void *key);
/* Under the lock. The value of key (marked most recently used) or NULL. */
void *fg_shm_hash_find(fg_shm_hash_t *h, const void *key, uint64_t hash);
/* Under the lock; key must be absent. A zeroed value, evicting the least recently used entry
 * when the table is full (evict is told first; may be NULL). */
void *fg_shm_hash_insert(fg_shm_hash_t *h, const void *key, uint64_t hash,
                         fg_shm_hash_evict_fn evict, void *arg);
/* The same without eviction: NULL (counted as an allocation failure) when the table is full.
 * For entries that must not silently disappear, such as blocked addresses. */
void *fg_shm_hash_try_insert(fg_shm_hash_t *h, const void *key, uint64_t hash);
/* Under the lock: remove the entry whose value this is. */
void fg_shm_hash_remove(fg_shm_hash_t *h, void *value);
/* Under the lock: every entry, most recently used first. */
void fg_shm_hash_foreach(fg_shm_hash_t *h, fg_shm_hash_each_fn fn, void *arg);
/* Lock-free snapshot of the counters (each read atomically). */
void fg_shm_hash_get_stats(const fg_shm_hash_t *h, fg_shm_hash_stats_t *st);

/* For tests: rebuild as after a dead owner. */
void fg_shm_hash_repair(fg_shm_hash_t *h);

#endif
