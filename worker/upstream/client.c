#include "worker/upstream/client.h"

#include "worker/upstream/http1_client.h"
#include "worker/upstream/http2_client.h"
#include "worker/upstream/tcp_client.h"
#include "worker/tunnel/client.h"

fg_exchange_t *fg_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                               const fg_exchange_cbs_t *cbs, void *arg)
{
    /* a probe of a health address of its own speaks HTTP/1.1 on a connection of its own */
    const fg_destination_t *d = t->cl ? &t->cl->destinations[t->di] : NULL;
    if (d && d->tunnel)
        return fg_tunnel_client_start(t, rq, cbs, arg);
    if (d && d->tcp)
        return fg_tcp_client_start(t, rq, cbs, arg);
    int h2 = d ? d->http_version == FG_HTTP_V2 && !(t->probe && d->health) : t->http2;
    return h2 ? fg_http2_client_start(t, rq, cbs, arg) : fg_http1_client_start(t, rq, cbs, arg);
}
