/* See common/atomic_file.h. */
#include "common/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fg_atomic_file_prepare(const char *path, const char *suffix, const void *data, size_t len,
                           mode_t mode, char *tmp, size_t tmplen, char *err, size_t errlen)
{
    if (snprintf(tmp, tmplen, "%s%s", path, suffix) >= (int)tmplen) {
        snprintf(err, errlen, "%s: path too long", path);
        tmp[0] = '\0';
        return -1;
    }
    /* a new inode every time: whatever sits at tmp (a leftover, a link to another file) is
     * removed, never written through */
    if (unlink(tmp) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot write %s: cannot remove %s: %s", path, tmp, strerror(errno));
        tmp[0] = '\0';
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    const char *p = data;
    size_t left = len;
    while (fd >= 0 && left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    int e = errno;
    if (fd < 0 || left > 0 || fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        e = fd < 0 || left > 0 ? e : errno;
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        unlink(tmp);
        tmp[0] = '\0';
        return -1;
    }
    return 0;
}

int fg_atomic_file_commit(const char *tmp, const char *path, char *err, size_t errlen)
{
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int fg_atomic_file_write(const char *path, const char *suffix, const void *data, size_t len,
                         mode_t mode, char *err, size_t errlen)
{
    char tmp[4096];
    if (fg_atomic_file_prepare(path, suffix, data, len, mode, tmp, sizeof(tmp), err, errlen) < 0)
        return -1;
    return fg_atomic_file_commit(tmp, path, err, errlen);
}
