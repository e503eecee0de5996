/* The access log: one JSON line per request, buffered per worker and written when the buffer
 * fills, every accessLogFlush, and at exit. Off when the config has no accessLog. */
#ifndef FG_ACCESSLOG_H
#define FG_ACCESSLOG_H

#include "common/config.h"
#include "worker/http/request.h"

struct event_base;
typedef struct fg_accesslog_s fg_accesslog_t;

/* NULL when the access log is off or cannot be opened (logged). */
fg_accesslog_t *fg_accesslog_new(struct event_base *base, const fg_log_config_t *cfg);
/* Flush and close. NULL is fine. */
void fg_accesslog_free(fg_accesslog_t *log);
/* Log req (nothing when log is NULL) and, in any case, count it in the metrics
 * (shm/metrics.h): every front end calls this exactly once per request. */
void fg_accesslog_write(fg_accesslog_t *log, const fg_request_t *req);
void fg_accesslog_flush(fg_accesslog_t *log);

/* One connection of a tcp server (worker/stream/tcp_proxy.h), at its end. */
typedef struct {
    const char *server, *client_ip;
    unsigned client_port;
    const char *balancer; /* the PROXY protocol header's sender; NULL = none */
    const char *cluster;
    const char *destination, *address; /* the one relayed to (or tried last); may be NULL */
    unsigned attempts;                 /* destinations tried */
    uint64_t duration_us;
    uint64_t bytes_in, bytes_out; /* from the client, to the client */
    const char *termination;      /* why it ended */
    const char *error;            /* why no destination took it; NULL */
} fg_accesslog_tcp_t;
/* Log a tcp connection (nothing when log is NULL): a JSON line with "kind":"tcp"
 * (docs/operations.md). The accessLogFields selection applies to request lines only. */
void fg_accesslog_write_tcp(fg_accesslog_t *log, const fg_accesslog_tcp_t *e);
/* Flush, then reopen the file (USR1, logrotate). */
void fg_accesslog_reopen(fg_accesslog_t *log);

#endif
