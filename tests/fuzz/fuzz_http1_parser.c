/* libFuzzer target: the input as a request head and as a response head.
 * Checks: slices lie inside the head, framing facts are consistent, and parsing any prefix never
 * yields a success different from the whole input's (restartable parsing must be monotonic). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http1_parser.h"

#define NHDR 32

typedef int (*parse_fn)(const char *, size_t, const fg_http1_limits_t *, fg_http1_head_t *);

static void check_slice(fg_str_t s, const char *buf, int rc)
{
    if (!s.base)
        return;
    if (s.base < buf || s.base + s.len > buf + rc)
        abort();
}

static void check_head(const fg_http1_head_t *h, const char *buf, int rc, size_t len, size_t cap)
{
    if ((size_t)rc > len || h->num_headers > cap)
        abort();
    check_slice(h->method, buf, rc);
    check_slice(h->target, buf, rc);
    check_slice(h->reason, buf, rc);
    check_slice(h->host, buf, rc);
    check_slice(h->upgrade, buf, rc);
    for (size_t i = 0; i < h->num_headers; i++) {
        if (h->headers[i].name.len == 0)
            abort();
        check_slice(h->headers[i].name, buf, rc);
        check_slice(h->headers[i].value, buf, rc);
    }
    if (h->content_length < -1 || h->content_length >= ((int64_t)1 << 62))
        abort();
    if (h->chunked && (!h->te_present || h->content_length != -1))
        abort();
    if (h->minor_version < 0 || h->minor_version > 9)
        abort();
}

/* Parse an exact-size copy of buf[0..n) so that any over-read is caught by ASan. */
static int parse_copy(parse_fn fn, const uint8_t *data, size_t n, const fg_http1_limits_t *lim,
                      fg_http1_head_t *h)
{
    char *copy = malloc(n ? n : 1);
    if (!copy)
        abort();
    memcpy(copy, data, n);
    int rc = fn(copy, n, lim, h);
    if (rc > 0)
        check_head(h, copy, rc, n, h->headers_cap);
    free(copy);
    return rc;
}

static void run(parse_fn fn, const uint8_t *data, size_t size, const fg_http1_limits_t *lim)
{
    fg_http_header_t hdrs[NHDR];
    fg_http1_head_t h = {.headers = hdrs, .headers_cap = NHDR};

    int full = fn((const char *)data, size, lim, &h);
    if (full > 0)
        check_head(&h, (const char *)data, full, size, NHDR);
    if (full == 0 || full < FG_HTTP1_ERR_NOT_IMPLEMENTED)
        abort();

    /* Every prefix when short, else a sample: quadratic work must stay bounded. */
    size_t step = size <= 512 ? 1 : size / 256;
    for (size_t i = 0; i <= size; i += step) {
        int rc = parse_copy(fn, data, i, lim, &h);
        if (rc > 0 && rc != full)
            abort();
        if (full > 0 && i >= (size_t)full && rc != full)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fg_http1_limits_t small = {.max_request_line = 64, .max_header_size = 256, .max_headers = 4};

    run(fg_http1_parse_request, data, size, NULL);
    run(fg_http1_parse_response, data, size, NULL);
    run(fg_http1_parse_request, data, size, &small);
    run(fg_http1_parse_response, data, size, &small);
    return 0;
}
