#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/json.h"

/* Process-wide log sink: set once at start-up, changed only by reopen in the same process. */
static int log_fd = 2;
static int log_level = FG_LOG_INFO;
static int log_json;
static char log_path[4096];
static char log_role[32] = "master";

static const char *const level_names[] = {"error", "warn", "notice", "info", "debug"};

static int open_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd == -1 ? -errno : fd;
}

int fg_log_open(const char *path, int level, int json)
{
    log_level = level;
    log_json = json;
    if (path == NULL || strcmp(path, "stderr") == 0) {
        log_path[0] = '\0';
        if (log_fd > 2)
            close(log_fd);
        log_fd = 2;
        return 0;
    }
    int fd = open_path(path);
    if (fd < 0)
        return fd;
    if (log_fd > 2)
        close(log_fd);
    log_fd = fd;
    snprintf(log_path, sizeof(log_path), "%s", path);
    return 0;
}

int fg_log_reopen(void)
{
    if (log_path[0] == '\0')
        return 0;
    int fd = open_path(log_path);
    if (fd < 0)
        return fd;
    /* dup2 keeps the descriptor number, so inherited copies in children stay valid. */
    if (log_fd > 2) {
        if (dup2(fd, log_fd) == -1) {
            int e = errno;
            close(fd);
            return -e;
        }
        close(fd);
    } else {
        log_fd = fd;
    }
    return 0;
}

void fg_log_set_level(int level)
{
    log_level = level;
}

int fg_log_level(void)
{
    return log_level;
}

int fg_log_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void fg_log_set_role(const char *role)
{
    snprintf(log_role, sizeof(log_role), "%s", role);
}

size_t fg_log_escape_text(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            if (n + 1 > cap)
                break;
            out[n++] = (char)c;
            continue;
        }
        if (n + 4 > cap)
            break;
        out[n++] = '\\';
        out[n++] = 'x';
        out[n++] = hex[c >> 4];
        out[n++] = hex[c & 15];
    }
    return n;
}

static const char *const access_fields[FG_AL_COUNT] = {
    [FG_AL_TIME] = "time",
    [FG_AL_CLIENT] = "client",
    [FG_AL_CLIENT_PORT] = "clientPort",
    [FG_AL_PEER] = "peer",
    [FG_AL_BALANCER] = "balancer",
    [FG_AL_METHOD] = "method",
    [FG_AL_HOST] = "host",
    [FG_AL_PATH] = "path",
    [FG_AL_QUERY] = "query",
    [FG_AL_PROTOCOL] = "protocol",
    [FG_AL_STATUS] = "status",
    [FG_AL_BYTES_IN] = "bytesIn",
    [FG_AL_BYTES_OUT] = "bytesOut",
    [FG_AL_CONTENT_ENCODING] = "contentEncoding",
    [FG_AL_DURATION] = "duration",
    [FG_AL_USER_AGENT] = "userAgent",
    [FG_AL_REFERER] = "referer",
    [FG_AL_UPSTREAM] = "upstream",
    [FG_AL_UPSTREAM_STATUS] = "upstreamStatus",
    [FG_AL_ATTEMPTS] = "attempts",
    [FG_AL_CONNECT_TIME] = "upstreamConnectTime",
    [FG_AL_FIRST_BYTE_TIME] = "upstreamFirstByteTime",
    [FG_AL_UPSTREAM_TIME] = "upstreamTime",
    [FG_AL_ROUTE] = "route",
    [FG_AL_TENANT] = "tenant",
    [FG_AL_METADATA] = "metadata",
    [FG_AL_CLUSTER] = "cluster",
    [FG_AL_ERROR] = "error",
    [FG_AL_TERMINATION] = "termination",
    [FG_AL_REQUEST_ID] = "requestId",
    [FG_AL_TLS_VERSION] = "tlsVersion",
    [FG_AL_TLS_CIPHER] = "tlsCipher",
    [FG_AL_SNI] = "sni",
    [FG_AL_TLS_RESUMED] = "tlsResumed",
    [FG_AL_TLS_CLIENT_SUBJECT] = "tlsClientSubject",
};

int fg_log_access_field(const char *name)
{
    for (int i = 0; i < FG_AL_COUNT; i++)
        if (strcmp(name, access_fields[i]) == 0)
            return i;
    return -1;
}

const char *fg_log_access_field_name(int f)
{
    return f >= 0 && f < FG_AL_COUNT ? access_fields[f] : "";
}

void fg_log(int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    int saved = errno;
    char msg[2048], line[4608];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char ts[64];
    size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03ld", (long)(tv.tv_usec / 1000));

    int n;
    if (log_json) {
        char esc[4200];
        esc[fg_json_escape(esc, sizeof(esc) - 1, msg, strlen(msg))] = '\0';
        n = snprintf(
            line, sizeof(line),
            "{\"time\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"role\":\"%s\",\"msg\":\"%s\"}\n", ts,
            level_names[level], (int)getpid(), log_role, esc);
    } else {
        n = snprintf(line, sizeof(line), "%s [%s] %d (%s): %s\n", ts, level_names[level],
                     (int)getpid(), log_role, msg);
    }
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    /* One write per line with O_APPEND keeps lines from several processes whole. */
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w;
    errno = saved;
}
