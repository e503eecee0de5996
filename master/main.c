/* fastgateway: the command line, in nginx's conventions (-c -t -T -s -f -v -h). Exit codes
 * (docs/operations.md): 0 success, 1 invalid configuration or failed operation, 2 bad usage. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/config.h"
#include "common/evmem.h"
#include "master/check.h"
#include "common/tls.h"
#include "common/version.h"
#include "master/daemon.h"
#include "master/import.h"
#include "master/listener.h"
#include "master/master.h"
#include "master/status.h"
#include "tables/route_table.h"

#define DEFAULT_CONF "/etc/fastgateway/fastgateway.json"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out, "usage: fastgateway [-c FILE] [-f] [-t] [-T] [-s SIGNAL] [-v] [-h]\n"
                 "       fastgateway --import yarp|fastgateway FILE\n"
                 "  -c FILE    configuration file (default " DEFAULT_CONF ")\n"
                 "  -f         stay in the foreground (default: daemonize)\n"
                 "  -t         test the configuration and what start-up needs, then exit\n"
                 "  -T         as -t, then print the effective configuration (JSON, with every\n"
                 "             default filled in) on stdout\n"
                 "  -s SIGNAL  send SIGNAL to the running master: reload, stop, quit, reopen;\n"
                 "             or `-s status` to print what the status socket reports\n"
                 "  --import KIND FILE  convert a YARP (appsettings.json or its ReverseProxy\n"
                 "             section) or FastGateway (config.json) configuration and print\n"
                 "             ours on stdout\n"
                 "  -v, --version  print the version and the libraries' versions, and exit\n"
                 "  -h, --help     print this help and exit\n"
                 "exit status: 0 success, 1 invalid configuration or failed operation, "
                 "2 usage error\n");
}

/* Name and version, then each library as compiled against and as loaded at run time (a
 * shared library upgraded under the binary shows here). */
static void version(void)
{
    fg_version_print("fastgateway");
    printf("built with jansson %s, running with %s\n", JANSSON_VERSION, jansson_version_str());
}

/* Load and compile the whole configuration, as the master would. NULL with why in err. */
static fg_config_t *load_err(const char *file, char *err, size_t errlen)
{
    fg_config_t *cfg = fg_config_load(file, err, errlen);
    if (cfg == NULL)
        return NULL;
    char rerr[1024];
    if (fg_route_table_build(cfg, rerr, sizeof(rerr)) < 0) {
        snprintf(err, errlen, "%s: %s", file, rerr);
        fg_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* As load_err(), NULL after printing why. */
static fg_config_t *load(const char *file)
{
    char err[1100];
    fg_config_t *cfg = load_err(file, err, sizeof(err));
    if (cfg == NULL)
        fprintf(stderr, "%s\n", err);
    return cfg;
}

static void unload(fg_config_t *cfg)
{
    fg_route_table_free(cfg);
    fg_config_free(cfg);
}

/* path made absolute against the working directory, "//" and "/./" folded, symlinks and ".."
 * left as they are: every reload opens the file by this name, so a symlink swapped since
 * (a Kubernetes ConfigMap's ..data, a releases/current link) leads to the new file. Resolving
 * ".." by text would be wrong under a symlinked directory. Returns 0, or -1 with errno. */
static int absolute(const char *path, char *out, size_t len)
{
    char buf[PATH_MAX];
    if (path[0] == '/') {
        if (strlen(path) >= sizeof(buf))
            return errno = ENAMETOOLONG, -1;
        strcpy(buf, path);
    } else {
        if (getcwd(buf, sizeof(buf)) == NULL)
            return -1;
        size_t n = strlen(buf);
        if (n + 1 + strlen(path) >= sizeof(buf))
            return errno = ENAMETOOLONG, -1;
        buf[n] = '/';
        strcpy(buf + n + 1, path);
    }
    size_t o = 0;
    for (const char *p = buf; *p;) {
        if (*p == '/') {
            while (*p == '/')
                p++;
            if (p[0] == '.' && (p[1] == '/' || p[1] == '\0')) {
                p++;
                continue;
            }
            if (o + 1 >= len)
                return errno = ENAMETOOLONG, -1;
            out[o++] = '/';
            continue;
        }
        if (o + 1 >= len)
            return errno = ENAMETOOLONG, -1;
        out[o++] = *p++;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return 0;
}

/* ---- where the running master listens, from a file that does not load ----
 * `-s status` and `-s stop|quit|reopen` must reach the master exactly when the file is broken
 * (the status then shows the failed reload's error). The top-level "statusSocket" and
 * "pidFile" are read by a tolerant scan that skips comments, strings and nested values and
 * stops at the first malformed string; absent keys take the loader's defaults. */

#define LENIENT_MAX (1024 * 1024) /* the top-level keys come early; a config file is small */

/* The JSON string at p (at its '"'): its decoded value in *out (NULL if it holds an escape
 * other than \" \\ \/), the position after it returned; NULL when it does not end on the line. */
static const char *scan_string(const char *p, char **out)
{
    *out = NULL;
    size_t n = 0, cap = strcspn(p + 1, "\n") + 1;
    char *v = malloc(cap + 1);
    int ok = v != NULL;
    for (p++; *p != '"'; p++) {
        if (*p == '\0' || *p == '\n') {
            free(v);
            return NULL;
        }
        if (*p == '\\') {
            p++;
            if (*p == '\0' || *p == '\n') {
                free(v);
                return NULL;
            }
            if (*p != '"' && *p != '\\' && *p != '/')
                ok = 0;
        }
        if (ok && n < cap)
            v[n++] = *p;
        else
            ok = 0;
    }
    if (ok) {
        v[n] = '\0';
        *out = v;
    } else {
        free(v);
    }
    return p + 1;
}

static const char *skip_blank(const char *p)
{
    for (;;) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        else if (p[0] == '/' && p[1] == '/')
            p = strchrnul(p, '\n');
        else if (p[0] == '/' && p[1] == '*' && strstr(p + 2, "*/"))
            p = strstr(p + 2, "*/") + 2;
        else
            return p;
    }
}

/* The string value of key in the top-level object of text, or NULL. */
static char *scan_top_key(const char *text, const char *key)
{
    int depth = 0;
    for (const char *p = skip_blank(text); *p; p = skip_blank(p)) {
        if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            depth--;
            p++;
        } else if (*p == '"') {
            char *k, *v = NULL;
            const char *after = scan_string(p, &k);
            if (after == NULL)
                return NULL;
            int hit = depth == 1 && k != NULL && strcmp(k, key) == 0;
            free(k);
            p = after;
            if (!hit)
                continue;
            const char *q = skip_blank(p);
            if (*q == ':' && *(q = skip_blank(q + 1)) == '"' && scan_string(q, &v) != NULL)
                return v;
            return NULL;
        } else {
            p++;
        }
    }
    return NULL;
}

/* key's value from the file, relative to the file's directory as the loader has it, or def. */
static char *lenient_path(const char *file, const char *text, const char *key, const char *def)
{
    char *v = scan_top_key(text, key);
    char abs[PATH_MAX];
    if (v == NULL || v[0] == '\0') {
        free(v);
        return strdup(def);
    }
    if (v[0] == '/' || absolute(file, abs, sizeof(abs)) < 0)
        return v;
    char *slash = strrchr(abs, '/');
    slash[1] = '\0';
    char *r = malloc(strlen(abs) + strlen(v) + 1);
    if (r != NULL)
        sprintf(r, "%s%s", abs, v);
    free(v);
    return r;
}

typedef struct {
    char *pid_file, *status_socket;
} targets_t;

static void targets_free(targets_t *t)
{
    free(t->pid_file);
    free(t->status_socket);
}

/* Where this configuration's master is: from the loaded file, or, when it does not load and
 * lenient is set, from the scan. Returns 0, 1 (scanned: the load error was printed), or -1
 * after printing why. */
static int targets_of(const char *file, int lenient, targets_t *t)
{
    char err[1100];
    memset(t, 0, sizeof(*t));
    fg_config_t *cfg = load_err(file, err, sizeof(err));
    if (cfg != NULL) {
        t->pid_file = cfg->pid_file ? strdup(cfg->pid_file) : NULL;
        t->status_socket = cfg->status_socket ? strdup(cfg->status_socket) : NULL;
        unload(cfg);
        return 0;
    }
    fprintf(stderr, "%s\n", err);
    FILE *f = lenient ? fopen(file, "re") : NULL;
    if (f == NULL)
        return -1;
    char *text = calloc(1, LENIENT_MAX + 1);
    if (text != NULL)
        fread(text, 1, LENIENT_MAX, f);
    fclose(f);
    if (text == NULL)
        return -1;
    t->pid_file = lenient_path(file, text, "pidFile", "/run/fastgateway.pid");
    t->status_socket = lenient_path(file, text, "statusSocket", "/run/fastgateway.sock");
    free(text);
    fprintf(stderr,
            "fastgateway: %s does not load; its pidFile %s and statusSocket %s are used as "
            "found in it\n",
            file, t->pid_file ? t->pid_file : "-", t->status_socket ? t->status_socket : "-");
    return 1;
}

/* Whether a and b name the same file: the same inode (a symlink and its target), or, when
 * one cannot be reached, the same absolute name. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char abs[PATH_MAX];
    return absolute(a, abs, sizeof(abs)) == 0 && strcmp(abs, b) == 0;
}

/* A running master that answers on this configuration's statusSocket but serves another
 * configuration file: this one could not start beside it (the socket, its pid lock and its
 * addresses are that instance's). Returns -1 after printing it, 0 when the socket does not
 * answer (then nothing can be told) or the file is the same (-t before a reload). */
static int check_other_instance(const char *file, const fg_config_t *cfg)
{
    if (cfg->status_socket == NULL)
        return 0;
    const char *cmd = "show info";
    json_t *info = NULL;
    char err[512];
    if (fg_status_query(cfg->status_socket, &cmd, &info, 1, err, sizeof(err)) < 0)
        return 0;
    const char *theirs = json_string_value(json_object_get(info, "configFile"));
    int rc = 0;
    if (theirs != NULL && !same_file(file, theirs)) {
        fprintf(stderr,
                "%s: statusSocket %s is served by a running instance (pid %lld) of another "
                "configuration file, %s: this one cannot start beside it\n",
                file, cfg->status_socket,
                (long long)json_integer_value(json_object_get(info, "pid")), theirs);
        rc = -1;
    }
    json_decref(info);
    return rc;
}

/* What start would meet beyond the file itself: a listen address another socket listens on
 * (unless this configuration's own instance runs: then the holder is presumably that
 * instance), and an error log on stderr, which a daemon discards once started. Returns 0 or
 * -1 after printing why. */
static int check_start(const char *file, const fg_config_t *cfg)
{
    char err[512];
    if (check_other_instance(file, cfg) < 0)
        return -1;
    const char *lock = cfg->pid_file ? cfg->pid_file : cfg->status_socket;
    if (fg_listeners_probe(cfg, err, sizeof(err)) < 0 && !(lock && fg_instance_running(lock))) {
        fprintf(stderr, "%s: %s\n", file, err);
        return -1;
    }
    if (cfg->log.path == NULL || strcmp(cfg->log.path, "stderr") == 0)
        fprintf(stderr,
                "%s: note: log.errorLog is \"stderr\": a daemon (started without -f) discards its "
                "error log once start-up is over\n",
                file);
    return 0;
}

static void tls_warn(void *arg, const char *msg)
{
    fprintf(stderr, "warning: %s\n", msg);
}

/* -t and -T: the whole load as the master does it, certificates and keys included (without
 * shared memory: ticket keys are the master's business), its warnings (stderr, not fatal) and
 * what start-up needs; with dump, the effective configuration on stdout. */
static int test_config(const char *file, int dump)
{
    char err[1024];
    fg_config_t *cfg = load(file);
    if (cfg == NULL)
        return EXIT_FAILED;
    for (size_t i = 0; i < cfg->nwarnings; i++)
        fprintf(stderr, "warning: %s\n", cfg->warnings[i]);
    int rc = EXIT_OK;
    int trc = fg_tls_build(cfg, NULL, 0, tls_warn, NULL, err, sizeof(err));
    if (trc < 0) {
        fprintf(stderr, "%s\n", err);
        rc = EXIT_FAILED;
    }
    fg_tls_free(cfg);
    if (rc == EXIT_OK) {
        if (check_start(file, cfg) < 0)
            rc = EXIT_FAILED;
        if (fg_check_start(cfg) < 0)
            rc = EXIT_FAILED;
    }
    if (rc == EXIT_OK && dump) {
        json_t *doc = fg_config_dump(cfg);
        if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ||
            fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
            fprintf(stderr, "fastgateway: cannot write the configuration: %s\n", strerror(errno));
            rc = EXIT_FAILED;
        }
        json_decref(doc);
    }
    unload(cfg);
    if (rc == EXIT_OK)
        fprintf(dump ? stderr : stdout, "%s: configuration is ok\n", file);
    return rc;
}

#define RELOAD_WAIT_MS 60000 /* a reload queued behind another: two readiness timeouts */

/* `-s reload`: ask the master over the status socket and wait for the outcome. Returns the
 * exit status: 0 once the new generation serves, 1 when the master refused the file, 3 when
 * no answer came (then the reload may still be going on). */
static int reload_wait(const char *sock)
{
    const char *cmd = "reload";
    json_t *ans;
    char err[512];
    int rc = fg_status_query_wait(sock, &cmd, &ans, 1, RELOAD_WAIT_MS, err, sizeof(err));
    if (rc == FG_STATUS_TIMEOUT) {
        fprintf(stderr, "fastgateway: reload: %s (see `fastgateway -s status`)\n", err);
        return 3; /* 2 is a usage error */
    }
    if (rc < 0) {
        fprintf(stderr, "fastgateway: reload: %s%s\n", err,
                strstr(err, "is running") ? "" : " (is it running?)");
        return 1;
    }
    const char *result = json_string_value(json_object_get(ans, "result"));
    json_int_t gen = json_integer_value(json_object_get(ans, "generation"));
    rc = 1;
    if (result && strcmp(result, "ok") == 0) {
        printf("fastgateway: reload ok: generation %lld serving\n", (long long)gen);
        rc = 0;
    } else {
        const char *why = json_string_value(json_object_get(ans, "error"));
        fprintf(stderr, "fastgateway: reload failed, generation %lld keeps serving: %s\n",
                (long long)gen, why ? why : "unknown error");
    }
    json_decref(ans);
    return rc;
}

/* The binary a process runs, " (deleted)" cut off (the package was upgraded under it). */
static int exe_of(const char *proc, char *buf, size_t len)
{
    ssize_t n = readlink(proc, buf, len - 1);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    static const char deleted[] = " (deleted)";
    size_t dl = sizeof(deleted) - 1;
    if ((size_t)n > dl && strcmp(buf + n - dl, deleted) == 0)
        buf[n - dl] = '\0';
    return 0;
}

/* Whether pid is this configuration's running master: the instance lock is held (a stale pid
 * file names whatever process took the number since) and pid runs this binary. When the exe
 * link cannot be read (another user's process), kill() decides: it fails the same way. */
static int is_our_master(const char *pid_file, pid_t pid)
{
    if (!fg_instance_running(pid_file))
        return 0;
    char proc[64], theirs[PATH_MAX], ours[PATH_MAX];
    snprintf(proc, sizeof(proc), "/proc/%d/exe", (int)pid);
    if (exe_of(proc, theirs, sizeof(theirs)) < 0)
        return errno == EACCES || errno == EPERM;
    if (exe_of("/proc/self/exe", ours, sizeof(ours)) < 0)
        return 0;
    return strcmp(theirs, ours) == 0;
}

static int send_signal(const char *file, const char *name)
{
    static const struct {
        const char *name;
        int sig;
    } map[] = {{"stop", SIGTERM}, {"quit", SIGQUIT}, {"reload", SIGHUP}, {"reopen", SIGUSR1}};
    int sig = 0;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(name, map[i].name) == 0)
            sig = map[i].sig;
    /* The file is checked here as the master will check it; a reload of a file that does not
     * load stops here with the reason, the master untouched. The other signals do not read
     * the file in the master: they reach it whatever state the file is in. */
    targets_t t;
    if (targets_of(file, sig != SIGHUP, &t) < 0)
        return EXIT_FAILED;
    int rc = EXIT_FAILED;
    char err[512];
    pid_t pid;
    if (sig == SIGHUP && t.status_socket != NULL) {
        rc = reload_wait(t.status_socket);
    } else if (t.pid_file == NULL) {
        fprintf(stderr, "fastgateway: %s sets no pidFile\n", file);
    } else if (fg_pidfile_read(t.pid_file, &pid, err, sizeof(err)) < 0) {
        fprintf(stderr, "fastgateway: %s (is it running?)\n", err);
    } else if (!is_our_master(t.pid_file, pid)) {
        fprintf(stderr,
                "fastgateway: pid file %s names process %d, which is not a running fastgateway "
                "master; nothing signalled\n",
                t.pid_file, (int)pid);
    } else if (kill(pid, sig) == -1) {
        fprintf(stderr, "fastgateway: cannot signal pid %d from %s: %s%s\n", (int)pid, t.pid_file,
                strerror(errno), errno == ESRCH ? " (stale pid file: not running)" : "");
    } else {
        if (sig == SIGHUP)
            fprintf(stderr, "fastgateway: no statusSocket: SIGHUP sent, outcome not awaited\n");
        rc = EXIT_OK;
    }
    targets_free(&t);
    return rc;
}

static json_int_t num(const json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static const char *str(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "-";
}

static void print_status(json_t *info, json_t *workers, json_t *shm)
{
    json_t *lr = json_object_get(info, "lastReload");
    printf("fastgateway %s, pid %lld, up %llds, generation %lld, %lld workers\n",
           str(info, "version"), (long long)num(info, "pid"), (long long)num(info, "uptime"),
           (long long)num(info, "generation"), (long long)num(info, "workers"));
    printf("config:      %s\n", str(info, "configFile"));
    printf("started:     %s\n", str(info, "startTime"));
    printf("reloads:     %lld ok, %lld failed; last: %s %s%s%s\n", (long long)num(info, "reloads"),
           (long long)num(info, "reloadFailures"), str(lr, "result"), str(lr, "time"),
           json_is_string(json_object_get(lr, "error")) ? "\n             error: " : "",
           json_is_string(json_object_get(lr, "error")) ? str(lr, "error") : "");
    json_t *lf = json_object_get(info, "lastFailedReload");
    if (json_is_object(lf) && strcmp(str(lr, "result"), "failed") != 0)
        printf("last failed: %s: %s\n", str(lf, "time"), str(lf, "error"));
    printf("shm:         %lld of %lld bytes used\n\n", (long long)num(shm, "used"),
           (long long)num(shm, "size"));
    printf("%4s %8s %4s %-9s %6s %10s %6s %12s %8s %8s\n", "SLOT", "PID", "GEN", "STATE", "CONNS",
           "CONNS_TOT", "WS", "REQUESTS", "RESTARTS", "UPTIME");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(workers, "workers"), i, w)
    {
        printf("%4lld %8lld %4lld %-9s %6lld %10lld %6lld %12lld %8lld %7llds\n",
               (long long)num(w, "slot"), (long long)num(w, "pid"), (long long)num(w, "generation"),
               str(w, "state"), (long long)num(w, "connections"),
               (long long)num(w, "connectionsTotal"), (long long)num(w, "webSockets"),
               (long long)num(w, "requests"), (long long)num(w, "restarts"),
               (long long)num(w, "uptime"));
    }
}

/* The master's state; with a file that does not load, its load error (stderr) and then the
 * state of the master the file's statusSocket names, still serving the last good file. */
static int show_status(const char *file)
{
    targets_t t;
    if (targets_of(file, 1, &t) < 0)
        return EXIT_FAILED;
    int rc = EXIT_FAILED;
    if (t.status_socket == NULL) {
        fprintf(stderr, "fastgateway: %s sets no statusSocket\n", file);
        goto out;
    }
    const char *cmds[] = {"show info", "show workers", "show shm"};
    json_t *ans[3];
    char err[512];
    if (fg_status_query(t.status_socket, cmds, ans, 3, err, sizeof(err)) < 0) {
        fprintf(stderr, "fastgateway: %s%s\n", err,
                strstr(err, "is running") ? "" : " (is it running?)");
        goto out;
    }
    print_status(ans[0], ans[1], ans[2]);
    for (int i = 0; i < 3; i++)
        json_decref(ans[i]);
    rc = EXIT_OK;
out:
    targets_free(&t);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'v'},
                                             {"import", required_argument, NULL, 'I'},
                                             {NULL, 0, NULL, 0}};
    const char *conf = DEFAULT_CONF;
    const char *sig = NULL, *import = NULL;
    int foreground = 0, test = 0, dump = 0, opt;

    fg_evmem_install(); /* before libevent allocates anything */

    while ((opt = getopt_long(argc, argv, "c:ftTs:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            conf = optarg;
            break;
        case 'f':
            foreground = 1;
            break;
        case 'T':
            dump = 1;
            /* fall through */
        case 't':
            test = 1;
            break;
        case 's':
            sig = optarg;
            break;
        case 'I':
            import = optarg;
            break;
        case 'v':
            version();
            return EXIT_OK;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (import != NULL) {
        if (optind + 1 != argc || test || sig != NULL || foreground) {
            fprintf(stderr, "fastgateway: --import takes a kind and one FILE, and no other "
                            "option\n");
            usage(stderr);
            return EXIT_USAGE;
        }
        if (strcmp(import, "yarp") != 0 && strcmp(import, "fastgateway") != 0) {
            fprintf(stderr, "fastgateway: --import: unknown kind \"%s\" (yarp, fastgateway)\n",
                    import);
            return EXIT_USAGE;
        }
        return fg_import_run(import, argv[optind], stdout, stderr) < 0 ? EXIT_FAILED : EXIT_OK;
    }
    if (optind < argc) {
        fprintf(stderr, "fastgateway: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (sig != NULL && strcmp(sig, "status") != 0 && strcmp(sig, "reload") != 0 &&
        strcmp(sig, "stop") != 0 && strcmp(sig, "quit") != 0 && strcmp(sig, "reopen") != 0) {
        fprintf(stderr,
                "fastgateway: unknown signal \"%s\" (reload, stop, quit, reopen, "
                "status)\n",
                sig);
        return EXIT_USAGE;
    }
    if (test && sig != NULL) {
        fprintf(stderr, "fastgateway: -t/-T and -s exclude each other\n");
        return EXIT_USAGE;
    }
    if (test)
        return test_config(conf, dump);
    if (sig != NULL)
        return strcmp(sig, "status") == 0 ? show_status(conf) : send_signal(conf, sig);

    /* The daemon leaves the working directory: reloads must find the file from "/". */
    char abs[PATH_MAX];
    if (absolute(conf, abs, sizeof(abs)) < 0 || access(abs, R_OK) == -1) {
        fprintf(stderr, "fastgateway: %s: %s\n", conf, strerror(errno));
        return EXIT_FAILED;
    }
    return fg_master_run(abs, foreground);
}
