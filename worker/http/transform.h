/* Request and response transforms (YARP names, applied in route order). */
#ifndef FG_TRANSFORM_H
#define FG_TRANSFORM_H

#include "common/config.h"
#include "common/headers.h"
#include "worker/http/request.h"

/* The request as it will be sent to a destination. */
typedef struct {
    fg_str_t method;
    fg_str_t path;        /* encoded path, with the destination's base path already prefixed */
    fg_str_t query;       /* without '?'; empty = none */
    fg_headers_t headers; /* Host included */
} fg_outreq_t;

/* Build the upstream request for req and dest in req->pool:
 * copy the client's headers unless RequestHeadersCopy is false, never hop-by-hop ones nor those
 * named in Connection (RFC 9110 7.6.1); apply the route's transforms in order; add
 * X-Forwarded-For/Proto/Host/Prefix with Set unless a transform changes them (YARP default);
 * Host is the destination's authority, its host override, or the client's host with
 * RequestHeaderOriginalHost; X-Request-Id carries req->request_id.
 * Returns 0, -1 on allocation failure, or FG_TRANSFORM_RESERVED_HOST when the Host for a
 * tunnel destination names the tunnels' placeholder (FG_TUNNEL_DEFAULT_AUTHORITY) without
 * being the gateway's own (a client's Host with RequestHeaderOriginalHost, a transform's). */
#define FG_TRANSFORM_RESERVED_HOST (-2)
int fg_transform_request(const fg_request_t *req, const fg_destination_t *dest, fg_outreq_t *out);

/* Apply the route's ResponseHeader/ResponseHeaderRemove transforms to hdrs for a response with
 * `status` (When: Success = 1xx-3xx... as YARP: status < 400). Returns 0 or -1. */
int fg_transform_response(const fg_request_t *req, int status, fg_headers_t *hdrs);

/* Copy the destination's response fields (trailers: its trailer fields) to out as the route
 * says: all (the default), none (ResponseHeadersCopy / ResponseTrailersCopy false) or those an
 * allow-list names (ResponseHeadersAllowed / ResponseTrailersAllowed). Returns 0 or -1. */
int fg_transform_copy_fields(const fg_request_t *req, int trailers, const fg_http_header_t *in,
                             size_t n, fg_headers_t *out);

/* The trailers for the client: the destination's (in, n; none is n = 0) copied as above, then
 * the route's ResponseTrailer / ResponseTrailerRemove transforms that apply to `status`, in
 * order (YARP's ResponseTrailersTransform). Returns 0 or -1. */
int fg_transform_trailers(const fg_request_t *req, int status, const fg_http_header_t *in, size_t n,
                          fg_headers_t *out);

/* Whether a request trailer field `name` may go to the destination: not when a ClientCert
 * transform of the route names it, "_" counting as "-" (the client's own field of that name
 * never passes, in the trailer section either: RFC 9110 6.5.1 lets a recipient merge
 * trailers into the header section). */
int fg_transform_request_trailer_allowed(const fg_route_t *route, fg_str_t name);

/* Whether the route has a ResponseTrailer transform, which may add trailers to a response
 * whose destination sent none. */
int fg_transform_adds_trailers(const fg_route_t *route);

#endif
