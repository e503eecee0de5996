/* The plain TCP transport: readv into reserved evbuffer space, writev from the chains. */
#include "worker/core/transport.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <event2/buffer.h>

/* Read up to max bytes straight into free space of in. evbuffer_read would first ask the
 * kernel how much is waiting (an ioctl per read); one readv into reserved space is enough. */
static ssize_t tcp_recv(fg_transport_t *t, struct evbuffer *in, size_t max)
{
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)max, v, 2);
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
    ssize_t n = readv(t->fd, iov, nv);
    if (n <= 0) {
        evbuffer_commit_space(in, v, 0);
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->want = FG_TRANSPORT_WANT_READ;
            return FG_TRANSPORT_AGAIN;
        }
        return n;
    }
    size_t left = (size_t)n;
    int used = 0;
    for (int i = 0; i < nv && left > 0; i++, used++) {
        if (v[i].iov_len > left)
            v[i].iov_len = left;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(in, v, used);
    return n;
}

static ssize_t tcp_send_chain(fg_transport_t *t, struct evbuffer *out)
{
    int n = evbuffer_write(out, t->fd);
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        t->want = FG_TRANSPORT_WANT_WRITE;
        return FG_TRANSPORT_AGAIN;
    }
    return n;
}

static int tcp_shutdown_write(fg_transport_t *t)
{
    return shutdown(t->fd, SHUT_WR);
}

static int tcp_handshake(fg_transport_t *t)
{
    (void)t;
    return 0;
}

static size_t tcp_pending(const fg_transport_t *t)
{
    (void)t;
    return 0;
}

static void tcp_close(fg_transport_t *t)
{
    (void)t;
}

static const fg_transport_ops_t tcp_ops = {
    .name = "tcp",
    .caps = FG_TRANSPORT_SENDFILE | FG_TRANSPORT_SPLICE,
    .recv = tcp_recv,
    .send_chain = tcp_send_chain,
    .shutdown_write = tcp_shutdown_write,
    .handshake = tcp_handshake,
    .pending = tcp_pending,
    .close = tcp_close,
};

void fg_transport_tcp_init(fg_transport_t *t, int fd)
{
    *t = (fg_transport_t){.ops = &tcp_ops, .fd = fd};
}
