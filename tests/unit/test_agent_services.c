/* Unit tests for agent/services.c: an address splits into authority, host, port and path;
 * literal service addresses need no lookup and are kept as they are; a name that the DNS server
 * never answers ends, after connectTimeoutMs and not the resolver's own timeout, in an error
 * naming the file, the service and the host, while the caller's loop runs. The DNS server is a
 * UDP socket of the test that never answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "agent/config.h"
#include "agent/services.h"

static void test_split(void **state)
{
    (void)state;
    char auth[64], host[64], port[8];
    const char *path;
    assert_int_equal(fg_services_split("http://svc.lan:8080/base", auth, sizeof(auth), host,
                                       sizeof(host), port, sizeof(port), &path),
                     0);
    assert_string_equal(auth, "svc.lan:8080");
    assert_string_equal(host, "svc.lan");
    assert_string_equal(port, "8080");
    assert_string_equal(path, "/base");
    assert_int_equal(fg_services_split("https://svc.lan", auth, sizeof(auth), host, sizeof(host),
                                       port, sizeof(port), &path),
                     0);
    assert_string_equal(port, "443");
    assert_string_equal(path, "");
    assert_int_equal(fg_services_split("http://[::1]:81/", auth, sizeof(auth), host, sizeof(host),
                                       port, sizeof(port), &path),
                     0);
    assert_string_equal(auth, "[::1]:81");
    assert_string_equal(host, "::1");
    assert_string_equal(port, "81");
    assert_int_equal(fg_services_split("http:///x", auth, sizeof(auth), host, sizeof(host), port,
                                       sizeof(port), &path),
                     -1);
    /* a port the loader refuses: no lookup, its message */
    assert_int_equal(fg_services_split("http://svc.lan:/", auth, sizeof(auth), host, sizeof(host),
                                       port, sizeof(port), &path),
                     -1);
    assert_int_equal(fg_services_split("http://svc.lan:8o/", auth, sizeof(auth), host, sizeof(host),
                                       port, sizeof(port), &path),
                     -1);
}

typedef struct {
    int calls;
    char err[800];
} result_t;

static void on_done(void *arg, fg_agent_config_t *cfg, const char *err)
{
    result_t *r = arg;
    (void)cfg;
    r->calls++;
    snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
}

/* A configuration with these services (its secret in a private temporary file). */
static fg_agent_config_t *config(const char *services)
{
    char text[1024], err[600], secret[] = "/tmp/test_agent_services.XXXXXX";
    int fd = mkstemp(secret);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "0123456789abcdef0123456789abcdef\n", 33), 33);
    close(fd);
    snprintf(text, sizeof(text),
             "{\"gateway\": \"ws://127.0.0.1:1/_fg/tunnel\", \"id\": \"office\", "
             "\"secretFile\": \"%s\", \"connectTimeoutMs\": 300, \"services\": %s}",
             secret, services);
    fg_agent_config_t *cfg = fg_agent_config_parse("/x/agent.json", text, err, sizeof(err));
    unlink(secret);
    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

static void test_literals_at_once(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct evdns_base *dns = evdns_base_new(base, 0);
    fg_agent_config_t *cfg = config("{\"a\": \"http://127.0.0.1:81\", \"b\": \"tcp://[::1]:22\", "
                                    "\"c\": \"http://[fe80::1%25eth0]:80\"}");
    result_t r = {0};
    assert_null(fg_services_resolve(base, dns, cfg, on_done, &r));
    assert_int_equal(r.calls, 1);
    assert_string_equal(r.err, "");
    assert_null(cfg->services[0].resolved);
    assert_null(cfg->services[1].resolved);
    fg_agent_config_free(cfg);
    evdns_base_free(dns, 0);
    event_base_free(base);
}

static void test_silent_server_bounded_by_connect_timeout(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    char ns[64];
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(ns, sizeof(ns), "127.0.0.1:%u", ntohs(a.sin_port));
    struct evdns_base *dns = evdns_base_new(base, 0);
    assert_int_equal(evdns_base_nameserver_ip_add(dns, ns), 0);
    /* the resolver would wait 30 s; connectTimeoutMs (300) ends it first */
    assert_int_equal(evdns_base_set_option(dns, "timeout:", "30"), 0);
    fg_agent_config_t *cfg =
        config("{\"lit\": \"http://127.0.0.1:81\", \"web\": \"http://svc.example.test:81/\"}");
    result_t r = {0};
    fg_services_lookup_t *l = fg_services_resolve(base, dns, cfg, on_done, &r);
    assert_non_null(l);
    assert_int_equal(r.calls, 0);
    struct timeval tv = {2, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    assert_int_equal(r.calls, 1);
    assert_string_equal(r.err, "/x/agent.json: services.web: cannot resolve svc.example.test: "
                               "no answer within connectTimeoutMs (300 ms)");
    fg_agent_config_free(cfg);
    event_base_loop(base, EVLOOP_NONBLOCK);
    evdns_base_free(dns, 0);
    event_base_free(base);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_literals_at_once),
        cmocka_unit_test(test_silent_server_bounded_by_connect_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
