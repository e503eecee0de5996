/* The ACME client's HTTPS (master/acme.c): one blocking request per connection, for the child
 * process that renews certificates, never for the master's loop. RFC 8555 6.1: HTTPS only, the
 * server's certificate verified against the system's CAs or acme.caFile. */
#ifndef FG_ACME_HTTP_H
#define FG_ACME_HTTP_H

#include <stddef.h>

#include <openssl/ssl.h>

/* What one exchange brought back. */
typedef struct {
    int status;
    char *body; /* NUL-terminated; owned (fg_acme_http_free) */
    size_t len;
    char nonce[256];        /* Replay-Nonce (RFC 8555 6.5), "" when absent */
    char location[2048];    /* Location, "" when absent */
    char content_type[128]; /* "" when absent */
} fg_acme_http_resp_t;

/* A client context: TLS 1.2 or later, the peer verified against ca_file (NULL: the system's). */
SSL_CTX *fg_acme_http_ctx(const char *ca_file, char *err, size_t errlen);

/* METHOD url with body (NULL for none; sent as application/jose+json), within timeout_s for
 * each step. The response's body is read whole (at most 4 MiB). Returns 0 with out filled, or
 * -1 with err set (connect, TLS, a malformed or oversized response). */
int fg_acme_http(SSL_CTX *ctx, const char *method, const char *url, const char *body,
                 unsigned timeout_s, fg_acme_http_resp_t *out, char *err, size_t errlen);
void fg_acme_http_free(fg_acme_http_resp_t *r);

/* A whole response to a HEAD (head_request) or another request, parsed as strictly as a
 * destination's (common/http1_parser.h), into out: status, the three fields, the body (chunked,
 * decoded in place in buf, or by Content-Length, else to the end). Returns 0, or -1 with why
 * set. */
int fg_acme_http_parse(char *buf, size_t len, int head_request, fg_acme_http_resp_t *out,
                       const char **why);

#endif
