#include "worker/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/json.h"
#include "common/log.h"

struct fg_accesslog_s {
    const fg_log_config_t *cfg;
    int fd;
    char *buf;
    size_t len;
    size_t cap;
    struct event *timer;
    time_t ts_sec; /* second of the cached timestamp */
    char ts[32];   /* "2026-11-21T12:00:00" */
};

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1)
        fg_log_error("access log %s: %s", path, strerror(errno));
    return fd;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    fg_accesslog_flush(arg);
}

fg_accesslog_t *fg_accesslog_new(struct event_base *base, const fg_log_config_t *cfg)
{
    if (cfg->access_path == NULL)
        return NULL;
    fg_accesslog_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->cfg = cfg;
    l->cap = cfg->access_buffer ? cfg->access_buffer : 65536;
    if (l->cap < 4096)
        l->cap = 4096;
    l->buf = malloc(l->cap);
    l->fd = open_log(cfg->access_path);
    l->timer = event_new(base, -1, EV_PERSIST, on_timer, l);
    if (l->buf == NULL || l->fd < 0 || l->timer == NULL) {
        fg_accesslog_free(l);
        return NULL;
    }
    uint64_t ms = cfg->access_flush_ms ? cfg->access_flush_ms : 1000;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(l->timer, &tv);
    return l;
}

void fg_accesslog_flush(fg_accesslog_t *l)
{
    if (l == NULL || l->len == 0)
        return;
    size_t off = 0;
    while (off < l->len) {
        ssize_t n = write(l->fd, l->buf + off, l->len - off);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            fg_log_error("access log write: %s", strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    l->len = 0;
}

void fg_accesslog_free(fg_accesslog_t *l)
{
    if (l == NULL)
        return;
    if (l->fd >= 0) {
        fg_accesslog_flush(l);
        close(l->fd);
    }
    if (l->timer)
        event_free(l->timer);
    free(l->buf);
    free(l);
}

void fg_accesslog_reopen(fg_accesslog_t *l)
{
    if (l == NULL)
        return;
    fg_accesslog_flush(l);
    int fd = open_log(l->cfg->access_path);
    if (fd < 0)
        return;
    close(l->fd);
    l->fd = fd;
}

static const char *timestamp(fg_accesslog_t *l, int *ms)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    *ms = (int)(tv.tv_usec / 1000);
    if (tv.tv_sec != l->ts_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(l->ts, sizeof(l->ts), "%Y-%m-%dT%H:%M:%S", &tm);
        l->ts_sec = tv.tv_sec;
    }
    return l->ts;
}

#define ADD_LIT(s)                                                                                 \
    do {                                                                                           \
        if (n + sizeof(s) >= cap)                                                                  \
            return;                                                                                \
        memcpy(b + n, s, sizeof(s) - 1);                                                           \
        n += sizeof(s) - 1;                                                                        \
    } while (0)
/* A value longer than the line's room is cut (still valid JSON); 512 bytes stay for the rest. */
#define ADD_STR(p, len)                                                                            \
    do {                                                                                           \
        if (n + 512 >= cap)                                                                        \
            return;                                                                                \
        n += fg_json_escape(b + n, cap - n - 512, (p), (len));                                     \
    } while (0)
#define ADD_FMT(...)                                                                               \
    do {                                                                                           \
        int k_ = snprintf(b + n, cap - n, __VA_ARGS__);                                            \
        if (k_ < 0 || (size_t)k_ >= cap - n)                                                       \
            return;                                                                                \
        n += (size_t)k_;                                                                           \
    } while (0)

static void format_line(fg_accesslog_t *l, const fg_request_t *r, char *b, size_t cap, size_t *out)
{
    size_t n = 0;
    int ms;
    const char *ts = timestamp(l, &ms);
    uint64_t now = fg_request_now_us();
    double dur = r->start_us ? (double)(now - r->start_us) / 1000.0 : 0.0;
    ADD_FMT("{\"time\":\"%s.%03dZ\",\"client\":\"%s\",\"method\":\"", ts, ms, r->client_ip);
    ADD_STR(r->method.base, r->method.len);
    ADD_LIT("\",\"host\":\"");
    ADD_STR(r->host.base, r->host.len);
    ADD_LIT("\",\"path\":\"");
    ADD_STR(r->path.base ? r->path.base : r->target.base,
            r->path.base ? r->path.len : r->target.len);
    if (r->query.len) {
        ADD_LIT("\",\"query\":\"");
        ADD_STR(r->query.base, r->query.len);
    }
    ADD_FMT("\",\"status\":%d,\"bytesIn\":%llu,\"bytesOut\":%llu,\"duration\":%.3f", r->status,
            (unsigned long long)(r->head_bytes + r->body_bytes), (unsigned long long)r->bytes_out,
            dur);
    if (r->upstream_addr)
        ADD_FMT(",\"upstream\":\"%s\",\"upstreamTime\":%.3f", r->upstream_addr,
                (double)r->upstream_us / 1000.0);
    if (r->route) {
        ADD_LIT(",\"route\":\"");
        ADD_STR(r->route->id, strlen(r->route->id));
        ADD_LIT("\"");
    }
    if (r->tenant.len) {
        ADD_LIT(",\"tenant\":\"");
        ADD_STR(r->tenant.base, r->tenant.len);
        ADD_LIT("\"");
    }
    if (r->route && r->route->nmetadata) {
        ADD_LIT(",\"metadata\":{");
        for (size_t i = 0; i < r->route->nmetadata; i++) {
            const fg_header_kv_t *kv = &r->route->metadata[i];
            ADD_LIT("\"");
            ADD_STR(kv->name, strlen(kv->name));
            ADD_LIT("\":\"");
            ADD_STR(kv->value, strlen(kv->value));
            ADD_LIT("\"");
            if (i + 1 < r->route->nmetadata)
                ADD_LIT(",");
        }
        ADD_LIT("}");
    }
    if (r->cluster_id) {
        ADD_LIT(",\"cluster\":\"");
        ADD_STR(r->cluster_id, strlen(r->cluster_id));
        ADD_LIT("\"");
    }
    if (r->error)
        ADD_FMT(",\"error\":\"%s\"", r->error);
    ADD_FMT(",\"requestId\":\"%s\"}\n", r->request_id);
    *out = n;
}

void fg_accesslog_write(fg_accesslog_t *l, const fg_request_t *req)
{
    if (l == NULL)
        return;
    if (l->cap - l->len < 4096)
        fg_accesslog_flush(l);
    size_t n = 0;
    format_line(l, req, l->buf + l->len, l->cap - l->len, &n);
    l->len += n;
}
