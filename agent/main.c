/* fastgateway-agent: the tunnel agent's command line, in the gateway's conventions (-c -t -s
 * -v -h). It runs in the foreground (systemd, a container) unless -d detaches it (the init
 * script). Exit codes: 0 success, 1 invalid configuration or failed operation, 2 bad usage. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "agent/dial.h"
#include "agent/runtime.h"
#include "agent/services.h"
#include "common/log.h"
#include "common/version.h"
#include "master/daemon.h"

#define DEFAULT_CONF "/etc/fastgateway-agent/agent.json"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out, "usage: fastgateway-agent [-c FILE] [-d] [-t] [-s SIGNAL] [-v] [-h]\n"
                 "  -c FILE    configuration file (default " DEFAULT_CONF ")\n"
                 "  -d         detach (daemonize); the default is to stay in the foreground\n"
                 "  -t         test the configuration (and the secret file), then exit\n"
                 "  -s SIGNAL  send SIGNAL to the running agent named by the pidFile of the\n"
                 "             configuration: stop, reload, reopen\n"
                 "  -v         print the version and the libraries' versions, and exit\n"
                 "  -h         print this help and exit\n"
                 "exit status: 0 success, 1 invalid configuration or failed operation, "
                 "2 usage error\n");
}

/* -t: the file, the secret, TLS settings and the services compiled as the gateway would. */
static int test_config(const char *file)
{
    char err[1200];
    fg_agent_config_t *cfg = fg_agent_config_load(file, err, sizeof(err));
    fg_agent_rt_t *rt = cfg && fg_services_resolve_now(cfg, err, sizeof(err)) == 0
                            ? fg_agent_rt_new(NULL, cfg, NULL, NULL, err, sizeof(err))
                            : NULL;
    if (rt == NULL) {
        fprintf(stderr, "%s\n", err);
        fg_agent_config_free(cfg);
        return EXIT_FAILED;
    }
    fg_agent_rt_free(rt);
    fg_agent_config_free(cfg);
    printf("fastgateway-agent: the configuration file %s syntax is ok\n"
           "fastgateway-agent: configuration file %s test is successful\n",
           file, file);
    return EXIT_OK;
}

static int send_signal(const char *file, const char *name)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"stop", SIGTERM}, {"reload", SIGHUP}, {"reopen", SIGUSR1}};
    int sig = 0;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (strcmp(name, sigs[i].name) == 0)
            sig = sigs[i].sig;
    if (sig == 0) {
        fprintf(stderr, "fastgateway-agent: unknown signal \"%s\" (stop, reload, reopen)\n", name);
        return EXIT_USAGE;
    }
    char err[1200];
    fg_agent_config_t *cfg = fg_agent_config_load(file, err, sizeof(err));
    if (cfg == NULL || cfg->pid_file == NULL) {
        fprintf(stderr, "fastgateway-agent: %s\n",
                cfg ? "the configuration names no pidFile" : err);
        fg_agent_config_free(cfg);
        return EXIT_FAILED;
    }
    pid_t pid;
    int rc = fg_pidfile_read(cfg->pid_file, &pid, err, sizeof(err));
    if (rc == 0 && kill(pid, sig) == -1) {
        snprintf(err, sizeof(err), "kill %d: %s", (int)pid, strerror(errno));
        rc = -1;
    }
    fg_agent_config_free(cfg);
    if (rc < 0) {
        fprintf(stderr, "fastgateway-agent: %s\n", err);
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

/* Log, detach, pid file, then the agent until it stops. */
static int run(const char *file, int detach)
{
    char err[1200];
    int notify = -1, rc = EXIT_FAILED, logfile;
    if (fg_dial_tls_init() < 0) {
        fprintf(stderr, "fastgateway-agent: OpenSSL's initialisation failed\n");
        return EXIT_FAILED;
    }
    fg_agent_config_t *cfg = fg_agent_config_load(file, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return EXIT_FAILED;
    }
    logfile = cfg->error_log != NULL;
    fg_log_set_role("agent");
    int lrc = fg_log_open(cfg->error_log, cfg->log_level, 1);
    if (lrc < 0) {
        fprintf(stderr, "fastgateway-agent: %s: %s\n", cfg->error_log, strerror(-lrc));
        fg_agent_config_free(cfg);
        return EXIT_FAILED;
    }
    if (detach && fg_daemon_detach(&notify, err, sizeof(err)) < 0) {
        fprintf(stderr, "fastgateway-agent: %s\n", err);
        fg_agent_config_free(cfg);
        return EXIT_FAILED;
    }
    char *pid_file = cfg->pid_file ? strdup(cfg->pid_file) : NULL;
    if (pid_file && fg_pidfile_write(pid_file, err, sizeof(err)) < 0) {
        free(pid_file);
        pid_file = NULL;
        fg_agent_config_free(cfg);
        goto out;
    }
    fg_agent_t *a = fg_services_resolve_now(cfg, err, sizeof(err)) == 0
                        ? fg_agent_new(cfg, err, sizeof(err))
                        : NULL;
    if (a == NULL) {
        fg_agent_config_free(cfg);
        goto out;
    }
    if (notify != -1) {
        fg_daemon_notify(&notify, NULL);
        if (logfile)
            fg_daemon_silence_stderr();
    }
    rc = fg_agent_run(a);
    fg_agent_free(a);
    fg_log_notice("stopped");
    err[0] = '\0';
out:
    if (err[0] != '\0') {
        fg_log_error("%s", err);
        if (notify != -1)
            fg_daemon_notify(&notify, err);
        else if (logfile)
            fprintf(stderr, "fastgateway-agent: %s\n", err);
    }
    if (pid_file) {
        fg_pidfile_remove(pid_file);
        free(pid_file);
    }
    return rc;
}

int main(int argc, char **argv)
{
    const char *file = DEFAULT_CONF, *sig = NULL;
    int test = 0, detach = 0, opt;
    static const struct option longs[] = {
        {"version", no_argument, NULL, 'v'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    while ((opt = getopt_long(argc, argv, "c:dts:vh", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case 'd':
            detach = 1;
            break;
        case 't':
            test = 1;
            break;
        case 's':
            sig = optarg;
            break;
        case 'v':
            fg_version_print("fastgateway-agent");
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
        fprintf(stderr, "fastgateway-agent: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    /* Reloads read the file again after -d moved to "/": keep it by an absolute name. */
    char abs[PATH_MAX];
    if (file[0] != '/' && getcwd(abs, sizeof(abs)) != NULL &&
        strlen(abs) + 1 + strlen(file) < sizeof(abs)) {
        strcat(abs, "/");
        strcat(abs, file);
        file = abs;
    }
    if (test)
        return test_config(file);
    if (sig)
        return send_signal(file, sig);
    return run(file, detach);
}
