/* The master's blocking HTTP client, for child processes only, never for the master's loop: one
 * request per connection. The ACME client (master/acme.c) speaks HTTPS through it (RFC 8555
 * 6.1: the server's certificate verified against the system's CAs or acme.caFile); the OCSP
 * updater (master/ocsp_update.c) asks responders, which RFC 6960 A.1 puts on plain HTTP. */
#ifndef FG_HTTP_FETCH_H
#define FG_HTTP_FETCH_H

#include <stddef.h>

#include <openssl/ssl.h>

/* One request. */
typedef struct {
    const char *method;
    const char *url;          /* "https://..." (needs a ctx) or "http://..." */
    const void *body;         /* NULL: none */
    size_t body_len;          /* bytes of body */
    const char *content_type; /* of body */
    const char *accept;       /* the Accept field */
} fg_http_fetch_req_t;

/* What one exchange brought back. */
typedef struct {
    int status;
    char *body; /* NUL-terminated; owned (fg_http_fetch_free) */
    size_t len;
    char nonce[256];        /* Replay-Nonce (RFC 8555 6.5), "" when absent */
    char location[2048];    /* Location, "" when absent */
    char content_type[128]; /* "" when absent */
} fg_http_fetch_resp_t;

/* A client context: TLS 1.2 or later, the peer verified against ca_file (NULL: the system's). */
SSL_CTX *fg_http_fetch_ctx(const char *ca_file, char *err, size_t errlen);

/* req, within timeout_s for the whole exchange (connect, TLS, request, response); an https URL
 * goes through ctx (NULL: refused). The response is read whole (at most 4 MiB): to its
 * Content-Length, else to the end of the connection. Returns 0 with out filled, or -1 with err
 * set (connect, TLS, timed out, a malformed or oversized response). */
int fg_http_fetch(SSL_CTX *ctx, const fg_http_fetch_req_t *req, unsigned timeout_s,
                  fg_http_fetch_resp_t *out, char *err, size_t errlen);
void fg_http_fetch_free(fg_http_fetch_resp_t *r);

/* A whole response to a HEAD (head_request) or another request, parsed as strictly as a
 * destination's (common/http1_parser.h), into out: status, the three fields, the body (chunked,
 * decoded in place in buf, or by Content-Length, else to the end). Returns 0, or -1 with why
 * set. */
int fg_http_fetch_parse(char *buf, size_t len, int head_request, fg_http_fetch_resp_t *out,
                        const char **why);

#endif
