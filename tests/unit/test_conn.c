/* Unit tests for worker/core/conn.c: a file queued between output bytes arrives intact and in
 * order with sendfile(2) and with the read + write fallback of a transport without it, one file
 * at a time; released buffers come back before the next callback. Driven over a socketpair
 * with a real event loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "worker/core/conn.h"

#define FILE_SIZE (700 * 1024 + 13)

typedef struct {
    int reads;
    size_t input_len;
    int events;
    int what;
} seen_t;

static void cb_read(fg_conn_t *c, void *arg)
{
    seen_t *s = arg;
    s->reads++;
    s->input_len = evbuffer_get_length(fg_conn_input(c));
}

static void cb_drain(fg_conn_t *c, void *arg)
{
    (void)c;
    (void)arg;
}

static void cb_event(fg_conn_t *c, void *arg, int what)
{
    (void)c;
    ((seen_t *)arg)->events++;
    ((seen_t *)arg)->what = what;
}

static const fg_conn_cbs_t cbs = {cb_read, cb_drain, cb_event};

static int temp_file(unsigned char *content)
{
    char path[] = "/tmp/fg-test-conn.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    for (size_t i = 0; i < FILE_SIZE; i++)
        content[i] = (unsigned char)(i * 7 + i / 251);
    assert_int_equal(write(fd, content, FILE_SIZE), FILE_SIZE);
    return fd;
}

static int fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

/* "HEAD" + file[off, off+len) + "TAIL" through a conn; sendfile on or off. */
static void send_between(int use_sendfile)
{
    static unsigned char content[FILE_SIZE];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct event_base *base = event_base_new();
    seen_t seen = {0};
    fg_conn_t *c = fg_conn_new(base, sv[0], &cbs, &seen);
    assert_non_null(c);
    fg_conn_set_sendfile(c, use_sendfile);
    /* One run gives its released buffers and write event to spares and takes them back. */
    fg_conn_spares_t *sp = use_sendfile ? NULL : fg_conn_spares_new();
    if (sp != NULL)
        fg_conn_set_spares(c, sp);
    int fd = temp_file(content);
    const off_t off = 10, len = FILE_SIZE - 20;

    evbuffer_add(fg_conn_output(c), "HEAD", 4);
    assert_int_equal(fg_conn_send_file(c, fd, off, len), 0);
    assert_true(fg_conn_sending_file(c));
    evbuffer_add(fg_conn_output(c), "TAIL", 4);
    /* One file at a time: a second is refused and closed. */
    int fd2 = dup(fd);
    assert_int_equal(fg_conn_send_file(c, fd2, 0, 10), -EBUSY);
    assert_false(fd_open(fd2));
    assert_int_equal(fg_conn_pending(c), 4 + (size_t)len + 4);

    size_t want = 8 + (size_t)len;
    unsigned char *got = malloc(want + 1);
    size_t have = 0;
    assert_int_equal(fg_conn_flush(c), 0);
    for (int spins = 0; spins < 100000 && (have < want || fg_conn_pending(c) > 0); spins++) {
        ssize_t n = read(sv[1], got + have, want + 1 - have);
        if (n > 0)
            have += (size_t)n;
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    assert_int_equal(have, want);
    assert_memory_equal(got, "HEAD", 4);
    assert_memory_equal(got + 4, content + off, (size_t)len);
    assert_memory_equal(got + 4 + len, "TAIL", 4);
    assert_int_equal(fg_conn_pending(c), 0);
    assert_false(fg_conn_sending_file(c));
    assert_false(fd_open(fd)); /* closed once sent */
    assert_int_equal(seen.events, 0);

    /* Released while idle, the buffers are back for the next callback. */
    fg_conn_release(c);
    fg_conn_read(c, 1, 0);
    assert_int_equal(write(sv[1], "xy", 2), 2);
    for (int spins = 0; spins < 1000 && seen.reads == 0; spins++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(seen.reads, 1);
    assert_int_equal(seen.input_len, 2);
    /* The write side works again after the release: a second file, then bytes. */
    fd = temp_file(content);
    assert_int_equal(fg_conn_send_file(c, fd, 0, 100), 0);
    evbuffer_add(fg_conn_output(c), "END", 3);
    assert_int_equal(fg_conn_flush(c), 0);
    have = 0;
    for (int spins = 0; spins < 1000 && have < 103; spins++) {
        ssize_t n = read(sv[1], got + have, want + 1 - have);
        if (n > 0)
            have += (size_t)n;
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    assert_int_equal(have, 103);
    assert_memory_equal(got, content, 100);
    assert_memory_equal(got + 100, "END", 3);

    free(got);
    fg_conn_free(c);
    fg_conn_spares_free(sp);
    close(sv[1]);
    event_base_free(base);
}

static void test_file_with_sendfile(void **state)
{
    (void)state;
    send_between(1);
}

static void test_file_with_read_write(void **state)
{
    (void)state;
    send_between(0);
}

/* A file that shrank under the sender cannot complete the response: an error, not a hang. */
static void test_file_shorter_than_announced(void **state)
{
    (void)state;
    static unsigned char content[FILE_SIZE];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct event_base *base = event_base_new();
    seen_t seen = {0};
    fg_conn_t *c = fg_conn_new(base, sv[0], &cbs, &seen);
    int fd = temp_file(content);
    assert_int_equal(fg_conn_send_file(c, fd, FILE_SIZE - 5, 10), 0);
    assert_int_equal(fg_conn_flush(c), -1);
    assert_int_equal(fg_conn_errno(c), EIO);
    fg_conn_free(c); /* closes the file too */
    assert_false(fd_open(fd));
    close(sv[1]);
    event_base_free(base);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run the loop for `secs`, or until an event reaches the owner. */
static void run_for(struct event_base *base, seen_t *seen, double secs)
{
    double until = now_s() + secs;
    while (now_s() < until && seen->events == 0) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(2000);
    }
}

/* The read timer is moved lazily: a timeout shortened while a longer one is pending fires at
 * the shorter one; reads push it forward (a timer that fires early is armed again for the
 * rest); "no timeout" after a timeout leaves nothing to fire. */
static void test_read_timeout_moves_lazily(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct event_base *base = event_base_new();
    seen_t seen = {0};
    fg_conn_t *c = fg_conn_new(base, sv[0], &cbs, &seen);
    assert_non_null(c);

    /* shortened: 10 s pending, then 150 ms */
    fg_conn_read(c, 1, 10000);
    double t0 = now_s();
    fg_conn_read(c, 1, 150);
    run_for(base, &seen, 3);
    assert_int_equal(seen.events, 1);
    assert_int_equal(seen.what, FG_CONN_TIMEOUT_READ);
    double took = now_s() - t0;
    assert_true(took >= 0.14 && took < 2.5);

    /* pushed by reads: 300 ms timeout, a byte every 100 ms for 600 ms, then silence */
    seen = (seen_t){0};
    fg_conn_read(c, 1, 300);
    for (int i = 0; i < 6; i++) {
        run_for(base, &seen, 0.1);
        assert_int_equal(write(sv[1], "x", 1), 1);
    }
    double last = now_s();
    run_for(base, &seen, 0.05);
    assert_int_equal(seen.events, 0);
    assert_int_equal(seen.reads, 6);
    run_for(base, &seen, 3);
    assert_int_equal(seen.events, 1);
    assert_int_equal(seen.what, FG_CONN_TIMEOUT_READ);
    took = now_s() - last;
    assert_true(took >= 0.29 && took < 2.5);

    /* a pending timer finds nothing due after "no timeout" */
    seen = (seen_t){0};
    fg_conn_read(c, 1, 100);
    fg_conn_read(c, 1, 0);
    run_for(base, &seen, 0.4);
    assert_int_equal(seen.events, 0);

    fg_conn_free(c);
    close(sv[1]);
    event_base_free(base);
}

/* epoll_ctl calls, counted: this definition takes the place of libc's for libevent too. */
static int epoll_ctls;

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    epoll_ctls++;
    return (int)syscall(SYS_epoll_ctl, epfd, op, fd, ev);
}

static void cb_read_drain(fg_conn_t *c, void *arg)
{
    cb_read(c, arg);
    evbuffer_drain(fg_conn_input(c), evbuffer_get_length(fg_conn_input(c)));
}

static const fg_conn_cbs_t drain_cbs = {cb_read_drain, cb_drain, cb_event};

/* One byte from the peer, read and drained by the conn. */
static void one_read(struct event_base *base, int peer, seen_t *seen)
{
    int before = seen->reads;
    assert_int_equal(write(peer, "x", 1), 1);
    for (int spins = 0; spins < 1000 && seen->reads == before; spins++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(seen->reads, before + 1);
}

/* A keep-alive connection going idle (fg_conn_release: its read timeout rides on the read
 * event) and busy again (the timer event takes it back) costs no epoll_ctl, and the timeouts
 * of both states still fire on time. */
static void test_idle_and_back_without_epoll_ctl(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct event_base *base = event_base_new();
    seen_t seen = {0};
    fg_conn_t *c = fg_conn_new(base, sv[0], &drain_cbs, &seen);
    assert_non_null(c);
    fg_conn_spares_t *sp = fg_conn_spares_new();
    fg_conn_set_spares(c, sp);

    fg_conn_read(c, 1, 5000);
    one_read(base, sv[1], &seen);
    fg_conn_release(c);
    epoll_ctls = 0; /* the descriptor is registered: nothing more to tell epoll */
    for (int i = 0; i < 10; i++) {
        one_read(base, sv[1], &seen);
        fg_conn_release(c);
    }
    assert_int_equal(epoll_ctls, 0);

    /* busy again after idle: the busy timeout fires, once */
    fg_conn_read(c, 1, 300);
    one_read(base, sv[1], &seen);
    fg_conn_release(c);
    one_read(base, sv[1], &seen);
    double t0 = now_s();
    run_for(base, &seen, 3);
    assert_int_equal(seen.events, 1);
    assert_int_equal(seen.what, FG_CONN_TIMEOUT_READ);
    assert_true(now_s() - t0 >= 0.29);
    run_for(base, &seen, 0.4);
    assert_int_equal(seen.events, 1);

    /* idle: the timeout carried by the read event fires */
    seen = (seen_t){0};
    fg_conn_read(c, 1, 200);
    one_read(base, sv[1], &seen);
    fg_conn_release(c);
    t0 = now_s();
    run_for(base, &seen, 3);
    assert_int_equal(seen.events, 1);
    assert_int_equal(seen.what, FG_CONN_TIMEOUT_READ);
    assert_true(now_s() - t0 >= 0.19);

    fg_conn_free(c);
    fg_conn_spares_free(sp);
    close(sv[1]);
    event_base_free(base);
}

/* After an idle spell the read timeout stays on the read event while the connection is busy,
 * unless a shorter one is asked for: each timeout asked for still fires on time, none late and
 * none when "no timeout" was asked for. */
static void test_idle_timeout_carried_through_busy(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct event_base *base = event_base_new();
    seen_t seen = {0};
    fg_conn_t *c = fg_conn_new(base, sv[0], &drain_cbs, &seen);
    assert_non_null(c);
    fg_conn_spares_t *sp = fg_conn_spares_new();
    fg_conn_set_spares(c, sp);

    /* busy with a shorter timeout than the idle one: the shorter one fires */
    fg_conn_read(c, 1, 5000);
    one_read(base, sv[1], &seen);
    fg_conn_release(c);
    one_read(base, sv[1], &seen);
    fg_conn_read(c, 1, 300);
    double t0 = now_s();
    run_for(base, &seen, 3);
    assert_int_equal(seen.events, 1);
    assert_int_equal(seen.what, FG_CONN_TIMEOUT_READ);
    assert_true(now_s() - t0 >= 0.29 && now_s() - t0 < 2);

    /* busy with no timeout: the idle one, still pending, finds nothing due */
    seen = (seen_t){0};
    fg_conn_read(c, 1, 200);
    one_read(base, sv[1], &seen);
    fg_conn_release(c);
    one_read(base, sv[1], &seen);
    fg_conn_read(c, 1, 0);
    run_for(base, &seen, 0.5);
    assert_int_equal(seen.events, 0);

    /* idle again after a busy spell: the timeout runs from the last fg_conn_read, not from
     * the wake-up that ended the previous idle spell */
    fg_conn_read(c, 1, 300);
    fg_conn_release(c);
    one_read(base, sv[1], &seen);
    fg_conn_read(c, 1, 0);
    run_for(base, &seen, 0.2);
    fg_conn_read(c, 1, 300);
    fg_conn_release(c);
    t0 = now_s();
    run_for(base, &seen, 3);
    assert_int_equal(seen.events, 1);
    assert_int_equal(seen.what, FG_CONN_TIMEOUT_READ);
    assert_true(now_s() - t0 >= 0.29 && now_s() - t0 < 2);

    /* a shorter timeout asked for while idle, then a read: the read restarts the idle
     * timeout on the read event, which must not outlast the shorter one */
    seen = (seen_t){0};
    fg_conn_read(c, 1, 1000);
    one_read(base, sv[1], &seen);
    fg_conn_release(c);
    run_for(base, &seen, 0.8); /* 300 ms from here ends after the idle timeout: kept */
    fg_conn_read(c, 1, 300);
    one_read(base, sv[1], &seen);
    t0 = now_s();
    run_for(base, &seen, 3);
    assert_int_equal(seen.events, 1);
    assert_int_equal(seen.what, FG_CONN_TIMEOUT_READ);
    assert_true(now_s() - t0 >= 0.29 && now_s() - t0 < 0.9);

    fg_conn_free(c);
    fg_conn_spares_free(sp);
    close(sv[1]);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_with_sendfile),
        cmocka_unit_test(test_file_with_read_write),
        cmocka_unit_test(test_file_shorter_than_announced),
        cmocka_unit_test(test_read_timeout_moves_lazily),
        cmocka_unit_test(test_idle_and_back_without_epoll_ctl),
        cmocka_unit_test(test_idle_timeout_carried_through_busy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
