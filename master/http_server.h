/* A small HTTP/1.x server in the master's event loop, on master/connset.h: the transport of the
 * admin listener (master/admin_http.c) and of the metrics listener (master/metrics_http.c).
 * One request per connection, answered with Connection: close. The head is read with
 * common/http1_parser.h under the server's bounds (431 beyond max_head or max_fields), the body
 * by Content-Length only (413 beyond max_body, 501 for Transfer-Encoding); the whole request
 * must arrive within timeout_ms or the connection is closed without an answer. The request is
 * then handed to the handler, which answers at once (fg_http_server_respond) or later
 * (fg_http_server_hold). */
#ifndef FG_HTTP_SERVER_H
#define FG_HTTP_SERVER_H

#include <stddef.h>
#include <sys/socket.h>

#include "common/http1_parser.h"

struct event_base;
struct evbuffer;
struct ssl_ctx_st;

typedef struct fg_http_server_s fg_http_server_t;
typedef struct fg_http_server_conn_s fg_http_server_conn_t;

/* One request; every string is NUL-terminated and lives as long as its connection. */
typedef struct {
    const char *method;
    char *path;        /* the origin-form target before any '?', still percent-encoded */
    const char *query; /* after the '?'; "" when none */
    const char *host;  /* NULL when absent */
    /* the field lines as sent; each name.base and value.base is NUL-terminated */
    const fg_http_header_t *fields;
    size_t nfields;
    const char *body; /* body_len bytes, NUL-terminated; "" when none */
    size_t body_len;
    int client_cert; /* over TLS: the client sent a certificate the handshake verified */
} fg_http_server_req_t;

typedef void (*fg_http_server_handler_fn)(void *arg, fg_http_server_conn_t *c,
                                          const fg_http_server_req_t *req);
/* Answer a request the server refused itself (status 400, 413, 431, 501 or 503; msg says why).
 * NULL in the conf: an empty text/plain answer. */
typedef void (*fg_http_server_error_fn)(void *arg, fg_http_server_conn_t *c, int status,
                                        const char *msg);

typedef struct {
    size_t max_head;     /* request line, field lines and the empty line */
    size_t max_fields;   /* field lines, at least 1 */
    size_t max_body;     /* the Content-Length allowed */
    size_t max_conns;    /* further connections are closed at once */
    unsigned timeout_ms; /* to receive the whole request; then to send the answer */
    const char *headers; /* "Name: value\r\n" lines added to every answer, or NULL */
    fg_http_server_handler_fn handler;
    fg_http_server_error_fn error;
    void *arg; /* of handler and error */
} fg_http_server_conf_t;

/* Listen on sa with conf (kept by reference). label names the listener in err, e.g.
 * "admin.listen 127.0.0.1:9000". NULL with err filled on failure. */
fg_http_server_t *fg_http_server_new(struct event_base *base, const struct sockaddr *sa,
                                     socklen_t salen, const char *label,
                                     const fg_http_server_conf_t *conf, char *err, size_t errlen);
void fg_http_server_free(fg_http_server_t *s);
/* In a forked child: close the descriptors without touching the shared event base. */
void fg_http_server_close_in_child(const fg_http_server_t *s);
/* Serve connections accepted from now on over TLS with ctx (owned), or plain when NULL. */
void fg_http_server_set_tls(fg_http_server_t *s, struct ssl_ctx_st *ctx);

/* Answer c: status, the body's type (NULL: text/plain), an optional ETag (the quoted tag) and
 * extra header lines ("Name: value\r\n" each, or NULL). body may be NULL; it is drained, and
 * not sent to a HEAD (RFC 9110 9.3.2). The connection closes once the answer is sent, which
 * gets timeout_ms. A second answer is ignored. */
void fg_http_server_respond(fg_http_server_conn_t *c, int status, const char *type,
                            const char *etag, const char *extra, struct evbuffer *body);

/* Answer later: c loses its timeouts and outlives a client's half-close; data (may be NULL)
 * stays with c, and release(data) is called when c goes. fg_http_server_respond ends the wait. */
void fg_http_server_hold(fg_http_server_conn_t *c, void *data, void (*release)(void *data));
/* Call fn on every connection held and not answered yet; fn may answer it. */
void fg_http_server_each_held(fg_http_server_t *s,
                              void (*fn)(void *arg, fg_http_server_conn_t *c, void *data),
                              void *arg);

/* The value of the first field named name (case-insensitive), or NULL; *count (when not NULL)
 * gets the number of fields of that name. */
const char *fg_http_server_field(const fg_http_server_req_t *req, const char *name, size_t *count);

#endif
