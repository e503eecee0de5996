/* Dispatch: what the gateway does with a request whose head is complete. Matches its route,
 * applies admission (access control, rate limits), checks the declared body size and hands it
 * to the route's handler (proxy, static, direct, redirect). The only module that knows the
 * handlers; front ends call it, handlers never do. */
#ifndef FG_DISPATCH_H
#define FG_DISPATCH_H

#include "worker/http/request.h"

/* Step 1: find req's route (fg_router_match), admit it (fg_security_check) and check the
 * declared body size. Returns 0 when a handler should run, or -1 after answering (403/429
 * refused, 404 no route, 413 too large, the OPTIONS "*" answer). */
int fg_dispatch_route(fg_request_t *req);
/* Step 2: hand req to its route's handler (proxy, static, direct, redirect). */
void fg_dispatch_run(fg_request_t *req);

/* Answer req's error through route, an errorPages "route" entry (as nginx's internal
 * redirect): no routing or admission; the method becomes GET unless HEAD, the path the route's
 * literal match path (else kept), captures, conditionals and Range are dropped and the request
 * target goes to the route as X-Original-URI. The caller has set req->error_ops and
 * req->error_status. */
void fg_dispatch_error_route(fg_request_t *req, const fg_route_t *route);

#endif
