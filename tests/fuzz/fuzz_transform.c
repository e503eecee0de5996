/* libFuzzer target: request and response transforms (worker/http/transform.c). Input:
 * "TRANSFORMS\nTARGET\nName: value\n..." where TRANSFORMS is a route's "transforms" JSON array;
 * when the configuration loads, the request is transformed. Whatever the input: the upstream
 * path starts with '/', and no header name is empty and no header value carries CR, LF or NUL
 * (the transforms must never let a client or a capture inject a header). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/config.h"
#include "common/path.h"
#include "common/pool.h"
#include "worker/http/transform.h"

#define MAX_HEADERS 16

static void check_headers(const fg_headers_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].name.len == 0)
            abort();
        for (size_t k = 0; k < h->v[i].value.len; k++) {
            char c = h->v[i].value.base[k];
            if (c == '\r' || c == '\n' || c == '\0')
                abort();
        }
    }
}

/* The request of lines[1..]: target, then header lines; NULL when the target does not
 * normalise (the front end would have answered 400). */
static fg_request_t *request(fg_pool_t *pool, char *text, const fg_route_t *route)
{
    char *save = NULL, *target = strtok_r(text, "\n", &save);
    if (target == NULL)
        return NULL;
    size_t plen = strcspn(target, "?");
    char *path = fg_pool_alloc(pool, plen + 2);
    long n = path ? fg_path_normalize(target, plen, path) : -1;
    if (n <= 0)
        return NULL;
    fg_request_t *req = fg_pool_calloc(pool, sizeof(*req));
    fg_http_header_t *h = fg_pool_calloc(pool, MAX_HEADERS * sizeof(*h));
    if (req == NULL || h == NULL)
        abort();
    req->pool = pool;
    req->route = route;
    req->method = FG_STR_LIT("GET");
    req->target = fg_str(target);
    req->path = (fg_str_t){path, (size_t)n};
    req->query = target[plen] ? fg_str(target + plen + 1) : FG_STR_LIT("");
    req->host = FG_STR_LIT("gw.test");
    req->scheme = FG_STR_LIT("http");
    strcpy(req->client_ip, "192.0.2.1");
    strcpy(req->request_id, "fuzz");
    req->captures[0] = (fg_capture_t){FG_STR_LIT("rest"), {path + 1, (size_t)n - 1}};
    req->ncaptures = 1;
    h[0] = (fg_http_header_t){FG_STR_LIT("Host"), req->host};
    size_t nh = 1;
    for (char *l = strtok_r(NULL, "\n", &save); l && nh < MAX_HEADERS;
         l = strtok_r(NULL, "\n", &save)) {
        char *colon = strchr(l, ':');
        if (colon == NULL || colon == l)
            continue;
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        /* the HTTP/1.1 parser never hands over a field value with CR, LF or NUL */
        if (strpbrk(v, "\r") != NULL)
            continue;
        h[nh++] = (fg_http_header_t){{l, (size_t)(colon - l)}, fg_str(v)};
    }
    req->headers = h;
    req->nheaders = nh;
    return req;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);
    if (text == NULL)
        abort();
    char *nl = strchr(text, '\n');
    if (nl == NULL)
        goto out_text;
    *nl = '\0';
    json_t *tx = json_loads(text, 0, NULL);
    if (!json_is_array(tx))
        goto out_tx;
    json_t *doc =
        json_pack("{s:[{s:s, s:s}], s:[{s:s, s:{s:s}, s:s, s:O}], s:[{s:s, s:[{s:s, "
                  "s:s}]}]}",
                  "servers", "id", "s", "listen", "127.0.0.1:1", "routes", "id", "r", "match",
                  "path", "/{**rest}", "clusterId", "c", "transforms", tx, "clusters", "id", "c",
                  "destinations", "id", "d", "address", "http://127.0.0.1:1/base");
    char *conf = doc ? json_dumps(doc, 0) : NULL;
    char err[512];
    fg_config_t *cfg = conf ? fg_config_load_string("fuzz", conf, err, sizeof(err)) : NULL;
    if (cfg != NULL) {
        fg_pool_t *pool = fg_pool_new(16384);
        fg_request_t *req = request(pool, nl + 1, &cfg->routes[0]);
        if (req != NULL) {
            fg_outreq_t out;
            memset(&out, 0, sizeof(out));
            if (fg_transform_request(req, &cfg->clusters[0].destinations[0], &out) == 0) {
                if (out.path.len == 0 || out.path.base[0] != '/')
                    abort();
                check_headers(&out.headers);
            }
            fg_headers_t resp = {.pool = pool};
            fg_headers_add(&resp, FG_STR_LIT("X-Up"), FG_STR_LIT("1"));
            for (int status = 200; status <= 502; status += 302)
                if (fg_transform_response(req, status, &resp) == 0)
                    check_headers(&resp);
        }
        fg_pool_free(pool);
        fg_config_free(cfg);
    }
    free(conf);
    json_decref(doc);
out_tx:
    json_decref(tx);
out_text:
    free(text);
    return 0;
}
