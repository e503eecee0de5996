#include "shm/arena.h"
#include "shm/lock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHM_MAGIC 0x46475348u    /* "FGSH" */
#define WORKER_MAGIC 0x4647574bu /* "FGWK" */
#define SHM_VERSION 1u

/* Always on, also in release builds: a corrupted shared structure must stop the process that
 * sees it rather than spread bad data to every worker. */
#define SHM_ASSERT(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: shared memory check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The header sits at offset 0 of the mapping; the handle is the mapping itself. The worker
 * table follows it, then the zone area that the bump allocator hands out. */
struct fg_shm_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t version;
    uint64_t size;       /* bytes mapped */
    uint64_t zone_start; /* offset of the first zone byte */
    _Alignas(FG_CACHELINE) uint64_t generation;
    uint32_t stopping;                    /* fg_shm_set_stopping */
    _Alignas(FG_CACHELINE) uint64_t used; /* bump offset; only ever grows */
    uint64_t zone_low;                    /* lowest byte of the named zones (size when none) */
    _Alignas(FG_CACHELINE) fg_shm_lock_t lock;
    _Alignas(FG_CACHELINE) unsigned char zone_dir[FG_SHM_ZONE_DIR_SIZE];
    _Alignas(FG_CACHELINE) fg_shm_worker_t workers[FG_SHM_MAX_WORKERS];
};

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static void check(const fg_shm_t *shm)
{
    SHM_ASSERT(shm != NULL && shm->magic == SHM_MAGIC && shm->version == SHM_VERSION);
}

/* Sizes below the fixed part (header and worker table) are raised to it: the operator asked for
 * a small arena, not for no worker table. */
fg_shm_t *fg_shm_new(size_t size)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t fixed = round_up(sizeof(fg_shm_t), FG_CACHELINE);

    if (page <= 0)
        page = 4096;
    if (size < fixed)
        size = fixed;
    if (size > SIZE_MAX - (size_t)page) {
        errno = ENOMEM;
        return NULL;
    }
    size = round_up(size, (size_t)page);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;

    /* An anonymous mapping starts zeroed: counters, states (FG_WORKER_FREE) and zones. */
    fg_shm_t *shm = p;
    shm->magic = SHM_MAGIC;
    shm->version = SHM_VERSION;
    shm->size = size;
    shm->zone_start = fixed;
    shm->used = fixed;
    shm->zone_low = size;
    if (fg_shm_lock_init(&shm->lock) < 0) {
        munmap(p, size);
        errno = ENOMEM;
        return NULL;
    }
    for (int i = 0; i < FG_SHM_MAX_WORKERS; i++) {
        shm->workers[i].magic = WORKER_MAGIC;
        shm->workers[i].slot = -1;
    }
    return shm;
}

void fg_shm_free(fg_shm_t *shm)
{
    if (shm == NULL)
        return;
    check(shm);
    munmap(shm, shm->size);
}

size_t fg_shm_size(const fg_shm_t *shm)
{
    check(shm);
    return shm->size;
}

size_t fg_shm_used(const fg_shm_t *shm)
{
    check(shm);
    return __atomic_load_n(&shm->used, __ATOMIC_ACQUIRE);
}

uint64_t fg_shm_generation(const fg_shm_t *shm)
{
    check(shm);
    return __atomic_load_n(&shm->generation, __ATOMIC_ACQUIRE);
}

void fg_shm_set_generation(fg_shm_t *shm, uint64_t gen)
{
    check(shm);
    __atomic_store_n(&shm->generation, gen, __ATOMIC_RELEASE);
}

void fg_shm_set_stopping(fg_shm_t *shm)
{
    __atomic_store_n(&shm->stopping, 1, __ATOMIC_RELEASE);
}

int fg_shm_stopping(const fg_shm_t *shm)
{
    return __atomic_load_n(&shm->stopping, __ATOMIC_ACQUIRE) != 0;
}

fg_shm_worker_t *fg_shm_worker(fg_shm_t *shm, int index)
{
    check(shm);
    if (index < 0 || index >= FG_SHM_MAX_WORKERS)
        return NULL;
    fg_shm_worker_t *w = &shm->workers[index];
    SHM_ASSERT(w->magic == WORKER_MAGIC);
    return w;
}

/* Only the master allocates and releases records, so the scan needs no lock; the counters are
 * reset before the state becomes visible as STARTING. */
fg_shm_worker_t *fg_shm_worker_alloc(fg_shm_t *shm, int slot, uint64_t generation)
{
    check(shm);
    for (int i = 0; i < FG_SHM_MAX_WORKERS; i++) {
        fg_shm_worker_t *w = &shm->workers[i];
        SHM_ASSERT(w->magic == WORKER_MAGIC);
        if (__atomic_load_n(&w->state, __ATOMIC_ACQUIRE) != FG_WORKER_FREE)
            continue;
        w->slot = slot;
        w->pid = 0;
        w->generation = generation;
        w->started_ms = 0;
        __atomic_store_n(&w->connections, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&w->connections_total, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&w->requests, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&w->websockets, 0, __ATOMIC_RELAXED);
        w->restarts = 0;
        __atomic_store_n(&w->state, FG_WORKER_STARTING, __ATOMIC_RELEASE);
        return w;
    }
    return NULL;
}

void fg_shm_worker_release(fg_shm_worker_t *w)
{
    if (w == NULL)
        return;
    SHM_ASSERT(w->magic == WORKER_MAGIC);
    w->pid = 0;
    w->slot = -1;
    __atomic_store_n(&w->state, FG_WORKER_FREE, __ATOMIC_RELEASE);
}

/* Bump under the arena lock: the master places zones from the top while a worker may allocate
 * here, and both must see the same boundary. Blocks are cache-line aligned so that no two
 * users share a line. */
void *fg_shm_alloc(fg_shm_t *shm, size_t size)
{
    check(shm);
    if (size == 0 || size > shm->size)
        return NULL;
    size_t need = round_up(size, FG_CACHELINE);
    if (fg_shm_lock(&shm->lock) < 0)
        return NULL;
    uint64_t off = shm->used;
    void *p = NULL;
    if (off <= shm->zone_low && shm->zone_low - off >= need) {
        __atomic_store_n(&shm->used, off + need, __ATOMIC_RELEASE);
        p = (char *)shm + off;
    }
    fg_shm_unlock(&shm->lock);
    return p;
}

void *fg_shm_zone_dir(fg_shm_t *shm)
{
    check(shm);
    return shm->zone_dir;
}

int fg_shm_arena_lock(fg_shm_t *shm)
{
    check(shm);
    /* Nothing to repair after a dead owner: the bump offset and the zone boundary are single
     * words, and the zone directory marks a record live only once it is complete. */
    return fg_shm_lock(&shm->lock) < 0 ? -1 : 0;
}

void fg_shm_arena_unlock(fg_shm_t *shm)
{
    fg_shm_unlock(&shm->lock);
}

uint64_t fg_shm_zone_low(const fg_shm_t *shm)
{
    check(shm);
    return __atomic_load_n(&shm->zone_low, __ATOMIC_ACQUIRE);
}

void fg_shm_set_zone_low(fg_shm_t *shm, uint64_t off)
{
    check(shm);
    __atomic_store_n(&shm->zone_low, off, __ATOMIC_RELEASE);
}
