/* Name resolution for the agent off its event loop: libevent's evdns (RFC 1035 over UDP, the
 * nameservers, search list and options of /etc/resolv.conf, and /etc/hosts), so that a slow or
 * silent DNS server holds up only the dial that waits for it, never the streams of a tunnel
 * already serving. A blocking getaddrinfo would freeze the whole loop for the resolver's
 * timeouts. */
#ifndef FG_AGENT_RESOLVE_H
#define FG_AGENT_RESOLVE_H

#include <sys/socket.h>

struct event_base;
struct evdns_base;
typedef struct fg_resolve_s fg_resolve_t;

/* The lookup's end: the first address (sa, len) with err NULL, or sa NULL and err saying why
 * ("cannot resolve HOST: REASON"). */
typedef void (*fg_resolve_cb)(void *arg, const struct sockaddr *sa, socklen_t len, const char *err);

/* A resolver on base reading /etc/resolv.conf and /etc/hosts now. NULL when out of memory. */
struct evdns_base *fg_resolve_base_new(struct event_base *base);
/* Read /etc/resolv.conf again (SIGHUP); pending lookups go on with the new nameservers.
 * /etc/hosts is read at start only. */
void fg_resolve_base_reload(struct evdns_base *dns);
/* Free it once the loop has stopped (after lookups cancelled from the loop had their turn). */
void fg_resolve_base_free(struct evdns_base *dns);

/* Resolve host and port (a number) for a TCP connection. cb runs once: from the loop, or
 * before this returns for an address literal, a name of /etc/hosts, or an error. Returns the
 * pending lookup, or NULL when cb already ran. */
fg_resolve_t *fg_resolve_start(struct evdns_base *dns, const char *host, const char *port,
                               fg_resolve_cb cb, void *arg);
/* Give up a pending lookup: its cb is never called. evdns ends the query and frees the lookup
 * from the loop, later; dns must stay until the loop has run (fg_resolve_base_free). */
void fg_resolve_cancel(fg_resolve_t *r);

#endif
