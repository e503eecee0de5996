#include "worker/upstream/client.h"

#include "worker/upstream/http1_client.h"

fg_exchange_t *fg_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                               const fg_exchange_cbs_t *cbs, void *arg)
{
    return fg_http1_client_start(t, rq, cbs, arg);
}
