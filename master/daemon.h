/* Becoming a daemon and the things that go with it: the pid file, the worker user, the file
 * descriptor limit. Used by the master at start-up and by `fastgateway -s`. */
#ifndef FG_DAEMON_H
#define FG_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Detach: fork, setsid, fork again, chdir /, stdin and stdout to /dev/null. Only the final
 * process (the master) returns, with *notify_fd set to a pipe on which it reports how start-up
 * ended (fg_daemon_notify). The process that called this waits on that pipe and exits 0 once
 * the master says so, or prints the master's error on stderr and exits 1: an init script's
 * `start` fails when the gateway does. Returns -1 with err filled when fork fails. */
int fg_daemon_detach(int *notify_fd, char *err, size_t errlen);

/* Report start-up to the waiting process and close the pipe. msg NULL = success. */
void fg_daemon_notify(int *notify_fd, const char *msg);

/* Point stderr at /dev/null: the daemon keeps nothing of its caller's once start-up is over
 * (a caller reading a pipe, as in `fastgateway 2>&1 | grep`, would wait for its end forever). */
void fg_daemon_silence_stderr(void);

/* Close every descriptor above 2: what the caller left open belongs to the caller (a pipe, a
 * terminal, a file). Call before the gateway opens anything of its own. */
void fg_daemon_close_inherited(void);

/* Pid file. read: 0 with *pid, or -1 with err ("cannot read ...", "... holds no pid").
 * live: 1 when the pid in path names a running process other than us, 0 otherwise (which
 * process it is, the file cannot say: the instance lock tells whether the gateway runs).
 * write: 0 or -1 with err. remove: only when it still holds our own pid. */
int fg_pidfile_read(const char *path, pid_t *pid, char *err, size_t errlen);
int fg_pidfile_live(const char *path, pid_t *pid);
int fg_pidfile_write(const char *path, char *err, size_t errlen);
void fg_pidfile_remove(const char *path);

/* One instance per configuration: an exclusive flock on "PATH.lock" (PATH is the pid file, or
 * the status socket), held for the master's life and by its workers after it (they share the
 * open file). SO_REUSEPORT would let a second instance bind the same ports, so a pid file
 * check alone cannot stop two masters starting at once. Returns the lock's fd, or -1 with err
 * ("already running" when another instance holds it). */
int fg_instance_lock(const char *path, char *err, size_t errlen);

/* Whether another process holds the instance lock of path (PATH.lock): 1 when it does, 0 when
 * it does not or cannot be told. The lock is taken (shared) and dropped at once when free. */
int fg_instance_running(const char *path);

/* The unprivileged user workers run as. */
typedef struct {
    int set;
    uid_t uid;
    gid_t gid;
    char name[64];
} fg_daemon_user_t;

/* Resolve user (and group, NULL = the user's primary group). Returns 0 or -1 with err. */
int fg_daemon_user_resolve(const char *user, const char *group, fg_daemon_user_t *out, char *err,
                           size_t errlen);
/* In a worker, as root: supplementary groups, gid, then uid. No-op when !u->set or when not
 * root. Returns 0 or -1 with err. */
int fg_daemon_user_drop(const fg_daemon_user_t *u, char *err, size_t errlen);

/* Raise RLIMIT_NOFILE (soft, and hard when we may) to n. Returns 0 or -1 with err. */
int fg_daemon_set_nofile(uint64_t n, char *err, size_t errlen);

#endif
