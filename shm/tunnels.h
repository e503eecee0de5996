/* The tunnel registry (docs/tunnels.md): one record per configured agent, shared by every
 * worker of every generation. The worker that holds an agent's newest authenticated tunnel
 * writes itself into the record (owner pid and the connection's serial); any worker reads it
 * to send a request for that agent to the right place, and the balancers read it to skip a
 * destination whose agent is offline. Live figures (last heartbeat, RTT, streams, bytes) are
 * written by the owner; `show tunnels` reads them.
 *
 * It also counts failed tunnel authentications per client address and minute, across
 * workers, so that a guesser is refused (429) once it used its budget (authFailuresPerMinute).
 *
 * One named zone ("tunnels") of fixed size and layout, so a reload finds its records again:
 * the master attaches each configuration (fg_tunnels_attach) before forking its workers,
 * matching records by agent id. Ownership changes under the zone's robust lock; figures are
 * C11 atomics. */
#ifndef FG_SHM_TUNNELS_H
#define FG_SHM_TUNNELS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/config.h"
#include "shm/arena.h"

#define FG_TUNNELS_MAX FG_TUNNEL_AGENTS_MAX
#define FG_TUNNELS_FAIL_SLOTS 1024 /* client addresses tracked for auth failures */

typedef struct {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t used;
    uint64_t last_gen; /* newest generation attached to this record */
    char id[72];
    /* the connection new streams go to; written under the zone lock */
    _Atomic uint64_t serial; /* 0: offline */
    _Atomic int32_t pid;
    int32_t slot;
    uint64_t generation;
    char peer[64];             /* the agent's address as the gateway saw it */
    _Atomic uint64_t since_ms; /* wall clock, when that connection authenticated */

    _Alignas(FG_CACHELINE) _Atomic uint64_t last_beat_ms; /* wall clock, last frame heard */
    _Atomic uint64_t rtt_us;                              /* last ping's round trip */
    _Atomic int64_t streams;                              /* in flight, every connection */
    _Atomic uint64_t bytes_in, bytes_out;                 /* tunnel bytes, both ways */
    _Atomic uint64_t connects;                            /* authenticated connections */
    _Atomic uint64_t takeovers; /* of those, how many displaced a live one */
    _Atomic uint64_t auth_failures;
} fg_tunnel_rec_t;

typedef struct fg_tunnels_s fg_tunnels_t;

/* Master: the zone (created on first use) with a record for every agent of cfg, stored in
 * cfg->tunnels.agents[i].state. 0, or -1 with err. */
int fg_tunnels_attach(fg_shm_t *shm, fg_config_t *cfg, uint64_t gen, uint64_t min_live_gen,
                      char *err, size_t errlen);
/* The zone this process attached, or NULL. */
fg_tunnels_t *fg_tunnels_zone(void);
/* Master, after reaping a worker: the agents it held are offline. */
void fg_tunnels_worker_gone(fg_tunnels_t *t, int pid);

/* Whether rec (may be NULL) has a live connection. */
static inline int fg_tunnels_online(const fg_tunnel_rec_t *rec)
{
    return rec != NULL && atomic_load_explicit(&rec->serial, memory_order_acquire) != 0;
}
/* The owner of rec's live connection: its pid (0 offline) and serial. */
int fg_tunnels_owner(const fg_tunnel_rec_t *rec, uint64_t *serial);

/* A connection of rec authenticated in this worker: it becomes the one new streams go to.
 * Returns its serial (never 0); *prev_pid / *prev_serial: the connection it displaced (0:
 * none), for the takeover log. */
uint64_t fg_tunnels_claim(fg_tunnels_t *t, fg_tunnel_rec_t *rec, int pid, int slot,
                          uint64_t generation, const char *peer, int *prev_pid,
                          uint64_t *prev_serial);
/* The connection with serial closed: rec is offline unless a newer one claimed it. */
void fg_tunnels_release(fg_tunnels_t *t, fg_tunnel_rec_t *rec, uint64_t serial);

/* Figures, by the worker that holds the connection. */
void fg_tunnels_beat(fg_tunnel_rec_t *rec, uint64_t wall_ms);
void fg_tunnels_rtt(fg_tunnel_rec_t *rec, uint64_t rtt_us);
void fg_tunnels_streams(fg_tunnel_rec_t *rec, int delta);
void fg_tunnels_bytes(fg_tunnel_rec_t *rec, uint64_t in, uint64_t out);

/* Failed authentications of one client address, across workers, in the current minute:
 * fg_tunnels_auth_blocked says whether `max` were already used (the attempt is refused
 * before any challenge); fg_tunnels_auth_failed counts one (and in rec when the id named a
 * configured agent). */
int fg_tunnels_auth_blocked(fg_tunnels_t *t, const struct sockaddr *sa, unsigned max,
                            uint64_t now_ms);
void fg_tunnels_auth_failed(fg_tunnels_t *t, fg_tunnel_rec_t *rec, const struct sockaddr *sa,
                            uint64_t now_ms);

#endif
