/* Route matching (YARP semantics, ../shared/REFERENCE.md section 2).
 * fg_router_build compiles each server's routes once, in the master after the config loads;
 * workers inherit the compiled form and only call fg_router_match. */
#ifndef FG_ROUTER_H
#define FG_ROUTER_H

#include <stddef.h>
#include "common/config.h"
#include "worker/http/request.h"

/* Compile the routes of every server of cfg (fills route->compiled and server->router).
 * Returns 0, or -1 with "routes[i].match.path: reason" in err for an invalid template. */
int fg_router_build(fg_config_t *cfg, char *err, size_t errlen);
void fg_router_free(fg_config_t *cfg);

/* The first route of req->server that matches req (method, host, path, headers, query), in
 * order: lower `order` first, then the more specific path, then configuration order.
 * Fills req->captures. Returns NULL when nothing matches. Allocates nothing. */
const fg_route_t *fg_router_match(const fg_server_t *srv, fg_request_t *req);

#endif
