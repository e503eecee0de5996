#include "master/master.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "common/config.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/tls.h"
#include "master/acme.h"
#include "master/ocsp_update.h"
#include "master/daemon.h"
#include "master/listener.h"
#include "master/master_impl.h"
#include "master/admin_api.h"
#include "master/metrics_http.h"
#include "master/notify.h"
#include "master/status.h"
#include "master/watch_files.h"
#include "shm/arena.h"
#include "shm/zone.h"
#include "shm/health.h"
#include "shm/tunnels.h"
#include "shm/metrics.h"
#include "shm/tcpclients.h"
#include "tables/route_table.h"
#include "tables/security_table.h"
#include "worker/admission/security.h"
#include "worker/core/worker.h"

#define READY_TIMEOUT_MS 10000 /* new workers must report ready within this */
#define FAST_SHUTDOWN_MS 2000  /* TERM: then SIGKILL */
#define KILL_GRACE_MS 1000     /* past shutdownTimeout, so a worker can exit on its own */
#define QUICK_CRASH_MS 2000    /* an exit this soon after start counts as a crash loop */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 10000
#define WATCH_DEBOUNCE_MS 500 /* watchConfig: reload once the file has been quiet this long */

/* Signal handlers only write the signal number into this pipe; the loop does the work. */
static int sig_pipe[2] = {-1, -1};

static const int handled_signals[] = {SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1, SIGCHLD};

static void reload(master_t *m);
static void reload_fail(master_t *m, const char *why);
static void zones_sweep(master_t *m);
static void watch_update(master_t *m, int after_failure);

/* ---- small helpers ---- */

uint64_t fg_master_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t fg_master_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval tv_ms(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

static int log_is_file(const fg_config_t *cfg)
{
    return cfg->log.path != NULL && strcmp(cfg->log.path, "stderr") != 0;
}

/* ---- generations ---- */

static void gen_free(gen_t *g)
{
    if (g == NULL)
        return;
    for (int i = 0; i < g->nslots; i++)
        if (g->slots[i].respawn_ev)
            event_free(g->slots[i].respawn_ev);
    free(g->slots);
    free(g->fds);
    if (g->cfg) {
        fg_tls_free(g->cfg);
        fg_security_table_free(g->cfg);
        fg_route_table_free(g->cfg);
        fg_config_free(g->cfg);
    }
    free(g);
}

/* Load, validate and compile FILE into a generation (no sockets, no processes yet). */
static gen_t *gen_load(master_t *m, uint64_t id, char *err, size_t errlen)
{
    gen_t *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->id = id;
    g->cfg = fg_config_load(m->conf_file, err, errlen);
    if (g->cfg == NULL)
        goto fail;
    char rerr[512];
    if (fg_route_table_build(g->cfg, rerr, sizeof(rerr)) < 0) {
        snprintf(err, errlen, "%s: %s", m->conf_file, rerr);
        goto fail;
    }
    _Static_assert(2 * FG_CONFIG_MAX_WORKERS <= FG_SHM_MAX_WORKERS,
                   "two generations of workers fit the shared worker table");
    if (fg_daemon_user_resolve(g->cfg->user, g->cfg->group, &g->user, rerr, sizeof(rerr)) < 0) {
        snprintf(err, errlen, "%s: %s", m->conf_file, rerr);
        goto fail;
    }
    g->nslots = g->cfg->workers;
    g->slots = calloc((size_t)g->nslots, sizeof(*g->slots));
    if (g->slots == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < g->nslots; i++) {
        g->slots[i].m = m;
        g->slots[i].index = i;
    }
    return g;
fail:
    gen_free(g);
    return NULL;
}

static void tls_warn(void *arg, const char *msg)
{
    fg_log_warn("%s", msg);
}

/* ---- worker processes ---- */

static void proc_unlink(master_t *m, proc_t *p)
{
    for (proc_t **pp = &m->procs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

static void proc_close_ready(proc_t *p)
{
    if (p->ready_ev) {
        event_free(p->ready_ev);
        p->ready_ev = NULL;
    }
    if (p->ready_fd != -1) {
        close(p->ready_fd);
        p->ready_fd = -1;
    }
}

static void proc_free(proc_t *p)
{
    proc_close_ready(p);
    if (p->kill_ev)
        event_free(p->kill_ev);
    fg_shm_worker_release(p->rec);
    free(p);
}

/* Everything in the freshly forked child up to fg_worker_main; `unused` is the parent's record
 * of this process, of no use here. Never returns. */
/* What a child of the master must not hold: the status, metrics and admin listeners, the
 * signal pipe, the workers' ready pipes, the launcher's pipe, the watch. The listeners are the
 * caller's to close (a worker keeps its own). */
static void close_in_child(master_t *m)
{
    fg_status_close_in_child(m->status);
    fg_metrics_http_close_in_child(m->metrics_http);
    fg_admin_http_close_in_child(m->admin);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    for (proc_t *p = m->procs; p; p = p->next)
        if (p->ready_fd != -1)
            close(p->ready_fd);
    if (m->notify_fd != -1)
        close(m->notify_fd);
    fg_notify_free(m->sd);
    fg_watch_close_in_child(m->watch);
}

_Noreturn static void child_main(master_t *m, gen_t *g, int slot, fg_shm_worker_t *rec,
                                 int ready_fd, proc_t *unused)
{
    free(unused);
    /* Start from default dispositions, still all blocked: fg_worker_main installs its own
     * handlers and then unblocks. */
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL);
    /* If the master dies, retire gracefully rather than serve unsupervised forever. */
    prctl(PR_SET_PDEATHSIG, SIGQUIT);
    if (getppid() != m->pid)
        _exit(1);

    char role[32];
    snprintf(role, sizeof(role), "worker %d", slot);
    fg_log_set_role(role);

    size_t nservers = g->cfg->nservers;
    int *listen_fds = calloc(nservers ? nservers : 1, sizeof(int));
    if (listen_fds == NULL)
        _exit(2);
    for (size_t s = 0; s < nservers; s++)
        listen_fds[s] = g->fds[s * (size_t)g->nslots + (size_t)slot];

    /* Hold nothing of the master's but our own sockets: a copy of a status connection or of
     * another slot's listener would keep it open after the master closes it. The event base is
     * left alone: freeing it would deregister the master's fds from the shared epoll. */
    fg_listeners_close_in_child(m->ls, listen_fds, nservers);
    /* A daemon's start-up error log is its caller's stderr, until start-up is over. */
    int quiet = m->notify_fd != -1;
    close_in_child(m);

    char err[512];
    if (fg_daemon_user_drop(&g->user, err, sizeof(err)) < 0) {
        fg_log_error("%s", err);
        _exit(2);
    }
    fg_worker_args_t args = {
        .cfg = g->cfg,
        .slot = slot,
        .generation = g->id,
        .shm = m->shm,
        .record = rec,
        .listen_fds = listen_fds,
        .ready_fd = ready_fd,
        .quiet_after_ready = quiet,
    };
    args.lb_open =
        fg_listeners_balance_slot(m->ls, slot, &args.lb_pending, &args.lb_busy, &args.lb_owner);
    exit(fg_worker_main(&args));
}

/* Workers open the access log themselves, after dropping privileges: create it as root and
 * give it to their user, or a root-owned log directory (as `make install` makes it) would
 * leave them without one, at start and after every logrotate (nginx does the same). */
static void prepare_access_log(const gen_t *g)
{
    const char *path = g->cfg->log.access_path;
    if (path == NULL || !g->user.set || geteuid() != 0)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) {
        fg_log_warn("access log %s: %s", path, strerror(errno));
        return;
    }
    if (fchown(fd, g->user.uid, (gid_t)-1) == -1)
        fg_log_warn("cannot chown %s to %s: %s", path, g->user.name, strerror(errno));
    close(fd);
}

static void on_ready(evutil_socket_t fd, short what, void *arg);

/* Fork the worker of `slot` in generation g. Returns 0 or -1 with err. */
static int spawn(master_t *m, gen_t *g, int slot, char *err, size_t errlen)
{
    prepare_access_log(g);
    fg_shm_worker_t *rec = fg_shm_worker_alloc(m->shm, slot, g->id);
    if (rec == NULL) {
        snprintf(err, errlen, "worker %d: the shared worker table is full", slot);
        return -1;
    }
    proc_t *p = calloc(1, sizeof(*p));
    int pp[2] = {-1, -1};
    if (p == NULL || pipe2(pp, O_CLOEXEC) == -1) {
        snprintf(err, errlen, "worker %d: %s", slot, p ? strerror(errno) : "out of memory");
        free(p);
        fg_shm_worker_release(rec);
        return -1;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) {
        close(pp[0]);
        child_main(m, g, slot, rec, pp[1], p);
    }
    int e = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(pp[1]);
    if (pid == -1) {
        snprintf(err, errlen, "worker %d: fork: %s", slot, strerror(e));
        close(pp[0]);
        free(p);
        fg_shm_worker_release(rec);
        return -1;
    }
    slot_t *s = &g->slots[slot];
    rec->pid = pid;
    rec->started_ms = fg_master_wall_ms();
    rec->restarts = s->restarts;
    *p = (proc_t){.m = m,
                  .pid = pid,
                  .slot = slot,
                  .generation = g->id,
                  .rec = rec,
                  .state = P_STARTING,
                  .ready_fd = pp[0],
                  .started_mono = fg_master_mono_ms()};
    p->ready_ev = event_new(m->base, pp[0], EV_READ | EV_PERSIST, on_ready, p);
    if (p->ready_ev == NULL || event_add(p->ready_ev, NULL) == -1)
        fg_log_error("worker %d (pid %d): cannot watch its ready pipe", slot, (int)pid);
    p->next = m->procs;
    m->procs = p;
    s->proc = p;
    fg_log_info("worker %d (pid %d, generation %llu) started", slot, (int)pid,
                (unsigned long long)g->id);
    return 0;
}

static void on_kill_deadline(evutil_socket_t fd, short what, void *arg)
{
    proc_t *p = arg;
    fg_log_warn("worker %d (pid %d, generation %llu) still running after shutdownTimeout, "
                "killing it",
                p->slot, (int)p->pid, (unsigned long long)p->generation);
    kill(p->pid, SIGKILL);
}

/* Ask one worker to finish its work and exit; SIGKILL after deadline_ms. */
static void retire(master_t *m, proc_t *p, int sig, uint64_t deadline_ms)
{
    /* The worker itself records DRAINING once it has stopped accepting; until then "show
     * workers" reports it ready and retiring. */
    p->state = P_RETIRING;
    kill(p->pid, sig);
    if (deadline_ms == 0)
        return;
    if (p->kill_ev == NULL)
        p->kill_ev = evtimer_new(m->base, on_kill_deadline, p);
    struct timeval tv = tv_ms(deadline_ms);
    if (p->kill_ev)
        evtimer_add(p->kill_ev, &tv);
}

static int gen_all_ready(const gen_t *g)
{
    for (int i = 0; i < g->nslots; i++)
        if (g->slots[i].proc == NULL || g->slots[i].proc->state != P_READY)
            return 0;
    return 1;
}

/* ---- start-up completion, reload commit and failure ---- */

static void shutdown_begin(master_t *m, int mode);

/* STATUS= is one line: the generation serving and how the last reload ended. */
static void sd_ready(master_t *m)
{
    if (m->sd == NULL)
        return;
    char why[sizeof(m->last_reload_error)];
    snprintf(why, sizeof(why), "%s", m->last_reload_error);
    for (char *c = why; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    const char *last = m->last_reload_result == RELOAD_OK       ? "; last reload ok"
                       : m->last_reload_result == RELOAD_FAILED ? "; last reload failed: "
                                                                : "";
    fg_notify_send(m->sd, "READY=1\nSTATUS=generation %llu serving, %d workers%s%s",
                   (unsigned long long)m->cur->id, m->cur->nslots, last,
                   m->last_reload_result == RELOAD_FAILED ? why : "");
}

/* Answer the `reload` commands this reload covered, with its outcome. */
static void reload_answer(master_t *m)
{
    json_t *doc;
    if (m->last_reload_result == RELOAD_OK)
        doc = json_pack("{s:s, s:I}", "result", "ok", "generation", (json_int_t)m->cur->id);
    else
        doc = json_pack("{s:s, s:s*, s:I}", "result", "failed", "error", m->last_reload_error,
                        "generation", (json_int_t)m->cur->id);
    fg_status_resolve(m->status, m->reload_covers, doc);
    fg_admin_http_resolve(m->admin, m->reload_covers, doc);
    json_decref(doc);
}

/* ---- jobs: the ACME client (master/acme.h), the OCSP updater (master/ocsp_update.h) ---- */

/* A job runs in a child: it blocks on the network, which the master's loop must never do. */
#define JOB_FIRST_MS 1000
#define JOB_RETRY_MS (5 * 60 * 1000)
#define JOB_CHILD_LIMIT_S 900 /* a run still going then is killed (SIGALRM) */
#define JOB_CHANGED FG_MASTER_JOB_CHANGED
#define JOB_FAILED FG_MASTER_JOB_FAILED
_Static_assert(FG_ACME_CHANGED == JOB_CHANGED && FG_OCSP_CHANGED == JOB_CHANGED &&
                   FG_ACME_FAILED == JOB_FAILED && FG_OCSP_FAILED == JOB_FAILED,
               "a job's exit status is JOB_* bits");

/* In a job's child: what its run has done so far, for the exit of a run cut short. */
static volatile sig_atomic_t job_bits;

static void on_job_alarm(int sig)
{
    _exit(job_bits | JOB_FAILED); /* what was written is reloaded all the same */
}

/* What a check depends on: the acme section and the ACME certificates' ids, names and files.
 * A reload that changes any of them deserves a check of its own at once. */
static uint64_t acme_fingerprint(const fg_config_t *cfg)
{
    const fg_acme_config_t *a = &cfg->acme;
    uint64_t h = FG_HASH_FNV_BASIS;
    const char *top[] = {a->directory, a->email, a->state_dir, a->ca_file};
    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++)
        h = fg_hash_fnv1a(h, top[i] ? top[i] : "", top[i] ? strlen(top[i]) + 1 : 1);
    h = fg_hash_fnv1a(h, &a->renew_before_ms, sizeof(a->renew_before_ms));
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        const fg_tls_cert_config_t *c = &cfg->certificates[i];
        if (!c->acme)
            continue;
        const char *s[] = {c->id, c->chain, c->key};
        for (size_t k = 0; k < 3; k++)
            h = fg_hash_fnv1a(h, s[k], strlen(s[k]) + 1);
        for (size_t k = 0; k < c->nnames; k++)
            h = fg_hash_fnv1a(h, c->names[k], strlen(c->names[k]) + 1);
    }
    return h;
}

static int acme_enabled(const fg_config_t *cfg)
{
    return cfg->acme.enabled;
}

static uint64_t acme_interval_ms(const fg_config_t *cfg)
{
    return cfg->acme.check_interval_ms;
}

static int acme_run(const fg_config_t *cfg, int force, volatile sig_atomic_t *bits)
{
    return fg_acme_check(cfg, bits); /* it orders only what is due, asked for or not */
}

static uint64_t ocsp_interval_ms(const fg_config_t *cfg)
{
    return FG_OCSP_CHECK_MS;
}

const fg_master_job_kind_t fg_master_acme_job = {
    "acme", "certificates written", acme_enabled, acme_fingerprint, acme_interval_ms, acme_run};
const fg_master_job_kind_t fg_master_ocsp_job = {"ocsp",
                                                 "OCSP responses written",
                                                 fg_ocsp_update_enabled,
                                                 fg_ocsp_update_fingerprint,
                                                 ocsp_interval_ms,
                                                 fg_ocsp_update};

static void job_schedule(master_t *m, fg_master_job_t *j, uint64_t ms)
{
    if (j->ev == NULL || m->shutdown)
        return;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    if (evtimer_add(j->ev, &tv) == 0)
        j->next = time(NULL) + (time_t)((ms + 999) / 1000);
}

_Noreturn static void job_child(master_t *m, const fg_master_job_t *j, const fg_config_t *cfg)
{
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL);
    /* a server that closes the connection while a request is sent is an error of that step
     * (EPIPE), not the end of the run */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != m->pid)
        _exit(JOB_FAILED);
    fg_log_set_role(j->kind->name);
    fg_listeners_close_in_child(m->ls, NULL, 0);
    close_in_child(m);
    sa.sa_handler = on_job_alarm;
    sigaction(SIGALRM, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    alarm(JOB_CHILD_LIMIT_S);
    job_bits = 0;
    _exit(j->kind->run(cfg, j->force, &job_bits));
}

static void on_job(evutil_socket_t fd, short what, void *arg)
{
    fg_master_job_t *j = arg;
    master_t *m = j->m;
    if (m->shutdown || m->cur == NULL || !j->kind->enabled(m->cur->cfg))
        return;
    if (j->pid > 0 || m->next != NULL) {
        job_schedule(m, j, JOB_FIRST_MS); /* after the running one, or the reload */
        return;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        job_child(m, j, m->cur->cfg);
    int e = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    j->force = 0;
    if (pid == -1) {
        fg_log_error("%s: fork: %s", j->kind->name, strerror(e));
        job_schedule(m, j, JOB_RETRY_MS);
        return;
    }
    j->pid = pid;
    j->fp = j->kind->fingerprint(m->cur->cfg);
    j->next = 0;
}

int fg_master_job_run_now(master_t *m, fg_master_job_t *j)
{
    if (m->shutdown || m->cur == NULL || !j->kind->enabled(m->cur->cfg))
        return -1;
    j->force = 1;
    if (j->pid > 0)
        return 1; /* job_exited starts it after the running one */
    evtimer_del(j->ev);
    on_job(-1, EV_TIMEOUT, j);
    return j->pid > 0 ? 0 : 1; /* 1: a reload starting, the run follows it */
}

static void job_exited(master_t *m, fg_master_job_t *j, int status)
{
    j->pid = 0;
    int bits = WIFEXITED(status) ? WEXITSTATUS(status) : JOB_FAILED;
    j->last = time(NULL);
    j->last_bits = bits;
    if (!WIFEXITED(status) && !m->shutdown)
        fg_log_error("%s: the run ended by signal %d", j->kind->name, WTERMSIG(status));
    if (bits & JOB_CHANGED) {
        fg_log_notice("%s: %s: reloading", j->kind->name, j->kind->changed);
        fg_master_request_reload(m);
    }
    uint64_t every = m->cur ? j->kind->interval_ms(m->cur->cfg) : JOB_RETRY_MS;
    if ((bits & JOB_FAILED) && every > JOB_RETRY_MS)
        every = JOB_RETRY_MS;
    if ((m->cur && j->kind->fingerprint(m->cur->cfg) != j->fp) || j->force)
        every = JOB_FIRST_MS; /* a reload changed the job's settings, or a run was asked for */
    job_schedule(m, j, every);
}

/* When a reload's run comes: at once, but, when the job's settings did not change, not sooner
 * than the retry after a failed run, so that reloads in a row do not spend a public CA's
 * failed validations (Let's Encrypt: 5 per name and hour). `acme check` does not wait. */
static uint64_t job_after_reload_ms(const fg_master_job_t *j, const fg_config_t *cfg)
{
    if (j->kind->fingerprint(cfg) == j->fp && j->last != 0 && (j->last_bits & JOB_FAILED)) {
        time_t since = time(NULL) - j->last;
        if (since >= 0 && (uint64_t)since * 1000 < JOB_RETRY_MS)
            return JOB_RETRY_MS - (uint64_t)since * 1000;
    }
    return JOB_FIRST_MS;
}

/* Every job of m, for the loops over them. */
static fg_master_job_t *const *jobs(master_t *m)
{
    static fg_master_job_t *list[3];
    list[0] = &m->acme;
    list[1] = &m->ocsp;
    list[2] = NULL;
    return list;
}

static void startup_done(master_t *m)
{
    m->started = 1;
    evtimer_del(m->timeout_ev);
    fg_log_notice("fastgateway %s started: pid %d, %d workers, generation %llu", FG_VERSION,
                  (int)m->pid, m->cur->nslots, (unsigned long long)m->cur->id);
    int detached = m->notify_fd != -1;
    fg_daemon_notify(&m->notify_fd, NULL);
    sd_ready(m);
    watch_update(m, 0);
    for (fg_master_job_t *const *j = jobs(m); *j; j++)
        if ((*j)->kind->enabled(m->cur->cfg))
            job_schedule(m, *j, JOB_FIRST_MS);
    if (detached)
        fg_daemon_silence_stderr(); /* the workers do the same once ready */
    if (m->reload_queued) {
        /* a HUP that came during start-up: the file may have changed since it was read */
        m->reload_queued = 0;
        event_active(m->reload_ev, EV_TIMEOUT, 0);
    }
}

static void startup_fail(master_t *m, const char *why)
{
    fg_log_error("start-up failed: %s", why);
    fg_notify_send(m->sd, "STATUS=start-up failed: %s", why);
    char msg[1200];
    snprintf(msg, sizeof(msg), "fastgateway: start-up failed: %s", why);
    if (m->notify_fd != -1)
        snprintf(m->startup_error, sizeof(m->startup_error), "%s", msg);
    else if (log_is_file(m->cur->cfg))
        fprintf(stderr, "%s\n", msg);
    m->exit_code = 1;
    shutdown_begin(m, SD_FAST);
}

static pid_t slot_owner(int slot, void *arg)
{
    const gen_t *g = arg;
    if (g == NULL || slot >= g->nslots || g->slots[slot].proc == NULL)
        return 0;
    return g->slots[slot].proc->pid;
}

/* Generation g's workers write slots 0..nslots-1 of the balancing page (master/balance.h).
 * A worker claims its slot as it starts, so a reload's new worker takes it from the serving
 * one before the reload is decided: the master settles the claims when the reload commits (a
 * respawn of the serving generation meanwhile may have claimed a slot back) or is abandoned
 * (the serving workers would otherwise never write their slots again, and the steered counts
 * nobody clears would keep their slots passed over). */
static void claim_slots(master_t *m, const gen_t *g)
{
    for (int i = 0; i < g->nslots; i++) {
        uint32_t *pending, *busy;
        uint64_t *owner;
        if (fg_listeners_balance_slot(m->ls, i, &pending, &busy, &owner) != NULL)
            __atomic_store_n(owner, g->id, __ATOMIC_RELAXED);
    }
}

static void commit(master_t *m)
{
    gen_t *old = m->cur, *g = m->next;
    evtimer_del(m->timeout_ev);
    size_t retired = fg_listeners_commit(m->ls, slot_owner, old);
    claim_slots(m, g);
    fg_shm_set_generation(m->shm, g->id);
    uint64_t deadline = old->cfg->shutdown_timeout_ms + KILL_GRACE_MS;
    for (int i = 0; i < old->nslots; i++) {
        if (old->slots[i].proc)
            retire(m, old->slots[i].proc, SIGQUIT, deadline);
        old->slots[i].proc = NULL;
    }
    m->cur = g;
    m->next = NULL;
    gen_free(old);
    char err[256];
    if (fg_metrics_http_apply(&m->metrics_http, m->base, g->cfg, fg_master_metrics_scrape, m, err,
                              sizeof(err)) < 0)
        fg_log_error("reload: %s; the metrics listener is unchanged", err);
    if (fg_admin_http_apply(&m->admin, m->base, g->cfg, fg_admin_api_handle, m, err, sizeof(err)) <
        0)
        fg_log_error("reload: %s; the admin listener is unchanged", err);
    zones_sweep(m);
    m->reloads++;
    m->last_reload_time = time(NULL);
    m->last_reload_result = RELOAD_OK;
    m->last_reload_generation = g->id;
    fg_log_notice("reload: generation %llu serving with %d workers (%zu listening sockets "
                  "retired)",
                  (unsigned long long)g->id, g->nslots, retired);
    reload_answer(m);
    sd_ready(m);
    watch_update(m, 0);
    /* A reload that turns a job on runs it at once; one that changed its settings, too. */
    for (fg_master_job_t *const *j = jobs(m); *j; j++)
        if ((*j)->kind->enabled(g->cfg) && (*j)->pid == 0)
            job_schedule(m, *j, job_after_reload_ms(*j, g->cfg));
    if (m->reload_queued) {
        m->reload_queued = 0;
        event_active(m->reload_ev, EV_TIMEOUT, 0);
    }
}

/* Abandon the generation being started: ready workers are retired gracefully (they may already
 * hold connections), the others are killed, the sockets opened for it are retired. */
static void abort_next(master_t *m)
{
    gen_t *g = m->next;
    evtimer_del(m->timeout_ev);
    fg_listeners_rollback(m->ls, slot_owner, g);
    for (int i = 0; i < g->nslots; i++) {
        proc_t *p = g->slots[i].proc;
        if (p == NULL)
            continue;
        if (p->state == P_READY)
            retire(m, p, SIGQUIT, g->cfg->shutdown_timeout_ms + KILL_GRACE_MS);
        else
            retire(m, p, SIGKILL, 0);
        g->slots[i].proc = NULL;
    }
    claim_slots(m, m->cur);
    /* A serving worker that died during the reload (respawn pending or starting) left its slot
     * offered for the new worker that shared its sockets. */
    for (int i = 0; i < m->cur->nslots; i++) {
        const proc_t *p = m->cur->slots[i].proc;
        if (p == NULL || p->state != P_READY)
            fg_listeners_slot_down(m->ls, i, m->cur->id);
    }
    /* The master's log may have been switched to the new configuration's file. */
    const fg_log_config_t *lc = &m->cur->cfg->log;
    if (fg_log_open(lc->path, lc->level, lc->json) < 0)
        fg_log_error("cannot reopen the error log %s", lc->path ? lc->path : "stderr");
    m->next = NULL;
    gen_free(g);
}

static void reload_fail(master_t *m, const char *why)
{
    if (m->next)
        abort_next(m);
    m->reload_failures++;
    /* Zones made for the failed generation go now, or once its killed workers have exited. */
    zones_sweep(m);
    m->last_reload_time = time(NULL);
    m->last_reload_result = RELOAD_FAILED;
    m->last_reload_generation = m->cur->id;
    m->last_failure_time = m->last_reload_time;
    snprintf(m->last_reload_error, sizeof(m->last_reload_error), "%s", why);
    fg_log_error("reload failed, generation %llu keeps serving: %s", (unsigned long long)m->cur->id,
                 why);
    reload_answer(m);
    sd_ready(m);
    watch_update(m, 1);
    if (m->reload_queued) {
        m->reload_queued = 0;
        event_active(m->reload_ev, EV_TIMEOUT, 0);
    }
}

static void on_ready(evutil_socket_t fd, short what, void *arg)
{
    proc_t *p = arg;
    master_t *m = p->m;
    char c;
    ssize_t n = read(fd, &c, 1);
    if (n == -1 && (errno == EAGAIN || errno == EINTR))
        return;
    proc_close_ready(p);
    int in_next = m->next && p->generation == m->next->id && p->state == P_STARTING;
    int in_cur = p->generation == m->cur->id && p->state == P_STARTING;
    if (n != 1) {
        /* Closed without the byte: it failed before serving; SIGCHLD will tell how. */
        char why[128];
        snprintf(why, sizeof(why), "worker %d (pid %d) exited before it was ready", p->slot,
                 (int)p->pid);
        if (in_next)
            reload_fail(m, why);
        else if (in_cur && !m->started && !m->shutdown)
            startup_fail(m, why);
        return;
    }
    if (p->state != P_STARTING)
        return; /* already told to go away */
    p->state = P_READY;
    __atomic_store_n(&p->rec->state, FG_WORKER_READY, __ATOMIC_RELEASE);
    fg_log_info("worker %d (pid %d, generation %llu) ready", p->slot, (int)p->pid,
                (unsigned long long)p->generation);
    if (in_next)
        fg_listeners_open_slot(m->ls, p->slot);
    else if (in_cur && m->started)
        fg_listeners_slot_up(m->ls, p->slot); /* a respawn, for a slot withdrawn at the death */
    if (in_next && gen_all_ready(m->next))
        commit(m);
    else if (in_cur && !m->started && gen_all_ready(m->cur))
        startup_done(m);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    master_t *m = arg;
    char why[128];
    snprintf(why, sizeof(why), "workers not ready within %d s", READY_TIMEOUT_MS / 1000);
    if (m->next)
        reload_fail(m, why);
    else if (!m->started)
        startup_fail(m, why);
}

/* ---- respawn ---- */

static void on_respawn(evutil_socket_t fd, short what, void *arg)
{
    slot_t *s = arg;
    master_t *m = s->m;
    char err[256];
    if (m->shutdown || s->proc)
        return;
    if (spawn(m, m->cur, s->index, err, sizeof(err)) < 0) {
        fg_log_error("respawn failed: %s; retrying in 1 s", err);
        struct timeval tv = tv_ms(1000);
        evtimer_add(s->respawn_ev, &tv);
    }
}

/* The current worker of slot s died unexpectedly: at once, unless it keeps dying young. */
static void schedule_respawn(master_t *m, slot_t *s, uint64_t lived_ms)
{
    s->restarts++;
    s->quick_crashes = lived_ms < QUICK_CRASH_MS ? s->quick_crashes + 1 : 0;
    uint64_t delay = 0;
    if (s->quick_crashes > 1) {
        unsigned shift = s->quick_crashes - 2;
        delay = shift >= 7 ? BACKOFF_MAX_MS : (uint64_t)BACKOFF_FIRST_MS << shift;
        if (delay > BACKOFF_MAX_MS)
            delay = BACKOFF_MAX_MS;
        fg_log_warn("worker %d crashes repeatedly; respawning in %llu ms", s->index,
                    (unsigned long long)delay);
    }
    if (s->respawn_ev == NULL)
        s->respawn_ev = evtimer_new(m->base, on_respawn, s);
    if (s->respawn_ev == NULL) {
        fg_log_error("worker %d: cannot schedule its respawn", s->index);
        return;
    }
    struct timeval tv = tv_ms(delay);
    evtimer_add(s->respawn_ev, &tv);
}

/* Serving worker p died: new connections go to the live workers until its replacement is
 * ready (fg_listeners_slot_down), unless a reload's worker of the same slot, which shares its
 * sockets, takes them (if that reload is abandoned, abort_next withdraws the slot then). */
static void slot_gone(master_t *m, const proc_t *p)
{
    if (m->next && p->slot < m->next->nslots && m->next->slots[p->slot].proc != NULL)
        return;
    fg_listeners_slot_down(m->ls, p->slot, p->generation);
}

static void child_exited(master_t *m, proc_t *p, int status)
{
    char how[128];
    describe_status(status, how, sizeof(how));
    int expected = p->state == P_RETIRING || m->shutdown;
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    fg_log(!expected ? FG_LOG_ERROR
           : clean   ? FG_LOG_NOTICE
                     : FG_LOG_WARN,
           "worker %d (pid %d, generation %llu) %s", p->slot, (int)p->pid,
           (unsigned long long)p->generation, how);
    fg_listeners_release(m->ls, p->pid);
    proc_unlink(m, p);
    /* A worker killed mid-request leaves in-flight counts behind: give them back. */
    fg_health_worker_gone(fg_health_zone(m->shm), (int)(p->rec - fg_shm_worker(m->shm, 0)));
    fg_metrics_worker_gone(fg_metrics_zone(m->shm), (int)(p->rec - fg_shm_worker(m->shm, 0)));
    fg_tcpclients_worker_gone(fg_tcpclients_zone(m->shm), (int)(p->rec - fg_shm_worker(m->shm, 0)));
    fg_tunnels_worker_gone(fg_tunnels_zone(), (int)p->pid);

    gen_t *g = NULL;
    if (m->next && p->generation == m->next->id && m->next->slots[p->slot].proc == p)
        g = m->next;
    else if (m->cur && p->generation == m->cur->id && m->cur->slots[p->slot].proc == p)
        g = m->cur;
    if (g != NULL) {
        slot_t *s = &g->slots[p->slot];
        s->proc = NULL;
        char why[256];
        snprintf(why, sizeof(why), "worker %d (pid %d) %s", p->slot, (int)p->pid, how);
        /* During shutdown every exit is expected. */
        if (!m->shutdown && g == m->next)
            reload_fail(m, why);
        else if (!m->shutdown && !m->started)
            startup_fail(m, why);
        else if (!m->shutdown) {
            slot_gone(m, p);
            schedule_respawn(m, s, fg_master_mono_ms() - p->started_mono);
        }
    }
    proc_free(p);
}

/* Free the shm zones that no live generation uses any more: a zone replaced by a reload stays
 * until the last worker of the generation that used it has exited. */
/* The generations that still use shared memory: the current one, the one starting, and those
 * whose workers have not all exited. Generation ids are few (one per reload still draining),
 * so a small array deduplicated by a scan is enough. */
static void zones_sweep(master_t *m)
{
    uint64_t live[64];
    size_t n_live = 0;
    live[n_live++] = m->cur->id;
    if (m->next)
        live[n_live++] = m->next->id;
    for (proc_t *p = m->procs; p; p = p->next) {
        size_t i = 0;
        while (i < n_live && live[i] != p->generation)
            i++;
        if (i < n_live)
            continue;
        if (n_live == sizeof(live) / sizeof(live[0]))
            return; /* too many draining generations to tell: keep everything for now */
        live[n_live++] = p->generation;
    }
    int n = fg_shm_zone_sweep(m->shm, live, n_live);
    if (n > 0)
        fg_log_info("shm: freed %d zone(s) no longer used by any generation", n);
}

/* The oldest generation that still has a process (destination records of older ones may be
 * recycled by fg_health_attach). */
static uint64_t oldest_live_gen(const master_t *m)
{
    uint64_t min = m->cur ? m->cur->id : 1;
    for (const proc_t *p = m->procs; p; p = p->next)
        if (p->generation < min)
            min = p->generation;
    return min;
}

static void reap(master_t *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        fg_master_job_t *const *j = jobs(m);
        while (*j && (*j)->pid != pid)
            j++;
        if (*j) {
            job_exited(m, *j, status);
            continue;
        }
        proc_t *p = m->procs;
        while (p && p->pid != pid)
            p = p->next;
        if (p)
            child_exited(m, p, status);
    }
    if (m->cur && m->shm)
        zones_sweep(m);
    if (m->shutdown && m->procs == NULL)
        event_base_loopexit(m->base, NULL);
}

/* ---- reload ---- */

static int apply_log(const fg_config_t *cfg, char *err, size_t errlen)
{
    const fg_log_config_t *lc = &cfg->log;
    int rc = fg_log_open(lc->path, lc->level, lc->json);
    if (rc < 0) {
        snprintf(err, errlen, "%s: log.path: cannot open %s: %s", cfg->file ? cfg->file : "",
                 lc->path ? lc->path : "stderr", strerror(-rc));
        return -1;
    }
    return 0;
}

static void reload(master_t *m)
{
    char err[1024];
    if (m->shutdown)
        return;
    if (!m->started) {
        m->reload_queued = 1;
        fg_log_notice("reload requested during start-up: queued");
        return;
    }
    if (m->next) {
        m->reload_queued = 1;
        fg_log_notice("reload requested while one is in progress: queued");
        return;
    }
    m->reload_covers = m->reload_requested;
    fg_log_notice("reloading %s", m->conf_file);
    /* systemd (Type=notify) holds `systemctl reload` until READY=1 follows this. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    fg_notify_send(m->sd, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
                   (unsigned long long)now.tv_sec * 1000000ULL +
                       (unsigned long long)now.tv_nsec / 1000,
                   m->conf_file);
    /* The watch follows the symlinks as they are now, set before the file is read: a change
     * from here on is seen, whatever this reload reads. */
    if (m->watch != NULL)
        watch_update(m, 0);
    gen_t *g = gen_load(m, m->cur->id + 1, err, sizeof(err));
    if (g == NULL) {
        reload_fail(m, err);
        return;
    }
    fg_config_log_warnings(g->cfg);
    if (fg_security_table_build(g->cfg, m->shm, g->id, err, sizeof(err)) < 0 ||
        fg_tls_build(g->cfg, m->shm, g->id, tls_warn, NULL, err, sizeof(err)) < 0 ||
        fg_health_attach(m->shm, g->cfg, g->id, oldest_live_gen(m), err, sizeof(err)) < 0 ||
        fg_tunnels_attach(m->shm, g->cfg, g->id, oldest_live_gen(m), err, sizeof(err)) < 0) {
        gen_free(g);
        reload_fail(m, err);
        return;
    }
    fg_metrics_attach(m->shm, g->cfg, g->id, m->cur->id, oldest_live_gen(m));
    fg_tcpclients_attach(m->shm, g->cfg, g->id);
    if (g->cfg->shm_size != m->shm_requested)
        fg_log_warn("shm.size changed: the arena keeps its size (%zu bytes) until a restart",
                    fg_shm_size(m->shm));
    if (m->pid_file && (!g->cfg->pid_file || strcmp(g->cfg->pid_file, m->pid_file) != 0))
        fg_log_warn("pidFile changed: takes effect at the next restart");
    if (fg_daemon_set_nofile(g->cfg->rlimit_nofile, err, sizeof(err)) < 0)
        fg_log_warn("%s", err);
    if (fg_listeners_prepare(m->ls, g->cfg, &g->fds, err, sizeof(err)) < 0) {
        gen_free(g);
        reload_fail(m, err);
        return;
    }
    /* New workers inherit the master's error log: switch it before forking them. */
    if (apply_log(g->cfg, err, sizeof(err)) < 0) {
        fg_listeners_rollback(m->ls, NULL, NULL);
        gen_free(g);
        reload_fail(m, err);
        return;
    }
    m->next = g;
    for (int i = 0; i < g->nslots; i++) {
        if (spawn(m, g, i, err, sizeof(err)) < 0) {
            reload_fail(m, err);
            return;
        }
    }
    struct timeval tv = tv_ms(READY_TIMEOUT_MS);
    evtimer_add(m->timeout_ev, &tv);
}

static void on_reload(evutil_socket_t fd, short what, void *arg)
{
    reload(arg);
}

uint64_t fg_master_request_reload(master_t *m)
{
    if (m->shutdown)
        return 0;
    /* From the loop, not from here: the caller registers the number before any answer. */
    event_active(m->reload_ev, EV_TIMEOUT, 0);
    return ++m->reload_requested;
}

static void on_file_changed(void *arg, const char *file)
{
    master_t *m = arg;
    fg_log_notice("watchConfig: %s changed", file);
    m->reload_requested++;
    reload(m);
}

/* Start or stop watching as the serving configuration asks, and watch every file it read.
 * After a failed reload the files the refused file names are watched too, so that fixing one
 * of them (a certificate, an error page) retries. */
static void watch_update(master_t *m, int after_failure)
{
    int want = m->cur->cfg->watch_config && !m->shutdown;
    if (!want) {
        if (m->watch != NULL) {
            fg_watch_free(m->watch);
            m->watch = NULL;
            fg_log_info("watchConfig: no longer watching %s", m->conf_file);
        }
        return;
    }
    char err[512];
    if (m->watch == NULL) {
        m->watch = fg_watch_new(m->base, WATCH_DEBOUNCE_MS, on_file_changed, m, err, sizeof(err));
        if (m->watch == NULL) {
            fg_log_error("%s", err);
            return;
        }
    }
    fg_watch_files_t files = {0};
    fg_watch_files_add_config(&files, m->conf_file, m->cur->cfg);
    if (after_failure)
        fg_watch_files_add_named(&files, m->conf_file);
    size_t n = fg_watch_set(m->watch, (const char *const *)files.paths, files.n);
    fg_log_info("watchConfig: watching %zu file(s): %s and the files it reads", n, m->conf_file);
    for (size_t i = 1; i < files.n; i++)
        fg_log_debug("watchConfig: watching %s", files.paths[i]);
    fg_watch_files_free(&files);
}

/* ---- shutdown ---- */

static void on_shutdown_deadline(evutil_socket_t fd, short what, void *arg)
{
    master_t *m = arg;
    for (proc_t *p = m->procs; p; p = p->next) {
        fg_log_warn("worker %d (pid %d) did not exit in time, killing it", p->slot, (int)p->pid);
        kill(p->pid, SIGKILL);
    }
}

static void shutdown_begin(master_t *m, int mode)
{
    if (m->shutdown >= mode)
        return;
    m->shutdown = mode;
    if (m->shm)
        fg_shm_set_stopping(m->shm); /* before the workers are told to retire */
    fg_log_notice("%s shutdown", mode == SD_FAST ? "fast" : "graceful");
    fg_notify_send(m->sd, "STOPPING=1\nSTATUS=%s shutdown", mode == SD_FAST ? "fast" : "graceful");
    json_t *doc = json_pack("{s:s, s:s}", "result", "failed", "error", "the master is stopping");
    fg_status_resolve(m->status, UINT64_MAX, doc);
    json_decref(doc);
    fg_watch_free(m->watch);
    m->watch = NULL;
    evtimer_del(m->timeout_ev);
    for (fg_master_job_t *const *j = jobs(m); *j; j++) {
        if ((*j)->ev)
            evtimer_del((*j)->ev);
        if ((*j)->pid > 0)
            kill((*j)->pid, SIGTERM); /* an order or fetch in flight is retried at the next start */
    }
    for (gen_t *g = m->cur; g; g = g == m->cur ? m->next : NULL)
        for (int i = 0; i < g->nslots; i++)
            if (g->slots[i].respawn_ev)
                evtimer_del(g->slots[i].respawn_ev);
    for (proc_t *p = m->procs; p; p = p->next) {
        if (p->kill_ev)
            evtimer_del(p->kill_ev);
        retire(m, p, mode == SD_FAST ? SIGTERM : SIGQUIT, 0);
    }
    uint64_t ms =
        mode == SD_FAST ? FAST_SHUTDOWN_MS : m->cur->cfg->shutdown_timeout_ms + KILL_GRACE_MS;
    struct timeval tv = tv_ms(ms);
    evtimer_add(m->shutdown_ev, &tv);
    if (m->procs == NULL)
        event_base_loopexit(m->base, NULL);
}

static void reopen_logs(master_t *m)
{
    int rc = fg_log_reopen();
    if (rc < 0)
        fg_log_error("cannot reopen the error log: %s", strerror(-rc));
    else
        fg_log_notice("log files reopened");
    /* Workers reopen the same path after us, without root: give them the new file (nginx does
     * the same). */
    const gen_t *g = m->cur;
    if (rc == 0 && g->user.set && geteuid() == 0 && log_is_file(g->cfg) &&
        chown(g->cfg->log.path, g->user.uid, (gid_t)-1) == -1)
        fg_log_warn("cannot chown %s to %s: %s", g->cfg->log.path, g->user.name, strerror(errno));
    prepare_access_log(g);
    for (proc_t *p = m->procs; p; p = p->next)
        kill(p->pid, SIGUSR1);
}

/* ---- signals ---- */

static void on_signal_handler(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(sig_pipe[1], &b, 1) == -1) {
        /* Pipe full: a signal of the same kind is already queued. */
    }
    errno = saved;
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    master_t *m = arg;
    unsigned char buf[64];
    ssize_t n;
    int chld = 0, hup = 0;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            switch (buf[i]) {
            case SIGCHLD:
                chld = 1;
                break;
            case SIGHUP:
                hup = 1;
                break;
            case SIGQUIT:
                shutdown_begin(m, SD_GRACEFUL);
                break;
            case SIGTERM:
            case SIGINT:
                shutdown_begin(m, SD_FAST);
                break;
            case SIGUSR1:
                reopen_logs(m);
                break;
            }
        }
    }
    /* Reap first, so that a reload sees the slots as they are now. */
    if (chld)
        reap(m);
    if (hup) {
        m->reload_requested++;
        reload(m);
    }
}

/* Catch the signals into the self-pipe. Done before the pid file exists: a `-s reload` or a
 * logrotate `-s reopen` that reads it must never meet the default action (termination). What
 * arrives before the event loop waits in the pipe. */
static int signals_catch(void)
{
    if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) == -1)
        return -1;
    struct sigaction sa = {.sa_handler = on_signal_handler, .sa_flags = SA_RESTART};
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++)
        if (sigaction(handled_signals[i], &sa, NULL) == -1)
            return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int signals_install(master_t *m)
{
    m->sig_ev = event_new(m->base, sig_pipe[0], EV_READ | EV_PERSIST, on_signal, m);
    if (m->sig_ev == NULL || event_add(m->sig_ev, NULL) == -1)
        return -1;
    return 0;
}

/* ---- start and stop ---- */

/* Everything up to the event loop, in the order docs/operations.md gives. Returns 0 or -1
 * (then the reason was already reported). */
static int start(master_t *m, int foreground)
{
    char err[1024];
    if (!foreground)
        fg_daemon_close_inherited();
    m->cur = gen_load(m, 1, err, sizeof(err));
    if (m->cur == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    fg_config_t *cfg = m->cur->cfg;
    const char *lock_path = cfg->pid_file ? cfg->pid_file : cfg->status_socket;
    if (lock_path && (m->lock_fd = fg_instance_lock(lock_path, err, sizeof(err))) < 0) {
        fprintf(stderr, "fastgateway: %s\n", err);
        return -1;
    }
    if (apply_log(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    /* The instance lock is ours: whatever a pid file names, it is no running gateway. */
    pid_t other;
    if (cfg->pid_file && fg_pidfile_live(cfg->pid_file, &other))
        fg_log_notice("pid file %s names pid %d, which is no running instance (the instance "
                      "lock was free): replaced",
                      cfg->pid_file, (int)other);
    if (!foreground && !log_is_file(cfg))
        fg_log_warn("log.errorLog is \"stderr\": a daemon has no stderr once started, so its "
                    "error log is discarded from then on (set a file, or run with -f)");
    fg_config_log_warnings(cfg);
    if (fg_daemon_set_nofile(cfg->rlimit_nofile, err, sizeof(err)) < 0)
        fg_log_warn("%s", err);
    if (cfg->user && geteuid() != 0)
        fg_log_warn("user \"%s\" ignored: not started as root", cfg->user);
    if (!foreground) {
        if (fg_daemon_detach(&m->notify_fd, err, sizeof(err)) < 0) {
            fprintf(stderr, "fastgateway: %s\n", err);
            return -1;
        }
        if (log_is_file(cfg))
            fg_daemon_silence_stderr();
    }
    m->pid = getpid();
    m->sd = fg_notify_new();
    m->start_time = time(NULL);
    m->start_mono = fg_master_mono_ms();
    if (signals_catch() < 0) {
        snprintf(err, sizeof(err), "cannot catch signals: %s", strerror(errno));
        goto fail;
    }
    if (cfg->pid_file) {
        if (fg_pidfile_write(cfg->pid_file, err, sizeof(err)) < 0)
            goto fail;
        m->pid_file = strdup(cfg->pid_file);
    }
    m->shm_requested = cfg->shm_size;
    m->shm = fg_shm_new(cfg->shm_size);
    if (m->shm == NULL) {
        snprintf(err, sizeof(err), "shm: cannot map %zu bytes: %s", cfg->shm_size, strerror(errno));
        goto fail;
    }
    fg_shm_set_generation(m->shm, m->cur->id);
    if (fg_security_table_build(cfg, m->shm, m->cur->id, err, sizeof(err)) < 0 ||
        fg_tls_build(cfg, m->shm, m->cur->id, tls_warn, NULL, err, sizeof(err)) < 0 ||
        fg_health_attach(m->shm, cfg, m->cur->id, m->cur->id, err, sizeof(err)) < 0 ||
        fg_tunnels_attach(m->shm, cfg, m->cur->id, m->cur->id, err, sizeof(err)) < 0)
        goto fail;
    fg_metrics_attach(m->shm, cfg, m->cur->id, m->cur->id, m->cur->id);
    fg_tcpclients_attach(m->shm, cfg, m->cur->id);
    m->ls = fg_listeners_new();
    if (m->ls == NULL || fg_listeners_prepare(m->ls, cfg, &m->cur->fds, err, sizeof(err)) < 0)
        goto fail;
    fg_listeners_commit(m->ls, NULL, NULL);

    m->base = event_base_new();
    if (m->base == NULL || signals_install(m) < 0) {
        snprintf(err, sizeof(err), "cannot set up the event loop: %s", strerror(errno));
        goto fail;
    }
    m->timeout_ev = evtimer_new(m->base, on_timeout, m);
    m->reload_ev = event_new(m->base, -1, 0, on_reload, m);
    m->shutdown_ev = evtimer_new(m->base, on_shutdown_deadline, m);
    m->acme = (fg_master_job_t){.kind = &fg_master_acme_job, .m = m};
    m->ocsp = (fg_master_job_t){.kind = &fg_master_ocsp_job, .m = m};
    for (fg_master_job_t *const *j = jobs(m); *j; j++)
        (*j)->ev = evtimer_new(m->base, on_job, *j);
    for (int i = 0; i < m->cur->nslots; i++)
        if (spawn(m, m->cur, i, err, sizeof(err)) < 0)
            goto fail_workers;
    if (cfg->status_socket) {
        m->status = fg_status_new(m->base, cfg->status_socket, cfg->status_group,
                                  fg_master_status_cmds, m, err, sizeof(err));
        if (m->status == NULL)
            goto fail_workers;
        fg_status_set_args_cmds(m->status, fg_master_status_args_cmds);
        fg_status_set_defer_cmds(m->status, fg_master_status_defer_cmds);
    }
    if (cfg->metrics_listen) {
        m->metrics_http =
            fg_metrics_http_new(m->base, cfg, fg_master_metrics_scrape, m, err, sizeof(err));
        if (m->metrics_http == NULL)
            goto fail_workers;
    }
    if (cfg->admin.listen) {
        m->admin = fg_admin_http_new(m->base, cfg, fg_admin_api_handle, m, err, sizeof(err));
        if (m->admin == NULL)
            goto fail_workers;
    }
    struct timeval tv = tv_ms(READY_TIMEOUT_MS);
    evtimer_add(m->timeout_ev, &tv);
    return 0;

fail_workers:
    startup_fail(m, err);
    return 0; /* the loop reaps the workers already started, then exits 1 */
fail:
    fg_log_error("%s", err);
    fg_notify_send(m->sd, "STATUS=start-up failed: %s", err);
    if (m->notify_fd != -1) {
        snprintf(m->startup_error, sizeof(m->startup_error), "fastgateway: %s", err);
    } else if (log_is_file(cfg)) {
        fprintf(stderr, "fastgateway: %s\n", err);
    }
    return -1;
}

static void stop(master_t *m)
{
    fg_watch_free(m->watch);
    fg_notify_free(m->sd);
    fg_status_free(m->status);
    fg_metrics_http_free(m->metrics_http);
    fg_admin_http_free(m->admin);
    for (proc_t *p = m->procs, *next; p; p = next) {
        next = p->next;
        proc_free(p);
    }
    gen_free(m->next);
    gen_free(m->cur);
    fg_listeners_free(m->ls);
    if (m->sig_ev)
        event_free(m->sig_ev);
    if (m->timeout_ev)
        event_free(m->timeout_ev);
    if (m->reload_ev)
        event_free(m->reload_ev);
    if (m->shutdown_ev)
        event_free(m->shutdown_ev);
    for (fg_master_job_t *const *j = jobs(m); *j; j++)
        if ((*j)->ev)
            event_free((*j)->ev);
    if (m->base)
        event_base_free(m->base);
    fg_shm_free(m->shm);
    if (m->pid_file)
        fg_pidfile_remove(m->pid_file);
    free(m->pid_file);
    if (sig_pipe[0] != -1) {
        close(sig_pipe[0]);
        close(sig_pipe[1]);
    }
    if (m->lock_fd >= 0)
        close(m->lock_fd); /* the workers' copies went with them */
}

int fg_master_run(const char *conf_file, int foreground)
{
    master_t m = {.conf_file = conf_file, .notify_fd = -1, .lock_fd = -1};
    if (start(&m, foreground) < 0) {
        m.exit_code = 1;
    } else {
        event_base_dispatch(m.base);
        fg_log_notice("exiting");
    }
    stop(&m);
    /* Only now, with the pid file and the socket gone, may the launching process exit. */
    if (m.startup_error[0] == '\0')
        snprintf(m.startup_error, sizeof(m.startup_error),
                 "fastgateway: the master stopped during start-up");
    fg_daemon_notify(&m.notify_fd, m.startup_error);
    return m.exit_code;
}
