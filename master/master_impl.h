/* The master's internal state, shared by master.c (supervision: generations, workers, reload,
 * signals) and commands.c (what the status socket shows and changes). Not a public interface. */
#ifndef FG_MASTER_IMPL_H
#define FG_MASTER_IMPL_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "common/config.h"
#include "master/daemon.h"
#include "master/listener.h"
#include "master/notify.h"
#include "master/status.h"
#include "master/watch.h"
#include "shm/arena.h"

struct event;
struct event_base;

enum { P_STARTING, P_READY, P_RETIRING };
enum { SD_NONE, SD_GRACEFUL, SD_FAST };
enum { RELOAD_NONE, RELOAD_OK, RELOAD_FAILED };

struct master_s;

/* One worker process. */
typedef struct proc_s {
    struct proc_s *next;
    struct master_s *m;
    pid_t pid;
    int slot;
    uint64_t generation;
    fg_shm_worker_t *rec;
    int state;
    int ready_fd; /* read end of the ready pipe until the byte or EOF arrives */
    struct event *ready_ev;
    struct event *kill_ev; /* SIGKILL deadline of a retiring worker */
    uint64_t started_mono;
} proc_t;

/* A worker slot of a generation: its current process, or a pending respawn. */
typedef struct {
    struct master_s *m;
    int index;
    proc_t *proc;
    struct event *respawn_ev;
    uint64_t restarts;
    unsigned quick_crashes;
} slot_t;

/* A generation: one frozen configuration and the workers started for it. */
typedef struct {
    uint64_t id;
    fg_config_t *cfg;
    int *fds; /* fds[server * nslots + slot] */
    slot_t *slots;
    int nslots;
    fg_daemon_user_t user;
} gen_t;

/* A kind of job: a blocking task the master runs in a child process of its own, on a timer
 * (master.c): the ACME client, the OCSP updater. */
typedef struct {
    const char *name;    /* the child's log role, the prefix of the master's messages */
    const char *changed; /* logged before the reload a run that wrote files asks for */
    int (*enabled)(const fg_config_t *cfg);
    uint64_t (*fingerprint)(const fg_config_t *cfg); /* of the settings a run depends on */
    uint64_t (*interval_ms)(const fg_config_t *cfg); /* between runs */
    /* in the child: adds FG_MASTER_JOB_* bits to *bits as it goes and returns them */
    int (*run)(const fg_config_t *cfg, int force, volatile sig_atomic_t *bits);
} fg_master_job_kind_t;

/* A job's exit status. */
#define FG_MASTER_JOB_CHANGED 1 /* the run wrote files: reload */
#define FG_MASTER_JOB_FAILED 2  /* something due could not be done (logged) */

extern const fg_master_job_kind_t fg_master_acme_job, fg_master_ocsp_job;

typedef struct fg_master_job_s {
    const fg_master_job_kind_t *kind;
    struct master_s *m;
    struct event *ev; /* the next run */
    pid_t pid;        /* the child, 0 when none runs */
    time_t last;      /* when the last run ended, 0 = none yet */
    int last_bits;    /* its exit status, FG_MASTER_JOB_* bits */
    time_t next;      /* when the next run is due, 0 = none scheduled */
    uint64_t fp;      /* fingerprint of the settings the last run started with */
    int force;        /* the next run was asked for (`acme check`, `ocsp update`) */
} fg_master_job_t;

typedef struct master_s {
    struct event_base *base;
    const char *conf_file;
    pid_t pid;
    fg_shm_t *shm;
    size_t shm_requested;
    fg_listeners_t *ls;
    fg_status_t *status;
    struct fg_metrics_http_s *metrics_http; /* the "metrics" listener, NULL when none */
    struct fg_admin_http_s *admin;          /* the "admin" listener, NULL when none */
    char *pid_file;
    gen_t *cur;
    gen_t *next; /* being started by a reload */
    proc_t *procs;
    struct event *sig_ev;
    struct event *timeout_ev; /* start-up or reload readiness deadline */
    struct event *reload_ev;  /* queued reload */
    struct event *shutdown_ev;
    fg_master_job_t acme; /* the ACME client (master/acme.h) */
    fg_master_job_t ocsp; /* the OCSP updater (master/ocsp_update.h) */
    int reload_queued;
    int lock_fd; /* the instance lock (fg_instance_lock), -1 when none */
    int shutdown;
    int started;
    int notify_fd;     /* pipe to the launching process (daemon start-up) */
    fg_notify_t *sd;   /* systemd's $NOTIFY_SOCKET, NULL when not under systemd */
    fg_watch_t *watch; /* watchConfig, NULL when off */
    int exit_code;
    time_t start_time;
    uint64_t start_mono;
    uint64_t reloads, reload_failures;
    time_t last_reload_time;
    int last_reload_result;
    uint64_t last_reload_generation; /* the generation serving after the last reload */
    /* Reload requests are numbered (HUP, status command, file watch); a reload reads the file
     * once for every request made before it started: the status command's answer waits for
     * the reload that covers its number. */
    uint64_t reload_requested;
    uint64_t reload_covers;
    time_t last_failure_time; /* the last failed reload, kept after later successes */
    char last_reload_error[1024];
    char startup_error[1200]; /* for the launching process, sent once cleanup is done */
} master_t;

/* Milliseconds on the monotonic and on the wall clock. */
uint64_t fg_master_mono_ms(void);
uint64_t fg_master_wall_ms(void);

/* Ask for a reload (it runs from the event loop, or after the one in progress). Returns the
 * request's number for fg_status_resolve, or 0 when shutting down. */
uint64_t fg_master_request_reload(master_t *m);

/* Start a run of job j now (`acme check`, `ocsp update`): 0 when it starts, 1 when it starts
 * after the run or the reload in progress, -1 when the configuration does not enable it or
 * while stopping. */
int fg_master_job_run_now(master_t *m, fg_master_job_t *j);

/* A snapshot of the metrics of the serving generation (commands.c; master/metrics_view.h). */
struct fg_metrics_snap_s;
struct fg_metrics_snap_s *fg_master_metrics_snap(master_t *m);
/* The metrics listener's scrape (fg_metrics_http_fn): arg is the master. */
struct evbuffer;
int fg_master_metrics_scrape(void *arg, struct evbuffer *out);

/* The status socket's commands (commands.c). */
extern const fg_status_cmd_t fg_master_status_cmds[];
extern const fg_status_defer_cmd_t fg_master_status_defer_cmds[];
extern const fg_status_args_cmd_t fg_master_status_args_cmds[];

#endif
