/* Unit tests for worker/core/transport_tcp.c and transport_tls.c over a socketpair with small
 * socket buffers: a TLS handshake reported as want-read steps, a large write that the kernel
 * takes in parts (partial writes, repeated from the evbuffer as OpenSSL requires) arriving
 * intact, a KeyUpdate to answer while the send direction is full (the read reports want-write
 * or hands the data over and the answer follows with the next write; OpenSSL 3 does the
 * latter), plain HTTP detected instead of a ClientHello, the capabilities, an fg_conn on a
 * real loop that reads, in pieces smaller than a record, bytes OpenSSL holds decrypted, and a
 * close_notify that arrives in the same read as data (peer's TCP still open): reported as the
 * end after the data, by the transport and by the conn to its owner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "tests/unit/tls_fixture.h"
#include "worker/core/conn.h"
#include "worker/core/transport.h"

#define BIG (1024 * 1024 + 777)

typedef struct {
    SSL_CTX *sctx, *cctx;
    int fds[2];
    fg_transport_t server, client;
} pair_t;

static void small_buffers(int fd)
{
    int sz = 4096;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

static void pair_open(pair_t *p)
{
    fx_leaf("srv", "srv.test", "DNS:srv.test", -60, 86400);
    p->sctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate_chain_file(p->sctx, fx_path("srv.crt")), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(p->sctx, fx_path("srv.key"), SSL_FILETYPE_PEM), 1);
    SSL_CTX_set_min_proto_version(p->sctx, TLS1_3_VERSION);
    p->cctx = SSL_CTX_new(TLS_client_method());
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fds), 0);
    small_buffers(p->fds[0]);
    small_buffers(p->fds[1]);
    assert_int_equal(fg_transport_tls_server_init(&p->server, p->fds[0], p->sctx), 0);
    fg_transport_tls_client_init(&p->client, p->fds[1], SSL_new(p->cctx));
}

static void pair_close(pair_t *p)
{
    p->server.ops->close(&p->server);
    p->client.ops->close(&p->client);
    close(p->fds[0]);
    close(p->fds[1]);
    SSL_CTX_free(p->sctx);
    SSL_CTX_free(p->cctx);
}

static void pair_handshake(pair_t *p)
{
    int s = FG_TRANSPORT_AGAIN, c = FG_TRANSPORT_AGAIN, rounds = 0;
    while ((s != 0 || c != 0) && rounds++ < 50) {
        if (c != 0)
            c = p->client.ops->handshake(&p->client);
        if (s != 0)
            s = p->server.ops->handshake(&p->server);
        if (s == FG_TRANSPORT_AGAIN)
            assert_int_equal(p->server.want, FG_TRANSPORT_WANT_READ);
    }
    assert_int_equal(s, 0);
    assert_int_equal(c, 0);
}

static void test_handshake_and_capabilities(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    /* Nothing sent yet: the server waits to read. */
    assert_int_equal(p.server.ops->handshake(&p.server), FG_TRANSPORT_AGAIN);
    assert_int_equal(p.server.want, FG_TRANSPORT_WANT_READ);
    pair_handshake(&p);
    assert_int_equal(p.server.ops->caps & (FG_TRANSPORT_SENDFILE | FG_TRANSPORT_SPLICE), 0);
    fg_transport_t tcp;
    fg_transport_tcp_init(&tcp, -1);
    assert_int_equal(tcp.ops->caps, FG_TRANSPORT_SENDFILE | FG_TRANSPORT_SPLICE);
    pair_close(&p);
}

static int tickets_got;

static int count_ticket(SSL *ssl, SSL_SESSION *sess)
{
    tickets_got++;
    return 0;
}

/* A TLS 1.3 server's tickets (RFC 8446 4.6.1) wait for its first write and leave with it, in
 * one writev, instead of a write(2) each: nothing is on the wire when the handshake ends, and
 * the client gets both tickets and the data from the first write. */
static void test_tickets_leave_with_the_first_write(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    SSL_CTX_set_session_cache_mode(p.cctx, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_sess_set_new_cb(p.cctx, count_ticket);
    pair_handshake(&p);
    char b;
    errno = 0;
    assert_int_equal(recv(p.fds[1], &b, 1, MSG_PEEK | MSG_DONTWAIT), -1);
    assert_int_equal(errno, EAGAIN);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    evbuffer_add(out, "hello", 5);
    assert_int_equal(p.server.ops->send_chain(&p.server, out), 5);
    tickets_got = 0;
    while (p.client.ops->recv(&p.client, in, 65536) > 0)
        ;
    assert_int_equal(evbuffer_get_length(in), 5);
    assert_memory_equal(evbuffer_pullup(in, -1), "hello", 5);
    assert_int_equal(tickets_got, 2); /* OpenSSL's default count */
    evbuffer_free(out);
    evbuffer_free(in);
    pair_close(&p);
}

/* The server writes BIG bytes held in many evbuffer chains; the socket takes a few KiB at a
 * time, so writes block and are repeated (partial) while the client reads in between. */
static void test_partial_writes_arrive_intact(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    pair_handshake(&p);
    unsigned char *data = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        data[i] = (unsigned char)(i * 7 + i / 251);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    for (size_t off = 0; off < BIG; off += 5000)
        evbuffer_add(out, data + off, BIG - off < 5000 ? BIG - off : 5000);
    int blocked = 0, partial = 0, rounds = 0;
    while ((evbuffer_get_length(out) > 0 || p.server.ops->unsent(&p.server) > 0) &&
           rounds++ < 100000) {
        ssize_t n = p.server.ops->send_chain(&p.server, out);
        if (n == FG_TRANSPORT_AGAIN) {
            assert_int_equal(p.server.want, FG_TRANSPORT_WANT_WRITE);
            blocked++;
        } else {
            assert_true(n > 0);
            partial += evbuffer_get_length(out) > 0;
        }
        if (rounds % 2 == 0)
            continue; /* every other round, the writer finds the socket still full */
        ssize_t r;
        while ((r = p.client.ops->recv(&p.client, in, 65536)) > 0)
            ;
        assert_int_equal(r, FG_TRANSPORT_AGAIN);
    }
    assert_int_equal(evbuffer_get_length(out), 0);
    while (evbuffer_get_length(in) < BIG && rounds++ < 100000)
        if (p.client.ops->recv(&p.client, in, 65536) == FG_TRANSPORT_AGAIN)
            break;
    assert_true(partial > 10); /* the kernel took the data in many parts */
    assert_true(blocked > 10); /* and repeated from the evbuffer after blocking */
    assert_int_equal(evbuffer_get_length(in), BIG);
    assert_memory_equal(evbuffer_pullup(in, -1), data, BIG);
    /* close_notify: the client reads the orderly end. */
    assert_int_equal(p.server.ops->shutdown_write(&p.server), 0);
    assert_int_equal(p.client.ops->recv(&p.client, in, 65536), 0);
    evbuffer_free(out);
    evbuffer_free(in);
    free(data);
    pair_close(&p);
}

#define GATHERED (256 * 1024)

/* Move what sits in from (packets or a stream) to buf at *len; the count of reads. */
static int take_all(int from, unsigned char *buf, size_t cap, size_t *len)
{
    int reads = 0;
    ssize_t n;
    while (*len < cap && (n = recv(from, buf + *len, cap - *len, MSG_DONTWAIT)) > 0) {
        *len += (size_t)n;
        reads++;
    }
    return reads;
}

/* A bulk write of many records leaves in few write(2)s: after the handshake the server's
 * socket is swapped (dup2) for a SOCK_SEQPACKET one, where every write(2) is one packet, so
 * the packets count the writes. 256 KiB are 16 records of 16 KiB; gathered, they leave in
 * writes of about 64 KiB. Records a full socket left behind are held (unsent) and sent by
 * the next call, out empty or not. The client then decrypts the packets' bytes intact. */
static void test_records_are_gathered_into_few_writes(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    pair_handshake(&p);
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sp), 0);
    assert_int_equal(dup2(sp[0], p.fds[0]), p.fds[0]);
    close(sp[0]);
    unsigned char *data = malloc(GATHERED), *wire = malloc(2 * GATHERED);
    for (size_t i = 0; i < GATHERED; i++)
        data[i] = (unsigned char)(i * 13 + i / 253);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    for (size_t off = 0; off < GATHERED; off += 16384)
        evbuffer_add(out, data + off, 16384);
    size_t wlen = 0;
    int packets = 0, rounds = 0;
    while ((evbuffer_get_length(out) > 0 || p.server.ops->unsent(&p.server) > 0) &&
           rounds++ < 1000) {
        ssize_t n = p.server.ops->send_chain(&p.server, out);
        assert_true(n > 0 || n == FG_TRANSPORT_AGAIN);
        packets += take_all(sp[1], wire, 2 * GATHERED, &wlen);
    }
    packets += take_all(sp[1], wire, 2 * GATHERED, &wlen);
    assert_int_equal(evbuffer_get_length(out), 0);
    assert_int_equal(p.server.ops->unsent(&p.server), 0);
    assert_true(wlen > GATHERED);
    assert_true(packets >= 4);
    assert_true(packets <= 6); /* not one per record (16) */
    /* The client reads the bytes from a stream of its own. */
    int cs[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, cs), 0);
    assert_int_equal(dup2(cs[0], p.fds[1]), p.fds[1]);
    close(cs[0]);
    size_t fed = 0;
    rounds = 0;
    while (evbuffer_get_length(in) < GATHERED && rounds++ < 10000) {
        ssize_t w = write(cs[1], wire + fed, wlen - fed);
        if (w > 0)
            fed += (size_t)w;
        ssize_t r = p.client.ops->recv(&p.client, in, 65536);
        assert_true(r > 0 || r == FG_TRANSPORT_AGAIN);
    }
    assert_int_equal(evbuffer_get_length(in), GATHERED);
    assert_memory_equal(evbuffer_pullup(in, -1), data, GATHERED);
    evbuffer_free(out);
    evbuffer_free(in);
    free(data);
    free(wire);
    pair_close(&p); /* close_notify both ways: the peers are still open */
    close(sp[1]);
    close(cs[1]);
}

/* A read that must write: the client asks for a KeyUpdate (RFC 8446 4.6.3) while the server's
 * send direction is full. The stream must stay sound in both directions afterwards. */
static void test_key_update_while_send_is_full(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    pair_handshake(&p);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    static char blob[65536];
    memset(blob, 'z', sizeof(blob));
    evbuffer_add(out, blob, sizeof(blob));
    /* Fill the server -> client direction. */
    while (p.server.ops->send_chain(&p.server, out) != FG_TRANSPORT_AGAIN)
        ;
    assert_int_equal(SSL_key_update(p.client.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    struct evbuffer *cout = evbuffer_new();
    evbuffer_add(cout, "ping", 4);
    assert_int_equal(p.client.ops->send_chain(&p.client, cout), 4);
    ssize_t r = p.server.ops->recv(&p.server, in, 65536);
    if (r == FG_TRANSPORT_AGAIN) {
        assert_int_equal(p.server.want, FG_TRANSPORT_WANT_WRITE);
    } else {
        /* OpenSSL may queue the answer and hand over the data first: then the next write
         * carries the KeyUpdate. Either way the data arrives and the stream stays sound. */
        assert_int_equal(r, 4);
    }
    /* The client drains; the server can write (and so answer) again, and read. */
    struct evbuffer *cin = evbuffer_new();
    int rounds = 0;
    while (evbuffer_get_length(in) < 4 && rounds++ < 10000) {
        p.client.ops->recv(&p.client, cin, 65536);
        p.server.ops->send_chain(&p.server, out);
        p.server.ops->recv(&p.server, in, 65536);
    }
    assert_int_equal(evbuffer_get_length(in), 4);
    assert_memory_equal(evbuffer_pullup(in, -1), "ping", 4);
    evbuffer_free(out);
    evbuffer_free(in);
    evbuffer_free(cout);
    evbuffer_free(cin);
    pair_close(&p);
}

static void test_plain_http_instead_of_client_hello(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    assert_int_equal(write(p.fds[1], "GET / HTTP/1.1\r\n", 16), 16);
    assert_int_equal(p.server.ops->handshake(&p.server), FG_TRANSPORT_PLAINTEXT);
    /* Nothing was consumed: the request is there for a plain transport. */
    char buf[32];
    assert_int_equal(recv(p.fds[0], buf, sizeof(buf), MSG_PEEK), 16);
    pair_close(&p);
}

/* The peer's data and its close_notify arrive in one read(2) while its TCP stays open: recv
 * hands over the data, and pending() says the end is still to be reported, as no socket
 * event will announce it (the socket holds nothing more). */
static void test_close_notify_with_data_is_pending(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    pair_handshake(&p);
    struct evbuffer *in = evbuffer_new();
    /* Server-side records the client has not read yet (TLS 1.3 tickets) are taken first. */
    assert_int_equal(p.client.ops->recv(&p.client, in, 65536), FG_TRANSPORT_AGAIN);
    size_t n = 0;
    assert_int_equal(SSL_write_ex(p.client.ssl, "hello", 5, &n), 1);
    assert_int_equal(SSL_shutdown(p.client.ssl), 0); /* close_notify sent, TCP stays open */
    assert_int_equal(p.server.ops->pending(&p.server), 0);
    assert_int_equal(p.server.ops->recv(&p.server, in, 65536), 5);
    assert_memory_equal(evbuffer_pullup(in, -1), "hello", 5);
    struct pollfd pfd = {.fd = p.fds[0], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 0); /* no socket event will come */
    assert_true(p.server.ops->pending(&p.server) > 0);
    assert_int_equal(p.server.ops->recv(&p.server, in, 65536), 0);
    assert_true(p.server.ops->pending(&p.server) > 0); /* the end stays reported */
    assert_int_equal(p.server.ops->recv(&p.server, in, 65536), 0);
    evbuffer_free(in);
    pair_close(&p);
}

/* ---- fg_conn over TLS on a real loop ---- */

#define STREAM (200 * 1000)

typedef struct {
    SSL_CTX *cctx;
    int fd;
} client_arg_t;

/* A blocking client: handshake, STREAM bytes in one write (many records), then silence
 * until the server closes. */
static void *client_main(void *argp)
{
    client_arg_t *a = argp;
    SSL *ssl = SSL_new(a->cctx);
    SSL_set_fd(ssl, a->fd);
    if (SSL_connect(ssl) == 1) {
        char *buf = malloc(STREAM);
        for (size_t i = 0; i < STREAM; i++)
            buf[i] = (char)('a' + i % 26);
        SSL_write(ssl, buf, STREAM);
        free(buf);
        char c;
        SSL_read(ssl, &c, 1);
    }
    SSL_free(ssl);
    return NULL;
}

typedef struct {
    struct event_base *base;
    size_t got;
    int done, failed;
} server_seen_t;

static void srv_read(fg_conn_t *c, void *arg)
{
    server_seen_t *s = arg;
    struct evbuffer *in = fg_conn_input(c);
    s->got += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (s->got >= STREAM)
        event_base_loopbreak(s->base);
}

static void srv_drain(fg_conn_t *c, void *arg)
{
    (void)c;
    (void)arg;
}

static void srv_event(fg_conn_t *c, void *arg, int what)
{
    server_seen_t *s = arg;
    if (what == FG_CONN_HANDSHAKE_DONE) {
        s->done = 1;
        return;
    }
    s->failed = what;
    event_base_loopbreak(s->base);
}

/* Reads smaller than a record leave decrypted bytes inside OpenSSL, where no socket event
 * announces them: the conn must come back for them by itself, or the stream stalls. */
static void test_conn_reads_bytes_buffered_in_tls(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    p.server.ops->close(&p.server);
    p.client.ops->close(&p.client);
    int cfd = p.fds[1];
    fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) & ~O_NONBLOCK);
    server_seen_t seen = {0};
    seen.base = event_base_new();
    fg_conn_cbs_t cbs = {srv_read, srv_drain, srv_event};
    fg_conn_t *c = fg_conn_new(seen.base, p.fds[0], &cbs, &seen);
    assert_non_null(c);
    assert_int_equal(fg_conn_start_tls(c, p.sctx), 0);
    assert_int_equal(fg_conn_can_splice(c), 0);
    fg_conn_set_read_max(c, 1000);
    fg_conn_handshake(c, 5000, 0);
    client_arg_t ca = {p.cctx, cfd};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, &ca), 0);
    struct timeval limit = {10, 0};
    event_base_loopexit(seen.base, &limit);
    event_base_dispatch(seen.base);
    assert_int_equal(seen.failed, 0);
    assert_true(seen.done);
    assert_int_equal(seen.got, STREAM);
    assert_non_null(fg_conn_ssl(c));
    fg_conn_free(c); /* close_notify: the client's last read returns */
    pthread_join(th, NULL);
    close(cfd);
    event_base_free(seen.base);
    SSL_CTX_free(p.sctx);
    SSL_CTX_free(p.cctx);
}

/* A client that, once the handshake is done, sends "hello" and its close_notify in one
 * write(2) and keeps TCP open until the server closes. */
static void *eof_client_main(void *argp)
{
    client_arg_t *a = argp;
    SSL *ssl = SSL_new(a->cctx);
    SSL_set_fd(ssl, a->fd);
    if (SSL_connect(ssl) == 1) {
        BIO *mem = BIO_new(BIO_s_mem());
        SSL_set0_wbio(ssl, mem); /* the records wait here, then leave together */
        size_t n = 0;
        SSL_write_ex(ssl, "hello", 5, &n);
        SSL_shutdown(ssl);
        char *bytes = NULL;
        long len = BIO_get_mem_data(mem, &bytes);
        if (len > 0 && write(a->fd, bytes, (size_t)len) != len)
            perror("write");
        char c;
        while (recv(a->fd, &c, 1, 0) > 0) /* until the server closes */
            ;
    }
    SSL_free(ssl);
    return NULL;
}

typedef struct {
    struct event_base *base;
    struct event *resume; /* NULL: reading stays on */
    size_t got;
    int eof, other;
} eof_seen_t;

static void eof_read(fg_conn_t *c, void *arg)
{
    eof_seen_t *s = arg;
    struct evbuffer *in = fg_conn_input(c);
    s->got += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (s->resume != NULL) {
        /* The owner stops reading for a while (busy elsewhere), then takes up again. */
        fg_conn_read(c, 0, 0);
        struct timeval tv = {0, 50 * 1000};
        evtimer_add(s->resume, &tv);
    }
}

static void eof_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fg_conn_read(arg, 1, 5000);
}

static void eof_event(fg_conn_t *c, void *arg, int what)
{
    eof_seen_t *s = arg;
    if (what == FG_CONN_HANDSHAKE_DONE) {
        /* As a front end does: the records read with the client's Finished are taken now. */
        fg_conn_read(c, 1, 5000);
        return;
    }
    if (what == FG_CONN_EOF)
        s->eof = 1;
    else
        s->other = what;
    event_base_loopbreak(s->base);
}

/* The conn hands the data over, then FG_CONN_EOF without waiting for the socket: the client
 * only closes after the server did, so without that EOF the loop would run until its limit. */
static void conn_eof_case(int pause_reading)
{
    pair_t p;
    pair_open(&p);
    p.server.ops->close(&p.server);
    p.client.ops->close(&p.client);
    int cfd = p.fds[1];
    fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) & ~O_NONBLOCK);
    eof_seen_t seen = {0};
    seen.base = event_base_new();
    fg_conn_cbs_t cbs = {eof_read, srv_drain, eof_event};
    fg_conn_t *c = fg_conn_new(seen.base, p.fds[0], &cbs, &seen);
    assert_non_null(c);
    if (pause_reading)
        seen.resume = evtimer_new(seen.base, eof_resume, c);
    assert_int_equal(fg_conn_start_tls(c, p.sctx), 0);
    fg_conn_handshake(c, 5000, 0);
    client_arg_t ca = {p.cctx, cfd};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, eof_client_main, &ca), 0);
    struct timeval limit = {5, 0};
    event_base_loopexit(seen.base, &limit);
    event_base_dispatch(seen.base);
    fg_conn_free(c); /* the client's wait ends */
    pthread_join(th, NULL);
    assert_int_equal(seen.other, 0);
    assert_int_equal(seen.got, 5);
    assert_true(seen.eof);
    if (seen.resume)
        event_free(seen.resume);
    close(cfd);
    event_base_free(seen.base);
    SSL_CTX_free(p.sctx);
    SSL_CTX_free(p.cctx);
}

static void test_conn_eof_after_data_with_close_notify(void **state)
{
    (void)state;
    conn_eof_case(0);
}

/* Reading was off when the close_notify was taken in: turning it on reports the end. */
static void test_conn_eof_when_reading_resumes(void **state)
{
    (void)state;
    conn_eof_case(1);
}

int main(void)
{
    (void)fx_handshake; /* the fixture's BIO-pair helpers are not needed here */
    (void)fx_session;
    fx_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_capabilities),
        cmocka_unit_test(test_tickets_leave_with_the_first_write),
        cmocka_unit_test(test_partial_writes_arrive_intact),
        cmocka_unit_test(test_records_are_gathered_into_few_writes),
        cmocka_unit_test(test_key_update_while_send_is_full),
        cmocka_unit_test(test_plain_http_instead_of_client_hello),
        cmocka_unit_test(test_conn_reads_bytes_buffered_in_tls),
        cmocka_unit_test(test_close_notify_with_data_is_pending),
        cmocka_unit_test(test_conn_eof_after_data_with_close_notify),
        cmocka_unit_test(test_conn_eof_when_reading_resumes),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    fx_teardown();
    return r;
}
