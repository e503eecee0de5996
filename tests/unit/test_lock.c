#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/lock.h"

static fg_shm_lock_t *shared_lock(void)
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(fg_shm_lock_init(p), 0);
    return p;
}

static void test_lock_unlock(void **state)
{
    fg_shm_lock_t *l = shared_lock();
    assert_int_equal(fg_shm_lock(l), 0);
    fg_shm_unlock(l);
    assert_int_equal(fg_shm_lock(l), 0);
    fg_shm_unlock(l);
    assert_int_equal(l->recoveries, 0);
    munmap(l, 4096);
}

/* A child takes the lock and is killed with SIGKILL while holding it: the parent must get the
 * lock (not hang) and be told that the data needs repair, once. */
static void test_owner_killed(void **state)
{
    fg_shm_lock_t *l = shared_lock();
    int pp[2];
    assert_int_equal(pipe(pp), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fg_shm_lock(l);
        char c = 'L';
        if (write(pp[1], &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c;
    assert_int_equal(read(pp[0], &c, 1), 1);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    alarm(5); /* a wedged lock fails the test instead of hanging it */
    assert_int_equal(fg_shm_lock(l), FG_SHM_LOCK_RECOVERED);
    fg_shm_unlock(l);
    assert_int_equal(l->recoveries, 1);
    /* Consistent again: a plain lock from now on. */
    assert_int_equal(fg_shm_lock(l), 0);
    fg_shm_unlock(l);
    alarm(0);
    close(pp[0]);
    close(pp[1]);
    munmap(l, 4096);
}

static void test_exclusion_across_processes(void **state)
{
    fg_shm_lock_t *l = shared_lock();
    uint64_t *counter = (uint64_t *)((char *)l + 2048);
    *counter = 0;
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            for (int i = 0; i < 20000; i++) {
                fg_shm_lock(l);
                uint64_t v = *counter; /* non-atomic read-modify-write: only the lock saves it */
                *(volatile uint64_t *)counter = v + 1;
                fg_shm_unlock(l);
            }
            _exit(0);
        }
    }
    for (int k = 0; k < 4; k++)
        waitpid(kids[k], NULL, 0);
    assert_int_equal(*counter, 80000);
    munmap(l, 4096);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_unlock),
        cmocka_unit_test(test_owner_killed),
        cmocka_unit_test(test_exclusion_across_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
