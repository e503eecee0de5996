#include "worker/upstream/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "shm/health.h"
#include "worker/http/request.h"
#include "worker/upstream/client.h"
#include "worker/core/clock.h"

#define TICK_MAX_MS 100
#define WAIT_MAX_MS 5000

/* One probe in progress: a GET through the HTTP/1.1 client, judged by its status. */
typedef struct probe_s {
    struct probe_s *prev, *next;
    fg_prober_t *pr;
    const fg_cluster_t *cl;
    const fg_destination_t *d;
    fg_exchange_t *x;
    struct event *deadline; /* the whole probe's timeout */
    uint64_t start_us;
    char target[400]; /* base path + path */
    fg_http_header_t fields[3];
} probe_t;

struct fg_prober_s {
    fg_worker_t *w;
    struct event *tick;
    uint64_t tick_ms;
    probe_t *probes;
};

static void probe_free(probe_t *pb)
{
    fg_prober_t *pr = pb->pr;
    if (pb->prev)
        pb->prev->next = pb->next;
    else
        pr->probes = pb->next;
    if (pb->next)
        pb->next->prev = pb->prev;
    if (pb->deadline)
        event_free(pb->deadline);
    if (pb->x)
        fg_exchange_close(pb->x);
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

static void probe_timeout(evutil_socket_t fd, short what, void *arg)
{
    probe_done(arg, 0, "timeout");
}

static void probe_ready(void *arg) {}

static int probe_interim(void *arg, int status, fg_http_header_t *h, size_t n)
{
    return 0;
}

/* Judged by the final status alone: the body is never read. */
static int probe_head(void *arg, const fg_exchange_head_t *head)
{
    probe_done(arg, head->status, NULL);
    return -1;
}

static int probe_body(void *arg, struct evbuffer *data)
{
    return 0;
}

static void probe_end(void *arg) {}

static void probe_error(void *arg, const fg_exchange_fail_t *f)
{
    probe_t *pb = arg;
    switch (f->kind) {
    case FG_XERR_CONNECT_TIMEOUT:
    case FG_XERR_SEND_TIMEOUT:
    case FG_XERR_READ_TIMEOUT:
        probe_done(pb, 0, "timeout");
        return;
    case FG_XERR_EOF:
    case FG_XERR_EOF_BODY:
        probe_done(pb, 0, "closed before answering");
        return;
    case FG_XERR_INVALID:
        probe_done(pb, 0, "not an HTTP response");
        return;
    case FG_XERR_TLS:
        probe_done(pb, 0, f->err == ETIMEDOUT ? "TLS handshake timeout" : f->detail);
        return;
    default:
        probe_done(pb, 0, f->err ? strerror(f->err) : "failed");
        return;
    }
}

static const fg_exchange_cbs_t probe_cbs = {
    .on_send_ready = probe_ready,
    .on_interim = probe_interim,
    .on_head = probe_head,
    .on_body = probe_body,
    .on_end = probe_end,
    .on_error = probe_error,
};

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
    const fg_health_config_t *hc = &cl->health;
    int n = snprintf(pb->target, sizeof(pb->target), "%s%s", d->health_base ? d->health_base : "",
                     hc->path);
    if (n < 0 || (size_t)n >= sizeof(pb->target)) {
        probe_done(pb, 0, "probe request too long");
        return;
    }
    pb->fields[0] = (fg_http_header_t){FG_STR_LIT("Host"),
                                       fg_str(d->health_authority ? d->health_authority : "")};
    pb->fields[1] = (fg_http_header_t){FG_STR_LIT("User-Agent"), FG_STR_LIT("fastgateway-health")};
    pb->fields[2] = (fg_http_header_t){FG_STR_LIT("Connection"), FG_STR_LIT("close")};
    fg_outreq_t out = {FG_STR_LIT("GET"),
                       {pb->target, (size_t)n},
                       hc->query ? fg_str(hc->query) : FG_STR_NULL,
                       {pb->fields, 3, 3, NULL}};
    fg_exchange_req_t rq = {.out = &out, .content_length = -1};
    /* The health target over TLS when it is https, with the cluster's client context (SNI,
     * verification, client certificate, session); fresh and "Connection: close", so never
     * pooled. */
    fg_exchange_target_t t = {.w = pr->w,
                              .cl = cl,
                              .di = (size_t)(d - cl->destinations),
                              .probe = 1,
                              .fresh = 1,
                              .connect_timeout_ms = hc->timeout_ms,
                              .activity_timeout_ms = hc->timeout_ms};
    struct timeval tv = {(time_t)(hc->timeout_ms / 1000),
                         (suseconds_t)(hc->timeout_ms % 1000) * 1000};
    pb->deadline = evtimer_new(pr->w->base, probe_timeout, pb);
    if (pb->deadline == NULL || evtimer_add(pb->deadline, &tv) != 0) {
        probe_done(pb, 0, "out of memory");
        return;
    }
    pb->x = fg_client_start(&t, &rq, &probe_cbs, pb);
    if (pb->x == NULL) {
        probe_done(pb, 0, strerror(errno));
        return;
    }
    /* a pooled connection never: the first send_body only ends the (empty) body */
    fg_exchange_send_body(pb->x, NULL, 1);
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
            /* a tunnel destination's health is its agent's presence (docs/tunnels.md) */
            if (!d->enabled || h == NULL || d->tunnel)
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
            if (cl->destinations[j].enabled && !cl->destinations[j].tunnel && h &&
                atomic_load(&h->last_probe_wall_ms) == 0)
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
