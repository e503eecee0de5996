/* TLS to destinations (https:// addresses): one client SSL_CTX per cluster with an https
 * destination, built by the master from the cluster's "httpClient" (fg_tls_build calls
 * fg_tls_client_build), and per destination the name sent as SNI and verified, and a slot
 * for the session to resume (RFC 8446 2.2, RFC 5077). Workers inherit the contexts; each
 * worker's session slots are its own (copy-on-write after fork). The connect path
 * (worker/upstream/upstream.c) calls fg_tls_client_ssl_new for a connection; every resumable
 * session the destination issues on it (TLS 1.2 in the handshake, TLS 1.3 tickets after it,
 * read with the response) replaces the destination's slot, through the context's new-session
 * callback. */
#ifndef FG_TLS_CLIENT_H
#define FG_TLS_CLIENT_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "common/config.h"

/* Build cfg->clusters[i].tls for every cluster with an https destination or health address.
 * Certificates (cfg->tls) must be loaded first: a clientCertificate names one. Returns 0, or -1
 * with "FILE: clusters[i].httpClient...: reason" in err. */
int fg_tls_client_build(fg_config_t *cfg, char *err, size_t errlen);
void fg_tls_client_free(fg_config_t *cfg);

/* A client SSL for destination d (index into cl->destinations), in connect state: SNI and the
 * verified host name (or IP address) set, the destination's last session offered for
 * resumption and its slot as the SSL's app data (for the sessions to come), ALPN offering
 * http/1.1 (h2 first for an HTTP/2 destination, alone with versionPolicy RequestVersionExact).
 * NULL when the cluster has no TLS context or out of
 * memory. */
SSL *fg_tls_client_ssl_new(const fg_cluster_t *cl, size_t d);
/* The same for the health probes of destination d: for its `health` address when it has one
 * (an https URL; name: serverName, else the URL's host; a session slot of its own), else for
 * d itself. NULL when the probes speak plain HTTP, or as above. */
SSL *fg_tls_client_health_ssl_new(const fg_cluster_t *cl, size_t d);
/* The name checked against destination d's certificate (and sent as SNI unless it is an IP
 * address). */
const char *fg_tls_client_name(const fg_cluster_t *cl, size_t d);

#endif
