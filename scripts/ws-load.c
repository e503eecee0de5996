/* WebSocket echo load for scripts/ws-bench.py: a load client and an echo destination in C, so
 * that neither caps what a proxy between them can show.
 *
 *   ws-load echo PORT
 *       Answers any request with a 101 and echoes every byte after it (frames are not
 *       parsed: the client's masked frames come back as sent). One process, epoll.
 *   ws-load client PORT CONNS DEPTH SIZE SECONDS
 *       Opens CONNS WebSockets (one handshake each), keeps DEPTH masked binary frames of SIZE
 *       payload bytes in flight on each, and for SECONDS counts echoed messages and their
 *       round trips. Prints one line: "msgs_per_s p50_ms p99_ms cpu_s" (cpu_s: this process's
 *       user+sys time during the run).
 *
 * Built by ws-bench.py with the system compiler (cc -O2); not part of the gateway. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF (64 * 1024)
#define HIST_US (1 << 20) /* round trips histogram: 1 us buckets up to ~1 s, then one more */

static const char SWITCH[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
static const char HANDSHAKE[] = "GET /echo HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n";

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- echo ---- */

typedef struct {
    int fd;
    int up; /* past the request head */
    size_t hlen, out_off, out_len;
    char head[4096];
    char out[RBUF]; /* bytes read, not yet written back */
} echo_t;

static void echo_close(int ep, echo_t *e)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, e->fd, NULL);
    close(e->fd);
    free(e);
}

/* Write back what is pending; 0 when all went, 1 when the socket is full, -1 on error. */
static int echo_flush(echo_t *e)
{
    while (e->out_off < e->out_len) {
        ssize_t n = write(e->fd, e->out + e->out_off, e->out_len - e->out_off);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        e->out_off += (size_t)n;
    }
    e->out_off = e->out_len = 0;
    return 0;
}

static void echo_io(int ep, echo_t *e)
{
    int full = echo_flush(e);
    if (full < 0)
        goto gone;
    while (full == 0) {
        if (!e->up) {
            ssize_t n = read(e->fd, e->head + e->hlen, sizeof(e->head) - 1 - e->hlen);
            if (n == 0 || (n < 0 && errno != EAGAIN))
                goto gone;
            if (n < 0)
                break;
            e->hlen += (size_t)n;
            e->head[e->hlen] = 0;
            char *end = strstr(e->head, "\r\n\r\n");
            if (end == NULL) {
                if (e->hlen == sizeof(e->head) - 1)
                    goto gone;
                continue;
            }
            e->up = 1;
            size_t rest = e->hlen - (size_t)(end + 4 - e->head);
            memcpy(e->out, SWITCH, sizeof(SWITCH) - 1);
            memcpy(e->out + sizeof(SWITCH) - 1, end + 4, rest);
            e->out_len = sizeof(SWITCH) - 1 + rest;
        } else {
            ssize_t n = read(e->fd, e->out, sizeof(e->out));
            if (n == 0 || (n < 0 && errno != EAGAIN))
                goto gone;
            if (n < 0)
                break;
            e->out_len = (size_t)n;
        }
        full = echo_flush(e);
        if (full < 0)
            goto gone;
    }
    struct epoll_event ev = {.events = full ? EPOLLOUT : EPOLLIN, .data.ptr = e};
    epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev);
    return;
gone:
    echo_close(ep, e);
}

static int run_echo(int port)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) == -1 || listen(ls, 4096) == -1)
        die("echo: bind/listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr != NULL) {
                echo_io(ep, evs[i].data.ptr);
                continue;
            }
            int fd;
            while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                echo_t *e = calloc(1, sizeof(*e));
                if (e == NULL)
                    die("echo: calloc");
                e->fd = fd;
                set_nodelay(fd);
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = e};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
            }
        }
    }
    return 0;
}

/* ---- client ---- */

typedef struct {
    int fd;
    size_t rpos;     /* bytes of the message being received */
    size_t owed;     /* bytes to send not yet written */
    uint64_t sent_b; /* bytes written in total: the offset into the repeated stream */
    unsigned head;   /* oldest entry of sent_at */
    int out_armed;   /* EPOLLOUT asked for */
    uint64_t *sent_at;
} conn_t;

static struct {
    size_t msglen, depth;
    char *stream; /* depth + 1 messages back to back */
    uint32_t *hist;
    uint64_t done, stop_at;
} cl;

static int conn_write(conn_t *c)
{
    while (c->owed > 0) {
        size_t off = c->sent_b % cl.msglen;
        size_t len = cl.depth * cl.msglen;
        if (len > c->owed)
            len = c->owed;
        ssize_t n = write(c->fd, cl.stream + off, len);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        c->owed -= (size_t)n;
        c->sent_b += (uint64_t)n;
    }
    return 0;
}

static int conn_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1)
        die("client: connect");
    set_nodelay(fd);
    if (write(fd, HANDSHAKE, sizeof(HANDSHAKE) - 1) != (ssize_t)sizeof(HANDSHAKE) - 1)
        die("client: handshake");
    char head[4096];
    size_t hlen = 0;
    /* one byte at a time: nothing after the head may be taken from the socket */
    while (hlen < 4 || memcmp(head + hlen - 4, "\r\n\r\n", 4) != 0) {
        if (hlen == sizeof(head) || read(fd, head + hlen, 1) != 1)
            die("client: handshake answer");
        hlen++;
    }
    if (memcmp(head, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "client: handshake refused: %.40s\n", head);
        exit(1);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1)
        die("client: nonblock");
    return fd;
}

static int conn_read(conn_t *c, char *buf)
{
    for (;;) {
        ssize_t n = read(c->fd, buf, RBUF);
        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        size_t total = c->rpos + (size_t)n, k = total / cl.msglen;
        c->rpos = total % cl.msglen;
        uint64_t t = now_us();
        for (size_t i = 0; i < k; i++) {
            uint64_t rtt = t - c->sent_at[c->head];
            cl.hist[rtt < HIST_US ? rtt : HIST_US]++;
            cl.done++;
            c->sent_at[c->head] = t;
            c->head = (c->head + 1) % cl.depth;
        }
        if (t < cl.stop_at) {
            c->owed += k * cl.msglen;
            if (conn_write(c) < 0)
                return -1;
        }
        if ((size_t)n < RBUF)
            return 0;
    }
}

static double percentile(double q)
{
    uint64_t want = (uint64_t)(q * (double)cl.done), seen = 0;
    for (size_t i = 0; i <= HIST_US; i++) {
        seen += cl.hist[i];
        if (seen > want)
            return (double)i / 1000.0;
    }
    return (double)HIST_US / 1000.0;
}

static int run_client(int port, int conns, size_t depth, size_t size, double seconds)
{
    size_t hdr = size < 126 ? 2 : size < 65536 ? 4 : 10;
    cl.msglen = hdr + 4 + size;
    cl.depth = depth;
    cl.stream = malloc((depth + 1) * cl.msglen);
    cl.hist = calloc(HIST_US + 1, sizeof(uint32_t));
    conn_t *cs = calloc((size_t)conns, sizeof(*cs));
    char *buf = malloc(RBUF);
    if (cl.stream == NULL || cl.hist == NULL || cs == NULL || buf == NULL)
        die("client: malloc");
    for (size_t m = 0; m <= depth; m++) {
        /* RFC 6455 5.2: FIN + binary, masked with a zero key so the payload goes as is */
        unsigned char *f = (unsigned char *)cl.stream + m * cl.msglen;
        f[0] = 0x82;
        if (size < 126) {
            f[1] = 0x80 | (unsigned char)size;
        } else if (size < 65536) {
            f[1] = 0x80 | 126;
            f[2] = (unsigned char)(size >> 8);
            f[3] = (unsigned char)size;
        } else {
            f[1] = 0x80 | 127;
            for (int b = 0; b < 8; b++)
                f[2 + b] = (unsigned char)((uint64_t)size >> (56 - 8 * b));
        }
        memset(f + hdr, 0, 4);
        memset(f + hdr + 4, 'x', size);
    }
    int ep = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        cs[i].fd = conn_open(port);
        cs[i].sent_at = calloc(depth, sizeof(uint64_t));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    double cpu0 = cpu_s();
    uint64_t start = now_us();
    cl.stop_at = start + (uint64_t)(seconds * 1e6);
    for (int i = 0; i < conns; i++) {
        for (size_t d = 0; d < depth; d++)
            cs[i].sent_at[d] = start;
        cs[i].owed = depth * cl.msglen;
        if (conn_write(&cs[i]) < 0)
            die("client: write");
    }
    struct epoll_event evs[256];
    uint64_t t = start;
    while (t < cl.stop_at) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT && conn_write(c) < 0)
                die("client: write");
            if (conn_read(c, buf) < 0) {
                fprintf(stderr, "client: a WebSocket closed during the run\n");
                exit(1);
            }
            if (c->out_armed != (c->owed > 0)) {
                c->out_armed = c->owed > 0;
                struct epoll_event ev = {.events = EPOLLIN | (c->out_armed ? EPOLLOUT : 0),
                                         .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
        t = now_us();
    }
    double elapsed = (double)(t - start) / 1e6, cpu = cpu_s() - cpu0;
    printf("%.0f %.3f %.3f %.3f\n", (double)cl.done / elapsed, percentile(0.5), percentile(0.99),
           cpu);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a peer that went away is an error return, not the end */
    if (argc == 3 && strcmp(argv[1], "echo") == 0)
        return run_echo(atoi(argv[2]));
    if (argc == 7 && strcmp(argv[1], "client") == 0)
        return run_client(atoi(argv[2]), atoi(argv[3]), (size_t)atoi(argv[4]),
                          (size_t)atoi(argv[5]), atof(argv[6]));
    fprintf(stderr, "usage: ws-load echo PORT | ws-load client PORT CONNS DEPTH SIZE SECONDS\n");
    return 2;
}
