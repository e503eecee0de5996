#include "worker/core/handshake.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/tls.h"
#include "worker/core/conn.h"
#include "worker/http/http1.h"

typedef struct {
    fg_worker_t *w;
    const fg_server_t *srv;
    struct sockaddr_storage peer;
} pending_t;

typedef int (*front_adopt_fn)(fg_worker_t *w, const fg_server_t *srv, fg_conn_t *c,
                              const struct sockaddr_storage *peer, int flags);

/* The front end of each ALPN outcome (RFC 7301): a client that offered none speaks HTTP/1.1.
 * A protocol without a front end here is never offered (fg_tls_build refuses it in "alpn"). */
static const front_adopt_fn fronts[] = {
    [FG_TLS_ALPN_NONE] = fg_http1_adopt,
    [FG_TLS_ALPN_HTTP11] = fg_http1_adopt,
    [FG_TLS_ALPN_H2] = NULL,
};

static void hand_over(fg_conn_t *c, pending_t *p, int plain)
{
    fg_tls_alpn_t alpn = plain ? FG_TLS_ALPN_NONE : fg_conn_alpn(c);
    front_adopt_fn adopt = (size_t)alpn < sizeof(fronts) / sizeof(fronts[0]) ? fronts[alpn] : NULL;
    if (adopt == NULL || adopt(p->w, p->srv, c, &p->peer, plain ? FG_HTTP1_PLAIN_ON_TLS : 0) != 0)
        fg_conn_free(c);
    free(p);
}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    pending_t *p = arg;
    if (what == FG_CONN_HANDSHAKE_DONE || what == FG_CONN_PLAINTEXT) {
        hand_over(c, p, what == FG_CONN_PLAINTEXT);
        return;
    }
    if (what == FG_CONN_TIMEOUT_READ)
        fg_log_info("tls: handshake timed out, server: %s", p->srv->id);
    else if (what == FG_CONN_ERROR)
        fg_log_info("tls: handshake failed (%s), server: %s", strerror(fg_conn_errno(c)),
                    p->srv->id);
    fg_conn_free(c);
    free(p);
}

static void on_nothing(fg_conn_t *c, void *arg)
{
    (void)c;
    (void)arg;
}

static const fg_conn_cbs_t cbs = {on_nothing, on_nothing, on_event};

int fg_handshake_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                        const struct sockaddr_storage *peer)
{
    pending_t *p = malloc(sizeof(*p));
    if (p == NULL)
        return -1;
    *p = (pending_t){.w = w, .srv = srv, .peer = *peer};
    fg_conn_t *c = fg_conn_new(w->base, fd, &cbs, p);
    if (c == NULL) {
        free(p);
        return -1;
    }
    if (fg_conn_start_tls(c, fg_tls_server_ctx(srv)) != 0) {
        fg_log_error("tls: out of memory for a connection, server: %s", srv->id);
        fg_conn_free(c); /* closes fd */
        free(p);
        return 0;
    }
    fg_conn_set_write_timeout(c, srv->tls->handshake_timeout_ms);
    fg_conn_handshake(c, srv->tls->handshake_timeout_ms);
    return 0;
}
