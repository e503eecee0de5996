/* The HTTP/1.1 client behind fg_exchange (worker/upstream/exchange.h): head serialisation,
 * chunked upload framing, response parsing and framing (RFC 9112 6.3), interim responses
 * (RFC 9110 15.2) and connection reuse (RFC 9112 9.3), over an fg_conn from the upstream
 * pools or a fresh one. */
#ifndef FG_HTTP1_CLIENT_H
#define FG_HTTP1_CLIENT_H

#include "worker/upstream/exchange.h"

/* fg_client_start for an HTTP/1.1 destination; same contract. */
fg_exchange_t *fg_http1_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                     const fg_exchange_cbs_t *cbs, void *arg);

/* An exchange on a connection already established (c, owned by the exchange from now on,
 * never pooled): the head is queued and the first send_body writes it. Used by tests and by
 * callers that open their own transport. NULL when out of memory. */
fg_exchange_t *fg_http1_client_attach(fg_conn_t *c, const fg_exchange_req_t *rq,
                                      const fg_exchange_cbs_t *cbs, void *arg,
                                      uint64_t activity_ms);

#endif
