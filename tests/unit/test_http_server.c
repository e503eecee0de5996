#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "master/http_server.h"
#include "tests/unit/child_server.h"

#define TIMEOUT_MS 400

static struct sockaddr_in addr;
static pid_t server;
static fg_http_server_t *srv;

static void answer_held(void *arg, fg_http_server_conn_t *c, void *data)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "released %s", (const char *)data);
    fg_http_server_respond(c, 200, NULL, NULL, NULL, b);
    evbuffer_free(b);
}

/* /hold waits for /release; anything else is echoed back. */
static void handler(void *arg, fg_http_server_conn_t *c, const fg_http_server_req_t *req)
{
    if (strcmp(req->path, "/hold") == 0) {
        fg_http_server_hold(c, strdup("data"), free);
        return;
    }
    if (strcmp(req->path, "/release") == 0)
        fg_http_server_each_held(srv, answer_held, NULL);
    struct evbuffer *b = evbuffer_new();
    size_t nx;
    const char *x = fg_http_server_field(req, "X-Test", &nx);
    evbuffer_add_printf(b, "method=%s path=%s query=%s host=%s fields=%zu x=%s*%zu body=%s",
                        req->method, req->path, req->query, req->host ? req->host : "(none)",
                        req->nfields, x ? x : "(none)", nx, req->body);
    fg_http_server_respond(c, 200, "text/x-echo", "\"t\"", "X-Extra: 1\r\n", b);
    evbuffer_free(b);
}

static const fg_http_server_conf_t conf = {
    .max_head = 1024,
    .max_fields = 8,
    .max_body = 64,
    .max_conns = 2,
    .timeout_ms = TIMEOUT_MS,
    .headers = "X-Server: test\r\n",
    .handler = handler,
};

static int start(struct event_base *base, void *arg)
{
    char err[256];
    srv = fg_http_server_new(base, (struct sockaddr *)&addr, sizeof(addr), "test", &conf, err,
                             sizeof(err));
    if (srv == NULL)
        fprintf(stderr, "%s\n", err);
    return srv ? 0 : -1;
}

/* A server in a child process, so the test itself can use blocking clients. */
static int setup(void **state)
{
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof(addr);
    addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(probe, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(probe, (struct sockaddr *)&addr, &len), 0);
    close(probe);
    server = child_server(start, NULL);
    return 0;
}

static int teardown(void **state)
{
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    return 0;
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Send one request on a new connection and return the whole answer in buf. */
static void exchange(const char *req, char *buf, size_t cap)
{
    int fd = dial();
    send_str(fd, req);
    read_all(fd, buf, cap);
    close(fd);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The request line, the fields and a body sent apart from the head reach the handler as
 * NUL-terminated strings; the answer carries the ETag, the extra and the server's headers. */
static void test_request_reaches_handler(void **state)
{
    char buf[4096];
    int fd = dial();
    send_str(fd, "POST /echo?a=b HTTP/1.1\r\nHost: h.test\r\nx-test:  v1 \r\n"
                 "Content-Length: 5\r\n\r\nhel");
    usleep(50 * 1000);
    send_str(fd, "lo");
    read_all(fd, buf, sizeof(buf));
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\nContent-Type: text/x-echo\r\n"));
    assert_non_null(strstr(buf, "\r\nETag: \"t\"\r\nX-Extra: 1\r\nCache-Control: no-store\r\n"
                                "X-Server: test\r\nConnection: close\r\n\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nmethod=POST path=/echo query=a=b host=h.test fields=3 "
                                "x=v1*1 body=hello"));
}

/* RFC 9110 9.3.2: a HEAD gets the GET's Content-Length without the body. */
static void test_head_gets_no_body(void **state)
{
    char buf[4096];
    exchange("HEAD /echo HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_null(strstr(buf, "Content-Length: 0\r\n"));
    const char *end = strstr(buf, "\r\n\r\n");
    assert_non_null(end);
    assert_string_equal(end, "\r\n\r\n");
}

static void test_oversized_head_is_431(void **state)
{
    char buf[4096], req[2048];
    /* the head has not ended within max_head */
    int fd = dial();
    memset(req, 'a', sizeof(req));
    memcpy(req, "GET / HTTP/1.1\r\nX: ", 19);
    req[sizeof(req) - 1] = '\0';
    send_str(fd, req);
    read_all(fd, buf, sizeof(buf));
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    /* a whole head, one byte over */
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX: %0*d\r\n\r\n", 1024 - 31, 0);
    assert_int_equal(strlen(req), 1025);
    exchange(req, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 431 "));
    /* exactly max_head is served */
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX: %0*d\r\n\r\n", 1024 - 32, 0);
    exchange(req, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 "));
}

static void test_too_many_fields_is_431(void **state)
{
    char buf[4096];
    exchange("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n"
             "G: 1\r\n\r\n",
             buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 ")); /* 8 fields: the bound */
    exchange("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n"
             "G: 1\r\nH: 1\r\n\r\n",
             buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 431 "));
}

static void test_malformed_heads(void **state)
{
    static const struct {
        const char *req;
        const char *status;
    } cases[] = {
        {"GET / HTTP/1.1\nHost: h\n\n", "400"},                     /* bare LF */
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", "400"}, /* obs-fold */
        {"GET / HTTP/1.1\r\nHost : h\r\n\r\n", "400"},              /* SP before the colon */
        {"GET / HTTP/1.1\r\n\r\n", "400"},                          /* no Host (RFC 9112 3.2) */
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},    /* two Hosts */
        {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "400"},           /* not origin-form */
        {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", "505"},               /* not HTTP/1.x */
        {"GET /\r\nHost: h\r\n\r\n", "400"},                        /* no version */
        {"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400"},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", "400"},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n", "413"},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "501"},
    };
    char buf[4096], want[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        exchange(cases[i].req, buf, sizeof(buf));
        snprintf(want, sizeof(want), "HTTP/1.1 %s ", cases[i].status);
        if (strncmp(buf, want, strlen(want)) != 0)
            fail_msg("case %zu: want %s, got \"%.40s\"", i, cases[i].status, buf);
        assert_non_null(strstr(buf, "Connection: close\r\n"));
    }
}

/* Beyond max_conns a connection is closed at once; a slot freed by a close is taken again. */
static void test_connection_bound(void **state)
{
    char buf[4096];
    int a = dial(), b = dial(), c = dial();
    double t0 = now_s();
    assert_int_equal(read_all(c, buf, sizeof(buf)), 0);
    assert_true(now_s() - t0 < TIMEOUT_MS / 1000.0); /* closed, not timed out */
    close(c);
    close(a);
    usleep(100 * 1000); /* the server sees the EOF */
    int d = dial();
    send_str(d, "GET /echo HTTP/1.1\r\nHost: h\r\n\r\n");
    read_all(d, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 "));
    close(d);
    close(b);
}

/* A head that stops coming is closed without an answer once timeout_ms has passed. */
static void test_slow_head_times_out(void **state)
{
    char buf[4096];
    int fd = dial();
    double t0 = now_s();
    send_str(fd, "GET /echo HTTP/1.1\r\nHost: h\r\n");
    assert_int_equal(read_all(fd, buf, sizeof(buf)), 0);
    double took = now_s() - t0;
    assert_true(took >= TIMEOUT_MS / 1000.0 * 0.9);
    assert_true(took < 2.5); /* the 3 s receive timeout did not end the read */
    close(fd);
}

/* The timeout covers the whole request, not the gaps between bytes: a head trickled a byte at a
 * time, each within the timeout, is still cut off. */
static void test_trickled_head_hits_the_deadline(void **state)
{
    static const char req[] = "GET /echo HTTP/1.1\r\nHost: h\r\n\r\n";
    char buf[4096];
    int fd = dial();
    for (size_t i = 0; i < sizeof(req) - 1; i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1)
            break; /* closed by the server */
        usleep(TIMEOUT_MS / 8 * 1000);
    }
    read_all(fd, buf, sizeof(buf));
    assert_null(strstr(buf, "HTTP/1.1 200 "));
    close(fd);
}

/* A held request keeps its connection past the timeout and a half-close, and is answered by
 * fg_http_server_each_held. */
static void test_held_answer(void **state)
{
    char buf[4096];
    int fd = dial();
    send_str(fd, "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n");
    shutdown(fd, SHUT_WR);
    usleep(TIMEOUT_MS * 3 / 2 * 1000);
    exchange("GET /release HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 "));
    read_all(fd, buf, sizeof(buf));
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nreleased data"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_reaches_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_gets_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_head_is_431, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_fields_is_431, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_heads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_head_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trickled_head_hits_the_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_answer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
