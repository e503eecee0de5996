/* The tunnel registry (docs/tunnels.md): one record per configured agent, shared by every
 * worker of every generation. An agent keeps several connections, ideally one in each worker;
 * the record lists each (holder pid, serial, since, peer, heartbeat, RTT, streams) with
 * per-agent totals. The worker holding a connection writes it into a slot of the record at
 * authentication and frees it when the connection ends; any worker reads the slots to send a
 * request for that agent to a holder (its own connection first), and the balancers read the
 * count of live slots to skip a destination whose agent is offline. `show tunnels` reads it.
 *
 * Connections of one agent serve together while they belong to one instance of the agent
 * (a random token its AUTH carries, common/tunnel_proto.h); a connection of another instance
 * takes over: every slot of the old one is freed, and their workers let them finish their
 * streams and close.
 *
 * It also counts failed tunnel authentications per client address and minute, across
 * workers, so that a guesser is refused (429) once it used its budget (authFailuresPerMinute).
 *
 * One named zone ("tunnels") of fixed size and layout, so a reload finds its records again:
 * the master attaches each configuration (fg_tunnels_attach) before forking its workers,
 * matching records by agent id. Slots change under the zone's robust lock; figures are C11
 * atomics. */
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

/* Connections of one agent at once: one per worker (16 at most, agent/config.h), twice over
 * while a reload moves them to the new generation. */
#define FG_TUNNEL_CONNS_MAX 32

/* One live connection; serial 0: a free slot. Written by its holder. */
typedef struct {
    _Atomic uint64_t serial;
    _Atomic int32_t pid;
    int32_t slot;
    uint64_t generation;
    char peer[64];                 /* the agent's address as the gateway saw it */
    _Atomic uint64_t since_ms;     /* wall clock, when it authenticated */
    _Atomic uint64_t last_beat_ms; /* wall clock, last pong */
    _Atomic uint32_t rtt_us;       /* last ping's round trip */
    _Atomic uint32_t draining;     /* its worker retires: other connections are preferred */
    _Atomic int64_t streams;       /* in flight on it */
} fg_tunnel_conn_t;

typedef struct {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t used;
    uint64_t last_gen; /* newest generation attached to this record */
    char id[72];
    uint8_t instance[16];  /* of the live connections; under the zone lock */
    _Atomic uint32_t live; /* slots in use; 0: offline */

    _Alignas(FG_CACHELINE) _Atomic int64_t streams; /* in flight, every connection */
    _Atomic uint64_t bytes_in, bytes_out;           /* tunnel bytes, both ways */
    _Atomic uint64_t connects;                      /* authenticated connections */
    _Atomic uint64_t takeovers; /* of those, how many displaced another instance */
    _Atomic uint64_t auth_failures;
    _Atomic uint64_t hops;       /* requests sent to another worker's connection */
    _Atomic uint64_t duplicates; /* connections told DUPLICATE */
    fg_tunnel_conn_t conns[FG_TUNNEL_CONNS_MAX];
} fg_tunnel_rec_t;

/* What fg_tunnels_claim did. */
typedef struct {
    int index;            /* the slot taken; -1: none (duplicate, or no free slot) */
    uint64_t serial;      /* the connection's serial */
    unsigned displaced;   /* connections of another instance freed (a takeover) */
    unsigned replaced;    /* a connection of the same instance in this worker freed */
    int prev_pid;         /* one of those, for the log */
    uint64_t prev_serial; /* its serial */
} fg_tunnels_claim_t;

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
    return rec != NULL && atomic_load_explicit(&rec->live, memory_order_acquire) != 0;
}
/* Whether the connection in slot index still has serial (no takeover freed it). */
static inline int fg_tunnels_current(const fg_tunnel_rec_t *rec, int index, uint64_t serial)
{
    return atomic_load_explicit(&rec->conns[index].serial, memory_order_acquire) == serial;
}
/* A holder other than self_pid for a new stream: a connection not draining with the fewest
 * streams, else a draining one. Its pid (0: none) and serial. */
int fg_tunnels_pick(const fg_tunnel_rec_t *rec, int self_pid, uint64_t *serial);
/* Whether rec has a live connection other than serial that is not draining. */
int fg_tunnels_has_other(const fg_tunnel_rec_t *rec, uint64_t serial);

/* A connection of rec authenticated in this worker (pid). instance: its instance (NULL: an
 * agent using the short AUTH, an instance of its own); extra: the agent asked for a worker
 * without a connection of its instance, so a live one of this worker makes it a duplicate
 * (index -1); otherwise such a one is replaced. Another instance's connections are displaced. */
void fg_tunnels_claim(fg_tunnels_t *t, fg_tunnel_rec_t *rec, int pid, int slot, uint64_t generation,
                      const char *peer, const uint8_t *instance, int extra,
                      fg_tunnels_claim_t *out);
/* The connection in slot index with serial closed: the slot is free unless reused. */
void fg_tunnels_release(fg_tunnels_t *t, fg_tunnel_rec_t *rec, int index, uint64_t serial);

/* Figures, by the worker that holds the connection (c: its slot while it is current, else
 * NULL: the agent's total only). */
void fg_tunnels_beat(fg_tunnel_conn_t *c, uint64_t wall_ms);
void fg_tunnels_rtt(fg_tunnel_conn_t *c, uint64_t rtt_us);
void fg_tunnels_streams(fg_tunnel_rec_t *rec, fg_tunnel_conn_t *c, int delta);
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
