#include "worker/upstream/client.h"

#include "worker/upstream/http1_client.h"
#include "worker/upstream/http2_client.h"

fg_exchange_t *fg_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                               const fg_exchange_cbs_t *cbs, void *arg)
{
    int h2 = t->cl ? t->cl->destinations[t->di].http_version == FG_HTTP_V2 : t->http2;
    return h2 ? fg_http2_client_start(t, rq, cbs, arg) : fg_http1_client_start(t, rq, cbs, arg);
}
