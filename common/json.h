/* JSON string escaping (RFC 8259 section 7) for the hand-built JSON of the hot paths: error
 * bodies, access log lines, JSON error log lines. Documents built off the hot path use jansson. */
#ifndef FG_JSON_H
#define FG_JSON_H

#include <stddef.h>

/* Write s[0..len) escaped as the inside of a JSON string into out, at most cap bytes, stopping
 * before a character whose escape would not fit whole (so a truncated result is still valid).
 * Returns the number of bytes written. */
size_t fg_json_escape(char *out, size_t cap, const char *s, size_t len);

#endif
