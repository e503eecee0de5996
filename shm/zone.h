/* Named zones in the shared arena. The master asks for a zone by name, size and layout version
 * while it loads a generation (before forking that generation's workers, so every worker
 * inherits the same addresses). A zone whose name, size and layout match one already there is
 * kept with its data; otherwise a new zone is placed and zeroed (`created` tells the caller to
 * initialise it) and the old one stays until every generation that used it has exited
 * (fg_shm_zone_sweep). Zones are placed from the top of the arena down, first fit, so freed
 * zones leave holes that later zones reuse. Only the master creates and frees zones. */
#ifndef FG_SHM_ZONE_H
#define FG_SHM_ZONE_H

#include <stddef.h>
#include <stdint.h>

#include "shm/arena.h"

#define FG_SHM_MAX_ZONES 64
#define FG_SHM_ZONE_NAME 32

typedef struct {
    char name[FG_SHM_ZONE_NAME];
    uint32_t kind;   /* caller-defined, e.g. which structure lives in it */
    uint64_t layout; /* caller-defined version of what lives in it */
    uint64_t size, offset;
    uint64_t min_gen, max_gen; /* generations that use it */
    void *mem;
} fg_shm_zone_info_t;

/* The zone for generation gen: found (name, size, layout and kind equal) or created zeroed.
 * Returns NULL when the arena has no room or the directory is full. */
void *fg_shm_zone_get(fg_shm_t *shm, const char *name, size_t size, uint32_t kind, uint64_t layout,
                      uint64_t gen, int *created);
/* Free every zone that no live generation uses: none of live[0..nlive) lies within the zone's
 * [min_gen, max_gen]. This frees the zones of an old generation once its last worker exited,
 * and those created for a reload that failed (only that generation used them). Returns the
 * number freed. */
int fg_shm_zone_sweep(fg_shm_t *shm, const uint64_t *live, size_t nlive);
/* Copy the live zones, highest offset first; returns how many (at most max). */
size_t fg_shm_zone_list(fg_shm_t *shm, fg_shm_zone_info_t *out, size_t max);
/* Bytes held by live zones. */
uint64_t fg_shm_zone_bytes(fg_shm_t *shm);

#endif
