/* The shared-memory arena: one MAP_SHARED anonymous region mapped by the master before it forks,
 * so every worker of every generation sees the same bytes. It holds the generation number, the
 * worker slot table and global counters, and the named zones (shm/zone.h: rate limits, access
 * control, abnormal IPs, health, ticket keys). Structures carry magic numbers checked by always-on
 * asserts; counters written by several processes sit on their own cache lines. */
#ifndef FG_SHM_ARENA_H
#define FG_SHM_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FG_SHM_MAX_WORKERS 256
#define FG_CACHELINE 64

typedef enum {
    FG_WORKER_FREE = 0,
    FG_WORKER_STARTING,
    FG_WORKER_READY,
    FG_WORKER_DRAINING, /* retiring: not accepting, finishing in-flight work */
    FG_WORKER_EXITED,
} fg_worker_state_t;

/* One per worker process, written by that worker (counters) and by the master (pid, state). */
typedef struct {
    _Alignas(FG_CACHELINE) uint32_t magic;
    int32_t slot;
    pid_t pid;
    uint64_t generation;
    int32_t state;        /* fg_worker_state_t */
    uint64_t started_ms;  /* wall clock */
    uint64_t connections; /* open client connections now */
    uint64_t connections_total;
    uint64_t requests;   /* requests served */
    uint64_t restarts;   /* respawns of this slot */
    uint64_t websockets; /* open upgraded exchanges now (worker/http/relay.c) */
} fg_shm_worker_t;

typedef struct fg_shm_s fg_shm_t;

/* Map `size` bytes (rounded up to pages). Returns NULL with errno set. */
fg_shm_t *fg_shm_new(size_t size);
void fg_shm_free(fg_shm_t *shm);
size_t fg_shm_size(const fg_shm_t *shm);
size_t fg_shm_used(const fg_shm_t *shm);

uint64_t fg_shm_generation(const fg_shm_t *shm);
void fg_shm_set_generation(fg_shm_t *shm, uint64_t gen);
/* Set by the master when the gateway stops: the workers retiring then hand nothing over to a
 * next generation (a tunnel agent is not asked to reconnect, it is closed once idle). */
void fg_shm_set_stopping(fg_shm_t *shm);
int fg_shm_stopping(const fg_shm_t *shm);

/* Worker records: a table of FG_SHM_MAX_WORKERS entries, indexed by record number (not slot:
 * two generations overlap during a reload). */
fg_shm_worker_t *fg_shm_worker(fg_shm_t *shm, int index);
/* A free record, marked STARTING; NULL when the table is full. */
fg_shm_worker_t *fg_shm_worker_alloc(fg_shm_t *shm, int slot, uint64_t generation);
void fg_shm_worker_release(fg_shm_worker_t *w);

/* Allocate `size` bytes of permanent memory from the bottom of the zone area (bump, never
 * freed; under the arena lock). NULL when it would reach the named zones (shm/zone.c), which
 * are placed from the top of the arena down. */
void *fg_shm_alloc(fg_shm_t *shm, size_t size);

/* For shm/zone.c: the zone directory (FG_SHM_ZONE_DIR_SIZE bytes in the arena header), the
 * arena lock that serialises fg_shm_alloc and zone placement, and the lowest zone offset. */
#define FG_SHM_ZONE_DIR_SIZE 8192
void *fg_shm_zone_dir(fg_shm_t *shm);
int fg_shm_arena_lock(fg_shm_t *shm);
void fg_shm_arena_unlock(fg_shm_t *shm);
uint64_t fg_shm_zone_low(const fg_shm_t *shm);
void fg_shm_set_zone_low(fg_shm_t *shm, uint64_t off);

#endif
