/* Response compression (docs/compression.md): a filter between a request's handler and its
 * front end. Attached to a request whose route has "compression" enabled, it replaces req->ops
 * with its own table, decides at send_head whether the response is gzip-coded, and then deflates
 * send_body and send_file bytes on their way to the front end's ops. Handlers and front ends do
 * not know it is there; a route without compression never meets it. */
#ifndef FG_COMPRESS_H
#define FG_COMPRESS_H

#include "common/config.h"
#include "common/headers.h"
#include "worker/http/request.h"

/* Responses one worker compresses at once at most; past it, responses go uncompressed. Each
 * holds about FG_COMPRESS_STREAM_MEMORY bytes of deflate state. */
#define FG_COMPRESS_MAX_STREAMS 256
/* deflate's state for the window and memory level compress.c uses (zlib's zconf.h formula:
 * (1 << (windowBits + 2)) + (1 << (memLevel + 9)), plus about 6 KiB). */
#define FG_COMPRESS_STREAM_MEMORY (32768 + 65536 + 6144)

/* Whether the Accept-Encoding field values v[0..n-1] (one logical list, RFC 9110 5.3) accept
 * gzip: 1 or 0. No field (n 0) is 0: a client that names no coding gets identity. Never
 * allocates; reads each value once. */
int fg_compress_accepts_gzip(const fg_str_t *v, size_t n);

/* Whether a Content-Type value (parameters allowed) is one of conf->types. */
int fg_compress_type_listed(const fg_compression_config_t *conf, fg_str_t content_type);

/* Make h say the response varies on Accept-Encoding (RFC 9110 12.5.5): appended to a Vary
 * field, or a new one, unless a Vary lists it or "*" already. Returns 0 or -1 (no memory). */
int fg_compress_vary(fg_headers_t *h);

/* A strong ETag in h made weak (RFC 9110 8.8.1: the coded representation is not the same
 * bytes). Returns 0 or -1 (no memory). */
int fg_compress_weaken_etag(fg_headers_t *h);

/* Put the filter between req's handler and req->ops (req->compress set) when compression is
 * enabled for req: its route's "compression", or its server's for a route without one. Costs a
 * pool allocation; nothing when memory is short (the response goes uncompressed). */
void fg_compress_attach(fg_request_t *req);

#endif
