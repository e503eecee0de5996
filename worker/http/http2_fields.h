/* Field mapping between HTTP/2 and the protocol-neutral request (RFC 9113 8.2-8.3), kept apart
 * from the nghttp2 session so that it is tested on its own (tests/unit/test_http2_fields.c).
 * Everything works in the request's pool; nothing is allocated per field outside it. */
#ifndef FG_HTTP2_FIELDS_H
#define FG_HTTP2_FIELDS_H

#include <stddef.h>

#include "common/http1_parser.h"
#include "common/pool.h"
#include "common/str.h"

/* Join the cookie crumbs of v (RFC 9113 8.2.3: a client may split Cookie into one field per
 * crumb) into the first "cookie" field, their values separated by "; ", and drop the others,
 * keeping the order of the remaining fields. *n is updated. Returns 0, or -1 without memory. */
int fg_http2_join_cookies(fg_pool_t *pool, fg_http_header_t *v, size_t *n);

/* The authority of a request from :authority and Host (RFC 9113 8.3.1): :authority when
 * present, and then a Host field must name the same; Host alone otherwise. Returns 0 with
 * *out set, or -1 for a request to refuse (both absent, or disagreeing). */
int fg_http2_authority(fg_str_t authority, const fg_http_header_t *v, size_t n, fg_str_t *out);

/* Split :path (RFC 9113 8.3.1: origin-form, or "*" for OPTIONS) into the normalised path and the
 * query (pool memory). A fragment is dropped. Returns 0, or -1 for a :path to refuse. */
int fg_http2_split_path(fg_pool_t *pool, fg_str_t target, fg_str_t *path, fg_str_t *query);

/* Whether a response field may not be sent over HTTP/2 (RFC 9113 8.2.2: connection-specific
 * fields). */
int fg_http2_connection_specific(fg_str_t name);

/* A lowercase copy of name in pool memory (RFC 9113 8.2: field names are lowercase on the
 * wire); a static literal for a common name (Date, Content-Type ...); name itself when it is
 * already lowercase. base NULL without memory. */
fg_str_t fg_http2_lower(fg_pool_t *pool, fg_str_t name);

/* The same into out (name.len bytes), for a caller that packs several fields into one block:
 * the literal of a common name (out untouched), else out holding name in lowercase. */
fg_str_t fg_http2_lower_copy(fg_str_t name, char *out);

#endif
