#include "master/metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "master/metrics_view.h"

#define MAX_CONNS 64
#define MAX_HEAD 8192
#define HEAD_TIMEOUT_S 10

typedef struct conn_s {
    struct conn_s *next, **pprev;
    struct bufferevent *bev;
    struct fg_metrics_http_s *h;
    int closing; /* answered: close once the output is flushed */
} conn_t;

struct fg_metrics_http_s {
    struct evconnlistener *lev;
    char *listen;
    char *path;
    fg_metrics_http_fn fn;
    void *arg;
    conn_t *conns;
    size_t nconns;
};

static void conn_free(conn_t *c)
{
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    c->h->nconns--;
    bufferevent_free(c->bev);
    free(c);
}

static void respond(conn_t *c, int status, const char *reason, const char *type, const char *extra,
                    struct evbuffer *body, int head_only)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = body ? evbuffer_get_length(body) : 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                        "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                        status, reason, type, n, extra ? extra : "");
    if (body && !head_only)
        evbuffer_add_buffer(out, body);
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
}

/* One request line: "METHOD SP target SP HTTP/1.x" (RFC 9112 3). Only GET and HEAD of the
 * configured path are served; the query is ignored. */
static void serve(conn_t *c, char *line)
{
    char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        respond(c, 400, "Bad Request", "text/plain", NULL, NULL, 0);
        return;
    }
    *sp1 = *sp2 = '\0';
    char *target = sp1 + 1, *q = strchr(target, '?');
    if (q)
        *q = '\0';
    int head = strcmp(line, "HEAD") == 0;
    if (!head && strcmp(line, "GET") != 0) {
        /* RFC 9110 15.5.6: a 405 names the methods the resource allows */
        respond(c, 405, "Method Not Allowed", "text/plain", "Allow: GET, HEAD\r\n", NULL, 0);
        return;
    }
    if (strcmp(target, c->h->path) != 0) {
        respond(c, 404, "Not Found", "text/plain", NULL, NULL, 0);
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (body == NULL || c->h->fn(c->h->arg, body) != 0)
        respond(c, 500, "Internal Server Error", "text/plain", NULL, NULL, 0);
    else
        respond(c, 200, "OK", FG_METRICS_CONTENT_TYPE, NULL, body, head);
    if (body)
        evbuffer_free(body);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->closing)
        return;
    /* the whole head first: the request line alone could be followed by unread fields */
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > MAX_HEAD)
            respond(c, 431, "Request Header Fields Too Large", "text/plain", NULL, NULL, 0);
        return;
    }
    size_t len;
    char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
    if (line == NULL) {
        respond(c, 400, "Bad Request", "text/plain", NULL, NULL, 0);
        return;
    }
    serve(c, line);
    free(line);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg); /* EOF, error or the head timeout */
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    fg_metrics_http_t *h = arg;
    conn_t *c = h->nconns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
    struct bufferevent *bev = NULL;
    if (c != NULL)
        bev = bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        free(c);
        close(fd);
        return;
    }
    c->bev = bev;
    c->h = h;
    c->next = h->conns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &h->conns;
    h->conns = c;
    h->nconns++;
    struct timeval tv = {HEAD_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int open_socket(const fg_config_t *cfg, char *err, size_t errlen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&cfg->metrics_addr;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        bind(fd, sa, cfg->metrics_addrlen) == -1 || listen(fd, 64) == -1) {
        snprintf(err, errlen, "metrics.listen %s: %s", cfg->metrics_listen, strerror(errno));
        if (fd != -1)
            close(fd);
        return -1;
    }
    return fd;
}

fg_metrics_http_t *fg_metrics_http_new(struct event_base *base, const fg_config_t *cfg,
                                       fg_metrics_http_fn fn, void *arg, char *err, size_t errlen)
{
    fg_metrics_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->listen = strdup(cfg->metrics_listen)) == NULL ||
        (h->path = strdup(cfg->metrics_path)) == NULL) {
        snprintf(err, errlen, "metrics: out of memory");
        goto out_free;
    }
    h->fn = fn;
    h->arg = arg;
    int fd = open_socket(cfg, err, errlen);
    if (fd < 0)
        goto out_free;
    h->lev = evconnlistener_new(base, on_accept, h, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (h->lev == NULL) {
        snprintf(err, errlen, "metrics.listen %s: cannot register with the event loop",
                 cfg->metrics_listen);
        close(fd);
        goto out_free;
    }
    return h;
out_free:
    if (h) {
        free(h->path);
        free(h->listen);
    }
    free(h);
    return NULL;
}

int fg_metrics_http_apply(fg_metrics_http_t **h, struct event_base *base, const fg_config_t *cfg,
                          fg_metrics_http_fn fn, void *arg, char *err, size_t errlen)
{
    fg_metrics_http_t *cur = *h;
    if (cur && cfg->metrics_listen && strcmp(cur->listen, cfg->metrics_listen) == 0) {
        char *path = strdup(cfg->metrics_path);
        if (path == NULL) {
            snprintf(err, errlen, "metrics: out of memory");
            return -1;
        }
        free(cur->path);
        cur->path = path;
        return 0;
    }
    fg_metrics_http_t *next = NULL;
    if (cfg->metrics_listen) {
        /* the new listener first: when it cannot listen, the old one keeps serving */
        next = fg_metrics_http_new(base, cfg, fn, arg, err, errlen);
        if (next == NULL)
            return -1;
    }
    fg_metrics_http_free(cur);
    *h = next;
    return 0;
}

void fg_metrics_http_free(fg_metrics_http_t *h)
{
    if (h == NULL)
        return;
    while (h->conns)
        conn_free(h->conns);
    evconnlistener_free(h->lev);
    free(h->path);
    free(h->listen);
    free(h);
}

void fg_metrics_http_close_in_child(const fg_metrics_http_t *h)
{
    if (h == NULL)
        return;
    close(evconnlistener_get_fd(h->lev));
    for (const conn_t *c = h->conns; c; c = c->next)
        close(bufferevent_getfd(c->bev));
}
