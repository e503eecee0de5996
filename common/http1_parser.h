/* HTTP/1.1 message head parser and chunked-body decoder (RFC 9112).
 *
 * The parser is zero-copy: it reads a contiguous buffer and fills slices that point into it;
 * it never allocates. It is restartable in the picohttpparser way: call it again with the
 * same buffer grown by new bytes until it stops returning FG_HTTP1_INCOMPLETE.
 * It is strict where leniency enables request smuggling (RFC 9112 6.3, 11.2). */
#ifndef FG_HTTP1_PARSER_H
#define FG_HTTP1_PARSER_H

#include <stddef.h>
#include <stdint.h>
#include "common/str.h"

typedef struct {
    fg_str_t name;
    fg_str_t value; /* without leading/trailing OWS */
} fg_http_header_t;

/* Return codes. A complete head returns its length in bytes (> 0). */
enum {
    FG_HTTP1_INCOMPLETE = -1,            /* need more bytes */
    FG_HTTP1_ERR_BAD = -2,               /* 400: malformed or ambiguous */
    FG_HTTP1_ERR_URI_TOO_LONG = -3,      /* 414: request line over the limit */
    FG_HTTP1_ERR_HEADERS_TOO_LARGE = -4, /* 431: header section size or count over the limit */
    FG_HTTP1_ERR_VERSION = -5,           /* 505: HTTP major version other than 1 */
    FG_HTTP1_ERR_NOT_IMPLEMENTED = -6,   /* 501: unsupported transfer coding in a request */
};

typedef struct {
    size_t max_request_line; /* bytes of the request line without CRLF; 0 = 8192 */
    size_t max_header_size;  /* bytes of the whole head; 0 = 32768 */
    unsigned max_headers;    /* 0 = 100 */
} fg_http1_limits_t;

typedef struct {
    /* request line (requests) */
    fg_str_t method;
    fg_str_t target; /* request-target as sent */
    /* status line (responses) */
    int status;
    fg_str_t reason;
    int minor_version; /* HTTP/1.x */
    /* headers: caller-owned array of `headers_cap` entries */
    fg_http_header_t *headers;
    size_t num_headers;
    size_t headers_cap;
    /* framing and connection facts derived from the headers */
    int64_t content_length;       /* -1 when absent */
    unsigned chunked : 1;         /* Transfer-Encoding ends in chunked */
    unsigned te_present : 1;      /* any Transfer-Encoding */
    unsigned te_other : 1;        /* a transfer coding other than chunked (gzip, ...) */
    unsigned conn_close : 1;      /* Connection: close */
    unsigned conn_keep_alive : 1; /* Connection: keep-alive */
    unsigned conn_upgrade : 1;    /* Connection: upgrade */
    unsigned expect_continue : 1; /* Expect: 100-continue */
    fg_str_t host;                /* Host header value, empty if absent */
    fg_str_t upgrade;             /* Upgrade header value */
} fg_http1_head_t;

/* Parse a request head from buf[0..len). head->headers/headers_cap must be set by the caller.
 * Returns the head length (request line + headers + final CRLF) or a negative FG_HTTP1_* code.
 * Rejected (FG_HTTP1_ERR_BAD): bare LF line endings, whitespace before a colon, obs-fold,
 * NUL/CR/LF in values, invalid tokens, both Content-Length and Transfer-Encoding, differing
 * Content-Length values, invalid Content-Length, a Transfer-Encoding whose final coding is not
 * chunked, missing Host in HTTP/1.1, more than one Host. A Transfer-Encoding with any coding
 * besides one final chunked ("gzip, chunked") is FG_HTTP1_ERR_NOT_IMPLEMENTED (501). */
int fg_http1_parse_request(const char *buf, size_t len, const fg_http1_limits_t *lim,
                           fg_http1_head_t *head);

/* Parse a response head (from an upstream). Same strictness on syntax; for framing, a
 * Transfer-Encoding whose final coding is not chunked means "read until close"
 * (RFC 9112 6.3 rule 4), reported as chunked=0, te_present=1, content_length=-1. */
int fg_http1_parse_response(const char *buf, size_t len, const fg_http1_limits_t *lim,
                            fg_http1_head_t *head);

/* Whether a response to `method` with `status` has no body (RFC 9112 6.3 rules 1-2:
 * HEAD, 1xx, 204, 304, and 2xx to CONNECT). */
int fg_http1_response_bodiless(fg_str_t method, int status);

/* Incremental chunked decoder (RFC 9112 7.1). */
typedef struct {
    int state;
    uint64_t remaining;   /* bytes left in the current chunk's data */
    size_t line_len;      /* bytes of the current size/trailer line seen, for limits */
    size_t trailer_bytes; /* total trailer section bytes, for limits */
    size_t max_trailer;   /* 0 = 8192 */
    /* Trailer capture (fg_http1_chunked_keep_trailers): the trailer section's field lines are
     * copied into tr (caller memory, tr_cap bytes) as they are decoded. */
    char *tr;
    size_t tr_len, tr_cap;
    unsigned keep : 1;     /* the caller wants trailers */
    unsigned tr_asked : 1; /* the step stopped once for the caller to give tr */
} fg_http1_chunked_t;

void fg_http1_chunked_init(fg_http1_chunked_t *d);

/* Ask the decoder to keep trailer fields (RFC 9112 7.1.2). It never allocates: when a trailer
 * section with at least one field begins, fg_http1_chunked_step returns once early (consumed
 * up to the section) with fg_http1_chunked_wants_buf true; the caller then passes memory of
 * fg_http1_chunked_trailer_max bytes with fg_http1_chunked_set_buf (or nothing: the fields are
 * then discarded) and steps on. Messages without trailers cost nothing. */
void fg_http1_chunked_keep_trailers(fg_http1_chunked_t *d);
int fg_http1_chunked_wants_buf(const fg_http1_chunked_t *d);
size_t fg_http1_chunked_trailer_max(const fg_http1_chunked_t *d);
void fg_http1_chunked_set_buf(fg_http1_chunked_t *d, char *buf, size_t cap);
/* After the step returned 1: the kept trailer fields as slices of the caller's buffer (names
 * as sent, values without surrounding OWS), at most cap of them (the rest are discarded).
 * Returns how many were stored in out; 0 when there were none. */
size_t fg_http1_chunked_trailers(const fg_http1_chunked_t *d, fg_http_header_t *out, size_t cap);
/* How many field lines the kept trailer section has (to size out). */
size_t fg_http1_chunked_trailer_count(const fg_http1_chunked_t *d);

/* Feed buf[0..len). On return:
 *  - *data_len > 0: buf[0 .. *data_len) is chunk payload (always at offset 0), *consumed ==
 * *data_len;
 *  - *data_len == 0: *consumed bytes of framing (sizes, extensions, CRLFs, trailers) were eaten.
 * Returns 1 when the last chunk and trailer section are complete (the message ends after
 * *consumed bytes), 0 to continue (call again with the rest, or with more bytes when *consumed
 * is 0), or FG_HTTP1_ERR_BAD on an invalid chunk size, overflow, missing CRLF or bad trailer. */
int fg_http1_chunked_step(fg_http1_chunked_t *d, const char *buf, size_t len, size_t *consumed,
                          size_t *data_len);

/* Whether v is made of uri-host [":" port] characters (RFC 3986 3.2.2, 3.2.3): no userinfo
 * ("@"), no spaces, quotes or other delimiters. An empty value passes. */
int fg_http1_valid_host(fg_str_t v);

#endif
