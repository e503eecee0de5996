/* Locks for shared memory: process-shared, robust pthread mutexes. When a worker dies while
 * holding one (SIGKILL, crash), the next locker gets EOWNERDEAD instead of waiting forever;
 * fg_shm_lock then marks the mutex consistent and returns FG_SHM_LOCK_RECOVERED so the caller
 * repairs the structure it protects (shm/hash.c rebuilds its chains and lists from the slots'
 * own flags). Recoveries are counted. */
#ifndef FG_SHM_LOCK_H
#define FG_SHM_LOCK_H

#include <pthread.h>
#include <stdint.h>

#define FG_SHM_LOCK_RECOVERED 1

typedef struct {
    pthread_mutex_t mutex;
    uint32_t magic;
    uint64_t recoveries; /* owners found dead; written under the lock */
} fg_shm_lock_t;

/* Initialise in shared memory (once, before other processes use it). Returns 0 or -errno. */
int fg_shm_lock_init(fg_shm_lock_t *l);
/* Returns 0, FG_SHM_LOCK_RECOVERED (locked; the previous owner died inside its critical
 * section), or -errno (not locked: ENOTRECOVERABLE when a recovery was abandoned). */
int fg_shm_lock(fg_shm_lock_t *l);
void fg_shm_unlock(fg_shm_lock_t *l);

#endif
