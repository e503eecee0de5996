/* Tunnels, the gateway's side: the "tunnels" configuration and tunnel:// destinations
 * (common/config_tunnels.c), and the registry in shared memory (shm/tunnels.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "shm/arena.h"
#include "shm/tunnels.h"

static char secret_path[256];

static int setup(void **state)
{
    snprintf(secret_path, sizeof(secret_path), "/tmp/fg-test-tunnels-%d.key", (int)getpid());
    FILE *f = fopen(secret_path, "w");
    if (f == NULL)
        return -1;
    fputs("  a-secret-of-twenty-bytes\n", f);
    fclose(f);
    return chmod(secret_path, 0600);
}

static int teardown(void **state)
{
    unlink(secret_path);
    return 0;
}

/* A configuration with agents office and branch and one cluster whose destination address is
 * dest (NULL: no cluster); extra goes into the tunnels object. */
static fg_config_t *load(const char *dest, const char *extra, char *err, size_t errlen)
{
    char text[2048];
    char cluster[256] = "";
    if (dest)
        snprintf(cluster, sizeof(cluster),
                 ", \"clusters\": [{\"id\": \"c\", \"destinations\": [{\"id\": \"d\", "
                 "\"address\": \"%s\"}]}]",
                 dest);
    snprintf(text, sizeof(text),
             "{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\", \"acceptTunnels\": "
             "true}], \"tunnels\": {\"agents\": [{\"id\": \"office\", \"secretFile\": \"%s\"}, "
             "{\"id\": \"branch\", \"secretFile\": \"%s\"}]%s}%s}",
             secret_path, secret_path, extra ? extra : "", cluster);
    return fg_config_load_string("t.json", text, err, errlen);
}

/* A fresh arena holding the tunnel registry of load(dest, NULL)'s configuration (*cfg), as
 * generation 1 of one worker. */
static fg_shm_t *registry(const char *dest, fg_config_t **cfg)
{
    char err[512] = "";
    *cfg = load(dest, NULL, err, sizeof(err));
    assert_non_null(*cfg);
    fg_shm_t *shm = fg_shm_new(16 << 20);
    assert_non_null(shm);
    assert_int_equal(fg_tunnels_attach(shm, *cfg, 1, 1, err, sizeof(err)), 0);
    return shm;
}

static void test_config_defaults_and_secret(void **state)
{
    char err[512] = "";
    fg_config_t *cfg = load("tunnel://branch/web", NULL, err, sizeof(err));
    assert_non_null(cfg);
    const fg_tunnels_config_t *tc = &cfg->tunnels;
    assert_true(tc->enabled);
    assert_string_equal(tc->path, "/_fg/tunnel");
    assert_int_equal(tc->heartbeat_ms, 30000);
    assert_int_equal(tc->grace_ms, 10000);
    assert_int_equal(tc->auth_failures_max, 10);
    assert_int_equal(tc->handshake_timeout_ms, 10000);
    assert_int_equal(tc->nagents, 2);
    /* surrounding whitespace is not part of the secret */
    assert_int_equal(tc->agents[0].secret_len, 24);
    assert_memory_equal(tc->agents[0].secret, "a-secret-of-twenty-bytes", 24);
    const fg_destination_t *d = &cfg->clusters[0].destinations[0];
    assert_true(d->tunnel);
    assert_int_equal(d->tunnel_agent, 1);
    assert_string_equal(d->tunnel_service, "web");
    assert_true(cfg->servers[0].accept_tunnels);
    assert_int_equal(fg_config_tunnel_agent(cfg, "office", 6), 0);
    assert_int_equal(fg_config_tunnel_agent(cfg, "offic", 5), -1);
    fg_config_free(cfg);
}

static void test_config_errors(void **state)
{
    static const struct {
        const char *dest, *extra, *want;
    } cases[] = {
        {"tunnel://ghost/web", NULL, "no agent \"ghost\""},
        {"tunnel://office", NULL, "is not tunnel://AGENT/SERVICE"},
        {"tunnel://office/a/b", NULL, "is not tunnel://AGENT/SERVICE"},
        {"tunnel://office/", NULL, "is not tunnel://AGENT/SERVICE"},
        {NULL, ", \"path\": \"nope\"", "tunnels.path"},
        {NULL, ", \"heartbeatSeconds\": 0", "tunnels.heartbeatSeconds"},
        {NULL, ", \"handshakeTimeout\": \"99ms\"",
         "tunnels.handshakeTimeout: must be between 100ms and 5m"},
        {NULL, ", \"handshakeTimeout\": \"301s\"",
         "tunnels.handshakeTimeout: must be between 100ms and 5m"},
        {NULL, ", \"handshakeTimeout\": \"soon\"", "tunnels.handshakeTimeout"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[512] = "";
        fg_config_t *cfg = load(cases[i].dest, cases[i].extra, err, sizeof(err));
        if (cfg != NULL || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].want);
        assert_null(strstr(err, "a-secret"));
    }
}

static void test_config_handshake_timeout(void **state)
{
    char err[512] = "";
    fg_config_t *cfg = load(NULL, ", \"handshakeTimeout\": \"300ms\"", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->tunnels.handshake_timeout_ms, 300);
    fg_config_free(cfg);
    cfg = load(NULL, ", \"handshakeTimeout\": \"5m\"", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->tunnels.handshake_timeout_ms, 300000);
    fg_config_free(cfg);
}

static void test_config_refuses_a_readable_secret(void **state)
{
    char err[512] = "";
    chmod(secret_path, 0644);
    fg_config_t *cfg = load(NULL, NULL, err, sizeof(err));
    chmod(secret_path, 0600);
    assert_null(cfg);
    assert_non_null(strstr(err, "tunnels.agents[0].secretFile"));
    assert_null(strstr(err, "a-secret"));
}

static void test_config_tunnel_needs_section(void **state)
{
    char err[512] = "";
    fg_config_t *cfg = fg_config_load_string(
        "t.json",
        "{\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\"}], \"clusters\": [{\"id\": "
        "\"c\", \"destinations\": [{\"id\": \"d\", \"address\": \"tunnel://a/b\"}]}]}",
        err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "needs a top-level \"tunnels\" section"));
}

/* ---- the registry ---- */

static void test_registry_claim_takeover_release(void **state)
{
    fg_config_t *cfg = NULL;
    fg_shm_t *shm = registry("tunnel://office/web", &cfg);
    fg_tunnels_t *t = fg_tunnels_zone();
    fg_tunnel_rec_t *rec = cfg->tunnels.agents[0].state;
    assert_non_null(rec);
    assert_ptr_equal(cfg->clusters[0].destinations[0].tunnel_rec, rec);
    assert_false(fg_tunnels_online(rec));

    static const uint8_t inst_a[16] = {1}, inst_b[16] = {2};
    fg_tunnels_claim_t c1, c2, c3, c4;
    uint64_t serial;
    fg_tunnels_claim(t, rec, 100, 0, 1, "1.2.3.4:5", inst_a, 0, &c1);
    assert_true(c1.index >= 0 && c1.serial != 0);
    assert_int_equal(c1.displaced + c1.replaced, 0);
    assert_true(fg_tunnels_online(rec));
    /* worker 100 has no other holder to hop to; worker 200 hops to 100 */
    assert_int_equal(fg_tunnels_pick(rec, 100, &serial), 0);
    assert_int_equal(fg_tunnels_pick(rec, 200, &serial), 100);
    assert_int_equal(serial, c1.serial);

    /* the same instance joins in another worker; "extra" in the same worker is a duplicate */
    fg_tunnels_claim(t, rec, 200, 1, 1, "1.2.3.4:6", inst_a, 1, &c2);
    assert_true(c2.index >= 0 && c2.index != c1.index && c2.serial != c1.serial);
    assert_int_equal(atomic_load(&rec->live), 2);
    fg_tunnels_claim(t, rec, 200, 1, 1, "1.2.3.4:7", inst_a, 1, &c3);
    assert_int_equal(c3.index, -1);
    assert_int_equal(atomic_load(&rec->duplicates), 1);
    assert_int_equal(atomic_load(&rec->live), 2);

    /* a third worker picks the holder with the fewest streams, and one not draining */
    fg_tunnels_streams(rec, &rec->conns[c1.index], 3);
    assert_int_equal(fg_tunnels_pick(rec, 300, &serial), 200);
    fg_tunnels_streams(rec, &rec->conns[c1.index], -3);
    atomic_store(&rec->conns[c2.index].draining, 1);
    assert_int_equal(fg_tunnels_pick(rec, 300, &serial), 100);
    assert_true(fg_tunnels_has_other(rec, c2.serial));
    assert_false(fg_tunnels_has_other(rec, c1.serial));
    atomic_store(&rec->conns[c2.index].draining, 0);

    /* "first" in a worker holding one of the instance replaces it */
    fg_tunnels_claim(t, rec, 200, 1, 1, "1.2.3.4:8", inst_a, 0, &c3);
    assert_true(c3.index >= 0);
    assert_int_equal(c3.replaced, 1);
    assert_int_equal(c3.prev_serial, c2.serial);
    assert_false(fg_tunnels_current(rec, c2.index, c2.serial) && c2.index != c3.index);
    assert_int_equal(atomic_load(&rec->live), 2);
    assert_int_equal(atomic_load(&rec->takeovers), 0);

    /* another instance takes over: every connection of the first goes */
    fg_tunnels_claim(t, rec, 100, 0, 1, "5.6.7.8:9", inst_b, 0, &c4);
    assert_true(c4.index >= 0);
    assert_int_equal(c4.displaced, 2);
    assert_int_equal(atomic_load(&rec->live), 1);
    assert_int_equal(atomic_load(&rec->takeovers), 1);
    assert_false(fg_tunnels_current(rec, c1.index, c1.serial) && c1.index != c4.index);
    /* a displaced connection's release changes nothing */
    fg_tunnels_release(t, rec, c1.index, c1.serial);
    fg_tunnels_release(t, rec, c3.index, c3.serial);
    assert_int_equal(atomic_load(&rec->live), 1);
    assert_true(fg_tunnels_current(rec, c4.index, c4.serial));
    fg_tunnels_release(t, rec, c4.index, c4.serial);
    assert_false(fg_tunnels_online(rec));

    /* the short AUTH (no instance): each connection takes over */
    fg_tunnels_claim(t, rec, 100, 0, 1, "x", NULL, 0, &c1);
    fg_tunnels_claim(t, rec, 200, 1, 1, "y", NULL, 0, &c2);
    assert_int_equal(c2.displaced, 1);
    assert_int_equal(atomic_load(&rec->live), 1);
    fg_tunnels_release(t, rec, c2.index, c2.serial);

    /* a reload keeps the record; a dead worker's connections go */
    fg_tunnels_claim(t, rec, 300, 0, 1, "x", inst_a, 0, &c1);
    fg_tunnels_claim(t, rec, 400, 1, 1, "y", inst_a, 1, &c2);
    char err[512] = "";
    fg_config_t *cfg2 = load(NULL, NULL, err, sizeof(err));
    assert_int_equal(fg_tunnels_attach(shm, cfg2, 2, 1, err, sizeof(err)), 0);
    assert_ptr_equal(cfg2->tunnels.agents[0].state, rec);
    assert_true(fg_tunnels_online(rec));
    fg_tunnels_worker_gone(t, 300);
    assert_int_equal(atomic_load(&rec->live), 1);
    assert_int_equal(fg_tunnels_pick(rec, 300, &serial), 400);
    fg_tunnels_worker_gone(t, 400);
    assert_false(fg_tunnels_online(rec));
    assert_int_equal(atomic_load(&rec->connects), 8);
    fg_config_free(cfg2);
    fg_config_free(cfg);
    fg_shm_free(shm);
}

/* Another worker reads the registry without the lock while a connection takes over from the
 * agent's only one (a reload moves it): at every instant the agent is online and some slot
 * names a holder, or that worker would answer 503 (offline) or 502 (no holder to hop to). */
typedef struct {
    fg_tunnel_rec_t *rec;
    atomic_int started, stop;
    atomic_long reads, gaps;
} watch_t;

static void *watch(void *arg)
{
    watch_t *wt = arg;
    uint64_t serial;
    atomic_store(&wt->started, 1);
    while (!atomic_load(&wt->stop)) {
        wt->reads++;
        if (!fg_tunnels_online(wt->rec) || fg_tunnels_pick(wt->rec, 999, &serial) == 0)
            wt->gaps++;
    }
    return NULL;
}

static void test_registry_takeover_never_offline(void **state)
{
    fg_config_t *cfg = NULL;
    fg_shm_t *shm = registry("tunnel://office/web", &cfg);
    fg_tunnels_t *t = fg_tunnels_zone();
    fg_tunnel_rec_t *rec = cfg->tunnels.agents[0].state;
    fg_tunnels_claim_t c;
    fg_tunnels_claim(t, rec, 100, 0, 1, "x", NULL, 0, &c);
    watch_t wt = {.rec = rec};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, watch, &wt), 0);
    while (!atomic_load(&wt.started))
        ;
    /* the short AUTH: each connection takes over from the previous one */
    for (int i = 0; i < 200000 && wt.gaps == 0; i++) {
        fg_tunnels_claim(t, rec, 100 + i % 2, i % 2, 1, "x", NULL, 0, &c);
        assert_int_equal(c.displaced, 1);
        assert_int_equal(atomic_load(&rec->live), 1);
    }
    atomic_store(&wt.stop, 1);
    pthread_join(th, NULL);
    assert_true(wt.reads > 0);
    assert_int_equal(wt.gaps, 0);
    /* when every slot is live, the new connection takes a displaced one's slot */
    static const uint8_t inst_a[16] = {1}, inst_b[16] = {2};
    fg_tunnels_release(t, rec, c.index, c.serial);
    for (int i = 0; i < FG_TUNNEL_CONNS_MAX; i++) {
        fg_tunnels_claim(t, rec, 100 + i, i, 1, "x", inst_a, 0, &c);
        assert_true(c.index >= 0);
    }
    assert_int_equal(atomic_load(&rec->live), FG_TUNNEL_CONNS_MAX);
    fg_tunnels_claim(t, rec, 500, 0, 1, "y", inst_b, 0, &c);
    assert_true(c.index >= 0);
    assert_int_equal(c.displaced, FG_TUNNEL_CONNS_MAX);
    assert_int_equal(atomic_load(&rec->live), 1);
    assert_true(fg_tunnels_current(rec, c.index, c.serial));
    uint64_t serial;
    assert_int_equal(fg_tunnels_pick(rec, 999, &serial), 500);
    fg_config_free(cfg);
    fg_shm_free(shm);
}

static void test_registry_auth_failures_per_address(void **state)
{
    fg_config_t *cfg = NULL;
    fg_shm_t *shm = registry(NULL, &cfg);
    fg_tunnels_t *t = fg_tunnels_zone();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000001)};
    struct sockaddr_in b = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000002)};
    uint64_t now = 10 * 60000 + 5;
    for (int i = 0; i < 3; i++) {
        assert_false(fg_tunnels_auth_blocked(t, (struct sockaddr *)&a, 3, now));
        fg_tunnels_auth_failed(t, cfg->tunnels.agents[0].state, (struct sockaddr *)&a, now);
    }
    assert_true(fg_tunnels_auth_blocked(t, (struct sockaddr *)&a, 3, now));
    /* another address has its own budget; the next minute starts afresh */
    assert_false(fg_tunnels_auth_blocked(t, (struct sockaddr *)&b, 3, now));
    assert_false(fg_tunnels_auth_blocked(t, (struct sockaddr *)&a, 3, now + 60000));
    assert_int_equal(atomic_load(&((fg_tunnel_rec_t *)cfg->tunnels.agents[0].state)->auth_failures),
                     3);
    fg_config_free(cfg);
    fg_shm_free(shm);
}

/* An IPv6 host holds a /64 (RFC 4291 2.5.4): its addresses share one budget, or a guesser
 * would get authFailuresPerMinute answers for each of 2^64 addresses. */
static void test_registry_auth_failures_per_ipv6_prefix(void **state)
{
    fg_config_t *cfg = NULL;
    fg_shm_t *shm = registry(NULL, &cfg);
    fg_tunnels_t *t = fg_tunnels_zone();
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8:1:2::1", &a.sin6_addr);
    uint64_t now = 10 * 60000 + 5;
    for (int i = 0; i < 3; i++) {
        a.sin6_addr.s6_addr[15] = (uint8_t)(i + 1); /* another address of the same /64 */
        assert_false(fg_tunnels_auth_blocked(t, (struct sockaddr *)&a, 3, now));
        fg_tunnels_auth_failed(t, NULL, (struct sockaddr *)&a, now);
    }
    a.sin6_addr.s6_addr[8] = 0x42;
    assert_true(fg_tunnels_auth_blocked(t, (struct sockaddr *)&a, 3, now));
    a.sin6_addr.s6_addr[7] = 0x42; /* another /64 */
    assert_false(fg_tunnels_auth_blocked(t, (struct sockaddr *)&a, 3, now));
    fg_config_free(cfg);
    fg_shm_free(shm);
}

/* A flood of addresses failing once each fills the table: a guesser that used most of its
 * budget keeps its count (the address with the fewest failures gives up its slot). */
static void test_registry_auth_failures_flood_keeps_guessers(void **state)
{
    fg_config_t *cfg = NULL;
    fg_shm_t *shm = registry(NULL, &cfg);
    fg_tunnels_t *t = fg_tunnels_zone();
    struct sockaddr_in g = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0000201)};
    uint64_t now = 10 * 60000 + 5;
    fg_tunnels_auth_failed(t, NULL, (struct sockaddr *)&g, now);
    fg_tunnels_auth_failed(t, NULL, (struct sockaddr *)&g, now);
    for (uint32_t i = 0; i < 8 * FG_TUNNELS_FAIL_SLOTS; i++) {
        struct sockaddr_in o = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0b000000 + i)};
        fg_tunnels_auth_failed(t, NULL, (struct sockaddr *)&o, now);
    }
    fg_tunnels_auth_failed(t, NULL, (struct sockaddr *)&g, now);
    assert_true(fg_tunnels_auth_blocked(t, (struct sockaddr *)&g, 3, now));
    fg_config_free(cfg);
    fg_shm_free(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_and_secret),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_handshake_timeout),
        cmocka_unit_test(test_config_refuses_a_readable_secret),
        cmocka_unit_test(test_config_tunnel_needs_section),
        cmocka_unit_test(test_registry_claim_takeover_release),
        cmocka_unit_test(test_registry_takeover_never_offline),
        cmocka_unit_test(test_registry_auth_failures_per_address),
        cmocka_unit_test(test_registry_auth_failures_per_ipv6_prefix),
        cmocka_unit_test(test_registry_auth_failures_flood_keeps_guessers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
