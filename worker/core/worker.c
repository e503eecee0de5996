#include "worker/core/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "shm/health.h"
#include "shm/metrics.h"
#include "worker/http/accesslog.h"
#include "worker/core/handshake.h"
#include "worker/core/proxy_header.h"
#include "worker/core/frontend.h"
#include "worker/tunnel/hop.h"
#include "worker/stream/tcp_proxy.h"
#include "worker/tunnel/session.h"
#include "worker/http/http1.h"
#include "worker/http/h2c.h"
#include "worker/http/http2.h"
#include "worker/http/relay.h"
#include "worker/http/request.h"
#include "worker/http/compress.h"
#include "worker/http/dispatch.h"
#include "worker/admission/security.h"
#include "worker/handlers/static.h"
#include "worker/upstream/upstream.h"
#include "worker/upstream/health.h"
#include "worker/core/clock.h"
#include "worker/core/connlimit.h"

/* accept() that fails for want of a descriptor (EMFILE, ENFILE) or of kernel memory (ENOBUFS,
 * ENOMEM) leaves the connection queued, so the level-triggered listener is readable again at once
 * and the loop would spin on the same error. The worker stops listening for ACCEPT_PAUSE_MS
 * instead (nginx's answer too); the connections wait in the kernel's queue until a descriptor is
 * free. One error-log line per ACCEPT_LOG_MS at most counts the accepts deferred meanwhile. */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_MS 10000
#define HEAP_KEEP (4 * 1024 * 1024) /* free heap a worker keeps at the top (mallopt) */
/* Least-connections balancing: the count of connections steered here and not accepted is
 * cleared at least this often. SYNs that never become connections (a client that gave up, a
 * SYN flood, retransmitted SYNs) would otherwise keep it up, and this worker passed over, for
 * as long as no accept of its own clears it. */
#define LB_TICK_MS 1000

typedef struct worker_state_s worker_state_t;

typedef struct {
    fg_worker_t *w;
    worker_state_t *st;
    const fg_server_t *server;
    int fd;
    int deferred; /* TCP_DEFER_ACCEPT: a connection comes with its first bytes */
    struct event *ev;
} listener_t;

typedef struct {
    struct event *resume; /* listens again after ACCEPT_PAUSE_MS */
    struct event *report; /* logs the deferred accepts held back by the ACCEPT_LOG_MS bound */
    uint64_t deferred;    /* accepts deferred since the last line */
    uint64_t last_log_ms; /* monotonic; 0 = never logged */
    const char *listen;   /* listener and errno of the last deferral, for the line */
    int err;
    int paused;
} accept_pause_t;

struct worker_state_s {
    fg_worker_t w;
    listener_t *listeners;
    size_t nlisteners;
    accept_pause_t pause;
    struct event *sig_quit, *sig_term, *sig_int, *sig_usr1, *sig_hup;
    struct event *drain_timer;    /* closes idle keep-alive connections after drainTimeout */
    struct event *deadline_timer; /* exits at shutdownTimeout whatever is left */
    struct event *lb_tick;        /* republishes the balancing counts (LB_TICK_MS) */
    int exit_status;
};

static void pause_accepting(listener_t *l, int err);

/* Every front end this worker runs, for the worker-wide operations (frontend.h). */
static const fg_frontend_t *const frontends[] = {&fg_http1_frontend,     &fg_http2_frontend,
                                                 &fg_relay_frontend,     &fg_tunnel_frontend,
                                                 &fg_tcp_proxy_frontend, &fg_proxy_header_frontend};

/* The front end for a connection of srv whose transport negotiated alpn (len 0 = none). Every
 * server speaks HTTP/1.1; "h2" goes to HTTP/2; a plaintext connection of a server with h2c goes
 * to the front end that tells the HTTP/2 preface from an HTTP/1.1 request. */
static const fg_frontend_t *frontend_for_alpn(const fg_server_t *srv, const char *alpn, size_t len)
{
    if (srv->tcp.enabled)
        return &fg_tcp_proxy_frontend; /* layer 4: no TLS, no HTTP (common/config_tcp.c) */
    if (len == 2 && memcmp(alpn, "h2", 2) == 0)
        return &fg_http2_frontend;
    if (len == 0 && srv->tls == NULL && srv->http2.h2c)
        return &fg_h2c_frontend;
    return &fg_http1_frontend;
}

/* The accept path's choice, as a pointer a transport can carry to its handshake's end. */
static const fg_frontend_pick_fn pick_frontend = frontend_for_alpn;

/* A connection from peer (the socket's, or the client a PROXY protocol header named): the caps
 * of HTTP servers, before any byte of the protocol is read or sent (a refused connection is
 * closed unread; a tcp server checks its own in its front end, to log it there), then the TLS
 * handshake or the front end. data_ready: its first bytes have arrived. Returns 0, or -1 (the
 * caller closes fd). */
static int admit(fg_worker_t *w, const fg_server_t *srv, int fd,
                 const struct sockaddr_storage *peer, socklen_t len, int data_ready)
{
    int capped = fg_connlimit_wanted(srv);
    if (capped && fg_connlimit_accept(w, srv, peer) != 0)
        return -1;
    int rc = srv->tls != NULL ? fg_handshake_accept(w, srv, fd, peer, data_ready)
                              : pick_frontend(srv, NULL, 0)->start(w, srv, fd, peer, len);
    if (capped)
        fg_connlimit_accept_done(w);
    return rc;
}

/* Accept until the queue is empty (bounded per event so one listener cannot starve the loop). */
static void accept_some(listener_t *l, int limit)
{
    for (int i = 0; limit == 0 || i < limit; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(l, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                fg_log_error("accept on %s: %s", l->server->listen, strerror(errno));
            else /* everything steered here is accepted, and counted */
                fg_frontend_publish_load(l->w, 1);
            return;
        }
        fg_frontend_accepted_one(l->w);
        fg_metrics_add(l->server->metrics, FG_MS_CONNECTIONS, 1);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int rc = l->server->proxy_protocol.enabled
                     ? fg_proxy_header_accept(l->w, l->server, fd, &ss, len, l->deferred, admit)
                     : admit(l->w, l->server, fd, &ss, len, l->deferred);
        if (rc != 0)
            close(fd);
    }
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    fg_clock_busy();
    accept_some(arg, 64);
}

static struct timeval ms_tv(uint64_t ms)
{
    return (struct timeval){.tv_sec = (time_t)(ms / 1000),
                            .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

/* One line for the accepts deferred since the previous one, or, within ACCEPT_LOG_MS of it, a
 * timer that writes it when the interval is over. */
static void report_deferred(worker_state_t *st)
{
    accept_pause_t *p = &st->pause;
    if (p->deferred == 0 || evtimer_pending(p->report, NULL))
        return;
    uint64_t now = fg_clock_now_ms();
    if (p->last_log_ms != 0 && now - p->last_log_ms < ACCEPT_LOG_MS) {
        struct timeval tv = ms_tv(p->last_log_ms + ACCEPT_LOG_MS - now);
        evtimer_add(p->report, &tv);
        return;
    }
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    fg_log_error("accept on %s: %s: %llu accept(s) deferred since the last report, retried "
                 "every %d ms (%llu connections open, open file limit %llu)",
                 p->listen, strerror(p->err), (unsigned long long)p->deferred, ACCEPT_PAUSE_MS,
                 (unsigned long long)st->w.nconns, (unsigned long long)rl.rlim_cur);
    p->deferred = 0;
    p->last_log_ms = now;
}

static void on_report(evutil_socket_t fd, short what, void *arg)
{
    report_deferred(arg);
}

static void pause_accepting(listener_t *l, int err)
{
    worker_state_t *st = l->st;
    accept_pause_t *p = &st->pause;
    p->deferred++;
    p->listen = l->server->listen;
    p->err = err;
    /* A retiring worker has closed its listeners; its final drain just stops here. */
    if (!p->paused && !st->w.retiring) {
        for (size_t i = 0; i < st->nlisteners; i++)
            if (st->listeners[i].ev != NULL)
                event_del(st->listeners[i].ev);
        struct timeval tv = ms_tv(ACCEPT_PAUSE_MS);
        evtimer_add(p->resume, &tv);
        p->paused = 1;
    }
    report_deferred(st);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    worker_state_t *st = arg;
    st->pause.paused = 0;
    for (size_t i = 0; i < st->nlisteners; i++)
        if (st->listeners[i].ev != NULL && event_add(st->listeners[i].ev, NULL) != 0)
            fg_log_error("accept on %s: cannot listen again", st->listeners[i].server->listen);
}

static void stop_listening(worker_state_t *st, int final_drain)
{
    for (size_t i = 0; i < st->nlisteners; i++) {
        listener_t *l = &st->listeners[i];
        if (l->ev == NULL)
            continue;
        event_free(l->ev);
        l->ev = NULL;
        /* Connections the kernel already queued on this socket are ours to serve: a socket
         * the master retires is filtered first, so this empties it for good. */
        if (final_drain)
            accept_some(l, 0);
        close(l->fd);
        l->fd = -1;
    }
}

static void maybe_exit(worker_state_t *st)
{
    if (st->w.retiring && st->w.nconns == 0 && fg_clock_now_ms() >= st->w.linger_until_ms)
        event_base_loopexit(st->w.base, NULL);
}

static void on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    worker_state_t *st = arg;
    fg_frontend_close_idle(&st->w);
    maybe_exit(st);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    worker_state_t *st = arg;
    fg_log_warn("shutdown timeout: closing %llu connection(s)", (unsigned long long)st->w.nconns);
    event_base_loopexit(st->w.base, NULL);
}

/* Graceful retire: stop accepting, let in-flight requests finish, answer the next request of each
 * keep-alive connection with "Connection: close", close idle ones after drainTimeout. */
static void retire(worker_state_t *st)
{
    if (st->w.retiring)
        return;
    st->w.retiring = 1;
    /* The slot's counts belong to the worker that replaces this one from now on. */
    st->w.lb_open = st->w.lb_pending = NULL;
    st->w.lb_owner = NULL;
    fg_clock_busy_flag(NULL, NULL, 0);
    stop_listening(st, 1);
    /* Published after the last accept: from now on this worker takes no new connection. */
    if (st->w.record)
        __atomic_store_n(&st->w.record->state, FG_WORKER_DRAINING, __ATOMIC_RELEASE);
    fg_frontend_retire_all(&st->w);
    struct timeval drain = ms_tv(st->w.cfg->drain_timeout_ms);
    struct timeval deadline = ms_tv(st->w.cfg->shutdown_timeout_ms);
    st->drain_timer = evtimer_new(st->w.base, on_drain_timer, st);
    st->deadline_timer = evtimer_new(st->w.base, on_deadline, st);
    evtimer_add(st->drain_timer, &drain);
    evtimer_add(st->deadline_timer, &deadline);
    maybe_exit(st);
}

static void on_lb_tick(evutil_socket_t fd, short what, void *arg)
{
    worker_state_t *st = arg;
    if (st->w.lb_open == NULL) {
        event_del(st->lb_tick); /* retiring */
        return;
    }
    fg_frontend_publish_load(&st->w, 1);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    worker_state_t *st = arg;
    switch (sig) {
    case SIGQUIT:
        fg_log_info("retiring (generation %llu)", (unsigned long long)st->w.generation);
        retire(st);
        break;
    case SIGTERM:
    case SIGINT:
        st->w.terminating = 1;
        event_base_loopexit(st->w.base, NULL);
        break;
    case SIGUSR1:
        if (fg_log_reopen() != 0)
            fg_log_error("reopening the error log failed");
        fg_accesslog_reopen(st->w.accesslog);
        break;
    default:
        break;
    }
}

/* A TLS client speaks first (its ClientHello, RFC 8446 4.1.2), and so does the balancer in front
 * of a server with proxyProtocol (its header), so the kernel may hold a new
 * connection until its first bytes arrive (TCP_DEFER_ACCEPT) and the handshake can start at the
 * accept: one wake-up of the worker per connection instead of one for the final ACK of the TCP
 * handshake and another for the ClientHello. A client that stays silent is handed over after
 * DEFER_ACCEPT_S (the kernel counts it in SYN-ACK retransmissions: about a second) and then
 * meets the handshake timeout. Plain servers accept at once: behind a `tcp` server the
 * destination may be the one to speak first. The option belongs to the socket, which this
 * slot's workers of every generation share: each sets it for the configuration it serves. */
#define DEFER_ACCEPT_S 1

static void defer_accept(listener_t *l)
{
    int s = l->server->tls != NULL || l->server->proxy_protocol.enabled ? DEFER_ACCEPT_S : 0;
    l->deferred = setsockopt(l->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &s, sizeof(s)) == 0 && s > 0;
}

static int setup_listeners(worker_state_t *st, const fg_worker_args_t *args)
{
    const fg_config_t *cfg = args->cfg;
    st->listeners = calloc(cfg->nservers ? cfg->nservers : 1, sizeof(*st->listeners));
    st->pause.resume = evtimer_new(st->w.base, on_resume, st);
    st->pause.report = evtimer_new(st->w.base, on_report, st);
    if (st->listeners == NULL || st->pause.resume == NULL || st->pause.report == NULL)
        return -1;
    for (size_t i = 0; i < cfg->nservers; i++) {
        if (args->listen_fds == NULL || args->listen_fds[i] < 0)
            continue;
        listener_t *l = &st->listeners[st->nlisteners++];
        l->w = &st->w;
        l->st = st;
        l->server = &cfg->servers[i];
        l->fd = args->listen_fds[i];
        int fl = fcntl(l->fd, F_GETFL);
        if (fl == -1 || fcntl(l->fd, F_SETFL, fl | O_NONBLOCK) == -1)
            return -1;
        defer_accept(l);
        l->ev = event_new(st->w.base, l->fd, EV_READ | EV_PERSIST, on_accept, l);
        if (l->ev == NULL || event_add(l->ev, NULL) != 0)
            return -1;
    }
    return 0;
}

static int setup_signals(worker_state_t *st)
{
    struct event_base *b = st->w.base;
    st->sig_quit = evsignal_new(b, SIGQUIT, on_signal, st);
    st->sig_term = evsignal_new(b, SIGTERM, on_signal, st);
    st->sig_int = evsignal_new(b, SIGINT, on_signal, st);
    st->sig_usr1 = evsignal_new(b, SIGUSR1, on_signal, st);
    st->sig_hup = evsignal_new(b, SIGHUP, on_signal, st); /* the master's business: ignore */
    struct event *all[] = {st->sig_quit, st->sig_term, st->sig_int, st->sig_usr1, st->sig_hup};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (all[i] == NULL || evsignal_add(all[i], NULL) != 0)
            return -1;
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigprocmask(SIG_SETMASK, &set, NULL);
    return 0;
}

static void teardown(worker_state_t *st)
{
    fg_frontend_close_all(&st->w, frontends, sizeof(frontends) / sizeof(frontends[0]));
    fg_tunnel_hop_close(&st->w);
    fg_request_pools_free(&st->w);
    fg_accesslog_free(st->w.accesslog);
    fg_health_prober_free(st->w.prober);
    fg_upstream_pools_free(st->w.upstreams);
    fg_static_deinit();
    stop_listening(st, 0);
    struct event *evs[] = {st->sig_quit,     st->sig_term,    st->sig_int,        st->sig_usr1,
                           st->sig_hup,      st->drain_timer, st->deadline_timer, st->pause.resume,
                           st->pause.report, st->lb_tick};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    free(st->listeners);
    if (st->w.scratch)
        evbuffer_free(st->w.scratch);
    event_base_free(st->w.base);
    fg_connlimit_free(st->w.connlimit); /* after every conn that held a place is gone */
}

int fg_worker_main(const fg_worker_args_t *args)
{
    worker_state_t st;
    memset(&st, 0, sizeof(st));
    st.w.cfg = args->cfg;
    st.w.shm = args->shm;
    st.w.record = args->record;
    st.w.slot = args->slot;
    st.w.pid = (int)getpid();
    st.w.generation = args->generation;
    st.w.lb_open = args->lb_open;
    st.w.lb_pending = args->lb_pending;
    st.w.lb_owner = args->lb_owner;
    if (args->shm != NULL)
        fg_metrics_worker_start(fg_metrics_zone(args->shm),
                                args->record ? (int)(args->record - fg_shm_worker(args->shm, 0))
                                             : -1);

    /* Requests free what they allocated at the top of the heap many times a second: with
     * glibc's default (128 KiB, adjusted as large blocks come and go) the heap shrinks and grows
     * by brk(2) every few dozen requests, and each growth faults its pages in again. A worker
     * keeps up to HEAP_KEEP free at the top instead; the fixed mmap threshold, which setting
     * the trim threshold implies, is raised so that 64 KiB read buffers stay on the heap. */
    mallopt(M_TRIM_THRESHOLD, HEAP_KEEP);
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);

    st.w.base = fg_clock_base_new();
    if (st.w.base == NULL) {
        fg_log_error("cannot create the event loop");
        return 1;
    }
    fg_security_worker_init(args->cfg);
    st.w.scratch = evbuffer_new();
    st.w.error_route = fg_dispatch_error_route;
    st.w.filter_response = fg_compress_attach;
    st.w.upstreams = fg_upstream_pools_new(&st.w);
    st.w.accesslog = fg_accesslog_new(st.w.base, &args->cfg->log);
    if (st.w.scratch == NULL || st.w.upstreams == NULL || fg_static_init(args->cfg) != 0 ||
        setup_signals(&st) != 0 || fg_health_prober_start(&st.w) != 0) {
        fg_log_error("worker %d: start-up failed: %s", args->slot, strerror(errno));
        teardown(&st);
        return 1;
    }
    /* Told to go while waiting for the first health round: never start listening (the
     * nested wait loop would have swallowed a loop exit). */
    if (st.w.retiring || st.w.terminating) {
        teardown(&st);
        if (st.w.record)
            st.w.record->state = FG_WORKER_EXITED;
        return 0;
    }
    if (st.w.lb_owner != NULL) {
        /* Claim the slot: a worker this one replaces stops writing its counts. */
        __atomic_store_n(st.w.lb_owner, st.w.generation, __ATOMIC_RELAXED);
        fg_clock_busy_flag(args->lb_busy, args->lb_owner, st.w.generation);
        fg_frontend_publish_load(&st.w, 1);
        struct timeval tick = ms_tv(LB_TICK_MS);
        st.lb_tick = event_new(st.w.base, -1, EV_PERSIST, on_lb_tick, &st);
        if (st.lb_tick == NULL || event_add(st.lb_tick, &tick) != 0)
            fg_log_warn("worker %d: no timer for the balancing counts: steered SYNs that never "
                        "connect are forgotten only when an accept empties the queue",
                        args->slot);
    }
    if (setup_listeners(&st, args) != 0 || fg_tunnel_hop_listen(&st.w, &fg_http1_frontend) != 0) {
        fg_log_error("worker %d: start-up failed: %s", args->slot, strerror(errno));
        teardown(&st);
        return 1;
    }
    if (st.w.record)
        st.w.record->state = FG_WORKER_READY;
    if (args->ready_fd >= 0) {
        char c = 'R';
        ssize_t n = write(args->ready_fd, &c, 1);
        (void)n;
        close(args->ready_fd);
    }
    if (args->quiet_after_ready) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null != -1) {
            dup2(null, 2);
            close(null);
        }
    }
    fg_clock_dispatch(st.w.base);
    teardown(&st);
    if (st.w.record)
        st.w.record->state = FG_WORKER_EXITED;
    return st.exit_status;
}
