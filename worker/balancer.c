#include "worker/balancer.h"

#include "worker/upstream.h"

int fg_balancer_pick(fg_worker_t *w, const fg_cluster_t *cl, const fg_request_t *req, int avoid)
{
    size_t n = cl->ndestinations;
    if (n == 0)
        return -1;
    uint64_t *cursor = fg_upstream_cursor(w, cl);
    int fallback = -1;
    for (size_t k = 0; k < n; k++) {
        size_t i = (size_t)((*cursor)++ % n);
        if (!cl->destinations[i].enabled)
            continue;
        if ((int)i == avoid) {
            fallback = (int)i;
            continue;
        }
        return (int)i;
    }
    return fallback;
}
