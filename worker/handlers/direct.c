#include "worker/handlers/direct.h"

#include <string.h>

#include "worker/http/transform.h"

void fg_direct_handle(fg_request_t *req)
{
    const fg_route_t *r = req->route;
    fg_headers_t h;
    fg_headers_init(&h, req->pool, r->ndirect_headers + 1);
    for (size_t i = 0; i < r->ndirect_headers; i++)
        fg_headers_add(&h, fg_str(r->direct_headers[i].name), fg_str(r->direct_headers[i].value));
    fg_transform_response(req, r->direct_status, &h);
    /* The body is discarded: a direct answer does not depend on it. */
    fg_request_respond(req, r->direct_status, &h, r->direct_body ? r->direct_body : "",
                       r->direct_body_len);
}

static fg_str_t lookup(fg_request_t *req, fg_str_t name, int *found)
{
    *found = 1;
    if (fg_str_eq(name, FG_STR_LIT("scheme")))
        return req->scheme;
    if (fg_str_eq(name, FG_STR_LIT("host")))
        return req->host;
    if (fg_str_eq(name, FG_STR_LIT("path")))
        return req->path;
    for (size_t i = 0; i < req->ncaptures; i++)
        if (fg_str_ieq(req->captures[i].name, name))
            return req->captures[i].value;
    *found = 0;
    return FG_STR_NULL;
}

/* Expand tpl into out, or only measure it when out is NULL. Returns the length. */
static size_t expand(fg_request_t *req, const char *tpl, char *out)
{
    size_t n = 0;
    for (const char *p = tpl; *p;) {
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        if (close == NULL) {
            if (out)
                out[n] = *p;
            n++;
            p++;
            continue;
        }
        fg_str_t name = {p + 1, (size_t)(close - p - 1)};
        while (name.len && name.base[0] == '*') {
            name.base++;
            name.len--;
        }
        fg_str_t v;
        int found;
        if (fg_str_eq(name, FG_STR_LIT("query"))) {
            found = 1;
            v = FG_STR_NULL;
            if (req->query.len) {
                if (out)
                    out[n] = '?';
                n++;
                v = req->query;
            }
        } else {
            v = lookup(req, name, &found);
        }
        if (!found) {
            if (out)
                out[n] = *p;
            n++;
            p++;
            continue;
        }
        if (out && v.len > 0) /* an absent capture is an empty slice with no base */
            memcpy(out + n, v.base, v.len);
        n += v.len;
        p = close + 1;
    }
    return n;
}

/* Two passes, so that a variable used several times ("{path}...{path}") always fits. */
char *fg_redirect_expand(fg_request_t *req, const char *tpl)
{
    size_t len = expand(req, tpl, NULL);
    char *out = fg_pool_alloc(req->pool, len + 1);
    if (out == NULL)
        return NULL;
    expand(req, tpl, out);
    out[len] = '\0';
    return out;
}

void fg_redirect_handle(fg_request_t *req)
{
    const fg_route_t *r = req->route;
    char *loc = fg_redirect_expand(req, r->redirect_location);
    if (loc == NULL) {
        fg_request_error(req, 500, "internal_error", "cannot build the redirect location");
        return;
    }
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 2);
    fg_headers_add(&h, FG_STR_LIT("Location"), fg_str(loc));
    fg_transform_response(req, r->redirect_status, &h);
    fg_request_respond(req, r->redirect_status, &h, NULL, 0);
}
