/* The worker's context: one per process, passed to every connection, request and handler. A
 * header of its own so that every layer can take the worker without depending on the loop
 * (worker/core/worker.c), which depends on all of them. */
#ifndef FG_WORKER_CONTEXT_H
#define FG_WORKER_CONTEXT_H

#include <stddef.h>
#include <stdint.h>
#include "common/config.h"
#include "shm/arena.h"

/* front ends' worker-wide state (worker/core/frontend.h): HTTP/1.1, HTTP/2, tunnels, relays,
 * connections waiting for a PROXY protocol header;
 * the last slot is for the front ends that keep none (tls, h2c, tcp servers) */
#define FG_FRONTEND_SLOTS 6
#define FG_REQUEST_POOL_SPARES 64 /* finished requests' pools kept for the next ones */

struct event_base;
struct fg_upstream_pools_s;
struct fg_accesslog_s;
struct fg_session_s;
struct fg_pool_s;
struct fg_request_s;
struct fg_connlimit_s;
struct fg_connlimit_hold_s;

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
    struct fg_session_s *sessions; /* open client connections, any front end (frontend.h) */
    uint64_t nconns;
    /* Least-connections balancing (master/balance.h), NULL when off or retiring: nconns is
     * published in *lb_open and *lb_pending cleared when the accept queue is empty, while
     * *lb_owner holds this worker's generation (fg_frontend_publish_load). */
    uint32_t *lb_open;
    uint32_t *lb_pending;
    uint64_t *lb_owner;
    unsigned retiring : 1;      /* graceful retire in progress */
    unsigned terminating : 1;   /* TERM/INT: leave the loop now */
    uint64_t request_seq;       /* for request ids */
    struct evbuffer *scratch;   /* empty between uses: carries in-memory bodies to send_body */
    struct fg_prober_s *prober; /* active health checks (worker/upstream/health.c) */
    char date[32];              /* Date field value of second date_sec (fg_request_date) */
    size_t date_len;
    int64_t date_sec;
    void *tunnel_hop; /* worker/tunnel/hop.c: this worker's hop socket */
    /* A retiring worker stays until then (monotonic ms) even without connections: its hop
     * socket may still get requests from workers that chose it just before it left the tunnel
     * registry (fg_tunnel_hop_linger). */
    uint64_t linger_until_ms;
    unsigned ncompressing;                   /* responses worker/http/compress.c deflates now */
    void *frontend_state[FG_FRONTEND_SLOTS]; /* per front end: worker-wide state it keeps */
    /* Connection caps (worker/core/connlimit.h): this worker's counts, made when first needed,
     * and the places of the connection being started until its conn takes them. */
    struct fg_connlimit_s *connlimit;
    struct fg_connlimit_hold_s *accept_hold;
    /* When the connection being started was accepted (fg_clock_now_ms), for a front end taking
     * over a connection another one held first (worker/http/h2c.c): its first request is due
     * timeouts.header after the accept, not after the hand-over. 0: accepted just now. */
    uint64_t accept_ms;
    /* The connection being started came through a balancer that says its client spoke TLS to
     * it (a PROXY protocol header's PP2_TYPE_SSL, worker/core/proxy_header.c): requests on it
     * are https to the forwarded fields and the router, as on a TLS connection. */
    int accept_client_tls;
    /* ... and the balancer's own address (the socket's peer), for the access log; NULL when
     * the connection came without a header naming a client. */
    const struct sockaddr_storage *accept_balancer;
    /* Reset pools of finished requests (worker/http/request.c): keep-alive traffic takes them
     * again instead of allocating and freeing a pool per request. */
    struct fg_pool_s *request_pools[FG_REQUEST_POOL_SPARES];
    unsigned nrequest_pools;
    /* Serve an error through an errorPages "route" entry (fg_dispatch_error_route): the request
     * toolkit calls it without knowing the handlers. NULL (unit tests): the JSON error. */
    void (*error_route)(struct fg_request_s *req, const fg_route_t *route);
    /* Attach the response filters a route asks for (gzip, worker/http/compress.c): set by the
     * gateway's workers. NULL in the tunnel agent, whose routes ask for none, so that the agent
     * links neither the filter nor zlib. */
    void (*filter_response)(struct fg_request_s *req);
    /* Told of every session registered (added 1) and unregistered (added 0), NULL in the
     * gateway: the tunnel agent (agent/) follows the HTTP/2 sessions it starts on its tunnels
     * this way, since a session frees its connection itself. */
    void (*session_hook)(struct fg_worker_s *w, struct fg_session_s *s, int added);
} fg_worker_t;

#endif
