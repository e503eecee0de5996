/* Destination selection. The interface the load-balancing policies plug into: issue 5 adds
 * PowerOfTwoChoices, LeastRequests, Random, FirstAlphabetical and weights with shared state;
 * for now every policy is served by per-worker round-robin over enabled destinations. */
#ifndef FG_BALANCER_H
#define FG_BALANCER_H

#include "common/config.h"
#include "worker/request.h"
#include "worker/worker.h"

/* A destination index of cl for req, or -1 when none is available. `avoid` (-1 = none) is a
 * destination not to pick again when another exists (retries). */
int fg_balancer_pick(fg_worker_t *w, const fg_cluster_t *cl, const fg_request_t *req, int avoid);

#endif
