/* A growable list of header fields allocated from a pool: the request sent upstream and the
 * response sent to the client are built with it. Names compare case-insensitively (RFC 9110 5.1).
 * Slices are not copied: a caller that adds a slice keeps its memory alive for the list's life
 * (pool memory or the read buffer of the current message). */
#ifndef FG_HEADERS_H
#define FG_HEADERS_H

#include <stddef.h>
#include "common/http1_parser.h"
#include "common/pool.h"

typedef struct {
    fg_http_header_t *v;
    size_t n;
    size_t cap;
    fg_pool_t *pool;
} fg_headers_t;

void fg_headers_init(fg_headers_t *h, fg_pool_t *pool, size_t cap_hint);
/* Append a field (duplicates allowed). Returns 0 or -1 on allocation failure. */
int fg_headers_add(fg_headers_t *h, fg_str_t name, fg_str_t value);
/* Replace every field of that name with one field (added at the end when absent). */
int fg_headers_set(fg_headers_t *h, fg_str_t name, fg_str_t value);
/* Append to an existing field as "old, value" (RFC 9110 5.3), or add it. */
int fg_headers_append(fg_headers_t *h, fg_str_t name, fg_str_t value);
/* Remove every field of that name; returns how many were removed. */
size_t fg_headers_remove(fg_headers_t *h, fg_str_t name);
/* The first field of that name, or NULL. */
const fg_http_header_t *fg_headers_get(const fg_headers_t *h, fg_str_t name);

/* Hop-by-hop fields (RFC 9110 7.6.1): Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade, Proxy-Authenticate, Proxy-Authorization... */
int fg_headers_is_hop_by_hop(fg_str_t name);
/* Fields that frame the message or manage the connection (Content-Length, Transfer-Encoding,
 * Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade): the gateway writes these
 * itself, and configuration may not (a second length would desynchronise the peer). */
int fg_headers_is_framing(fg_str_t name);
/* Whether a field may travel in a trailer section (RFC 9110 6.5.1): not one that frames the
 * message, routes it, modifies the request, authenticates, controls the response or says how
 * to process the content (Content-Length, Transfer-Encoding, Trailer, TE, Connection, Host,
 * Authorization, Cookie, Set-Cookie, Cache-Control, Expect, Range, If-*, Age, Date, Expires,
 * Location, Retry-After, Vary, Content-Type, Content-Encoding, Content-Range, ... and pseudo
 * fields). The gateway drops the others when it relays trailers. */
int fg_headers_trailer_allowed(fg_str_t name);
/* Whether `name` is listed in a Connection header value (comma-separated tokens). */
int fg_headers_connection_lists(fg_str_t connection_value, fg_str_t name);

#endif
