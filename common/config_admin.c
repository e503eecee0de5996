/* "admin": the master's admin API listener (master/admin_http.c, docs/admin.md), and the merge of
 * the API-owned state file into the document the loader validates. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config_impl.h"

#define TOKEN_MAX 4096
/* The state file holds at most what a configuration file may hold. */
#define STATE_MAX FG_CONFIG_MAX_FILE_SIZE

const char *const fg_config_admin_kinds[] = {"routes",        "clusters",     "rateLimits",
                                             "accessControl", "certificates", NULL};

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

/* The token file's bytes with trailing blanks and newlines cut. A token shorter than 16 bytes
 * is refused: it would be guessed long before anyone noticed. */
static int read_token(fg_config_ctx_t *c, fg_admin_config_t *a)
{
    int fd = open(a->token_file, O_RDONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd == -1 || fstat(fd, &st) == -1) {
        int e = errno;
        if (fd != -1)
            close(fd);
        return fg_config_fail(c, "tokenFile", "cannot read %s: %s", a->token_file, strerror(e));
    }
    if (!S_ISREG(st.st_mode) || st.st_size > TOKEN_MAX) {
        close(fd);
        return fg_config_fail(c, "tokenFile", "%s is not a regular file up to 4 KiB",
                              a->token_file);
    }
    char *buf = fg_config_xcalloc((size_t)st.st_size + 1, 1);
    ssize_t n = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (n < 0) {
        free(buf);
        return fg_config_fail(c, "tokenFile", "cannot read %s: %s", a->token_file, strerror(errno));
    }
    size_t len = (size_t)n;
    while (len > 0 && strchr(" \t\r\n", buf[len - 1]) != NULL)
        len--;
    buf[len] = '\0';
    if (len < 16 || strlen(buf) != len) {
        free(buf);
        return fg_config_fail(c, "tokenFile", "%s must hold a token of 16 bytes or more, no NUL",
                              a->token_file);
    }
    a->token = buf;
    a->token_len = len;
    return 0;
}

static int check_listen(fg_config_ctx_t *c, fg_admin_config_t *a)
{
    fg_config_t *cfg = c->cfg;
    if (fg_config_parse_listen(a->listen, &a->addr, &a->addrlen) < 0)
        return fg_config_fail(c, "listen", "\"%s\" is not a valid listen address (use \"IP:PORT\")",
                              a->listen);
    a->loopback = is_loopback(&a->addr);
    for (size_t i = 0; i < cfg->nservers; i++)
        if (strcmp(cfg->servers[i].listen, a->listen) == 0)
            return fg_config_fail(c, "listen", "\"%s\" is the address of servers[%zu]", a->listen,
                                  i);
    if (cfg->metrics_listen && strcmp(cfg->metrics_listen, a->listen) == 0)
        return fg_config_fail(c, "listen", "\"%s\" is the address of metrics.listen", a->listen);
    return 0;
}

static int load_admin_keys(fg_config_ctx_t *c, const json_t *o, fg_admin_config_t *a)
{
    char *token_file = NULL, *state_file = NULL, *dashboard = NULL;
    if (fg_config_get_string(c, o, "listen", 1, &a->listen) < 0 ||
        fg_config_get_string(c, o, "tokenFile", 1, &token_file) < 0 ||
        fg_config_get_string(c, o, "stateFile", 1, &state_file) < 0 ||
        fg_config_get_bool(c, o, "anonymousWrites", &a->anonymous_writes) < 0 ||
        fg_config_get_bool(c, o, "anonymousMetrics", &a->anonymous_metrics) < 0 ||
        fg_config_get_string(c, o, "metricsPath", 1, &a->metrics_path) < 0 ||
        fg_config_get_string(c, o, "dashboard", 1, &dashboard) < 0) {
        free(token_file);
        free(state_file);
        free(dashboard);
        return -1;
    }
    if (dashboard)
        a->dashboard = fg_config_abs_path(c, dashboard);
    free(dashboard);
    if (token_file)
        a->token_file = fg_config_abs_path(c, token_file);
    if (state_file)
        a->state_file = fg_config_abs_path(c, state_file);
    free(token_file);
    free(state_file);
    return 0;
}

/* "tls": {"certificate": ID of "certificates", "clientCaFile": PEM of the CAs whose client
 * certificates authenticate a request}. */
static int load_admin_tls(fg_config_ctx_t *c, const json_t *o, fg_admin_config_t *a)
{
    static const char *const keys[] = {"certificate", "clientCaFile", NULL};
    json_t *t = NULL;
    char *ca = NULL;
    a->tls_cert = -1;
    int rc = fg_config_get_object(c, o, "tls", keys, &t);
    if (rc <= 0)
        return rc;
    size_t mark = fg_config_push_key(c, "tls");
    rc = -1;
    if (fg_config_require_string(c, t, "certificate", &a->tls_cert_id) < 0 ||
        fg_config_get_string(c, t, "clientCaFile", 1, &ca) < 0)
        goto out;
    for (size_t i = 0; i < c->cfg->ncertificates; i++)
        if (strcmp(c->cfg->certificates[i].id, a->tls_cert_id) == 0)
            a->tls_cert = (long)i;
    if (a->tls_cert < 0) {
        fg_config_fail(c, "certificate", "unknown certificate \"%s\" (not in \"certificates\")",
                       a->tls_cert_id);
        goto out;
    }
    if (ca != NULL) {
        a->client_ca_file = fg_config_abs_path(c, ca);
        if (access(a->client_ca_file, R_OK) == -1) {
            fg_config_fail(c, "clientCaFile", "cannot read %s: %s", a->client_ca_file,
                           strerror(errno));
            goto out;
        }
    }
    rc = 0;
out:
    free(ca);
    fg_config_pop(c, mark);
    return rc;
}

/* Absent: no admin listener. Present: listen defaults to 127.0.0.1:9901. Anonymous writes on
 * an address other hosts can reach would hand the gateway to anyone on the network. */
int fg_config_load_admin(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const keys[] = {
        "listen",    "tokenFile", "stateFile", "anonymousWrites", "anonymousMetrics", "metricsPath",
        "dashboard", "tls",       NULL};
    fg_admin_config_t *a = &c->cfg->admin;
    json_t *o = NULL;
    int rc = fg_config_get_object(c, root, "admin", keys, &o);
    if (rc <= 0)
        return rc;
    size_t mark = fg_config_push_key(c, "admin");
    a->listen = fg_config_xstrdup("127.0.0.1:9901");
    a->metrics_path = fg_config_xstrdup("/metrics");
    if (load_admin_keys(c, o, a) < 0 || check_listen(c, a) < 0 || load_admin_tls(c, o, a) < 0)
        goto fail;
    if (a->metrics_path[0] != '/' || strpbrk(a->metrics_path, "? \t") != NULL ||
        strncmp(a->metrics_path, "/api/", 5) == 0) {
        fg_config_fail(c, "metricsPath",
                       "must start with \"/\", not with \"/api/\", and hold "
                       "no query or blank");
        goto fail;
    }
    if (a->anonymous_writes && !a->loopback) {
        fg_config_fail(c, "anonymousWrites",
                       "allowed only on a loopback listen address (127.0.0.0/8 or [::1]), "
                       "not \"%s\"",
                       a->listen);
        goto fail;
    }
    if (a->token_file && read_token(c, a) < 0)
        goto fail;
    fg_config_pop(c, mark);
    return 0;
fail:
    fg_config_pop(c, mark);
    return -1;
}

void fg_config_free_admin(fg_config_t *cfg)
{
    fg_admin_config_t *a = &cfg->admin;
    free(a->listen);
    if (a->token)
        memset(a->token, 0, a->token_len);
    free(a->token);
    free(a->token_file);
    free(a->state_file);
    free(a->metrics_path);
    free(a->dashboard);
    free(a->tls_cert_id);
    free(a->client_ca_file);
}

/* ---- the state file ---- */

static int state_fail(char *err, size_t errlen, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int state_fail(char *err, size_t errlen, const char *name, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s", name, what);
    return -1;
}

/* The index of the element of arr whose "id" is id, or -1. */
long fg_config_admin_find(const json_t *arr, const char *id)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        const char *eid = json_string_value(json_object_get(e, "id"));
        if (eid && strcmp(eid, id) == 0)
            return (long)i;
    }
    return -1;
}

/* Check the shape of a state document: an object of kinds, each an array of objects with a
 * string id, and "deleted": {kind: [ids]}. */
int fg_config_admin_check_state(const json_t *state, const char *name, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    if (!json_is_object(state))
        return state_fail(err, errlen, name, "expected an object at the top level");
    json_object_foreach((json_t *)state, key, v)
    {
        int kind = 0;
        for (const char *const *k = fg_config_admin_kinds; *k; k++)
            kind |= strcmp(*k, key) == 0;
        if (strcmp(key, "deleted") == 0) {
            const char *dk;
            json_t *ids;
            if (!json_is_object(v))
                return state_fail(err, errlen, name, "%s: expected an object", key);
            json_object_foreach(v, dk, ids)
            {
                size_t i;
                json_t *id;
                if (!json_is_array(ids))
                    return state_fail(err, errlen, name, "deleted.%s: expected an array", dk);
                json_array_foreach(ids, i, id)
                {
                    if (!json_is_string(id))
                        return state_fail(err, errlen, name,
                                          "deleted.%s[%zu]: expected a string id", dk, i);
                }
            }
            continue;
        }
        if (!kind)
            return state_fail(err, errlen, name, "unknown key \"%s\"", key);
        if (!json_is_array(v))
            return state_fail(err, errlen, name, "%s: expected an array", key);
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(json_object_get(e, "id")))
                return state_fail(err, errlen, name,
                                  "%s[%zu]: expected an object with a string \"id\"", key, i);
        }
    }
    return 0;
}

/* The merge rule (docs/admin.md): for each kind, the ids under "deleted" are removed from the
 * file's list, then each state entry replaces the file's entry of the same id in place, or is
 * appended. */
void fg_config_admin_merge(json_t *root, const json_t *state)
{
    for (const char *const *k = fg_config_admin_kinds; *k; k++) {
        json_t *del = json_object_get(json_object_get(state, "deleted"), *k);
        json_t *add = json_object_get(state, *k);
        if (json_array_size(del) == 0 && json_array_size(add) == 0)
            continue;
        json_t *arr = json_object_get(root, *k);
        if (!json_is_array(arr)) {
            if (arr != NULL)
                continue; /* the loader names the wrong type */
            arr = json_array();
            json_object_set_new(root, *k, arr);
        }
        size_t i;
        json_t *e;
        json_array_foreach(del, i, e)
        {
            long at = fg_config_admin_find(arr, json_string_value(e));
            if (at >= 0)
                json_array_remove(arr, (size_t)at);
        }
        json_array_foreach(add, i, e)
        {
            long at = fg_config_admin_find(arr, json_string_value(json_object_get(e, "id")));
            if (at >= 0)
                json_array_set(arr, (size_t)at, e);
            else
                json_array_append(arr, e);
        }
    }
}

json_t *fg_config_admin_read_state(const char *file, char *err, size_t errlen)
{
    struct stat st;
    if (stat(file, &st) == -1) {
        if (errno == ENOENT)
            return json_object(); /* nothing changed through the API yet */
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > STATE_MAX) {
        snprintf(err, errlen, "%s: not a regular file up to %d MiB", file, STATE_MAX >> 20);
        return NULL;
    }
    json_error_t jerr;
    json_t *state = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (state == NULL) {
        snprintf(err, errlen, "%s:%d:%d: %s", file, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (fg_config_admin_check_state(state, file, err, errlen) < 0) {
        json_decref(state);
        return NULL;
    }
    return state;
}

/* Merge `state`, or the file root's admin.stateFile names, into root. */
int fg_config_admin_apply_state(fg_config_ctx_t *c, json_t *root, const json_t *state)
{
    const char *rel =
        json_string_value(json_object_get(json_object_get(root, "admin"), "stateFile"));
    if (state != NULL) {
        if (fg_config_admin_check_state(state, "admin state", c->err, c->errlen) < 0)
            return -1;
        fg_config_admin_merge(root, state);
        return 0;
    }
    if (rel == NULL || rel[0] == '\0')
        return 0;
    char *file = fg_config_abs_path(c, rel);
    json_t *s = fg_config_admin_read_state(file, c->err, c->errlen);
    free(file);
    if (s == NULL)
        return -1;
    fg_config_admin_merge(root, s);
    json_decref(s);
    return 0;
}
