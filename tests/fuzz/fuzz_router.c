/* libFuzzer target: route templates and the router (tables/route_table.c,
 * tables/route_template.c, worker/http/router.c).
 * Input: "TEMPLATE\nHOST\nTARGET". The template goes through the loader as a route's
 * match.path; when it loads, the request is routed. A literal template must match its own
 * path; whatever matched, the route is the one configured, and every value it captured for a
 * constrained parameter satisfies the constraints (templates such as "/{id:int}",
 * "/{f}.{x:regex(^[a-z]+$)}" or "/{n:range(1,9)=5}" reach the parser and the matcher). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "common/config.h"
#include "common/path.h"
#include "tables/route_table.h"
#include "tables/route_template.h"
#include "worker/http/router.h"

static char *line(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    const uint8_t *stop = nl ? nl : end;
    char *s = strndup((const char *)*p, (size_t)(stop - *p));
    *p = nl ? nl + 1 : end;
    if (s == NULL)
        abort();
    return s;
}

static int ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

/* Every capture of a whole-segment parameter satisfies that parameter's constraints. */
static void check_captures(const compiled_t *c, const fg_request_t *req)
{
    if (req->ncaptures > FG_MAX_CAPTURES)
        abort();
    for (size_t i = 0; i < c->tpl.nsegs; i++) {
        const seg_t *s = &c->tpl.segs[i];
        if (s->kind == SEG_LITERAL || s->kind == SEG_COMPLEX)
            continue;
        for (size_t k = 0; k < req->ncaptures; k++)
            if (fg_str_eq(req->captures[k].name, s->text) &&
                !fg_route_constraints_ok(&s->p, req->captures[k].value))
                abort();
    }
}

static void route(fg_config_t *cfg, const char *tpl, const char *host, const char *target)
{
    size_t tlen = strcspn(target, "?");
    char *path = malloc(tlen + 2);
    if (path == NULL)
        abort();
    long n = fg_path_normalize(target, tlen, path);
    if (n > 0) {
        fg_request_t req;
        memset(&req, 0, sizeof(req));
        fg_http_header_t h = {FG_STR_LIT("Host"), fg_str(host)};
        req.method = FG_STR_LIT("GET");
        req.target = fg_str(target);
        req.path = (fg_str_t){path, (size_t)n};
        req.query = target[tlen] ? fg_str(target + tlen + 1) : FG_STR_LIT("");
        req.host = fg_str(host);
        req.scheme = FG_STR_LIT("http");
        req.headers = &h;
        req.nheaders = 1;
        const fg_route_t *r = fg_router_match(&cfg->servers[0], &req);
        if (r != NULL && strcmp(r->id, "r") != 0)
            abort();
        if (r != NULL)
            check_captures(r->compiled, &req);
        /* a template without parameters matches the same path, whatever the letter case
         * (an ASCII one: a UTF-8 literal matches its percent-encoded form, and front ends
         * refuse raw UTF-8 in a request target) */
        if (r == NULL && strchr(tpl, '{') == NULL && ascii(tpl) && (size_t)n == strlen(tpl) &&
            strncasecmp(path, tpl, (size_t)n) == 0 && tpl[n - 1] != '/')
            abort();
    }
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    char *tpl = line(&p, end), *host = line(&p, end), *target = line(&p, end);
    json_t *doc = json_pack("{s:[{s:s, s:s}], s:[{s:s, s:{s:s}, s:{s:i}}]}", "servers", "id", "s",
                            "listen", "127.0.0.1:1", "routes", "id", "r", "match", "path", tpl,
                            "direct", "status", 200);
    char *text = doc ? json_dumps(doc, 0) : NULL;
    char err[512];
    fg_config_t *cfg = text ? fg_config_load_string("fuzz", text, err, sizeof(err)) : NULL;
    if (cfg != NULL) {
        if (fg_route_table_build(cfg, err, sizeof(err)) == 0)
            route(cfg, tpl, host, target);
        fg_route_table_free(cfg);
        fg_config_free(cfg);
    }
    free(text);
    json_decref(doc);
    free(tpl);
    free(host);
    free(target);
    return 0;
}
