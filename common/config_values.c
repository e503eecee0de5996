/* Configuration loader, part 1: the load context (JSON path and error messages), the typed
 * getters that validate as they read, and the value parsers shared with other modules
 * (durations, sizes, listen addresses). See common/config_impl.h. */
#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/config_impl.h"
#include "common/config_index.h"
#include "common/iprange.h"

#define KIB 1024ULL
#define MIB (KIB * KIB)
#define GIB (KIB * MIB)

typedef struct unit_s unit_t;
static int parse_quantity(const char *s, const unit_t *units, uint64_t *out);

/* ---- allocation: out of memory at load time is fatal (STYLE.md) ---- */

void *fg_config_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        abort();
    return p;
}

char *fg_config_xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        abort();
    return p;
}

/* ---- JSON path and errors ---- */

/* Count the n bytes snprintf put at the end of the path, or as many as fit. */
static void path_grow(fg_config_ctx_t *c, int n)
{
    if (n > 0)
        c->plen +=
            (size_t)n < sizeof(c->path) - c->plen ? (size_t)n : sizeof(c->path) - c->plen - 1;
}

size_t fg_config_push_key(fg_config_ctx_t *c, const char *key)
{
    size_t mark = c->plen;
    path_grow(
        c, snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "%s%s", c->plen ? "." : "", key));
    return mark;
}

size_t fg_config_push_index(fg_config_ctx_t *c, size_t i)
{
    size_t mark = c->plen;
    path_grow(c, snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "[%zu]", i));
    return mark;
}

void fg_config_pop(fg_config_ctx_t *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

/* "file: path.key: reason" (or "file: reason" at the top level) into out. */
static void message(fg_config_ctx_t *c, const char *key, char *out, size_t outlen, const char *fmt,
                    va_list ap)
{
    char reason[768];
    vsnprintf(reason, sizeof(reason), fmt, ap);
    size_t mark = key ? fg_config_push_key(c, key) : c->plen;
    if (c->plen)
        snprintf(out, outlen, "%s: %s: %s", c->name, c->path, reason);
    else
        snprintf(out, outlen, "%s: %s", c->name, reason);
    fg_config_pop(c, mark);
}

int fg_config_fail(fg_config_ctx_t *c, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    message(c, key, c->err, c->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void fg_config_warn(fg_config_ctx_t *c, const char *key, const char *fmt, ...)
{
    char line[1536];
    va_list ap;
    va_start(ap, fmt);
    message(c, key, line, sizeof(line), fmt, ap);
    va_end(ap);
    fg_config_t *cfg = c->cfg;
    char **w = realloc(cfg->warnings, (cfg->nwarnings + 1) * sizeof(char *));
    if (w == NULL)
        abort();
    cfg->warnings = w;
    cfg->warnings[cfg->nwarnings++] = fg_config_xstrdup(line);
}

void fg_config_warn_cidr(fg_config_ctx_t *c, const char *text)
{
    if (fg_iprange_has_host_bits(text))
        fg_config_warn(c, NULL, "low address bits of %s are meaningless", text);
}

const char *fg_config_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* ---- typed getters ---- */

int fg_config_check_keys(fg_config_ctx_t *c, const json_t *obj, const char *const allowed[])
{
    const char *key;
    json_t *v;

    if (c->on_keys)
        c->on_keys(c->on_keys_arg, c->path, allowed);
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i;
        for (i = 0; allowed[i]; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (allowed[i] == NULL)
            return fg_config_fail(c, key, "unknown key");
    }
    return 0;
}

static json_t *lookup(const json_t *obj, const char *key)
{
    return obj ? json_object_get(obj, key) : NULL;
}

int fg_config_get_object(fg_config_ctx_t *c, const json_t *obj, const char *key,
                         const char *const allowed[], json_t **out)
{
    json_t *v = lookup(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_object(v))
        return fg_config_fail(c, key, "expected an object, got %s", fg_config_type_name(v));
    if (allowed) {
        size_t mark = fg_config_push_key(c, key);
        int rc = fg_config_check_keys(c, v, allowed);
        fg_config_pop(c, mark);
        if (rc < 0)
            return -1;
    }
    *out = v;
    return 1;
}

int fg_config_get_array(fg_config_ctx_t *c, const json_t *obj, const char *key, json_t **out)
{
    json_t *v = lookup(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_array(v))
        return fg_config_fail(c, key, "expected an array, got %s", fg_config_type_name(v));
    *out = v;
    return 1;
}

int fg_config_get_string(fg_config_ctx_t *c, const json_t *obj, const char *key, int nonempty,
                         char **out)
{
    json_t *v = lookup(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return fg_config_fail(c, key, "expected a string, got %s", fg_config_type_name(v));
    if (nonempty && json_string_length(v) == 0)
        return fg_config_fail(c, key, "must not be empty");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fg_config_fail(c, key, "must not contain NUL characters");
    free(*out);
    *out = fg_config_xstrdup(json_string_value(v));
    return 1;
}

int fg_config_require_string(fg_config_ctx_t *c, const json_t *obj, const char *key, char **out)
{
    int rc = fg_config_get_string(c, obj, key, 1, out);
    if (rc == 0)
        return fg_config_fail(c, NULL, "missing required key \"%s\"", key);
    return rc;
}

int fg_config_get_int(fg_config_ctx_t *c, const json_t *obj, const char *key, long long min,
                      long long max, long long *out)
{
    json_t *v = lookup(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return fg_config_fail(c, key, "expected an integer, got %s", fg_config_type_name(v));
    long long n = json_integer_value(v);
    if (n < min || n > max)
        return fg_config_fail(c, key, "%lld is out of range %lld..%lld", n, min, max);
    *out = n;
    return 1;
}

int fg_config_get_bool(fg_config_ctx_t *c, const json_t *obj, const char *key, int *out)
{
    json_t *v = lookup(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v))
        return fg_config_fail(c, key, "expected a boolean, got %s", fg_config_type_name(v));
    *out = json_is_true(v);
    return 1;
}

/* A quantity of the config: a JSON integer in units[0] (the bare number's unit, named
 * int_unit in messages), or a string of digits and one of units' suffixes. */
struct unit_s {
    const char *suffix;
    uint64_t mult;
};

typedef struct {
    const char *what;     /* "duration" */
    const char *int_unit; /* "seconds" */
    const char *examples; /* written forms, for the error message */
    const unit_t *units;  /* NULL-terminated; units[0] is "" */
} quantity_t;

/* Suffixes are case-sensitive: "m" is minutes, "ms" milliseconds. */
static const unit_t duration_units[] = {
    {"", 1000},       {"s", 1000},        {"ms", 1},
    {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400ULL * 1000},
    {NULL, 0},
};
static const unit_t size_units[] = {
    {"", 1}, {"k", KIB}, {"K", KIB}, {"m", MIB}, {"M", MIB}, {"g", GIB}, {"G", GIB}, {NULL, 0},
};
static const quantity_t duration_q = {"duration", "seconds",
                                      "\"500ms\", \"30s\", \"5m\", \"1h\", \"2d\"", duration_units};
static const quantity_t size_q = {"size", "bytes", "\"512\", \"64k\", \"64m\", \"1g\"", size_units};

/* Returns 1 with *out set, 0 when key is absent, or -1 (reported). */
static int get_quantity(fg_config_ctx_t *c, const json_t *obj, const char *key, const quantity_t *q,
                        uint64_t *out)
{
    json_t *v = lookup(obj, key);
    if (v == NULL)
        return 0;
    if (json_is_integer(v)) {
        long long n = json_integer_value(v);
        if (n < 0 || (unsigned long long)n > UINT64_MAX / q->units[0].mult)
            return fg_config_fail(c, key, "%lld is not a valid %s", n, q->what);
        *out = (uint64_t)n * q->units[0].mult;
        return 1;
    }
    if (!json_is_string(v))
        return fg_config_fail(c, key, "expected a %s (string or integer %s), got %s", q->what,
                              q->int_unit, fg_config_type_name(v));
    if (parse_quantity(json_string_value(v), q->units, out) < 0)
        return fg_config_fail(c, key, "\"%s\" is not a valid %s (use e.g. %s or integer %s)",
                              json_string_value(v), q->what, q->examples, q->int_unit);
    return 1;
}

int fg_config_get_duration(fg_config_ctx_t *c, const json_t *obj, const char *key, uint64_t *ms)
{
    return get_quantity(c, obj, key, &duration_q, ms);
}

int fg_config_get_size(fg_config_ctx_t *c, const json_t *obj, const char *key, uint64_t *bytes)
{
    return get_quantity(c, obj, key, &size_q, bytes);
}

int fg_config_get_enum(fg_config_ctx_t *c, const json_t *obj, const char *key,
                       const char *const names[], int *out)
{
    char *s = NULL;
    int rc = fg_config_get_string(c, obj, key, 0, &s);
    if (rc <= 0)
        return rc;
    for (int i = 0; names[i]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            free(s);
            return 1;
        }
    }
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; names[i] && len < sizeof(list); i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", names[i]);
    fg_config_fail(c, key, "unknown value \"%s\" (expected %s)", s, list);
    free(s);
    return -1;
}

int fg_config_get_strings(fg_config_ctx_t *c, const json_t *obj, const char *key, char ***out,
                          size_t *n)
{
    json_t *arr;
    int rc = fg_config_get_array(c, obj, key, &arr);
    if (rc <= 0)
        return rc;
    size_t count = json_array_size(arr);
    char **list = fg_config_xcalloc(count + 1, sizeof(char *));
    size_t mark = fg_config_push_key(c, key);
    for (size_t i = 0; i < count; i++) {
        json_t *v = json_array_get(arr, i);
        size_t m = fg_config_push_index(c, i);
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            if (json_is_string(v))
                fg_config_fail(c, NULL, "expected a non-empty string");
            else
                fg_config_fail(c, NULL, "expected a string, got %s", fg_config_type_name(v));
            fg_config_pop(c, m);
            fg_config_pop(c, mark);
            for (size_t j = 0; j < i; j++)
                free(list[j]);
            free(list);
            return -1;
        }
        fg_config_pop(c, m);
        list[i] = fg_config_xstrdup(json_string_value(v));
    }
    fg_config_pop(c, mark);
    if (*out) {
        for (size_t j = 0; j < *n; j++)
            free((*out)[j]);
        free(*out);
    }
    *out = list;
    *n = count;
    return 1;
}

/* ---- value parsers ---- */

/* Leading decimal digits of s into *v; *end points after them. -1 without digits or on
 * overflow. Signs and spaces are not accepted: "30s" and "64k" only. */
static int parse_uint(const char *s, uint64_t *v, const char **end)
{
    uint64_t n = 0;
    const char *p = s;

    if (s == NULL || *p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *v = n;
    *end = p;
    return 0;
}

/* Digits and one of units' suffixes (the whole rest of s) into *out, scaled. Returns 0, or
 * -1 for another suffix or on overflow. */
static int parse_quantity(const char *s, const unit_t *units, uint64_t *out)
{
    uint64_t n;
    const char *p;

    if (parse_uint(s, &n, &p) < 0)
        return -1;
    for (const unit_t *u = units; u->suffix != NULL; u++) {
        if (strcmp(p, u->suffix) != 0)
            continue;
        if (n > UINT64_MAX / u->mult)
            return -1;
        *out = n * u->mult;
        return 0;
    }
    return -1;
}

int fg_config_parse_duration(const char *s, uint64_t *ms)
{
    return parse_quantity(s, duration_units, ms);
}

int fg_config_parse_size(const char *s, uint64_t *bytes)
{
    return parse_quantity(s, size_units, bytes);
}

static int parse_port(const char *s, uint16_t *port)
{
    uint64_t n;
    const char *end;

    if (parse_uint(s, &n, &end) < 0 || *end != '\0' || n == 0 || n > 65535)
        return -1;
    *port = (uint16_t)n;
    return 0;
}

/* Numeric addresses only: a listen address never waits on DNS. ":8080" and "*:8080" bind all
 * IPv4 addresses; IPv6 needs brackets ("[::]:8080") so the port is unambiguous. */
int fg_config_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN];
    const char *hs, *he, *port_s;
    uint16_t port;

    if (s == NULL)
        return -1;
    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        hs = s + 1;
        he = strchr(hs, ']');
        if (he == NULL || he[1] != ':')
            return -1;
        port_s = he + 2;
    } else {
        hs = s;
        he = strrchr(s, ':');
        if (he == NULL || memchr(s, ':', (size_t)(he - s)) != NULL)
            return -1;
        port_s = he + 1;
    }
    if ((size_t)(he - hs) >= sizeof(host) || parse_port(port_s, &port) < 0)
        return -1;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';

    if (s[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof(*sin6);
        return 0;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return -1;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    *len = sizeof(*sin);
    return 0;
}

/* ---- paths and HTTP tokens ---- */

/* Clean an absolute path in place: merge slashes, drop "." and resolve ".." lexically (".."
 * at the root stays at the root). */
static void clean_path(char *p)
{
    char *out = p;
    const char *in = p;

    while (*in) {
        while (*in == '/')
            in++;
        const char *seg = in;
        while (*in && *in != '/')
            in++;
        size_t len = (size_t)(in - seg);
        if (len == 0 || (len == 1 && seg[0] == '.'))
            continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > p && *--out != '/')
                ;
            continue;
        }
        *out++ = '/';
        memmove(out, seg, len);
        out += len;
    }
    if (out == p)
        *out++ = '/';
    *out = '\0';
}

char *fg_config_abs_path(const fg_config_ctx_t *c, const char *path)
{
    size_t blen = strlen(c->basedir), plen = strlen(path);
    char *r = fg_config_xcalloc(blen + plen + 2, 1);

    if (path[0] == '/')
        memcpy(r, path, plen + 1);
    else
        snprintf(r, blen + plen + 2, "%s/%s", c->basedir, path);
    clean_path(r);
    return r;
}

/* The directory of `file` as an absolute path (relative ones against the working directory). */
char *fg_config_base_dir(const char *file)
{
    const char *slash = strrchr(file, '/');
    size_t dlen = slash ? (size_t)(slash - file) : 0;
    char cwd[PATH_MAX] = "/";
    char *r;

    if (file[0] != '/' && getcwd(cwd, sizeof(cwd)) == NULL)
        snprintf(cwd, sizeof(cwd), "/");
    r = fg_config_xcalloc(strlen(cwd) + dlen + 3, 1);
    if (file[0] == '/')
        snprintf(r, dlen + 2, "/%.*s", (int)dlen, file);
    else
        snprintf(r, strlen(cwd) + dlen + 3, "%s/%.*s", cwd, (int)dlen, file);
    clean_path(r);
    return r;
}

/* RFC 9110 5.6.2: token = 1*tchar. */
int fg_config_is_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (strchr("!#$%&'*+-.^_`|~", ch) == NULL)
            return 0;
    }
    return 1;
}

/* RFC 9110 5.5: a field value must not carry CR, LF or NUL (header injection); other controls
 * except HTAB are rejected too. */
int fg_config_is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

int fg_config_load_list(fg_config_ctx_t *c, const json_t *obj, const char *key, size_t size,
                        size_t id_offset, fg_config_item_fn load, void **items, size_t *n)
{
    json_t *arr = NULL;
    *items = NULL;
    *n = 0;
    int rc = fg_config_get_array(c, obj, key, &arr);
    if (rc <= 0 || arr == NULL)
        return rc < 0 ? -1 : 0;
    size_t count = json_array_size(arr);
    char *base = fg_config_xcalloc(count + 1, size);
    *items = base;
    *n = count; /* set before loading: the owner frees what was loaded on failure */
    size_t mark = fg_config_push_key(c, key);
    fg_config_index_t *ids = fg_config_index_new(count);
    rc = -1;
    for (size_t i = 0; i < count; i++) {
        size_t m = fg_config_push_index(c, i), j;
        if (load(c, json_array_get(arr, i), base + i * size) < 0)
            goto out;
        const char *id = *(char **)(base + i * size + id_offset);
        if (fg_config_index_add(ids, id, i, &j) == 1) {
            fg_config_fail(c, "id", "duplicate id \"%s\" (first at %s[%zu])", id, key, j);
            goto out;
        }
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    rc = 0;
out:
    fg_config_index_free(ids);
    return rc;
}
