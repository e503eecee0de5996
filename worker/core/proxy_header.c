#include "worker/core/proxy_header.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/iprange.h"
#include "common/log.h"
#include "common/proxy_protocol.h"
#include "shm/metrics.h"
#include "worker/core/clock.h"

#define SLOT 4 /* fg_worker_t.frontend_state */

typedef struct pending_s {
    fg_session_t session; /* first: the worker's list of sessions */
    fg_worker_t *w;
    const fg_server_t *srv;
    int fd;
    struct sockaddr_storage peer;
    socklen_t len;
    fg_proxy_header_next_fn next;
    struct event *ev;
    uint64_t deadline_ms;
    struct pending_s *prev, *older_next; /* the worker's FIFO of pending headers */
    size_t have;                         /* header bytes read so far into buf */
    uint8_t buf[FG_PROXY_PROTOCOL_MAX];
} pending_t;

/* Lines about closed connections a worker writes per second, at most: a client that opens
 * connections as fast as it can (a scanner, a flood of bad headers or untrusted peers) would
 * otherwise write a line each, tens of thousands a second. The next line written says how
 * many were left out. */
#define LOG_PER_SECOND 20

/* Worker-wide: the connections waiting for their header, oldest first. */
typedef struct {
    pending_t *first, *last;
    unsigned n;
    uint64_t log_second;          /* the second (fg_clock_now_ms / 1000) lines are counted in */
    unsigned log_lines;           /* written in it */
    unsigned long long log_quiet; /* left out since the last line written */
} pstate_t;

static pstate_t *pstate(fg_worker_t *w)
{
    if (w->frontend_state[SLOT] == NULL)
        w->frontend_state[SLOT] = calloc(1, sizeof(pstate_t));
    return w->frontend_state[SLOT];
}

/* An info line "proxy protocol: <text>", within LOG_PER_SECOND. */
static void pp_log(fg_worker_t *w, const char *text)
{
    pstate_t *ps = pstate(w);
    if (ps != NULL) {
        uint64_t sec = fg_clock_now_ms() / 1000;
        if (sec != ps->log_second) {
            ps->log_second = sec;
            ps->log_lines = 0;
        }
        if (ps->log_lines >= LOG_PER_SECOND) {
            ps->log_quiet++;
            return;
        }
        ps->log_lines++;
        if (ps->log_quiet > 0) {
            fg_log_info("proxy protocol: %s (%llu more line(s) left out since the last one)", text,
                        ps->log_quiet);
            ps->log_quiet = 0;
            return;
        }
    }
    fg_log_info("proxy protocol: %s", text);
}

static void unlink_pending(pending_t *p)
{
    pstate_t *ps = p->w->frontend_state[SLOT];
    *(p->prev ? &p->prev->older_next : &ps->first) = p->older_next;
    *(p->older_next ? &p->older_next->prev : &ps->last) = p->prev;
    ps->n--;
    fg_frontend_remove(p->w, &p->session);
}

static void forget_fd(pending_t *p)
{
    if (p->ev)
        event_free(p->ev);
    p->ev = NULL;
}

static void drop(pending_t *p, const char *why)
{
    char peer[64], text[256];
    if (why != NULL) { /* NULL: the worker closes it (drain period over, exit) */
        fg_metrics_add(p->srv->metrics, FG_MS_REFUSED_PROXY, 1);
        snprintf(text, sizeof(text), "%s, peer: %s, server: %s", why,
                 fg_ip_format_peer(&p->peer, peer, sizeof(peer)), p->srv->id);
        pp_log(p->w, text);
    }
    forget_fd(p);
    close(p->fd);
    unlink_pending(p);
    free(p);
}

/* The rest of the accept path takes the connection; this session goes after the next one is
 * registered, so a retiring worker never sees zero sessions in between. */
static void hand_over(pending_t *p, const fg_proxy_protocol_t *h, int data_ready)
{
    const struct sockaddr_storage *peer = h->local ? &p->peer : &h->src;
    socklen_t len = h->local ? p->len : h->len;
    forget_fd(p);
    /* the header's wait counts against the protocol's own first timeout (timeouts.header) */
    p->w->accept_ms = p->deadline_ms - p->srv->proxy_protocol.timeout_ms;
    p->w->accept_client_tls = h->client_tls;
    p->w->accept_balancer = h->local ? NULL : &p->peer;
    int rc = p->next(p->w, p->srv, p->fd, peer, len, data_ready);
    p->w->accept_ms = 0;
    p->w->accept_client_tls = 0;
    p->w->accept_balancer = NULL;
    if (rc != 0)
        close(p->fd);
    else
        fg_frontend_handed_over(p->w);
    unlink_pending(p);
    free(p);
}

/* Read what has arrived of the header, never past its end: the bytes after it belong to the
 * TLS handshake or the protocol. Bytes are looked at with MSG_PEEK; while the header is
 * incomplete every byte seen is a header byte, and is taken out of the socket (so that a
 * level-triggered readiness does not fire again for bytes already seen). Returns 1 when p is
 * gone (handed over or dropped), 0 when it waits for more. */
static int try_header(pending_t *p)
{
    ssize_t n = recv(p->fd, p->buf + p->have, sizeof(p->buf) - p->have, MSG_PEEK);
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n <= 0) {
        drop(p, n == 0 ? "closed before the end of its header" : strerror(errno));
        return 1;
    }
    fg_proxy_protocol_t h;
    const char *why = NULL;
    size_t seen = p->have + (size_t)n;
    int hl = fg_proxy_protocol_parse(p->buf, seen, &h, &why);
    if (hl < 0) {
        drop(p, why);
        return 1;
    }
    size_t take = hl == 0 ? (size_t)n : (size_t)hl - p->have;
    if (recv(p->fd, p->buf + p->have, take, 0) != (ssize_t)take) {
        drop(p, "the socket lost bytes it had shown");
        return 1;
    }
    p->have += take;
    if (hl == 0)
        return 0;
    hand_over(p, &h, seen > (size_t)hl);
    return 1;
}

static int arm(pending_t *p)
{
    uint64_t now = fg_clock_now_ms();
    uint64_t left = p->deadline_ms > now ? p->deadline_ms - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    return event_add(p->ev, &tv);
}

static void on_ready(evutil_socket_t fd, short what, void *arg)
{
    pending_t *p = arg;
    (void)fd;
    fg_clock_busy();
    if (what & EV_TIMEOUT) {
        drop(p, "no complete header within proxyProtocol.timeout");
        return;
    }
    if (try_header(p) == 0 && arm(p) != 0)
        drop(p, "out of memory");
}

static void fe_retire(fg_session_t *s)
{
    (void)s; /* the header is read; the front end it goes to sees the worker retiring */
}

/* A connection without its header has no request in flight: the drain period's end and the
 * worker's exit close it. */
static void fe_close(fg_session_t *s)
{
    drop((pending_t *)s, NULL);
}

static void fe_release(fg_worker_t *w)
{
    free(w->frontend_state[SLOT]);
    w->frontend_state[SLOT] = NULL;
}

const fg_frontend_t fg_proxy_header_frontend = {
    .name = "proxy",
    .slot = SLOT,
    .retire = fe_retire,
    .close_idle = fe_close,
    .close = fe_close,
    .release = fe_release,
};

static int trusted(const fg_server_t *srv, const struct sockaddr_storage *peer)
{
    const fg_proxy_protocol_config_t *pp = &srv->proxy_protocol;
    fg_ip_t ip;
    if (pp->ntrusted_peers == 0)
        return 1;
    return fg_ip_from_sockaddr((const struct sockaddr *)peer, &ip) == 0 &&
           fg_iprange_set_contains(&pp->trusted, &ip);
}

int fg_proxy_header_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                           const struct sockaddr_storage *peer, socklen_t len, int data_ready,
                           fg_proxy_header_next_fn next)
{
    char addr[64], text[256];
    if (!trusted(srv, peer)) {
        fg_metrics_add(srv->metrics, FG_MS_REFUSED_PROXY, 1);
        snprintf(text, sizeof(text), "peer %s is not in proxyProtocol.trustedPeers, server: %s",
                 fg_ip_format_peer(peer, addr, sizeof(addr)), srv->id);
        pp_log(w, text);
        return -1;
    }
    pstate_t *ps = pstate(w);
    pending_t *p = malloc(sizeof(*p));
    if (ps == NULL || p == NULL) {
        free(p);
        return -1;
    }
    *p = (pending_t){.w = w, .srv = srv, .fd = fd, .peer = *peer, .len = len, .next = next};
    p->deadline_ms = fg_clock_now_ms() + srv->proxy_protocol.timeout_ms;
    p->prev = ps->last;
    *(ps->last ? &ps->last->older_next : &ps->first) = p;
    ps->last = p;
    ps->n++;
    fg_frontend_add(w, &p->session, &fg_proxy_header_frontend);
    if (ps->n > FG_PROXY_HEADER_PENDING_MAX) /* the oldest is older than p */
        drop(ps->first, "closed: more than 1024 connections wait for their header in this worker");
    p->ev = event_new(w->base, fd, EV_READ, on_ready, p);
    if (p->ev == NULL) {
        drop(p, "out of memory");
        return 0;
    }
    if (data_ready && try_header(p))
        return 0;
    if (arm(p) != 0)
        drop(p, "out of memory");
    return 0;
}
