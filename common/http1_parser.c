/* HTTP/1.1 message head parser and chunked decoder (RFC 9112). See http1_parser.h.
 *
 * A head is parsed in two passes. The first finds the end of the head with memchr on LF,
 * checking on the way that every LF follows a CR and that the limits hold; it is all an
 * incomplete head costs. The second pass runs only on a complete head, with table-driven loops
 * (and an 8-bytes-at-a-time scan for the long parts: targets and field values). Because the
 * second pass knows the head ends with CRLF CRLF, its loops need no bounds checks: every one of
 * them stops at a CR. */
#include "common/http1_parser.h"

#include <string.h>
#include <strings.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define DEFAULT_MAX_REQUEST_LINE 8192
#define DEFAULT_MAX_HEADER_SIZE 32768
#define DEFAULT_MAX_HEADERS 100
#define DEFAULT_MAX_TRAILER 8192
#define MAX_CHUNK_LINE 4096
#define MAX_LEADING_CRLF 4
#define CL_LIMIT ((int64_t)1 << 62)

/* Character classes. */
#define C_TCHAR 0x01  /* token (RFC 9110 5.6.2) */
#define C_VALUE 0x02  /* field-vchar, SP, HTAB, obs-text (RFC 9110 5.5) */
#define C_TARGET 0x04 /* visible ASCII, for the request-target */
#define C_HOST 0x08   /* uri-host [":" port] characters (RFC 3986 3.2.2) */

/* clang-format off */
static const unsigned char ctab[256] = {
    0, 0,  0, 0, 0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0, 0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2, 15, 6, 7, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 6, 14, 6, 6, /* 0x30 */
    6, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6, 14, 7, 15, /* 0x50 */
    7, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6, 7, 6, 15, 0,   /* 0x70 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xa0 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xb0 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xc0 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xd0 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xe0 */
    2, 2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xf0 */
};
/* clang-format on */

#define IS(c, cls) (ctab[(unsigned char)(c)] & (cls))
#define IS_OWS(c) ((c) == ' ' || (c) == '\t')

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Framing facts gathered while the fields go by, judged once the head is complete. */
struct framing {
    int64_t cl; /* -1 until a Content-Length is seen */
    unsigned hosts;
    unsigned te_codings;   /* transfer codings seen, over all Transfer-Encoding fields */
    unsigned chunked_seen; /* how many of them were chunked */
    int last_chunked;      /* the final coding so far is chunked */
};

/* Nonzero when one of the 8 bytes at p is < 0x20 or 0x7f; bytes >= 0x80 pass (obs-text). */
static inline uint64_t swar_ctl(const char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t lt = (x - ONES * 0x20) & ~x & HIGHS;
    uint64_t d = x ^ (ONES * 0x7f);
    return lt | ((d - ONES) & ~d & HIGHS);
}

/* Nonzero when one of the 8 bytes at p is outside 0x21..0x7e. */
static inline uint64_t swar_nonvisible(const char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t lt = (x - ONES * 0x21) & ~x & HIGHS;
    uint64_t d = x ^ (ONES * 0x7f);
    return lt | ((d - ONES) & ~d & HIGHS) | (x & HIGHS);
}

/* First byte at or after p that may not appear in a field value (the CR ending it, normally). */
static inline const char *scan_value(const char *p, const char *end)
{
#if defined(__SSE2__)
    /* A CTL is a byte that min(byte, 0x1f) leaves alone (unsigned); then DEL. */
    const __m128i ctl = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v), _mm_cmpeq_epi8(v, del));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);
        if (m != 0) {
            /* usually the CR ending the value; a HTAB belongs to it, and the rest is
             * taken a byte at a time */
            for (p += __builtin_ctz(m); IS(*p, C_VALUE);)
                p++;
            return p;
        }
    }
#endif
    while (end - p >= 8) {
        uint64_t m = swar_ctl(p);
        if (m) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* The lowest flag is exact (a borrow only runs upwards from a flagged byte): it
             * is the first CTL or DEL, usually the CR ending the value. */
            p += __builtin_ctzll(m) >> 3;
#endif
            break;
        }
        p += 8;
    }
    while (IS(*p, C_VALUE))
        p++;
    return p;
}

static inline const char *scan_target(const char *p, const char *end)
{
    while (end - p >= 8 && !swar_nonvisible(p))
        p += 8;
    while (IS(*p, C_TARGET))
        p++;
    return p;
}

static inline const char *scan_token(const char *p)
{
    while (IS(*p, C_TCHAR))
        p++;
    return p;
}

/* The end of the field name at p: as scan_token, but a name of letters, digits and '-' (all
 * the usual ones) that ends with its colon within 16 bytes is checked in one block. */
static inline const char *scan_name(const char *p, const char *end)
{
#if defined(__SSE2__)
    if (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned colon = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(':')));
        if (colon != 0) {
            /* Signed compares: bytes >= 0x80 are negative and match no range. OR 0x20 maps
             * only the letters into a..z. */
            __m128i low = _mm_or_si128(v, _mm_set1_epi8(0x20));
            __m128i alpha = _mm_and_si128(_mm_cmpgt_epi8(low, _mm_set1_epi8('a' - 1)),
                                          _mm_cmplt_epi8(low, _mm_set1_epi8('z' + 1)));
            __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                          _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
            __m128i dash = _mm_cmpeq_epi8(v, _mm_set1_epi8('-'));
            unsigned ok =
                (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(alpha, digit), dash));
            unsigned n = (unsigned)__builtin_ctz(colon);
            unsigned want = (1u << n) - 1;
            if ((ok & want) == want)
                return p + n;
        }
    }
#endif
    (void)end;
    return scan_token(p);
}

/* RFC 9112 2.2 lets a server skip empty lines before the request line; we allow a few.
 * Returns the offset of the request line, or a negative code. */
static long skip_leading_crlf(const char *buf, size_t len)
{
    size_t i = 0;
    for (int n = 0; i < len && (buf[i] == '\r' || buf[i] == '\n'); n++) {
        if (buf[i] == '\n' || n == MAX_LEADING_CRLF)
            return FG_HTTP1_ERR_BAD;
        if (i + 1 == len)
            return FG_HTTP1_INCOMPLETE;
        if (buf[i + 1] != '\n')
            return FG_HTTP1_ERR_BAD;
        i += 2;
    }
    return (long)i;
}

/* Find the end of the head that starts at `start`: the LF of the first empty line. Checks that
 * every LF before it is preceded by CR (we reject bare LF, which RFC 9112 2.2 merely permits),
 * that the first line is at most max_line bytes (else line_err) and that the head fits in
 * max_head bytes counted from buf (else 431). Sets *head_len and returns 0, or a negative code. */
static int find_head_end(const char *buf, size_t len, size_t start, size_t max_line,
                         size_t max_head, int line_err, size_t *head_len)
{
    size_t lim = len < max_head ? len : max_head;
    size_t line = start;

    while (line < lim) {
        const char *lf = memchr(buf + line, '\n', lim - line);
        if (!lf)
            break;
        size_t i = (size_t)(lf - buf);
        if (i == line || buf[i - 1] != '\r')
            return FG_HTTP1_ERR_BAD;
        if (line == start && i - 1 - start > max_line)
            return line_err;
        if (i == line + 1 && line != start) {
            *head_len = i + 1;
            return 0;
        }
        line = i + 1;
    }
    if (line == start && lim > start) {
        size_t seen = lim - start - (buf[lim - 1] == '\r');
        if (seen > max_line)
            return line_err;
    }
    return len >= max_head ? FG_HTTP1_ERR_HEADERS_TOO_LARGE : FG_HTTP1_INCOMPLETE;
}

/* "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3). A major version other than 1 is 505. */
static int parse_version(const char *p, const char *end, int *minor)
{
    if (end - p < 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.')
        return FG_HTTP1_ERR_BAD;
    if (p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9')
        return FG_HTTP1_ERR_BAD;
    if (p[5] != '1')
        return FG_HTTP1_ERR_VERSION;
    *minor = p[7] - '0';
    return 0;
}

/* Next element of a comma-separated list in [*p, end), with OWS trimmed (RFC 9110 5.6.1).
 * Empty elements are returned as empty. Returns 0 at the end of the list. */
static int next_element(const char **p, const char *end, fg_str_t *el)
{
    const char *s = *p;
    if (!s)
        return 0;
    const char *c = memchr(s, ',', (size_t)(end - s));
    const char *e = c ? c : end;
    *p = c ? c + 1 : NULL;
    while (s < e && IS_OWS(*s))
        s++;
    while (e > s && IS_OWS(e[-1]))
        e--;
    *el = (fg_str_t){s, (size_t)(e - s)};
    return 1;
}

/* Content-Length = 1*DIGIT; a list of identical values ("5, 5") counts as one value
 * (RFC 9110 8.6, RFC 9112 6.3 rule 5). Signs, inner spaces, empty elements, differing values
 * or values >= 2^62 are errors: each is a smuggling vector when peers disagree. */
static int parse_content_length(fg_str_t v, struct framing *f)
{
    const char *p = v.base, *end = v.base + v.len;
    fg_str_t el;

    /* One value of up to 18 digits (below CL_LIMIT): no list to split. */
    if (v.len > 0 && v.len <= 18) {
        int64_t n = 0;
        size_t i = 0;
        for (; i < v.len; i++) {
            unsigned d = (unsigned char)v.base[i] - '0';
            if (d > 9)
                break;
            n = n * 10 + d;
        }
        if (i == v.len) {
            if (f->cl >= 0 && f->cl != n)
                return FG_HTTP1_ERR_BAD;
            f->cl = n;
            return 0;
        }
    }

    while (next_element(&p, end, &el)) {
        if (el.len == 0)
            return FG_HTTP1_ERR_BAD;
        int64_t n = 0;
        for (size_t i = 0; i < el.len; i++) {
            unsigned d = (unsigned char)el.base[i] - '0';
            if (d > 9 || n > (CL_LIMIT - 1 - d) / 10)
                return FG_HTTP1_ERR_BAD;
            n = n * 10 + d;
        }
        if (f->cl >= 0 && f->cl != n)
            return FG_HTTP1_ERR_BAD;
        f->cl = n;
    }
    return 0;
}

/* quoted-string (RFC 9110 5.6.4) starting at the opening quote; returns the byte after the
 * closing quote or NULL. */
static const char *skip_quoted(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            if (++p == end || !IS(*p, C_VALUE))
                return NULL;
        } else if (!IS(c, C_VALUE)) {
            return NULL;
        }
    }
    return NULL;
}

/* transfer-parameters after a coding: *( OWS ";" OWS token BWS "=" BWS ( token / quoted ) )
 * (RFC 9112 7.3 via RFC 9110 10.1.4). Returns the position after them or NULL. */
static const char *skip_te_params(const char *p, const char *end)
{
    for (;;) {
        const char *q = p;
        while (q < end && IS_OWS(*q))
            q++;
        if (q == end || *q != ';')
            return p;
        for (q++; q < end && IS_OWS(*q); q++)
            ;
        const char *name = q;
        while (q < end && IS(*q, C_TCHAR))
            q++;
        if (q == name)
            return NULL;
        while (q < end && IS_OWS(*q))
            q++;
        if (q == end || *q != '=')
            return NULL;
        for (q++; q < end && IS_OWS(*q); q++)
            ;
        if (q < end && *q == '"') {
            q = skip_quoted(q, end);
            if (!q)
                return NULL;
        } else {
            const char *val = q;
            while (q < end && IS(*q, C_TCHAR))
                q++;
            if (q == val)
                return NULL;
        }
        p = q;
    }
}

/* Transfer-Encoding = #transfer-coding (RFC 9112 6.1). Several fields form one list. Empty
 * elements and parameters on chunked (which takes none, RFC 9112 7.1) are rejected rather than
 * guessed at, since a peer guessing differently is how requests get smuggled. */
static int parse_transfer_encoding(fg_str_t v, struct framing *f)
{
    const char *p = v.base, *end = v.base + v.len;

    for (;;) {
        while (p < end && IS_OWS(*p))
            p++;
        const char *tok = p;
        while (p < end && IS(*p, C_TCHAR))
            p++;
        if (p == tok)
            return FG_HTTP1_ERR_BAD;
        int chunked = p - tok == 7 && strncasecmp(tok, "chunked", 7) == 0;
        const char *q = skip_te_params(p, end);
        if (!q || (chunked && q != p))
            return FG_HTTP1_ERR_BAD;
        for (p = q; p < end && IS_OWS(*p); p++)
            ;
        f->te_codings++;
        f->chunked_seen += chunked;
        f->last_chunked = chunked;
        if (p == end)
            return 0;
        if (*p != ',')
            return FG_HTTP1_ERR_BAD;
        p++;
    }
}

/* Connection options (RFC 9110 7.6.1); unknown options are left to the caller. */
static void parse_connection(fg_str_t v, fg_http1_head_t *h)
{
    const char *p = v.base, *end = v.base + v.len;
    fg_str_t el;

    /* The value is trimmed of OWS: one known option alone needs no list splitting. */
    if (v.len == 10 && fg_str_ieq_lower(v.base, "keep-alive", 10)) {
        h->conn_keep_alive = 1;
        return;
    }
    if (v.len == 5 && fg_str_ieq_lower(v.base, "close", 5)) {
        h->conn_close = 1;
        return;
    }

    while (next_element(&p, end, &el)) {
        if (fg_str_ieq_c(el, "close"))
            h->conn_close = 1;
        else if (fg_str_ieq_c(el, "keep-alive"))
            h->conn_keep_alive = 1;
        else if (fg_str_ieq_c(el, "upgrade"))
            h->conn_upgrade = 1;
    }
}

int fg_http1_valid_host(fg_str_t v)
{
    for (size_t i = 0; i < v.len; i++)
        if (!IS(v.base[i], C_HOST))
            return 0;
    return 1;
}

/* Case-insensitive match of a field name against a lower-case literal of letters and '-'. */
static inline int name_is(const char *name, const char *lit, size_t len)
{
    return fg_str_ieq_lower(name, lit, len);
}

/* Record what one field says about framing and the connection. The switch on the name length
 * keeps the cost of ordinary fields to one comparison at most. */
static int on_field(fg_http1_head_t *h, struct framing *f, const fg_http_header_t *fld, int req)
{
    const char *n = fld->name.base;

    switch (fld->name.len) {
    case 4:
        if (req && name_is(n, "host", 4)) {
            /* RFC 9112 3.2: more than one Host, or an invalid one, is a 400. */
            if (++f->hosts > 1 || !fg_http1_valid_host(fld->value))
                return FG_HTTP1_ERR_BAD;
            h->host = fld->value;
        }
        break;
    case 6:
        if (name_is(n, "expect", 6) && fg_str_ieq_c(fld->value, "100-continue"))
            h->expect_continue = 1;
        break;
    case 7:
        if (name_is(n, "upgrade", 7) && !h->upgrade.base)
            h->upgrade = fld->value;
        break;
    case 10:
        if (name_is(n, "connection", 10))
            parse_connection(fld->value, h);
        break;
    case 14:
        if (name_is(n, "content-length", 14))
            return parse_content_length(fld->value, f);
        break;
    case 17:
        if (name_is(n, "transfer-encoding", 17))
            return parse_transfer_encoding(fld->value, f);
        break;
    }
    return 0;
}

/* Field lines from p up to the first empty line (RFC 9112 5). The caller guarantees that
 * buf[..end) ends with CRLF CRLF, which stops every loop here. Sets *head_end past the empty
 * line. Returns 0 or a negative code. */
static int parse_fields(const char *p, const char *end, size_t max_fields, fg_http1_head_t *h,
                        struct framing *f, int req, const char **head_end)
{
    for (;;) {
        if (*p == '\r') {
            *head_end = p + 2;
            return p[1] == '\n' ? 0 : FG_HTTP1_ERR_BAD;
        }
        /* A line starting with SP/HTAB is obs-fold (RFC 9112 5.2) and whitespace before the
         * colon is forbidden (RFC 9112 5.1): both end the token on something other than ':'. */
        const char *name = p;
        p = scan_name(p, end);
        if (p == name || *p != ':')
            return FG_HTTP1_ERR_BAD;
        size_t nlen = (size_t)(p - name);
        p++;
        while (IS_OWS(*p))
            p++;
        const char *val = p;
        p = scan_value(p, end);
        /* Stopped on anything but CRLF: NUL, another CTL, DEL, or a bare CR (RFC 9112 2.2). */
        if (p[0] != '\r' || p[1] != '\n')
            return FG_HTTP1_ERR_BAD;
        const char *vend = p;
        while (vend > val && IS_OWS(vend[-1]))
            vend--;
        p += 2;
        if (h->num_headers >= max_fields)
            return FG_HTTP1_ERR_HEADERS_TOO_LARGE;
        fg_http_header_t *fld = &h->headers[h->num_headers++];
        fld->name = (fg_str_t){name, nlen};
        fld->value = (fg_str_t){val, (size_t)(vend - val)};
        int rc = on_field(h, f, fld, req);
        if (rc)
            return rc;
    }
}

static void head_reset(fg_http1_head_t *h)
{
    h->method = FG_STR_NULL;
    h->target = FG_STR_NULL;
    h->status = 0;
    h->reason = FG_STR_NULL;
    h->minor_version = 0;
    h->num_headers = 0;
    h->content_length = -1;
    h->chunked = 0;
    h->te_present = 0;
    h->conn_close = 0;
    h->conn_keep_alive = 0;
    h->conn_upgrade = 0;
    h->expect_continue = 0;
    h->host = FG_STR_NULL;
    h->upgrade = FG_STR_NULL;
}

static void resolve_limits(const fg_http1_limits_t *lim, const fg_http1_head_t *h, size_t *max_line,
                           size_t *max_head, size_t *max_fields)
{
    *max_line = lim && lim->max_request_line ? lim->max_request_line : DEFAULT_MAX_REQUEST_LINE;
    *max_head = lim && lim->max_header_size ? lim->max_header_size : DEFAULT_MAX_HEADER_SIZE;
    *max_fields = lim && lim->max_headers ? lim->max_headers : DEFAULT_MAX_HEADERS;
    if (!h->headers)
        *max_fields = 0;
    else if (h->headers_cap < *max_fields)
        *max_fields = h->headers_cap;
}

/* Request framing (RFC 9112 6.1, 6.3, 11.2): a request must have one unambiguous body length. */
static int request_framing(fg_http1_head_t *h, const struct framing *f)
{
    if (f->te_codings) {
        if (h->minor_version == 0 || f->cl >= 0)
            return FG_HTTP1_ERR_BAD;
        /* RFC 9112 6.3: chunked must be the final coding, applied once, or the length is
         * unknowable (400). Any other coding before it is one we do not decode, and a server
         * answers a coding it does not understand with 501 (RFC 9112 6.1); forwarding the body
         * without it would hand the destination something other than what the client sent. */
        if (f->chunked_seen != 1 || !f->last_chunked)
            return FG_HTTP1_ERR_BAD;
        if (f->te_codings != 1)
            return FG_HTTP1_ERR_NOT_IMPLEMENTED;
        h->te_present = 1;
        h->chunked = 1;
    } else {
        h->content_length = f->cl;
    }
    if (h->minor_version >= 1 && f->hosts == 0)
        return FG_HTTP1_ERR_BAD;
    return 0;
}

/* Response framing (RFC 9112 6.3): Transfer-Encoding overrides Content-Length (rule 3); a final
 * coding other than chunked means read until close (rule 4). An HTTP/1.0 response with
 * Transfer-Encoding has faulty framing (RFC 9112 6.1) and is refused. */
static int response_framing(fg_http1_head_t *h, const struct framing *f)
{
    if (f->te_codings) {
        if (h->minor_version == 0 || f->chunked_seen > 1)
            return FG_HTTP1_ERR_BAD;
        h->te_present = 1;
        h->te_other = f->te_codings > f->chunked_seen;
        h->chunked = f->last_chunked ? 1 : 0;
        h->content_length = -1;
    } else {
        h->content_length = f->cl;
    }
    return 0;
}

/* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 3). */
static const char *parse_request_line(const char *p, const char *end, fg_http1_head_t *h, int *rc)
{
    const char *m = p;
    p = scan_token(p);
    if (p == m || *p != ' ')
        return NULL;
    h->method = (fg_str_t){m, (size_t)(p - m)};
    const char *t = ++p;
    p = scan_target(p, end);
    if (p == t || *p != ' ')
        return NULL;
    h->target = (fg_str_t){t, (size_t)(p - t)};
    p++;
    *rc = parse_version(p, end, &h->minor_version);
    if (*rc)
        return NULL;
    p += 8;
    if (p[0] != '\r' || p[1] != '\n')
        return NULL;
    return p + 2;
}

/* The end of the first empty line ("\r\n\r\n") in [s, lim), or NULL. Sixteen bytes at a time
 * where SSE2 is there, else a word at a time (the lowest flag of the zero-byte test is exact,
 * and the scan goes on after it), then a byte at a time for the rest. */
static const char *find_blank_line(const char *s, const char *lim)
{
    const char *p = s;
#if defined(__SSE2__)
    /* 16 bytes a step: one compare gives every LF of the block at once. */
    const __m128i nl = _mm_set1_epi8('\n');
    for (; lim - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, nl));
        for (; m != 0; m &= m - 1) {
            const char *lf = p + __builtin_ctz(m);
            if (lf - s >= 3 && memcmp(lf - 3, "\r\n\r\n", 4) == 0)
                return lf + 1;
        }
    }
#endif
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (lim - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        x ^= ONES * '\n';
        uint64_t m = (x - ONES) & ~x & HIGHS;
        if (m == 0) {
            p += 8;
            continue;
        }
        const char *lf = p + (__builtin_ctzll(m) >> 3);
        if (lf - s >= 3 && memcmp(lf - 3, "\r\n\r\n", 4) == 0)
            return lf + 1;
        p = lf + 1;
    }
#endif
    for (; p < lim; p++)
        if (*p == '\n' && p - s >= 3 && memcmp(p - 3, "\r\n\r\n", 4) == 0)
            return p + 1;
    return NULL;
}

/* Where the parse may run: to the end of buf when it already ends with CRLF CRLF (the usual
 * case: a whole head in one read), else to the end of the first empty line found by the scan,
 * which also decides the incomplete and over-limit cases. Returns 0 or a negative code. */
static int head_bound(const char *buf, size_t len, size_t start, size_t max_line, size_t max_head,
                      int line_err, const char **end)
{
    size_t head_len = 0;

    if (len - start >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0) {
        *end = buf + len;
        return 0;
    }
    int rc = find_head_end(buf, len, start, max_line, max_head, line_err, &head_len);
    *end = buf + head_len;
    return rc;
}

int fg_http1_parse_request(const char *buf, size_t len, const fg_http1_limits_t *lim,
                           fg_http1_head_t *head)
{
    size_t max_line, max_head, max_fields;
    struct framing f = {.cl = -1};
    const char *end, *line, *p;

    head_reset(head);
    resolve_limits(lim, head, &max_line, &max_head, &max_fields);
    long start = skip_leading_crlf(buf, len);
    if (start < 0)
        return (int)start;
    int rc =
        head_bound(buf, len, (size_t)start, max_line, max_head, FG_HTTP1_ERR_URI_TOO_LONG, &end);
    if (rc)
        return rc;

    line = buf + start;
    rc = FG_HTTP1_ERR_BAD;
    p = parse_request_line(line, end, head, &rc);
    if (!p)
        return rc ? rc : FG_HTTP1_ERR_BAD;
    if ((size_t)(p - 2 - line) > max_line)
        return FG_HTTP1_ERR_URI_TOO_LONG;
    rc = parse_fields(p, end, max_fields, head, &f, 1, &p);
    if (rc)
        return rc;
    if ((size_t)(p - buf) > max_head)
        return FG_HTTP1_ERR_HEADERS_TOO_LARGE;
    rc = request_framing(head, &f);
    return rc ? rc : (int)(p - buf);
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF (RFC 9112 4). We also take
 * a status line without the SP before an empty reason, as many servers send it. */
static const char *parse_status_line(const char *p, const char *end, fg_http1_head_t *h, int *rc)
{
    *rc = parse_version(p, end, &h->minor_version);
    if (*rc)
        return NULL;
    p += 8;
    if (end - p < 6 || *p != ' ')
        return NULL;
    p++;
    for (int i = 0; i < 3; i++)
        if (p[i] < '0' || p[i] > '9')
            return NULL;
    h->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (h->status < 100 || h->status > 599) /* RFC 9110 15: codes are 100..599 */
        return NULL;
    p += 3;
    if (*p == ' ')
        p++;
    else if (*p != '\r')
        return NULL;
    const char *r = p;
    p = scan_value(p, end);
    if (p[0] != '\r' || p[1] != '\n')
        return NULL;
    h->reason = (fg_str_t){r, (size_t)(p - r)};
    return p + 2;
}

/* A head still incomplete whose start already shows it is no response (RFC 9112 4): not
 * "HTTP/", or a complete first line that is no status line. Deciding now spares waiting for a
 * blank line that a peer which does not speak HTTP never sends. */
static int response_start(const char *buf, size_t len, fg_http1_head_t *h)
{
    if (memcmp(buf, "HTTP/", len < 5 ? len : 5) != 0)
        return FG_HTTP1_ERR_BAD;
    const char *nl = memchr(buf, '\n', len);
    if (nl == NULL)
        return FG_HTTP1_INCOMPLETE;
    int rc = 0;
    const char *p = parse_status_line(buf, nl + 1, h, &rc);
    head_reset(h);
    if (p == NULL)
        return rc ? rc : FG_HTTP1_ERR_BAD;
    return FG_HTTP1_INCOMPLETE;
}

int fg_http1_parse_response(const char *buf, size_t len, const fg_http1_limits_t *lim,
                            fg_http1_head_t *head)
{
    size_t max_line, max_head, max_fields;
    struct framing f = {.cl = -1};
    const char *end, *p;

    head_reset(head);
    resolve_limits(lim, head, &max_line, &max_head, &max_fields);
    /* A response usually arrives with (some of) its body, so that buf rarely ends with the
     * head: the first empty line within the size limit bounds the parse, which refuses any LF
     * without its CR (RFC 9112 2.2) as head_bound's line scan would. Without one, head_bound
     * tells an incomplete head from a bad or oversized one. The status line has no limit of
     * its own: the head size bounds it. */
    int rc = 0;
    end = find_blank_line(buf, buf + (len < max_head ? len : max_head));
    if (end == NULL)
        rc = head_bound(buf, len, 0, max_head, max_head, FG_HTTP1_ERR_HEADERS_TOO_LARGE, &end);
    if (rc == FG_HTTP1_INCOMPLETE)
        return response_start(buf, len, head);
    if (rc)
        return rc;

    p = parse_status_line(buf, end, head, &rc);
    if (!p)
        return rc ? rc : FG_HTTP1_ERR_BAD;
    rc = parse_fields(p, end, max_fields, head, &f, 0, &p);
    if (rc)
        return rc;
    if ((size_t)(p - buf) > max_head)
        return FG_HTTP1_ERR_HEADERS_TOO_LARGE;
    rc = response_framing(head, &f);
    return rc ? rc : (int)(p - buf);
}

int fg_http1_response_bodiless(fg_str_t method, int status)
{
    /* Methods are case-sensitive (RFC 9110 9.1). */
    if (fg_str_eq(method, FG_STR_LIT("HEAD")))
        return 1;
    if ((status >= 100 && status < 200) || status == 204 || status == 304)
        return 1;
    /* A 2xx to CONNECT switches to a tunnel (RFC 9110 9.3.6). */
    return status >= 200 && status < 300 && fg_str_eq(method, FG_STR_LIT("CONNECT"));
}

/* ---- chunked decoder ---- */

enum {
    CH_SIZE = 0,     /* first hex digit of a chunk-size */
    CH_SIZE_MORE,    /* more hex digits, an extension or CR */
    CH_EXT_SEMI,     /* BWS before ';' */
    CH_EXT_NAME_PRE, /* BWS before an extension name */
    CH_EXT_NAME,
    CH_EXT_EQ,      /* BWS after a name: '=' or ';' */
    CH_EXT_VAL_PRE, /* BWS after '=' */
    CH_EXT_VAL,     /* token value */
    CH_EXT_QS,      /* quoted-string value */
    CH_EXT_QS_ESC,
    CH_EXT_END, /* after a value: ';', BWS or CR */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_START, /* start of a trailer line, or the final CRLF */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_END_LF,
    CH_DONE,
    CH_ERROR,
};

void fg_http1_chunked_init(fg_http1_chunked_t *d)
{
    memset(d, 0, sizeof(*d));
    d->state = CH_SIZE;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* After a chunk-size or extension: where ';', BWS and CR lead. */
static int ext_follow(unsigned char c)
{
    if (c == ';')
        return CH_EXT_NAME_PRE;
    if (IS_OWS(c))
        return CH_EXT_SEMI;
    if (c == '\r')
        return CH_SIZE_LF;
    return CH_ERROR;
}

/* One byte of a chunk-size line (RFC 9112 7.1, 7.1.1):
 * chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ). */
static int size_line_byte(fg_http1_chunked_t *d, unsigned char c)
{
    int h;

    switch (d->state) {
    case CH_SIZE:
        /* 1*HEXDIG: no sign, no leading space, no "0x". */
        if ((h = hexval(c)) < 0)
            return CH_ERROR;
        d->remaining = (uint64_t)h;
        return CH_SIZE_MORE;
    case CH_SIZE_MORE:
        if ((h = hexval(c)) >= 0) {
            /* At most 16 digits (leading zeros included) and a size below 2^62. */
            if (d->line_len > 16 || d->remaining >= ((uint64_t)1 << 58))
                return CH_ERROR;
            d->remaining = d->remaining << 4 | (uint64_t)h;
            return CH_SIZE_MORE;
        }
        return ext_follow(c);
    case CH_EXT_SEMI:
        return IS_OWS(c) ? CH_EXT_SEMI : c == ';' ? CH_EXT_NAME_PRE : CH_ERROR;
    case CH_EXT_NAME_PRE:
        return IS_OWS(c) ? CH_EXT_NAME_PRE : IS(c, C_TCHAR) ? CH_EXT_NAME : CH_ERROR;
    case CH_EXT_NAME:
        if (IS(c, C_TCHAR))
            return CH_EXT_NAME;
        if (c == '=')
            return CH_EXT_VAL_PRE;
        return IS_OWS(c)   ? CH_EXT_EQ
               : c == ';'  ? CH_EXT_NAME_PRE
               : c == '\r' ? CH_SIZE_LF
                           : CH_ERROR;
    case CH_EXT_EQ:
        return IS_OWS(c)  ? CH_EXT_EQ
               : c == '=' ? CH_EXT_VAL_PRE
               : c == ';' ? CH_EXT_NAME_PRE
                          : CH_ERROR;
    case CH_EXT_VAL_PRE:
        if (IS_OWS(c))
            return CH_EXT_VAL_PRE;
        return c == '"' ? CH_EXT_QS : IS(c, C_TCHAR) ? CH_EXT_VAL : CH_ERROR;
    case CH_EXT_VAL:
        return IS(c, C_TCHAR) ? CH_EXT_VAL : ext_follow(c);
    case CH_EXT_QS:
        if (c == '"')
            return CH_EXT_END;
        if (c == '\\')
            return CH_EXT_QS_ESC;
        return IS(c, C_VALUE) ? CH_EXT_QS : CH_ERROR;
    case CH_EXT_QS_ESC:
        return IS(c, C_VALUE) ? CH_EXT_QS : CH_ERROR;
    case CH_EXT_END:
        return ext_follow(c);
    case CH_SIZE_LF:
        if (c != '\n')
            return CH_ERROR;
        return d->remaining ? CH_DATA : CH_TR_START;
    }
    return CH_ERROR;
}

/* One byte of the trailer section (RFC 9112 7.1.2): field lines like the head's, then CRLF. */
static int trailer_byte(int state, unsigned char c)
{
    switch (state) {
    case CH_TR_START:
        if (c == '\r')
            return CH_END_LF;
        return IS(c, C_TCHAR) ? CH_TR_NAME : CH_ERROR; /* SP/HTAB here would be obs-fold */
    case CH_TR_NAME:
        return IS(c, C_TCHAR) ? CH_TR_NAME : c == ':' ? CH_TR_VALUE : CH_ERROR;
    case CH_TR_VALUE:
        return IS(c, C_VALUE) ? CH_TR_VALUE : c == '\r' ? CH_TR_LF : CH_ERROR;
    case CH_TR_LF:
        return c == '\n' ? CH_TR_START : CH_ERROR;
    case CH_END_LF:
        return c == '\n' ? CH_DONE : CH_ERROR;
    }
    return CH_ERROR;
}

/* Framing bytes up to the next chunk data, the end of the message or the end of buf. */
static int chunked_framing(fg_http1_chunked_t *d, const char *buf, size_t len, size_t *consumed)
{
    size_t max_trailer = d->max_trailer ? d->max_trailer : DEFAULT_MAX_TRAILER;
    size_t i = 0;

    while (i < len && d->state != CH_DATA) {
        unsigned char c = (unsigned char)buf[i++];
        int st = d->state;
        if (st <= CH_SIZE_LF) {
            if (st != CH_SIZE_LF && ++d->line_len > MAX_CHUNK_LINE)
                return FG_HTTP1_ERR_BAD;
            st = size_line_byte(d, c);
        } else if (st == CH_DATA_CR) {
            st = c == '\r' ? CH_DATA_LF : CH_ERROR;
        } else if (st == CH_DATA_LF) {
            st = c == '\n' ? CH_SIZE : CH_ERROR;
            d->line_len = 0;
        } else {
            if (st == CH_TR_START && d->trailer_bytes == 0 && d->keep && d->tr == NULL &&
                !d->tr_asked && c != '\r') {
                /* A trailer section with fields: the caller gives memory for them first. */
                d->tr_asked = 1;
                *consumed = i - 1;
                return 0;
            }
            if (++d->trailer_bytes > max_trailer)
                return FG_HTTP1_ERR_BAD;
            st = trailer_byte(st, c);
            if (d->tr != NULL && d->tr_len < d->tr_cap)
                d->tr[d->tr_len++] = (char)c;
        }
        if (st == CH_ERROR)
            return FG_HTTP1_ERR_BAD;
        d->state = st;
        if (st == CH_DONE) {
            *consumed = i;
            return 1;
        }
    }
    *consumed = i;
    return 0;
}

int fg_http1_chunked_step(fg_http1_chunked_t *d, const char *buf, size_t len, size_t *consumed,
                          size_t *data_len)
{
    *consumed = 0;
    *data_len = 0;
    if (d->state == CH_DONE)
        return 1;
    if (d->state == CH_ERROR)
        return FG_HTTP1_ERR_BAD;
    if (d->state == CH_DATA) {
        size_t n = d->remaining < len ? (size_t)d->remaining : len;
        d->remaining -= n;
        if (d->remaining == 0)
            d->state = CH_DATA_CR;
        *consumed = *data_len = n;
        return 0;
    }
    int rc = chunked_framing(d, buf, len, consumed);
    if (rc < 0)
        d->state = CH_ERROR;
    return rc;
}

void fg_http1_chunked_keep_trailers(fg_http1_chunked_t *d)
{
    d->keep = 1;
}

int fg_http1_chunked_wants_buf(const fg_http1_chunked_t *d)
{
    return d->keep && d->tr_asked && d->tr == NULL && d->trailer_bytes == 0;
}

size_t fg_http1_chunked_trailer_max(const fg_http1_chunked_t *d)
{
    return d->max_trailer ? d->max_trailer : DEFAULT_MAX_TRAILER;
}

void fg_http1_chunked_set_buf(fg_http1_chunked_t *d, char *buf, size_t cap)
{
    d->tr = buf;
    d->tr_cap = cap;
    d->tr_len = 0;
}

/* Walk the kept field lines ("name:value\r\n", validated by trailer_byte as they came; the
 * final CRLF ends the walk). With out, store up to cap slices. Returns the lines seen. */
static size_t trailer_walk(const fg_http1_chunked_t *d, fg_http_header_t *out, size_t cap)
{
    size_t n = 0, i = 0, len = d->state == CH_DONE ? d->tr_len : 0;
    const char *b = d->tr;
    while (i < len && b[i] != '\r') {
        size_t start = i;
        while (i < len && b[i] != ':')
            i++;
        size_t colon = i;
        while (i < len && b[i] != '\r')
            i++;
        if (i >= len)
            break; /* cut by tr_cap */
        size_t vs = colon + 1, ve = i;
        while (vs < ve && IS_OWS(b[vs]))
            vs++;
        while (ve > vs && IS_OWS(b[ve - 1]))
            ve--;
        if (out != NULL && n < cap) {
            out[n].name = (fg_str_t){b + start, colon - start};
            out[n].value = (fg_str_t){b + vs, ve - vs};
        }
        n++;
        i += 2; /* CRLF */
    }
    return n;
}

size_t fg_http1_chunked_trailer_count(const fg_http1_chunked_t *d)
{
    return d->tr ? trailer_walk(d, NULL, 0) : 0;
}

size_t fg_http1_chunked_trailers(const fg_http1_chunked_t *d, fg_http_header_t *out, size_t cap)
{
    if (d->tr == NULL)
        return 0;
    size_t n = trailer_walk(d, out, cap);
    return n < cap ? n : cap;
}
