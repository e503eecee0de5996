/* See worker/handlers/acme_challenge.h. */
#include "worker/handlers/acme_challenge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker/core/context.h"

/* A key authorization is a token (FG_ACME_TOKEN_MAX), '.', and a 43-character thumbprint
 * (RFC 8555 8.1). */
#define KEYAUTH_MAX 512

int fg_acme_challenge_answer(fg_request_t *req)
{
    if (!fg_request_is_acme_challenge(req))
        return 0;
    if (!fg_str_eq(req->method, FG_STR_LIT("GET")) && !fg_str_eq(req->method, FG_STR_LIT("HEAD")))
        return 0; /* routed as any other request */
    fg_str_t token = {req->path.base + FG_ACME_CHALLENGE_PREFIX_LEN,
                      req->path.len - FG_ACME_CHALLENGE_PREFIX_LEN};
    if (!fg_str_is_base64url(token, FG_ACME_TOKEN_MAX)) {
        fg_request_error(req, 400, "bad_request", "not an ACME challenge token");
        return 1;
    }
    const char *dir = req->worker->cfg->acme.state_dir;
    char path[4096], body[KEYAUTH_MAX];
    int n = snprintf(path, sizeof(path), "%s/challenges/%.*s", dir, (int)token.len, token.base);
    /* O_NONBLOCK: a FIFO under a token's name must not block the worker; only a regular file
     * is a challenge */
    int fd = n > 0 && (size_t)n < sizeof(path)
                 ? open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                 : -1;
    struct stat st;
    ssize_t len =
        fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, body, sizeof(body)) : -1;
    if (fd >= 0)
        close(fd);
    if (len <= 0 || (size_t)len == sizeof(body)) {
        fg_request_error(req, 404, "not_found", "no ACME challenge with this token");
        return 1;
    }
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 1);
    fg_headers_add(&h, FG_STR_LIT("Content-Type"), FG_STR_LIT("application/octet-stream"));
    fg_request_respond(req, 200, &h, body, (size_t)len);
    return 1;
}
