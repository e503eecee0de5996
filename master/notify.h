/* systemd's readiness protocol (sd_notify, without libsystemd): datagrams of "KEY=VALUE" lines
 * sent to the Unix socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract
 * namespace). The master says READY=1 once its workers serve, RELOADING=1 with MONOTONIC_USEC
 * when a reload starts, READY=1 again when it ends, STATUS= lines and STOPPING=1. */
#ifndef FG_NOTIFY_H
#define FG_NOTIFY_H

typedef struct fg_notify_s fg_notify_t;

/* Connect to $NOTIFY_SOCKET and remove it from the environment. NULL when it is unset (not
 * under systemd) or unusable (then a warning is logged). */
fg_notify_t *fg_notify_new(void);
/* Send one message: printf-style, lines separated by "\n". Failures are logged once. */
void fg_notify_send(fg_notify_t *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Close (also in a forked worker, which must not speak for the service). */
void fg_notify_free(fg_notify_t *n);

#endif
