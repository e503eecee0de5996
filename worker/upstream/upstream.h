/* Upstream connections: per-worker keep-alive pools, one per destination (LIFO, so idle
 * connections beyond the working set time out). An idle connection is watched for EOF and
 * stray bytes and closed on either, so a stale keep-alive is rarely handed out. */
#ifndef FG_UPSTREAM_H
#define FG_UPSTREAM_H

#include <stdint.h>
#include "common/config.h"
#include "worker/core/conn.h"
#include "worker/core/context.h"
#include "worker/http/request.h"

typedef struct fg_upstream_pools_s fg_upstream_pools_t;
typedef struct fg_dest_pool_s fg_dest_pool_t;

typedef struct fg_upconn_s {
    fg_conn_t *c;
    struct fg_upconn_s *prev, *next; /* idle list */
    fg_dest_pool_t *pool;
    unsigned requests;      /* requests sent on this connection */
    unsigned reused : 1;    /* handed out from the idle list */
    uint64_t idle_since_us; /* when it joined the idle list */
} fg_upconn_t;

fg_upstream_pools_t *fg_upstream_pools_new(fg_worker_t *w);
void fg_upstream_pools_free(fg_upstream_pools_t *p);

/* An idle connection to destination `di` of `cl`, or NULL. */
/* max_idle_us (0 = any): only a connection idle for less than that is handed out. */
fg_upconn_t *fg_upstream_acquire(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                 uint64_t max_idle_us);
/* A new connection, connect started (FG_CONN_CONNECTED follows on cbs). An https destination's
 * connection runs its TLS handshake (common/tls_client.h) before FG_CONN_CONNECTED, or reports
 * FG_CONN_TLS_FAILED. NULL with errno set. */
fg_upconn_t *fg_upstream_open(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                              const fg_conn_cbs_t *cbs, void *arg);
/* The same with a connect timeout other than the cluster's (failover attempts). */
fg_upconn_t *fg_upstream_open_timeout(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                      const fg_conn_cbs_t *cbs, void *arg, uint64_t timeout_ms);
/* The same, to be spoken to in HTTP/1.1 whatever the destination's httpVersion: over TLS, ALPN
 * offers http/1.1 alone (an upgrade to an HTTP/2 destination without extended CONNECT). */
fg_upconn_t *fg_upstream_open_http1(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                    uint64_t timeout_ms);
/* A pool of its own, outside the configuration's clusters (the tunnel hop's, one per holder
 * worker), for connections opened with fg_upstream_open_addr and fg_upstream_pool_adopt; its
 * idle limits are cl's (maxIdleConnections, idleTimeout, maxRequestsPerConnection), and cl
 * outlives it. NULL when out of memory. */
fg_dest_pool_t *fg_upstream_pool_new(fg_worker_t *w, const fg_cluster_t *cl);
/* Close its idle connections and free it; connections in use are closed when released. */
void fg_upstream_pool_free(fg_dest_pool_t *dp);
unsigned fg_upstream_pool_idle(const fg_dest_pool_t *dp);
/* An idle connection of dp, or NULL (as fg_upstream_acquire). */
fg_upconn_t *fg_upstream_pool_acquire(fg_dest_pool_t *dp, uint64_t max_idle_us);
/* u (fresh from fg_upstream_open_addr) goes back to dp when released. */
void fg_upstream_pool_adopt(fg_dest_pool_t *dp, fg_upconn_t *u);
/* A new connection to an address outside any pool (health probes): never reused. */
fg_upconn_t *fg_upstream_open_addr(fg_worker_t *w, const struct sockaddr *sa, socklen_t len,
                                   const fg_conn_cbs_t *cbs, void *arg, uint64_t timeout_ms);
/* A new connection to destination di's health target (its `health` address, else its own),
 * over TLS when that is https (fg_tls_client_health_ssl_new), outside any pool: never
 * reused. NULL with errno set. */
fg_upconn_t *fg_upstream_open_probe(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                    uint64_t timeout_ms);
/* Back to the idle list after a complete exchange, or closed when the pool is full or the
 * connection served its maxRequestsPerConnection. */
void fg_upstream_release(fg_upconn_t *u);
void fg_upstream_close(fg_upconn_t *u);

/* State another client keeps per destination (the HTTP/2 client's connections): it fills the
 * slot with an object whose first member is this header; the pools call release when they are
 * freed (worker exit). */
typedef struct fg_upstream_ext_s {
    void (*release)(struct fg_upstream_ext_s *ext);
} fg_upstream_ext_t;
fg_upstream_ext_t **fg_upstream_h2_slot(fg_worker_t *w, const fg_cluster_t *cl, size_t di);

/* d's resolved address as "ip:port" ("[ip6]:port") in buf, NUL-terminated; returns its length
 * (0 for an address family without a textual form). */
size_t fg_upstream_addr_text(const fg_destination_t *d, char *buf, size_t len);

/* This worker's balancer of a cluster (worker/upstream/balancer.h), created with the pools. */
struct fg_balancer_s *fg_upstream_balancer(fg_worker_t *w, const fg_cluster_t *cl);
/* The worker's choice for req (its balancer of cl), avoiding `avoid` (-1 = none). */
int fg_upstream_pick(fg_worker_t *w, const fg_cluster_t *cl, const fg_request_t *req, int avoid);

#endif
