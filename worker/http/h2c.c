#include "worker/http/h2c.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "worker/core/clock.h"
#include "worker/core/connlimit.h"
#include "worker/http/http1.h"
#include "worker/http/http2.h"

/* The client preface (RFC 9113 3.4) that starts an h2c connection. */
#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PREFACE_LEN 24

/* A plaintext connection until its first bytes say which protocol it speaks. They are peeked,
 * not read, so the chosen front end starts on an untouched socket. */
typedef struct {
    fg_session_t session; /* first: the worker's list of sessions */
    fg_worker_t *w;
    const fg_server_t *srv;
    int fd;
    struct event *ev;
    struct sockaddr_storage peer;
    socklen_t len;
    int client_tls;   /* fg_worker_t.accept_client_tls at the start */
    int via_balancer; /* fg_worker_t.accept_balancer was set: balancer holds it */
    struct sockaddr_storage balancer;
    uint64_t deadline_ms;      /* timeouts.header from the accept, however the bytes are paced */
    fg_connlimit_hold_t *hold; /* places under the connection caps, NULL = none */
} sniff_t;

static void sniff_close(fg_session_t *sess)
{
    sniff_t *sn = (sniff_t *)sess;
    event_free(sn->ev);
    close(sn->fd);
    fg_connlimit_give(sn->hold);
    fg_frontend_remove(sn->w, &sn->session);
    free(sn);
}

static void sniff_retire(fg_session_t *sess)
{
    (void)sess; /* the front end it goes to sees the worker retiring */
}

static void hand_over(sniff_t *sn, const fg_frontend_t *fe)
{
    event_free(sn->ev);
    /* The places under the connection caps go with the socket to the front end's conn. */
    sn->w->accept_hold = sn->hold;
    /* The first request stays due timeouts.header after the accept: the wait for the preface
     * counts against it. */
    sn->w->accept_ms = sn->deadline_ms - sn->srv->header_timeout_ms;
    sn->w->accept_client_tls = sn->client_tls;
    sn->w->accept_balancer = sn->via_balancer ? &sn->balancer : NULL;
    /* The next session registers before this one goes: a retiring worker never sees zero. */
    if (fe->start(sn->w, sn->srv, sn->fd, &sn->peer, sn->len) != 0)
        close(sn->fd);
    else
        fg_frontend_handed_over(sn->w);
    sn->w->accept_ms = 0;
    sn->w->accept_client_tls = 0;
    sn->w->accept_balancer = NULL;
    fg_connlimit_accept_done(sn->w);
    fg_frontend_remove(sn->w, &sn->session);
    free(sn);
}

/* A prefix of the preface: wait for the rest (edge-triggered: new bytes wake us) until the
 * deadline. A persistent event's timeout restarts at every wake-up, so a client sending a byte
 * at a time would hold the connection a timeout per byte; the timeout is set to what is left. */
static void wait_rest(sniff_t *sn)
{
    uint64_t now = fg_clock_now_ms();
    uint64_t left = sn->deadline_ms > now ? sn->deadline_ms - now : 0;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    if (left == 0 || event_add(sn->ev, &tv) != 0)
        sniff_close(&sn->session);
}

/* Whether the peer has closed its side or reset the connection. A peek shows the bytes before
 * a FIN or a reset, never the end itself, so a client that sends part of the preface and goes
 * would otherwise hold its connection (and its place under the server's caps) until the
 * deadline. Asked only while a prefix of the preface waits for the rest. */
static int peer_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static void on_sniff(evutil_socket_t fd, short what, void *arg)
{
    sniff_t *sn = arg;
    if (what & EV_TIMEOUT) {
        sniff_close(&sn->session);
        return;
    }
    char buf[PREFACE_LEN];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
    if (n == -1 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        sniff_close(&sn->session);
        return;
    }
    if (memcmp(buf, PREFACE, (size_t)n) != 0)
        hand_over(sn, &fg_http1_frontend);
    else if (n == PREFACE_LEN)
        hand_over(sn, &fg_http2_frontend);
    else if (peer_gone(fd))
        sniff_close(&sn->session); /* the peer ended (FIN or reset) before the preface could */
    else
        wait_rest(sn);
}

static int sniff_start(fg_worker_t *w, const fg_server_t *srv, int fd,
                       const struct sockaddr_storage *peer, socklen_t len)
{
    sniff_t *sn = calloc(1, sizeof(*sn));
    if (sn == NULL)
        return -1;
    /* after a PROXY protocol header, the accept was earlier than now (w->accept_ms) */
    uint64_t now = fg_clock_now_ms(),
             from = w->accept_ms != 0 && w->accept_ms <= now ? w->accept_ms : now;
    *sn = (sniff_t){.w = w,
                    .srv = srv,
                    .fd = fd,
                    .peer = *peer,
                    .len = len,
                    .client_tls = w->accept_client_tls,
                    .via_balancer = w->accept_balancer != NULL,
                    .deadline_ms = from + srv->header_timeout_ms};
    if (w->accept_balancer != NULL)
        sn->balancer = *w->accept_balancer;
    sn->ev = event_new(w->base, fd, EV_READ | EV_ET | EV_PERSIST, on_sniff, sn);
    /* What is left of timeouts.header from the accept (a PROXY protocol header's wait counts
     * against it, as in the HTTP/1.1 front end); at least 1 ms, so that bytes already there
     * are looked at first. */
    uint64_t left = sn->deadline_ms > now + 1 ? sn->deadline_ms - now : 1;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    if (sn->ev == NULL || event_add(sn->ev, &tv) != 0) {
        if (sn->ev)
            event_free(sn->ev);
        free(sn);
        return -1;
    }
    sn->hold = w->accept_hold; /* until the socket has a conn */
    w->accept_hold = NULL;
    fg_frontend_add(w, &sn->session, &fg_h2c_frontend);
    return 0;
}

const fg_frontend_t fg_h2c_frontend = {
    .name = "h2c",
    .slot = FG_FRONTEND_SLOTS - 1, /* keeps no worker-wide state */
    .start = sniff_start,
    .retire = sniff_retire,
    .close_idle = sniff_close,
    .close = sniff_close,
};
