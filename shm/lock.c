#include "shm/lock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define LOCK_MAGIC 0x46474c4bu /* "FGLK" */

static void check(const fg_shm_lock_t *l)
{
    if (l->magic != LOCK_MAGIC) {
        fprintf(stderr, "shm lock %p: bad magic %08x\n", (const void *)l, l->magic);
        abort();
    }
}

int fg_shm_lock_init(fg_shm_lock_t *l)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc != 0)
        return -rc;
    if ((rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0 &&
        (rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0)
        rc = pthread_mutex_init(&l->mutex, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0)
        return -rc;
    l->recoveries = 0;
    l->magic = LOCK_MAGIC;
    return 0;
}

int fg_shm_lock(fg_shm_lock_t *l)
{
    check(l);
    int rc = pthread_mutex_lock(&l->mutex);
    if (rc == 0)
        return 0;
    if (rc == EOWNERDEAD) {
        /* The owner died mid-update. The mutex is ours; declare it usable again and let the
         * caller repair what the owner may have left half-written. */
        rc = pthread_mutex_consistent(&l->mutex);
        if (rc != 0) {
            pthread_mutex_unlock(&l->mutex);
            return -rc;
        }
        l->recoveries++;
        return FG_SHM_LOCK_RECOVERED;
    }
    return -rc;
}

void fg_shm_unlock(fg_shm_lock_t *l)
{
    check(l);
    pthread_mutex_unlock(&l->mutex);
}
