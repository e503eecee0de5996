/* Named counter slots in a shm zone: one slot per configured rate limit or access-control
 * list, keyed by (kind, id, fingerprint) so that an unchanged rule keeps its figures across a
 * reload and a changed one starts from zero. The master assigns slots while it builds a
 * generation; workers only add to counters (atomic, no lock). Each slot fills two cache
 * lines of its own. */
#ifndef FG_SHM_STATS_H
#define FG_SHM_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "shm/arena.h"

#define FG_STATS_COUNTERS 6
#define FG_STATS_ID 48

typedef struct {
    _Alignas(FG_CACHELINE) uint32_t used;
    uint32_t kind;
    uint64_t key;      /* fingerprint of (kind, id, definition) */
    uint64_t last_gen; /* newest generation that uses the slot */
    char id[FG_STATS_ID];
    uint64_t c[FG_STATS_COUNTERS];
} fg_stats_slot_t;

typedef struct fg_stats_s fg_stats_t;

fg_stats_t *fg_stats_init(void *mem, size_t size);
/* The slot for (kind, key) in generation gen, created zeroed if absent. A full table reuses the
 * slot least recently used by a generation older than gen. NULL when none can be had. */
fg_stats_slot_t *fg_stats_slot(fg_stats_t *st, uint32_t kind, uint64_t key, const char *id,
                               uint64_t gen);
size_t fg_stats_capacity(const fg_stats_t *st);
/* Slots by a 1-based index (0 = none), so that shm entries can name a slot in 4 bytes. */
uint32_t fg_stats_index(const fg_stats_t *st, const fg_stats_slot_t *s);
fg_stats_slot_t *fg_stats_at(fg_stats_t *st, uint32_t index);
size_t fg_stats_used(const fg_stats_t *st);

static inline void fg_stats_add(fg_stats_slot_t *s, int i, int64_t n)
{
    if (s)
        __atomic_fetch_add(&s->c[i], (uint64_t)n, __ATOMIC_RELAXED);
}

static inline uint64_t fg_stats_get(const fg_stats_slot_t *s, int i)
{
    return s ? __atomic_load_n(&s->c[i], __ATOMIC_RELAXED) : 0;
}

#endif
