/* A worker process: one libevent (epoll) loop serving its listeners. */
#ifndef FG_WORKER_H
#define FG_WORKER_H

#include "common/config.h"
#include "shm/arena.h"

typedef struct {
    const fg_config_t *cfg; /* frozen configuration of this generation */
    int slot;               /* 0 .. workers-1 */
    uint64_t generation;
    fg_shm_t *shm;
    fg_shm_worker_t *record; /* this worker's record in shm */
    int *listen_fds; /* one per cfg->servers[i] (this slot's SO_REUSEPORT socket), -1 = none */
    int ready_fd;    /* write one byte when ready to accept, then close */
    int quiet_after_ready; /* then point stderr at /dev/null (a daemon's start-up is over) */
} fg_worker_args_t;

/* Run the worker loop. SIGQUIT: graceful retire; SIGTERM/SIGINT: fast exit; SIGUSR1: reopen
 * logs. Returns the process exit status. */
int fg_worker_main(const fg_worker_args_t *args);

/* ---- inside a worker process ---- */

struct event_base;
struct fg_upstream_pools_s;
struct fg_accesslog_s;
struct fg_http1_conn_s;

/* The worker's context, one per process, passed to every connection. */
typedef struct fg_worker_s {
    struct event_base *base;
    const fg_config_t *cfg;
    fg_shm_t *shm;
    fg_shm_worker_t *record;
    int slot;
    int pid; /* getpid() is a system call: asked once */
    uint64_t generation;
    struct fg_upstream_pools_s *upstreams; /* keep-alive pools, per destination */
    struct fg_accesslog_s *accesslog;
    struct fg_http1_conn_s *conns; /* open client connections (list head) */
    uint64_t nconns;
    unsigned retiring : 1;      /* graceful retire in progress */
    unsigned terminating : 1;   /* TERM/INT: leave the loop now */
    uint64_t request_seq;       /* for request ids */
    struct evbuffer *scratch;   /* empty between uses: carries in-memory bodies to send_body */
    struct fg_prober_s *prober; /* active health checks (worker/upstream/health.c) */
    char date[32];              /* Date field value of second date_sec (fg_request_date) */
    size_t date_len;
    int64_t date_sec;
    struct fg_http1_spares_s *h1_spares; /* worker/http/http1.c: released state kept for reuse */
} fg_worker_t;

/* Called by a client connection when it closes; lets a retiring worker exit once idle. */
void fg_worker_conn_closed(fg_worker_t *w);

#endif
