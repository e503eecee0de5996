/* Punycode (RFC 3492) and the ASCII form of internationalised host names (RFC 5891 4.4:
 * each non-ASCII label becomes "xn--" and its Punycode). Used at configuration load, so that
 * hosts written in Unicode match the A-label form clients send on the wire. */
#ifndef FG_PUNYCODE_H
#define FG_PUNYCODE_H

#include <stddef.h>
#include <stdint.h>

/* Encode the n code points of cp into out (at most cap bytes, no NUL). Basic code points are
 * copied as they are. Returns the length, or -1 when out is too small or n is too large. */
int fg_punycode_encode(const uint32_t *cp, size_t n, char *out, size_t cap);

/* Convert the UTF-8 host name in (len bytes) to its ASCII form in out (NUL-terminated, cap
 * bytes): ASCII labels are kept, others are lower-cased in ASCII letters only and encoded as
 * "xn--" labels. Returns the length, or -1 for malformed UTF-8 or when out is too small. */
int fg_punycode_host(const char *in, size_t len, char *out, size_t cap);

#endif
