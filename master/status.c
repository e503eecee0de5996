#include "master/status.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "master/connset.h"

#define MAX_CONNS 64
#define IDLE_MS 30000
/* A client that sends commands without reading the answers: stop reading its commands while
 * this much output waits, go on once it fell to OUT_LOW. The master never buffers without
 * bound. */
#define OUT_HIGH (256 * 1024)
#define OUT_LOW (64 * 1024)

typedef struct {
    fg_connset_conn_t base;
    int paused;      /* reading stopped: too much output waits (OUT_HIGH) */
    uint64_t ticket; /* > 0: waiting for the answer of a deferred command */
} conn_t;

struct fg_status_s {
    fg_connset_t *set;
    char *path;
    const fg_status_cmd_t *cmds;
    const fg_status_args_cmd_t *args_cmds;
    const fg_status_defer_cmd_t *defer_cmds;
    void *arg;
};

static fg_status_t *status_of(const conn_t *c)
{
    return fg_connset_arg(c->base.set);
}

static void reply(conn_t *c, json_t *doc)
{
    struct evbuffer *out = bufferevent_get_output(c->base.bev);
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (s == NULL) {
        evbuffer_add_printf(out, "{\"error\":\"internal error\"}\n");
    } else {
        evbuffer_add(out, s, strlen(s));
        evbuffer_add(out, "\n", 1);
        free(s);
    }
    json_decref(doc);
}

static json_t *help(const fg_status_t *st)
{
    json_t *list = json_array();
    for (const fg_status_cmd_t *cmd = st->cmds; cmd->name; cmd++)
        json_array_append_new(list, json_pack("{s:s, s:s}", "command", cmd->name, "help",
                                              cmd->help ? cmd->help : ""));
    for (const fg_status_args_cmd_t *cmd = st->args_cmds; cmd && cmd->name; cmd++)
        json_array_append_new(list, json_pack("{s:s, s:s}", "command", cmd->name, "help",
                                              cmd->help ? cmd->help : ""));
    for (const fg_status_defer_cmd_t *cmd = st->defer_cmds; cmd && cmd->name; cmd++)
        json_array_append_new(list, json_pack("{s:s, s:s}", "command", cmd->name, "help",
                                              cmd->help ? cmd->help : ""));
    json_array_append_new(list,
                          json_pack("{s:s, s:s}", "command", "help", "help", "list the commands"));
    json_array_append_new(
        list, json_pack("{s:s, s:s}", "command", "quit", "help", "close this connection"));
    return json_pack("{s:o}", "commands", list);
}

/* Commands are matched after trimming and collapsing blanks, so "show  info " works. */
static void normalize(char *line)
{
    char *w = line;
    int blank = 1;
    for (char *r = line; *r; r++) {
        if (*r == ' ' || *r == '\t' || *r == '\r') {
            blank = 1;
            continue;
        }
        if (blank && w != line)
            *w++ = ' ';
        blank = 0;
        *w++ = *r;
    }
    *w = '\0';
}

/* Run a deferred command: its answer now, or wait for the ticket with reading stopped (the
 * idle timeout does not apply to a connection that is not read), so the client's later
 * commands stay in order behind the answer. */
static void defer(conn_t *c, const fg_status_defer_cmd_t *cmd)
{
    uint64_t ticket = 0;
    json_t *now = cmd->fn(status_of(c)->arg, &ticket);
    if (now != NULL || ticket == 0) {
        reply(c, now);
        return;
    }
    c->ticket = ticket;
    bufferevent_disable(c->base.bev, EV_READ);
}

static void run_command(conn_t *c, char *line)
{
    fg_status_t *st = status_of(c);
    normalize(line);
    if (line[0] == '\0')
        return;
    if (strcmp(line, "quit") == 0) {
        c->base.closing = 1;
        return;
    }
    if (strcmp(line, "help") == 0) {
        reply(c, help(st));
        return;
    }
    for (const fg_status_cmd_t *cmd = st->cmds; cmd->name; cmd++) {
        if (strcmp(line, cmd->name) == 0) {
            reply(c, cmd->fn(st->arg));
            return;
        }
    }
    for (const fg_status_defer_cmd_t *cmd = st->defer_cmds; cmd && cmd->name; cmd++) {
        if (strcmp(line, cmd->name) == 0) {
            defer(c, cmd);
            return;
        }
    }
    for (const fg_status_args_cmd_t *cmd = st->args_cmds; cmd && cmd->name; cmd++) {
        size_t n = strlen(cmd->name);
        if (strncmp(line, cmd->name, n) == 0 && (line[n] == '\0' || line[n] == ' ')) {
            reply(c, cmd->fn(st->arg, line[n] ? line + n + 1 : ""));
            return;
        }
    }
    json_t *shown = json_string(line);
    if (shown == NULL) /* jansson takes UTF-8 only */
        reply(c, json_pack("{s:s}", "error", "command is not valid UTF-8"));
    else
        reply(c, json_pack("{s:s, s:o}", "error", "unknown command", "command", shown));
}

static void on_read(fg_connset_conn_t *b)
{
    conn_t *c = (conn_t *)b;
    struct bufferevent *bev = b->bev;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;
    char *line;

    if (c->paused || c->ticket)
        return;
    while (!b->closing && !c->ticket &&
           (line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
        if (len > FG_STATUS_MAX_LINE) {
            free(line);
            goto too_long;
        }
        run_command(c, line);
        free(line);
        if (evbuffer_get_length(bufferevent_get_output(bev)) > OUT_HIGH) {
            c->paused = 1;
            bufferevent_disable(bev, EV_READ);
            bufferevent_setwatermark(bev, EV_WRITE, OUT_LOW, 0);
            return;
        }
    }
    if (c->ticket)
        return;
    if (!b->closing && evbuffer_get_length(in) > FG_STATUS_MAX_LINE)
        goto too_long;
    if (b->closing) {
        fg_connset_finish(b);
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            fg_connset_close(b);
    }
    return;
too_long:
    reply(c, json_pack("{s:s, s:i}", "error", "line too long", "max", FG_STATUS_MAX_LINE));
    fg_connset_finish(b);
}

static int on_write(fg_connset_conn_t *b)
{
    conn_t *c = (conn_t *)b;
    if (!c->paused)
        return 0;
    /* the client caught up: back to the commands it already sent */
    c->paused = 0;
    bufferevent_setwatermark(b->bev, EV_WRITE, 0, 0);
    bufferevent_enable(b->bev, EV_READ);
    on_read(b);
    return 1;
}

static const fg_connset_ops_t conn_ops = {
    .conn_size = sizeof(conn_t),
    .max_conns = MAX_CONNS,
    /* said before closing, so that `fastgateway -s status` does not suggest the master is down */
    .busy = "{\"error\":\"too many status clients\"}\n",
    .read = on_read,
    .write = on_write,
    /* no .event: after EOF, an error or the idle timeout there is nothing more to say */
};

/* A socket file left by a master that died without cleaning up is removed; a live one means
 * another instance runs with this configuration. Returns 0 or -1 with err. */
static int clear_stale(const char *path, const struct sockaddr_un *sun, char *err, size_t errlen)
{
    struct stat sb;
    if (lstat(path, &sb) == -1)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(sb.st_mode)) {
        snprintf(err, errlen, "statusSocket %s exists and is not a socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd != -1 && connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0) {
        close(fd);
        snprintf(err, errlen, "statusSocket %s: another process is listening on it", path);
        return -1;
    }
    if (fd != -1)
        close(fd);
    if (unlink(path) == -1 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove stale %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int set_owner(const char *path, const char *group, char *err, size_t errlen)
{
    if (group == NULL) {
        if (chmod(path, 0600) == -1)
            goto fail;
        return 0;
    }
    errno = 0;
    struct group *gr = getgrnam(group);
    if (gr == NULL) {
        snprintf(err, errlen, "statusGroup: unknown group \"%s\"", group);
        return -1;
    }
    if (chown(path, (uid_t)-1, gr->gr_gid) == -1 || chmod(path, 0660) == -1)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "statusSocket %s: %s", path, strerror(errno));
    return -1;
}

static int open_socket(const char *path, const char *group, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "statusSocket %s: path longer than %zu bytes", path,
                 sizeof(sun.sun_path) - 1);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (clear_stale(path, &sun, err, errlen) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "statusSocket: socket: %s", strerror(errno));
        return -1;
    }
    /* Created with no group/other bits, so the socket is never reachable with wider rights. */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc == -1) {
        snprintf(err, errlen, "statusSocket %s: bind: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (set_owner(path, group, err, errlen) < 0 || listen(fd, 16) == -1) {
        if (err[0] == '\0')
            snprintf(err, errlen, "statusSocket %s: listen: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

fg_status_t *fg_status_new(struct event_base *base, const char *path, const char *group,
                           const fg_status_cmd_t *cmds, void *arg, char *err, size_t errlen)
{
    err[0] = '\0';
    fg_status_t *st = calloc(1, sizeof(*st));
    if (st == NULL || (st->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "statusSocket: out of memory");
        goto out_free;
    }
    st->cmds = cmds;
    st->arg = arg;
    int fd = open_socket(path, group, err, errlen);
    if (fd < 0)
        goto out_free;
    char label[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
    snprintf(label, sizeof(label), "statusSocket %s", path);
    st->set = fg_connset_new(base, fd, label, &conn_ops, st, err, errlen);
    if (st->set == NULL) {
        unlink(path);
        goto out_free;
    }
    fg_connset_set_timeout(st->set, IDLE_MS);
    return st;
out_free:
    if (st)
        free(st->path);
    free(st);
    return NULL;
}

void fg_status_free(fg_status_t *st)
{
    if (st == NULL)
        return;
    fg_connset_free(st->set);
    unlink(st->path);
    free(st->path);
    free(st);
}

void fg_status_set_defer_cmds(fg_status_t *st, const fg_status_defer_cmd_t *cmds)
{
    st->defer_cmds = cmds;
}

void fg_status_resolve(fg_status_t *st, uint64_t upto, const json_t *doc)
{
    if (st == NULL)
        return;
    for (fg_connset_conn_t *b = fg_connset_conns(st->set), *next; b; b = next) {
        next = b->next; /* on_read may free b when it asked to quit */
        conn_t *c = (conn_t *)b;
        if (c->ticket == 0 || c->ticket > upto)
            continue;
        c->ticket = 0;
        reply(c, doc ? json_deep_copy(doc) : NULL);
        bufferevent_enable(b->bev, EV_READ);
        on_read(b);
    }
}

void fg_status_close_in_child(const fg_status_t *st)
{
    if (st)
        fg_connset_close_in_child(st->set);
}

void fg_status_set_idle_timeout(fg_status_t *st, unsigned ms)
{
    fg_connset_set_timeout(st->set, ms);
}

/* ---- client ---- */

static int write_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL); /* a closed socket is an error, not death */
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read one answer line into a growing buffer; `have` bytes of a previous read may remain. */
static char *read_line(int fd, char **buf, size_t *have, size_t *cap)
{
    for (;;) {
        char *nl = memchr(*buf, '\n', *have);
        if (nl != NULL) {
            *nl = '\0';
            return *buf;
        }
        if (*cap - *have < 4096) {
            char *b = realloc(*buf, *cap * 2);
            if (b == NULL)
                return NULL;
            *buf = b;
            *cap *= 2;
        }
        ssize_t n = read(fd, *buf + *have, *cap - *have);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == 0)
            errno = 0; /* closed, not timed out */
        if (n <= 0)
            return NULL;
        *have += (size_t)n;
    }
}

static int connect_path(const char *path, unsigned timeout_ms, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
        snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int fg_status_query(const char *path, const char *const *cmds, json_t **answers, size_t n,
                    char *err, size_t errlen)
{
    return fg_status_query_wait(path, cmds, answers, n, 5000, err, errlen);
}

int fg_status_query_wait(const char *path, const char *const *cmds, json_t **answers, size_t n,
                         unsigned timeout_ms, char *err, size_t errlen)
{
    size_t done = 0, have = 0, cap = 8192;
    int rc = FG_STATUS_ERROR;
    char *buf = malloc(cap);
    int fd = buf ? connect_path(path, timeout_ms, err, errlen) : -1;
    if (fd < 0) {
        if (buf == NULL)
            snprintf(err, errlen, "out of memory");
        free(buf);
        return -1;
    }
    for (; done < n; done++) {
        char line[FG_STATUS_MAX_LINE + 2];
        int len = snprintf(line, sizeof(line), "%s\n", cmds[done]);
        int sent = len >= 0 && (size_t)len < sizeof(line) && write_all(fd, line, (size_t)len) == 0;
        /* Unsent, the master may still have said why before closing (too many clients). */
        char *answer = read_line(fd, &buf, &have, &cap);
        if (!sent && (answer == NULL || strstr(answer, "too many status clients") == NULL)) {
            snprintf(err, errlen, "%s: cannot send \"%s\"", path, cmds[done]);
            goto fail;
        }
        if (answer == NULL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            snprintf(err, errlen, "%s: no answer to \"%s\" within %u s", path, cmds[done],
                     (timeout_ms + 999) / 1000);
            rc = FG_STATUS_TIMEOUT;
            goto fail;
        }
        if (answer == NULL) {
            snprintf(err, errlen, "%s: no answer to \"%s\"", path, cmds[done]);
            goto fail;
        }
        json_error_t jerr;
        answers[done] = json_loads(answer, 0, &jerr);
        size_t used = strlen(answer) + 1;
        memmove(buf, buf + used, have - used);
        have -= used;
        if (answers[done] == NULL) {
            snprintf(err, errlen, "%s: invalid answer to \"%s\": %s", path, cmds[done], jerr.text);
            goto fail;
        }
        const char *busy = json_string_value(json_object_get(answers[done], "error"));
        if (busy && strcmp(busy, "too many status clients") == 0) {
            /* the master turned the connection away: it is running, only busy */
            snprintf(err, errlen, "%s: the master is running but has too many status clients",
                     path);
            json_decref(answers[done]);
            goto fail;
        }
    }
    close(fd);
    free(buf);
    return 0;
fail:
    for (size_t i = 0; i < done; i++)
        json_decref(answers[i]);
    close(fd);
    free(buf);
    return rc;
}

void fg_status_set_args_cmds(fg_status_t *st, const fg_status_args_cmd_t *cmds)
{
    st->args_cmds = cmds;
}
