/* Static files (see worker/handlers/static.h). */
#include "worker/handlers/static.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/headers.h"
#include "common/http_date.h"
#include "common/log.h"
#include "common/mime.h"
#include "common/path.h"
#include "worker/core/clock.h"

/* A path names a directory: lookup() returns it when the caller may redirect. */
#define FOUND_DIR 1
/* lookup() outcome asking for a 301 to the path with a trailing slash. */
#define REDIRECT_SLASH 301

typedef struct {
    int fd;
    struct stat st;
    const char *name; /* the path that was opened, for the MIME type */
} file_t;

/* Root directory fds of the static routes, indexed like cfg->routes. Per-worker cache, filled
 * once at start (single-threaded worker), so a request costs one openat2 and no path walk
 * above the root. A root swapped later (a "current" symlink) is picked up by a reload. */
static struct {
    const fg_config_t *cfg;
    int *fds;
} roots;

/* ---- root cache ---- */

static int open_root(const char *path)
{
    return open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

int fg_static_init(const fg_config_t *cfg)
{
    fg_static_deinit();
    if (cfg == NULL || cfg->nroutes == 0)
        return 0;
    roots.fds = malloc(cfg->nroutes * sizeof(*roots.fds));
    if (roots.fds == NULL) {
        fg_log_warn("static: no memory for the root cache; opening roots per request");
        return 0;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const fg_route_t *r = &cfg->routes[i];
        roots.fds[i] = -1;
        if (r->kind != FG_ROUTE_STATIC || r->static_root == NULL)
            continue;
        roots.fds[i] = open_root(r->static_root);
        if (roots.fds[i] == -1)
            fg_log_warn("static: route %s: open %s: %s", r->id ? r->id : "?", r->static_root,
                        strerror(errno));
    }
    roots.cfg = cfg;
    return 0;
}

void fg_static_deinit(void)
{
    if (roots.fds != NULL) {
        for (size_t i = 0; i < roots.cfg->nroutes; i++)
            if (roots.fds[i] >= 0)
                close(roots.fds[i]);
        free(roots.fds);
    }
    roots.fds = NULL;
    roots.cfg = NULL;
}

/* The directory fd of route's root: the cached one, or a fresh one (*owned = 1, the caller
 * closes it) for a route outside the cache. Returns -1 with errno when it cannot be opened. */
static int root_fd(const fg_route_t *route, int *owned)
{
    *owned = 0;
    if (roots.fds != NULL) {
        uintptr_t base = (uintptr_t)roots.cfg->routes;
        uintptr_t p = (uintptr_t)route;
        if (p >= base && p < base + roots.cfg->nroutes * sizeof(*route)) {
            size_t i = (p - base) / sizeof(*route);
            if (roots.fds[i] >= 0)
                return roots.fds[i];
        }
    }
    if (route->static_root == NULL) {
        errno = ENOENT;
        return -1;
    }
    *owned = 1;
    return open_root(route->static_root);
}

/* ---- HTTP dates (RFC 9110 5.6.7) ---- */

static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

typedef struct {
    const char *p;
    const char *end;
} cursor_t;

static int take_char(cursor_t *c, char ch)
{
    if (c->p >= c->end || *c->p != ch)
        return -1;
    c->p++;
    return 0;
}

/* Exactly n digits; a leading space stands for a zero when pad is set (asctime day). */
static int take_num(cursor_t *c, int n, int pad, int *out)
{
    if (c->end - c->p < n)
        return -1;
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = c->p[i];
        if (pad && i == 0 && ch == ' ')
            continue;
        if (ch < '0' || ch > '9')
            return -1;
        v = v * 10 + (ch - '0');
    }
    c->p += n;
    *out = v;
    return 0;
}

static int take_month(cursor_t *c, int *mon)
{
    if (c->end - c->p < 3)
        return -1;
    for (int i = 0; i < 12; i++) {
        if (memcmp(c->p, months[i], 3) == 0) {
            c->p += 3;
            *mon = i + 1;
            return 0;
        }
    }
    return -1;
}

/* "HH:MM:SS" */
static int take_time(cursor_t *c, int *h, int *m, int *s)
{
    if (take_num(c, 2, 0, h) || take_char(c, ':') || take_num(c, 2, 0, m) || take_char(c, ':') ||
        take_num(c, 2, 0, s))
        return -1;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12); eras of 400 years keep
 * the arithmetic on non-negative numbers. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int fg_static_parse_http_date(fg_str_t s, time_t *t)
{
    cursor_t c = {s.base, s.base + s.len};
    int year, mon, day, h, m, sec;
    size_t wlen = 0;
    while (wlen < s.len && ((s.base[wlen] | 0x20) >= 'a' && (s.base[wlen] | 0x20) <= 'z'))
        wlen++;
    if (wlen < 3 || wlen >= s.len)
        return -1;
    c.p += wlen;
    if (wlen == 3 && s.base[3] == ',') { /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        if (take_char(&c, ',') || take_char(&c, ' ') || take_num(&c, 2, 0, &day) ||
            take_char(&c, ' ') || take_month(&c, &mon) || take_char(&c, ' ') ||
            take_num(&c, 4, 0, &year) || take_char(&c, ' ') || take_time(&c, &h, &m, &sec) ||
            c.end - c.p != 4 || memcmp(c.p, " GMT", 4) != 0)
            return -1;
    } else if (wlen == 3) { /* asctime: Sun Nov  6 08:49:37 1994 */
        if (take_char(&c, ' ') || take_month(&c, &mon) || take_char(&c, ' ') ||
            take_num(&c, 2, 1, &day) || take_char(&c, ' ') || take_time(&c, &h, &m, &sec) ||
            take_char(&c, ' ') || take_num(&c, 4, 0, &year) || c.p != c.end)
            return -1;
    } else { /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
        if (take_char(&c, ',') || take_char(&c, ' ') || take_num(&c, 2, 0, &day) ||
            take_char(&c, '-') || take_month(&c, &mon) || take_char(&c, '-') ||
            take_num(&c, 2, 0, &year) || take_char(&c, ' ') || take_time(&c, &h, &m, &sec) ||
            c.end - c.p != 4 || memcmp(c.p, " GMT", 4) != 0)
            return -1;
        /* RFC 9110 5.6.7: a two-digit year more than 50 years in the future is in the past
         * century. */
        struct tm now;
        struct timeval tv;
        fg_clock_wall(&tv);
        time_t tnow = tv.tv_sec;
        gmtime_r(&tnow, &now);
        int cur = now.tm_year + 1900;
        year += cur - cur % 100;
        if (year > cur + 50)
            year -= 100;
    }
    if (day < 1 || day > 31 || h > 23 || m > 59 || sec > 60)
        return -1;
    int64_t v = days_from_civil(year, mon, day) * 86400 + h * 3600 + m * 60 + sec;
    *t = (time_t)v;
    return 0;
}

/* ---- entity tags (RFC 9110 8.8.3) ---- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Split one entity-tag off *c: its opaque part with the quotes in *opaque, weakness in *weak.
 * Returns 0 or -1 when malformed. */
static int take_etag(cursor_t *c, fg_str_t *opaque, int *weak)
{
    *weak = 0;
    if (c->end - c->p >= 2 && c->p[0] == 'W' && c->p[1] == '/') {
        *weak = 1;
        c->p += 2;
    }
    if (c->p >= c->end || *c->p != '"')
        return -1;
    const char *close = memchr(c->p + 1, '"', (size_t)(c->end - c->p - 1));
    if (close == NULL)
        return -1;
    *opaque = (fg_str_t){c->p, (size_t)(close + 1 - c->p)};
    c->p = close + 1;
    return 0;
}

int fg_static_etag_match(fg_str_t list, fg_str_t etag, int weak)
{
    cursor_t ec = {etag.base, etag.base + etag.len};
    fg_str_t eop;
    int eweak;
    if (take_etag(&ec, &eop, &eweak) != 0)
        return 0;
    cursor_t c = {list.base, list.base + list.len};
    for (;;) {
        /* RFC 9110 5.6.1.2: empty list elements and OWS around commas are accepted. */
        while (c.p < c.end && (is_ows(*c.p) || *c.p == ','))
            c.p++;
        if (c.p >= c.end)
            return 0;
        if (*c.p == '*')
            return 1;
        fg_str_t op;
        int w;
        if (take_etag(&c, &op, &w) != 0)
            return 0;
        if ((weak || (!w && !eweak)) && fg_str_eq(op, eop))
            return 1;
        while (c.p < c.end && is_ows(*c.p))
            c.p++;
        if (c.p < c.end && *c.p != ',')
            return 0;
    }
}

/* ---- Range (RFC 9110 14.1) ---- */

static fg_str_t trim_ows(fg_str_t s)
{
    while (s.len && is_ows(s.base[0])) {
        s.base++;
        s.len--;
    }
    while (s.len && is_ows(s.base[s.len - 1]))
        s.len--;
    return s;
}

/* Decimal digits from *p, saturating at INT64_MAX. Returns how many digits were read. */
static size_t take_pos(const char **p, const char *end, int64_t *out)
{
    const char *s = *p;
    int64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        int d = **p - '0';
        v = v > (INT64_MAX - d) / 10 ? INT64_MAX : v * 10 + d;
        (*p)++;
    }
    *out = v;
    return (size_t)(*p - s);
}

int fg_static_parse_range(fg_str_t value, int64_t size, int64_t *first, int64_t *last)
{
    fg_str_t v = trim_ows(value);
    /* The unit is case-insensitive (RFC 9110 14.1); no whitespace around '='. */
    if (v.len < 6 || strncasecmp(v.base, "bytes=", 6) != 0)
        return FG_RANGE_IGNORE;
    /* An empty representation has no byte to select; RFC 9110 14.2 lets us send it whole. */
    if (size <= 0)
        return FG_RANGE_IGNORE;
    fg_str_t spec = FG_STR_NULL;
    const char *p = v.base + 6, *end = v.base + v.len;
    while (p < end) { /* exactly one non-empty element, else ignore (no multipart) */
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        fg_str_t el = trim_ows((fg_str_t){p, (size_t)(e - p)});
        if (el.len) {
            if (spec.len)
                return FG_RANGE_IGNORE;
            spec = el;
        }
        p = comma ? comma + 1 : end;
    }
    if (spec.len == 0)
        return FG_RANGE_IGNORE;
    p = spec.base;
    end = spec.base + spec.len;
    int64_t a, b;
    if (*p == '-') { /* suffix-range: the last n bytes */
        p++;
        if (take_pos(&p, end, &b) == 0 || p != end)
            return FG_RANGE_IGNORE;
        if (b == 0)
            return FG_RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return FG_RANGE_OK;
    }
    if (take_pos(&p, end, &a) == 0 || p >= end || *p++ != '-')
        return FG_RANGE_IGNORE;
    int has_last = take_pos(&p, end, &b) > 0;
    if (p != end || (has_last && b < a))
        return FG_RANGE_IGNORE; /* invalid int-range (RFC 9110 14.1.1) */
    if (a >= size)
        return FG_RANGE_UNSATISFIABLE;
    *first = a;
    *last = has_last && b < size ? b : size - 1;
    return FG_RANGE_OK;
}

/* ---- request helpers ---- */

static const fg_http_header_t *header_after(const fg_request_t *req, const char *name, size_t *i)
{
    for (; *i < req->nheaders; (*i)++)
        if (fg_str_ieq_c(req->headers[*i].name, name))
            return &req->headers[(*i)++];
    return NULL;
}

static const fg_http_header_t *header(const fg_request_t *req, const char *name)
{
    size_t i = 0;
    return header_after(req, name, &i);
}

/* Whether any field `name` is present (*present) and its list matches etag. A list may span
 * several field lines (RFC 9110 5.3). */
static int header_etag_match(const fg_request_t *req, const char *name, fg_str_t etag, int weak,
                             int *present)
{
    size_t i = 0;
    const fg_http_header_t *h;
    *present = 0;
    while ((h = header_after(req, name, &i)) != NULL) {
        *present = 1;
        if (fg_static_etag_match(h->value, etag, weak))
            return 1;
    }
    return 0;
}

static int header_date(const fg_request_t *req, const char *name, time_t *t)
{
    const fg_http_header_t *h = header(req, name);
    return h != NULL && fg_static_parse_http_date(trim_ows(h->value), t) == 0;
}

/* The gateway's error (fg_request_error_with) with one extra field: Allow for 405 as RFC 9110
 * 15.5.6 requires, Content-Range for 416 as 15.5.17 asks. */
static void error_with_header(fg_request_t *req, int status, const char *kind, const char *msg,
                              const char *hname, const char *hvalue)
{
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 1);
    if (fg_headers_add(&h, fg_str(hname), fg_str(hvalue)) != 0) {
        fg_request_error(req, 500, "internal_error", "out of memory");
        return;
    }
    fg_request_error_with(req, status, kind, msg, &h);
}

/* ---- path mapping ---- */

/* The catch-all parameter name of a template ending in "{**name}" or "{*name}" (trailing
 * slashes aside, as the router ignores them), or empty. */
static fg_str_t catch_all_name(const char *tmpl)
{
    size_t n = tmpl ? strlen(tmpl) : 0;
    while (n > 0 && tmpl[n - 1] == '/')
        n--;
    if (n < 4 || tmpl[n - 1] != '}')
        return FG_STR_NULL;
    const char *open = strrchr(tmpl, '{');
    if (open == NULL || open[1] != '*')
        return FG_STR_NULL;
    const char *s = open + 1, *e;
    while (*s == '*')
        s++;
    for (e = s; e < tmpl + n - 1 && *e != ':' && *e != '=' && *e != '?'; e++)
        ;
    return (fg_str_t){s, (size_t)(e - s)};
}

/* The file path of req, still encoded: "/" + the catch-all capture, or the whole path. A
 * trailing slash of the request path is kept, since it decides between redirect and index;
 * the result is "" for the route's root named without a slash. */
static fg_str_t encoded_file_path(fg_request_t *req)
{
    fg_str_t name = catch_all_name(req->route->match.path);
    if (name.len == 0)
        return req->path;
    fg_str_t v = FG_STR_NULL;
    for (size_t i = 0; i < req->ncaptures; i++)
        if (fg_str_eq(req->captures[i].name, name))
            v = req->captures[i].value;
    /* "/static" with an empty capture names the root without its slash: "" (redirect). */
    int slash_end = req->path.len && req->path.base[req->path.len - 1] == '/';
    int lead = v.len ? v.base[0] != '/' : slash_end;
    int trail = slash_end && v.len && v.base[v.len - 1] != '/';
    char *out = fg_pool_alloc(req->pool, v.len + 3);
    if (out == NULL)
        return FG_STR_NULL;
    size_t w = 0;
    if (lead)
        out[w++] = '/';
    if (v.len)
        memcpy(out + w, v.base, v.len);
    w += v.len;
    if (trail)
        out[w++] = '/';
    out[w] = '\0';
    return (fg_str_t){out, w};
}

/* Whether a segment of path starts with '.': hidden files (.git, .env) are never served, and
 * this also refuses any ".." that reached this far. The one exception is the first segment
 * ".well-known" (RFC 8615: ACME challenges, security.txt), which exists to be served. */
static int has_hidden_segment(const char *path)
{
    static const char wk[] = "/.well-known";
    if (strncmp(path, wk, sizeof(wk) - 1) == 0 &&
        (path[sizeof(wk) - 1] == '/' || path[sizeof(wk) - 1] == '\0'))
        path += sizeof(wk) - 1;
    for (const char *p = path; *p; p++)
        if (*p == '.' && (p == path || p[-1] == '/'))
            return 1;
    return 0;
}

/* Open path (decoded, "" or starting with '/') below root. Returns 0 with a regular file in *f,
 * FOUND_DIR for a directory, or -errno; other file types count as missing. */
static int open_below(int root, const char *path, file_t *f)
{
    if (has_hidden_segment(path))
        return -ENOENT;
    const char *rel = path;
    while (*rel == '/')
        rel++;
    if (*rel == '\0')
        rel = ".";
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it. */
    struct open_how how = {
        .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof(how));
    if (fd == -1)
        return -errno;
    if (fstat(fd, &f->st) == -1) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (S_ISREG(f->st.st_mode)) {
        f->fd = fd;
        f->name = path;
        return 0;
    }
    close(fd);
    return S_ISDIR(f->st.st_mode) ? FOUND_DIR : -ENOENT;
}

static int is_missing(int rc)
{
    return rc == -ENOENT || rc == -ENOTDIR || rc == -EXDEV || rc == -ELOOP || rc == -ENAMETOOLONG ||
           rc == FOUND_DIR;
}

/* Find the file for path: the file itself, or for "dir/" its first index file. A directory
 * named without its slash gives REDIRECT_SLASH when allowed, else counts as missing.
 * Returns 0 with *f, REDIRECT_SLASH, or -errno. */
static int lookup(fg_request_t *req, int root, const char *path, int allow_redirect, file_t *f)
{
    int rc = open_below(root, path, f);
    if (rc != FOUND_DIR)
        return rc;
    size_t len = strlen(path);
    if (len == 0 || path[len - 1] != '/')
        return allow_redirect ? REDIRECT_SLASH : -ENOENT;
    /* The config loader fills the default ["index.html"]; an empty list disables indexes. */
    char *const *names = req->route->static_index;
    size_t n = req->route->nstatic_index;
    for (size_t i = 0; i < n; i++) {
        char *cand = fg_pool_printf(req->pool, "%s%s", path, names[i]);
        if (cand == NULL)
            return -ENOMEM;
        rc = open_below(root, cand, f);
        if (rc == 0 || !is_missing(rc))
            return rc;
    }
    return -ENOENT;
}

/* Replace every "{path}" of pattern by path. NULL when out of memory. */
static char *expand_pattern(fg_pool_t *pool, const char *pattern, const char *path)
{
    static const char var[] = "{path}";
    size_t plen = strlen(path), n = 0;
    for (const char *p = strstr(pattern, var); p; p = strstr(p + 6, var))
        n++;
    char *out = fg_pool_alloc(pool, strlen(pattern) + n * plen + 1);
    if (out == NULL)
        return NULL;
    char *w = out;
    const char *p = pattern, *hit;
    while ((hit = strstr(p, var)) != NULL) {
        memcpy(w, p, (size_t)(hit - p));
        w += hit - p;
        memcpy(w, path, plen);
        w += plen;
        p = hit + 6;
    }
    strcpy(w, p);
    return out;
}

/* tryFiles: the first pattern naming a regular file (or "dir/" with an index) wins; "=CODE"
 * answers CODE. Returns 0 with *f, a positive status, or -errno. */
static int try_files(fg_request_t *req, int root, const char *path, file_t *f)
{
    const fg_route_t *route = req->route;
    for (size_t i = 0; i < route->nstatic_try_files; i++) {
        const char *pat = route->static_try_files[i];
        if (pat[0] == '=') {
            int code = atoi(pat + 1);
            return code >= 100 && code <= 599 ? code : 500;
        }
        char *cand = expand_pattern(req->pool, pat, path);
        if (cand == NULL)
            return -ENOMEM;
        if (cand[0] != '/')
            continue; /* not below the root: the config should have refused it */
        int rc = lookup(req, root, cand, 0, f);
        if (rc == 0 || !is_missing(rc))
            return rc;
    }
    return 404;
}

/* Map req to a file. Returns 0 with *f, a positive HTTP status to answer, or -errno. */
static int resolve(fg_request_t *req, int root, file_t *f)
{
    fg_str_t enc = encoded_file_path(req);
    if (enc.base == NULL)
        return -ENOMEM;
    char *path = fg_pool_alloc(req->pool, enc.len + 1);
    if (path == NULL)
        return -ENOMEM;
    if (fg_path_decode(enc.base, enc.len, path) < 0 || (path[0] != '/' && path[0] != '\0'))
        return 400; /* %00 or an encoded '/' */
    if (req->route->nstatic_try_files)
        return try_files(req, root, path, f);
    return lookup(req, root, path, 1, f);
}

/* ---- answering ---- */

static void redirect_slash(fg_request_t *req)
{
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 1);
    const char *loc = req->query.len
                          ? fg_pool_printf(req->pool, "%.*s/?%.*s", (int)req->path.len,
                                           req->path.base, (int)req->query.len, req->query.base)
                          : fg_pool_printf(req->pool, "%.*s/", (int)req->path.len, req->path.base);
    if (loc == NULL || fg_headers_add(&h, FG_STR_LIT("Location"), fg_str(loc)) != 0) {
        fg_request_error(req, 500, "internal_error", "out of memory");
        return;
    }
    fg_request_respond(req, 301, &h, "", 0);
}

static void answer_failure(fg_request_t *req, int rc)
{
    if (rc == REDIRECT_SLASH) {
        redirect_slash(req);
    } else if (rc == 400) {
        fg_request_error(req, 400, "bad_request", "invalid file path");
    } else if (rc == 404 || (rc < 0 && is_missing(rc))) {
        fg_request_error(req, 404, "not_found", "file not found");
    } else if (rc == -EACCES || rc == -EPERM || rc == 403) {
        fg_request_error(req, 403, "forbidden", "file not readable");
    } else if (rc > 0) {
        fg_request_error(req, rc, fg_request_error_kind(rc), "no file matched");
    } else if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM) {
        fg_log_warn("static: %.*s: %s", (int)req->path.len, req->path.base, strerror(-rc));
        fg_request_error(req, 503, "service_unavailable", "out of resources");
    } else {
        fg_log_error("static: %.*s: %s", (int)req->path.len, req->path.base, strerror(-rc));
        fg_request_error(req, 500, "internal_error", "cannot open file");
    }
}

/* RFC 9110 13.2.2 steps 1-4. lm is the Last-Modified time. Returns 0 to go on, 304 or 412. */
static int preconditions(const fg_request_t *req, fg_str_t etag, time_t lm)
{
    int present;
    time_t t;
    /* If-Match uses the strong comparison (13.1.1): our weak tag only matches "*". */
    if (header_etag_match(req, "If-Match", etag, 0, &present) == 0 && present)
        return 412;
    if (!present && header_date(req, "If-Unmodified-Since", &t) && lm > t)
        return 412;
    if (header_etag_match(req, "If-None-Match", etag, 1, &present))
        return 304;
    /* 13.1.3: If-Modified-Since is ignored when If-None-Match is present. */
    if (!present && header_date(req, "If-Modified-Since", &t) && lm <= t)
        return 304;
    return 0;
}

/* If-Range (RFC 9110 13.1.5): true when the validator matches strongly: an entity-tag equal
 * to ours while ours is strong, or a date equal to Last-Modified once its second has passed
 * (8.8.2.2). */
static int if_range_holds(const fg_request_t *req, fg_str_t etag, time_t lm, time_t now)
{
    const fg_http_header_t *h = header(req, "If-Range");
    if (h == NULL)
        return 1;
    fg_str_t v = trim_ows(h->value);
    time_t t;
    if (v.len > 1 && v.base[0] == 'W' && v.base[1] == '/')
        return 0; /* a weak tag never holds for If-Range */
    if (v.len && v.base[0] == '"')
        return fg_static_etag_match(v, etag, 0);
    return fg_static_parse_http_date(v, &t) == 0 && t == lm && lm < now;
}

/* The bytes to send: FG_RANGE_OK with [*first, *last], FG_RANGE_UNSATISFIABLE, or
 * FG_RANGE_IGNORE for the whole representation. */
static int choose_range(const fg_request_t *req, int64_t size, fg_str_t etag, time_t lm, time_t now,
                        int64_t *first, int64_t *last)
{
    size_t i = 0;
    const fg_http_header_t *range = header_after(req, "Range", &i);
    /* 14.2: Range is defined for GET only. Several Range fields are several ranges. */
    if (range == NULL || !fg_str_eq(req->method, FG_STR_LIT("GET")) ||
        header_after(req, "Range", &i) != NULL || !if_range_holds(req, etag, lm, now))
        return FG_RANGE_IGNORE;
    return fg_static_parse_range(range->value, size, first, last);
}

/* Add ETag and Last-Modified to h. lm is the Last-Modified time. Returns 0 or -1.
 * The entity-tag is the modification time (ns) and the size. It is strong (RFC 9110 8.8.1),
 * so that If-Range can resume a download, once the file's last change is a second old: a
 * file still being written within that second could change again without either moving. */
static int add_validators(fg_request_t *req, const struct stat *st, time_t lm, time_t now,
                          fg_headers_t *h, fg_str_t *etag)
{
    uint64_t mtime_ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
    const char *weak = st->st_mtim.tv_sec < now ? "" : "W/";
    char *tag = fg_pool_printf(req->pool, "%s\"%" PRIx64 "-%" PRIx64 "\"", weak, mtime_ns,
                               (uint64_t)st->st_size);
    char *date = fg_pool_alloc(req->pool, 30);
    if (tag == NULL || date == NULL)
        return -1;
    fg_http_date(lm, date);
    *etag = fg_str(tag);
    if (fg_headers_add(h, FG_STR_LIT("ETag"), *etag) != 0 ||
        fg_headers_add(h, FG_STR_LIT("Last-Modified"), fg_str(date)) != 0)
        return -1;
    return 0;
}

/* Answer req with the regular file f (owned: closed or handed to send_file). */
static void serve(fg_request_t *req, file_t *f)
{
    struct timeval tv;
    fg_clock_wall(&tv); /* the clock fg_request_date stamps Date with */
    time_t now = tv.tv_sec;
    /* 8.8.2.1: never a Last-Modified later than the response's Date. */
    time_t lm = f->st.st_mtim.tv_sec < now ? f->st.st_mtim.tv_sec : now;
    int64_t size = f->st.st_size, first = 0, last = size - 1;
    fg_headers_t h;
    fg_str_t etag;
    fg_headers_init(&h, req->pool, 8);
    if (add_validators(req, &f->st, lm, now, &h, &etag) != 0)
        goto out_nomem;

    int status = preconditions(req, etag, lm);
    if (status == 412) {
        close(f->fd);
        fg_request_error(req, 412, "precondition_failed", "precondition failed");
        return;
    }
    if (status == 304) {
        /* 8.6: a Content-Length in a 304 must equal the 200's, so pass the size; the front
         * end sends no body for 304. */
        close(f->fd);
        req->ops->send_head(req, 304, &h, size);
        req->ops->finish(req);
        return;
    }

    int r = choose_range(req, size, etag, lm, now, &first, &last);
    if (r == FG_RANGE_UNSATISFIABLE) {
        close(f->fd);
        char *cr = fg_pool_printf(req->pool, "bytes */%" PRId64, size);
        if (cr == NULL)
            fg_request_error(req, 500, "internal_error", "out of memory");
        else
            error_with_header(req, 416, "range_not_satisfiable", "range not satisfiable",
                              "Content-Range", cr);
        return;
    }
    status = 200;
    if (r == FG_RANGE_OK) {
        status = 206;
        char *cr =
            fg_pool_printf(req->pool, "bytes %" PRId64 "-%" PRId64 "/%" PRId64, first, last, size);
        if (cr == NULL || fg_headers_add(&h, FG_STR_LIT("Content-Range"), fg_str(cr)) != 0)
            goto out_nomem;
    } else {
        first = 0;
        last = size - 1;
    }
    if (fg_headers_add(&h, FG_STR_LIT("Content-Type"), fg_str(fg_mime_type(f->name))) ||
        fg_headers_add(&h, FG_STR_LIT("Accept-Ranges"), FG_STR_LIT("bytes")))
        goto out_nomem;

    int64_t len = last - first + 1;
    int head_only = !fg_str_eq(req->method, FG_STR_LIT("GET"));
    if (req->ops->send_head(req, status, &h, len) != 0 || head_only || len == 0)
        close(f->fd);
    else
        req->ops->send_file(req, f->fd, (off_t)first, (off_t)len); /* owns fd now */
    req->ops->finish(req);
    return;

out_nomem:
    close(f->fd);
    fg_request_error(req, 500, "internal_error", "out of memory");
}

void fg_static_handle(fg_request_t *req)
{
    /* Methods are case-sensitive (RFC 9110 9.1). */
    if (!fg_str_eq(req->method, FG_STR_LIT("GET")) && !fg_str_eq(req->method, FG_STR_LIT("HEAD"))) {
        error_with_header(req, 405, "method_not_allowed", "static files answer GET and HEAD",
                          "Allow", "GET, HEAD");
        return;
    }
    int owned;
    int root = root_fd(req->route, &owned);
    if (root == -1) {
        fg_log_error("static: route %s: open %s: %s", req->route->id ? req->route->id : "?",
                     req->route->static_root ? req->route->static_root : "(none)", strerror(errno));
        fg_request_error(req, 500, "internal_error", "static root unavailable");
        return;
    }
    file_t f;
    int rc = resolve(req, root, &f);
    if (owned)
        close(root);
    if (rc == 0)
        serve(req, &f);
    else
        answer_failure(req, rc);
}
