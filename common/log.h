/* The error log: one line per event with timestamp, level and pid, as text or JSON.
 * The file is opened by the master and inherited by workers; USR1 reopens it (logrotate). */
#ifndef FG_LOG_H
#define FG_LOG_H

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
