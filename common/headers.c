/* Header field lists backed by a pool (see common/headers.h). */
#include "common/headers.h"

#include <string.h>

#define DEFAULT_CAP 16

void fg_headers_init(fg_headers_t *h, fg_pool_t *pool, size_t cap_hint)
{
    h->v = NULL;
    h->n = 0;
    h->cap = cap_hint;
    h->pool = pool;
}

/* Make room for one more field. The array lives in the pool, so growing abandons the old copy
 * there; doubling keeps that waste below the final size. Returns 0 or -1. */
static int grow(fg_headers_t *h)
{
    if (h->v != NULL && h->n < h->cap)
        return 0;
    size_t cap = h->cap;
    if (h->v != NULL)
        cap *= 2;
    if (cap == 0)
        cap = DEFAULT_CAP;
    fg_http_header_t *v = fg_pool_alloc(h->pool, cap * sizeof(*v));
    if (v == NULL)
        return -1;
    if (h->n)
        memcpy(v, h->v, h->n * sizeof(*v));
    h->v = v;
    h->cap = cap;
    return 0;
}

int fg_headers_add(fg_headers_t *h, fg_str_t name, fg_str_t value)
{
    if (grow(h) != 0)
        return -1;
    h->v[h->n].name = name;
    h->v[h->n].value = value;
    h->n++;
    return 0;
}

/* Remove every field named `name` at index >= from; keeps the order of the others. */
static size_t remove_from(fg_headers_t *h, fg_str_t name, size_t from)
{
    size_t w = from;
    for (size_t r = from; r < h->n; r++) {
        if (fg_str_ieq(h->v[r].name, name))
            continue;
        h->v[w++] = h->v[r];
    }
    size_t removed = h->n - w;
    h->n = w;
    return removed;
}

int fg_headers_set(fg_headers_t *h, fg_str_t name, fg_str_t value)
{
    for (size_t i = 0; i < h->n; i++) {
        if (fg_str_ieq(h->v[i].name, name)) {
            /* Keep the first field's position; later duplicates go. */
            h->v[i].value = value;
            remove_from(h, name, i + 1);
            return 0;
        }
    }
    return fg_headers_add(h, name, value);
}

int fg_headers_append(fg_headers_t *h, fg_str_t name, fg_str_t value)
{
    fg_http_header_t *last = NULL;
    for (size_t i = 0; i < h->n; i++)
        if (fg_str_ieq(h->v[i].name, name))
            last = &h->v[i];
    if (last == NULL)
        return fg_headers_add(h, name, value);
    if (last->value.len == 0) {
        last->value = value;
        return 0;
    }
    /* RFC 9110 5.3: a list-valued field may be combined with ", ". */
    size_t len = last->value.len + 2 + value.len;
    char *buf = fg_pool_alloc(h->pool, len + 1);
    if (buf == NULL)
        return -1;
    memcpy(buf, last->value.base, last->value.len);
    memcpy(buf + last->value.len, ", ", 2);
    if (value.len)
        memcpy(buf + last->value.len + 2, value.base, value.len);
    buf[len] = '\0';
    last->value = (fg_str_t){buf, len};
    return 0;
}

size_t fg_headers_remove(fg_headers_t *h, fg_str_t name)
{
    return remove_from(h, name, 0);
}

const fg_http_header_t *fg_headers_get(const fg_headers_t *h, fg_str_t name)
{
    for (size_t i = 0; i < h->n; i++)
        if (fg_str_ieq(h->v[i].name, name))
            return &h->v[i];
    return NULL;
}

int fg_headers_is_hop_by_hop(fg_str_t name)
{
    /* RFC 9110 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and
     * Upgrade; Trailer (RFC 9110 6.6.2) and the Proxy-Authenticate/-Authorization pair
     * (RFC 9110 11.7) only concern the next hop as well. */
    static const fg_str_t hop[] = {
        FG_STR_LIT("Connection"),
        FG_STR_LIT("Keep-Alive"),
        FG_STR_LIT("Proxy-Connection"),
        FG_STR_LIT("TE"),
        FG_STR_LIT("Trailer"),
        FG_STR_LIT("Transfer-Encoding"),
        FG_STR_LIT("Upgrade"),
        FG_STR_LIT("Proxy-Authenticate"),
        FG_STR_LIT("Proxy-Authorization"),
    };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (fg_str_ieq(name, hop[i]))
            return 1;
    return 0;
}

int fg_headers_is_framing(fg_str_t name)
{
    static const fg_str_t framing[] = {
        FG_STR_LIT("Content-Length"), FG_STR_LIT("Transfer-Encoding"), FG_STR_LIT("Connection"),
        FG_STR_LIT("Keep-Alive"),     FG_STR_LIT("Proxy-Connection"),  FG_STR_LIT("TE"),
        FG_STR_LIT("Trailer"),        FG_STR_LIT("Upgrade"),
    };
    for (size_t i = 0; i < sizeof(framing) / sizeof(framing[0]); i++)
        if (fg_str_ieq(name, framing[i]))
            return 1;
    return 0;
}

int fg_headers_trailer_allowed(fg_str_t name)
{
    static const fg_str_t banned[] = {
        FG_STR_LIT("Content-Length"),
        FG_STR_LIT("Transfer-Encoding"),
        FG_STR_LIT("Trailer"),
        FG_STR_LIT("TE"),
        FG_STR_LIT("Connection"),
        FG_STR_LIT("Keep-Alive"),
        FG_STR_LIT("Proxy-Connection"),
        FG_STR_LIT("Upgrade"),
        FG_STR_LIT("Host"),
        FG_STR_LIT("Authorization"),
        FG_STR_LIT("Proxy-Authorization"),
        FG_STR_LIT("WWW-Authenticate"),
        FG_STR_LIT("Proxy-Authenticate"),
        FG_STR_LIT("Cookie"),
        FG_STR_LIT("Set-Cookie"),
        FG_STR_LIT("Cache-Control"),
        FG_STR_LIT("Expect"),
        FG_STR_LIT("Max-Forwards"),
        FG_STR_LIT("Pragma"),
        FG_STR_LIT("Range"),
        FG_STR_LIT("If-Match"),
        FG_STR_LIT("If-None-Match"),
        FG_STR_LIT("If-Modified-Since"),
        FG_STR_LIT("If-Unmodified-Since"),
        FG_STR_LIT("If-Range"),
        FG_STR_LIT("Age"),
        FG_STR_LIT("Date"),
        FG_STR_LIT("Expires"),
        FG_STR_LIT("Location"),
        FG_STR_LIT("Retry-After"),
        FG_STR_LIT("Vary"),
        FG_STR_LIT("Content-Type"),
        FG_STR_LIT("Content-Encoding"),
        FG_STR_LIT("Content-Range"),
    };
    if (name.len == 0 || name.base[0] == ':')
        return 0;
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
        if (fg_str_ieq(name, banned[i]))
            return 0;
    return 1;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int fg_headers_connection_lists(fg_str_t value, fg_str_t name)
{
    /* RFC 9110 7.6.1: Connection = #connection-option; list elements are separated by commas
     * with optional whitespace, and empty elements are allowed (RFC 9110 5.6.1). */
    size_t i = 0;
    while (i < value.len) {
        while (i < value.len && (is_ows(value.base[i]) || value.base[i] == ','))
            i++;
        size_t start = i;
        while (i < value.len && value.base[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(value.base[end - 1]))
            end--;
        if (end > start && fg_str_ieq((fg_str_t){value.base + start, end - start}, name))
            return 1;
    }
    return 0;
}
