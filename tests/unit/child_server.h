/* Test support for the master's servers (status socket, HTTP server): the server runs in a child
 * process with its own event loop, so the test drives it with plain blocking sockets. Include
 * after cmocka.h. */
#ifndef FG_TEST_CHILD_SERVER_H
#define FG_TEST_CHILD_SERVER_H

#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#include <event2/event.h>

/* Fork a child that calls start(base, arg) to set its server up on a new event base (0, or
 * -1 to give up) and then serves until it is killed. Returns once the server listens. */
static inline pid_t child_server(int (*start)(struct event_base *base, void *arg), void *arg)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        struct event_base *base = event_base_new();
        if (base == NULL || start(base, arg) < 0 || write(p[1], "r", 1) != 1)
            _exit(1);
        close(p[1]);
        event_base_dispatch(base);
        _exit(0);
    }
    close(p[1]);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    return pid;
}

/* Everything the server sends until it closes (or the socket's receive timeout). */
static inline size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return len;
}

#endif
