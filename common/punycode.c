/* RFC 3492 6.3 (encoding procedure) with the parameter values of its section 5. */
#include "common/punycode.h"

#include <string.h>

enum { BASE = 36, TMIN = 1, TMAX = 26, SKEW = 38, DAMP = 700, INITIAL_BIAS = 72, INITIAL_N = 128 };

#define MAX_LABEL_CP 256 /* a DNS label is at most 63 octets: room to spare */

/* RFC 3492 6.1 */
static uint32_t adapt(uint32_t delta, uint32_t numpoints, int first)
{
    uint32_t k = 0;
    delta = first ? delta / DAMP : delta / 2;
    delta += delta / numpoints;
    while (delta > ((BASE - TMIN) * TMAX) / 2) {
        delta /= BASE - TMIN;
        k += BASE;
    }
    return k + (BASE - TMIN + 1) * delta / (delta + SKEW);
}

static char digit(uint32_t d)
{
    return (char)(d < 26 ? 'a' + d : '0' + (d - 26));
}

int fg_punycode_encode(const uint32_t *cp, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    if (n > MAX_LABEL_CP)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (cp[i] >= 0x80)
            continue;
        if (w >= cap)
            return -1;
        out[w++] = (char)cp[i];
    }
    uint32_t b = (uint32_t)w, h = b, code = INITIAL_N, delta = 0, bias = INITIAL_BIAS;
    if (b > 0) {
        if (w >= cap)
            return -1;
        out[w++] = '-';
    }
    while (h < n) {
        uint32_t m = UINT32_MAX;
        for (size_t i = 0; i < n; i++)
            if (cp[i] >= code && cp[i] < m)
                m = cp[i];
        /* n is bounded, so delta cannot overflow (RFC 3492 6.4 asks to check it) */
        delta += (m - code) * (h + 1);
        code = m;
        for (size_t i = 0; i < n; i++) {
            if (cp[i] < code)
                delta++;
            if (cp[i] != code)
                continue;
            uint32_t q = delta;
            for (uint32_t k = BASE;; k += BASE) {
                uint32_t t = k <= bias ? TMIN : k >= bias + TMAX ? TMAX : k - bias;
                if (q < t)
                    break;
                if (w >= cap)
                    return -1;
                out[w++] = digit(t + (q - t) % (BASE - t));
                q = (q - t) / (BASE - t);
            }
            if (w >= cap)
                return -1;
            out[w++] = digit(q);
            bias = adapt(delta, h + 1, h == b);
            delta = 0;
            h++;
        }
        delta++;
        code++;
    }
    return (int)w;
}

/* The lower-case letter of v for the capitals of ASCII, Latin-1, Greek and Cyrillic (IDNA
 * maps a label to lower case before encoding it, RFC 5895 2.1); other code points as they
 * are. */
static uint32_t lower(uint32_t v)
{
    if ((v >= 'A' && v <= 'Z') || (v >= 0xC0 && v <= 0xDE && v != 0xD7) ||
        (v >= 0x391 && v <= 0x3A9 && v != 0x3A2) || (v >= 0x410 && v <= 0x42F))
        return v + 32;
    if (v >= 0x400 && v <= 0x40F)
        return v + 80;
    return v;
}

/* Decode the UTF-8 label s[0..n) into cp, lower-cased. Returns the count or -1. */
static int label_points(const unsigned char *s, size_t n, uint32_t *cp, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i++];
        int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        uint32_t v = c & (0x7F >> more);
        if ((c >= 0x80 && c < 0xC2) || c > 0xF4 || k >= max)
            return -1;
        for (int j = 0; j < more; j++) {
            if (i >= n || (s[i] & 0xC0) != 0x80)
                return -1;
            v = v << 6 | (s[i++] & 0x3F);
        }
        cp[k++] = lower(v);
    }
    return (int)k;
}

int fg_punycode_host(const char *in, size_t len, char *out, size_t cap)
{
    uint32_t cp[MAX_LABEL_CP];
    size_t w = 0;
    for (size_t i = 0; i <= len;) {
        size_t end = i;
        while (end < len && in[end] != '.')
            end++;
        int ascii = 1;
        for (size_t k = i; k < end; k++)
            ascii &= (unsigned char)in[k] < 0x80;
        if (ascii) {
            if (w + (end - i) + 1 >= cap)
                return -1;
            memcpy(out + w, in + i, end - i);
            w += end - i;
        } else {
            int n = label_points((const unsigned char *)in + i, end - i, cp, MAX_LABEL_CP);
            if (n < 0 || w + 4 >= cap)
                return -1;
            memcpy(out + w, "xn--", 4);
            w += 4;
            int m = fg_punycode_encode(cp, (size_t)n, out + w, cap - w - 1);
            if (m < 0)
                return -1;
            w += (size_t)m;
        }
        if (end == len)
            break;
        out[w++] = '.';
        i = end + 1;
    }
    out[w] = '\0';
    return (int)w;
}
