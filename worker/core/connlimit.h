/* Connection caps of a server, counted across every worker process: maxConnections (open
 * connections of the server) and maxConnectionsPerClient (open connections of one client
 * address: IPv4 address, IPv6 /64). HTTP servers take them from "limits" and check them at
 * accept, before any TLS handshake or read (fg_connlimit_accept); tcp servers from "tcp"
 * (worker/stream/tcp_proxy.c, fg_connlimit_take). One mechanism for both:
 *  - the server's count is a column of the metrics zone (fg_metrics_place_reserve,
 *    FG_MP_CONNECTIONS), exact across workers without a lock;
 *  - a client's count is an entry of the shared per-client table (shm/tcpclients.h) under its
 *    robust lock.
 * Both keep each worker record's share, so the master drops the share of a worker that died
 * (fg_metrics_worker_gone, fg_tcpclients_worker_gone), and both are keyed by the server's id,
 * so the counts of connections that old workers still hold carry over a reload. When a shared
 * count is unavailable (no zone, no free column, table full) the worker counts by itself, and
 * the cap applies per worker. */
#ifndef FG_WORKER_CONNLIMIT_H
#define FG_WORKER_CONNLIMIT_H

#include <stddef.h>
#include <sys/socket.h>

#include "common/config.h"
#include "shm/metrics.h"
#include "shm/tcpclients.h"
#include "worker/core/conn.h"
#include "worker/core/context.h"

typedef struct fg_connlimit_s fg_connlimit_t;
typedef struct fg_connlimit_hold_s fg_connlimit_hold_t;

typedef enum {
    FG_CONNLIMIT_OK = 0,
    FG_CONNLIMIT_SERVER,      /* maxConnections reached */
    FG_CONNLIMIT_CLIENT,      /* maxConnectionsPerClient reached, across workers */
    FG_CONNLIMIT_CLIENT_HERE, /* maxConnectionsPerClient reached in this worker's own count */
    FG_CONNLIMIT_NOMEM,       /* no memory to count the connection */
} fg_connlimit_verdict_t;

/* The caps of one server. */
typedef struct {
    size_t server;                   /* index in the configuration's servers */
    const char *id;                  /* the server's id: shared counts are keyed by it */
    const fg_metrics_obj_t *metrics; /* the server's object, NULL = none (count per worker) */
    unsigned max_connections;        /* 0 = no cap */
    unsigned max_per_client;         /* 0 = no cap */
} fg_connlimit_caps_t;

/* A worker's counts for nservers servers: shared is the per-client table (NULL = none), record
 * this worker's arena record (-1 = none). NULL when out of memory. */
fg_connlimit_t *fg_connlimit_new(fg_tcpclients_t *shared, int record, size_t nservers);
/* Frees the worker's own counts; every hold must have been given back. NULL is fine. */
void fg_connlimit_free(fg_connlimit_t *cl);

/* One place for a connection from peer under caps. FG_CONNLIMIT_OK: *hold is what it holds
 * (NULL when both caps are 0), to give back once with fg_connlimit_give when the connection
 * closes; any other verdict holds nothing. */
fg_connlimit_verdict_t fg_connlimit_take(fg_connlimit_t *cl, const fg_connlimit_caps_t *caps,
                                         const struct sockaddr_storage *peer,
                                         fg_connlimit_hold_t **hold);
/* Give back a connection's places and free hold (NULL: nothing). */
void fg_connlimit_give(fg_connlimit_hold_t *hold);

/* ---- HTTP servers' accept path ---- */

/* Whether srv has a cap: the accept path's one branch when it has none. */
static inline int fg_connlimit_wanted(const fg_server_t *srv)
{
    return (srv->max_connections | srv->max_per_client) != 0;
}
/* A connection of HTTP server srv just accepted from peer: 0 when it may go on (its places are
 * w's accept hold until fg_connlimit_attach moves them onto its conn), -1 when it must be
 * closed at once (counted in fastgateway_server_connections_refused_total and logged, at most
 * once a second per server). */
int fg_connlimit_accept(fg_worker_t *w, const fg_server_t *srv,
                        const struct sockaddr_storage *peer);
/* The conn made for the connection being started takes w's accept hold, if any: its places are
 * given back when the conn is freed, whatever front end holds it then. Inline: without caps the
 * front ends' accept pays a test of a NULL pointer. */
void fg_connlimit_attach_hold(fg_worker_t *w, fg_conn_t *c);
static inline void fg_connlimit_attach(fg_worker_t *w, fg_conn_t *c)
{
    if (w->accept_hold != NULL)
        fg_connlimit_attach_hold(w, c);
}
/* After the front end's start: an accept hold no conn took (the start failed) is given back. */
static inline void fg_connlimit_accept_done(fg_worker_t *w)
{
    if (w->accept_hold != NULL) {
        fg_connlimit_give(w->accept_hold);
        w->accept_hold = NULL;
    }
}
/* The worker's counts, made when first needed; NULL when out of memory. */
fg_connlimit_t *fg_connlimit_of(fg_worker_t *w);

#endif
