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

static int b64url_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

int fg_secret_load_b64url(const char *path, uint8_t *key, size_t cap, size_t min, char *err,
                          size_t errlen)
{
    uint8_t text[SECRET_CAP];
    int n = fg_secret_load(path, text, sizeof(text), 1, err, errlen);
    if (n < 0)
        return -1;
    size_t len = (size_t)n, out = 0;
    while (len > 0 && text[len - 1] == '=')
        len--;
    uint32_t acc = 0;
    int bits = 0, rc = -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value(text[i]);
        if (v < 0) {
            snprintf(err, errlen, "%s: not a base64url key (character %zu)", path, i + 1);
            goto out;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (out == cap) {
                snprintf(err, errlen, "%s: the key is longer than %zu bytes", path, cap);
                goto out;
            }
            key[out++] = (uint8_t)(acc >> bits);
        }
    }
    if (len % 4 == 1) {
        snprintf(err, errlen, "%s: not a base64url key (truncated)", path);
        goto out;
    }
    if (out < min) {
        snprintf(err, errlen, "%s: the key is shorter than %zu bytes", path, min);
        goto out;
    }
    rc = (int)out;
out:
    OPENSSL_cleanse(text, sizeof(text));
    OPENSSL_cleanse(&acc, sizeof(acc));
    if (rc < 0)
        OPENSSL_cleanse(key, out);
    return rc;
}
