/* The client address a request is judged by (rate-limit keys, access control, abnormal-IP
 * tracking). The TCP peer by default. With a server's clientIpSource set to X-Forwarded-For,
 * X-Real-IP or CF-Connecting-IP, the header is believed only when the peer is in the server's
 * trustedProxies; for X-Forwarded-For the hops are walked from the right and the first address
 * that is not a trusted proxy is the client (what the nearest untrusted party told our trusted
 * proxies; everything left of it could be invented by the client). An unparsable hop stops the
 * walk at the last good address. Never allocates. */
#ifndef FG_CLIENTIP_H
#define FG_CLIENTIP_H

#include "common/iprange.h"
#include "worker/http/request.h"

/* trusted: the server's trustedProxies as a finished set (may be NULL or empty). Returns 0,
 * or -1 when not even the peer address is usable (out untouched). */
int fg_clientip_resolve(const fg_request_t *req, int source, const fg_iprange_set_t *trusted,
                        fg_ip_t *out);

/* Record the resolved client `ip` on req for the logs and the forwarded headers: when it is not
 * the TCP peer, req->client_ip becomes its text and req->peer_ip keeps the peer's. */
void fg_clientip_apply(fg_request_t *req, const fg_ip_t *ip);

#endif
