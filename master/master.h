/* The master process: loads the configuration, owns the listeners, the shared-memory arena and
 * the status socket, forks one worker per slot and supervises them (respawn with backoff,
 * reload by generations, graceful and fast shutdown). Signals: HUP reload, QUIT graceful
 * shutdown, TERM/INT fast shutdown, USR1 reopen logs. See docs/operations.md. */
#ifndef FG_MASTER_H
#define FG_MASTER_H

/* Run the gateway with the configuration in conf_file (an absolute path: the daemon changes
 * directory to /). Returns the process exit status: 0 after a requested shutdown, 1 when
 * start-up fails (the one-line reason is printed on stderr, also after daemonizing). */
int fg_master_run(const char *conf_file, int foreground);

#endif
