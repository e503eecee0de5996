/* See agent/agent.h. */
#include "agent/agent.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "agent/backoff.h"
#include "agent/dial.h"
#include "agent/resolve.h"
#include "agent/runtime.h"
#include "agent/services.h"
#include "agent/tunnel.h"
#include "common/log.h"
#include "worker/core/clock.h"

/* DUPLICATE answers in a row (the connection landed on a gateway worker that holds one of
 * ours) before the agent waits a backoff delay: the kernel spreads new connections over the
 * gateway's workers, so a few attempts find a free one. */
#define DUPLICATE_TRIES 8

/* One configuration and what is built from it; tunnels dialed under it keep it alive. Its
 * tunnels are one instance of the agent for the gateway (common/tunnel_proto.h). */
typedef struct gen_s {
    fg_agent_config_t *cfg;
    SSL_CTX *ctx;
    fg_agent_rt_t *rt;
    unsigned tunnels;
    uint8_t instance[FG_TUNNEL_INSTANCE_LEN];
    struct gen_s *next;
} gen_t;

typedef struct tlink_s {
    fg_tunnel_t *t;
    gen_t *gen;
    unsigned moving : 1;  /* the gateway asked for its replacement (RECONNECT) */
    unsigned retired : 1; /* finishing its streams */
    unsigned served : 1;  /* it came up */
    struct tlink_s *next;
} tlink_t;

struct fg_agent_s {
    struct event_base *base;
    struct evdns_base *dns; /* the gateway's name, resolved off the loop (agent/resolve.h) */
    gen_t *gens;            /* newest first: gens is the current configuration */
    tlink_t *tunnels;
    fg_tunnel_t *cur; /* the one attempt under way; NULL: none */
    unsigned workers; /* the gateway's worker count, from the last OK (0: not said) */
    unsigned dups;    /* DUPLICATE answers in a row */
    fg_backoff_t backoff;
    struct event *retry, *sweep, *trim;
    struct event *drain; /* the end of a graceful stop's drain time */
    struct event *sigs[4];
    fg_services_lookup_t *reloading; /* a reload waiting for its services' names */
    fg_agent_config_t *reload_cfg;   /* its configuration */
    int status;
    unsigned stopping : 1; /* TERM: no new tunnel, the streams finish, then exit */
};

static void on_up(void *arg, fg_tunnel_t *t);
static void on_reconnect(void *arg, fg_tunnel_t *t);
static void reload_cancel(fg_agent_t *a);
static void on_gone(void *arg, fg_tunnel_t *t, const char *why, uint64_t up_ms, int auth);
static const fg_tunnel_cbs_t tunnel_cbs = {on_up, on_reconnect, on_gone};

static void gen_free(gen_t *g)
{
    fg_agent_rt_free(g->rt);
    if (g->ctx)
        SSL_CTX_free(g->ctx);
    fg_agent_config_free(g->cfg);
    free(g);
}

static void on_session(void *arg, fg_agent_rt_t *rt, fg_session_t *s, int added)
{
    fg_agent_t *a = arg;
    for (tlink_t *l = a->tunnels; l; l = l->next)
        if (fg_tunnel_rt(l->t) == rt && fg_tunnel_session(l->t, s, added))
            return;
}

/* A generation for cfg (owned from now on on success). NULL with err. */
static gen_t *gen_new(fg_agent_t *a, fg_agent_config_t *cfg, char *err, size_t errlen)
{
    gen_t *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->tls && (g->ctx = fg_dial_tls_ctx(cfg, err, errlen)) == NULL) {
        free(g);
        return NULL;
    }
    g->rt = fg_agent_rt_new(a->base, cfg, on_session, a, err, errlen);
    if (g->rt == NULL) {
        /* Once more with libcrypto's reason strings, so that the message names the reason
         * (an https service's CA file, say); a failed build has no side effect. */
        fg_dial_error_strings();
        g->rt = fg_agent_rt_new(a->base, cfg, on_session, a, err, errlen);
    }
    if (g->rt == NULL) {
        if (g->ctx)
            SSL_CTX_free(g->ctx);
        free(g);
        return NULL;
    }
    if (RAND_bytes(g->instance, sizeof(g->instance)) != 1) {
        snprintf(err, errlen, "no random bytes for the instance token");
        fg_agent_rt_free(g->rt);
        if (g->ctx)
            SSL_CTX_free(g->ctx);
        free(g);
        return NULL;
    }
    g->cfg = cfg;
    g->next = a->gens;
    a->gens = g;
    return g;
}

static tlink_t *link_of(fg_agent_t *a, const fg_tunnel_t *t)
{
    tlink_t *l = a->tunnels;
    while (l && l->t != t)
        l = l->next;
    return l;
}

/* Tunnels of the current configuration that serve and stay (not moving, not retired). */
static unsigned serving(const fg_agent_t *a)
{
    unsigned n = 0;
    for (const tlink_t *l = a->tunnels; l; l = l->next)
        n += l->gen == a->gens && !l->moving && !l->retired && fg_tunnel_is_up(l->t);
    return n;
}

/* How many tunnels to keep: the configured number, or one per gateway worker. */
static unsigned wanted(const fg_agent_t *a)
{
    unsigned n = a->gens->cfg->connections;
    if (n == 0)
        n = a->workers ? a->workers : 1;
    return n < FG_AGENT_CONNECTIONS_MAX ? n : FG_AGENT_CONNECTIONS_MAX;
}

static void dial(fg_agent_t *a)
{
    gen_t *g = a->gens;
    fg_tunnel_t *t = fg_tunnel_open(a->base, a->dns, g->cfg, g->ctx, g->rt, &tunnel_cbs, a);
    tlink_t *l = t ? calloc(1, sizeof(*l)) : NULL;
    if (l == NULL) {
        fg_tunnel_free(t);
        fg_log_error("tunnel: out of memory; retrying in 1 s");
        struct timeval tv = {1, 0};
        evtimer_add(a->retry, &tv);
        return;
    }
    /* With a tunnel serving, this one is wanted on another gateway worker. */
    int extra = serving(a) > 0;
    fg_tunnel_join(t, g->instance, extra);
    fg_log_debug("tunnel: dialing %s (%s)", g->cfg->gateway, extra ? "extra" : "first");
    l->t = t;
    l->gen = g;
    l->next = a->tunnels;
    a->tunnels = l;
    g->tunnels++;
    a->cur = t;
}

/* One attempt at a time, until the wanted number serves; none while a delay runs or once
 * the agent stops. */
static void fill(fg_agent_t *a)
{
    if (!a->stopping && a->cur == NULL && !evtimer_pending(a->retry, NULL) &&
        serving(a) < wanted(a))
        dial(a);
}

static void retry_in(fg_agent_t *a, uint64_t delay)
{
    struct timeval tv = {(time_t)(delay / 1000), (suseconds_t)(delay % 1000) * 1000};
    evtimer_add(a->retry, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fill(arg);
}

/* Old generations that no tunnel uses any more; from the loop, never inside a session. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    fg_agent_t *a = arg;
    (void)fd;
    (void)what;
    gen_t **pp = &a->gens[0].next;
    while (*pp) {
        gen_t *g = *pp;
        if (g->tunnels == 0 && fg_agent_rt_sessions(g->rt) == 0) {
            *pp = g->next;
            gen_free(g);
        } else {
            pp = &g->next;
        }
    }
}

/* Memory that a burst of streams took (their pools, buffers, the destination connections'
 * buffers) goes back to malloc when they end, but the worker keeps up to 64 request pools for
 * reuse and glibc keeps freed pages in the heap: an idle agent would stay near its peak. Every
 * TRIM_MS the spare pools are freed and the free pages go back to the kernel (madvise), which
 * costs little on a heap of a few MB. */
#define TRIM_MS 5000
/* Free heap kept at the top between trims (mallopt M_TRIM_THRESHOLD). */
#define HEAP_KEEP (1024 * 1024)

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    fg_agent_t *a = arg;
    (void)fd;
    (void)what;
    for (gen_t *g = a->gens; g; g = g->next)
        fg_agent_rt_trim(g->rt);
    malloc_trim(0);
}

static void retire(tlink_t *l)
{
    l->retired = 1;
    fg_tunnel_retire(l->t);
}

static void on_up(void *arg, fg_tunnel_t *t)
{
    fg_agent_t *a = arg;
    tlink_t *l = link_of(a, t);
    fg_log_notice("tunnel: up to %s as \"%s\"", a->gens->cfg->gateway, a->gens->cfg->id);
    if (l != NULL)
        l->served = 1;
    if (t != a->cur || l == NULL)
        return;
    a->cur = NULL;
    a->dups = 0;
    if (fg_tunnel_workers(t) != 0)
        a->workers = fg_tunnel_workers(t);
    /* The new tunnel serves: tunnels of older configurations, and one that the gateway asked
     * to replace, finish their streams and close (RFC 9113 6.8). */
    int replaced = 0;
    for (tlink_t *o = a->tunnels; o; o = o->next) {
        if (o == l || o->retired)
            continue;
        if (o->gen != l->gen) {
            retire(o);
        } else if (o->moving && !replaced) {
            replaced = 1;
            retire(o);
        }
    }
    fill(a);
}

static void on_reconnect(void *arg, fg_tunnel_t *t)
{
    fg_agent_t *a = arg;
    if (a->stopping)
        return;
    tlink_t *l = link_of(a, t);
    if (l == NULL || l->moving || l->retired) {
        fg_log_info("tunnel: RECONNECT on a tunnel already being replaced");
        return;
    }
    fg_log_notice("tunnel: the gateway asked for a new tunnel (RECONNECT): dialing now");
    l->moving = 1;
    fill(a);
}

/* An attempt ended without serving. */
static void attempt_failed(fg_agent_t *a, fg_tunnel_t *t, const char *why, int auth)
{
    const fg_agent_config_t *cfg = a->gens->cfg;
    if (fg_tunnel_duplicate(t) && ++a->dups < DUPLICATE_TRIES) {
        fg_log_debug("tunnel: %s; dialing again", why);
        fill(a);
        return;
    }
    uint64_t delay = fg_backoff_next(&a->backoff);
    if (fg_tunnel_duplicate(t))
        fg_log_info("tunnel: %u connection(s) on distinct gateway workers after %d attempts; "
                    "trying again in %llu ms",
                    serving(a), DUPLICATE_TRIES, (unsigned long long)delay);
    else
        fg_log(auth ? FG_LOG_ERROR : FG_LOG_WARN, "tunnel: %s: %s; retrying in %llu ms",
               cfg->gateway, why, (unsigned long long)delay);
    a->dups = 0;
    retry_in(a, delay);
}

static void stop(fg_agent_t *a);

/* A tunnel ended during a graceful stop; the last one ends the agent. */
static void drained(fg_agent_t *a, fg_tunnel_t *t, const char *why)
{
    tlink_t **pp = &a->tunnels;
    while (*pp && (*pp)->t != t)
        pp = &(*pp)->next;
    if (*pp) {
        tlink_t *l = *pp;
        *pp = l->next;
        l->gen->tunnels--;
        free(l);
    }
    if (t == a->cur)
        a->cur = NULL;
    fg_log_info("stopping: a tunnel closed: %s", why);
    if (a->tunnels == NULL) {
        fg_log_notice("stopping: every tunnel closed");
        stop(a);
    }
}

static void on_drain_over(evutil_socket_t fd, short what, void *arg)
{
    fg_agent_t *a = arg;
    (void)fd;
    (void)what;
    fg_log_warn("stopping: shutdownTimeoutMs (%llu) is over: closing the tunnels with their "
                "streams",
                (unsigned long long)a->gens->cfg->shutdown_timeout_ms);
    stop(a);
}

/* TERM: like the gateway's graceful stop. Each serving tunnel sends GOAWAY (RFC 9113 6.8), so
 * the gateway opens no new stream on it, finishes its streams and closes with a WebSocket
 * close 1001; a tunnel still dialing closes at once. The agent exits when the last one is
 * gone, or when shutdownTimeoutMs is over. */
static void stop_gracefully(fg_agent_t *a)
{
    uint64_t ms = a->gens->cfg->shutdown_timeout_ms;
    a->stopping = 1;
    reload_cancel(a);
    evtimer_del(a->retry);
    if (a->tunnels == NULL) {
        stop(a);
        return;
    }
    fg_log_notice("stopping: the tunnels finish their streams (at most %llu ms; TERM again or "
                  "INT to stop at once)",
                  (unsigned long long)ms);
    for (tlink_t *l = a->tunnels; l; l = l->next)
        fg_tunnel_drain(l->t);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(a->drain, &tv);
}

static void on_gone(void *arg, fg_tunnel_t *t, const char *why, uint64_t up_ms, int auth)
{
    fg_agent_t *a = arg;
    if (a->stopping) {
        drained(a, t, why);
        return;
    }
    tlink_t **pp = &a->tunnels, *l = NULL;
    while (*pp && (*pp)->t != t)
        pp = &(*pp)->next;
    int stayed = 0; /* a serving tunnel that was neither moving nor retired */
    if (*pp) {
        l = *pp;
        *pp = l->next;
        l->gen->tunnels--;
        stayed = l->served && l->gen == a->gens && !l->moving && !l->retired;
        free(l);
    }
    event_active(a->sweep, EV_WRITE, 1);
    const fg_agent_config_t *cfg = a->gens->cfg;
    if (up_ms > 0)
        fg_log_notice("tunnel: closed after %llu s up: %s", (unsigned long long)(up_ms / 1000),
                      why);
    if (t == a->cur) {
        a->cur = NULL;
        attempt_failed(a, t, why, auth);
        return;
    }
    if (!stayed) {
        fill(a); /* a moving or retired tunnel ended: its replacement may still be wanted */
        return;
    }
    /* A serving tunnel was lost: the next attempt after the backoff delay. */
    if (up_ms >= cfg->stable_ms)
        fg_backoff_reset(&a->backoff);
    if (a->cur != NULL || evtimer_pending(a->retry, NULL))
        return;
    uint64_t delay = fg_backoff_next(&a->backoff);
    fg_log_notice("tunnel: reconnecting in %llu ms", (unsigned long long)delay);
    retry_in(a, delay);
}

static void stop(fg_agent_t *a)
{
    reload_cancel(a);
    evtimer_del(a->retry);
    /* A sweep made due by a tunnel that ended in this same loop turn would meet the freed
     * runtimes below. */
    event_del(a->sweep);
    evtimer_del(a->drain);
    /* Runtimes close their sessions (without telling anyone), then tunnels go quietly. */
    for (gen_t *g = a->gens; g; g = g->next) {
        fg_agent_rt_free(g->rt);
        g->rt = NULL;
    }
    while (a->tunnels) {
        tlink_t *l = a->tunnels;
        a->tunnels = l->next;
        fg_tunnel_free(l->t);
        free(l);
    }
    a->cur = NULL;
    event_base_loopexit(a->base, NULL);
}

/* Drop a reload still waiting for its services' names. */
static void reload_cancel(fg_agent_t *a)
{
    fg_services_cancel(a->reloading);
    a->reloading = NULL;
    fg_agent_config_free(a->reload_cfg);
    a->reload_cfg = NULL;
}

/* The new configuration's service names are resolved (or one failed): switch to it. */
static void on_reload_resolved(void *arg, fg_agent_config_t *cfg, const char *why)
{
    fg_agent_t *a = arg;
    char err[1200];
    a->reloading = NULL;
    a->reload_cfg = NULL;
    if (why != NULL)
        snprintf(err, sizeof(err), "%s", why);
    if (why != NULL || gen_new(a, cfg, err, sizeof(err)) == NULL) {
        fg_agent_config_free(cfg);
        fg_log_error("reload failed, the running configuration stays: %s", err);
        return;
    }
    fg_log_set_level(cfg->log_level);
    fg_resolve_base_reload(a->dns);
    fg_log_notice("reloaded: %zu service(s); a new tunnel replaces the current one",
                  cfg->nservices);
    fg_backoff_init(&a->backoff, cfg->initial_ms, cfg->max_ms, cfg->jitter, 0);
    /* A tunnel still dialing under the old file is dropped; those serving stay until the new
     * configuration's first is up (on_up retires them). Its instance is a new one: that
     * first tunnel takes over at the gateway. */
    for (tlink_t *l = a->tunnels; l; l = l->next)
        if (!fg_tunnel_is_up(l->t))
            retire(l);
    evtimer_del(a->retry);
    a->cur = NULL;
    a->dups = 0;
    dial(a);
}

/* SIGHUP: read the file again; the switch waits for the services' names off the loop
 * (agent/services.h), the tunnels serving meanwhile. A reload still waiting is replaced. */
static void reload(fg_agent_t *a)
{
    char err[1200];
    const char *file = a->gens->cfg->file;
    fg_log_notice("reloading %s", file);
    reload_cancel(a);
    fg_agent_config_t *cfg = fg_agent_config_load(file, err, sizeof(err));
    if (cfg == NULL) {
        fg_log_error("reload failed, the running configuration stays: %s", err);
        return;
    }
    a->reload_cfg = cfg;
    a->reloading = fg_services_resolve(a->base, a->dns, cfg, on_reload_resolved, a);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    fg_agent_t *a = arg;
    (void)what;
    if (sig == SIGTERM && !a->stopping) {
        fg_log_notice("stopping (SIGTERM)");
        stop_gracefully(a);
    } else if (sig == SIGTERM || sig == SIGINT) {
        fg_log_notice("stopping now (%s)", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        stop(a);
    } else if (sig == SIGHUP && a->stopping) {
        fg_log_notice("reload ignored: stopping");
    } else if (sig == SIGHUP) {
        reload(a);
    } else if (sig == SIGUSR1 && fg_log_reopen() != 0) {
        fg_log_error("reopening the error log failed");
    }
}

fg_agent_t *fg_agent_new(fg_agent_config_t *cfg, char *err, size_t errlen)
{
    fg_agent_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->base = fg_clock_base_new();
    if (a->base == NULL) {
        snprintf(err, errlen, "cannot create the event loop");
        free(a);
        return NULL;
    }
    a->retry = evtimer_new(a->base, on_retry, a);
    a->sweep = event_new(a->base, -1, 0, on_sweep, a);
    a->trim = event_new(a->base, -1, EV_PERSIST, on_trim, a);
    a->drain = evtimer_new(a->base, on_drain_over, a);
    a->dns = fg_resolve_base_new(a->base);
    struct timeval trim_tv = {TRIM_MS / 1000, (TRIM_MS % 1000) * 1000};
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < 4; i++) {
        a->sigs[i] = evsignal_new(a->base, sigs[i], on_signal, a);
        if (a->sigs[i] == NULL || evsignal_add(a->sigs[i], NULL) != 0) {
            snprintf(err, errlen, "cannot catch signals");
            fg_agent_free(a);
            return NULL;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    /* Read buffers (64 KiB) come from the heap, not from mmap: each read allocates one and
     * frees it once drained, and a mapping per read costs an mmap and a munmap. A fixed
     * threshold keeps glibc from moving it. Under load, requests free what they allocated at
     * the top of the heap many times a second: with glibc's trim threshold (128 KiB) the heap
     * would shrink and grow by brk(2) every few dozen requests, faulting its pages in again
     * each time. Up to HEAP_KEEP stays free at the top instead, and the periodic trim
     * (TRIM_MS) hands free heap pages back once the load is gone. */
    mallopt(M_TRIM_THRESHOLD, HEAP_KEEP);
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    if (a->retry == NULL || a->sweep == NULL || a->trim == NULL || a->drain == NULL ||
        a->dns == NULL || event_add(a->trim, &trim_tv) != 0 ||
        gen_new(a, cfg, err, errlen) == NULL) {
        fg_agent_free(a);
        return NULL;
    }
    fg_backoff_init(&a->backoff, cfg->initial_ms, cfg->max_ms, cfg->jitter, 0);
    return a;
}

int fg_agent_run(fg_agent_t *a)
{
    const fg_agent_config_t *cfg = a->gens->cfg;
    fg_log_notice("fastgateway-agent %s: agent \"%s\", gateway %s, %zu service(s)", FG_VERSION,
                  cfg->id, cfg->gateway, cfg->nservices);
    dial(a);
    fg_clock_dispatch(a->base);
    return a->status;
}

void fg_agent_free(fg_agent_t *a)
{
    if (a == NULL)
        return;
    if (a->tunnels)
        stop(a);
    reload_cancel(a);
    while (a->gens) {
        gen_t *g = a->gens;
        a->gens = g->next;
        gen_free(g);
    }
    for (size_t i = 0; i < 4; i++)
        if (a->sigs[i])
            event_free(a->sigs[i]);
    if (a->retry)
        event_free(a->retry);
    if (a->sweep)
        event_free(a->sweep);
    if (a->trim)
        event_free(a->trim);
    if (a->drain)
        event_free(a->drain);
    fg_resolve_base_free(a->dns);
    event_base_free(a->base);
    free(a);
}
