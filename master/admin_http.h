/* The admin listener (config "admin", docs/admin.md): a master/http_server.h server, over TLS
 * when admin.tls names a certificate. One request per connection (Connection: close), a head of
 * up to 16 KiB and a body of up to 1 MiB (Content-Length only), 64 connections at most, 10 s to
 * send the request. The requests are handed to master/admin_api.c; a handler answers at once
 * (fg_http_server_respond, fg_admin_respond_json) or defers its answer to the end of a reload
 * (fg_admin_http_resolve), so the loop never waits. */
#ifndef FG_ADMIN_HTTP_H
#define FG_ADMIN_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/config.h"
#include "master/http_server.h"

struct event_base;

#define FG_ADMIN_MAX_HEAD (16 * 1024)
#define FG_ADMIN_MAX_BODY (1024 * 1024)

typedef fg_http_server_conn_t fg_admin_conn_t;

/* One request; every string is NUL-terminated and lives as long as the connection. */
typedef struct {
    const char *method;
    char *path; /* the target without its query, still percent-encoded */
    const char *query;
    const char *authorization; /* NULL when absent */
    const char *if_match;
    const char *content_type;
    const char *origin;
    const char *host;
    const char *body; /* body_len bytes, NUL-terminated */
    size_t body_len;
    int client_cert; /* over TLS, a client certificate clientCaFile verified */
} fg_admin_req_t;

typedef void (*fg_admin_handler_fn)(void *arg, fg_admin_conn_t *c, const fg_admin_req_t *req);

typedef struct fg_admin_http_s fg_admin_http_t;

/* Listen on cfg->admin's address; NULL with err filled on failure. */
fg_admin_http_t *fg_admin_http_new(struct event_base *base, const fg_config_t *cfg,
                                   fg_admin_handler_fn fn, void *arg, char *err, size_t errlen);
/* After a reload: keep *h when the address is unchanged, else listen on the new one (or none)
 * and close the old one. On failure *h is kept, err filled, -1. */
int fg_admin_http_apply(fg_admin_http_t **h, struct event_base *base, const fg_config_t *cfg,
                        fg_admin_handler_fn fn, void *arg, char *err, size_t errlen);
void fg_admin_http_free(fg_admin_http_t *h);
void fg_admin_http_close_in_child(const fg_admin_http_t *h);

/* Answer with a JSON document (stolen), pretty-printed. */
void fg_admin_respond_json(fg_admin_conn_t *c, int status, const char *etag, json_t *doc);
/* Answer later: once the reload with a number >= ticket ends, doc (stolen) gets the reload's
 * outcome under "reload" and is sent with status, or with 500 when the reload failed. */
void fg_admin_defer(fg_admin_conn_t *c, uint64_t ticket, int status, const char *etag, json_t *doc);
/* A reload ended: answer the deferred requests up to `upto` with its outcome. */
void fg_admin_http_resolve(fg_admin_http_t *h, uint64_t upto, const json_t *outcome);

/* The reload outcomes resolved since the listener started, oldest first (at most 32), each
 * with its "time" (ISO 8601 UTC). */
json_t *fg_admin_http_history(const fg_admin_http_t *h);

/* 1 when the bearer credential `given` equals `want`. The time taken depends on neither the
 * contents nor the lengths: both are hashed with SHA-256 and the digests compared with
 * CRYPTO_memcmp. */
int fg_admin_token_equal(const char *given, size_t given_len, const char *want, size_t want_len);

#endif
