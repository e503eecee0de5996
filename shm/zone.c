#include "shm/zone.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZONE_MAGIC 0x46475a4eu /* "FGZN" */

typedef struct {
    uint32_t magic;
    uint32_t live; /* set last when placing, cleared first when freeing */
    char name[FG_SHM_ZONE_NAME];
    uint32_t kind;
    uint64_t layout, size, offset, min_gen, max_gen;
} zrec_t;

_Static_assert(sizeof(zrec_t) * FG_SHM_MAX_ZONES <= FG_SHM_ZONE_DIR_SIZE,
               "zone directory does not fit the arena header");

static zrec_t *dir(fg_shm_t *shm)
{
    return fg_shm_zone_dir(shm);
}

static void check(const zrec_t *z)
{
    if (z->live && z->magic != ZONE_MAGIC) {
        fprintf(stderr, "shm zone directory corrupted (record %p)\n", (const void *)z);
        abort();
    }
}

/* The highest free gap of at least size bytes between the bump area and the top, considering
 * the live zones. Returns its offset, or 0 when none (offset 0 is the arena header). */
static uint64_t place(fg_shm_t *shm, uint64_t size)
{
    zrec_t *d = dir(shm);
    uint64_t top = fg_shm_size(shm), floor = fg_shm_used(shm);
    for (;;) {
        /* The highest live zone that starts below top bounds the gap [its end, top). */
        const zrec_t *below = NULL;
        for (int i = 0; i < FG_SHM_MAX_ZONES; i++) {
            if (!d[i].live || d[i].offset >= top)
                continue;
            if (below == NULL || d[i].offset > below->offset)
                below = &d[i];
        }
        uint64_t lo = below ? below->offset + below->size : floor;
        if (lo < floor)
            lo = floor;
        if (top >= lo && top - lo >= size)
            return (top - size) & ~(uint64_t)(FG_CACHELINE - 1);
        if (below == NULL)
            return 0;
        top = below->offset;
    }
}

static void update_low(fg_shm_t *shm)
{
    zrec_t *d = dir(shm);
    uint64_t low = fg_shm_size(shm);
    for (int i = 0; i < FG_SHM_MAX_ZONES; i++)
        if (d[i].live && d[i].offset < low)
            low = d[i].offset;
    fg_shm_set_zone_low(shm, low);
}

void *fg_shm_zone_get(fg_shm_t *shm, const char *name, size_t size, uint32_t kind, uint64_t layout,
                      uint64_t gen, int *created)
{
    zrec_t *d = dir(shm), *found = NULL, *freerec = NULL;
    *created = 0;
    if (strlen(name) >= FG_SHM_ZONE_NAME || size == 0)
        return NULL;
    size = (size + FG_CACHELINE - 1) & ~(size_t)(FG_CACHELINE - 1);
    if (fg_shm_arena_lock(shm) < 0)
        return NULL;
    for (int i = 0; i < FG_SHM_MAX_ZONES; i++) {
        check(&d[i]);
        if (!d[i].live) {
            if (freerec == NULL)
                freerec = &d[i];
            continue;
        }
        if (strcmp(d[i].name, name) == 0 && d[i].size == size && d[i].layout == layout &&
            d[i].kind == kind && (found == NULL || d[i].max_gen > found->max_gen))
            found = &d[i];
    }
    void *mem = NULL;
    if (found) {
        if (gen > found->max_gen)
            found->max_gen = gen;
        mem = (char *)shm + found->offset;
    } else if (freerec) {
        uint64_t off = place(shm, size);
        if (off != 0) {
            memset((char *)shm + off, 0, size);
            memset(freerec, 0, sizeof(*freerec));
            snprintf(freerec->name, sizeof(freerec->name), "%s", name);
            freerec->magic = ZONE_MAGIC;
            freerec->kind = kind;
            freerec->layout = layout;
            freerec->size = size;
            freerec->offset = off;
            freerec->min_gen = freerec->max_gen = gen;
            __atomic_store_n(&freerec->live, 1, __ATOMIC_RELEASE);
            update_low(shm);
            mem = (char *)shm + off;
            *created = 1;
        }
    }
    fg_shm_arena_unlock(shm);
    return mem;
}

static int in_use(const zrec_t *z, const uint64_t *live, size_t nlive)
{
    for (size_t i = 0; i < nlive; i++)
        if (live[i] >= z->min_gen && live[i] <= z->max_gen)
            return 1;
    return 0;
}

int fg_shm_zone_sweep(fg_shm_t *shm, const uint64_t *live, size_t nlive)
{
    zrec_t *d = dir(shm);
    int n = 0;
    if (fg_shm_arena_lock(shm) < 0)
        return 0;
    for (int i = 0; i < FG_SHM_MAX_ZONES; i++) {
        check(&d[i]);
        if (d[i].live && !in_use(&d[i], live, nlive)) {
            __atomic_store_n(&d[i].live, 0, __ATOMIC_RELEASE);
            d[i].magic = 0;
            n++;
        }
    }
    if (n)
        update_low(shm);
    fg_shm_arena_unlock(shm);
    return n;
}

static int info_cmp(const void *a, const void *b)
{
    const fg_shm_zone_info_t *x = a, *y = b;
    return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

size_t fg_shm_zone_list(fg_shm_t *shm, fg_shm_zone_info_t *out, size_t max)
{
    zrec_t *d = dir(shm);
    size_t n = 0;
    if (fg_shm_arena_lock(shm) < 0)
        return 0;
    for (int i = 0; i < FG_SHM_MAX_ZONES && n < max; i++) {
        check(&d[i]);
        if (!d[i].live)
            continue;
        fg_shm_zone_info_t *z = &out[n++];
        memcpy(z->name, d[i].name, sizeof(z->name));
        z->kind = d[i].kind;
        z->layout = d[i].layout;
        z->size = d[i].size;
        z->offset = d[i].offset;
        z->min_gen = d[i].min_gen;
        z->max_gen = d[i].max_gen;
        z->mem = (char *)shm + d[i].offset;
    }
    fg_shm_arena_unlock(shm);
    qsort(out, n, sizeof(*out), info_cmp);
    return n;
}

uint64_t fg_shm_zone_bytes(fg_shm_t *shm)
{
    fg_shm_zone_info_t z[FG_SHM_MAX_ZONES];
    size_t n = fg_shm_zone_list(shm, z, FG_SHM_MAX_ZONES);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += z[i].size;
    return sum;
}
