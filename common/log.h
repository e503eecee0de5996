/* The error log: one line per event with timestamp, level and pid, as text or JSON.
 * The file is opened by the master and inherited by workers; USR1 reopens it (logrotate). */
#ifndef FG_LOG_H
#define FG_LOG_H

#include <stddef.h>

enum { FG_LOG_ERROR = 0, FG_LOG_WARN, FG_LOG_NOTICE, FG_LOG_INFO, FG_LOG_DEBUG };

/* path NULL or "stderr" logs to standard error. Returns 0 or -errno. */
int fg_log_open(const char *path, int level, int json);
/* Reopen the same path (after logrotate moved it). Returns 0 or -errno; keeps the old fd on error.
 */
int fg_log_reopen(void);
void fg_log_set_level(int level);
int fg_log_level(void);
/* Name of a level ("error", ...) or -1 for an unknown name. */
int fg_log_level_parse(const char *name);
/* Role shown in each line ("master", "worker 1"...). */
void fg_log_set_role(const char *role);
void fg_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copy s[0..len) into out (at most cap bytes) for a text log line: printable ASCII except '"'
 * and '\\' as is, every other byte as \xHH, so that a client's bytes can neither forge a line
 * nor break the quoting. Stops before an escape that would not fit whole.
 * Returns the bytes written. */
size_t fg_log_escape_text(char *out, size_t cap, const char *s, size_t len);

/* Access-log fields (docs/logging.md): bit numbers in fg_log_config_t.access_fields. The order
 * is the order of the keys in a line. */
enum {
    FG_AL_TIME = 0,
    FG_AL_CLIENT,
    FG_AL_CLIENT_PORT,
    FG_AL_PEER,
    FG_AL_BALANCER, /* connections with a PROXY protocol header only */
    FG_AL_METHOD,
    FG_AL_HOST,
    FG_AL_PATH,
    FG_AL_QUERY,
    FG_AL_PROTOCOL,
    FG_AL_STATUS,
    FG_AL_BYTES_IN,
    FG_AL_BYTES_OUT,
    FG_AL_CONTENT_ENCODING,
    FG_AL_DURATION,
    FG_AL_USER_AGENT,
    FG_AL_REFERER,
    FG_AL_UPSTREAM,
    FG_AL_UPSTREAM_STATUS,
    FG_AL_ATTEMPTS,
    FG_AL_CONNECT_TIME,
    FG_AL_FIRST_BYTE_TIME,
    FG_AL_UPSTREAM_TIME,
    FG_AL_ROUTE,
    FG_AL_TENANT,
    FG_AL_METADATA,
    FG_AL_CLUSTER,
    FG_AL_ERROR,
    FG_AL_TERMINATION,
    FG_AL_REQUEST_ID,
    FG_AL_TLS_VERSION, /* TLS connections only */
    FG_AL_TLS_CIPHER,
    FG_AL_SNI,
    FG_AL_TLS_RESUMED,
    FG_AL_TLS_CLIENT_SUBJECT, /* with a client certificate (tls.clientAuth) only */
    FG_AL_COUNT
};
#define FG_AL_BIT(f) (1ull << (f))
/* The fields of a line when accessLogFields is absent. */
#define FG_AL_DEFAULT                                                                              \
    (FG_AL_BIT(FG_AL_TIME) | FG_AL_BIT(FG_AL_CLIENT) | FG_AL_BIT(FG_AL_CLIENT_PORT) |              \
     FG_AL_BIT(FG_AL_PEER) | FG_AL_BIT(FG_AL_BALANCER) | FG_AL_BIT(FG_AL_METHOD) |                 \
     FG_AL_BIT(FG_AL_HOST) | FG_AL_BIT(FG_AL_PATH) | FG_AL_BIT(FG_AL_QUERY) |                      \
     FG_AL_BIT(FG_AL_STATUS) | FG_AL_BIT(FG_AL_BYTES_IN) | FG_AL_BIT(FG_AL_BYTES_OUT) |            \
     FG_AL_BIT(FG_AL_CONTENT_ENCODING) | FG_AL_BIT(FG_AL_DURATION) | FG_AL_BIT(FG_AL_UPSTREAM) |   \
     FG_AL_BIT(FG_AL_UPSTREAM_TIME) | FG_AL_BIT(FG_AL_ROUTE) | FG_AL_BIT(FG_AL_TENANT) |           \
     FG_AL_BIT(FG_AL_METADATA) | FG_AL_BIT(FG_AL_CLUSTER) | FG_AL_BIT(FG_AL_ERROR) |               \
     FG_AL_BIT(FG_AL_TERMINATION) | FG_AL_BIT(FG_AL_REQUEST_ID) | FG_AL_BIT(FG_AL_TLS_VERSION) |   \
     FG_AL_BIT(FG_AL_TLS_CIPHER) | FG_AL_BIT(FG_AL_SNI) | FG_AL_BIT(FG_AL_TLS_RESUMED) |           \
     FG_AL_BIT(FG_AL_TLS_CLIENT_SUBJECT))
/* The bit of an access-log field name ("userAgent"), or -1 for an unknown name. */
int fg_log_access_field(const char *name);
/* The name of field bit f (0 <= f < FG_AL_COUNT). */
const char *fg_log_access_field_name(int f);

#define fg_log_error(...) fg_log(FG_LOG_ERROR, __VA_ARGS__)
#define fg_log_warn(...) fg_log(FG_LOG_WARN, __VA_ARGS__)
#define fg_log_notice(...) fg_log(FG_LOG_NOTICE, __VA_ARGS__)
#define fg_log_info(...) fg_log(FG_LOG_INFO, __VA_ARGS__)
#define fg_log_debug(...)                                                                          \
    do {                                                                                           \
        if (fg_log_level() >= FG_LOG_DEBUG)                                                        \
            fg_log(FG_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

#endif
