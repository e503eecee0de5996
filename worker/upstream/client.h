/* The destination client: starts an exchange (worker/upstream/exchange.h) with the client of
 * the destination's protocol ("httpVersion"): HTTP/1.1 (worker/upstream/http1_client.h) or
 * HTTP/2 (worker/upstream/http2_client.h), over plain TCP or TLS. */
#ifndef FG_CLIENT_H
#define FG_CLIENT_H

#include "worker/upstream/exchange.h"

/* Start an exchange: a pooled connection when one fits, else a fresh one with the connect
 * timeout. The head (and rq->replay) is queued at once; the caller's first
 * fg_exchange_send_body (with or without bytes) writes it on a pooled connection, the connect
 * does on a fresh one, and on_send_ready follows. Returns NULL with errno set when no
 * connection could even be started. */
fg_exchange_t *fg_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                               const fg_exchange_cbs_t *cbs, void *arg);

#endif
