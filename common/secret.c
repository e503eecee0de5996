/* See common/secret.h. */
#include "common/secret.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define SECRET_CAP 4096                   /* the longest secret, whatever the caller's cap */
#define SECRET_READ_MAX (SECRET_CAP + 64) /* what is read of a file, at most */

int fg_secret_load(const char *path, uint8_t *secret, size_t cap, size_t min, char *err,
                   size_t errlen)
{
    uint8_t buf[SECRET_READ_MAX];
    struct stat st;
    if (cap > SECRET_CAP)
        cap = SECRET_CAP;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "%s may be read or written by others than its owner (mode %03o): "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        close(fd);
        return -1;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            close(fd);
            OPENSSL_cleanse(buf, sizeof(buf));
            return -1;
        }
        if (r == 0 || (n += (size_t)r) == sizeof(buf))
            break;
    }
    close(fd);
    size_t s = 0, e = n;
    while (s < e && isspace(buf[s]))
        s++;
    while (e > s && isspace(buf[e - 1]))
        e--;
    int rc = -1;
    if (n == sizeof(buf) || e - s > cap)
        snprintf(err, errlen, "%s: the secret is longer than %zu bytes", path, cap);
    else if (e - s < min)
        snprintf(err, errlen, "%s: the secret is shorter than %zu bytes", path, min);
    else {
        memcpy(secret, buf + s, e - s);
        rc = (int)(e - s);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}
