/* See worker/handlers/acme_challenge.h. */
#include "worker/handlers/acme_challenge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker/core/context.h"

/* A key authorization is a token, '.', and a 43-character thumbprint (RFC 8555 8.1); tokens
 * are 128 bits or more of base64url (8.3). */
#define TOKEN_MAX 256
#define KEYAUTH_MAX 512

static int base64url(fg_str_t s)
{
    if (s.len == 0 || s.len > TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.base[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int fg_acme_challenge_answer(fg_request_t *req)
{
    if (!fg_request_is_acme_challenge(req))
        return 0;
    if (!fg_str_eq(req->method, FG_STR_LIT("GET")) && !fg_str_eq(req->method, FG_STR_LIT("HEAD")))
        return 0; /* routed as any other request */
    fg_str_t token = {req->path.base + FG_ACME_CHALLENGE_PREFIX_LEN,
                      req->path.len - FG_ACME_CHALLENGE_PREFIX_LEN};
    if (!base64url(token)) {
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
