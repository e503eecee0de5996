#include "worker/upstream/exchange.h"

#include "worker/upstream/http1_client.h"

/* Destinations speak HTTP/1.1 (plain or TLS); an HTTP/2 client would be chosen here by the
 * destination's protocol. */
fg_exchange_t *fg_exchange_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                 const fg_exchange_cbs_t *cbs, void *arg)
{
    return fg_http1_client_start(t, rq, cbs, arg);
}
