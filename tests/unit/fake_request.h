/* Test support: a request as the HTTP/1.1 front end would build it, for the router and
 * transform tests. Include after cmocka.h. */
#ifndef FG_TEST_FAKE_REQUEST_H
#define FG_TEST_FAKE_REQUEST_H

#include <stdarg.h>
#include <string.h>

#include "common/path.h"
#include "common/pool.h"
#include "worker/http/request.h"

#define FAKE_MAX_HEADERS 32

/* A request from a method, a raw target ("/path?query"), a Host (NULL: none) and the
 * "name", "value" pairs in ap up to a NULL name; the path is normalised as the front end
 * does. Everything lives in pool. */
static inline fg_request_t *fake_request_va(fg_pool_t *pool, const char *method, const char *target,
                                            const char *host, va_list ap)
{
    fg_request_t *req = fg_pool_calloc(pool, sizeof(*req));
    assert_non_null(req);
    req->pool = pool;
    req->method = fg_pool_str(pool, fg_str(method));
    req->target = fg_pool_str(pool, fg_str(target));
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    char *path = fg_pool_alloc(pool, plen + 1);
    long n = fg_path_normalize(target, plen, path);
    assert_true(n > 0);
    req->path = (fg_str_t){path, (size_t)n};
    req->query = q ? fg_pool_str(pool, fg_str(q + 1)) : FG_STR_LIT("");
    req->host = fg_pool_str(pool, fg_str(host ? host : ""));
    req->scheme = FG_STR_LIT("http");
    fg_http_header_t *h = fg_pool_calloc(pool, FAKE_MAX_HEADERS * sizeof(*h));
    size_t nh = 0;
    if (host != NULL)
        h[nh++] = (fg_http_header_t){FG_STR_LIT("Host"), req->host};
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);
        assert_true(nh < FAKE_MAX_HEADERS);
        h[nh++] =
            (fg_http_header_t){fg_pool_str(pool, fg_str(name)), fg_pool_str(pool, fg_str(value))};
    }
    req->headers = h;
    req->nheaders = nh;
    return req;
}

#endif
