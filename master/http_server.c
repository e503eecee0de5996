#include "master/http_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "master/connset.h"

struct fg_http_server_s {
    fg_connset_t *set;
    fg_connset_ops_t ops; /* conn_ops with this server's bound */
    const fg_http_server_conf_t *conf;
};

struct fg_http_server_conn_s {
    fg_connset_conn_t base;
    struct event *deadline; /* the whole request must arrive before it fires */
    fg_http_header_t *fields;
    char *head; /* a copy of the request head, split in place into req's strings */
    char *body;
    int dispatched; /* the handler has the request */
    int held;       /* fg_http_server_hold: the answer comes later */
    fg_http_server_req_t req;
    void *data;
    void (*release)(void *data);
};

static const fg_http_server_conf_t *conf_of(const fg_http_server_conn_t *c)
{
    const fg_http_server_t *s = fg_connset_arg(c->base.set);
    return s->conf;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 428:
        return "Precondition Required";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status >= 500 ? "Internal Server Error" : "Error";
    }
}

void fg_http_server_respond(fg_http_server_conn_t *c, int status, const char *type,
                            const char *etag, const char *extra, struct evbuffer *body)
{
    size_t n = body ? evbuffer_get_length(body) : 0;
    if (c->base.closing) {
        if (body)
            evbuffer_drain(body, n);
        return;
    }
    const fg_http_server_conf_t *conf = conf_of(c);
    struct evbuffer *out = bufferevent_get_output(c->base.bev);
    int head = c->req.method && strcmp(c->req.method, "HEAD") == 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s%s"
                        "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                        status, reason(status), type ? type : "text/plain", n, etag ? "ETag: " : "",
                        etag ? etag : "", etag ? "\r\n" : "", extra ? extra : "",
                        conf->headers ? conf->headers : "");
    if (body && !head)
        evbuffer_add_buffer(out, body);
    else if (body)
        evbuffer_drain(body, n);
    c->held = 0;
    event_del(c->deadline);
    fg_connset_finish(&c->base);
    /* a held answer ran without timeouts: a client that does not read is still bounded */
    struct timeval tv = {conf->timeout_ms / 1000, (conf->timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->base.bev, NULL, &tv);
}

static void refuse(fg_http_server_conn_t *c, int status, const char *msg)
{
    const fg_http_server_conf_t *conf = conf_of(c);
    if (conf->error)
        conf->error(conf->arg, c, status, msg);
    else
        fg_http_server_respond(c, status, "text/plain", NULL, NULL, NULL);
}

/* Answer a head fg_http1_parse_request refused (rc < 0). */
static void refuse_head(fg_http_server_conn_t *c, int rc, const fg_http1_head_t *h)
{
    const fg_http_server_conf_t *conf = conf_of(c);
    char msg[64];
    switch (rc) {
    case FG_HTTP1_ERR_HEADERS_TOO_LARGE:
    case FG_HTTP1_ERR_URI_TOO_LONG: /* the request line may take the whole head */
        if (h->num_headers >= conf->max_fields)
            snprintf(msg, sizeof(msg), "more than %zu header fields", conf->max_fields);
        else
            snprintf(msg, sizeof(msg), "request head larger than %zu KiB", conf->max_head / 1024);
        refuse(c, 431, msg);
        break;
    case FG_HTTP1_ERR_VERSION:
        refuse(c, 505, "only HTTP/1.x is served");
        break;
    case FG_HTTP1_ERR_NOT_IMPLEMENTED:
        refuse(c, 501, "Transfer-Encoding is not supported: send Content-Length");
        break;
    default:
        refuse(c, 400, "malformed request");
    }
}

/* NUL-terminate the slices of h, which point into c->head, and fill c->req from them. */
static void split(fg_http_server_conn_t *c, const fg_http1_head_t *h)
{
    /* each slice ends on a delimiter (SP, ':', OWS or CR) that the parse no longer needs */
    ((char *)h->method.base)[h->method.len] = '\0';
    ((char *)h->target.base)[h->target.len] = '\0';
    for (size_t i = 0; i < h->num_headers; i++) {
        ((char *)c->fields[i].name.base)[c->fields[i].name.len] = '\0';
        ((char *)c->fields[i].value.base)[c->fields[i].value.len] = '\0';
    }
    fg_http_server_req_t *r = &c->req;
    r->method = h->method.base;
    r->path = (char *)h->target.base;
    r->query = "";
    char *q = strchr(r->path, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }
    r->host = h->host.base;
    r->fields = c->fields;
    r->nfields = h->num_headers;
    r->body = "";
    r->body_len = h->content_length > 0 ? (size_t)h->content_length : 0;
}

/* Take the request head off the input once it is whole. Returns 0 when c->req holds it, 1 to
 * wait for more bytes or when the request was refused. */
static int read_head(fg_http_server_conn_t *c)
{
    const fg_http_server_conf_t *conf = conf_of(c);
    struct evbuffer *in = bufferevent_get_input(c->base.bev);
    /* The parser's bound is one byte over ours: a read that fills exactly max_head bytes waits
     * for more instead of answering 431 while the rest of a long head is still unread, which
     * would turn the close into a reset that can destroy the answer. */
    size_t bound = conf->max_head + 1, len = evbuffer_get_length(in);
    if (len > bound)
        len = bound; /* the parser answers 431 when no head ends within it */
    if (len == 0)
        return 1;
    fg_http1_limits_t lim = {.max_request_line = conf->max_head,
                             .max_header_size = bound,
                             .max_headers = (unsigned)conf->max_fields};
    fg_http1_head_t h = {.headers = c->fields, .headers_cap = conf->max_fields};
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    int rc = buf ? fg_http1_parse_request(buf, len, &lim, &h) : FG_HTTP1_ERR_BAD;
    if (rc == FG_HTTP1_INCOMPLETE)
        return 1;
    if (rc > 0 && (size_t)rc > conf->max_head)
        rc = FG_HTTP1_ERR_HEADERS_TOO_LARGE;
    if (rc < 0) {
        refuse_head(c, rc, &h);
        return 1;
    }
    if (h.te_present) { /* RFC 9112 6.1: a coding the server does not decode is a 501 */
        refuse(c, 501, "Transfer-Encoding is not supported: send Content-Length");
        return 1;
    }
    if (h.content_length > 0 && (uint64_t)h.content_length > conf->max_body) {
        refuse(c, 413, "request body too large");
        return 1;
    }
    if (h.target.base[0] != '/') { /* RFC 9112 3.2.1: origin-form only */
        refuse(c, 400, "malformed request");
        return 1;
    }
    c->head = malloc((size_t)rc + 1);
    if (c->head == NULL) {
        refuse(c, 503, "out of memory");
        return 1;
    }
    evbuffer_remove(in, c->head, (size_t)rc);
    c->head[rc] = '\0';
    /* parsed again where the slices stay: the same bytes give the same head */
    fg_http1_parse_request(c->head, (size_t)rc, &lim, &h);
    split(c, &h);
    return 0;
}

static void dispatch(fg_http_server_conn_t *c)
{
    const fg_http_server_conf_t *conf = conf_of(c);
    c->dispatched = 1;
    event_del(c->deadline);
    bufferevent_disable(c->base.bev, EV_READ); /* one request per connection */
    SSL *ssl = bufferevent_openssl_get_ssl(c->base.bev);
    /* SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT: a certificate, when sent, has been
     * verified by the handshake; check the outcome all the same */
    c->req.client_cert =
        ssl && SSL_get0_peer_certificate(ssl) && SSL_get_verify_result(ssl) == X509_V_OK;
    conf->handler(conf->arg, c, &c->req);
}

static void on_read(fg_connset_conn_t *b)
{
    fg_http_server_conn_t *c = (fg_http_server_conn_t *)b;
    if (b->closing || c->dispatched)
        return;
    if (c->head == NULL && read_head(c) != 0)
        return;
    struct evbuffer *in = bufferevent_get_input(b->bev);
    if (evbuffer_get_length(in) < c->req.body_len)
        return;
    if (c->req.body_len > 0) {
        c->body = malloc(c->req.body_len + 1);
        if (c->body == NULL) {
            refuse(c, 503, "out of memory");
            return;
        }
        evbuffer_remove(in, c->body, c->req.body_len);
        c->body[c->req.body_len] = '\0';
        c->req.body = c->body;
    }
    dispatch(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    fg_http_server_conn_t *c = arg;
    fg_connset_close(&c->base);
}

static int on_open(fg_connset_conn_t *b)
{
    fg_http_server_conn_t *c = (fg_http_server_conn_t *)b;
    const fg_http_server_conf_t *conf = conf_of(c);
    struct timeval tv = {conf->timeout_ms / 1000, (conf->timeout_ms % 1000) * 1000};
    c->fields = calloc(conf->max_fields ? conf->max_fields : 1, sizeof(*c->fields));
    c->deadline = evtimer_new(bufferevent_get_base(b->bev), on_deadline, c);
    if (c->fields == NULL || c->deadline == NULL || evtimer_add(c->deadline, &tv) < 0)
        return -1;
    return 0;
}

static int on_event(fg_connset_conn_t *b, short what)
{
    const fg_http_server_conn_t *c = (const fg_http_server_conn_t *)b;
    /* a client that half-closed after its request still gets the held answer */
    return c->held && (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR);
}

static void on_release(fg_connset_conn_t *b)
{
    fg_http_server_conn_t *c = (fg_http_server_conn_t *)b;
    if (c->deadline)
        event_free(c->deadline);
    if (c->release)
        c->release(c->data);
    free(c->fields);
    free(c->head);
    free(c->body);
}

static const fg_connset_ops_t conn_ops = {
    .conn_size = sizeof(fg_http_server_conn_t),
    .open = on_open,
    .read = on_read,
    .event = on_event,
    .release = on_release,
};

fg_http_server_t *fg_http_server_new(struct event_base *base, const struct sockaddr *sa,
                                     socklen_t salen, const char *label,
                                     const fg_http_server_conf_t *conf, char *err, size_t errlen)
{
    fg_http_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "%s: out of memory", label);
        return NULL;
    }
    s->conf = conf;
    s->ops = conn_ops;
    s->ops.max_conns = conf->max_conns;
    int fd = fg_connset_listen_tcp(sa, salen, label, err, errlen);
    s->set = fd < 0 ? NULL : fg_connset_new(base, fd, label, &s->ops, s, err, errlen);
    if (s->set == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void fg_http_server_free(fg_http_server_t *s)
{
    if (s == NULL)
        return;
    fg_connset_free(s->set);
    free(s);
}

void fg_http_server_close_in_child(const fg_http_server_t *s)
{
    if (s)
        fg_connset_close_in_child(s->set);
}

void fg_http_server_set_tls(fg_http_server_t *s, struct ssl_ctx_st *ctx)
{
    fg_connset_set_tls(s->set, ctx);
}

void fg_http_server_hold(fg_http_server_conn_t *c, void *data, void (*release)(void *data))
{
    if (c->release && c->data != data)
        c->release(c->data);
    /* the deadline stopped at dispatch: nothing runs out before the answer */
    c->held = 1;
    c->data = data;
    c->release = release;
}

void fg_http_server_each_held(fg_http_server_t *s,
                              void (*fn)(void *arg, fg_http_server_conn_t *c, void *data),
                              void *arg)
{
    if (s == NULL)
        return;
    for (fg_connset_conn_t *b = fg_connset_conns(s->set), *next; b; b = next) {
        next = b->next;
        fg_http_server_conn_t *c = (fg_http_server_conn_t *)b;
        if (c->held)
            fn(arg, c, c->data);
    }
}

const char *fg_http_server_field(const fg_http_server_req_t *req, const char *name, size_t *count)
{
    const char *first = NULL;
    size_t n = 0;
    for (size_t i = 0; i < req->nfields; i++) {
        if (strcasecmp(req->fields[i].name.base, name) != 0)
            continue;
        if (n++ == 0)
            first = req->fields[i].value.base;
    }
    if (count)
        *count = n;
    return first;
}
