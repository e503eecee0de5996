/* The `cluster` route kind: relay the request to a destination of the route's cluster over a
 * pooled HTTP/1.1 connection and stream the response back, both ways with backpressure. */
#ifndef FG_PROXY_H
#define FG_PROXY_H

#include "worker/http/request.h"

void fg_proxy_handle(fg_request_t *req);

#endif
