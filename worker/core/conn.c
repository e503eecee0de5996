#include "worker/core/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/tls.h"
#include "worker/core/clock.h"
#include "worker/core/transport.h"
#include "worker/core/transport_ws.h"

/* Laid out for an idle keep-alive connection's footprint: timeouts and sizes fit 32 bits. */
struct fg_conn_s {
    fg_transport_t t; /* t.fd is the socket */
    int err;
    /* One file being sent after `out` (fg_conn_send_file); bytes queued meanwhile wait in
     * `tail`, which follows the file. file_fd -1 = none. */
    int file_fd;
    struct event *rev; /* no timeout of its own: rtimer keeps the read timeout */
    struct event *wev;
    struct event *rtimer;
    struct evbuffer *in;
    struct evbuffer *out;
    off_t file_off;
    off_t file_left;
    struct evbuffer *tail;
    const fg_conn_cbs_t *cbs; /* the owner's table, which outlives the conn */
    void *arg;
    void (*on_free)(void *arg); /* fg_conn_on_free */
    void *on_free_arg;
    /* Read timeout, lazily: a timer is pending to fire at read_timer_at (fg_clock ms; 0 = none
     * pending), rtimer's, or rev's own while idle_timeout is set; the timeout is due at
     * read_due (0 = none). */
    uint64_t read_due;
    uint64_t read_timer_at;
    uint32_t read_timeout_ms;
    uint32_t write_timeout_ms;
    union {
        uint32_t hs_timeout_ms;  /* tls_client, until connected: time allowed for the handshake */
        uint32_t rev_timeout_ms; /* idle_timeout: rev's timeout, which each wake-up restarts */
    };
    uint32_t low_watermark;
    uint32_t read_max;
    unsigned reading : 1;
    unsigned writing : 1;
    unsigned connecting : 1;
    unsigned raw : 1;              /* readiness only: the owner moves bytes itself (splice) */
    unsigned no_sendfile : 1;      /* the transport cannot take sendfile(2): read + write instead */
    unsigned handshaking : 1;      /* fg_conn_handshake runs: events drive the transport's */
    unsigned idle_timeout : 1;     /* the read timeout rides on rev, rtimer is not pending */
    unsigned read_wants_write : 1; /* a TLS read waits for writability */
    unsigned write_wants_read : 1; /* a TLS write waits for readability */
    unsigned tls_client : 1;       /* a client handshake follows the connect */
    unsigned last_output : 1;      /* fg_conn_last_output: nothing is queued after this */
    fg_conn_spares_t *spares;      /* where fg_conn_release puts buffers and events, or NULL */
    char *tls_why;                 /* after FG_CONN_TLS_FAILED, or NULL */
};

#define SPARES_MAX 64

struct fg_conn_spares_s {
    unsigned nbuf, nev;
    struct evbuffer *buf[2 * SPARES_MAX]; /* empty */
    struct event *ev[SPARES_MAX];         /* not pending */
};

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_read_timer(evutil_socket_t fd, short what, void *arg);
static void arm_read_timer(fg_conn_t *c, uint64_t ms);
static void want_write(fg_conn_t *c);
static void do_read(fg_conn_t *c);
static void handshake_step(fg_conn_t *c);
static void tls_client_failed(fg_conn_t *c, int err);
static int resume_write(fg_conn_t *c);

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* Timeouts are kept in 32 bits: 49 days and more mean "never" in practice. */
static uint32_t ms32(uint64_t ms)
{
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

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
    fg_transport_tcp_init(&c->t, fd);
    c->file_fd = -1;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    c->rtimer = evtimer_new(base, on_read_timer, c);
    if (c->in == NULL || c->out == NULL || c->rev == NULL || c->wev == NULL || c->rtimer == NULL) {
        c->t.fd = -1;
        fg_conn_free(c);
        return NULL;
    }
    c->read_max = 16 * 1024 - 128; /* one 16 KiB chain with its header */
    if (cbs)
        c->cbs = cbs;
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
    if (c->rtimer)
        event_free(c->rtimer);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    if (c->tail)
        evbuffer_free(c->tail);
    if (c->file_fd >= 0)
        close(c->file_fd);
    free(c->tls_why);
    c->t.ops->close(&c->t);
    if (c->t.fd >= 0)
        close(c->t.fd);
    if (c->on_free)
        c->on_free(c->on_free_arg);
    free(c);
}

void fg_conn_on_free(fg_conn_t *c, void (*fn)(void *arg), void *arg)
{
    c->on_free = fn;
    c->on_free_arg = arg;
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

static void give_event(fg_conn_t *c, struct event *ev)
{
    if (c->spares != NULL && c->spares->nev < SPARES_MAX)
        c->spares->ev[c->spares->nev++] = ev;
    else
        event_free(ev);
}

/* A spare event (or a new one) set up as fd/what/cb; NULL when out of memory. */
static struct event *take_event(fg_conn_t *c, evutil_socket_t fd, short what, event_callback_fn cb)
{
    struct event_base *base = event_get_base(c->rev);
    if (c->spares != NULL && c->spares->nev > 0) {
        struct event *ev = c->spares->ev[--c->spares->nev];
        event_assign(ev, base, fd, what, cb, c);
        return ev;
    }
    return event_new(base, fd, what, cb, c);
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
        give_event(c, c->wev);
        c->wev = NULL;
    }
    /* An idle connection keeps no timer event either: what is left of its read timeout rides
     * on the read event itself, which no read moves while the connection is idle. */
    if (c->rtimer != NULL && !c->handshaking && c->in == NULL) {
        if (c->reading && c->read_due != 0) {
            uint64_t now = fg_clock_now_ms();
            uint64_t rest = c->read_due > now ? c->read_due - now : 1;
            struct timeval tv = ms_tv(rest);
            event_add(c->rev, &tv);
            c->idle_timeout = 1;
            c->rev_timeout_ms = ms32(rest);
        }
        event_del(c->rtimer);
        give_event(c, c->rtimer);
        c->rtimer = NULL;
        c->read_timer_at = c->idle_timeout ? fg_clock_now_ms() + c->rev_timeout_ms : 0;
    }
}

/* The read event goes back to having no timeout of its own (the timer event keeps it).
 * event_remove_timer leaves the descriptor registered: deleting and adding the event again
 * would cost an epoll_ctl pair on every request of a keep-alive connection. */
static void end_idle_timeout(fg_conn_t *c)
{
    if (!c->idle_timeout)
        return;
    c->idle_timeout = 0;
    c->read_timer_at = 0;
    if (c->reading)
        event_remove_timer(c->rev);
    else
        event_del(c->rev);
}

/* Buffers given back by fg_conn_release return before any callback to the owner, so the
 * owner always finds them there. A read timeout riding on rev stays there while no shorter one
 * is asked for (fg_conn_read): moving it to rtimer and back would cost two timer insertions and
 * two removals per request of a keep-alive connection. Returns 0 or -1 (out of memory). */
static int acquire(fg_conn_t *c)
{
    if (c->in == NULL && (c->in = take_buffer(c)) == NULL)
        return -1;
    if (c->out == NULL && (c->out = take_buffer(c)) == NULL)
        return -1;
    if (c->wev == NULL &&
        (c->wev = take_event(c, c->t.fd, EV_WRITE | EV_PERSIST, on_writable)) == NULL)
        return -1;
    if (c->idle_timeout)
        return 0;
    if (c->rtimer == NULL && (c->rtimer = take_event(c, -1, 0, on_read_timer)) == NULL)
        return -1;
    if (c->reading && c->read_due != 0 && c->read_timer_at == 0) {
        uint64_t now = fg_clock_now_ms();
        arm_read_timer(c, c->read_due > now ? c->read_due - now : 1);
    }
    return 0;
}

void fg_conn_set_cbs(fg_conn_t *c, const fg_conn_cbs_t *cbs, void *arg)
{
    c->cbs = cbs;
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

int fg_conn_errno(const fg_conn_t *c)
{
    return c->err;
}

size_t fg_conn_pending(const fg_conn_t *c)
{
    size_t n = c->out ? evbuffer_get_length(c->out) : 0;
    if (c->t.ops->unsent != NULL)
        n += c->t.ops->unsent(&c->t);
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
    c->low_watermark = low > UINT32_MAX ? UINT32_MAX : (uint32_t)low;
}

void fg_conn_set_read_max(fg_conn_t *c, size_t max)
{
    c->read_max = max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
}

void fg_conn_read(fg_conn_t *c, int enable, uint64_t timeout_ms)
{
    if (!enable) {
        if (c->reading)
            event_del(c->rev);
        c->reading = 0;
        if (c->idle_timeout) {
            c->idle_timeout = 0;
            c->read_timer_at = 0;
        }
        return;
    }
    /* A timeout runs from this call: a connection taken from the pool must not inherit the
     * timer of its idle time. "No timeout" again changes nothing. */
    if (c->reading && timeout_ms == 0 && c->read_timeout_ms == 0)
        return;
    c->read_timeout_ms = ms32(timeout_ms);
    if (!c->reading)
        event_add(c->rev, NULL);
    c->reading = 1;
    /* The timer lives in its own event: a persistent read event with a timeout has libevent
     * move that timer on every wake-up. Moving a timer is a heap update, several per request:
     * a timer pending to fire no later than the new due time stays, and on_read_timer arms
     * it again for the rest. "No timeout" leaves a pending timer to find nothing due. */
    c->read_due = timeout_ms ? fg_clock_now_ms() + timeout_ms : 0;
    if (c->read_due && (c->read_timer_at == 0 || c->read_timer_at > c->read_due)) {
        end_idle_timeout(c);
        arm_read_timer(c, timeout_ms);
    }
    if (c->t.ops->pending(&c->t) > 0 && !c->handshaking)
        event_active(c->rev, EV_READ, 1);
}

void fg_conn_last_output(fg_conn_t *c)
{
    c->last_output = 1;
}

void fg_conn_set_write_timeout(fg_conn_t *c, uint64_t timeout_ms)
{
    c->write_timeout_ms = ms32(timeout_ms);
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
    if (!c->no_sendfile && (c->t.ops->caps & FG_TRANSPORT_SENDFILE)) {
        n = sendfile(c->t.fd, c->file_fd, &c->file_off, want);
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
    if ((c->out != NULL && evbuffer_get_length(c->out) > 0) ||
        (c->t.ops->unsent != NULL && c->out != NULL && c->t.ops->unsent(&c->t) > 0)) {
        c->t.last = c->last_output && c->file_fd < 0; /* the file's pieces come first */
        n = c->t.ops->send_chain(&c->t, c->out);
        if (n == FG_TRANSPORT_AGAIN) {
            if (c->t.want == FG_TRANSPORT_WANT_READ && !c->write_wants_read) {
                /* The write goes on when the socket is readable (a TLS record to take in). */
                c->write_wants_read = 1;
                event_add(c->rev, NULL);
            }
            if (c->write_wants_read && c->writing) {
                event_del(c->wev); /* writability would only spin the loop meanwhile */
                c->writing = 0;
            }
            return -2;
        }
    } else if (c->file_fd >= 0) {
        n = file_step(c);
    } else {
        return 1;
    }
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
        if (!c->writing && !c->write_wants_read)
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
    if (connect(c->t.fd, sa, len) == -1 && errno != EINPROGRESS) {
        c->err = errno;
        return -errno;
    }
    /* Even an immediate success on loopback is reported from the loop, so callers see one path. */
    c->connecting = 1;
    c->write_timeout_ms = ms32(timeout_ms);
    want_write(c);
    return 0;
}

static void arm_read_timer(fg_conn_t *c, uint64_t ms)
{
    if (c->rtimer == NULL && (c->rtimer = take_event(c, -1, 0, on_read_timer)) == NULL)
        return; /* out of memory: the read waits without a timeout */
    struct timeval tv = ms_tv(ms);
    evtimer_add(c->rtimer, &tv);
    c->read_timer_at = fg_clock_now_ms() + ms;
}

static void on_read_timer(evutil_socket_t fd, short what, void *arg)
{
    fg_conn_t *c = arg;
    (void)fd;
    (void)what;
    c->read_timer_at = 0;
    if (!c->reading || c->read_due == 0)
        return;
    uint64_t now = fg_clock_now_ms();
    if (now < c->read_due) {
        arm_read_timer(c, c->read_due - now); /* reads since it was armed moved the due time */
        return;
    }
    event_del(c->rev);
    c->reading = 0;
    if (c->handshaking && c->tls_client) {
        tls_client_failed(c, ETIMEDOUT);
        return;
    }
    if (acquire(c) != 0) {
        c->err = ENOMEM;
        c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
        return;
    }
    c->cbs->on_event(c, c->arg, FG_CONN_TIMEOUT_READ);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    fg_conn_t *c = arg;
    (void)fd;
    fg_clock_busy();
    if (what & EV_TIMEOUT) {
        /* The read timeout carried by rev (fg_conn_release), lazily: reads or a longer timeout
         * since it was set may have moved the due time, or "no timeout" removed it. */
        uint64_t now = fg_clock_now_ms();
        if (c->reading && c->read_due > now) {
            uint64_t rest = c->read_due - now;
            struct timeval tv = ms_tv(rest);
            event_add(c->rev, &tv);
            c->rev_timeout_ms = ms32(rest);
            c->read_timer_at = now + rest;
            return;
        }
        if (c->reading && c->read_due == 0) {
            end_idle_timeout(c);
            return;
        }
        c->idle_timeout = 0;
        c->read_timer_at = 0;
        event_del(c->rev);
        c->reading = 0;
        if (acquire(c) != 0) {
            c->err = ENOMEM;
            c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
            return;
        }
        c->cbs->on_event(c, c->arg, FG_CONN_TIMEOUT_READ);
        return;
    }
    /* A wake-up restarts rev's own timeout: libevent has it fire rev_timeout_ms from now. */
    if (c->idle_timeout)
        c->read_timer_at = fg_clock_now_ms() + c->rev_timeout_ms;
    if (acquire(c) != 0) {
        event_del(c->rev);
        c->reading = 0;
        c->idle_timeout = 0;
        c->read_timer_at = 0;
        c->err = ENOMEM;
        c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
        return;
    }
    /* Every wake-up for reading is activity: the read timeout runs again from here (what
     * libevent does for a persistent event's own timeout). A handshake keeps the one due time
     * it started with: a peer sending a byte now and then must not stretch it. */
    if (c->reading && c->read_timeout_ms && !c->handshaking) {
        c->read_due = fg_clock_now_ms() + c->read_timeout_ms;
        /* rev's timeout, longer than the one asked for since, would fire too late */
        if (c->idle_timeout && c->read_timer_at > c->read_due) {
            end_idle_timeout(c);
            arm_read_timer(c, c->read_timeout_ms);
        }
    }
    if (c->handshaking) {
        handshake_step(c);
        return;
    }
    if (c->write_wants_read) {
        c->write_wants_read = 0;
        if (!c->reading)
            event_del(c->rev);
        if (resume_write(c) != 0 || !c->reading)
            return; /* c may be gone */
    }
    if (!c->reading)
        return; /* activated for buffered TLS bytes, then reading was turned off */
    do_read(c);
}

/* One read through the transport, and the owner told. */
static void do_read(fg_conn_t *c)
{
    if (c->raw) {
        c->cbs->on_read(c, c->arg);
        return;
    }
    ssize_t n = c->t.ops->recv(&c->t, c->in, c->read_max);
    /* a layer that answers as it reads (a WebSocket pong, a close echo) has frames to send */
    if (c->t.ops->unsent != NULL && !c->writing && c->t.ops->unsent(&c->t) > 0)
        want_write(c);
    if (n > 0) {
        /* Decrypted bytes left in the TLS layer raise no socket event, nor does a close_notify
         * taken in with the bytes just read: come back for them, so that the owner, after
         * these bytes, gets the rest or FG_CONN_EOF (a reading owner in the next turn, one
         * that turns reading on later from fg_conn_read). */
        if (c->t.ops->pending(&c->t) > 0)
            event_active(c->rev, EV_READ, 1);
        c->cbs->on_read(c, c->arg);
        return;
    }
    if (n == FG_TRANSPORT_AGAIN) {
        /* a layer that yields with bytes buffered below it (TLS) raises no socket event */
        if (c->t.layer != NULL && c->t.ops->pending(&c->t) > 0)
            event_active(c->rev, EV_READ, 1);
        if (c->t.want == FG_TRANSPORT_WANT_WRITE && !c->read_wants_write) {
            c->read_wants_write = 1;
            if (!c->writing)
                want_write(c);
        }
        return;
    }
    if (n == -1 && errno == EINTR)
        return;
    event_del(c->rev);
    c->reading = 0;
    if (n == 0) {
        c->cbs->on_event(c, c->arg, FG_CONN_EOF);
    } else {
        c->err = errno;
        c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
    }
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    fg_conn_t *c = arg;
    (void)fd;
    fg_clock_busy();
    if (acquire(c) != 0) {
        event_del(c->wev);
        c->writing = 0;
        c->err = ENOMEM;
        c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
        return;
    }
    if (what & EV_TIMEOUT) {
        event_del(c->wev);
        c->writing = 0;
        if (c->handshaking && c->tls_client) {
            fg_conn_read(c, 0, 0);
            tls_client_failed(c, ETIMEDOUT);
            return;
        }
        c->connecting = 0;
        c->err = ETIMEDOUT;
        c->cbs->on_event(c, c->arg, FG_CONN_TIMEOUT_WRITE);
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
            c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
            return;
        }
        if (c->tls_client) {
            /* The client speaks first: the ClientHello goes out now. */
            c->handshaking = 1;
            c->write_timeout_ms = c->hs_timeout_ms;
            fg_conn_read(c, 1, c->hs_timeout_ms);
            handshake_step(c);
            return;
        }
        c->cbs->on_event(c, c->arg, FG_CONN_CONNECTED);
        return;
    }
    if (c->handshaking) {
        handshake_step(c);
        return;
    }
    if (c->read_wants_write) {
        c->read_wants_write = 0;
        if (fg_conn_pending(c) == 0) {
            event_del(c->wev);
            c->writing = 0;
        }
        if (c->reading) {
            do_read(c);
            return; /* c may be gone; a write still due comes with the next event */
        }
    }
    resume_write(c);
}

/* Write on writability: as much as the socket takes, down to the low watermark; on_drain
 * when it fell that far. Returns 0, or -1 after the owner was called (c may be gone). */
static int resume_write(fg_conn_t *c)
{
    int r;
    while ((r = write_step(c)) == 0) {
        if (fg_conn_pending(c) <= c->low_watermark)
            break;
    }
    if (r == -2) {
        if (!c->writing && !c->write_wants_read)
            want_write(c);
        return 0;
    }
    if (r == -1) {
        if (c->writing)
            event_del(c->wev);
        c->writing = 0;
        c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
        return -1;
    }
    if (fg_conn_pending(c) == 0 && c->writing) {
        event_del(c->wev);
        c->writing = 0;
    }
    if (c->cbs->on_drain)
        c->cbs->on_drain(c, c->arg);
    return -1;
}

/* ---- transports ---- */

int fg_conn_start_tls(fg_conn_t *c, SSL_CTX *ctx)
{
    fg_transport_t t;
    if (fg_transport_tls_server_init(&t, c->t.fd, ctx) != 0)
        return -ENOMEM;
    c->t.ops->close(&c->t);
    c->t = t;
    return 0;
}

void fg_conn_handshake(fg_conn_t *c, uint64_t timeout_ms, int data_ready)
{
    c->handshaking = 1;
    /* A server speaks second: the first step runs when the ClientHello arrives. Run from the
     * loop, not from here, so that the caller's accept completes before any outcome. */
    fg_conn_read(c, 1, timeout_ms);
    if (data_ready)
        event_active(c->rev, EV_READ, 1);
}

/* Advance the handshake and arm the event it waits for; tell the owner when it ends. */
static void handshake_step(fg_conn_t *c)
{
    int r = c->t.ops->handshake(&c->t);
    int e = errno; /* before event_del can change it */
    if (r == FG_TRANSPORT_AGAIN) {
        if (c->t.want == FG_TRANSPORT_WANT_WRITE) {
            if (!c->writing)
                want_write(c);
        } else if (c->writing) {
            event_del(c->wev);
            c->writing = 0;
        }
        return;
    }
    c->handshaking = 0;
    if (c->writing) {
        event_del(c->wev);
        c->writing = 0;
    }
    if (r == 0 && c->tls_client) {
        /* To the owner this is the end of the connect: it turns reading on when it wants. */
        fg_conn_read(c, 0, 0);
        c->tls_client = 0;
        c->cbs->on_event(c, c->arg, FG_CONN_CONNECTED);
        return;
    }
    if (r == 0) {
        c->cbs->on_event(c, c->arg, FG_CONN_HANDSHAKE_DONE);
        return;
    }
    fg_conn_read(c, 0, 0);
    if (c->tls_client) {
        tls_client_failed(c, e ? e : EPROTO);
        return;
    }
    if (r == FG_TRANSPORT_PLAINTEXT) {
        /* Nothing was consumed: the owner reads the plain request from a plain transport. */
        c->t.ops->close(&c->t);
        fg_transport_tcp_init(&c->t, c->t.fd);
        c->cbs->on_event(c, c->arg, FG_CONN_PLAINTEXT);
        return;
    }
    c->err = errno ? errno : EPROTO;
    c->cbs->on_event(c, c->arg, FG_CONN_ERROR);
}

void fg_conn_start_tls_client(fg_conn_t *c, SSL *ssl, uint64_t timeout_ms)
{
    c->t.ops->close(&c->t);
    fg_transport_tls_client_init(&c->t, c->t.fd, ssl);
    c->tls_client = 1;
    c->hs_timeout_ms = ms32(timeout_ms);
}

/* The client handshake ended without a session: keep why, tell the owner. */
static void tls_client_failed(fg_conn_t *c, int err)
{
    char why[320];
    c->handshaking = 0;
    c->tls_client = 0;
    c->err = err;
    if (err == ETIMEDOUT)
        snprintf(why, sizeof(why), "SSL handshake timed out");
    else
        fg_transport_tls_why(&c->t, err, why, sizeof(why));
    free(c->tls_why);
    c->tls_why = strdup(why); /* NULL reads as "" */
    c->cbs->on_event(c, c->arg, FG_CONN_TLS_FAILED);
}

const char *fg_conn_tls_error(const fg_conn_t *c)
{
    return c->tls_why ? c->tls_why : "";
}

void fg_conn_tls_why(const fg_conn_t *c, char *buf, size_t len)
{
    fg_transport_tls_why(&c->t, c->err, buf, len);
}

SSL *fg_conn_ssl(const fg_conn_t *c)
{
    return c->t.ssl;
}

fg_tls_alpn_t fg_conn_alpn(const fg_conn_t *c)
{
    return c->t.ssl ? fg_tls_alpn(c->t.ssl) : FG_TLS_ALPN_NONE;
}

int fg_conn_shutdown_write(fg_conn_t *c)
{
    return c->t.ops->shutdown_write(&c->t) == 0 ? 0 : -errno;
}

int fg_conn_local_addr(const fg_conn_t *c, struct sockaddr_storage *ss, socklen_t *len)
{
    *len = sizeof(*ss);
    return getsockname(c->t.fd, (struct sockaddr *)ss, len) == 0 ? 0 : -errno;
}

int fg_conn_local_addr_text(const fg_conn_t *c, char *ip, size_t iplen, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (fg_conn_local_addr(c, &ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        *port = ntohs(a->sin_port);
        return inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)iplen) ? 0 : -1;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        *port = ntohs(a->sin6_port);
        return inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)iplen) ? 0 : -1;
    }
    return -1;
}

int fg_conn_peer_addr(const fg_conn_t *c, struct sockaddr_storage *ss, socklen_t *len)
{
    *len = sizeof(*ss);
    return getpeername(c->t.fd, (struct sockaddr *)ss, len) == 0 ? 0 : -errno;
}

int fg_conn_can_splice(const fg_conn_t *c)
{
    return (c->t.ops->caps & FG_TRANSPORT_SPLICE) != 0;
}

ssize_t fg_conn_splice_in(fg_conn_t *c, int pipe_wr, size_t len)
{
    if (!fg_conn_can_splice(c))
        return -ENOTSUP;
    ssize_t n = splice(c->t.fd, NULL, pipe_wr, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    return n >= 0 ? n : -errno;
}

ssize_t fg_conn_splice_out(fg_conn_t *c, int pipe_rd, size_t len)
{
    if (!fg_conn_can_splice(c))
        return -ENOTSUP;
    ssize_t n = splice(pipe_rd, NULL, c->t.fd, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    return n >= 0 ? n : -errno;
}

ssize_t fg_conn_recv_raw(fg_conn_t *c, void *buf, size_t len)
{
    if (!fg_conn_can_splice(c))
        return -ENOTSUP;
    ssize_t n = recv(c->t.fd, buf, len, 0);
    return n >= 0 ? n : -errno;
}

ssize_t fg_conn_send_raw(fg_conn_t *c, const void *buf, size_t len)
{
    if (!fg_conn_can_splice(c))
        return -ENOTSUP;
    ssize_t n = send(c->t.fd, buf, len, MSG_NOSIGNAL);
    return n >= 0 ? n : -errno;
}

int fg_conn_input_waiting(const fg_conn_t *c)
{
    return c->t.ops->pending(&c->t) > 0;
}

size_t fg_conn_read_now(fg_conn_t *c)
{
    size_t total = 0;
    ssize_t n;
    while ((n = c->t.ops->recv(&c->t, c->in, 65536)) > 0)
        total += (size_t)n;
    return total;
}

/* ---- the WebSocket layer (worker/core/transport_ws.h) ---- */

int fg_conn_push_ws(fg_conn_t *c, int role, const fg_ws_cbs_t *cbs, void *arg)
{
    if (acquire(c) != 0)
        return -ENOMEM;
    int r = fg_transport_ws_push(&c->t, role, cbs, arg, c->in);
    if (r == 0) {
        c->no_sendfile = 1;
        /* frames already read raise no socket event */
        if (c->reading && c->t.ops->pending(&c->t) > 0)
            event_active(c->rev, EV_READ, 1);
    }
    return r;
}

/* Queue a control frame and have the write event send it (never from here: the caller may be
 * inside the layer's read). */
static int ws_control(fg_conn_t *c, int kind, uint16_t code, const void *p, size_t n)
{
    if (acquire(c) != 0)
        return -ENOMEM;
    int r = fg_transport_ws_control(&c->t, kind, code, p, n);
    if (r == 0 && !c->writing && !c->connecting)
        want_write(c);
    return r;
}

int fg_conn_ws_text(fg_conn_t *c, const char *msg, size_t len)
{
    return ws_control(c, FG_WS_CTL_TEXT, 0, msg, len);
}

int fg_conn_ws_ping(fg_conn_t *c, const void *payload, size_t len)
{
    return ws_control(c, FG_WS_CTL_PING, 0, payload, len);
}

int fg_conn_ws_close(fg_conn_t *c, uint16_t code, const char *reason)
{
    return ws_control(c, FG_WS_CTL_CLOSE, code, reason, reason ? strlen(reason) : 0);
}

uint16_t fg_conn_ws_peer_close(const fg_conn_t *c)
{
    return fg_transport_ws_peer_close(&c->t);
}

uint64_t fg_conn_ws_received(const fg_conn_t *c)
{
    return fg_transport_ws_received(&c->t);
}
