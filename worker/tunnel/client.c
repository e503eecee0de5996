#include "worker/tunnel/client.h"

#include <errno.h>

#include "shm/tunnels.h"
#include "worker/tunnel/hop.h"
#include "worker/tunnel/session.h"
#include "worker/upstream/http2_client.h"

#define SERVICE_FIELD "fg-tunnel-service"

#define HOP_TRIES 3 /* holders a request may find gone in a row (agents moving on reload) */

/* A stream of this worker's tunnel for d, or NULL (ENOTCONN: it was just superseded). */
static fg_exchange_t *local(const fg_exchange_target_t *t, const fg_destination_t *d,
                            uint64_t serial, const fg_exchange_req_t *rq,
                            const fg_exchange_cbs_t *cbs, void *arg)
{
    fg_h2client_t *h = fg_tunnel_session_client(t->w, d->tunnel_agent, serial);
    if (h == NULL) {
        errno = ENOTCONN;
        return NULL;
    }
    /* the service is the destination's; a client's hop field goes nowhere */
    fg_http_header_t extra[] = {{FG_STR_LIT(SERVICE_FIELD), fg_str(d->tunnel_service)},
                                {FG_STR_LIT(FG_TUNNEL_HOP_FIELD), FG_STR_NULL}};
    return fg_http2_client_start_on(h, t, rq, extra, 2, cbs, arg);
}

fg_exchange_t *fg_tunnel_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                      const fg_exchange_cbs_t *cbs, void *arg)
{
    const fg_destination_t *d = &t->cl->destinations[t->di];
    for (int i = 0; i < HOP_TRIES; i++) {
        uint64_t serial;
        int pid = d->tunnel_rec ? fg_tunnels_owner(d->tunnel_rec, &serial) : 0;
        if (pid == 0) {
            errno = ENOTCONN;
            return NULL;
        }
        fg_exchange_t *x = pid == t->w->pid ? local(t, d, serial, rq, cbs, arg)
                                            : fg_tunnel_hop_start(t, rq, pid, cbs, arg);
        /* A holder that exited (its socket refuses) or a tunnel of ours just taken over:
         * the registry names the new holder by now, when the agent moved. */
        if (x != NULL || (errno != ECONNREFUSED && errno != ENOENT && errno != ENOTCONN))
            return x;
        uint64_t now;
        if (fg_tunnels_owner(d->tunnel_rec, &now) == pid && now == serial)
            return NULL;
    }
    return NULL;
}
