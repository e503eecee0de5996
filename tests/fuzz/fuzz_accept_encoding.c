/* libFuzzer target: Accept-Encoding negotiation and the response field rewrites of
 * worker/http/compress.h. The input is split at newlines into field values. Checked: the answer
 * is 0 or 1; an input that names neither gzip nor "*" never accepts gzip; an empty list element
 * added at the end changes nothing; the input as a Vary value gains Accept-Encoding at most once;
 * as an ETag value it is weakened to W/ plus itself or left alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "worker/http/compress.h"

#define MAX_FIELDS 8

static int names_gzip_or_star(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '*')
            return 1;
        if (i + 4 <= n && strncasecmp((const char *)d + i, "gzip", 4) == 0)
            return 1;
    }
    return 0;
}

static void check_fields(fg_pool_t *pool, const uint8_t *data, size_t size)
{
    fg_str_t v[MAX_FIELDS];
    size_t n = 0, start = 0;
    char *copy = fg_pool_alloc(pool, size + 2);
    if (copy == NULL)
        abort();
    memcpy(copy, data, size);
    for (size_t i = 0; i <= size && n < MAX_FIELDS; i++)
        if (i == size || copy[i] == '\n') {
            v[n++] = (fg_str_t){copy + start, i - start};
            start = i + 1;
        }
    int a = fg_compress_accepts_gzip(v, n);
    if (a != 0 && a != 1)
        abort();
    if (a && !names_gzip_or_star(data, size))
        abort();
    if (n > 0 && n < MAX_FIELDS) {
        v[n++] = FG_STR_LIT(",");
        if (fg_compress_accepts_gzip(v, n) != a)
            abort();
    }
}

static void check_rewrites(fg_pool_t *pool, const uint8_t *data, size_t size)
{
    fg_str_t value = {fg_pool_strndup(pool, (const char *)data, size), size};
    if (value.base == NULL)
        abort();
    fg_headers_t h;
    fg_headers_init(&h, pool, 2);
    if (fg_headers_add(&h, FG_STR_LIT("Vary"), value) != 0 || fg_compress_vary(&h) != 0)
        abort();
    size_t len = h.v[0].value.len;
    if (fg_compress_vary(&h) != 0 || h.v[0].value.len != len)
        abort(); /* a second call finds it listed */
    fg_headers_init(&h, pool, 1);
    if (fg_headers_add(&h, FG_STR_LIT("ETag"), value) != 0 || fg_compress_weaken_etag(&h) != 0)
        abort();
    fg_str_t e = h.v[0].value;
    if (size > 0 && data[0] == '"') {
        if (e.len != size + 2 || memcmp(e.base, "W/", 2) != 0 || memcmp(e.base + 2, data, size))
            abort();
    } else if (e.len != size || memcmp(e.base, data, size) != 0) {
        abort();
    }
    char *types[] = {"text/html", "text/*", NULL};
    fg_compression_config_t c = {.enabled = 1, .types = types, .ntypes = 2};
    (void)fg_compress_type_listed(&c, value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fg_pool_t *pool = fg_pool_new(4096);
    if (pool == NULL)
        abort();
    check_fields(pool, data, size);
    check_rewrites(pool, data, size);
    fg_pool_free(pool);
    return 0;
}
