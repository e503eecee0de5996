/* Destination selection: the load-balancing policies (YARP's names) with destination weights,
 * over the destinations that may take a request now. State that decides a choice is shared by
 * the whole gateway (shm/health.h): in-flight counts for PowerOfTwoChoices and LeastRequests,
 * the cursor of RoundRobin, health and admin state. Each worker keeps only its random generator
 * and the RoundRobin sequence (a pure function of the frozen configuration). */
#ifndef FG_BALANCER_H
#define FG_BALANCER_H

#include <stdint.h>

#include "common/config.h"
#include "worker/http/request.h"
#include "worker/core/context.h"

#define FG_BALANCER_MAX_DESTS 256 /* per cluster, checked at load */

typedef struct fg_balancer_s fg_balancer_t;

/* Per worker, per cluster: the smooth weighted round-robin sequence and a random generator.
 * NULL when out of memory. */
fg_balancer_t *fg_balancer_new(const fg_cluster_t *cl, uint64_t seed);
void fg_balancer_free(fg_balancer_t *b);

/* What to leave out of one choice. */
typedef struct {
    uint64_t now_ms;       /* monotonic, for passive health */
    const uint64_t *tried; /* bitmap: bit i set when destination i already failed this request;
                              NULL = none */
    int avoid;             /* not to pick again when another one exists; -1 = none */
} fg_pick_t;

/* A destination index of cl, or -1 when none may take a request. Candidates are the enabled
 * destinations in admin state ready whose active and passive health is not Unhealthy; when
 * none is and the cluster's availability is HealthyOrPanic, every enabled ready destination
 * (panic). `panic` (may be NULL) is set when the choice was made in panic. */
int fg_balancer_select(fg_balancer_t *b, const fg_cluster_t *cl, const fg_pick_t *pk, int *panic);

/* Whether destination i of cl may take a new request now (enabled, ready, not unhealthy). */
int fg_balancer_available(const fg_cluster_t *cl, size_t i, uint64_t now_ms);

/* In-flight requests of destination i across the gateway (0 when no shared state). */
int64_t fg_balancer_inflight(const fg_cluster_t *cl, size_t i);

#endif
