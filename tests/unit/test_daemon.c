#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "master/daemon.h"

static void temp_path(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/fg_daemon_test_%d", (int)getpid());
}

static int child_exit_status(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* -t asks whether the instance runs without disturbing it: held by another process → 1; free,
 * or never created → 0; and asking does not take the lock away from a master starting next. */
static void test_instance_running(void **state)
{
    char path[256], lock[300], err[512];
    temp_path(path, sizeof(path));
    snprintf(lock, sizeof(lock), "%s.lock", path);
    unlink(lock);
    assert_int_equal(fg_instance_running(path), 0);

    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char e[512], c = 'L';
        int fd = fg_instance_lock(path, e, sizeof(e));
        if (fd < 0 || write(go[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
            _exit(1);
        _exit(0);
    }
    char c;
    assert_int_equal(read(go[0], &c, 1), 1);
    assert_int_equal(fg_instance_running(path), 1);
    assert_int_equal(fg_instance_lock(path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "already running"));
    assert_int_equal(write(done[1], &c, 1), 1);
    assert_int_equal(child_exit_status(pid), 0);

    assert_int_equal(fg_instance_running(path), 0);
    int fd = fg_instance_lock(path, err, sizeof(err));
    assert_true(fd >= 0);
    close(fd);
    for (int i = 0; i < 2; i++) {
        close(go[i]);
        close(done[i]);
    }
    unlink(lock);
}

/* The daemon keeps 0, 1 and 2 and nothing else its caller left open. */
static void test_close_inherited(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int a = open("/dev/null", O_RDONLY), p[2];
        if (a < 3 || pipe(p) != 0 || dup2(p[1], 200) != 200)
            _exit(2);
        fg_daemon_close_inherited();
        int ok = fcntl(0, F_GETFD) != -1 && fcntl(1, F_GETFD) != -1 && fcntl(2, F_GETFD) != -1 &&
                 fcntl(a, F_GETFD) == -1 && fcntl(p[0], F_GETFD) == -1 &&
                 fcntl(p[1], F_GETFD) == -1 && fcntl(200, F_GETFD) == -1;
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(child_exit_status(pid), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instance_running),
        cmocka_unit_test(test_close_inherited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
