/* fastgateway: the command line, in nginx's conventions (-c -t -T -s -f -v -h). Exit codes
 * (docs/operations.md): 0 success, 1 invalid configuration or failed operation, 2 bad usage. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "common/config.h"
#include "common/evmem.h"
#include "master/check.h"
#include "common/tls.h"
#include "master/daemon.h"
#include "master/listener.h"
#include "master/master.h"
#include "master/status.h"
#include "tables/route_table.h"

#define DEFAULT_CONF "/etc/fastgateway/fastgateway.json"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out, "usage: fastgateway [-c FILE] [-f] [-t] [-T] [-s SIGNAL] [-v] [-h]\n"
                 "  -c FILE    configuration file (default " DEFAULT_CONF ")\n"
                 "  -f         stay in the foreground (default: daemonize)\n"
                 "  -t         test the configuration and what start-up needs, then exit\n"
                 "  -T         as -t, then print the effective configuration (JSON, with every\n"
                 "             default filled in) on stdout\n"
                 "  -s SIGNAL  send SIGNAL to the running master: reload, stop, quit, reopen;\n"
                 "             or `-s status` to print what the status socket reports\n"
                 "  -v, --version  print the version and the libraries' versions, and exit\n"
                 "  -h, --help     print this help and exit\n"
                 "exit status: 0 success, 1 invalid configuration or failed operation, "
                 "2 usage error\n");
}

/* Name and version, then each library as compiled against and as loaded at run time (a
 * shared library upgraded under the binary shows here). */
static void version(void)
{
    const nghttp2_info *h2 = nghttp2_version(0);
    printf("fastgateway %s\n", FG_VERSION);
    printf("built with libevent %s, running with %s\n", LIBEVENT_VERSION, event_get_version());
    printf("built with %s, running with %s\n", OPENSSL_VERSION_TEXT,
           OpenSSL_version(OPENSSL_VERSION));
    printf("built with nghttp2 %s, running with %s\n", NGHTTP2_VERSION, h2 ? h2->version_str : "?");
    printf("built with jansson %s, running with %s\n", JANSSON_VERSION, jansson_version_str());
}

/* Load and compile the whole configuration, as the master would. NULL after printing why. */
static fg_config_t *load(const char *file)
{
    char err[1024];
    fg_config_t *cfg = fg_config_load(file, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    if (fg_route_table_build(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", file, err);
        fg_config_free(cfg);
        return NULL;
    }
    return cfg;
}

static void unload(fg_config_t *cfg)
{
    fg_route_table_free(cfg);
    fg_config_free(cfg);
}

/* What start would meet beyond the file itself: a listen address another socket listens on
 * (unless this configuration's own instance runs: then the holder is presumably that
 * instance), and an error log on stderr, which a daemon discards once started. Returns 0 or
 * -1 after printing why. */
static int check_start(const char *file, const fg_config_t *cfg)
{
    char err[512];
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
    if (trc == 0)
        trc = fg_tls_refuse_unwired(cfg, err, sizeof(err));
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
     * load stops here with the reason, the master untouched. */
    fg_config_t *cfg = load(file);
    if (cfg == NULL)
        return EXIT_FAILED;
    int rc = EXIT_FAILED;
    char err[512];
    pid_t pid;
    if (sig == SIGHUP && cfg->status_socket != NULL) {
        rc = reload_wait(cfg->status_socket);
    } else if (cfg->pid_file == NULL) {
        fprintf(stderr, "fastgateway: %s sets no pidFile\n", file);
    } else if (fg_pidfile_read(cfg->pid_file, &pid, err, sizeof(err)) < 0) {
        fprintf(stderr, "fastgateway: %s (is it running?)\n", err);
    } else if (kill(pid, sig) == -1) {
        fprintf(stderr, "fastgateway: cannot signal pid %d from %s: %s%s\n", (int)pid,
                cfg->pid_file, strerror(errno),
                errno == ESRCH ? " (stale pid file: not running)" : "");
    } else {
        if (sig == SIGHUP)
            fprintf(stderr, "fastgateway: no statusSocket: SIGHUP sent, outcome not awaited\n");
        rc = EXIT_OK;
    }
    unload(cfg);
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
    printf("%4s %8s %4s %-9s %6s %10s %12s %8s %8s\n", "SLOT", "PID", "GEN", "STATE", "CONNS",
           "CONNS_TOT", "REQUESTS", "RESTARTS", "UPTIME");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(workers, "workers"), i, w)
    {
        printf("%4lld %8lld %4lld %-9s %6lld %10lld %12lld %8lld %7llds\n",
               (long long)num(w, "slot"), (long long)num(w, "pid"), (long long)num(w, "generation"),
               str(w, "state"), (long long)num(w, "connections"),
               (long long)num(w, "connectionsTotal"), (long long)num(w, "requests"),
               (long long)num(w, "restarts"), (long long)num(w, "uptime"));
    }
}

static int show_status(const char *file)
{
    fg_config_t *cfg = load(file);
    if (cfg == NULL)
        return EXIT_FAILED;
    int rc = EXIT_FAILED;
    if (cfg->status_socket == NULL) {
        fprintf(stderr, "fastgateway: %s sets no statusSocket\n", file);
        goto out;
    }
    const char *cmds[] = {"show info", "show workers", "show shm"};
    json_t *ans[3];
    char err[512];
    if (fg_status_query(cfg->status_socket, cmds, ans, 3, err, sizeof(err)) < 0) {
        fprintf(stderr, "fastgateway: %s%s\n", err,
                strstr(err, "is running") ? "" : " (is it running?)");
        goto out;
    }
    print_status(ans[0], ans[1], ans[2]);
    for (int i = 0; i < 3; i++)
        json_decref(ans[i]);
    rc = EXIT_OK;
out:
    unload(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'v'}, {NULL, 0, NULL, 0}};
    const char *conf = DEFAULT_CONF;
    const char *sig = NULL;
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
    if (realpath(conf, abs) == NULL) {
        fprintf(stderr, "fastgateway: %s: %s\n", conf, strerror(errno));
        return EXIT_FAILED;
    }
    return fg_master_run(abs, foreground);
}
