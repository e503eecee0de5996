#include "common/json.h"

#include <string.h>

/* Length of the well-formed UTF-8 sequence at s[0..len) (RFC 3629 4: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 when s[0] does not start one. */
static size_t utf8_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else
        return 0;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

size_t fg_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            if (n + 2 > cap)
                break;
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            if (n + 6 > cap)
                break;
            memcpy(out + n, "\\u00", 4);
            out[n + 4] = hex[c >> 4];
            out[n + 5] = hex[c & 15];
            n += 6;
        } else if (c < 0x80) {
            if (n + 1 > cap)
                break;
            out[n++] = (char)c;
        } else {
            /* RFC 8259 8.1: JSON text is UTF-8. A byte that does not begin a well-formed
             * sequence is written as the code point of its value (\u00XX), so the output stays
             * valid and the byte can still be read back. */
            size_t k = utf8_len(u + i, len - i);
            if (k == 0) {
                if (n + 6 > cap)
                    break;
                memcpy(out + n, "\\u00", 4);
                out[n + 4] = hex[c >> 4];
                out[n + 5] = hex[c & 15];
                n += 6;
                continue;
            }
            if (n + k > cap)
                break;
            memcpy(out + n, u + i, k);
            n += k;
            i += k - 1;
        }
    }
    return n;
}
