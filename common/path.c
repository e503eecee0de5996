/* Request-target path normalisation and decoding (see common/path.h). */
#include "common/path.h"

#include <string.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~". */
static int is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Read the escape at in[i] ('%'). Returns the octet or -1 when it is truncated or not hex. */
static int escape_at(const char *in, size_t len, size_t i)
{
    if (len - i < 3)
        return -1;
    int hi = hexval((unsigned char)in[i + 1]);
    int lo = hexval((unsigned char)in[i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi << 4 | lo;
}

/* First pass: percent-encoding normalisation (RFC 3986 6.2.2.1, 6.2.2.2). The output is never
 * longer than the input. Returns the output length or -1. */
static long normalize_escapes(const char *in, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        /* RFC 3986 3.3 allows none of these in a path, raw. Browsers read a backslash as a
         * slash, so a path echoed into a redirect could send the user to another site. */
        if (is_ctl(c) || (c < 0x80 && strchr("\\\"<>^`{|} ", (char)c) != NULL))
            return -1;
        if (c != '%') {
            out[w++] = (char)c;
            continue;
        }
        int v = escape_at(in, len, i);
        if (v <= 0) /* bad escape, or %00 which no file or upstream should ever see */
            return -1;
        if (is_unreserved((unsigned char)v)) {
            out[w++] = (char)v;
        } else {
            out[w++] = '%';
            out[w++] = hex[v >> 4];
            out[w++] = hex[v & 15];
        }
        i += 2;
    }
    return (long)w;
}

/* Second pass, in place: merge slashes and apply remove_dot_segments (RFC 3986 5.2.4) over the
 * segments of p[0..len), which starts with '/'. Writing never overtakes reading, since every
 * written segment was read at the same or a later offset. */
static long remove_dots(char *p, size_t len)
{
    size_t w = 0; /* output is "/seg/seg" without a trailing slash */
    int trailing = 0;
    size_t r = 0;
    while (r < len) {
        r++; /* the '/' */
        size_t start = r;
        while (r < len && p[r] != '/')
            r++;
        size_t n = r - start;
        int last = r >= len;
        if (n == 0 || (n == 1 && p[start] == '.')) {
            trailing = last;
            continue;
        }
        if (n == 2 && p[start] == '.' && p[start + 1] == '.') {
            if (w == 0)
                return -1; /* climbs above the root */
            while (w > 0 && p[w - 1] != '/')
                w--;
            w--; /* the slash before the popped segment */
            trailing = last;
            continue;
        }
        p[w++] = '/';
        memmove(p + w, p + start, n);
        w += n;
        trailing = 0;
    }
    if (w == 0 || trailing)
        p[w++] = '/';
    return (long)w;
}

long fg_path_normalize(const char *in, size_t len, char *out)
{
    if (len == 0 || in[0] != '/')
        return -1;
    long n = normalize_escapes(in, len, out);
    if (n < 0)
        return -1;
    n = remove_dots(out, (size_t)n);
    if (n >= 0)
        out[n] = '\0';
    return n;
}

long fg_path_decode(const char *in, size_t len, char *out)
{
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            out[w++] = in[i];
            continue;
        }
        int v = escape_at(in, len, i);
        /* An encoded '/' would let one segment name a different directory. */
        if (v <= 0 || v == '/')
            return -1;
        out[w++] = (char)v;
        i += 2;
    }
    out[w] = '\0';
    return (long)w;
}
