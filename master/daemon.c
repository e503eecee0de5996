#include "master/daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void to_devnull(int target)
{
    int fd = open("/dev/null", O_RDWR);
    if (fd == -1)
        return;
    if (fd != target) {
        dup2(fd, target);
        close(fd);
    }
}

/* The launching process: relay what the master says, then leave with its verdict. */
_Noreturn static void wait_for_master(int rfd)
{
    char msg[2048];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(msg) - 1 && (n = read(rfd, msg + len, sizeof(msg) - 1 - len)) != 0) {
        if (n == -1) {
            if (errno == EINTR)
                continue;
            break;
        }
        len += (size_t)n;
    }
    msg[len] = '\0';
    if (strcmp(msg, "OK\n") == 0)
        _exit(0);
    if (len == 0)
        fprintf(stderr, "fastgateway: the master exited during start-up (see the error log)\n");
    else
        fprintf(stderr, "%s%s", msg, msg[len - 1] == '\n' ? "" : "\n");
    _exit(1);
}

int fg_daemon_detach(int *notify_fd, char *err, size_t errlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) == -1) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid == -1) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid > 0) {
        close(p[1]);
        /* The intermediate child exits at once; reap it so it is no zombie while we wait. */
        waitpid(pid, NULL, 0);
        wait_for_master(p[0]);
    }
    close(p[0]);
    if (setsid() == -1)
        _exit(1);
    /* Fork again so that the master is not a session leader and never regains a terminal. */
    pid = fork();
    if (pid == -1) {
        dprintf(p[1], "fastgateway: fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (pid > 0)
        _exit(0);
    if (chdir("/") == -1) {
        /* "/" always exists; nothing sensible to do otherwise. */
    }
    to_devnull(0);
    to_devnull(1);
    *notify_fd = p[1];
    return 0;
}

void fg_daemon_notify(int *notify_fd, const char *msg)
{
    if (*notify_fd < 0)
        return;
    if (msg == NULL)
        msg = "OK";
    dprintf(*notify_fd, "%s\n", msg);
    close(*notify_fd);
    *notify_fd = -1;
}

void fg_daemon_silence_stderr(void)
{
    to_devnull(2);
}

void fg_daemon_close_inherited(void)
{
    if (close_range(3, ~0U, 0) == 0)
        return;
    /* Kernels before 5.9: the open descriptors are listed in /proc. */
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != self)
            close(fd);
    }
    closedir(d);
}

int fg_pidfile_read(const char *path, pid_t *pid, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read pid file %s: %s", path, strerror(errno));
        return -1;
    }
    long v = 0;
    int ok = fscanf(f, "%ld", &v) == 1 && v > 0 && v <= 0x7fffffffL;
    fclose(f);
    if (!ok) {
        snprintf(err, errlen, "pid file %s holds no pid", path);
        return -1;
    }
    *pid = (pid_t)v;
    return 0;
}

int fg_pidfile_live(const char *path, pid_t *pid)
{
    char err[256];
    if (fg_pidfile_read(path, pid, err, sizeof(err)) < 0)
        return 0;
    if (*pid == getpid())
        return 0;
    /* EPERM: alive, only owned by someone else. */
    return kill(*pid, 0) == 0 || errno == EPERM;
}

int fg_pidfile_write(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        snprintf(err, errlen, "pidFile %s: path too long", path);
        return -1;
    }
    /* Written aside and renamed, so `-s` never reads a half-written file. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        snprintf(err, errlen, "cannot write pid file %s: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = dprintf(fd, "%ld\n", (long)getpid()) > 0;
    ok &= close(fd) == 0;
    if (!ok || rename(tmp, path) == -1) {
        snprintf(err, errlen, "cannot write pid file %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int fg_instance_lock(const char *path, char *err, size_t errlen)
{
    char lock[4096];
    if ((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) >= sizeof(lock)) {
        snprintf(err, errlen, "%s.lock: path too long", path);
        return -1;
    }
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) {
        snprintf(err, errlen, "cannot open the instance lock %s: %s", lock, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            snprintf(err, errlen,
                     "already running: another instance holds %s (its workers may still be "
                     "finishing)",
                     lock);
        else
            snprintf(err, errlen, "cannot lock %s: %s", lock, strerror(e));
        return -1;
    }
    return fd;
}

int fg_instance_running(const char *path)
{
    char lock[4096];
    if ((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) >= sizeof(lock))
        return 0;
    int fd = open(lock, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return 0;
    int held = flock(fd, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

void fg_pidfile_remove(const char *path)
{
    pid_t pid;
    char err[256];
    if (fg_pidfile_read(path, &pid, err, sizeof(err)) == 0 && pid == getpid())
        unlink(path);
}

int fg_daemon_user_resolve(const char *user, const char *group, fg_daemon_user_t *out, char *err,
                           size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (user == NULL)
        return 0;
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        snprintf(err, errlen, "user: unknown user \"%s\"", user);
        return -1;
    }
    if (strlen(user) >= sizeof(out->name)) {
        snprintf(err, errlen, "user: name too long");
        return -1;
    }
    out->uid = pw->pw_uid;
    out->gid = pw->pw_gid;
    if (group != NULL) {
        struct group *gr = getgrnam(group);
        if (gr == NULL) {
            snprintf(err, errlen, "group: unknown group \"%s\"", group);
            return -1;
        }
        out->gid = gr->gr_gid;
    }
    snprintf(out->name, sizeof(out->name), "%s", user);
    out->set = 1;
    return 0;
}

int fg_daemon_user_drop(const fg_daemon_user_t *u, char *err, size_t errlen)
{
    if (!u->set || geteuid() != 0)
        return 0;
    /* Groups first: after setuid we could no longer change them. */
    if (initgroups(u->name, u->gid) == -1 || setgid(u->gid) == -1 || setuid(u->uid) == -1) {
        snprintf(err, errlen, "cannot switch to user %s (uid %ld, gid %ld): %s", u->name,
                 (long)u->uid, (long)u->gid, strerror(errno));
        return -1;
    }
    /* Make sure root cannot be regained (setuid succeeded partially on some systems). */
    if (u->uid != 0 && setuid(0) == 0) {
        snprintf(err, errlen, "user %s: root privileges could be regained", u->name);
        return -1;
    }
    return 0;
}

int fg_daemon_set_nofile(uint64_t n, char *err, size_t errlen)
{
    struct rlimit rl;
    if (n == 0)
        return 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        snprintf(err, errlen, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur >= n)
        return 0;
    rl.rlim_cur = (rlim_t)n;
    if (rl.rlim_max < n)
        rl.rlim_max = (rlim_t)n;
    if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
        snprintf(err, errlen, "cannot raise the open file limit to %llu: %s", (unsigned long long)n,
                 strerror(errno));
        return -1;
    }
    return 0;
}
