/* A listening socket in the master's event loop and the bounded set of connections it accepted:
 * the ground the admin and metrics listeners (master/http_server.c) and the status socket
 * (master/status.c) stand on. It turns connections away beyond a bound, wraps each accepted one
 * in a bufferevent (over TLS when a context is set), arms its read and write timeouts, frees a
 * connection whose last answer is flushed, and closes every descriptor in a forked child. What
 * is said on a connection belongs to the user, through the callbacks of fg_connset_ops_t. */
#ifndef FG_CONNSET_H
#define FG_CONNSET_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct bufferevent;
struct ssl_ctx_st;

typedef struct fg_connset_s fg_connset_t;

/* One accepted connection. The user's connection type begins with this struct; the set
 * allocates ops->conn_size zeroed bytes for it. */
typedef struct fg_connset_conn_s {
    struct fg_connset_conn_s *next, **pprev;
    struct bufferevent *bev;
    fg_connset_t *set;
    int closing; /* the last answer is queued: freed once the output is flushed */
} fg_connset_conn_t;

typedef struct {
    size_t conn_size; /* of the user's connection type, at least sizeof(fg_connset_conn_t) */
    size_t max_conns; /* connections beyond it are closed at once */
    const char *busy; /* written to a connection turned away, or NULL */
    /* A connection was accepted: 0, or -1 to close it at once. NULL: nothing to do. */
    int (*open)(fg_connset_conn_t *c);
    void (*read)(fg_connset_conn_t *c);
    /* The output drained below the write watermark: 1 when handled (c may be gone), 0 for
     * the default (a closing connection with nothing left to send is freed). NULL: default. */
    int (*write)(fg_connset_conn_t *c);
    /* EOF, error or a timeout (BEV_EVENT_* in what): 1 keeps the connection, 0 frees it.
     * NULL: freed. The end of a TLS handshake never reaches it. */
    int (*event)(fg_connset_conn_t *c, short what);
    /* Release what the user's type owns; the set frees the bufferevent and c. NULL: none. */
    void (*release)(fg_connset_conn_t *c);
} fg_connset_ops_t;

/* Open a TCP listening socket on sa (non-blocking, close-on-exec, SO_REUSEADDR). Returns the
 * descriptor, or -1 with err "<label>: <reason>". */
int fg_connset_listen_tcp(const struct sockaddr *sa, socklen_t salen, const char *label, char *err,
                          size_t errlen);

/* Serve the listening socket fd (owned from here on, closed on failure too) with ops (kept by
 * reference) and arg (fg_connset_arg). Connections get no timeout until
 * fg_connset_set_timeout. NULL with err "<label>: cannot register with the event loop". */
fg_connset_t *fg_connset_new(struct event_base *base, int fd, const char *label,
                             const fg_connset_ops_t *ops, void *arg, char *err, size_t errlen);
/* Free every connection (ops->release first), the listener and the TLS context. */
void fg_connset_free(fg_connset_t *s);
/* In a forked child: close the descriptors without touching the event base it shares. */
void fg_connset_close_in_child(const fg_connset_t *s);

/* The read and write timeouts of connections accepted from now on; 0 for none. */
void fg_connset_set_timeout(fg_connset_t *s, unsigned ms);
/* Accept later connections over TLS with ctx (owned; NULL for plain), freeing the context
 * before. Connections already accepted keep theirs (SSL_new holds a reference). */
void fg_connset_set_tls(fg_connset_t *s, struct ssl_ctx_st *ctx);
void *fg_connset_arg(const fg_connset_t *s);
/* The first connection; walk on with ->next. */
fg_connset_conn_t *fg_connset_conns(const fg_connset_t *s);

/* The last answer is queued: stop reading; c is freed once its output is flushed. With
 * nothing queued no flush will come: the caller closes c itself. */
void fg_connset_finish(fg_connset_conn_t *c);
/* Free c now (ops->release first). */
void fg_connset_close(fg_connset_conn_t *c);

#endif
