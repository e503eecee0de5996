#include "worker/core/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
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
    /* One file being sent after `out` (fg_conn_send_file); bytes queued meanwhile wait in
     * `tail`, which follows the file. file_fd -1 = none. */
    int file_fd;
    off_t file_off;
    off_t file_left;
    struct evbuffer *tail;
    fg_conn_cbs_t cbs;
    void *arg;
    uint64_t read_timeout_ms;
    uint64_t write_timeout_ms;
    size_t low_watermark;
    size_t read_max;
    unsigned reading : 1;
    unsigned writing : 1;
    unsigned connecting : 1;
    unsigned raw : 1;         /* readiness only: the owner moves bytes itself (splice) */
    unsigned no_sendfile : 1; /* the transport cannot take sendfile(2): read + write instead */
    fg_conn_spares_t *spares; /* where fg_conn_release puts buffers and events, or NULL */
};

#define SPARES_MAX 64

struct fg_conn_spares_s {
    unsigned nbuf, nev;
    struct evbuffer *buf[2 * SPARES_MAX]; /* empty */
    struct event *ev[SPARES_MAX];         /* not pending */
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
    c->file_fd = -1;
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
    if (c->tail)
        evbuffer_free(c->tail);
    if (c->file_fd >= 0)
        close(c->file_fd);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

fg_conn_spares_t *fg_conn_spares_new(void)
{
    return calloc(1, sizeof(fg_conn_spares_t));
}

void fg_conn_spares_free(fg_conn_spares_t *sp)
{
    if (sp == NULL)
        return;
    for (unsigned i = 0; i < sp->nbuf; i++)
        evbuffer_free(sp->buf[i]);
    for (unsigned i = 0; i < sp->nev; i++)
        event_free(sp->ev[i]);
    free(sp);
}

void fg_conn_set_spares(fg_conn_t *c, fg_conn_spares_t *sp)
{
    c->spares = sp;
}

static void put_buffer(fg_conn_t *c, struct evbuffer *b)
{
    if (c->spares != NULL && c->spares->nbuf < 2 * SPARES_MAX)
        c->spares->buf[c->spares->nbuf++] = b;
    else
        evbuffer_free(b);
}

static struct evbuffer *take_buffer(fg_conn_t *c)
{
    if (c->spares != NULL && c->spares->nbuf > 0)
        return c->spares->buf[--c->spares->nbuf];
    return evbuffer_new();
}

void fg_conn_release(fg_conn_t *c)
{
    if (c->in != NULL && evbuffer_get_length(c->in) == 0) {
        put_buffer(c, c->in);
        c->in = NULL;
    }
    if (c->out != NULL && c->file_fd < 0 && evbuffer_get_length(c->out) == 0) {
        put_buffer(c, c->out);
        c->out = NULL;
        if (c->tail != NULL) {
            evbuffer_free(c->tail);
            c->tail = NULL;
        }
    }
    if (c->wev != NULL && !c->writing && !c->connecting) {
        if (c->spares != NULL && c->spares->nev < SPARES_MAX)
            c->spares->ev[c->spares->nev++] = c->wev;
        else
            event_free(c->wev);
        c->wev = NULL;
    }
}

/* Buffers given back by fg_conn_release return before any callback to the owner, so the
 * owner always finds them there. Returns 0 or -1 (out of memory). */
static int acquire(fg_conn_t *c)
{
    if (c->in == NULL && (c->in = take_buffer(c)) == NULL)
        return -1;
    if (c->out == NULL && (c->out = take_buffer(c)) == NULL)
        return -1;
    if (c->wev == NULL) {
        struct event_base *base = event_get_base(c->rev);
        if (c->spares != NULL && c->spares->nev > 0) {
            c->wev = c->spares->ev[--c->spares->nev];
            event_assign(c->wev, base, c->fd, EV_WRITE | EV_PERSIST, on_writable, c);
        } else {
            c->wev = event_new(base, c->fd, EV_WRITE | EV_PERSIST, on_writable, c);
        }
        if (c->wev == NULL)
            return -1;
    }
    return 0;
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
    return c->file_fd >= 0 ? c->tail : c->out;
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
    size_t n = c->out ? evbuffer_get_length(c->out) : 0;
    if (c->file_fd >= 0)
        n += (size_t)c->file_left + evbuffer_get_length(c->tail);
    return n;
}

int fg_conn_sending_file(const fg_conn_t *c)
{
    return c->file_fd >= 0;
}

void fg_conn_set_sendfile(fg_conn_t *c, int on)
{
    c->no_sendfile = on ? 0 : 1;
}

int fg_conn_send_file(fg_conn_t *c, int fd, off_t off, off_t len)
{
    if (c->file_fd >= 0) {
        close(fd);
        return -EBUSY;
    }
    if (len <= 0) {
        close(fd);
        return 0;
    }
    if (c->tail == NULL && (c->tail = evbuffer_new()) == NULL) {
        close(fd);
        return -ENOMEM;
    }
    c->file_fd = fd;
    c->file_off = off;
    c->file_left = len;
    return 0;
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

/* The file is sent: what was queued behind it becomes the output. */
static void file_done(fg_conn_t *c)
{
    close(c->file_fd);
    c->file_fd = -1;
    evbuffer_add_buffer(c->out, c->tail);
}

/* Move the next part of the file towards the socket: sendfile(2) straight to it, or, for a
 * transport that cannot (TLS), one pread into the (empty) output, which the caller writes.
 * Returns >0 on progress, -1 with errno (EAGAIN included). */
static ssize_t file_step(fg_conn_t *c)
{
    /* A few MiB per call keeps one connection from holding the loop for long. */
    size_t want = c->file_left > (off_t)(4 << 20) ? (size_t)4 << 20 : (size_t)c->file_left;
    ssize_t n;
    if (!c->no_sendfile) {
        n = sendfile(c->fd, c->file_fd, &c->file_off, want);
    } else {
        struct evbuffer_iovec v;
        if (want > 16384)
            want = 16384;
        if (evbuffer_reserve_space(c->out, (ev_ssize_t)want, &v, 1) < 1) {
            errno = ENOMEM;
            return -1;
        }
        n = pread(c->file_fd, v.iov_base, want, c->file_off);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(c->out, &v, 1);
            c->file_off += n;
        } else {
            evbuffer_commit_space(c->out, &v, 0);
        }
    }
    if (n == 0) {
        errno = EIO; /* the file shrank under us: the response cannot be completed */
        return -1;
    }
    if (n > 0) {
        c->file_left -= n;
        if (c->file_left == 0)
            file_done(c);
    }
    return n;
}

/* One write step: the output buffer first, then the file behind it. Returns 1 when nothing is
 * left, 0 after progress, -2 when the socket is full, -1 on an error (c->err set). */
static int write_step(fg_conn_t *c)
{
    ssize_t n;
    if (c->out != NULL && evbuffer_get_length(c->out) > 0)
        n = evbuffer_write(c->out, c->fd);
    else if (c->file_fd >= 0)
        n = file_step(c);
    else
        return 1;
    if (n > 0)
        return 0;
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return -2;
    if (n == -1 && errno == EINTR)
        return 0;
    c->err = n == 0 ? EPIPE : errno;
    return -1;
}

int fg_conn_flush(fg_conn_t *c)
{
    if (c->connecting)
        return 0;
    int r;
    while ((r = write_step(c)) == 0)
        ;
    if (r == -1)
        return -1;
    if (r == -2) {
        if (!c->writing)
            want_write(c);
        return 0;
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
    if (acquire(c) != 0) {
        event_del(c->rev);
        c->reading = 0;
        c->err = ENOMEM;
        c->cbs.on_event(c, c->arg, FG_CONN_ERROR);
        return;
    }
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
    if (acquire(c) != 0) {
        event_del(c->wev);
        c->writing = 0;
        c->err = ENOMEM;
        c->cbs.on_event(c, c->arg, FG_CONN_ERROR);
        return;
    }
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
    int r;
    while ((r = write_step(c)) == 0) {
        if (fg_conn_pending(c) <= c->low_watermark)
            break;
    }
    if (r == -2)
        return;
    if (r == -1) {
        event_del(c->wev);
        c->writing = 0;
        c->cbs.on_event(c, c->arg, FG_CONN_ERROR);
        return;
    }
    if (fg_conn_pending(c) == 0) {
        event_del(c->wev);
        c->writing = 0;
    }
    if (c->cbs.on_drain)
        c->cbs.on_drain(c, c->arg);
}
