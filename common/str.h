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

static inline int fg_str_ieq_c(fg_str_t a, const char *b)
{
    return fg_str_ieq(a, fg_str(b));
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
