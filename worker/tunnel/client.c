#include "worker/tunnel/client.h"

#include <errno.h>
#include <strings.h>

#include "shm/tunnels.h"
#include "worker/tunnel/hop.h"
#include "worker/tunnel/session.h"
#include "worker/upstream/http2_client.h"

#define SERVICE_FIELD "fg-tunnel-service"

#define HOP_TRIES 3 /* holders a request may find gone in a row (agents moving on reload) */

/* Whether rq is the switch of a tcp relay (a tcp server's connection, or a route relaying
 * "Upgrade: tcp"): a plain CONNECT stream inside the tunnel. */
static int tcp_switch(const fg_exchange_req_t *rq)
{
    return rq->upgrade && rq->protocol.len == sizeof(FG_TCP_PROTOCOL) - 1 &&
           strncasecmp(rq->protocol.base, FG_TCP_PROTOCOL, rq->protocol.len) == 0;
}

/* A stream of this worker's own connection of d's agent, or NULL with errno: ENOTCONN (no
 * live connection here), EAGAIN (every stream the agent allows is open), EBUSY (a tcp switch,
 * and tcp relays hold their share of the streams already). */
static fg_exchange_t *local(const fg_exchange_target_t *t, const fg_destination_t *d,
                            const fg_exchange_req_t *rq, const fg_exchange_cbs_t *cbs, void *arg)
{
    fg_h2client_t *h = fg_tunnel_session_client(t->w, d->tunnel_agent);
    if (h == NULL)
        return NULL;
    /* Relays may hold streams for hours (a flood of silent connections holds them all): the
     * rest of the tunnel stays for the agent's HTTP routes. */
    unsigned cap =
        fg_http2_client_max_streams(h) / FG_TUNNEL_TCP_SHARE_DIV * (FG_TUNNEL_TCP_SHARE_DIV - 1);
    if (tcp_switch(rq) && fg_http2_client_nplain(h) >= (cap > 0 ? cap : 1)) {
        errno = EBUSY;
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
    fg_tunnel_rec_t *rec = d->tunnel_rec;
    if (!fg_tunnels_online(rec)) {
        errno = ENOTCONN;
        return NULL;
    }
    /* This worker's own connection first: no hop. */
    fg_exchange_t *x = local(t, d, rq, cbs, arg);
    if (x != NULL || (errno != ENOTCONN && errno != EAGAIN && errno != EBUSY))
        return x;
    /* Full here: another worker's connection of the agent may have room, but not for a hop's
     * request (that worker would pick this one, each picking another than itself). */
    int full = errno == ENOTCONN ? 0 : errno;
    if (full && t->hopped) {
        errno = full;
        return NULL;
    }
    for (int i = 0; i < HOP_TRIES; i++) {
        uint64_t serial;
        int pid = fg_tunnels_pick(rec, t->w->pid, &serial);
        if (pid == 0) {
            errno = full ? full : ENOTCONN;
            return NULL;
        }
        x = fg_tunnel_hop_start(t, rq, pid, cbs, arg);
        if (x != NULL)
            atomic_fetch_add_explicit(&rec->hops, 1, memory_order_relaxed);
        /* A holder that exited (its socket refuses): the registry names another one by now,
         * when its agent moved. */
        if (x != NULL || (errno != ECONNREFUSED && errno != ENOENT))
            return x;
        uint64_t now;
        if (fg_tunnels_pick(rec, t->w->pid, &now) == pid && now == serial)
            return NULL;
    }
    return NULL;
}
