/* Unit tests for agent/resolve.c: an address literal is answered before fg_resolve_start
 * returns; a name goes to the DNS server and waits for it without blocking; a server that never
 * answers ends in an error naming the host; a cancelled lookup never calls back. The DNS server
 * is a UDP socket of the test that reads queries and never answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "agent/resolve.h"

typedef struct {
    int calls;
    int family;
    unsigned port;
    char err[400];
} result_t;

static void on_done(void *arg, const struct sockaddr *sa, socklen_t len, const char *err)
{
    result_t *r = arg;
    (void)len;
    r->calls++;
    if (sa != NULL) {
        r->family = sa->sa_family;
        r->port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else {
        snprintf(r->err, sizeof(r->err), "%s", err);
    }
}

/* A UDP socket on 127.0.0.1 that nobody answers from; its port into *port. */
static int silent_server(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A resolver asking only the silent server, giving up after 300 ms and one attempt. */
static struct evdns_base *silent_resolver(struct event_base *base, int *fd)
{
    unsigned port;
    char ns[64];
    *fd = silent_server(&port);
    snprintf(ns, sizeof(ns), "127.0.0.1:%u", port);
    struct evdns_base *dns = evdns_base_new(base, 0);
    assert_non_null(dns);
    assert_int_equal(evdns_base_nameserver_ip_add(dns, ns), 0);
    assert_int_equal(evdns_base_set_option(dns, "timeout:", "0.3"), 0);
    assert_int_equal(evdns_base_set_option(dns, "attempts:", "1"), 0);
    return dns;
}

static void run_for(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000}; /* tv_usec below one second */
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void test_literal_at_once(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct evdns_base *dns = fg_resolve_base_new(base);
    result_t r = {0};
    assert_non_null(dns);
    assert_null(fg_resolve_start(dns, "127.0.0.1", "8443", on_done, &r));
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.family, AF_INET);
    assert_int_equal(r.port, 8443);
    fg_resolve_base_free(dns);
    event_base_free(base);
}

static void test_silent_server_times_out_with_the_host_named(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int fd;
    struct evdns_base *dns = silent_resolver(base, &fd);
    result_t r = {0};
    fg_resolve_t *q = fg_resolve_start(dns, "gw.example.test", "443", on_done, &r);
    assert_non_null(q); /* pending: the caller's loop goes on meanwhile */
    assert_int_equal(r.calls, 0);
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    assert_true(n > 12); /* the query is out */
    run_for(base, 2000);
    assert_int_equal(r.calls, 1);
    assert_non_null(strstr(r.err, "cannot resolve gw.example.test: "));
    fg_resolve_base_free(dns);
    event_base_free(base);
    close(fd);
}

static void test_cancelled_lookup_never_calls_back(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int fd;
    struct evdns_base *dns = silent_resolver(base, &fd);
    result_t r = {0};
    fg_resolve_t *q = fg_resolve_start(dns, "gw.example.test", "443", on_done, &r);
    assert_non_null(q);
    fg_resolve_cancel(q);
    run_for(base, 1000); /* past the server's timeout too */
    assert_int_equal(r.calls, 0);
    fg_resolve_base_free(dns);
    event_base_free(base);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_at_once),
        cmocka_unit_test(test_silent_server_times_out_with_the_host_named),
        cmocka_unit_test(test_cancelled_lookup_never_calls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
