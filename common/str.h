/* Non-owning string slices used by the parsers, the router and the request object. */
#ifndef FG_STR_H
#define FG_STR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *base;
    size_t len;
} fg_str_t;

#define FG_STR_NULL ((fg_str_t){NULL, 0})
#define FG_STR_LIT(s) ((fg_str_t){(s), sizeof(s) - 1})

static inline fg_str_t fg_str(const char *s)
{
    return (fg_str_t){s, s ? strlen(s) : 0};
}

/* Whether s is 1..max characters of the base64url alphabet (RFC 4648 5), no padding. */
static inline int fg_str_is_base64url(fg_str_t s, size_t max)
{
    if (s.len == 0 || s.len > max)
        return 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.base[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

static inline int fg_str_eq(fg_str_t a, fg_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

/* ASCII case-insensitive equality (header names, hosts, path literals), as strncasecmp in the
 * C locale but without stopping at a NUL. Inline: most calls compare a header name against a
 * literal of the same length, and differ in the first byte or two, where a call into libc costs
 * more than the comparison. */
static inline int fg_str_ieq(fg_str_t a, fg_str_t b)
{
    if (a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.base[i], y = (unsigned char)b.base[i];
        if (x == y)
            continue;
        /* Only letters fold: they differ in bit 0x20 alone. */
        unsigned char l = x | 0x20;
        if ((x ^ y) != 0x20 || l < 'a' || l > 'z')
            return 0;
    }
    return 1;
}

/* Whether the 8, 4 or 2 bytes at s equal those at lower up to case, where lower holds only
 * lower-case letters and '-': letters have bit 0x40 and '-' has not, so (lower & 0x40) >> 1
 * is 0x20 exactly where a letter may come in either case; elsewhere bytes must be equal. */
static inline int fg_str_fold8(const char *s, const char *lower)
{
    uint64_t a, l;
    memcpy(&a, s, 8);
    memcpy(&l, lower, 8);
    return (a | ((l & 0x4040404040404040ull) >> 1)) == l;
}

static inline int fg_str_fold4(const char *s, const char *lower)
{
    uint32_t a, l;
    memcpy(&a, s, 4);
    memcpy(&l, lower, 4);
    return (a | ((l & 0x40404040u) >> 1)) == l;
}

static inline int fg_str_fold2(const char *s, const char *lower)
{
    uint16_t a, l;
    memcpy(&a, s, 2);
    memcpy(&l, lower, 2);
    return (uint16_t)(a | ((l & 0x4040u) >> 1)) == l;
}

/* Case-insensitive equality of len >= 2 bytes at s with a name written in lower-case letters
 * and '-' (the header names the gateway recognises), a word at a time: the last word overlaps
 * the one before when len is not a multiple of its size. Exact: no other byte folds. */
static inline int fg_str_ieq_lower(const char *s, const char *lower, size_t len)
{
    if (len < 4)
        return fg_str_fold2(s, lower) && fg_str_fold2(s + len - 2, lower + len - 2);
    if (len < 8)
        return fg_str_fold4(s, lower) && fg_str_fold4(s + len - 4, lower + len - 4);
    for (size_t i = 0; i + 8 < len; i += 8)
        if (!fg_str_fold8(s + i, lower + i))
            return 0;
    /* len is the length of lower at every call; cppcheck pairs one call's literal with
     * another's length. */
    /* cppcheck-suppress pointerOutOfBoundsCond */
    return fg_str_fold8(s + len - 8, lower + len - 8);
}

static inline int fg_str_ieq_c(fg_str_t a, const char *b)
{
    return fg_str_ieq(a, fg_str(b));
}

/* Copy n bytes from s to p; returns p + n. The pieces of a message head (names, values, a
 * method, a path) are mostly under 32 bytes, where a call to memcpy costs more than the copy:
 * those take two overlapping loads and stores of 8 or 16 bytes, inline. */
static inline char *fg_str_put(char *p, const char *s, size_t n)
{
    uint64_t a, b, c, d;
    if (n > 32) {
        memcpy(p, s, n);
    } else if (n >= 16) {
        memcpy(&a, s, 8);
        memcpy(&b, s + 8, 8);
        memcpy(&c, s + n - 16, 8);
        memcpy(&d, s + n - 8, 8);
        memcpy(p, &a, 8);
        memcpy(p + 8, &b, 8);
        memcpy(p + n - 16, &c, 8);
        memcpy(p + n - 8, &d, 8);
    } else if (n >= 8) {
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(p, &a, 8);
        memcpy(p + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, s, 4);
        memcpy(&y, s + n - 4, 4);
        memcpy(p, &x, 4);
        memcpy(p + n - 4, &y, 4);
    } else if (n > 0) {
        p[0] = s[0];
        p[n / 2] = s[n / 2];
        p[n - 1] = s[n - 1];
    }
    return p + n;
}

/* Eight lowercase hex digits of v at p, most significant first, without a loop or table:
 * each nibble is spread into a byte of its own, turned to ASCII ('0' + n, plus 39 for a..f)
 * eight at a time, and stored in digit order. */
static inline void fg_put_hex32(char *p, uint32_t v)
{
    uint64_t x = v;
    x = ((x & 0xffff0000ull) << 16) | (x & 0xffffull);
    x = ((x & 0x0000ff000000ff00ull) << 8) | (x & 0x000000ff000000ffull);
    x = ((x & 0x00f000f000f000f0ull) << 4) | (x & 0x000f000f000f000full);
    /* byte i holds nibble i (from the least significant): digits run backwards in memory */
    uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    x += 0x3030303030303030ull + letters * 39;
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
    memcpy(p, &x, 8);
#else
    for (int i = 0; i < 8; i++, x >>= 8)
        p[7 - i] = (char)(x & 0xff);
#endif
}

/* Sixteen lowercase hex digits of v at p, most significant first. */
static inline void fg_put_hex64(char *p, uint64_t v)
{
    fg_put_hex32(p, (uint32_t)(v >> 32));
    fg_put_hex32(p + 8, (uint32_t)v);
}

/* Write v in decimal at p; returns the end. printf costs more than the rest of a response
 * head, so the hot paths format their few numbers with this. */
static inline char *fg_put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

#endif
