/* The host names of the agent's services (services: NAME -> http://HOST:PORT), resolved with
 * the agent's own resolver (agent/resolve.h) before a configuration is compiled, so that the
 * gateway's loader, which the runtime runs (agent/runtime.h), meets only address literals and
 * never asks the C library's blocking resolver: a reload (SIGHUP) whose services name a host
 * that a slow DNS server has to answer leaves the serving tunnels alone meanwhile. Every
 * lookup is bounded by connectTimeoutMs. Address literals are used as they are. */
#ifndef FG_AGENT_SERVICES_H
#define FG_AGENT_SERVICES_H

#include <stddef.h>

#include "agent/config.h"

struct event_base;
struct evdns_base;
typedef struct fg_services_lookup_s fg_services_lookup_t;

/* The end of the lookups: err NULL when every service of cfg has its resolved address (or
 * needs none), else "FILE: services.NAME: cannot resolve HOST: REASON". */
typedef void (*fg_services_cb)(void *arg, fg_agent_config_t *cfg, const char *err);

/* Resolve cfg's service hosts on base with dns. cb runs once: from the loop, or before this
 * returns when nothing had to wait (literals, names of /etc/hosts, an error). Returns the
 * pending lookups, or NULL when cb already ran. cfg stays the caller's. */
fg_services_lookup_t *fg_services_resolve(struct event_base *base, struct evdns_base *dns,
                                          fg_agent_config_t *cfg, fg_services_cb cb, void *arg);
/* Give up pending lookups: cb is never called. dns must stay until the loop has run. */
void fg_services_cancel(fg_services_lookup_t *l);
/* The same on an event loop of its own, until done (start-up, -t). 0, or -1 with err. */
int fg_services_resolve_now(fg_agent_config_t *cfg, char *err, size_t errlen);

/* Split an http://, https:// or tcp:// address into its authority (host[:port], the bytes
 * between "//" and the path), host (IPv6 without brackets), port (decimal; 80 or 443 when
 * absent) and path (the rest). 0, or -1 when it has no host, an empty or non-decimal port, or
 * a part longer than its buffer. */
int fg_services_split(const char *address, char *authority, size_t alen, char *host, size_t hlen,
                      char *port, size_t plen, const char **path);

#endif
