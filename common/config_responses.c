/* Configuration loader: the keys that shape the gateway's own answers. "serverHeader",
 * "errorPages" and "exposeAccessListIds" at the top level set the defaults; a server may set
 * each again. errorPages files are read here, once, so that a worker never touches the disk
 * for an error and a missing or oversized file fails the load. Schema: docs/config.md. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/config_impl.h"

#define DEFAULT_SERVER_HEADER "fastgateway"
#define SERVER_HEADER_MAX 256 /* a product token and version or two, with a comment */

/* "serverHeader": true (the default value), false (none) or the field value to send. */
static int load_server_header(fg_config_ctx_t *c, const json_t *obj, char **out)
{
    json_t *v = json_object_get(obj, "serverHeader");
    if (v == NULL)
        return 0;
    free(*out);
    *out = NULL;
    if (json_is_true(v)) {
        *out = fg_config_xstrdup(DEFAULT_SERVER_HEADER);
        return 0;
    }
    if (json_is_false(v))
        return 0;
    if (!json_is_string(v))
        return fg_config_fail(c, "serverHeader", "expected true, false or a string, got %s",
                              fg_config_type_name(v));
    const char *s = json_string_value(v);
    size_t len = strlen(s);
    if (len > SERVER_HEADER_MAX)
        return fg_config_fail(c, "serverHeader", "%zu bytes, more than the %d allowed", len,
                              SERVER_HEADER_MAX);
    /* RFC 9110 10.2.4: product tokens and comments; at least a field value without CR/LF, and
     * a field value has no leading or trailing whitespace (RFC 9110 5.5). */
    if (*s == '\0' || !fg_config_is_field_value(s) || s[0] == ' ' || s[0] == '\t' ||
        s[len - 1] == ' ' || s[len - 1] == '\t')
        return fg_config_fail(c, "serverHeader",
                              "\"%s\" is not a valid field value (use false to send none)", s);
    *out = fg_config_xstrdup(s);
    return 0;
}

/* The status an errorPages key names: "404" (400..599) or "4xx"/"5xx" (class 4 or 5). */
static int parse_status_key(const char *k)
{
    if (strlen(k) != 3)
        return -1;
    if ((k[0] == '4' || k[0] == '5') && k[1] == 'x' && k[2] == 'x')
        return k[0] - '0';
    for (int i = 0; i < 3; i++)
        if (k[i] < '0' || k[i] > '9')
            return -1;
    int st = atoi(k);
    return st >= 400 && st <= 599 ? st : -1;
}

/* Read the whole file at path (bounded by FG_ERROR_PAGE_MAX) into p->body. */
static int read_page(fg_config_ctx_t *c, const char *key, fg_error_page_t *p)
{
    /* O_NONBLOCK: a FIFO named by mistake must fail the S_ISREG check, not hang the load. */
    int fd = open(p->file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd == -1)
        return fg_config_fail(c, key, "cannot open \"%s\": %s", p->file, strerror(errno));
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) == -1) {
        fg_config_fail(c, key, "cannot stat \"%s\": %s", p->file, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        fg_config_fail(c, key, "\"%s\" is not a regular file", p->file);
        goto out_close;
    }
    if (st.st_size > FG_ERROR_PAGE_MAX) {
        fg_config_fail(c, key, "\"%s\" is %lld bytes, more than the %d allowed", p->file,
                       (long long)st.st_size, FG_ERROR_PAGE_MAX);
        goto out_close;
    }
    p->body = fg_config_xcalloc(1, (size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, p->body + got, (size_t)st.st_size - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            fg_config_fail(c, key, "cannot read \"%s\": %s", p->file,
                           n == 0 ? "file shrank while read" : strerror(errno));
            goto out_close;
        }
        got += (size_t)n;
    }
    p->body_len = got;
    rc = 0;
out_close:
    close(fd);
    return rc;
}

/* A redirect target: an absolute path or an http(s) URI, sent as Location (RFC 9110 10.2.2). */
static int valid_location(const char *s)
{
    if (!fg_config_is_field_value(s) || strpbrk(s, " \\") != NULL)
        return 0;
    /* "//host/x" is a network-path reference (RFC 3986 4.2): another site, not a path. A
     * backslash is no URI character, and browsers read it as "/" ("/\\host" goes off-site). */
    if (s[0] == '/')
        return s[1] != '/';
    return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

/* Resolve file against the configuration's directory and read it; key names it in messages. */
static int load_file(fg_config_ctx_t *c, const char *key, const char *file, fg_error_page_t *p)
{
    if (*file == '\0')
        return fg_config_fail(c, key, "the file name is empty");
    p->file = fg_config_abs_path(c, file);
    return read_page(c, key, p);
}

/* {"route": ID, "status": CODE}: the id is resolved once routes are loaded
 * (fg_config_resolve_error_pages); "status" overrides the status the client sees. */
static int load_route_target(fg_config_ctx_t *c, json_t *v, fg_error_page_t *p)
{
    long long st = 0;
    if (json_object_get(v, "contentType") != NULL)
        return fg_config_fail(c, "contentType", "applies to \"file\" only");
    if (fg_config_get_int(c, v, "status", 200, 599, &st) < 0)
        return -1;
    p->route_status = (int)st;
    if (*p->route_id == '\0')
        return fg_config_fail(c, "route", "the route id is empty");
    return 0;
}

/* {"file": FILE, "contentType": TYPE}, {"redirect": LOCATION} or {"route": ID, "status": CODE},
 * under the path of its key. */
static int load_page_object(fg_config_ctx_t *c, json_t *v, fg_error_page_t *p)
{
    static const char *const keys[] = {"file", "contentType", "redirect", "route", "status", NULL};
    if (fg_config_check_keys(c, v, keys) < 0 ||
        fg_config_get_string(c, v, "redirect", 1, &p->redirect) < 0 ||
        fg_config_get_string(c, v, "route", 1, &p->route_id) < 0 ||
        fg_config_get_string(c, v, "contentType", 1, &p->content_type) < 0)
        return -1;
    json_t *f = json_object_get(v, "file");
    if (f != NULL && !json_is_string(f))
        return fg_config_fail(c, "file", "expected a string, got %s", fg_config_type_name(f));
    if ((f != NULL) + (p->redirect != NULL) + (p->route_id != NULL) != 1)
        return fg_config_fail(c, NULL,
                              "expected exactly one of \"file\", \"redirect\" and \"route\"");
    if (p->route_id != NULL)
        return load_route_target(c, v, p);
    if (json_object_get(v, "status") != NULL)
        return fg_config_fail(c, "status", "applies to \"route\" only");
    if (p->content_type && !fg_config_is_field_value(p->content_type))
        return fg_config_fail(c, "contentType", "\"%s\" is not a valid field value",
                              p->content_type);
    if (p->redirect == NULL)
        return load_file(c, "file", json_string_value(f), p);
    if (p->content_type)
        return fg_config_fail(c, "contentType", "applies to \"file\" only");
    if (!valid_location(p->redirect))
        return fg_config_fail(c, "redirect", "\"%s\" is not an absolute path or an http(s) URI",
                              p->redirect);
    return 0;
}

/* One value: "FILE" or an object (load_page_object). */
static int load_page(fg_config_ctx_t *c, const char *key, json_t *v, fg_error_page_t *p)
{
    if (json_is_string(v))
        return load_file(c, key, json_string_value(v), p);
    if (!json_is_object(v))
        return fg_config_fail(c, key, "expected a file name or an object, got %s",
                              fg_config_type_name(v));
    size_t mark = fg_config_push_key(c, key);
    int rc = load_page_object(c, v, p);
    fg_config_pop(c, mark);
    return rc;
}

static int load_pages(fg_config_ctx_t *c, const json_t *obj, fg_responses_config_t *r)
{
    json_t *pages = json_object_get(obj, "errorPages");
    if (pages == NULL)
        return 0;
    if (!json_is_object(pages))
        return fg_config_fail(c, "errorPages", "expected an object, got %s",
                              fg_config_type_name(pages));
    r->error_pages = fg_config_xcalloc(json_object_size(pages) + 1, sizeof(fg_error_page_t));
    size_t mark = fg_config_push_key(c, "errorPages");
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(pages, k, v)
    {
        fg_error_page_t *p = &r->error_pages[r->nerror_pages++];
        p->status = parse_status_key(k);
        if (p->status < 0) {
            rc = fg_config_fail(c, NULL,
                                "\"%s\" is not a status 400..599 or a class \"4xx\" / \"5xx\"", k);
            break;
        }
        if (load_page(c, k, v, p) < 0) {
            rc = -1;
            break;
        }
    }
    fg_config_pop(c, mark);
    return rc;
}

int fg_config_load_responses(fg_config_ctx_t *c, const json_t *root)
{
    fg_responses_config_t *r = &c->cfg->responses;
    r->server_header = fg_config_xstrdup(DEFAULT_SERVER_HEADER);
    if (load_server_header(c, root, &r->server_header) < 0 ||
        fg_config_get_bool(c, root, "exposeAccessListIds", &r->expose_acl_ids) < 0)
        return -1;
    return load_pages(c, root, r);
}

int fg_config_load_server_responses(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    const fg_responses_config_t *g = &c->cfg->responses;
    fg_responses_config_t *r = &s->responses;
    r->server_header = g->server_header ? fg_config_xstrdup(g->server_header) : NULL;
    r->expose_acl_ids = g->expose_acl_ids;
    if (load_server_header(c, srv, &r->server_header) < 0 ||
        fg_config_get_bool(c, srv, "exposeAccessListIds", &r->expose_acl_ids) < 0)
        return -1;
    return load_pages(c, srv, r);
}

void fg_config_free_responses(fg_responses_config_t *r)
{
    for (size_t i = 0; i < r->nerror_pages; i++) {
        free(r->error_pages[i].file);
        free(r->error_pages[i].body);
        free(r->error_pages[i].content_type);
        free(r->error_pages[i].redirect);
        free(r->error_pages[i].route_id);
    }
    free(r->error_pages);
    free(r->server_header);
    memset(r, 0, sizeof(*r));
}

/* ---- "route" targets, resolved once routes are loaded ---- */

static int attached(const fg_route_t *rt, const char *server_id)
{
    if (rt->nserver_ids == 0)
        return 1;
    for (size_t i = 0; i < rt->nserver_ids; i++)
        if (strcmp(rt->server_ids[i], server_id) == 0)
            return 1;
    return 0;
}

/* Point p at its route; srv is the server whose entry it is, or NULL for a top-level entry
 * (which every server may use, so the route must be attached to every server). The caller has
 * pushed the path down to the entry's key. */
static int resolve_page(fg_config_ctx_t *c, const fg_server_t *srv, fg_error_page_t *p)
{
    const fg_config_t *cfg = c->cfg;
    const fg_route_t *rt = NULL;
    for (size_t i = 0; i < cfg->nroutes && rt == NULL; i++)
        if (strcmp(cfg->routes[i].id, p->route_id) == 0)
            rt = &cfg->routes[i];
    if (rt == NULL)
        return fg_config_fail(c, "route", "no route has the id \"%s\"", p->route_id);
    if (rt->kind == FG_ROUTE_REDIRECT)
        return fg_config_fail(
            c, "route", "route \"%s\" is a redirect route (use {\"redirect\": ...})", p->route_id);
    for (size_t i = 0; i < cfg->nservers; i++) {
        const fg_server_t *s = srv ? srv : &cfg->servers[i];
        if (!attached(rt, s->id))
            return fg_config_fail(c, "route", "route \"%s\" is not attached to server \"%s\"",
                                  p->route_id, s->id);
        if (srv)
            break;
    }
    p->route = rt;
    return 0;
}

static int resolve_pages(fg_config_ctx_t *c, const fg_server_t *srv, fg_responses_config_t *r)
{
    size_t mark = fg_config_push_key(c, "errorPages");
    int rc = 0;
    char key[16];
    for (size_t i = 0; rc == 0 && i < r->nerror_pages; i++) {
        fg_error_page_t *p = &r->error_pages[i];
        if (p->route_id == NULL)
            continue;
        if (p->status < 10)
            snprintf(key, sizeof(key), "%dxx", p->status);
        else
            snprintf(key, sizeof(key), "%d", p->status);
        size_t m = fg_config_push_key(c, key);
        rc = resolve_page(c, srv, p);
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return rc;
}

int fg_config_resolve_error_pages(fg_config_ctx_t *c)
{
    fg_config_t *cfg = c->cfg;
    if (resolve_pages(c, NULL, &cfg->responses) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "servers");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < cfg->nservers; i++) {
        size_t m = fg_config_push_index(c, i);
        rc = resolve_pages(c, &cfg->servers[i], &cfg->servers[i].responses);
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return rc;
}

static const fg_error_page_t *find_page(const fg_responses_config_t *r, int status)
{
    const fg_error_page_t *cls = NULL;
    for (size_t i = 0; i < r->nerror_pages; i++) {
        if (r->error_pages[i].status == status)
            return &r->error_pages[i];
        if (r->error_pages[i].status == status / 100)
            cls = &r->error_pages[i];
    }
    return cls;
}

const fg_error_page_t *fg_config_error_page(const fg_config_t *cfg, const fg_server_t *s,
                                            int status)
{
    const fg_error_page_t *p = s ? find_page(&s->responses, status) : NULL;
    if (p == NULL && cfg != NULL)
        p = find_page(&cfg->responses, status);
    return p;
}
