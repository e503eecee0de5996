#include "worker/upstream/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "shm/health.h"
#include "worker/http/request.h"
#include "worker/core/clock.h"

#define TICK_MAX_MS 100
#define WAIT_MAX_MS 5000

/* One probe in progress: connect, send the GET, read the status line. */
typedef struct probe_s {
    struct probe_s *prev, *next;
    fg_prober_t *pr;
    const fg_cluster_t *cl;
    const fg_destination_t *d;
    int fd;
    struct event *ev;
    uint64_t start_us;
    uint64_t deadline_ms;
    int connected;
    char req[512];
    size_t reqlen, sent;
    char buf[256];
    size_t len;
} probe_t;

struct fg_prober_s {
    fg_worker_t *w;
    struct event *tick;
    uint64_t tick_ms;
    probe_t *probes;
};

static void probe_io(evutil_socket_t fd, short what, void *arg);

int fg_health_parse_status(const char *buf, size_t len)
{
    /* RFC 9112 4: status-line = HTTP-version SP status-code SP [reason-phrase] */
    static const char v[] = "HTTP/1.";
    size_t n = len < 7 ? len : 7;
    if (memcmp(buf, v, n) != 0)
        return -1;
    if (len < 12)
        return 0;
    if (buf[7] < '0' || buf[7] > '9' || buf[8] != ' ')
        return -1;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
        code = code * 10 + (buf[i] - '0');
    }
    return code >= 100 ? code : -1;
}

static void probe_free(probe_t *pb)
{
    fg_prober_t *pr = pb->pr;
    if (pb->prev)
        pb->prev->next = pb->next;
    else
        pr->probes = pb->next;
    if (pb->next)
        pb->next->prev = pb->prev;
    if (pb->ev)
        event_free(pb->ev);
    if (pb->fd >= 0)
        close(pb->fd);
    free(pb);
}

/* Record the outcome in shared memory and log state changes once (by the prober). */
static void probe_done(probe_t *pb, int status, const char *error)
{
    const fg_health_config_t *hc = &pb->cl->health;
    fg_hdest_t *h = pb->d->state;
    int ok = error == NULL &&
             (hc->expected_status ? status == hc->expected_status : status >= 200 && status < 300);
    char why[48];
    if (error == NULL && !ok) {
        snprintf(why, sizeof(why), "status %d", status);
        error = why;
    }
    if (h != NULL) {
        int before = atomic_load(&h->active);
        fg_health_probe_report(h, hc, ok, status, fg_clock_now_us() - pb->start_us, error,
                               fg_clock_wall_ms());
        int after = atomic_load(&h->active);
        if (before != after)
            fg_log_notice("cluster %s destination %s: %s by active check%s%s", pb->cl->id,
                          pb->d->id, after == FG_HS_HEALTHY ? "healthy" : "unhealthy",
                          error ? ": " : "", error ? error : "");
    }
    probe_free(pb);
}

static int arm(probe_t *pb, short what)
{
    uint64_t now = fg_clock_now_ms();
    uint64_t left = pb->deadline_ms > now ? pb->deadline_ms - now : 1;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    if (pb->ev)
        event_free(pb->ev);
    pb->ev = event_new(pb->pr->w->base, pb->fd, what, probe_io, pb);
    return pb->ev && event_add(pb->ev, &tv) == 0 ? 0 : -1;
}

static void probe_io(evutil_socket_t fd, short what, void *arg)
{
    probe_t *pb = arg;
    if (what & EV_TIMEOUT) {
        probe_done(pb, 0, "timeout");
        return;
    }
    if (!pb->connected) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            probe_done(pb, 0, strerror(err));
            return;
        }
        pb->connected = 1;
    }
    if (pb->sent < pb->reqlen) {
        ssize_t n = send(fd, pb->req + pb->sent, pb->reqlen - pb->sent, MSG_NOSIGNAL);
        if (n == -1 && errno != EAGAIN && errno != EINTR) {
            probe_done(pb, 0, strerror(errno));
            return;
        }
        if (n > 0)
            pb->sent += (size_t)n;
        if (arm(pb, pb->sent < pb->reqlen ? EV_WRITE : EV_READ) != 0)
            probe_done(pb, 0, "out of memory");
        return;
    }
    ssize_t n = recv(fd, pb->buf + pb->len, sizeof(pb->buf) - pb->len, 0);
    if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
        if (arm(pb, EV_READ) != 0)
            probe_done(pb, 0, "out of memory");
        return;
    }
    if (n <= 0) {
        probe_done(pb, 0, n == 0 ? "closed before answering" : strerror(errno));
        return;
    }
    pb->len += (size_t)n;
    int status = fg_health_parse_status(pb->buf, pb->len);
    if (status < 0)
        probe_done(pb, 0, "not an HTTP response");
    else if (status > 0)
        probe_done(pb, status, NULL);
    else if (arm(pb, EV_READ) != 0)
        probe_done(pb, 0, "out of memory");
}

/* Start one probe of d; its outcome is reported even when it cannot start. */
static void probe_start(fg_prober_t *pr, const fg_cluster_t *cl, const fg_destination_t *d)
{
    probe_t *pb = calloc(1, sizeof(*pb));
    if (pb == NULL)
        return;
    pb->pr = pr;
    pb->cl = cl;
    pb->d = d;
    pb->next = pr->probes;
    if (pr->probes)
        pr->probes->prev = pb;
    pr->probes = pb;
    pb->start_us = fg_clock_now_us();
    pb->deadline_ms = fg_clock_now_ms() + cl->health.timeout_ms;
    const fg_health_config_t *hc = &cl->health;
    int n = snprintf(pb->req, sizeof(pb->req),
                     "GET %s%s%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fastgateway-health\r\n"
                     "Connection: close\r\n\r\n",
                     d->health_base ? d->health_base : "", hc->path, hc->query ? "?" : "",
                     hc->query ? hc->query : "", d->health_authority ? d->health_authority : "");
    if (n < 0 || (size_t)n >= sizeof(pb->req)) {
        probe_done(pb, 0, "probe request too long");
        return;
    }
    pb->reqlen = (size_t)n;
    pb->fd = socket(d->health_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (pb->fd == -1) {
        probe_done(pb, 0, strerror(errno));
        return;
    }
    if (connect(pb->fd, (const struct sockaddr *)&d->health_addr, d->health_addrlen) == -1 &&
        errno != EINPROGRESS) {
        probe_done(pb, 0, strerror(errno));
        return;
    }
    if (arm(pb, EV_WRITE) != 0)
        probe_done(pb, 0, "out of memory");
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    fg_prober_t *pr = arg;
    const fg_config_t *cfg = pr->w->cfg;
    if (pr->w->retiring)
        return; /* the next generation probes; stop claiming leases */
    uint64_t now = fg_clock_now_ms();
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const fg_cluster_t *cl = &cfg->clusters[i];
        if (!cl->health.active)
            continue;
        for (size_t j = 0; j < cl->ndestinations; j++) {
            const fg_destination_t *d = &cl->destinations[j];
            fg_hdest_t *h = d->state;
            if (!d->enabled || h == NULL)
                continue;
            if (fg_health_probe_claim(h, now, cl->health.interval_ms))
                probe_start(pr, cl, d);
        }
    }
}

int fg_health_first_round_done(const fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const fg_cluster_t *cl = &cfg->clusters[i];
        if (!cl->health.active)
            continue;
        for (size_t j = 0; j < cl->ndestinations; j++) {
            const fg_hdest_t *h = cl->destinations[j].state;
            if (cl->destinations[j].enabled && h && atomic_load(&h->last_probe_wall_ms) == 0)
                return 0;
        }
    }
    return 1;
}

static void on_wait_end(evutil_socket_t fd, short what, void *arg)
{
    *(int *)arg = 1;
}

int fg_health_prober_start(fg_worker_t *w)
{
    const fg_config_t *cfg = w->cfg;
    uint64_t tick = TICK_MAX_MS, wait = 0;
    int any = 0;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const fg_health_config_t *hc = &cfg->clusters[i].health;
        if (!hc->active)
            continue;
        any = 1;
        if (hc->interval_ms / 4 < tick)
            tick = hc->interval_ms / 4 ? hc->interval_ms / 4 : 1;
        if (hc->timeout_ms > wait)
            wait = hc->timeout_ms;
    }
    w->prober = NULL;
    if (!any)
        return 0;
    fg_prober_t *pr = calloc(1, sizeof(*pr));
    if (pr == NULL)
        return -1;
    pr->w = w;
    pr->tick_ms = tick;
    pr->tick = event_new(w->base, -1, EV_PERSIST, on_tick, pr);
    struct timeval tv = {(time_t)(tick / 1000), (suseconds_t)(tick % 1000) * 1000};
    if (pr->tick == NULL || event_add(pr->tick, &tv) != 0) {
        fg_health_prober_free(pr);
        return -1;
    }
    w->prober = pr;
    on_tick(-1, 0, pr);
    /* Start-up: serve nothing until the first round has an answer for every destination. */
    int expired = 0;
    wait = wait + 100 < WAIT_MAX_MS ? wait + 100 : WAIT_MAX_MS;
    struct timeval wt = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    struct event *timer = evtimer_new(w->base, on_wait_end, &expired);
    if (timer == NULL || evtimer_add(timer, &wt) != 0) {
        if (timer)
            event_free(timer);
        return 0;
    }
    while (!expired && !w->retiring && !w->terminating && !fg_health_first_round_done(cfg))
        fg_clock_loop_once(w->base);
    event_free(timer);
    return 0;
}

void fg_health_prober_free(fg_prober_t *pr)
{
    if (pr == NULL)
        return;
    while (pr->probes)
        probe_free(pr->probes);
    if (pr->tick)
        event_free(pr->tick);
    free(pr);
}
