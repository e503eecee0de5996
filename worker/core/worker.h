/* A worker process: one libevent (epoll) loop serving its listeners. This module is the top of
 * the worker: it starts every other one. Modules below it take the worker through
 * worker/core/context.h. */
#ifndef FG_WORKER_H
#define FG_WORKER_H

#include "common/config.h"
#include "shm/arena.h"
#include "worker/core/context.h"

typedef struct {
    const fg_config_t *cfg; /* frozen configuration of this generation */
    int slot;               /* 0 .. workers-1 */
    uint64_t generation;
    fg_shm_t *shm;
    fg_shm_worker_t *record; /* this worker's record in shm */
    int *listen_fds; /* one per cfg->servers[i] (this slot's SO_REUSEPORT socket), -1 = none */
    int ready_fd;    /* write one byte when ready to accept, then close */
    int quiet_after_ready; /* then point stderr at /dev/null (a daemon's start-up is over) */
    /* Least-connections balancing (master/balance.h), or NULL: where this worker writes how
     * many connections it holds, clears the count of those steered to it not accepted, and
     * says whether it is running callbacks (fg_clock_busy_flag). */
    uint32_t *lb_open;
    uint32_t *lb_pending;
    uint32_t *lb_busy;
    uint64_t *lb_owner; /* claimed with the generation when the worker starts */
} fg_worker_args_t;

/* Run the worker loop. SIGQUIT: graceful retire; SIGTERM/SIGINT: fast exit; SIGUSR1: reopen
 * logs. Returns the process exit status. */
int fg_worker_main(const fg_worker_args_t *args);

#endif
