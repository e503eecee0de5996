#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "master/status.h"
#include "tests/unit/child_server.h"

static char dir[48];
static char path[100];

static json_t *cmd_ping(void *arg)
{
    int *calls = arg;
    (*calls)++;
    return json_pack("{s:s, s:i}", "pong", "yes", "calls", *calls);
}

static json_t *cmd_fail(void *arg)
{
    return NULL;
}

static const fg_status_cmd_t cmds[] = {
    {"show ping", "answers pong", cmd_ping},
    {"show fail", "internal error", cmd_fail},
    {NULL, NULL, NULL},
};

/* Deferred commands: "wait" takes the next ticket; "resolve N" answers the tickets up to N. */
static fg_status_t *served;
static uint64_t issued;

static json_t *cmd_wait(void *arg, uint64_t *ticket)
{
    *ticket = ++issued;
    return NULL;
}

static json_t *cmd_resolve(void *arg, const char *args)
{
    json_t *doc = json_pack("{s:i}", "upto", atoi(args));
    fg_status_resolve(served, (uint64_t)atoi(args), doc);
    json_decref(doc);
    return json_pack("{s:b}", "resolved", 1);
}

static const fg_status_defer_cmd_t defer_cmds[] = {
    {"wait", "answered by resolve", cmd_wait},
    {NULL, NULL, NULL},
};

static const fg_status_args_cmd_t args_cmds[] = {
    {"resolve", "answer the waits up to N", cmd_resolve},
    {NULL, NULL, NULL},
};

static int start(struct event_base *base, void *arg)
{
    static int calls;
    char err[256];
    fg_status_t *st = fg_status_new(base, path, NULL, cmds, &calls, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    unsigned idle_ms = *(const unsigned *)arg;
    if (idle_ms)
        fg_status_set_idle_timeout(st, idle_ms);
    served = st;
    fg_status_set_defer_cmds(st, defer_cmds);
    fg_status_set_args_cmds(st, args_cmds);
    return 0;
}

/* A server in a child process, so the test itself can use blocking clients. */
static pid_t serve(unsigned idle_ms)
{
    return child_server(start, &idle_ms);
}

static void stop(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    unlink(path);
}

static int raw_connect(void)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/fg-status-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/status.sock", dir);
    return 0;
}

static int teardown(void **state)
{
    unlink(path);
    rmdir(dir);
    return 0;
}

static void test_mode_and_commands(void **state)
{
    pid_t pid = serve(0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISSOCK(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);

    const char *q[] = {"show ping", "  show   ping  ", "help", "nope x", "show fail"};
    json_t *a[5];
    char err[256];
    assert_int_equal(fg_status_query(path, q, a, 5, err, sizeof(err)), 0);
    assert_string_equal(json_string_value(json_object_get(a[0], "pong")), "yes");
    assert_int_equal(json_integer_value(json_object_get(a[1], "calls")), 2);
    json_t *list = json_object_get(a[2], "commands");
    assert_true(json_array_size(list) == 6); /* two given, wait, resolve, help, quit */
    assert_string_equal(json_string_value(json_object_get(a[3], "error")), "unknown command");
    assert_string_equal(json_string_value(json_object_get(a[3], "command")), "nope x");
    assert_string_equal(json_string_value(json_object_get(a[4], "error")), "internal error");
    for (int i = 0; i < 5; i++)
        json_decref(a[i]);
    stop(pid);
}

static void test_quit_and_split_lines(void **state)
{
    pid_t pid = serve(0);
    int fd = raw_connect();
    assert_int_equal(write(fd, "show pi", 7), 7);
    usleep(50 * 1000);
    assert_int_equal(write(fd, "ng\r\n\nquit\nshow ping\n", 20), 20);
    char buf[4096];
    read_all(fd, buf, sizeof(buf));
    /* One answer, CRLF tolerated, the empty line ignored, nothing after quit. */
    assert_string_equal(buf, "{\"pong\":\"yes\",\"calls\":1}\n");
    close(fd);
    stop(pid);
}

static void test_long_line(void **state)
{
    pid_t pid = serve(0);
    char *big = malloc(FG_STATUS_MAX_LINE + 100);
    memset(big, 'x', FG_STATUS_MAX_LINE + 100);
    char buf[4096];

    /* Without a newline: answered and closed once the buffer passes the limit. */
    int fd = raw_connect();
    assert_int_equal(write(fd, big, FG_STATUS_MAX_LINE + 100), FG_STATUS_MAX_LINE + 100);
    read_all(fd, buf, sizeof(buf));
    assert_string_equal(buf, "{\"error\":\"line too long\",\"max\":4096}\n");
    close(fd);

    /* Exactly the limit is still a command (an unknown one). */
    fd = raw_connect();
    big[FG_STATUS_MAX_LINE] = '\n';
    assert_int_equal(write(fd, big, FG_STATUS_MAX_LINE + 1), FG_STATUS_MAX_LINE + 1);
    shutdown(fd, SHUT_WR);
    char *answer = malloc(2 * FG_STATUS_MAX_LINE);
    read_all(fd, answer, 2 * FG_STATUS_MAX_LINE);
    assert_non_null(strstr(answer, "\"unknown command\""));
    free(answer);
    close(fd);
    free(big);
    stop(pid);
}

static void test_idle_timeout(void **state)
{
    pid_t pid = serve(200);
    int fd = raw_connect();
    char buf[64];
    errno = 0;
    /* The server closes the silent client: EOF well before our 3 s receive timeout. */
    assert_int_equal(read_all(fd, buf, sizeof(buf)), 0);
    assert_int_equal(errno == EAGAIN, 0);
    close(fd);
    stop(pid);
}

/* Read one line (blocking up to the 3 s receive timeout); "" when nothing came. */
static void read_line(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len < cap - 1 && read(fd, buf + len, 1) == 1 && buf[len] != '\n')
        len++;
    buf[len] = '\0';
}

static int readable(int fd, int ms)
{
    struct timeval tv = {0, ms * 1000};
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(fd, &rd);
    return select(fd + 1, &rd, NULL, NULL, &tv) > 0;
}

static void test_deferred_answers_in_ticket_order(void **state)
{
    pid_t pid = serve(0);
    int a = raw_connect(), b = raw_connect();
    char buf[256];
    /* a waits, and its next command stays queued behind the answer */
    assert_int_equal(write(a, "wait\nshow ping\n", 15), 15);
    usleep(50 * 1000);
    assert_int_equal(write(b, "wait\n", 5), 5);
    usleep(50 * 1000);
    assert_false(readable(a, 100));
    assert_false(readable(b, 0));

    const char *q[] = {"resolve 1"};
    json_t *ans;
    char err[256];
    assert_int_equal(fg_status_query(path, q, &ans, 1, err, sizeof(err)), 0);
    json_decref(ans);
    read_line(a, buf, sizeof(buf));
    assert_string_equal(buf, "{\"upto\":1}");
    read_line(a, buf, sizeof(buf));
    assert_string_equal(buf, "{\"pong\":\"yes\",\"calls\":1}");
    assert_false(readable(b, 100)); /* ticket 2 is not covered by 1 */

    q[0] = "resolve 2";
    assert_int_equal(fg_status_query(path, q, &ans, 1, err, sizeof(err)), 0);
    json_decref(ans);
    read_line(b, buf, sizeof(buf));
    assert_string_equal(buf, "{\"upto\":2}");
    close(a);
    close(b);
    stop(pid);
}

static void test_query_wait_times_out(void **state)
{
    pid_t pid = serve(0);
    const char *q[] = {"wait"};
    json_t *ans;
    char err[256];
    int rc = fg_status_query_wait(path, q, &ans, 1, 300, err, sizeof(err));
    stop(pid); /* first: a failed assertion must not leave the server behind */
    assert_int_equal(rc, FG_STATUS_TIMEOUT);
    assert_non_null(strstr(err, "no answer to \"wait\" within 1 s"));
}

static void test_stale_live_and_foreign(void **state)
{
    char err[256];
    struct event_base *base = event_base_new();

    /* A live server owns the path: a second one is refused. */
    pid_t pid = serve(0);
    assert_null(fg_status_new(base, path, NULL, cmds, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "another process is listening"));
    /* Killed without cleanup: the stale socket file is replaced. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fg_status_t *st = fg_status_new(base, path, NULL, cmds, NULL, err, sizeof(err));
    assert_non_null(st);
    fg_status_free(st);
    assert_int_equal(access(path, F_OK), -1); /* removed on free */

    /* A regular file is never deleted. */
    FILE *f = fopen(path, "w");
    fclose(f);
    assert_null(fg_status_new(base, path, NULL, cmds, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "not a socket"));
    assert_int_equal(access(path, F_OK), 0);
    unlink(path);

    assert_null(fg_status_new(base, path, "no-such-group-fg", cmds, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "statusGroup"));
    assert_int_equal(access(path, F_OK), -1);
    event_base_free(base);

    /* Nobody listening: the client reports it. */
    json_t *a[1];
    const char *q[] = {"show ping"};
    assert_int_equal(fg_status_query(path, q, a, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot connect"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mode_and_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quit_and_split_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_live_and_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_answers_in_ticket_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_wait_times_out, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
