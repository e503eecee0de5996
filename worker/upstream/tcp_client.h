/* The exchange for a tcp:// destination (docs/config.md, clusters): no HTTP goes to it. The
 * exchange is a protocol switch to FG_TCP_PROTOCOL and nothing else: a fresh connection (never
 * pooled: its bytes belong to one client), and once the connect completed, a 101 with
 * "Upgrade: tcp" reported to the handler, which takes the connection over
 * (fg_exchange_take_over) and relays (worker/http/relay.h). A request that is not that switch
 * fails at once (EPROTONOSUPPORT). */
#ifndef FG_TCP_CLIENT_H
#define FG_TCP_CLIENT_H

#include "worker/upstream/exchange.h"

/* fg_client_start's contract for a destination with d->tcp. */
fg_exchange_t *fg_tcp_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                   const fg_exchange_cbs_t *cbs, void *arg);

#endif
