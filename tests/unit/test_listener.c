#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "master/listener.h"

#define MAXS 4

typedef struct {
    fg_config_t cfg;
    fg_server_t servers[MAXS];
    char listen[MAXS][32];
    uint16_t port[MAXS];
} fixture_t;

/* A port nobody listens on right now: bind :0 without SO_REUSEPORT, read it, close. */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void set_server(fixture_t *f, int i, uint16_t port)
{
    fg_server_t *s = &f->servers[i];
    struct sockaddr_in *sin = (struct sockaddr_in *)&s->addr;
    memset(s, 0, sizeof(*s));
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->addrlen = sizeof(*sin);
    s->enabled = 1;
    s->backlog = 64;
    snprintf(f->listen[i], sizeof(f->listen[i]), "127.0.0.1:%u", port);
    s->listen = f->listen[i];
    f->port[i] = port;
}

static fixture_t *fixture(int nservers, int workers)
{
    fixture_t *f = calloc(1, sizeof(*f));
    for (int i = 0; i < nservers; i++)
        set_server(f, i, free_port());
    f->cfg.servers = f->servers;
    f->cfg.nservers = (size_t)nservers;
    f->cfg.workers = workers;
    return f;
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static int sockopt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);
    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

static int connect_nb(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sin = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
    assert_true(rc == 0 || errno == EINPROGRESS);
    return fd;
}

static int accept_all(int lfd)
{
    int n = 0, c;
    while ((c = accept(lfd, NULL, NULL)) != -1) {
        close(c);
        n++;
    }
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    return n;
}

static pid_t owner_pid;
static int owner_calls;
static pid_t owner_fn(int slot, void *arg)
{
    owner_calls++;
    return owner_pid + slot;
}

/* Prepare f's configuration as it is now as ls's next generation; its fds in *fds. */
static void prepare_ok(fg_listeners_t *ls, fixture_t *f, int **fds)
{
    char err[256] = "";
    assert_int_equal(fg_listeners_prepare(ls, &f->cfg, fds, err, sizeof(err)), 0);
}

/* prepare_ok, then commit with no worker to hold what is retired. */
static void generation(fg_listeners_t *ls, fixture_t *f, int **fds)
{
    prepare_ok(ls, f, fds);
    fg_listeners_commit(ls, NULL, NULL);
}

static void teardown(fg_listeners_t *ls, fixture_t *f, int *a, int *b)
{
    free(a);
    free(b);
    fg_listeners_free(ls);
    free(f);
}

static void test_open_per_slot(void **state)
{
    fixture_t *f = fixture(2, 3);
    fg_listeners_t *ls = fg_listeners_new();
    int *fds = NULL;
    prepare_ok(ls, f, &fds);
    assert_int_equal(fg_listeners_commit(ls, NULL, NULL), 0);
    assert_int_equal(fg_listeners_active(ls), 6);
    for (int i = 0; i < 6; i++) {
        assert_true(fds[i] > 2);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(fds[i], fds[j]);
        assert_int_equal(sockopt(fds[i], SOL_SOCKET, SO_ACCEPTCONN), 1);
        assert_int_equal(sockopt(fds[i], SOL_SOCKET, SO_REUSEPORT), 1);
        assert_true(fcntl(fds[i], F_GETFL) & O_NONBLOCK);
        struct sockaddr_in sin;
        socklen_t len = sizeof(sin);
        assert_int_equal(getsockname(fds[i], (struct sockaddr *)&sin, &len), 0);
        assert_int_equal(ntohs(sin.sin_port), f->port[i / 3]);
    }
    /* A connection lands on one of the three sockets of its address. */
    int c = connect_nb(f->port[1]);
    usleep(50 * 1000);
    int got = 0;
    for (int i = 3; i < 6; i++)
        got += accept_all(fds[i]);
    assert_int_equal(got, 1);
    close(c);
    free(fds);
    fg_listeners_free(ls);
    free(f);
}

static void test_kept_address_keeps_fds(void **state)
{
    fixture_t *f = fixture(2, 2);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL, *b = NULL;
    generation(ls, f, &a);
    /* The next generation lists the servers in another order: same sockets per address. */
    fg_server_t tmp = f->servers[0];
    f->servers[0] = f->servers[1];
    f->servers[1] = tmp;
    prepare_ok(ls, f, &b);
    assert_int_equal(fg_listeners_commit(ls, owner_fn, NULL), 0);
    assert_int_equal(b[0], a[2]);
    assert_int_equal(b[1], a[3]);
    assert_int_equal(b[2], a[0]);
    assert_int_equal(b[3], a[1]);
    assert_int_equal(fg_listeners_active(ls), 4);
    assert_int_equal(fg_listeners_retired(ls), 0);
    teardown(ls, f, a, b);
}

static void test_grow_then_rollback(void **state)
{
    fixture_t *f = fixture(1, 2);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL, *b = NULL;
    char err[256];
    generation(ls, f, &a);

    f->cfg.workers = 4;
    prepare_ok(ls, f, &b);
    assert_int_equal(b[0], a[0]);
    assert_int_equal(b[1], a[1]);
    assert_true(is_open(b[2]) && is_open(b[3]));
    assert_int_equal(fg_listeners_active(ls), 4);
    /* A second prepare before commit/rollback is refused. */
    int *c = NULL;
    assert_int_equal(fg_listeners_prepare(ls, &f->cfg, &c, err, sizeof(err)), -1);

    /* Rolled back without an owner: the new sockets are closed, the old ones stay. */
    owner_pid = 0;
    assert_int_equal(fg_listeners_rollback(ls, NULL, NULL), 2);
    assert_false(is_open(b[2]));
    assert_false(is_open(b[3]));
    assert_true(is_open(a[0]) && is_open(a[1]));
    assert_int_equal(fg_listeners_active(ls), 2);
    free(b);

    /* Grow for real this time. */
    prepare_ok(ls, f, &b);
    assert_int_equal(fg_listeners_commit(ls, NULL, NULL), 0);
    assert_int_equal(fg_listeners_active(ls), 4);
    teardown(ls, f, a, b);
}

static void test_rollback_with_owner_retires(void **state)
{
    fixture_t *f = fixture(1, 1);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL, *b = NULL;
    generation(ls, f, &a);
    f->cfg.workers = 2;
    prepare_ok(ls, f, &b);
    /* The new worker of slot 1 (pid 500 + 1) may hold it: kept until that pid is gone. */
    owner_pid = 500;
    assert_int_equal(fg_listeners_rollback(ls, owner_fn, NULL), 1);
    assert_int_equal(fg_listeners_retired(ls), 1);
    assert_true(is_open(b[1]));
    assert_int_equal(fg_listeners_release(ls, 501), 1);
    assert_false(is_open(b[1]));
    teardown(ls, f, a, b);
}

static void test_shrink_and_remove_retire(void **state)
{
    fixture_t *f = fixture(2, 3);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL, *b = NULL;
    generation(ls, f, &a);

    /* Next generation: 2 workers, and only the second server. */
    f->cfg.workers = 2;
    f->cfg.servers = &f->servers[1];
    f->cfg.nservers = 1;
    prepare_ok(ls, f, &b);
    assert_int_equal(b[0], a[3]);
    assert_int_equal(b[1], a[4]);
    owner_pid = 1000;
    owner_calls = 0;
    /* Server 0: slots 0,1,2 retired; server 1: slot 2 retired. */
    assert_int_equal(fg_listeners_commit(ls, owner_fn, NULL), 4);
    assert_int_equal(owner_calls, 4);
    assert_int_equal(fg_listeners_active(ls), 2);
    assert_int_equal(fg_listeners_retired(ls), 4);
    /* Retired sockets stay open (their old worker drains them) until that worker exits. */
    for (int i = 0; i < 3; i++)
        assert_true(is_open(a[i]));
    assert_true(is_open(a[5]));
    assert_int_equal(fg_listeners_release(ls, 999), 0);
    assert_int_equal(fg_listeners_release(ls, 1002), 2); /* slot 2 of both addresses */
    assert_false(is_open(a[2]));
    assert_false(is_open(a[5]));
    assert_true(is_open(a[0]));
    assert_int_equal(fg_listeners_release(ls, 1000), 1);
    assert_int_equal(fg_listeners_release(ls, 1001), 1);
    assert_int_equal(fg_listeners_retired(ls), 0);
    assert_true(is_open(b[0]) && is_open(b[1]));
    teardown(ls, f, a, b);
}

/* A connection already queued on a socket survives its retirement: the old worker still
 * accepts it. */
static void test_retired_keeps_queue(void **state)
{
    fixture_t *f = fixture(1, 1);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL;
    generation(ls, f, &a);
    int c = connect_nb(f->port[0]);
    usleep(50 * 1000);
    assert_int_equal(fg_listener_block(a[0]), 0);
    assert_int_equal(accept_all(a[0]), 1);
    close(c);
    teardown(ls, f, a, NULL);
}

/* Whether least-connections balancing runs (it needs CAP_BPF). */
static int balanced(fg_listeners_t *ls)
{
    uint32_t *pending, *busy;
    uint64_t *owner;
    return fg_listeners_balance_slot(ls, 0, &pending, &busy, &owner) != NULL;
}

/* A listener set for f; the test is skipped (f freed) where balancing does not run. */
static fg_listeners_t *balanced_set(fixture_t *f)
{
    fg_listeners_t *ls = fg_listeners_new();
    if (!balanced(ls)) {
        fg_listeners_free(ls);
        free(f);
        skip();
    }
    return ls;
}

/* After the filter no handshake completes on the blocked socket; the clients whose SYN hashed
 * to it retransmit and land on the live socket once the blocked one is closed. With balancing,
 * the program of the one remaining slot steers every SYN to the live socket at once. */
static void test_blocked_socket_drops_syn(void **state)
{
    enum { N = 16 };
    fixture_t *f = fixture(1, 2);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL, *b = NULL;
    generation(ls, f, &a);
    f->cfg.workers = 1;
    prepare_ok(ls, f, &b);
    owner_pid = 77;
    assert_int_equal(fg_listeners_commit(ls, owner_fn, NULL), 1); /* a[1] retired, owner 78 */

    int c[N];
    for (int i = 0; i < N; i++)
        c[i] = connect_nb(f->port[0]);
    usleep(200 * 1000);
    assert_int_equal(accept_all(a[1]), 0);
    int live = accept_all(a[0]);
    if (balanced(ls))
        assert_int_equal(live, N);
    else
        assert_true(live < N); /* 2^-16 chance that no SYN hashed to the blocked socket */

    assert_int_equal(fg_listeners_release(ls, 78), 1);
    for (int waited = 0; live < N && waited < 5000; waited += 100) {
        struct pollfd p = {.fd = a[0], .events = POLLIN};
        poll(&p, 1, 100);
        live += accept_all(a[0]);
    }
    assert_int_equal(live, N);
    for (int i = 0; i < N; i++)
        close(c[i]);
    teardown(ls, f, a, b);
}

/* n SYNs to two slots whose workers hold open[s] connections and run callbacks when busy[s]:
 * slot s takes want[s] of them (the program's choice, so the slots' pending counts too). */
static void steer(const uint32_t open_in[2], const uint32_t busy_in[2], int n, const int want[2])
{
    fixture_t *f = fixture(1, 2);
    fg_listeners_t *ls = balanced_set(f);
    int *a = NULL;
    generation(ls, f, &a);
    uint32_t *open[2], *pending[2], *busy[2];
    uint64_t *owner;
    for (int s = 0; s < 2; s++) {
        open[s] = fg_listeners_balance_slot(ls, s, &pending[s], &busy[s], &owner);
        *open[s] = open_in[s];
        *busy[s] = busy_in[s];
    }
    int c[8];
    assert_true(n <= 8);
    for (int i = 0; i < n; i++)
        c[i] = connect_nb(f->port[0]);
    usleep(100 * 1000);
    assert_int_equal(*pending[0], want[0]);
    assert_int_equal(*pending[1], want[1]);
    assert_int_equal(accept_all(a[0]), want[0]);
    assert_int_equal(accept_all(a[1]), want[1]);
    for (int i = 0; i < n; i++)
        close(c[i]);
    teardown(ls, f, a, NULL);
}

/* Each SYN goes to the slot with the fewest connections, open plus steered and not accepted
 * yet; ties go to the lower slot. Loads (3, 0): slot 1 takes three, then they alternate. */
static void test_least_connections_steers(void **state)
{
    steer((const uint32_t[2]){3, 0}, (const uint32_t[2]){0, 0}, 7, (const int[2]){2, 5});
}

/* A worker running callbacks counts two connections more than it holds: 5 SYNs with the worker
 * of busy_slot running callbacks; slot s takes want[s] of them. */
static void busy_spread(int busy_slot, const int want[2])
{
    uint32_t busy[2] = {0, 0};
    busy[busy_slot] = 1;
    steer((const uint32_t[2]){0, 0}, busy, 5, want);
}

/* Loads (0 + 2 busy, 0): slot 1 takes two, then they alternate, ties to the lower slot: 2 and
 * 3 of 5 (the two idle slots alone would split them 3 and 2). */
static void test_busy_worker_passed_over(void **state)
{
    busy_spread(0, (const int[2]){2, 3});
}

/* The same weight read for a slot after the first (the program's per-slot instructions):
 * loads (0, 0 + 2 busy): slot 0 takes three before slot 1 gets its first, 4 and 1 of 5. */
static void test_busy_second_slot_passed_over(void **state)
{
    busy_spread(1, (const int[2]){4, 1});
}

/* The program for the most slots a configuration allows (FG_CONFIG_MAX_WORKERS): every slot
 * holds 3 connections but the last two. The last holds 1 and runs callbacks (load 3), the one
 * before it holds 2: that one takes the SYN. Once the last waits for events (load 1), it takes
 * the next one. */
static void test_busy_weight_on_the_last_of_most_slots(void **state)
{
    enum { W = FG_CONFIG_MAX_WORKERS };
    fixture_t *f = fixture(1, W);
    fg_listeners_t *ls = balanced_set(f);
    int *a = NULL;
    generation(ls, f, &a);
    uint32_t *open[W], *pending[W], *busy[W];
    uint64_t *owner;
    for (int s = 0; s < W; s++) {
        open[s] = fg_listeners_balance_slot(ls, s, &pending[s], &busy[s], &owner);
        *open[s] = 3;
    }
    *open[W - 2] = 2;
    *open[W - 1] = 1;
    *busy[W - 1] = 1;
    int c = connect_nb(f->port[0]);
    usleep(50 * 1000);
    assert_int_equal(*pending[W - 2], 1);
    assert_int_equal(accept_all(a[W - 2]), 1);
    *pending[W - 2] = 0;
    *busy[W - 1] = 0;
    int d = connect_nb(f->port[0]);
    usleep(50 * 1000);
    assert_int_equal(*pending[W - 1], 1);
    assert_int_equal(accept_all(a[W - 1]), 1);
    close(c);
    close(d);
    teardown(ls, f, a, NULL);
}

/* A slot beyond the workers of the current configuration takes nothing once committed. */
static void test_shrunk_slot_takes_nothing(void **state)
{
    enum { N = 8 };
    fixture_t *f = fixture(1, 2);
    fg_listeners_t *ls = balanced_set(f);
    int *a = NULL, *b = NULL;
    generation(ls, f, &a);
    uint32_t *pending, *busy;
    uint64_t *owner;
    *fg_listeners_balance_slot(ls, 0, &pending, &busy, &owner) = 100; /* slot 0 heavily loaded */
    f->cfg.workers = 1;
    prepare_ok(ls, f, &b);
    owner_pid = 77;
    assert_int_equal(fg_listeners_commit(ls, owner_fn, NULL), 1);
    int c[N];
    for (int i = 0; i < N; i++)
        c[i] = connect_nb(f->port[0]);
    usleep(100 * 1000);
    assert_int_equal(accept_all(a[0]), N);
    for (int i = 0; i < N; i++)
        close(c[i]);
    teardown(ls, f, a, b);
}

/* Two committed slots of one address for the dead-slot tests, balanced or skipped; the page
 * words of slot s in open[s], pending[s], busy[s], owner[s]. */
typedef struct {
    fixture_t *f;
    fg_listeners_t *ls;
    int *a;
    uint32_t *open[2], *pending[2], *busy[2];
    uint64_t *owner[2];
} two_slots_t;

static void two_slots(two_slots_t *t)
{
    t->f = fixture(1, 2);
    t->ls = fg_listeners_new();
    if (!balanced(t->ls)) {
        fg_listeners_free(t->ls);
        free(t->f);
        skip();
    }
    char err[256];
    assert_int_equal(fg_listeners_prepare(t->ls, &t->f->cfg, &t->a, err, sizeof(err)), 0);
    fg_listeners_commit(t->ls, NULL, NULL);
    for (int s = 0; s < 2; s++)
        t->open[s] = fg_listeners_balance_slot(t->ls, s, &t->pending[s], &t->busy[s], &t->owner[s]);
}

static void two_slots_free(two_slots_t *t)
{
    free(t->a);
    fg_listeners_free(t->ls);
    free(t->f);
}

/* n connections to the address of t, accepted after a moment: how many each slot's socket had. */
static void connect_n(two_slots_t *t, int n, int got[2])
{
    int c[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++)
        c[i] = connect_nb(t->f->port[0]);
    usleep(100 * 1000);
    got[0] = accept_all(t->a[0]);
    got[1] = accept_all(t->a[1]);
    for (int i = 0; i < n; i++)
        close(c[i]);
}

/* The worker of slot 0 died holding no connection and running callbacks, the one of slot 1
 * holds ten: every new connection goes to slot 1 until slot 0 is offered again, then slot 0,
 * counted from zero, takes the next one. */
static void test_dead_slot_takes_nothing(void **state)
{
    two_slots_t t;
    two_slots(&t);
    *t.owner[0] = *t.owner[1] = 5;
    *t.open[0] = 0;
    *t.busy[0] = 1;
    *t.open[1] = 10;
    fg_listeners_slot_down(t.ls, 0, 5);
    assert_int_equal(*t.busy[0], 0);
    assert_int_equal(*t.pending[0], 0);
    int got[2];
    connect_n(&t, 8, got);
    assert_int_equal(got[0], 0);
    assert_int_equal(got[1], 8);

    *t.pending[1] = 0; /* the worker of slot 1 accepted them all */
    fg_listeners_slot_up(t.ls, 0);
    assert_int_equal(*t.open[0], 0);
    connect_n(&t, 1, got);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 0);
    two_slots_free(&t);
}

/* Another generation's worker claimed slot 0 (a reload): its counts stand; only the socket is
 * withdrawn, and a connection the program gives slot 0 falls back to the hash. */
static void test_dead_slot_spares_another_claim(void **state)
{
    two_slots_t t;
    two_slots(&t);
    enum { N = 16 };
    *t.owner[0] = 6;
    *t.open[0] = 0;
    *t.busy[0] = 1;
    *t.open[1] = 100;
    fg_listeners_slot_down(t.ls, 0, 5);
    assert_int_equal(*t.open[0], 0);
    assert_int_equal(*t.busy[0], 1);
    int got[2];
    connect_n(&t, N, got);
    assert_int_equal(*t.pending[0], N); /* chosen every time */
    assert_int_equal(got[0] + got[1], N);
    /* but never selected: 2^-16 chance that the hash put all of them on slot 0 anyway */
    assert_true(got[1] > 0);
    two_slots_free(&t);
}

/* With every slot down the kernel's hash queues each connection on one of the sockets, where
 * the replacements find it: none is refused or lost. */
static void test_all_slots_down_queue_by_hash(void **state)
{
    enum { N = 16 };
    two_slots_t t;
    two_slots(&t);
    *t.owner[0] = *t.owner[1] = 5;
    fg_listeners_slot_down(t.ls, 0, 5);
    fg_listeners_slot_down(t.ls, 1, 5);
    int got[2];
    connect_n(&t, N, got);
    assert_int_equal(got[0] + got[1], N);
    /* the hash, not one slot: 2^-15 chance that all 16 hash to the same socket */
    assert_true(got[0] > 0 && got[1] > 0);
    two_slots_free(&t);
}

/* A reload is pending with a third worker: its fresh socket stays out of the program when the
 * serving worker of that slot number comes back (it does not hold that socket). */
static void test_slot_up_leaves_fresh_sockets(void **state)
{
    two_slots_t t;
    two_slots(&t);
    int *b = NULL;
    char err[256];
    t.f->cfg.workers = 3;
    assert_int_equal(fg_listeners_prepare(t.ls, &t.f->cfg, &b, err, sizeof(err)), 0);
    uint32_t *pending, *busy;
    uint64_t *owner;
    uint32_t *open2 = fg_listeners_balance_slot(t.ls, 2, &pending, &busy, &owner);
    uint32_t before = *open2;
    fg_listeners_slot_up(t.ls, 2);
    assert_int_equal(*open2, before); /* an offer would have reset it */
    fg_listeners_slot_down(t.ls, 0, *t.owner[0]);
    fg_listeners_slot_up(t.ls, 0);
    *t.open[1] = 10;
    int got[2];
    connect_n(&t, 1, got);
    assert_int_equal(got[0], 1);
    assert_int_equal(accept_all(b[2]), 0);
    fg_listeners_rollback(t.ls, NULL, NULL);
    free(b);
    two_slots_free(&t);
}

static void test_bind_failure_undoes(void **state)
{
    fixture_t *f = fixture(2, 2);
    /* Somebody else (no SO_REUSEPORT) holds the second address. */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(busy, (struct sockaddr *)&f->servers[1].addr, f->servers[1].addrlen), 0);
    assert_int_equal(listen(busy, 1), 0);

    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL;
    char err[256] = "";
    assert_int_equal(fg_listeners_prepare(ls, &f->cfg, &a, err, sizeof(err)), -1);
    assert_null(a);
    assert_non_null(strstr(err, "servers[1].listen: bind"));
    assert_non_null(strstr(err, f->listen[1]));
    assert_non_null(strstr(err, "in use"));
    assert_int_equal(fg_listeners_active(ls), 0);
    /* The failed attempt left nothing pending: fixing the config works. */
    close(busy);
    generation(ls, f, &a);
    assert_int_equal(fg_listeners_active(ls), 4);
    teardown(ls, f, a, NULL);
}

/* A listener of someone else on addr (or its port on 0.0.0.0), SO_REUSEPORT as asked. */
static int foreign_listener(const fg_server_t *srv, int reuseport, int wildcard)
{
    struct sockaddr_in sin = *(const struct sockaddr_in *)&srv->addr;
    if (wildcard)
        sin.sin_addr.s_addr = htonl(INADDR_ANY);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
    if (reuseport)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 1), 0);
    return fd;
}

/* SO_REUSEPORT would let the bind succeed and share the traffic: the probe refuses it, with
 * nginx's wording, at start (prepare) and for -t (fg_listeners_probe). */
static void test_foreign_listener_refused(void **state)
{
    static const int cases[][2] = {{1, 0}, {1, 1}, {0, 0}}; /* reuseport, wildcard */
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        fixture_t *f = fixture(2, 2);
        int busy = foreign_listener(&f->servers[1], cases[c][0], cases[c][1]);
        char want[128], err[256] = "";
        snprintf(want, sizeof(want), "servers[1].listen: bind() to %s failed (%d: %s)",
                 f->listen[1], EADDRINUSE, strerror(EADDRINUSE));
        assert_int_equal(fg_listeners_probe(&f->cfg, err, sizeof(err)), -1);
        assert_string_equal(err, want);
        fg_listeners_t *ls = fg_listeners_new();
        int *a = NULL;
        err[0] = '\0';
        assert_int_equal(fg_listeners_prepare(ls, &f->cfg, &a, err, sizeof(err)), -1);
        assert_string_equal(err, want);
        assert_int_equal(fg_listeners_active(ls), 0);
        close(busy);
        assert_int_equal(fg_listeners_probe(&f->cfg, err, sizeof(err)), 0);
        fg_listeners_free(ls);
        free(f);
    }
}

/* Our own sockets never fail the probe: a kept address, more workers, the wildcard address
 * next to a specific one on the same port, an address added back while its retired socket
 * still waits for its old worker. A foreign listener on a new port still fails a reload. */
static void test_own_sockets_pass_the_probe(void **state)
{
    fixture_t *f = fixture(2, 1);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL;
    char err[256] = "";
    generation(ls, f, &a);
    free(a);
    f->cfg.workers = 2;
    generation(ls, f, &a);
    free(a);
    /* server 1 removed: its sockets retired, held for their worker */
    f->cfg.nservers = 1;
    owner_pid = 300;
    prepare_ok(ls, f, &a);
    assert_int_equal(fg_listeners_commit(ls, owner_fn, NULL), 2);
    free(a);
    /* added back at once, and 0.0.0.0 on server 0's port next to it */
    f->cfg.nservers = 3;
    set_server(f, 2, f->port[0]);
    ((struct sockaddr_in *)&f->servers[2].addr)->sin_addr.s_addr = htonl(INADDR_ANY);
    generation(ls, f, &a);
    assert_int_equal(fg_listeners_active(ls), 6);
    free(a);
    /* a reload adding an address someone else listens on fails and changes nothing */
    fixture_t *g = fixture(1, 1);
    int busy = foreign_listener(&g->servers[0], 1, 0);
    f->servers[2] = g->servers[0];
    assert_int_equal(fg_listeners_prepare(ls, &f->cfg, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "servers[2].listen: bind() to"));
    assert_int_equal(fg_listeners_active(ls), 6);
    close(busy);
    fg_listeners_free(ls);
    free(g);
    free(f);
}

static void test_duplicate_and_disabled(void **state)
{
    fixture_t *f = fixture(3, 2);
    set_server(f, 2, f->port[0]);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL;
    char err[256] = "";
    assert_int_equal(fg_listeners_prepare(ls, &f->cfg, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "servers[2].listen"));
    assert_int_equal(fg_listeners_active(ls), 0);

    f->servers[2].enabled = 0;
    f->servers[0].enabled = 0;
    generation(ls, f, &a);
    assert_int_equal(a[0], -1);
    assert_int_equal(a[1], -1);
    assert_true(a[2] > 2 && a[3] > 2);
    assert_int_equal(a[4], -1);
    assert_int_equal(a[5], -1);
    assert_int_equal(fg_listeners_active(ls), 2);
    teardown(ls, f, a, NULL);
}

static void test_close_in_child(void **state)
{
    fixture_t *f = fixture(2, 2);
    fg_listeners_t *ls = fg_listeners_new();
    int *a = NULL, *b = NULL;
    generation(ls, f, &a);
    f->cfg.workers = 1;
    prepare_ok(ls, f, &b);
    owner_pid = 10;
    fg_listeners_commit(ls, owner_fn, NULL); /* a[1], a[3] retired */

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int keep[2] = {a[0], a[2]};
        fg_listeners_close_in_child(ls, keep, 2);
        int ok = is_open(a[0]) && is_open(a[2]) && !is_open(a[1]) && !is_open(a[3]);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The parent's copies are untouched. */
    for (int i = 0; i < 4; i++)
        assert_true(is_open(a[i]));
    teardown(ls, f, a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_per_slot),
        cmocka_unit_test(test_kept_address_keeps_fds),
        cmocka_unit_test(test_grow_then_rollback),
        cmocka_unit_test(test_rollback_with_owner_retires),
        cmocka_unit_test(test_shrink_and_remove_retire),
        cmocka_unit_test(test_retired_keeps_queue),
        cmocka_unit_test(test_blocked_socket_drops_syn),
        cmocka_unit_test(test_least_connections_steers),
        cmocka_unit_test(test_busy_worker_passed_over),
        cmocka_unit_test(test_busy_second_slot_passed_over),
        cmocka_unit_test(test_busy_weight_on_the_last_of_most_slots),
        cmocka_unit_test(test_shrunk_slot_takes_nothing),
        cmocka_unit_test(test_dead_slot_takes_nothing),
        cmocka_unit_test(test_dead_slot_spares_another_claim),
        cmocka_unit_test(test_all_slots_down_queue_by_hash),
        cmocka_unit_test(test_slot_up_leaves_fresh_sockets),
        cmocka_unit_test(test_bind_failure_undoes),
        cmocka_unit_test(test_foreign_listener_refused),
        cmocka_unit_test(test_own_sockets_pass_the_probe),
        cmocka_unit_test(test_duplicate_and_disabled),
        cmocka_unit_test(test_close_in_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
