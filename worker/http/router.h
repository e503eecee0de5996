/* Route matching (YARP semantics).
 * tables/route_table.c compiles each server's routes once, in the master after the config
 * loads; workers inherit the compiled form and only call fg_router_match. */
#ifndef FG_ROUTER_H
#define FG_ROUTER_H

#include <stddef.h>
#include "common/config.h"
#include "worker/http/request.h"

/* The first route of req->server that matches req (method, host, path, headers, query), in
 * order: lower `order` first, then path precedence, then the route with more constraints,
 * then configuration order (docs/config.md "Precedence").
 * Fills req->captures. Returns NULL when nothing matches. Allocates nothing. */
const fg_route_t *fg_router_match(const fg_server_t *srv, fg_request_t *req);

/* After fg_router_match found nothing: the methods of the routes that match req in all but
 * its method, as an Allow value ("GET, POST") in buf (NUL-terminated, cut to cap). Returns its
 * length; 0 means no route matches the path at all (404 rather than 405, RFC 9110 15.5.6). */
size_t fg_router_allowed(const fg_server_t *srv, fg_request_t *req, char *buf, size_t cap);

#endif
