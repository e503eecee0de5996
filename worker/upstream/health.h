/* Active health checks. Every worker runs the same timer, but each destination is probed once
 * per interval by the whole gateway: the worker whose timer first finds a probe due claims it
 * with a compare-and-swap on the destination's next-probe time in shared memory (a lease), then
 * probes on its own event loop with an HTTP/1.1 GET through the same client the proxy uses
 * (worker/upstream/http1_client.c). The outcome is written to
 * shared memory, so every worker's balancer sees it at once. A worker that dies mid-probe only
 * delays that destination's next probe by one interval. */
#ifndef FG_WORKER_HEALTH_H
#define FG_WORKER_HEALTH_H

#include "worker/core/context.h"

typedef struct fg_prober_s fg_prober_t;

/* Start probing the clusters of w->cfg with active checks, then run w's loop until every such
 * destination has a first result (from this worker or another) or the wait bound passes
 * (the longest probe timeout, at most 5 s), so that a worker takes no traffic before start-up
 * probes have spoken. Stores the prober in w->prober. Returns 0, or -1 when out of memory. */
int fg_health_prober_start(fg_worker_t *w);
/* Cancel running probes (closing their sockets) and the timer. */
void fg_health_prober_free(fg_prober_t *pr);

/* Whether every destination of a cluster with active checks has been probed at least once. */
int fg_health_first_round_done(const fg_config_t *cfg);

#endif
