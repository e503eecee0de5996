/* Request-target path handling shared by the router, transforms and static files. */
#ifndef FG_PATH_H
#define FG_PATH_H

#include <stddef.h>
#include "common/str.h"

/* Normalise an origin-form path (no query) into out (capacity >= in.len + 1):
 * - percent-decode only unreserved characters (RFC 3986 2.3, 6.2.2.2), upper-case other %XX;
 * - merge repeated slashes; remove "." and ".." segments (RFC 3986 5.2.4), also when they were
 *   written with encoded dots (%2e);
 * The result is still a valid encoded path, safe to forward. Returns its length, or -1 when the
 * path does not start with '/', contains %00, a bad escape, a raw control byte, a raw byte
 * RFC 3986 never allows in a path (backslash, quote, <, >, ^, `, {, |, }, space), or ".." climbs
 * above the root. */
long fg_path_normalize(const char *in, size_t len, char *out);

/* Percent-decode everything (for file system lookup). Returns the length or -1 on a bad escape,
 * %00 or an encoded '/'. out capacity >= len + 1, NUL-terminated. */
long fg_path_decode(const char *in, size_t len, char *out);

#endif
