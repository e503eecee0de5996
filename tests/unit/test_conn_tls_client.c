/* Unit tests for the client side of fg_conn's TLS (fg_conn_start_tls_client): an outgoing
 * connect to a loopback server thread, then the handshake on the loop. FG_CONN_CONNECTED comes
 * only after a verified handshake; a certificate the client cannot verify is
 * FG_CONN_TLS_FAILED with OpenSSL's verification reason; a server that never answers the
 * ClientHello is FG_CONN_TLS_FAILED with ETIMEDOUT after the handshake timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "tests/unit/tls_fixture.h"
#include "worker/core/conn.h"

typedef enum { SRV_HANDSHAKE, SRV_SILENT } srv_mode_t;

typedef struct {
    int ls;
    SSL_CTX *ctx;
    srv_mode_t mode;
} server_t;

/* Accept one connection; answer the handshake (then wait for the client to close) or stay
 * silent until the client gives up. */
static void *server_main(void *argp)
{
    server_t *s = argp;
    int fd = accept(s->ls, NULL, NULL);
    if (fd < 0)
        return NULL;
    if (s->mode == SRV_HANDSHAKE) {
        SSL *ssl = SSL_new(s->ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            char c;
            SSL_read(ssl, &c, 1);
        }
        SSL_free(ssl);
    } else {
        char c;
        while (recv(fd, &c, 1, 0) > 0)
            ;
    }
    close(fd);
    return NULL;
}

typedef struct {
    struct event_base *base;
    int what;
    int err;
    char why[256];
} seen_t;

static void on_read(fg_conn_t *c, void *arg) {}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    seen_t *s = arg;
    s->what = what;
    s->err = fg_conn_errno(c);
    snprintf(s->why, sizeof(s->why), "%s", fg_conn_tls_error(c));
    event_base_loopbreak(s->base);
}

/* Connect to a fresh server in mode with a client SSL from cctx verifying "srv.test"; the
 * first event the owner sees is left in seen. */
static void run(SSL_CTX *cctx, srv_mode_t mode, uint64_t hs_ms, seen_t *seen)
{
    fx_leaf("srv", "srv.test", "DNS:srv.test", -60, 86400);
    server_t s = {socket(AF_INET, SOCK_STREAM, 0), SSL_CTX_new(TLS_server_method()), mode};
    assert_int_equal(SSL_CTX_use_certificate_chain_file(s.ctx, fx_path("srv.crt")), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(s.ctx, fx_path("srv.key"), SSL_FILETYPE_PEM), 1);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(s.ls, (struct sockaddr *)&sa, len), 0);
    assert_int_equal(listen(s.ls, 4), 0);
    assert_int_equal(getsockname(s.ls, (struct sockaddr *)&sa, &len), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, server_main, &s), 0);

    memset(seen, 0, sizeof(*seen));
    seen->base = event_base_new();
    fg_conn_cbs_t cbs = {on_read, NULL, on_event};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    fg_conn_t *c = fg_conn_new(seen->base, fd, &cbs, seen);
    assert_non_null(c);
    assert_int_equal(fg_conn_connect(c, (struct sockaddr *)&sa, len, 2000), 0);
    SSL *ssl = SSL_new(cctx);
    SSL_set_tlsext_host_name(ssl, "srv.test");
    SSL_set1_host(ssl, "srv.test");
    fg_conn_start_tls_client(c, ssl, hs_ms);
    assert_int_equal(fg_conn_can_splice(c), 0);
    struct timeval limit = {10, 0};
    event_base_loopexit(seen->base, &limit);
    event_base_dispatch(seen->base);
    if (seen->what == FG_CONN_CONNECTED)
        assert_int_equal(SSL_is_init_finished(fg_conn_ssl(c)), 1);
    fg_conn_free(c); /* close_notify or FIN: the server thread ends */
    pthread_join(th, NULL);
    close(s.ls);
    SSL_CTX_free(s.ctx);
    event_base_free(seen->base);
}

static SSL_CTX *client_ctx(int with_ca)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    if (with_ca)
        assert_int_equal(SSL_CTX_load_verify_locations(cctx, fx_path("ca.crt"), NULL), 1);
    return cctx;
}

static void test_connected_after_a_verified_handshake(void **state)
{
    SSL_CTX *cctx = client_ctx(1);
    seen_t seen;
    run(cctx, SRV_HANDSHAKE, 2000, &seen);
    assert_int_equal(seen.what, FG_CONN_CONNECTED);
    SSL_CTX_free(cctx);
}

static void test_unverified_certificate_fails_with_the_reason(void **state)
{
    SSL_CTX *cctx = client_ctx(0);
    seen_t seen;
    run(cctx, SRV_HANDSHAKE, 2000, &seen);
    assert_int_equal(seen.what, FG_CONN_TLS_FAILED);
    assert_non_null(strstr(seen.why, "certificate verify failed (20: "));
    SSL_CTX_free(cctx);
}

static void test_silent_server_times_out(void **state)
{
    SSL_CTX *cctx = client_ctx(1);
    seen_t seen;
    run(cctx, SRV_SILENT, 200, &seen);
    assert_int_equal(seen.what, FG_CONN_TLS_FAILED);
    assert_int_equal(seen.err, ETIMEDOUT);
    SSL_CTX_free(cctx);
}

int main(void)
{
    (void)fx_handshake; /* the fixture's BIO-pair helpers are not needed here */
    (void)fx_session;
    /* The server thread may write its TLS 1.3 tickets after the client closed: EPIPE, as the
     * gateway itself sees it, not a signal that ends the test. */
    signal(SIGPIPE, SIG_IGN);
    fx_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connected_after_a_verified_handshake),
        cmocka_unit_test(test_unverified_certificate_fails_with_the_reason),
        cmocka_unit_test(test_silent_server_times_out),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    fx_teardown();
    return r;
}
