/* Internal to the configuration loader (common/config*.c): the load context that tracks the
 * JSON path for error messages, and typed getters that validate as they read. Not for other
 * modules; the public face is common/config.h. */
#ifndef FG_CONFIG_IMPL_H
#define FG_CONFIG_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "common/config.h"
#include "common/config_index.h"

/* Called with the JSON path of an object and the NULL-terminated list of keys the loader
 * accepts there, each time it checks one (tests use it to prove -T writes every key). */
typedef void (*fg_config_keys_fn)(void *arg, const char *path, const char *const keys[]);

typedef struct {
    const char *name;    /* file name shown in messages */
    const char *basedir; /* absolute directory of the file, for relative paths */
    char *err;
    size_t errlen;
    char path[512]; /* JSON path of the value being read, e.g. "routes[2].match" */
    size_t plen;
    fg_config_t *cfg;
    fg_config_index_t *cluster_ids; /* cluster id -> position, while routes load */
    fg_config_keys_fn on_keys;      /* NULL outside tests */
    void *on_keys_arg;
} fg_config_ctx_t;

/* Getters return 1 when the key was present and valid, 0 when absent (the output is left
 * untouched so callers preset defaults), -1 after writing an error. obj may be NULL. */

/* Path stack: push returns the previous length to hand back to fg_config_pop. */
size_t fg_config_push_key(fg_config_ctx_t *c, const char *key);
size_t fg_config_push_index(fg_config_ctx_t *c, size_t i);
void fg_config_pop(fg_config_ctx_t *c, size_t mark);

/* "NAME: path[.key]: reason"; key may be NULL. Always returns -1. */
int fg_config_fail(fg_config_ctx_t *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *fg_config_type_name(const json_t *v);
/* A warning that does not fail the load: "NAME: path[.key]: reason" appended to
 * cfg->warnings. */
void fg_config_warn(fg_config_ctx_t *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Warn at the current path when text is a CIDR with bits set after its prefix length
 * ("10.66.0.1/16"): the prefix alone decides what matches (nginx warns the same). */
void fg_config_warn_cidr(fg_config_ctx_t *c, const char *text);

int fg_config_check_keys(fg_config_ctx_t *c, const json_t *obj, const char *const allowed[]);
/* fg_config_load with on_keys called for every object checked against a key list. */
fg_config_t *fg_config_load_traced(const char *file, fg_config_keys_fn on_keys, void *arg,
                                   char *err, size_t errlen);
/* Sub-object at key, checked against allowed (NULL = no check). */
int fg_config_get_object(fg_config_ctx_t *c, const json_t *obj, const char *key,
                         const char *const allowed[], json_t **out);
int fg_config_get_array(fg_config_ctx_t *c, const json_t *obj, const char *key, json_t **out);
/* Strings are strdup'ed; a previous *out is freed when replaced. */
int fg_config_get_string(fg_config_ctx_t *c, const json_t *obj, const char *key, int nonempty,
                         char **out);
int fg_config_require_string(fg_config_ctx_t *c, const json_t *obj, const char *key, char **out);
int fg_config_get_int(fg_config_ctx_t *c, const json_t *obj, const char *key, long long min,
                      long long max, long long *out);
int fg_config_get_bool(fg_config_ctx_t *c, const json_t *obj, const char *key, int *out);
int fg_config_get_duration(fg_config_ctx_t *c, const json_t *obj, const char *key, uint64_t *ms);
int fg_config_get_size(fg_config_ctx_t *c, const json_t *obj, const char *key, uint64_t *bytes);
/* names is NULL-terminated; *out receives the index. */
int fg_config_get_enum(fg_config_ctx_t *c, const json_t *obj, const char *key,
                       const char *const names[], int *out);
/* Array of non-empty strings; the result is NULL-terminated. */
int fg_config_get_strings(fg_config_ctx_t *c, const json_t *obj, const char *key, char ***out,
                          size_t *n);

/* Loads one element of a list into `out` (zeroed, `size` bytes of the caller's type). */
typedef int (*fg_config_item_fn)(fg_config_ctx_t *c, const json_t *item, void *out);
/* The array at `key` as a calloc'ed array of *n elements of `size` bytes plus one zeroed spare,
 * each filled by `load` under the JSON path key[i]; the char * id at `id_offset` of every
 * element must be unique ("duplicate id ... (first at key[j])"). An absent key gives *items
 * NULL and *n 0. Returns 0 or -1. */
int fg_config_load_list(fg_config_ctx_t *c, const json_t *obj, const char *key, size_t size,
                        size_t id_offset, fg_config_item_fn load, void **items, size_t *n);

/* A path from the file made absolute against the file's directory and cleaned lexically. */
char *fg_config_abs_path(const fg_config_ctx_t *c, const char *path);
/* The directory of a file as a clean absolute path (relative ones against the cwd). */
char *fg_config_base_dir(const char *file);
int fg_config_is_token(const char *s);
int fg_config_is_field_value(const char *s);

void *fg_config_xcalloc(size_t n, size_t size);
char *fg_config_xstrdup(const char *s);

/* Sections, each reading cfg->... and reporting through c. */
int fg_config_load_routes(fg_config_ctx_t *c, const json_t *root);
int fg_config_load_clusters(fg_config_ctx_t *c, const json_t *root);
/* common/config_security.c: rateLimits, accessControl, security, abnormalIp; the per-server
 * and per-route keys; and resolution of every reference (after servers and routes). */
int fg_config_load_security(fg_config_ctx_t *c, const json_t *root);
int fg_config_load_server_security(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s);
int fg_config_load_route_security(fg_config_ctx_t *c, const json_t *route, fg_route_t *r);
int fg_config_resolve_security(fg_config_ctx_t *c);
void fg_config_free_security(fg_config_t *cfg);
/* common/config_responses.c: serverHeader, errorPages, exposeAccessListIds; the top level
 * first (it gives the servers their defaults), then each server. */
int fg_config_load_responses(fg_config_ctx_t *c, const json_t *root);
int fg_config_load_server_responses(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s);
/* Resolve every errorPages "route" (after routes load): it must exist, be static, direct or a
 * cluster route, and be attached to the server (a top-level entry: to every server). */
int fg_config_resolve_error_pages(fg_config_ctx_t *c);
void fg_config_free_responses(fg_responses_config_t *r);
/* common/config_tls.c: "certificates" and "tls" (before servers and clusters, which refer to
 * certificate ids), a server's "tls" and "redirectHttps", a cluster's "httpClient". */
int fg_config_load_certificates(fg_config_ctx_t *c, const json_t *root);
int fg_config_load_server_tls(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s);
int fg_config_load_http_client(fg_config_ctx_t *c, const json_t *cl_json, fg_cluster_t *cl);
void fg_config_free_tls(fg_config_t *cfg);
/* common/config_http2.c: a server's "http2" object (after its "tls"). */
int fg_config_load_server_http2(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s);
void fg_config_free_routes(fg_config_t *cfg);
/* The "compression" object of a route or a server into z, defaults when absent (types
 * allocated either way). Returns 1 when present, 0 when absent, -1 after an error. */
int fg_config_load_compression(fg_config_ctx_t *c, const json_t *o, fg_compression_config_t *z);
/* common/config_admin.c: "admin" (after servers and metrics, whose addresses it must not take),
 * and the API state file merged into the document before it loads (docs/admin.md). */
int fg_config_load_admin(fg_config_ctx_t *c, const json_t *root);
void fg_config_free_admin(fg_config_t *cfg);
int fg_config_admin_apply_state(fg_config_ctx_t *c, json_t *root, const json_t *state);
/* common/config_metrics.c: "metrics" (after servers, whose addresses it must not take). */
int fg_config_load_metrics(fg_config_ctx_t *c, const json_t *root);
void fg_config_free_metrics(fg_config_t *cfg);
void fg_config_free_clusters(fg_config_t *cfg);
int fg_config_load_tunnels(fg_config_ctx_t *c, const json_t *root);
/* common/config_tcp.c: a server's "tcp" object (with the server's other keys loaded), and the
 * checks that tie tcp servers, their clusters and routes together (after routes load). */
int fg_config_load_server_tcp(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s);
int fg_config_link_tcp(fg_config_ctx_t *c);
void fg_config_free_tunnels(fg_config_t *cfg);

#endif
