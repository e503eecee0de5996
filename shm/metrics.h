/* Request metrics in shared memory: counters and latency histograms per server, route, cluster
 * and destination, plus open-connection gauges for the front ends, summed across workers when
 * read (master/metrics_view.c renders them; docs/metrics.md lists them).
 *
 * Layout. One named zone ("metrics", shm/zone.h) of fixed size and layout, so every reload finds
 * it again. It holds up to FG_METRICS_MAX_OBJECTS objects; an object is keyed by its kind and
 * configuration id (a destination by "cluster/destination") and owns FG_METRICS_LANES lanes of
 * FG_METRICS_FIELDS 64-bit counters, each lane on cache lines of its own. A worker writes only
 * the lane of its arena record (record % FG_METRICS_LANES); readers add the lanes up. Writes are
 * relaxed atomic adds: uncontended, the lane's lines stay in the writer's cache, and a lane that
 * two workers share (more than FG_METRICS_LANES workers alive) still counts exactly.
 *
 * Reloads. The master attaches each generation's configuration before forking its workers
 * (fg_metrics_attach): every server, route, cluster and destination gets the object of its id
 * (->metrics), created zeroed when new. An object whose id the serving generation did not have
 * starts from zero, so a removed and re-added id does not resume old figures. Objects of no live
 * generation are recycled. Workers cache the object pointers on the frozen configuration: no
 * lookup per request.
 *
 * Gauges (open HTTP/2 streams, WebSockets, tunnels) are kept per arena worker record, so the
 * master can drop the share of a worker that died (fg_metrics_worker_gone). */
#ifndef FG_SHM_METRICS_H
#define FG_SHM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "shm/arena.h"

#define FG_METRICS_LANES 16
#define FG_METRICS_FIELDS 32
#define FG_METRICS_MAX_OBJECTS 1024
#define FG_METRICS_ID_LEN 128
/* Histogram buckets: FG_METRICS_BUCKETS - 1 finite upper bounds (fg_metrics_bucket_bounds_us)
 * and +Inf. Buckets are stored per bucket and made cumulative when rendered. */
#define FG_METRICS_BUCKETS 14
/* Columns of places (open WebSockets, open connections) counted across workers, one per server
 * and kind; past them a server counts per worker. */
#define FG_METRICS_WS_SERVERS 64

typedef enum {
    FG_MK_SERVER = 1,
    FG_MK_ROUTE,
    FG_MK_CLUSTER,
    FG_MK_DEST,
    FG_MK_GLOBAL, /* one object, id "": front-end totals (fg_metrics_conn_open) */
} fg_metrics_kind_t;

/* Response status classes: 1xx .. 5xx, and anything else (0 when no response was sent). */
enum { FG_MC_1XX = 0, FG_MC_2XX, FG_MC_3XX, FG_MC_4XX, FG_MC_5XX, FG_MC_OTHER, FG_MC_CLASSES };

/* Server fields. */
enum {
    FG_MS_CONNECTIONS = 0,                           /* accepted */
    FG_MS_REQUESTS,                                  /* + class: requests by status class */
    FG_MS_BYTES_IN = FG_MS_REQUESTS + FG_MC_CLASSES, /* request head and body bytes */
    FG_MS_BYTES_OUT,                                 /* response body bytes */
    FG_MS_TLS_HANDSHAKES,                            /* completed */
    FG_MS_TLS_FAILURES,                              /* failed or timed out */
    FG_MS_TLS_RESUMED,                               /* completed by session resumption */
    FG_MS_REFUSED_SERVER, /* closed at accept: limits.maxConnections reached */
    FG_MS_REFUSED_CLIENT, /* closed at accept: limits.maxConnectionsPerClient reached */
    FG_MS_REFUSED_PROXY,  /* closed before the protocol: no valid PROXY protocol header */
    FG_MS_NFIELDS
};

/* Route fields. */
enum {
    FG_MR_REQUESTS = 0,                                     /* + class */
    FG_MR_LATENCY = FG_MR_REQUESTS + FG_MC_CLASSES,         /* + bucket */
    FG_MR_LATENCY_SUM = FG_MR_LATENCY + FG_METRICS_BUCKETS, /* microseconds */
    FG_MR_NFIELDS
};

/* Cluster fields (requests, failures and histograms are the sum of its destinations). */
enum {
    FG_MCL_RETRIES = 0, /* attempts after a request's first (retry on a new connection, failover) */
    FG_MCL_NFIELDS
};

/* Destination fields: per attempt. */
enum {
    FG_MD_REQUESTS = 0, /* attempts started */
    FG_MD_FAILURES,     /* transport failures */
    FG_MD_CONNECT = 2,  /* + bucket: new connections' connect time */
    FG_MD_CONNECT_SUM = FG_MD_CONNECT + FG_METRICS_BUCKETS, /* microseconds */
    FG_MD_RESPONSE, /* + bucket: request sent to response head */
    FG_MD_RESPONSE_SUM = FG_MD_RESPONSE + FG_METRICS_BUCKETS, /* microseconds */
    FG_MD_NFIELDS
};

/* Front-end connection kinds (gauges and their totals). */
typedef enum {
    FG_MG_H2_STREAMS = 0, /* HTTP/2 streams */
    FG_MG_WEBSOCKETS,     /* upgraded WebSocket connections */
    FG_MG_TUNNEL_AGENTS,  /* tunnel agents connected */
    FG_MG_TUNNEL_STREAMS, /* streams carried by tunnels */
    FG_MG_TCP,            /* connections of tcp servers (worker/stream/tcp_proxy.h) */
    FG_MG_COUNT
} fg_metrics_gauge_t;

_Static_assert(FG_MS_NFIELDS <= FG_METRICS_FIELDS && FG_MR_NFIELDS <= FG_METRICS_FIELDS &&
                   FG_MD_NFIELDS <= FG_METRICS_FIELDS && FG_MG_COUNT <= FG_METRICS_FIELDS,
               "metric fields fit a lane");

/* An object's lane 0; lane i follows at i * FG_METRICS_FIELDS counters. */
typedef struct fg_metrics_obj_s fg_metrics_obj_t;
typedef struct fg_metrics_s fg_metrics_t;

/* The upper bounds of the finite histogram buckets, microseconds (FG_METRICS_BUCKETS - 1). */
extern const uint64_t fg_metrics_bucket_bounds_us[FG_METRICS_BUCKETS - 1];

/* ---- master ---- */

/* Bytes of the zone (fixed). */
size_t fg_metrics_zone_size(void);
/* Lay out a zeroed block of fg_metrics_zone_size() bytes (the zone, or test memory). */
fg_metrics_t *fg_metrics_init(void *mem, size_t size);
/* Find or create the zone and point every server, route, cluster and destination of cfg
 * (->metrics) at its object, for generation gen; serving_gen is the generation serving now
 * (gen at start-up), min_live_gen the oldest whose workers still run. A gateway whose arena has
 * no room, or whose objects outnumber FG_METRICS_MAX_OBJECTS, runs without the metrics that do
 * not fit (warned in the log): metrics never refuse a configuration. */
void fg_metrics_attach(fg_shm_t *shm, fg_config_t *cfg, uint64_t gen, uint64_t serving_gen,
                       uint64_t min_live_gen);
/* The same on an initialised table (fg_metrics_attach uses it; unit tests call it). Returns
 * how many objects did not fit. */
size_t fg_metrics_attach_table(fg_metrics_t *mt, fg_config_t *cfg, uint64_t gen,
                               uint64_t serving_gen, uint64_t min_live_gen);
/* The zone once attached (NULL before, or when it did not fit). */
fg_metrics_t *fg_metrics_zone(fg_shm_t *shm);
/* A worker record is gone (exited or killed): drop its gauge shares. */
void fg_metrics_worker_gone(fg_metrics_t *mt, int record);
/* Objects in use. */
size_t fg_metrics_used(const fg_metrics_t *mt);

/* ---- readers (any process) ---- */

/* Sum of every lane of obj, field by field, into out[FG_METRICS_FIELDS] (zeros for NULL). */
void fg_metrics_read(const fg_metrics_obj_t *obj, uint64_t out[FG_METRICS_FIELDS]);
/* Open connections of kind g across the gateway, and how many were ever opened. */
int64_t fg_metrics_gauge(const fg_metrics_t *mt, fg_metrics_gauge_t g);
uint64_t fg_metrics_gauge_total(const fg_metrics_t *mt, fg_metrics_gauge_t g);
/* Open places of kind (fg_metrics_place_t, below) of server across workers, without claiming
 * a column: 0, or -1 (open = 0) when no worker has counted one there yet. */
int fg_metrics_place_open(const fg_metrics_t *mt, const fg_metrics_obj_t *server, int kind,
                          uint64_t *open);
/* The status class (FG_MC_*) of an HTTP status. */
int fg_metrics_class(int status);

/* ---- workers ---- */

/* Once in a worker before it serves: its table and arena record index (-1 = none), which
 * choose its lane and gauge row. Without it (tests, master) the writers use lane 0. */
void fg_metrics_worker_start(fg_metrics_t *mt, int record);

/* One finished request (called from the access-log point, worker/http/accesslog.c, whatever
 * the front end): server and route counters, route latency, cluster retries. Objects may be
 * NULL. retries: attempts after the first. */
void fg_metrics_request(fg_metrics_obj_t *server, fg_metrics_obj_t *route,
                        fg_metrics_obj_t *cluster, int status, uint64_t bytes_in,
                        uint64_t bytes_out, uint64_t latency_us, unsigned retries);
/* An upstream attempt started at a destination. */
void fg_metrics_attempt(fg_metrics_obj_t *dest);
/* An attempt's outcome: failed (transport) or answered, with its connect time (0 = pooled
 * connection, not observed) and the time from request sent to response head (0 when not
 * answered). */
void fg_metrics_attempt_done(fg_metrics_obj_t *dest, int failed, uint64_t connect_us,
                             uint64_t response_us);
/* Add n to field i of obj's lane (NULL obj: nothing). For front ends' own counters
 * (connections accepted, TLS handshakes). */
void fg_metrics_add(fg_metrics_obj_t *obj, int i, uint64_t n);

/* Gauges for the front ends (HTTP/2 streams, WebSockets, tunnel agents and streams): call
 * open when one begins (the gauge goes up, its total too) and close exactly once when it
 * ends. A worker that dies has its share dropped by the master. No-ops before
 * fg_metrics_worker_start. */
void fg_metrics_conn_open(fg_metrics_gauge_t g);
void fg_metrics_conn_close(fg_metrics_gauge_t g);

/* What a server counts across every worker: open WebSockets (maxWebSockets), open connections
 * (maxConnections of HTTP and tcp servers, worker/core/connlimit.h). */
typedef enum { FG_MP_WEBSOCKETS = 0, FG_MP_CONNECTIONS = 1 } fg_metrics_place_t;

/* Open places of one kind of a server across every worker, kept per worker record so that the
 * master drops a dead worker's share (fg_metrics_worker_gone). server is the server's object
 * (fg_server_t.metrics). Each returns -1 when this worker has no table, server no object, or
 * FG_METRICS_WS_SERVERS other columns are taken (the caller counts by itself).
 *  - count: 0, open = the sum across workers now.
 *  - reserve: one place if the sum stays at or below cap (0 = no cap): 0 when reserved (give
 *    it back with release), 1 when full (nothing held). Exact across workers: concurrent
 *    reservations never together pass cap.
 *  - release: give back one place of this worker's. */
int fg_metrics_place_count(const fg_metrics_obj_t *server, fg_metrics_place_t kind, uint64_t *open);
int fg_metrics_place_reserve(const fg_metrics_obj_t *server, fg_metrics_place_t kind, uint64_t cap);
void fg_metrics_place_release(const fg_metrics_obj_t *server, fg_metrics_place_t kind);
/* The same for FG_MP_WEBSOCKETS. */
int fg_metrics_ws_count(const fg_metrics_obj_t *server, uint64_t *open);
int fg_metrics_ws_reserve(const fg_metrics_obj_t *server, uint64_t cap);
void fg_metrics_ws_close(const fg_metrics_obj_t *server);

#endif
