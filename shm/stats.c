#include "shm/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/arena.h"

#define STATS_MAGIC 0x46475354u /* "FGST" */
#define SLOT_USED 0x534c4f54u   /* "SLOT" */

_Static_assert(sizeof(fg_stats_slot_t) == 2 * FG_CACHELINE, "a stats slot is two lines");

struct fg_stats_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t nslots;
    _Alignas(FG_CACHELINE) fg_stats_slot_t slots[];
};

static void check(const fg_stats_t *st)
{
    if (st == NULL || st->magic != STATS_MAGIC) {
        fprintf(stderr, "shm stats table corrupted\n");
        abort();
    }
}

fg_stats_t *fg_stats_init(void *mem, size_t size)
{
    if (size < sizeof(fg_stats_t) + sizeof(fg_stats_slot_t))
        return NULL;
    fg_stats_t *st = mem;
    memset(st, 0, sizeof(*st));
    st->nslots = (uint32_t)((size - sizeof(fg_stats_t)) / sizeof(fg_stats_slot_t));
    memset(st->slots, 0, (size_t)st->nslots * sizeof(fg_stats_slot_t));
    st->magic = STATS_MAGIC;
    return st;
}

fg_stats_slot_t *fg_stats_slot(fg_stats_t *st, uint32_t kind, uint64_t key, const char *id,
                               uint64_t gen)
{
    check(st);
    fg_stats_slot_t *free_slot = NULL, *oldest = NULL;
    for (uint32_t i = 0; i < st->nslots; i++) {
        fg_stats_slot_t *s = &st->slots[i];
        if (s->used != SLOT_USED) {
            if (free_slot == NULL)
                free_slot = s;
            continue;
        }
        if (s->kind == kind && s->key == key) {
            if (gen > s->last_gen)
                s->last_gen = gen;
            return s;
        }
        if (s->last_gen < gen && (oldest == NULL || s->last_gen < oldest->last_gen))
            oldest = s;
    }
    /* Workers of an older generation may still add to a reused slot for a moment; these are
     * statistics, never decisions, so that is harmless. */
    fg_stats_slot_t *s = free_slot ? free_slot : oldest;
    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    s->key = key;
    s->last_gen = gen;
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->used = SLOT_USED;
    return s;
}

size_t fg_stats_capacity(const fg_stats_t *st)
{
    check(st);
    return st->nslots;
}

size_t fg_stats_used(const fg_stats_t *st)
{
    check(st);
    size_t n = 0;
    for (uint32_t i = 0; i < st->nslots; i++)
        n += st->slots[i].used == SLOT_USED;
    return n;
}

uint32_t fg_stats_index(const fg_stats_t *st, const fg_stats_slot_t *s)
{
    check(st);
    if (s == NULL || s < st->slots || s >= st->slots + st->nslots)
        return 0;
    return (uint32_t)(s - st->slots) + 1;
}

fg_stats_slot_t *fg_stats_at(fg_stats_t *st, uint32_t index)
{
    check(st);
    return index == 0 || index > st->nslots ? NULL : &st->slots[index - 1];
}
