#include "master/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"

struct fg_notify_s {
    int fd;
    int warned;
    struct sockaddr_un sun;
    socklen_t sunlen;
};

fg_notify_t *fg_notify_new(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return NULL;
    fg_notify_t *n = calloc(1, sizeof(*n));
    size_t len = strlen(path);
    if (n == NULL || (path[0] != '/' && path[0] != '@') || len >= sizeof(n->sun.sun_path)) {
        fg_log_warn("NOTIFY_SOCKET \"%s\": not a usable socket path, systemd not notified", path);
        free(n);
        return NULL;
    }
    n->sun.sun_family = AF_UNIX;
    memcpy(n->sun.sun_path, path, len);
    if (path[0] == '@')
        n->sun.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL in the length */
    n->sunlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (n->fd == -1) {
        fg_log_warn("NOTIFY_SOCKET: socket: %s", strerror(errno));
        free(n);
        return NULL;
    }
    unsetenv("NOTIFY_SOCKET");
    return n;
}

void fg_notify_send(fg_notify_t *n, const char *fmt, ...)
{
    if (n == NULL)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(msg))
        len = sizeof(msg) - 1;
    if (sendto(n->fd, msg, (size_t)len, MSG_NOSIGNAL, (struct sockaddr *)&n->sun, n->sunlen) ==
            -1 &&
        !n->warned) {
        n->warned = 1;
        fg_log_warn("cannot notify systemd: %s", strerror(errno));
    }
}

void fg_notify_free(fg_notify_t *n)
{
    if (n == NULL)
        return;
    close(n->fd);
    free(n);
}
