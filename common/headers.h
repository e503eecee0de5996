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
/* Append a field when the array is full or not allocated yet: fg_headers_add's slow path. */
int fg_headers_add_grow(fg_headers_t *h, fg_str_t name, fg_str_t value);

/* Append a field (duplicates allowed). Returns 0 or -1 on allocation failure. Inline: a
 * proxied request adds a dozen or more fields, most of them into room already there. */
static inline int fg_headers_add(fg_headers_t *h, fg_str_t name, fg_str_t value)
{
    if (h->v == NULL || h->n >= h->cap)
        return fg_headers_add_grow(h, name, value);
    h->v[h->n].name = name;
    h->v[h->n].value = value;
    h->n++;
    return 0;
}
/* Replace every field of that name with one field (added at the end when absent). */
int fg_headers_set(fg_headers_t *h, fg_str_t name, fg_str_t value);
/* Append to an existing field as "old, value" (RFC 9110 5.3), or add it. */
int fg_headers_append(fg_headers_t *h, fg_str_t name, fg_str_t value);
/* Remove every field of that name; returns how many were removed. */
size_t fg_headers_remove(fg_headers_t *h, fg_str_t name);
/* The first field of that name, or NULL. */
const fg_http_header_t *fg_headers_get(const fg_headers_t *h, fg_str_t name);

/* What the gateway knows about a field name: an OR of FG_HDR_* bits, 0 for any other name.
 * A switch on the length and the first letter picks the one candidate, so an unknown name
 * costs a comparison at most. */
#define FG_HDR_HOP 0x01            /* hop-by-hop (fg_headers_is_hop_by_hop) */
#define FG_HDR_FRAMING 0x02        /* written by the gateway only (fg_headers_is_framing) */
#define FG_HDR_CONNECTION 0x04     /* Connection itself */
#define FG_HDR_CONTENT_LENGTH 0x08 /* Content-Length */
#define FG_HDR_HOST 0x10           /* Host */
#define FG_HDR_REQUEST_ID 0x20     /* X-Request-Id */
#define FG_HDR_UPGRADE 0x40        /* Upgrade */
unsigned fg_headers_class(fg_str_t name);

/* Fields never forwarded in either direction: hop-by-hop ones (RFC 9110 7.6.1: Connection,
 * Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Authenticate,
 * Proxy-Authorization) and the connection-scoped ones YARP also drops (Alt-Svc, ALPN,
 * HTTP2-Settings, Upgrade-Insecure-Requests...). */
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

/* The options named by the Connection fields of one message (RFC 9110 7.6.1), gathered once so
 * that each field is checked against a short list instead of re-parsing every Connection value.
 * Beyond FG_HEADERS_OPTIONS_MAX options the values are searched field by field instead. */
#define FG_HEADERS_OPTIONS_MAX 16
typedef struct {
    fg_str_t opt[FG_HEADERS_OPTIONS_MAX];
    size_t n;
    const fg_http_header_t *v; /* the message's fields, when there were too many options */
    size_t nv;
} fg_conn_options_t;

/* Gather the options of the Connection fields among v[0..n); v must outlive o. */
void fg_headers_conn_options(fg_conn_options_t *o, const fg_http_header_t *v, size_t n);
/* Whether a Connection field of that message lists `name`. */
int fg_headers_conn_listed(const fg_conn_options_t *o, fg_str_t name);

#endif
