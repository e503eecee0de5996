/* Destination state shared by every worker: health (active probes, passive transport failures),
 * administrative state, in-flight requests and totals, and the load balancers' shared cursors.
 *
 * It lives in one named zone of the arena ("health", shm/zone.h) whose size and layout never
 * depend on the configuration, so every reload finds it again. Inside, records are keyed by
 * cluster id + destination id: the master attaches a configuration to the zone before forking
 * its workers (fg_health_attach), reusing the record of every destination whose cluster and id
 * are unchanged, so its health, counters and admin state survive the reload. Workers only touch
 * records through C11 atomics; only the master assigns or recycles records.
 *
 * In-flight counts are kept twice: the destination's total (what the balancers read) and each
 * worker record's own share. When the master reaps a worker (crash, SIGKILL) it subtracts that
 * worker's shares from the totals, so a dead worker never leaves a destination looking busy. */
#ifndef FG_SHM_HEALTH_H
#define FG_SHM_HEALTH_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/config.h"
#include "shm/arena.h"

#define FG_HEALTH_MAX_DESTS 1024
#define FG_HEALTH_MAX_CLUSTERS 256
#define FG_HEALTH_ID_LEN 64 /* ids are at most 63 bytes (common/config_clusters.c) */

typedef enum { FG_HS_UNKNOWN = 0, FG_HS_HEALTHY, FG_HS_UNHEALTHY } fg_health_state_t;
typedef enum { FG_ADMIN_READY = 0, FG_ADMIN_DRAIN, FG_ADMIN_MAINT } fg_admin_state_t;

/* One slice of the passive failure-rate window: its number since the clock's origin
 * (now / slice length, + 1 so that 0 means never used) and what it counted. */
#define FG_HEALTH_BUCKETS 10
typedef struct {
    _Atomic uint64_t epoch;
    _Atomic uint32_t requests, failures;
} fg_hbucket_t;

/* What an exchange's transport did, for passive health. */
typedef enum {
    FG_PASSIVE_OK = 0,     /* the destination answered */
    FG_PASSIVE_FAILED,     /* refused, reset or timed out before answering */
    FG_PASSIVE_FAILED_LATE /* failed after an answer already reported OK (mid-body): one more
                            * failure, not one more request */
} fg_passive_outcome_t;

/* One destination. Three cache lines written by different parties: identity (master), the
 * request path (every worker, per request), health (failures and the prober). */
typedef struct {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t used;
    uint64_t last_gen; /* newest generation attached to this record */
    char cluster[FG_HEALTH_ID_LEN];
    char dest[FG_HEALTH_ID_LEN];
    _Atomic int admin; /* fg_admin_state_t; set over the status socket */

    _Alignas(FG_CACHELINE) _Atomic int64_t inflight;
    _Atomic uint64_t requests; /* sent to the destination */
    _Atomic uint64_t failures; /* transport failures */

    /* passive: a sliding window of FG_HEALTH_BUCKETS buckets (see fg_health_passive_report) */
    _Alignas(FG_CACHELINE) fg_hbucket_t win[FG_HEALTH_BUCKETS];
    _Atomic uint32_t consecutive;      /* transport failures in a row */
    _Atomic uint64_t passive_until_ms; /* unhealthy until then (monotonic ms); 0 = not */
    _Atomic uint64_t passive_trips;    /* times it was marked unhealthy */

    /* active */
    _Alignas(FG_CACHELINE) _Atomic uint64_t probe_claimed_ms; /* last probe claim (monotonic) */
    _Atomic int active;                                       /* fg_health_state_t */
    _Atomic uint32_t probe_failures;                          /* in a row */
    _Atomic uint64_t probes;
    _Atomic uint64_t last_probe_wall_ms; /* 0 = never probed */
    _Atomic uint64_t last_latency_us;
    _Atomic int last_status; /* HTTP status of the last probe, 0 = none */
    char last_error[48];     /* written by the lease holder only */
} fg_hdest_t;

/* One cluster: the shared round-robin cursor. */
typedef struct {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t used;
    uint64_t last_gen;
    char id[FG_HEALTH_ID_LEN];
    _Alignas(FG_CACHELINE) _Atomic uint64_t rr;
} fg_hcluster_t;

typedef struct fg_health_s fg_health_t;

/* ---- master ---- */

/* Find or create the health zone and point every cluster and destination of cfg (->state) at
 * its record, keyed by ids; records of no generation >= min_live_gen are recycled. Call before
 * forking the workers of generation gen. A configuration without clusters needs no zone. Returns
 * 0, or -1 with err filled (no room in the arena, or more destinations than
 * FG_HEALTH_MAX_DESTS across live generations). */
int fg_health_attach(fg_shm_t *shm, fg_config_t *cfg, uint64_t gen, uint64_t min_live_gen,
                     char *err, size_t errlen);
/* The zone once attached (NULL before). */
fg_health_t *fg_health_zone(fg_shm_t *shm);
/* A worker record (index in the arena's worker table) is gone: give back its in-flight shares. */
void fg_health_worker_gone(fg_health_t *h, int record);
/* The record of CLUSTER/DEST among live records, or NULL. */
fg_hdest_t *fg_health_find(fg_health_t *h, const char *cluster, const char *dest);

/* ---- any process ---- */

/* Initialise a free-standing record (tests, and the master for new records). */
void fg_health_dest_init(fg_hdest_t *d, const char *cluster, const char *dest);
void fg_health_cluster_init(fg_hcluster_t *c, const char *id);

/* In-flight accounting: `record` is the worker's index in the arena worker table (-1 = none). */
void fg_health_begin(fg_health_t *h, fg_hdest_t *d, int record);
void fg_health_end(fg_health_t *h, fg_hdest_t *d, int record);

/* Passive health: the outcome (fg_passive_outcome_t) of one exchange's transport. The failure
 * rate is taken over a sliding window of hc->window_ms made of FG_HEALTH_BUCKETS slices, so a
 * burst of failures is never split in two by a window boundary. Returns 1 when this report made
 * the destination unhealthy. */
int fg_health_passive_report(fg_hdest_t *d, const fg_health_config_t *hc, int outcome,
                             uint64_t now_ms);
/* Requests and failures in the window ending at now_ms. */
void fg_health_passive_window(const fg_hdest_t *d, const fg_health_config_t *hc, uint64_t now_ms,
                              uint32_t *requests, uint32_t *failures);

/* Active health: claim the probe of d due at now (one claimer per interval, whole gateway):
 * 1 when interval_ms has passed since the last claim. */
int fg_health_probe_claim(fg_hdest_t *d, uint64_t now_ms, uint64_t interval_ms);
/* The result of a probe; error NULL on success. */
void fg_health_probe_report(fg_hdest_t *d, const fg_health_config_t *hc, int ok, int status,
                            uint64_t latency_us, const char *error, uint64_t wall_ms);

/* States seen by the balancer. */
int fg_health_passive_state(const fg_hdest_t *d, uint64_t now_ms);
/* Healthy or unknown for each check that hc enables (admin state aside). A check that a
 * reload turned off no longer counts: the state it left behind would otherwise keep the
 * destination out with nothing left to clear it. */
int fg_health_usable(const fg_hdest_t *d, const fg_health_config_t *hc, uint64_t now_ms);
/* fg_admin_state_t */
int fg_health_admin(const fg_hdest_t *d);
/* In-flight requests of d across the gateway (a negative drift reads as 0). */
int64_t fg_health_inflight(const fg_hdest_t *d);
/* The shared round-robin cursor of a cluster: its position before this step. */
uint64_t fg_health_rr_next(fg_hcluster_t *c);

/* ---- status socket (master) ---- */

struct json_t;
/* "show servers": every cluster of cfg and, per destination, its active and passive state,
 * last probe (time, latency, status, error), in-flight, totals, weight and admin state. */
struct json_t *fg_health_show_servers(const fg_config_t *cfg, uint64_t now_ms);
/* "set destination CLUSTER/DEST state ready|drain|maint" (args after the command name). The
 * admin state lives in the destination's record, so it survives reloads that keep the
 * destination, but not a restart. */
struct json_t *fg_health_set_command(fg_health_t *h, const fg_config_t *cfg, const char *args);

#endif
