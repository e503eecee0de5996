/* The status socket: a Unix stream socket served by the master, in the style of HAProxy's
 * runtime API. A client sends one command per line ("show info\n"); each answer is one JSON
 * document on one line. Several commands per connection are allowed; "quit" closes it, idle
 * connections are closed after 30 s, and a line longer than 4 KiB is answered with an error and
 * the connection closed. The commands themselves are supplied by the caller (master.c). */
#ifndef FG_STATUS_H
#define FG_STATUS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct event_base;

#define FG_STATUS_MAX_LINE 4096

/* Builds the answer of one command; returns a new reference (NULL = internal error). */
typedef json_t *(*fg_status_fn)(void *arg);
/* The same for a command that takes arguments: args is the rest of the line after the name
 * and one blank ("" when none). */
typedef json_t *(*fg_status_args_fn)(void *arg, const char *args);

typedef struct {
    const char *name; /* the whole command line, e.g. "show info" */
    const char *help;
    fg_status_fn fn;
} fg_status_cmd_t;

/* A command with arguments: name is its fixed start ("add acl"). */
typedef struct {
    const char *name;
    const char *help;
    fg_status_args_fn fn;
} fg_status_args_cmd_t;

/* A command whose answer comes later (`reload`): fn either answers at once (a new reference)
 * or returns NULL after setting *ticket (> 0); the connection then reads no further command
 * until fg_status_resolve answers that ticket. */
typedef json_t *(*fg_status_defer_fn)(void *arg, uint64_t *ticket);

typedef struct {
    const char *name;
    const char *help;
    fg_status_defer_fn fn;
} fg_status_defer_cmd_t;

typedef struct fg_status_s fg_status_t;

/* Create the socket at path (a stale socket left by a dead master is replaced; a live one, or a
 * file that is not a socket, is an error), mode 0600, or 0660 owned by `group` when not NULL.
 * cmds is an array ended by a {NULL} entry, kept by reference. Returns NULL with err filled. */
fg_status_t *fg_status_new(struct event_base *base, const char *path, const char *group,
                           const fg_status_cmd_t *cmds, void *arg, char *err, size_t errlen);
/* Also serve these commands with arguments (array ended by {NULL}, kept by reference). */
void fg_status_set_args_cmds(fg_status_t *st, const fg_status_args_cmd_t *cmds);
/* Also serve these deferred commands (array ended by {NULL}, kept by reference). */
void fg_status_set_defer_cmds(fg_status_t *st, const fg_status_defer_cmd_t *cmds);
/* Answer every connection waiting for a ticket <= upto with doc (borrowed; NULL is sent as an
 * internal error) and let it send commands again. */
void fg_status_resolve(fg_status_t *st, uint64_t upto, const json_t *doc);
/* Close the socket and its connections, unlink the path. */
void fg_status_free(fg_status_t *st);
/* In a forked child: close the descriptors (listening socket, connections) without touching the
 * event base, which the child shares with the master until it execs nothing and exits. */
void fg_status_close_in_child(const fg_status_t *st);
/* For tests: the idle timeout in milliseconds (default 30 s). */
void fg_status_set_idle_timeout(fg_status_t *st, unsigned ms);

/* Client side (`fastgateway -s status`): send each of cmds[0..n) over one connection and parse
 * each answer into answers[i] (new references). Returns 0, or < 0 with err filled. */
int fg_status_query(const char *path, const char *const *cmds, json_t **answers, size_t n,
                    char *err, size_t errlen);
/* fg_status_query_wait's failures: no answer in time, or any other error. */
enum { FG_STATUS_ERROR = -1, FG_STATUS_TIMEOUT = -2 };
/* The same, waiting up to timeout_ms for each answer (fg_status_query waits 5 s). Returns 0,
 * FG_STATUS_TIMEOUT ("no answer ... within N s" in err) or FG_STATUS_ERROR. */
int fg_status_query_wait(const char *path, const char *const *cmds, json_t **answers, size_t n,
                         unsigned timeout_ms, char *err, size_t errlen);

#endif
