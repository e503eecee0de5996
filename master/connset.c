#include "master/connset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#define BACKLOG 64

struct fg_connset_s {
    struct evconnlistener *lev;
    SSL_CTX *ctx; /* NULL: plain */
    const fg_connset_ops_t *ops;
    void *arg;
    fg_connset_conn_t *conns;
    size_t nconns;
    unsigned timeout_ms;
};

void fg_connset_close(fg_connset_conn_t *c)
{
    fg_connset_t *s = c->set;
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    s->nconns--;
    if (s->ops->release)
        s->ops->release(c);
    bufferevent_free(c->bev);
    free(c);
}

void fg_connset_finish(fg_connset_conn_t *c)
{
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    fg_connset_conn_t *c = arg;
    c->set->ops->read(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    fg_connset_conn_t *c = arg;
    if (c->set->ops->write && c->set->ops->write(c))
        return;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        fg_connset_close(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    fg_connset_conn_t *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return; /* the TLS handshake is done */
    if (c->set->ops->event && c->set->ops->event(c, what))
        return;
    fg_connset_close(c);
}

/* A bufferevent for fd, over TLS when the set has a context; NULL when out of memory. */
static struct bufferevent *wrap(fg_connset_t *s, struct event_base *base, evutil_socket_t fd)
{
    if (s->ctx == NULL)
        return bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    SSL *ssl = SSL_new(s->ctx);
    struct bufferevent *bev =
        ssl ? bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE)
            : NULL;
    if (bev == NULL && ssl != NULL)
        SSL_free(ssl);
    return bev;
}

static void turn_away(const fg_connset_t *s, evutil_socket_t fd)
{
    if (s->ops->busy) {
        /* said once, best effort: the socket is new, its buffer empty */
        ssize_t n = write(fd, s->ops->busy, strlen(s->ops->busy));
        (void)n;
    }
    close(fd);
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    fg_connset_t *s = arg;
    if (s->nconns >= s->ops->max_conns) {
        turn_away(s, fd);
        return;
    }
    fg_connset_conn_t *c = calloc(1, s->ops->conn_size);
    struct bufferevent *bev = c ? wrap(s, evconnlistener_get_base(lev), fd) : NULL;
    if (bev == NULL) {
        free(c);
        close(fd);
        return;
    }
    c->bev = bev;
    c->set = s;
    c->next = s->conns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &s->conns;
    s->conns = c;
    s->nconns++;
    if (s->timeout_ms) {
        struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
        bufferevent_set_timeouts(bev, &tv, &tv);
    }
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    if (s->ops->open && s->ops->open(c) < 0) {
        fg_connset_close(c);
        return;
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int fg_connset_listen_tcp(const struct sockaddr *sa, socklen_t salen, const char *label, char *err,
                          size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        bind(fd, sa, salen) == -1 || listen(fd, BACKLOG) == -1) {
        snprintf(err, errlen, "%s: %s", label, strerror(errno));
        if (fd != -1)
            close(fd);
        return -1;
    }
    return fd;
}

fg_connset_t *fg_connset_new(struct event_base *base, int fd, const char *label,
                             const fg_connset_ops_t *ops, void *arg, char *err, size_t errlen)
{
    fg_connset_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "%s: out of memory", label);
        close(fd);
        return NULL;
    }
    s->ops = ops;
    s->arg = arg;
    s->lev = evconnlistener_new(base, on_accept, s, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (s->lev == NULL) {
        snprintf(err, errlen, "%s: cannot register with the event loop", label);
        close(fd);
        free(s);
        return NULL;
    }
    return s;
}

void fg_connset_free(fg_connset_t *s)
{
    if (s == NULL)
        return;
    while (s->conns)
        fg_connset_close(s->conns);
    evconnlistener_free(s->lev);
    SSL_CTX_free(s->ctx);
    free(s);
}

void fg_connset_close_in_child(const fg_connset_t *s)
{
    if (s == NULL)
        return;
    close(evconnlistener_get_fd(s->lev));
    for (const fg_connset_conn_t *c = s->conns; c; c = c->next)
        close(bufferevent_getfd(c->bev));
}

void fg_connset_set_timeout(fg_connset_t *s, unsigned ms)
{
    s->timeout_ms = ms;
}

void fg_connset_set_tls(fg_connset_t *s, struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(s->ctx);
    s->ctx = ctx;
}

void *fg_connset_arg(const fg_connset_t *s)
{
    return s->arg;
}

fg_connset_conn_t *fg_connset_conns(const fg_connset_t *s)
{
    return s->conns;
}
