/* The TCP front end (layer 4; docs/config.md "tcp", docs/tunnels.md "TCP services"): a server
 * with "tcp" relays each accepted connection's bytes, unchanged, to a destination of its
 * cluster, and the destination's back.
 *
 * Per connection: the cluster's balancer picks a destination (health, weights, admin state and
 * in-flight counts apply, as for requests); the connection to it is an exchange that switches
 * to FG_TCP_PROTOCOL (worker/upstream/exchange.h):
 *  - tcp://HOST:PORT: a fresh TCP connection (worker/upstream/tcp_client.h);
 *  - tunnel://AGENT/SERVICE: an HTTP/2 CONNECT stream (RFC 9113 8.5) inside the agent's tunnel
 *    when this worker holds it, else an HTTP/1.1 switch over the holder's hop socket, which the
 *    holder turns into that stream (worker/tunnel/hop.h).
 * A destination that refuses, times out, or answers anything but the switch is counted as a
 * passive failure (refusals and timeouts) and the next one is tried, each at most once; when
 * none is left, the client's connection is closed and the error log says why.
 *
 * Then both ends go to a relay (worker/http/relay.h): back-pressure, half-close (a FIN is
 * passed on after the bytes before it), the server's idleTimeout, splice(2) when both ends are
 * sockets, and a retiring worker keeps relaying until webSocketDrainTimeout. At the end, one
 * access log line per connection (fg_accesslog_write_tcp). */
#ifndef FG_TCP_PROXY_H
#define FG_TCP_PROXY_H

#include "worker/core/frontend.h"

extern const fg_frontend_t fg_tcp_proxy_frontend;

#endif
