#include "worker/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"

struct fg_conn_s {
    int fd;
    int err;
    struct event *rev;
    struct event *wev;
    struct evbuffer *in;
    struct evbuffer *out;
    fg_conn_cbs_t cbs;
    void *arg;
    uint64_t read_timeout_ms;
    uint64_t write_timeout_ms;
    size_t low_watermark;
    size_t read_max;
    unsigned reading : 1;
    unsigned writing : 1;
    unsigned connecting : 1;
    unsigned raw : 1; /* readiness only: the owner moves bytes itself (splice) */
};

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void want_write(fg_conn_t *c);

#define NO_TIMEOUT_MS (7ull * 24 * 3600 * 1000)
static void on_writable(evutil_socket_t fd, short what, void *arg);

static struct timeval ms_tv(uint64_t ms)
{
    return (struct timeval){.tv_sec = (time_t)(ms / 1000),
                            .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

fg_conn_t *fg_conn_new(struct event_base *base, int fd, const fg_conn_cbs_t *cbs, void *arg)
{
    fg_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->fd = fd;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    if (c->in == NULL || c->out == NULL || c->rev == NULL || c->wev == NULL) {
        c->fd = -1;
        fg_conn_free(c);
        return NULL;
    }
    c->read_max = 16 * 1024 - 128; /* one 16 KiB chain with its header */
    if (cbs)
        c->cbs = *cbs;
    c->arg = arg;
    return c;
}

void fg_conn_free(fg_conn_t *c)
{
    if (c == NULL)
        return;
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

void fg_conn_set_cbs(fg_conn_t *c, const fg_conn_cbs_t *cbs, void *arg)
{
    c->cbs = *cbs;
    c->arg = arg;
}

struct evbuffer *fg_conn_input(fg_conn_t *c)
{
    return c->in;
}

struct evbuffer *fg_conn_output(fg_conn_t *c)
{
    return c->out;
}

int fg_conn_fd(const fg_conn_t *c)
{
    return c->fd;
}

int fg_conn_errno(const fg_conn_t *c)
{
    return c->err;
}

size_t fg_conn_pending(const fg_conn_t *c)
{
    return evbuffer_get_length(c->out);
}

int fg_conn_writing(const fg_conn_t *c)
{
    return c->writing;
}

void fg_conn_set_raw(fg_conn_t *c, int raw)
{
    c->raw = raw ? 1 : 0;
}

void fg_conn_want_write(fg_conn_t *c)
{
    if (!c->writing)
        want_write(c);
}

void fg_conn_set_low_watermark(fg_conn_t *c, size_t low)
{
    c->low_watermark = low;
}

void fg_conn_set_read_max(fg_conn_t *c, size_t max)
{
    c->read_max = max;
}

void fg_conn_read(fg_conn_t *c, int enable, uint64_t timeout_ms)
{
    if (!enable) {
        if (c->reading)
            event_del(c->rev);
        c->reading = 0;
        return;
    }
    /* A timeout runs from this call: a connection taken from the pool must not inherit the
     * timer of its idle time (found in review). Re-adding a pending event only moves its
     * timer, no epoll_ctl; only "no timeout" again is left alone. */
    if (c->reading && timeout_ms == 0 && c->read_timeout_ms == 0)
        return;
    c->read_timeout_ms = timeout_ms;
    /* event_add(NULL) would keep an earlier timer, and event_del costs an epoll_ctl: "no
     * timeout" is a timer too far away to matter. */
    struct timeval tv = ms_tv(timeout_ms ? timeout_ms : NO_TIMEOUT_MS);
    event_add(c->rev, &tv);
    c->reading = 1;
}

void fg_conn_set_write_timeout(fg_conn_t *c, uint64_t timeout_ms)
{
    c->write_timeout_ms = timeout_ms;
}

static void want_write(fg_conn_t *c)
{
    struct timeval tv = ms_tv(c->write_timeout_ms);
    event_add(c->wev, c->write_timeout_ms ? &tv : NULL);
    c->writing = 1;
}

int fg_conn_flush(fg_conn_t *c)
{
    if (c->connecting)
        return 0;
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->writing)
                want_write(c);
            return 0;
        }
        if (n == -1 && errno == EINTR)
            continue;
        c->err = n == 0 ? EPIPE : errno;
        return -1;
    }
    if (c->writing) {
        event_del(c->wev);
        c->writing = 0;
    }
    return 0;
}

int fg_conn_connect(fg_conn_t *c, const struct sockaddr *sa, socklen_t len, uint64_t timeout_ms)
{
    if (connect(c->fd, sa, len) == -1 && errno != EINPROGRESS) {
        c->err = errno;
        return -errno;
    }
    /* Even an immediate success on loopback is reported from the loop, so callers see one path. */
    c->connecting = 1;
    c->write_timeout_ms = timeout_ms;
    want_write(c);
    return 0;
}

/* Read up to max bytes straight into free space of buf. evbuffer_read would first ask the
 * kernel how much is waiting (an ioctl per read); one readv into reserved space is enough. */
static int read_into(struct evbuffer *buf, int fd, size_t max)
{
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(buf, (ev_ssize_t)max, v, 2);
    if (nv <= 0) {
        errno = ENOMEM;
        return -1;
    }
    struct iovec iov[2];
    size_t room = 0;
    for (int i = 0; i < nv; i++) {
        size_t len = v[i].iov_len;
        if (room + len > max)
            len = max - room;
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = len;
        room += len;
    }
    ssize_t n = readv(fd, iov, nv);
    if (n <= 0) {
        evbuffer_commit_space(buf, v, 0);
        return (int)n;
    }
    size_t left = (size_t)n;
    int used = 0;
    for (int i = 0; i < nv && left > 0; i++, used++) {
        if (v[i].iov_len > left)
            v[i].iov_len = left;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(buf, v, used);
    return (int)n;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    fg_conn_t *c = arg;
    if (what & EV_TIMEOUT) {
        event_del(c->rev);
        c->reading = 0;
        c->cbs.on_event(c, c->arg, FG_CONN_TIMEOUT_READ);
        return;
    }
    if (c->raw) {
        c->cbs.on_read(c, c->arg);
        return;
    }
    int n = read_into(c->in, fd, c->read_max);
    if (n > 0) {
        c->cbs.on_read(c, c->arg);
        return;
    }
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    event_del(c->rev);
    c->reading = 0;
    if (n == 0) {
        c->cbs.on_event(c, c->arg, FG_CONN_EOF);
    } else {
        c->err = errno;
        c->cbs.on_event(c, c->arg, FG_CONN_ERROR);
    }
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    fg_conn_t *c = arg;
    if (what & EV_TIMEOUT) {
        event_del(c->wev);
        c->writing = 0;
        c->connecting = 0;
        c->err = ETIMEDOUT;
        c->cbs.on_event(c, c->arg, FG_CONN_TIMEOUT_WRITE);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
            err = errno;
        c->connecting = 0;
        event_del(c->wev);
        c->writing = 0;
        if (err != 0) {
            c->err = err;
            c->cbs.on_event(c, c->arg, FG_CONN_ERROR);
            return;
        }
        c->cbs.on_event(c, c->arg, FG_CONN_CONNECTED);
        return;
    }
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, fd);
        if (n > 0) {
            if (evbuffer_get_length(c->out) <= c->low_watermark)
                break;
            continue;
        }
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n == -1 && errno == EINTR)
            continue;
        c->err = n == 0 ? EPIPE : errno;
        event_del(c->wev);
        c->writing = 0;
        c->cbs.on_event(c, c->arg, FG_CONN_ERROR);
        return;
    }
    if (evbuffer_get_length(c->out) == 0) {
        event_del(c->wev);
        c->writing = 0;
    }
    if (c->cbs.on_drain)
        c->cbs.on_drain(c, c->arg);
}
