/* The admin API (docs/admin.md): authentication, the REST resources over the configuration, the
 * runtime views of the status socket, and the dashboard's files. Runs in the master's loop; a
 * change is validated by the configuration loader, written to the state file atomically and
 * applied by the ordinary reload, whose end answers the request. */
#include "master/admin_api.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/tls.h"
#include "common/xxhash.h"
#include "master/master_impl.h"
#include "master/metrics_view.h"

#define MAX_SEGS 8

typedef struct {
    master_t *m;
    fg_admin_conn_t *c;
    const fg_admin_req_t *req;
    const fg_admin_config_t *a;
    char *seg[MAX_SEGS]; /* decoded path segments after "/api" */
    int nseg;
    json_t *state; /* the API state document */
    json_t *eff;   /* the configuration file with the state merged */
    char doc_etag[24];
} api_t;

static void fail(api_t *x, int status, const char *msg)
{
    fg_admin_respond_json(x->c, status, NULL, json_pack("{s:s}", "error", msg));
}

static void etag_of(const json_t *v, char out[24])
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    uint64_t h = s ? fg_xxh64(s, strlen(s), 0) : 0;
    free(s);
    snprintf(out, 24, "\"%016" PRIx64 "\"", h);
}

/* ---- authentication ---- */

static int bearer_ok(const fg_admin_config_t *a, const char *auth)
{
    if (a->token == NULL || auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    const char *t = auth + 7;
    while (*t == ' ')
        t++;
    return fg_admin_token_equal(t, strlen(t), a->token, a->token_len);
}

/* 1 when Host names the loopback: 127.x.x.x, [::1] or localhost, with or without a port. */
static int loopback_host(const char *host)
{
    if (host == NULL)
        return 0;
    size_t n = strlen(host);
    const char *colon = strrchr(host, ':');
    if (colon && host[0] != '[')
        n = (size_t)(colon - host);
    else if (host[0] == '[')
        return strncmp(host, "[::1]", 5) == 0 && (host[5] == '\0' || host[5] == ':');
    if (n == 9 && strncasecmp(host, "localhost", 9) == 0)
        return 1;
    return n >= 7 && n < 16 && strncmp(host, "127.", 4) == 0 && strspn(host, "0123456789.") >= n;
}

/* Anonymous access is also held to a Host that names the loopback: a web page whose name
 * a hostile DNS server re-points at 127.0.0.1 sends its own name, and is refused. */
static int authorized(const fg_admin_config_t *a, const fg_admin_req_t *req, int metrics)
{
    if (req->client_cert || bearer_ok(a, req->authorization))
        return 1;
    return (a->anonymous_writes || (metrics && a->anonymous_metrics)) &&
           (!a->loopback || loopback_host(req->host));
}

/* ---- paths ---- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Decode %XX in place; -1 for a bad escape or a NUL. */
static int pct_decode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        int hi = hexval(r[1]), lo = hi < 0 ? -1 : hexval(r[2]);
        if (lo < 0 || (hi == 0 && lo == 0))
            return -1;
        *w++ = (char)(hi * 16 + lo);
        r += 2;
    }
    *w = '\0';
    return 0;
}

/* Split "/api/a/b" into x->seg = {"a", "b"}; -1 when malformed. */
static int split(api_t *x, char *path)
{
    char *save = NULL;
    for (char *s = strtok_r(path + 4, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (x->nseg == MAX_SEGS || pct_decode(s) < 0)
            return -1;
        x->seg[x->nseg++] = s;
    }
    return 0;
}

/* ---- preconditions (RFC 9110 13.1.1) ---- */

/* 0 when the If-Match list names `etag` (or the document's), or is "*" and the target exists;
 * else an HTTP status: 428 without If-Match (RFC 6585 3), 412 on a mismatch. */
static int precondition(const api_t *x, const char *etag, int exists)
{
    const char *im = x->req->if_match;
    if (im == NULL)
        return 428;
    if (strcmp(im, "*") == 0)
        return exists ? 0 : 412;
    size_t n = etag ? strlen(etag) : 0, dn = strlen(x->doc_etag);
    for (const char *p = im; *p;) {
        p += strspn(p, " ,\t");
        size_t len = strcspn(p, ",");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if ((etag && len == n && memcmp(p, etag, n) == 0) ||
            (len == dn && memcmp(p, x->doc_etag, dn) == 0))
            return 0;
        p += strcspn(p, ",");
    }
    return 412;
}

/* ---- the state file ---- */

/* Write state to its file so that a crash leaves the old or the new file, never a torn one:
 * a temporary file in the same directory, fsync, rename over, fsync of the directory. */
static int write_state(const char *file, const json_t *state, char *err, size_t errlen)
{
    char tmp[4096], dir[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    snprintf(dir, sizeof(dir), "%s", file);
    char *s = json_dumps(state, JSON_INDENT(2) | JSON_SORT_KEYS);
    int fd = s ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (fd == -1)
        goto fail;
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = write(fd, s + off, len - off);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1)
            goto fail_close;
        off += (size_t)n;
    }
    if (write(fd, "\n", 1) != 1 || fsync(fd) == -1)
        goto fail_close;
    close(fd);
    if (rename(tmp, file) == -1)
        goto fail;
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        fsync(dfd);
        close(dfd);
    }
    free(s);
    return 0;
fail_close:
    close(fd);
fail:
    snprintf(err, errlen, "%s: %s", s ? file : "state", s ? strerror(errno) : "out of memory");
    unlink(tmp);
    free(s);
    return -1;
}

/* Validate `state` (stolen) with the loader, write it, reload; the answer follows the reload. */
static void commit(api_t *x, json_t *state, int status, const char *etag, json_t *answer)
{
    char err[1024];
    fg_config_t *cfg = fg_config_load_state(x->m->conf_file, state, err, sizeof(err));
    /* the certificates as -t reads them: a change the reload would refuse is not written */
    int bad = cfg == NULL || fg_tls_build(cfg, NULL, 0, NULL, NULL, err, sizeof(err)) < 0;
    if (cfg != NULL)
        fg_tls_free(cfg);
    fg_config_free(cfg);
    if (bad) {
        json_decref(state);
        json_decref(answer);
        fail(x, 400, err);
        return;
    }
    int rc = write_state(x->a->state_file, state, err, sizeof(err));
    json_decref(state);
    if (rc < 0) {
        json_decref(answer);
        fg_log_error("admin: %s", err);
        fail(x, 500, err);
        return;
    }
    fg_log_notice("admin: %s %s changed %s; reloading", x->req->method, x->req->path,
                  x->a->state_file);
    uint64_t ticket = fg_master_request_reload(x->m);
    if (ticket == 0) {
        json_decref(answer);
        fail(x, 503, "the master is stopping");
        return;
    }
    fg_admin_defer(x->c, ticket, status, etag, answer);
}

/* state[kind] gets item in place of the entry of the same id, or appended; the id leaves
 * state.deleted[kind]. */
static void state_put(json_t *state, const char *kind, json_t *item)
{
    const char *id = json_string_value(json_object_get(item, "id"));
    json_t *del = json_object_get(json_object_get(state, "deleted"), kind);
    long at = -1;
    for (size_t i = 0; i < json_array_size(del); i++)
        if (strcmp(json_string_value(json_array_get(del, i)), id) == 0)
            at = (long)i;
    if (at >= 0)
        json_array_remove(del, (size_t)at);
    json_t *arr = json_object_get(state, kind);
    if (arr == NULL) {
        arr = json_array();
        json_object_set_new(state, kind, arr);
    }
    at = fg_config_admin_find(arr, id);
    if (at >= 0)
        json_array_set(arr, (size_t)at, item);
    else
        json_array_append(arr, item);
}

static void state_delete(json_t *state, const char *kind, const char *id)
{
    json_t *arr = json_object_get(state, kind);
    long at = fg_config_admin_find(arr, id);
    if (at >= 0)
        json_array_remove(arr, (size_t)at);
    json_t *deleted = json_object_get(state, "deleted");
    if (deleted == NULL) {
        deleted = json_object();
        json_object_set_new(state, "deleted", deleted);
    }
    json_t *del = json_object_get(deleted, kind);
    if (del == NULL) {
        del = json_array();
        json_object_set_new(deleted, kind, del);
    }
    json_array_append_new(del, json_string(id));
}

/* ---- resources ---- */

static const char *kind_of(const char *name)
{
    for (const char *const *k = fg_config_admin_kinds; *k; k++)
        if (strcmp(*k, name) == 0)
            return *k;
    return NULL;
}

static json_t *body_object(api_t *x)
{
    const char *ct = x->req->content_type;
    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0) {
        fail(x, 415, "the body must be application/json");
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(x->req->body, x->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(v)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "body: %s", v ? "expected a JSON object" : jerr.text);
        json_decref(v);
        fail(x, 400, msg);
        return NULL;
    }
    return v;
}

/* A body's "id" must be absent or equal the URL's; it is set to the URL's. */
static int body_id(api_t *x, json_t *body, const char *id)
{
    const char *bid = json_string_value(json_object_get(body, "id"));
    if (json_object_get(body, "id") && (bid == NULL || strcmp(bid, id) != 0)) {
        fail(x, 400, "body.id differs from the id in the URL");
        return -1;
    }
    json_object_set_new(body, "id", json_string(id));
    return 0;
}

static void answer_item(api_t *x, json_t *item)
{
    char et[24];
    etag_of(item, et);
    fg_admin_respond_json(x->c, 200, et, json_incref(item));
}

/* The new state with item in place; answers 200/201 with item once reloaded. */
static void put_and_commit(api_t *x, const char *kind, json_t *item, int status)
{
    char et[24];
    etag_of(item, et);
    json_t *state = json_deep_copy(x->state);
    state_put(state, kind, item);
    commit(x, state, status, et, json_pack("{s:O}", "item", item));
}

static int check_write(api_t *x, const char *etag, int exists)
{
    if (x->a->state_file == NULL) {
        fail(x, 409,
             "admin.stateFile is not configured: the API cannot change the "
             "configuration");
        return -1;
    }
    int st = precondition(x, etag, exists);
    if (st == 428)
        fail(x, 428, "If-Match is required: send the ETag of the resource or the document");
    else if (st == 412)
        fail(x, 412, "the resource changed since its ETag was read");
    return st ? -1 : 0;
}

static void collection(api_t *x, const char *kind)
{
    const char *method = x->req->method;
    json_t *arr = json_object_get(x->eff, kind);
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
        fg_admin_respond_json(x->c, 200, x->doc_etag,
                              json_pack("{s:O}", "items", arr ? arr : json_array()));
        return;
    }
    if (strcmp(method, "POST") != 0) {
        fg_http_server_respond(x->c, 405, "text/plain", NULL, "Allow: GET, HEAD, POST\r\n", NULL);
        return;
    }
    json_t *body = body_object(x);
    const char *id = json_string_value(json_object_get(body, "id"));
    if (body && id == NULL)
        fail(x, 400, "body.id: a string id is required");
    else if (body && fg_config_admin_find(arr, id) >= 0)
        fail(x, 409, "an entry with this id exists: use PUT on it");
    else if (body && check_write(x, NULL, 1) == 0)
        put_and_commit(x, kind, body, 201);
    json_decref(body);
}

static void item(api_t *x, const char *kind, const char *id)
{
    const char *method = x->req->method;
    json_t *arr = json_object_get(x->eff, kind);
    long at = fg_config_admin_find(arr, id);
    json_t *cur = at >= 0 ? json_array_get(arr, (size_t)at) : NULL;
    char et[24];
    if (cur)
        etag_of(cur, et);
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
        if (cur == NULL)
            fail(x, 404, "no such id");
        else
            answer_item(x, cur);
        return;
    }
    if (strcmp(method, "PUT") == 0) {
        json_t *body = body_object(x);
        if (body && body_id(x, body, id) == 0 && check_write(x, cur ? et : NULL, cur != NULL) == 0)
            put_and_commit(x, kind, body, cur ? 200 : 201);
        json_decref(body);
        return;
    }
    if (strcmp(method, "DELETE") == 0) {
        if (cur == NULL) {
            fail(x, 404, "no such id");
            return;
        }
        if (check_write(x, et, 1) < 0)
            return;
        json_t *state = json_deep_copy(x->state);
        state_delete(state, kind, id);
        commit(x, state, 200, NULL, json_pack("{s:s}", "deleted", id));
        return;
    }
    fg_http_server_respond(x->c, 405, "text/plain", NULL, "Allow: GET, HEAD, PUT, DELETE\r\n",
                           NULL);
}

/* The list at parent[key] of a copy of the parent entry, for nested resources (a cluster's
 * destinations, an access-control list's entries). */
static json_t *parent_copy(api_t *x, const char *kind, const char *id, char et[24])
{
    long at = fg_config_admin_find(json_object_get(x->eff, kind), id);
    if (at < 0) {
        fail(x, 404, "no such id");
        return NULL;
    }
    json_t *p = json_array_get(json_object_get(x->eff, kind), (size_t)at);
    etag_of(p, et);
    return json_deep_copy(p);
}

static json_t *child_list(json_t *parent, const char *key)
{
    json_t *l = json_object_get(parent, key);
    if (!json_is_array(l)) {
        l = json_array();
        json_object_set_new(parent, key, l);
    }
    return l;
}

static void destinations(api_t *x, const char *cid, const char *did)
{
    char pet[24], et[24];
    json_t *cl = parent_copy(x, "clusters", cid, pet);
    if (cl == NULL)
        return;
    json_t *list = child_list(cl, "destinations");
    const char *method = x->req->method;
    long at = did ? fg_config_admin_find(list, did) : -1;
    json_t *cur = at >= 0 ? json_array_get(list, (size_t)at) : NULL;
    if (cur)
        etag_of(cur, et);
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (get && did == NULL) {
        fg_admin_respond_json(x->c, 200, pet, json_pack("{s:O}", "items", list));
    } else if (get || (did && strcmp(method, "DELETE") == 0)) {
        if (cur == NULL)
            fail(x, 404, "no such destination");
        else if (get)
            answer_item(x, cur);
        else if (check_write(x, et, 1) == 0) {
            json_array_remove(list, (size_t)at);
            put_and_commit(x, "clusters", cl, 200);
        }
    } else if ((did && strcmp(method, "PUT") == 0) || (!did && strcmp(method, "POST") == 0)) {
        json_t *body = body_object(x);
        const char *id = did ? did : json_string_value(json_object_get(body, "id"));
        if (body && id == NULL)
            fail(x, 400, "body.id: a string id is required");
        else if (body && !did && fg_config_admin_find(list, id) >= 0)
            fail(x, 409, "a destination with this id exists: use PUT on it");
        else if (body && body_id(x, body, id) == 0 && check_write(x, cur ? et : pet, 1) == 0) {
            if (cur)
                json_array_set(list, (size_t)at, body);
            else
                json_array_append(list, body);
            put_and_commit(x, "clusters", cl, cur ? 200 : 201);
        }
        json_decref(body);
    } else {
        fg_http_server_respond(x->c, 405, "text/plain", NULL, NULL, NULL);
    }
    json_decref(cl);
}

/* An access-control list's "entries" (addresses and CIDRs), persisted like any change. */
static void acl_entries(api_t *x, const char *id, const char *entry)
{
    char pet[24];
    json_t *l = parent_copy(x, "accessControl", id, pet);
    if (l == NULL)
        return;
    json_t *list = child_list(l, "entries");
    const char *method = x->req->method;
    long at = -1;
    for (size_t i = 0; entry && i < json_array_size(list); i++)
        if (json_string_value(json_array_get(list, i)) &&
            strcmp(json_string_value(json_array_get(list, i)), entry) == 0)
            at = (long)i;
    if (!entry && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
        fg_admin_respond_json(x->c, 200, pet, json_pack("{s:O}", "items", list));
    } else if (!entry && strcmp(method, "POST") == 0) {
        json_t *body = body_object(x);
        const char *e = json_string_value(json_object_get(body, "entry"));
        if (body && e == NULL)
            fail(x, 400, "body.entry: an address or CIDR string is required");
        else if (body && check_write(x, pet, 1) == 0) {
            json_array_append_new(list, json_string(e));
            put_and_commit(x, "accessControl", l, 201);
        }
        json_decref(body);
    } else if (entry && strcmp(method, "DELETE") == 0) {
        if (at < 0)
            fail(x, 404, "no such entry");
        else if (check_write(x, pet, 1) == 0) {
            json_array_remove(list, (size_t)at);
            put_and_commit(x, "accessControl", l, 200);
        }
    } else {
        fg_http_server_respond(x->c, 405, "text/plain", NULL, NULL, NULL);
    }
    json_decref(l);
}

/* ---- runtime views and changes (the status socket's commands) ---- */

static json_t *run_show(master_t *m, const char *name)
{
    for (const fg_status_cmd_t *cmd = fg_master_status_cmds; cmd->name; cmd++)
        if (strcmp(cmd->name, name) == 0)
            return cmd->fn(m);
    return NULL;
}

static json_t *run_args(master_t *m, const char *name, const char *args)
{
    for (const fg_status_args_cmd_t *cmd = fg_master_status_args_cmds; cmd->name; cmd++)
        if (strcmp(cmd->name, name) == 0)
            return cmd->fn(m, args);
    return NULL;
}

/* A runtime change answers {"error": ...} on refusal: 400 then. */
static void runtime_answer(api_t *x, json_t *doc)
{
    int bad = doc == NULL || json_object_get(doc, "error") != NULL;
    fg_admin_respond_json(x->c, doc == NULL ? 500 : bad ? 400 : 200, NULL, doc);
}

/* PUT /api/clusters/C/destinations/D/state {"state": "ready|drain|maint"}: no reload. */
static void destination_state(api_t *x, const char *cid, const char *did)
{
    if (strcmp(x->req->method, "PUT") != 0) {
        fg_http_server_respond(x->c, 405, "text/plain", NULL, "Allow: PUT\r\n", NULL);
        return;
    }
    json_t *body = body_object(x);
    const char *st = json_string_value(json_object_get(body, "state"));
    if (body && st == NULL) {
        fail(x, 400, "body.state: \"ready\", \"drain\" or \"maint\" is required");
    } else if (body) {
        char args[512];
        snprintf(args, sizeof(args), "%s/%s state %s", cid, did, st);
        runtime_answer(x, run_args(x->m, "set destination", args));
    }
    json_decref(body);
}

/* POST/DELETE /api/accessControl/L/dynamic[/ENTRY]: the runtime entries of `add acl`. */
static void acl_dynamic(api_t *x, const char *id, const char *entry)
{
    char args[512];
    int add = strcmp(x->req->method, "POST") == 0 && entry == NULL;
    if (!add && !(strcmp(x->req->method, "DELETE") == 0 && entry)) {
        runtime_answer(x, run_show(x->m, "show acl"));
        return;
    }
    json_t *body = add ? body_object(x) : NULL;
    if (add && body == NULL)
        return;
    const char *e = add ? json_string_value(json_object_get(body, "entry")) : entry;
    if (e == NULL) {
        fail(x, 400, "body.entry: an address or CIDR string is required");
    } else {
        snprintf(args, sizeof(args), "%s %s", id, e);
        runtime_answer(x, run_args(x->m, add ? "add acl" : "del acl", args));
    }
    json_decref(body);
}

static const struct {
    const char *name, *cmd;
} views[] = {
    {"status", "show info"},
    {"workers", "show workers"},
    {"stats", "show stat"},
    {"health", "show servers"},
    {"ratelimitStats", "show ratelimits"},
    {"aclStats", "show acl"},
    {"abnormal", "show abnormal"},
    {"shm", "show shm"},
    {"certificateStatus", "show certificates"},
};

static int runtime_view(api_t *x)
{
    if (x->nseg != 1)
        return 0;
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
        if (strcmp(x->seg[0], views[i].name) == 0) {
            if (strcmp(x->req->method, "GET") != 0 && strcmp(x->req->method, "HEAD") != 0)
                fg_http_server_respond(x->c, 405, "text/plain", NULL, "Allow: GET, HEAD\r\n", NULL);
            else
                runtime_answer(x, run_show(x->m, views[i].cmd));
            return 1;
        }
    }
    return 0;
}

/* ---- dispatch ---- */

static int load_docs(api_t *x)
{
    char err[1024];
    x->state = x->a->state_file ? fg_config_admin_read_state(x->a->state_file, err, sizeof(err))
                                : json_object();
    if (x->state != NULL)
        x->eff = fg_config_merged_json(x->m->conf_file, x->state, err, sizeof(err));
    if (x->eff == NULL) {
        fail(x, 500, err);
        return -1;
    }
    etag_of(x->state, x->doc_etag);
    return 0;
}

static void reload_now(api_t *x)
{
    if (strcmp(x->req->method, "POST") != 0) {
        fg_http_server_respond(x->c, 405, "text/plain", NULL, "Allow: POST\r\n", NULL);
        return;
    }
    uint64_t ticket = fg_master_request_reload(x->m);
    if (ticket == 0)
        fail(x, 503, "the master is stopping");
    else
        fg_admin_defer(x->c, ticket, 200, NULL, json_object());
}

/* POST /api/acme/check, /api/ocsp/update: the status command of that name. */
static void job_now(api_t *x, const char *command)
{
    if (strcmp(x->req->method, "POST") != 0) {
        fg_http_server_respond(x->c, 405, "text/plain", NULL, "Allow: POST\r\n", NULL);
        return;
    }
    runtime_answer(x, run_show(x->m, command));
}

static void documents(api_t *x, const char *which)
{
    json_t *doc = strcmp(which, "config") == 0 ? x->eff : x->state;
    if (strcmp(x->req->method, "GET") != 0 && strcmp(x->req->method, "HEAD") != 0)
        fg_http_server_respond(x->c, 405, "text/plain", NULL, "Allow: GET, HEAD\r\n", NULL);
    else
        fg_admin_respond_json(x->c, 200, x->doc_etag, json_incref(doc));
}

static void route_api(api_t *x)
{
    const char *k = x->nseg > 0 ? kind_of(x->seg[0]) : NULL;
    if (x->nseg == 1 && strcmp(x->seg[0], "reload") == 0)
        reload_now(x);
    else if (x->nseg == 2 && strcmp(x->seg[0], "acme") == 0 && strcmp(x->seg[1], "check") == 0)
        job_now(x, "acme check");
    else if (x->nseg == 2 && strcmp(x->seg[0], "ocsp") == 0 && strcmp(x->seg[1], "update") == 0)
        job_now(x, "ocsp update");
    else if (x->nseg == 1 && strcmp(x->seg[0], "reloads") == 0)
        fg_admin_respond_json(x->c, 200, NULL, fg_admin_api_history(x->m));
    else if (runtime_view(x))
        return;
    else if (load_docs(x) < 0)
        return;
    else if (x->nseg == 1 && (strcmp(x->seg[0], "config") == 0 || strcmp(x->seg[0], "state") == 0))
        documents(x, x->seg[0]);
    else if (k && x->nseg == 1)
        collection(x, k);
    else if (k && x->nseg == 2)
        item(x, k, x->seg[1]);
    else if (k == fg_config_admin_kinds[1] && x->nseg >= 3 && x->nseg <= 4 &&
             strcmp(x->seg[2], "destinations") == 0)
        destinations(x, x->seg[1], x->nseg == 4 ? x->seg[3] : NULL);
    else if (k == fg_config_admin_kinds[1] && x->nseg == 5 &&
             strcmp(x->seg[2], "destinations") == 0 && strcmp(x->seg[4], "state") == 0)
        destination_state(x, x->seg[1], x->seg[3]);
    else if (k == fg_config_admin_kinds[3] && x->nseg >= 3 && x->nseg <= 4 &&
             strcmp(x->seg[2], "entries") == 0)
        acl_entries(x, x->seg[1], x->nseg == 4 ? x->seg[3] : NULL);
    else if (k == fg_config_admin_kinds[3] && x->nseg >= 3 && x->nseg <= 4 &&
             strcmp(x->seg[2], "dynamic") == 0)
        acl_dynamic(x, x->seg[1], x->nseg == 4 ? x->seg[3] : NULL);
    else
        fail(x, 404, "no such resource");
}

/* A browser page of another origin may send simple requests to a loopback listener: writes
 * that name an Origin other than this listener's are refused (the dashboard's own requests
 * pass). */
static int cross_origin(const fg_admin_req_t *req)
{
    if (req->origin == NULL || strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
        return 0;
    const char *o = req->origin;
    if (strncmp(o, "http://", 7) == 0)
        o += 7;
    else if (strncmp(o, "https://", 8) == 0)
        o += 8;
    return req->host == NULL || strcmp(o, req->host) != 0;
}

void fg_admin_api_handle(void *arg, fg_admin_conn_t *c, const fg_admin_req_t *req)
{
    master_t *m = arg;
    api_t x = {.m = m, .c = c, .req = req, .a = &m->cur->cfg->admin};
    int is_metrics = strcmp(req->path, x.a->metrics_path) == 0;
    int is_api = strncmp(req->path, "/api/", 5) == 0 || strcmp(req->path, "/api") == 0;
    if (!is_metrics && !is_api) {
        fg_admin_api_static(m, c, req);
        return;
    }
    if (!authorized(x.a, req, is_metrics)) {
        /* RFC 6750 3: the challenge names the scheme */
        struct evbuffer *b = evbuffer_new();
        if (b)
            evbuffer_add_printf(b, "{\"error\": \"a valid bearer token is required\"}\n");
        fg_http_server_respond(c, 401, "application/json", NULL,
                               "WWW-Authenticate: Bearer realm=\"fastgateway\"\r\n", b);
        if (b)
            evbuffer_free(b);
        return;
    }
    if (cross_origin(req)) {
        fail(&x, 403, "cross-origin write refused");
        return;
    }
    if (is_metrics) {
        struct evbuffer *b = evbuffer_new();
        if (b && fg_master_metrics_scrape(m, b) == 0)
            fg_http_server_respond(c, 200, FG_METRICS_CONTENT_TYPE, NULL, NULL, b);
        else
            fail(&x, 500, "metrics unavailable");
        if (b)
            evbuffer_free(b);
        return;
    }
    if (split(&x, req->path) < 0)
        fail(&x, 400, "malformed path");
    else
        route_api(&x);
    json_decref(x.state);
    json_decref(x.eff);
}

json_t *fg_admin_api_history(master_t *m)
{
    return json_pack("{s:o}", "reloads", fg_admin_http_history(m->admin));
}

/* ---- the dashboard ---- */

#define MAX_ASSET (1024 * 1024)

static const struct {
    const char *path, *file, *type;
} assets[] = {
    {"/", "index.html", "text/html; charset=utf-8"},
    {"/index.html", "index.html", "text/html; charset=utf-8"},
    {"/app.js", "app.js", "text/javascript; charset=utf-8"},
    {"/style.css", "style.css", "text/css; charset=utf-8"},
};

/* Only the names above are served, so no request names a file outside the directory. */
void fg_admin_api_static(master_t *m, fg_admin_conn_t *c, const fg_admin_req_t *req)
{
    const char *dir = m->cur->cfg->admin.dashboard;
    size_t i = 0, n = sizeof(assets) / sizeof(assets[0]);
    while (i < n && strcmp(assets[i].path, req->path) != 0)
        i++;
    if (i == n || dir == NULL) {
        fg_admin_respond_json(c, 404, NULL, json_pack("{s:s}", "error", "not found"));
        return;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        fg_http_server_respond(c, 405, "text/plain", NULL, "Allow: GET, HEAD\r\n", NULL);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, assets[i].file);
    struct evbuffer *b = evbuffer_new();
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    int ok = b != NULL && fd != -1 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
             st.st_size <= MAX_ASSET;
    /* evbuffer_read takes a few KiB per call */
    while (ok && evbuffer_get_length(b) < (size_t)st.st_size)
        ok = evbuffer_read(b, fd, (int)(st.st_size - (off_t)evbuffer_get_length(b))) > 0;
    if (!ok) {
        fg_log_error("admin: dashboard %s: %s", path, fd == -1 ? strerror(errno) : "unreadable");
        fg_admin_respond_json(c, 500, NULL, json_pack("{s:s}", "error", "dashboard unreadable"));
    } else {
        fg_http_server_respond(c, 200, assets[i].type, NULL,
                               "Content-Security-Policy: default-src 'self'\r\n", b);
    }
    if (fd != -1)
        close(fd);
    if (b)
        evbuffer_free(b);
}
