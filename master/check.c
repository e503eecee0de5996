/* Start-up prerequisites for `-t`. Permission checks use faccessat(AT_EACCESS) so they answer
 * for the effective user; the access log's checks for the worker user run in a child process
 * that has switched to that user, so groups and ACLs are judged by the kernel, not guessed. */
#include "master/check.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "master/daemon.h"

static void report(const fg_config_t *cfg, const char *key, const char *fmt, const char *path,
                   const char *why)
{
    char msg[PATH_MAX + 256];
    snprintf(msg, sizeof(msg), fmt, path);
    fprintf(stderr, "%s: %s: %s%s%s\n", cfg->file, key, msg, why ? ": " : "", why ? why : "");
}

/* The directory part of path (no trailing slash; "/" for a file at the root). */
static void dir_of(const char *path, char *dir, size_t len)
{
    snprintf(dir, len, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, len, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
}

/* The directory of path exists and is a directory. Returns 0 or -1 after reporting. */
static int dir_present(const fg_config_t *cfg, const char *key, const char *path, char *dir,
                       size_t len)
{
    struct stat st;
    dir_of(path, dir, len);
    if (stat(dir, &st) == -1) {
        report(cfg, key, "directory %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        report(cfg, key, "%s is not a directory", dir, NULL);
        return -1;
    }
    return 0;
}

/* Whether this process could create or append to path: the file if it exists, else its
 * directory. Returns 0 or -1 after reporting. */
static int writable(const fg_config_t *cfg, const char *key, const char *path)
{
    char dir[PATH_MAX];
    struct stat st;
    if (dir_present(cfg, key, path, dir, sizeof(dir)) < 0)
        return -1;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            report(cfg, key, "%s is a directory", path, NULL);
            return -1;
        }
        if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == -1) {
            report(cfg, key, "cannot write %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == -1) {
        report(cfg, key, "cannot create files in %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* As the worker user, in a child: the access log's directory can be reached, and an existing
 * file written once the master has handed it over (it chowns the file, so only the directory
 * search permission is left to check). Returns 0 or -1 after reporting. */
static int access_log_as_worker(const fg_config_t *cfg, const char *path)
{
    fg_daemon_user_t u;
    char err[512], dir[PATH_MAX];
    if (dir_present(cfg, "log.accessLog", path, dir, sizeof(dir)) < 0)
        return -1;
    if (fg_daemon_user_resolve(cfg->user, cfg->group, &u, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: user: %s\n", cfg->file, err);
        return -1;
    }
    fflush(stderr);
    pid_t pid = fork();
    if (pid == -1) {
        report(cfg, "log.accessLog", "cannot check %s as the worker user", path, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (fg_daemon_user_drop(&u, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s: user: %s\n", cfg->file, err);
            _exit(1);
        }
        if (faccessat(AT_FDCWD, dir, X_OK, AT_EACCESS) == -1) {
            fprintf(stderr, "%s: log.accessLog: user \"%s\" cannot reach %s: %s\n", cfg->file,
                    u.name, dir, strerror(errno));
            _exit(1);
        }
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int fg_check_start(const fg_config_t *cfg)
{
    char dir[PATH_MAX];
    int rc = 0;
    const char *elog = cfg->log.path, *alog = cfg->log.access_path;

    if (elog && strcmp(elog, "stderr") != 0 && writable(cfg, "log.errorLog", elog) < 0)
        rc = -1;
    if (alog && cfg->user && geteuid() == 0) {
        if (access_log_as_worker(cfg, alog) < 0)
            rc = -1;
    } else if (alog && writable(cfg, "log.accessLog", alog) < 0) {
        rc = -1;
    }
    if (cfg->pid_file && dir_present(cfg, "pidFile", cfg->pid_file, dir, sizeof(dir)) < 0)
        rc = -1;
    if (cfg->status_socket &&
        dir_present(cfg, "statusSocket", cfg->status_socket, dir, sizeof(dir)) < 0)
        rc = -1;
    return rc;
}
