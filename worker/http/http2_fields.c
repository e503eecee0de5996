#include "worker/http/http2_fields.h"

#include <string.h>

#include "common/path.h"

int fg_http2_join_cookies(fg_pool_t *pool, fg_http_header_t *v, size_t *n)
{
    size_t count = 0, total = 0, first = 0;
    for (size_t i = 0; i < *n; i++) {
        if (fg_str_ieq_c(v[i].name, "cookie")) {
            if (count++ == 0)
                first = i;
            total += v[i].value.len;
        }
    }
    if (count < 2)
        return 0;
    char *buf = fg_pool_alloc(pool, total + 2 * (count - 1));
    if (buf == NULL)
        return -1;
    char *p = buf;
    size_t out = 0;
    for (size_t i = 0; i < *n; i++) {
        if (!fg_str_ieq_c(v[i].name, "cookie")) {
            v[out++] = v[i];
            continue;
        }
        if (p != buf) {
            memcpy(p, "; ", 2);
            p += 2;
        }
        memcpy(p, v[i].value.base, v[i].value.len);
        p += v[i].value.len;
        if (i == first)
            v[out++] = v[i];
    }
    /* The joined field keeps the first crumb's place; first <= its index after compaction. */
    for (size_t i = 0; i < out; i++) {
        if (fg_str_ieq_c(v[i].name, "cookie")) {
            v[i].value = (fg_str_t){buf, (size_t)(p - buf)};
            break;
        }
    }
    *n = out;
    return 0;
}

int fg_http2_authority(fg_str_t authority, const fg_http_header_t *v, size_t n, fg_str_t *out)
{
    const fg_http_header_t *host = NULL;
    for (size_t i = 0; i < n && host == NULL; i++)
        if (fg_str_ieq_c(v[i].name, "host"))
            host = &v[i];
    if (authority.len > 0) {
        /* "A server SHOULD treat a request as malformed if it contains a Host header field
         * that identifies an entity that differs from the entity in :authority." */
        if (host != NULL && !fg_str_ieq(host->value, authority))
            return -1;
        *out = authority;
        return 0;
    }
    if (host == NULL || host->value.len == 0)
        return -1;
    *out = host->value;
    return 0;
}

int fg_http2_split_path(fg_pool_t *pool, fg_str_t target, fg_str_t *path, fg_str_t *query)
{
    const char *t = target.base;
    size_t len = target.len;
    const char *frag = len ? memchr(t, '#', len) : NULL;
    if (frag != NULL)
        len = (size_t)(frag - t);
    if (len == 1 && t[0] == '*') {
        *path = FG_STR_LIT("*");
        *query = FG_STR_LIT("");
        return 0;
    }
    if (len == 0 || t[0] != '/')
        return -1;
    const char *q = memchr(t, '?', len);
    size_t plen = q ? (size_t)(q - t) : len;
    *query = q ? (fg_str_t){q + 1, len - plen - 1} : FG_STR_NULL;
    char *p = fg_pool_alloc(pool, plen + 1);
    if (p == NULL)
        return -1;
    long l = fg_path_normalize(t, plen, p);
    if (l < 0)
        return -1;
    *path = (fg_str_t){p, (size_t)l};
    return 0;
}

/* RFC 9113 8.2.2. The switch on the length leaves at most two names to compare, a word at a
 * time: this runs for every field of every response. */
int fg_http2_connection_specific(fg_str_t name)
{
    const char *n = name.base;
    switch (name.len) {
    case 2:
        return fg_str_ieq_lower(n, "te", 2);
    case 7:
        return fg_str_ieq_lower(n, "upgrade", 7);
    case 10:
        return fg_str_ieq_lower(n, "connection", 10) || fg_str_ieq_lower(n, "keep-alive", 10);
    case 16:
        return fg_str_ieq_lower(n, "proxy-connection", 16);
    case 17:
        return fg_str_ieq_lower(n, "transfer-encoding", 17);
    }
    return 0;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* 0x20 in each of the 8 bytes of x that is an ASCII upper-case letter, 0 in the others. Bytes
 * are taken apart from their top bit, so no sum carries into the next byte. */
static inline uint64_t upper_bits(uint64_t x)
{
    uint64_t low = x & ~HIGHS;
    uint64_t ge_a = low + ONES * (0x80 - 'A');
    uint64_t gt_z = low + ONES * (0x80 - 'Z' - 1);
    return (ge_a & ~gt_z & ~x & HIGHS) >> 2;
}

/* The lowercase literal of a common response field name, in any case, or NULL: those need
 * neither a copy nor a pass over their bytes. One candidate per length and first letter. */
static const char *common_name(fg_str_t name)
{
    const char *lit;
    int c = name.len ? name.base[0] | 0x20 : 0;
    switch (name.len) {
    case 4:
        lit = c == 'd' ? "date" : c == 'e' ? "etag" : "vary";
        break;
    case 6:
        lit = "server";
        break;
    case 7:
        lit = "expires";
        break;
    case 8:
        lit = "location";
        break;
    case 10:
        lit = "set-cookie";
        break;
    case 12:
        lit = "content-type";
        break;
    case 13:
        lit = c == 'c' ? "cache-control" : c == 'l' ? "last-modified" : "accept-ranges";
        break;
    case 14:
        lit = "content-length";
        break;
    case 16:
        lit = "content-encoding";
        break;
    default:
        return NULL;
    }
    return fg_str_ieq_lower(name.base, lit, name.len) ? lit : NULL;
}

/* name in lowercase into p (name.len bytes). */
static fg_str_t lower_into(fg_str_t name, char *p)
{
    uint64_t w;
    size_t k = 0;
    for (; k + 8 <= name.len; k += 8) {
        memcpy(&w, name.base + k, 8);
        w |= upper_bits(w);
        memcpy(p + k, &w, 8);
    }
    for (; k < name.len; k++) {
        char ch = name.base[k];
        p[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch | 0x20) : ch;
    }
    return (fg_str_t){p, name.len};
}

/* Field names are short (most under 16 bytes): a word at a time, then the last bytes. */
fg_str_t fg_http2_lower(fg_pool_t *pool, fg_str_t name)
{
    const char *lit = common_name(name);
    if (lit != NULL)
        return (fg_str_t){lit, name.len};
    size_t i = 0;
    uint64_t w = 0;
    for (; i + 8 <= name.len; i += 8) {
        memcpy(&w, name.base + i, 8);
        if (upper_bits(w))
            break;
    }
    if (i + 8 > name.len) {
        while (i < name.len && !(name.base[i] >= 'A' && name.base[i] <= 'Z'))
            i++;
        if (i == name.len)
            return name;
    }
    char *p = fg_pool_alloc(pool, name.len);
    if (p == NULL)
        return FG_STR_NULL;
    return lower_into(name, p);
}

fg_str_t fg_http2_lower_copy(fg_str_t name, char *out)
{
    const char *lit = common_name(name);
    return lit != NULL ? (fg_str_t){lit, name.len} : lower_into(name, out);
}
