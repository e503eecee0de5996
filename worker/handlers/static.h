/* Static files: the handler of routes of kind "static" (root, index, tryFiles).
 *
 * Files are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) below a directory fd
 * of the route's root, so neither "..", encoded dots nor a symlink can leave the root; path
 * segments starting with '.' are never served. Only GET and HEAD; conditional requests
 * (RFC 9110 13), a single byte range (RFC 9110 14) and sendfile through req->ops->send_file.
 *
 * Validators: ETag is W/"<mtime in nanoseconds, hex>-<size, hex>". It is weak because equal
 * mtime and size do not prove equal bytes; so If-Range with an ETag never matches (RFC 9110
 * 13.1.5 requires a strong comparison) and a resumed download restarts unless the client
 * sends the Last-Modified date instead. */
#ifndef FG_STATIC_H
#define FG_STATIC_H

#include <stdint.h>
#include <time.h>
#include "common/config.h"
#include "common/str.h"
#include "worker/http/request.h"

/* Per worker, at start: open a directory fd on the root of every static route of cfg, kept
 * until fg_static_deinit. A root that cannot be opened now is logged and retried per request.
 * cfg must outlive the cache. Returns 0 (never fails the worker). Not thread-safe: the worker
 * is single-threaded. */
int fg_static_init(const fg_config_t *cfg);
void fg_static_deinit(void);

/* Serve req from req->route->static_root. Answers through req->ops and finishes req. */
void fg_static_handle(fg_request_t *req);

/* ---- pure helpers, exported for the unit tests ---- */

/* Outcome of a Range header against a representation of `size` bytes (RFC 9110 14.1.2). */
enum {
    FG_RANGE_IGNORE = 0,       /* absent, malformed, other unit or several ranges: send 200 */
    FG_RANGE_OK = 1,           /* [*first, *last] inclusive: send 206 */
    FG_RANGE_UNSATISFIABLE = 2 /* send 416 */
};
int fg_static_parse_range(fg_str_t value, int64_t size, int64_t *first, int64_t *last);

/* Parse an HTTP-date in any of the three formats RFC 9110 5.6.7 requires recipients to accept.
 * Returns 0 and *t, or -1. */
int fg_static_parse_http_date(fg_str_t s, time_t *t);

/* Whether the entity-tag list `list` (If-None-Match / If-Match syntax, RFC 9110 8.8.3) matches
 * etag: "*" matches anything; weak (RFC 9110 8.8.3.2) ignores the W/ prefixes, strong requires
 * both tags to be strong. Returns 1 or 0 (malformed elements never match). */
int fg_static_etag_match(fg_str_t list, fg_str_t etag, int weak);

#endif
