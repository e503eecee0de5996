/* The metrics' views: Prometheus text exposition (format 0.0.4), `show stat` JSON and
 * HAProxy-like CSV, all rendered from one snapshot read through the same accessors
 * (shm/metrics.h for requests, shm/health.h for destination state, shm/stats.h for rate limits
 * and access-control lists). Runs in the master: the status socket and the metrics listener
 * (master/metrics_http.c) call it. Every metric is listed in docs/metrics.md. */
#ifndef FG_METRICS_VIEW_H
#define FG_METRICS_VIEW_H

#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "common/config.h"
#include "shm/arena.h"

struct evbuffer;

#define FG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* What only the master knows: its processes and reloads. */
typedef struct {
    int workers;         /* worker processes alive, retiring ones included */
    uint64_t generation; /* serving generation */
    uint64_t reloads;    /* successful reloads */
    uint64_t reload_failures;
    int last_reload_result;  /* 0 none, 1 ok, 2 failed */
    time_t last_reload_time; /* 0 = none */
    time_t start_time;
} fg_metrics_process_t;

/* The snapshot of cfg's metrics; NULL when out of memory. now_ms: monotonic, for health. */
typedef struct fg_metrics_snap_s fg_metrics_snap_t;
fg_metrics_snap_t *fg_metrics_snap_new(const fg_config_t *cfg, fg_shm_t *shm,
                                       const fg_metrics_process_t *proc, uint64_t now_ms);
void fg_metrics_snap_free(fg_metrics_snap_t *s);

/* Append the Prometheus text exposition. Returns 0, or -1 when out of memory. */
int fg_metrics_view_prometheus(const fg_metrics_snap_t *s, struct evbuffer *out);
/* Append the CSV: a "# " header line, then one line per server, route, cluster and
 * destination. Returns 0, or -1 when out of memory. */
int fg_metrics_view_csv(const fg_metrics_snap_t *s, struct evbuffer *out);
/* `show stat`: a new reference, NULL when out of memory. */
json_t *fg_metrics_view_json(const fg_metrics_snap_t *s);

#endif
