#include "worker/http/accesslog.h"

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
#include "common/tls.h"
#include "common/tls_clientauth.h"
#include "shm/metrics.h"
#include "worker/upstream/upstream.h"
#include "worker/core/clock.h"

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
    fg_clock_wall(&tv);
    *ms = (int)(tv.tv_usec / 1000);
    if (tv.tv_sec != l->ts_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(l->ts, sizeof(l->ts), "%Y-%m-%dT%H:%M:%S", &tm);
        l->ts_sec = tv.tv_sec;
    }
    return l->ts;
}

/* One line under construction, inside the log buffer: b[0..n) of at most cap bytes. A
 * literal or number that does not fit sets `full` and the line is dropped; string values are
 * cut first (still valid JSON), keeping LINE_RESERVE bytes for what follows them. */
typedef struct {
    char *b;
    size_t n, cap;
    int full;
    int first;
} line_t;

#define LINE_MAX_BYTES (16 * 1024)
#define LINE_RESERVE 512
#define VALUE_MAX 4096 /* escaped bytes of one string value */

static void lit(line_t *l, const char *s, size_t len)
{
    if (l->full || l->n + len >= l->cap) {
        l->full = 1;
        return;
    }
    memcpy(l->b + l->n, s, len);
    l->n += len;
}
#define LIT(l, s) lit((l), (s), sizeof(s) - 1)

static void esc(line_t *l, const char *s, size_t len)
{
    if (l->full || l->n + LINE_RESERVE >= l->cap) {
        l->full = 1;
        return;
    }
    size_t room = l->cap - l->n - LINE_RESERVE;
    l->n += fg_json_escape(l->b + l->n, room < VALUE_MAX ? room : VALUE_MAX, s, len);
}

static void u64(line_t *l, uint64_t v)
{
    char tmp[24];
    lit(l, tmp, (size_t)(fg_put_u64(tmp, v) - tmp));
}

/* Microseconds as milliseconds with three decimals ("12.345"). */
static void ms(line_t *l, uint64_t us)
{
    char tmp[32], *w = fg_put_u64(tmp, us / 1000);
    unsigned frac = (unsigned)(us % 1000);
    *w++ = '.';
    *w++ = (char)('0' + frac / 100);
    *w++ = (char)('0' + frac / 10 % 10);
    *w++ = (char)('0' + frac % 10);
    lit(l, tmp, (size_t)(w - tmp));
}

/* ,"name": (the first key has no comma) */
static void key(line_t *l, int f)
{
    const char *name = fg_log_access_field_name(f);
    if (!l->first)
        LIT(l, ",");
    l->first = 0;
    LIT(l, "\"");
    lit(l, name, strlen(name));
    LIT(l, "\":");
}

static void str_field(line_t *l, int f, const char *s, size_t len);

/* What the handshake settled (fg_tls_info: OpenSSL's constants, nothing formatted). */
static void tls_fields(line_t *l, uint64_t want, const SSL *ssl)
{
    fg_tls_info_t ti;
    fg_tls_info(ssl, &ti);
    if (want & FG_AL_BIT(FG_AL_TLS_VERSION))
        str_field(l, FG_AL_TLS_VERSION, ti.version, strlen(ti.version));
    if (want & FG_AL_BIT(FG_AL_TLS_CIPHER))
        str_field(l, FG_AL_TLS_CIPHER, ti.cipher, strlen(ti.cipher));
    if ((want & FG_AL_BIT(FG_AL_SNI)) && ti.sni[0] != '\0')
        str_field(l, FG_AL_SNI, ti.sni, strlen(ti.sni));
    if (want & FG_AL_BIT(FG_AL_TLS_RESUMED)) {
        key(l, FG_AL_TLS_RESUMED);
        if (ti.resumed)
            LIT(l, "true");
        else
            LIT(l, "false");
    }
    const fg_tls_client_id_t *id;
    if ((want & FG_AL_BIT(FG_AL_TLS_CLIENT_SUBJECT)) && (id = fg_tls_client_id(ssl)) != NULL &&
        id->subject.len > 0)
        str_field(l, FG_AL_TLS_CLIENT_SUBJECT, id->subject.base, id->subject.len);
}

static void str_field(line_t *l, int f, const char *s, size_t len)
{
    key(l, f);
    LIT(l, "\"");
    esc(l, s, len);
    LIT(l, "\"");
}

/* The termination reason (docs/logging.md): what the handler recorded, else what the answer
 * tells. */
static const char *termination(const fg_request_t *r)
{
    static const struct {
        const char *error, *reason;
    } by_error[] = {
        {"client_closed", "client_aborted"},
        {"request_timeout", "client_timeout"},
        {"bad_request", "bad_request"},
        {"uri_too_long", "bad_request"},
        {"headers_too_large", "bad_request"},
        {"version_not_supported", "bad_request"},
        {"not_implemented", "bad_request"},
        {"not_found", "no_route"},
        {"plain_http_to_tls_port", "bad_request"},
        {"misdirected_request", "bad_request"},
        {"payload_too_large", "too_large"},
        {"service_unavailable", "no_destination"},
        {"gateway_timeout", "upstream_timeout"},
        {"bad_gateway", "upstream_reset"},
    };
    if (r->termination)
        return r->termination;
    if (r->security_denied)
        return r->status == 429 ? "rate_limited" : "denied";
    if (r->error == NULL)
        return "ok";
    for (size_t i = 0; i < sizeof(by_error) / sizeof(by_error[0]); i++)
        if (strcmp(r->error, by_error[i].error) == 0)
            return by_error[i].reason;
    return "gateway_error";
}

static void header_field(line_t *l, int f, const fg_request_t *r, fg_str_t name)
{
    const fg_http_header_t *h = r->headers ? fg_request_header(r, name) : NULL;
    if (h)
        str_field(l, f, h->value.base, h->value.len);
}

static void upstream_lists(line_t *l, uint64_t want, const fg_request_t *r)
{
    size_t n = r->attempts < FG_MAX_TRIES ? r->attempts : FG_MAX_TRIES;
    if (want & FG_AL_BIT(FG_AL_UPSTREAM)) {
        key(l, FG_AL_UPSTREAM);
        LIT(l, "\"");
        for (size_t i = 0; i < n; i++) {
            char a[64];
            size_t al = fg_upstream_addr_text(r->tries[i].dest, a, sizeof(a));
            if (i)
                LIT(l, ", ");
            lit(l, a, al);
        }
        LIT(l, "\"");
    }
    if (want & FG_AL_BIT(FG_AL_UPSTREAM_STATUS)) {
        key(l, FG_AL_UPSTREAM_STATUS);
        LIT(l, "\"");
        for (size_t i = 0; i < n; i++) {
            if (i)
                LIT(l, ", ");
            if (r->tries[i].status)
                u64(l, (uint64_t)r->tries[i].status);
            else
                LIT(l, "-");
        }
        LIT(l, "\"");
    }
    if (want & FG_AL_BIT(FG_AL_ATTEMPTS)) {
        key(l, FG_AL_ATTEMPTS);
        u64(l, r->attempts);
    }
    if (want & FG_AL_BIT(FG_AL_CONNECT_TIME)) {
        key(l, FG_AL_CONNECT_TIME);
        ms(l, r->upstream_connect_us);
    }
    if ((want & FG_AL_BIT(FG_AL_FIRST_BYTE_TIME)) && r->upstream_first_us) {
        key(l, FG_AL_FIRST_BYTE_TIME);
        ms(l, r->upstream_first_us);
    }
    if (want & FG_AL_BIT(FG_AL_UPSTREAM_TIME)) {
        key(l, FG_AL_UPSTREAM_TIME);
        ms(l, r->upstream_us);
    }
}

static void metadata(line_t *l, const fg_route_t *route)
{
    key(l, FG_AL_METADATA);
    LIT(l, "{");
    for (size_t i = 0; i < route->nmetadata; i++) {
        const fg_header_kv_t *kv = &route->metadata[i];
        if (i)
            LIT(l, ",");
        LIT(l, "\"");
        esc(l, kv->name, strlen(kv->name));
        LIT(l, "\":\"");
        esc(l, kv->value, strlen(kv->value));
        LIT(l, "\"");
    }
    LIT(l, "}");
}

/* The client side of the line: who asked what. */
static void request_part(fg_accesslog_t *al, line_t *l, uint64_t want, const fg_request_t *r)
{
    if (want & FG_AL_BIT(FG_AL_TIME)) {
        int msec;
        const char *ts = timestamp(al, &msec);
        char frac[5] = {'.', (char)('0' + msec / 100), (char)('0' + msec / 10 % 10),
                        (char)('0' + msec % 10), 'Z'};
        key(l, FG_AL_TIME);
        LIT(l, "\"");
        lit(l, ts, strlen(ts));
        lit(l, frac, sizeof(frac));
        LIT(l, "\"");
    }
    if (want & FG_AL_BIT(FG_AL_CLIENT))
        str_field(l, FG_AL_CLIENT, r->client_ip, strlen(r->client_ip));
    if (want & FG_AL_BIT(FG_AL_CLIENT_PORT)) {
        key(l, FG_AL_CLIENT_PORT);
        u64(l, r->client_port);
    }
    if ((want & FG_AL_BIT(FG_AL_PEER)) && r->peer_ip[0])
        str_field(l, FG_AL_PEER, r->peer_ip, strlen(r->peer_ip));
    if ((want & FG_AL_BIT(FG_AL_BALANCER)) && r->balancer_ip[0])
        str_field(l, FG_AL_BALANCER, r->balancer_ip, strlen(r->balancer_ip));
    if (want & FG_AL_BIT(FG_AL_METHOD))
        str_field(l, FG_AL_METHOD, r->method.base, r->method.len);
    if (want & FG_AL_BIT(FG_AL_HOST))
        str_field(l, FG_AL_HOST, r->host.base, r->host.len);
    if (want & FG_AL_BIT(FG_AL_PATH)) {
        fg_str_t p = r->path.base ? r->path : r->target;
        str_field(l, FG_AL_PATH, p.base, p.len);
    }
    if ((want & FG_AL_BIT(FG_AL_QUERY)) && r->query.len)
        str_field(l, FG_AL_QUERY, r->query.base, r->query.len);
    if (want & FG_AL_BIT(FG_AL_PROTOCOL)) {
        key(l, FG_AL_PROTOCOL);
        if (r->version == 20)
            LIT(l, "\"HTTP/2.0\"");
        else if (r->version == 10)
            LIT(l, "\"HTTP/1.0\"");
        else
            LIT(l, "\"HTTP/1.1\"");
    }
}

static void format_line(fg_accesslog_t *al, const fg_request_t *r, line_t *l)
{
    uint64_t want = al->cfg->access_fields ? al->cfg->access_fields : FG_AL_DEFAULT;
    LIT(l, "{");
    request_part(al, l, want, r);
    if (want & FG_AL_BIT(FG_AL_STATUS)) {
        key(l, FG_AL_STATUS);
        u64(l, (uint64_t)(r->status > 0 ? r->status : 0));
    }
    if (want & FG_AL_BIT(FG_AL_BYTES_IN)) {
        key(l, FG_AL_BYTES_IN);
        u64(l, r->head_bytes + r->body_bytes);
    }
    if (want & FG_AL_BIT(FG_AL_BYTES_OUT)) {
        key(l, FG_AL_BYTES_OUT);
        u64(l, r->bytes_out);
    }
    if ((want & FG_AL_BIT(FG_AL_CONTENT_ENCODING)) && r->gzip)
        str_field(l, FG_AL_CONTENT_ENCODING, "gzip", 4);
    if (want & FG_AL_BIT(FG_AL_DURATION)) {
        key(l, FG_AL_DURATION);
        ms(l, r->start_us ? fg_clock_now_us() - r->start_us : 0);
    }
    if (want & FG_AL_BIT(FG_AL_USER_AGENT))
        header_field(l, FG_AL_USER_AGENT, r, FG_STR_LIT("User-Agent"));
    if (want & FG_AL_BIT(FG_AL_REFERER))
        header_field(l, FG_AL_REFERER, r, FG_STR_LIT("Referer"));
    if (r->attempts)
        upstream_lists(l, want, r);
    if ((want & FG_AL_BIT(FG_AL_ROUTE)) && r->route)
        str_field(l, FG_AL_ROUTE, r->route->id, strlen(r->route->id));
    if ((want & FG_AL_BIT(FG_AL_TENANT)) && r->tenant.len)
        str_field(l, FG_AL_TENANT, r->tenant.base, r->tenant.len);
    if ((want & FG_AL_BIT(FG_AL_METADATA)) && r->route && r->route->nmetadata)
        metadata(l, r->route);
    if ((want & FG_AL_BIT(FG_AL_CLUSTER)) && r->cluster_id)
        str_field(l, FG_AL_CLUSTER, r->cluster_id, strlen(r->cluster_id));
    if ((want & FG_AL_BIT(FG_AL_ERROR)) && r->error)
        str_field(l, FG_AL_ERROR, r->error, strlen(r->error));
    if (want & FG_AL_BIT(FG_AL_TERMINATION)) {
        const char *t = termination(r);
        str_field(l, FG_AL_TERMINATION, t, strlen(t));
    }
    if (want & FG_AL_BIT(FG_AL_REQUEST_ID))
        str_field(l, FG_AL_REQUEST_ID, r->request_id, strlen(r->request_id));
    if (r->ssl != NULL)
        tls_fields(l, want, r->ssl);
    LIT(l, "}\n");
}

/* The request's metrics: its facts are final here, whatever the front end. */
static void count(const fg_request_t *r)
{
    const fg_route_t *route = r->route;
    fg_metrics_request(r->server ? r->server->metrics : NULL, route ? route->metrics : NULL,
                       route && route->cluster ? route->cluster->metrics : NULL, r->status,
                       r->head_bytes + r->body_bytes, r->bytes_out,
                       r->start_us ? fg_clock_now_us() - r->start_us : 0,
                       r->attempts > 1 ? r->attempts - 1u : 0);
}

void fg_accesslog_write(fg_accesslog_t *l, const fg_request_t *req)
{
    count(req);
    if (l == NULL)
        return;
    size_t line_max = l->cap < LINE_MAX_BYTES ? l->cap : LINE_MAX_BYTES;
    if (l->cap - l->len < line_max)
        fg_accesslog_flush(l);
    line_t line = {l->buf + l->len, 0, line_max, 0, 1};
    format_line(l, req, &line);
    if (line.full) {
        fg_log_warn("access log: a line of request %s exceeds %zu bytes, not logged",
                    req->request_id, line_max);
        return;
    }
    l->len += line.n;
}

/* "name":"value" with the comma of a key that follows another. */
static void tcp_str(line_t *l, const char *name, const char *v)
{
    if (v == NULL)
        return;
    LIT(l, ",\"");
    lit(l, name, strlen(name));
    LIT(l, "\":\"");
    esc(l, v, strlen(v));
    LIT(l, "\"");
}

static void tcp_u64(line_t *l, const char *name, uint64_t v)
{
    LIT(l, ",\"");
    lit(l, name, strlen(name));
    LIT(l, "\":");
    u64(l, v);
}

void fg_accesslog_write_tcp(fg_accesslog_t *al, const fg_accesslog_tcp_t *e)
{
    if (al == NULL)
        return;
    size_t line_max = al->cap < LINE_MAX_BYTES ? al->cap : LINE_MAX_BYTES;
    if (al->cap - al->len < line_max)
        fg_accesslog_flush(al);
    line_t line = {al->buf + al->len, 0, line_max, 0, 1}, *l = &line;
    int msec;
    const char *ts = timestamp(al, &msec);
    char frac[5] = {'.', (char)('0' + msec / 100), (char)('0' + msec / 10 % 10),
                    (char)('0' + msec % 10), 'Z'};
    LIT(l, "{\"time\":\"");
    lit(l, ts, strlen(ts));
    lit(l, frac, sizeof(frac));
    LIT(l, "\",\"kind\":\"tcp\"");
    tcp_str(l, "server", e->server);
    tcp_str(l, "client", e->client_ip);
    tcp_u64(l, "clientPort", e->client_port);
    tcp_str(l, "balancer", e->balancer);
    tcp_str(l, "cluster", e->cluster);
    tcp_str(l, "destination", e->destination);
    tcp_str(l, "upstream", e->address);
    tcp_u64(l, "attempts", e->attempts);
    LIT(l, ",\"durationMs\":");
    ms(l, e->duration_us);
    tcp_u64(l, "bytesIn", e->bytes_in);
    tcp_u64(l, "bytesOut", e->bytes_out);
    tcp_str(l, "termination", e->termination);
    tcp_str(l, "error", e->error);
    LIT(l, "}\n");
    if (!line.full)
        al->len += line.n;
}
