/* What the agent needs to open a tunnel, apart from the event loop and the gateway's address
 * (agent/resolve.h): the TLS client context and connection (CA, verification, SNI), and the
 * WebSocket upgrade (RFC 6455 4.1): the request, and the check of the gateway's 101.
 * agent/tunnel.c runs them on a connection. */
#ifndef FG_AGENT_DIAL_H
#define FG_AGENT_DIAL_H

#include <stddef.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "agent/config.h"

#define FG_DIAL_KEY_LEN 24       /* base64 of 16 random bytes */
#define FG_DIAL_HEAD_MAX (16384) /* longest 101 response head the agent reads */

/* OpenSSL's initialisation for the agent, once at start-up before any other OpenSSL call:
 * libcrypto's error strings are left out until fg_dial_error_strings. 0, or -1. */
int fg_dial_tls_init(void);
/* Load libcrypto's reason strings (idempotent), before an error of a failed configuration
 * is formatted with ERR_error_string_n. */
void fg_dial_error_strings(void);
/* The TLS client context for a wss:// gateway: TLS 1.2 at least, the CA file (or the system
 * store), peer verification unless tls.verify is false. NULL with err (OpenSSL's reason). */
SSL_CTX *fg_dial_tls_ctx(const fg_agent_config_t *cfg, char *err, size_t errlen);
/* A client SSL for one connection: SNI (unless the name is an IP address), the name or
 * address checked against the certificate, ALPN http/1.1. NULL when out of memory. */
SSL *fg_dial_tls_new(SSL_CTX *ctx, const fg_agent_config_t *cfg);
/* A fresh Sec-WebSocket-Key into key (FG_DIAL_KEY_LEN + 1 bytes). 0, or -1. */
int fg_dial_key(char key[FG_DIAL_KEY_LEN + 1]);
/* The upgrade request for cfg with key into buf. Returns its length, or -1 if it does not
 * fit. */
int fg_dial_request(const fg_agent_config_t *cfg, const char *key, char *buf, size_t len);
/* Check the response head in buf[0..len): the length of the head (through its empty line)
 * when it is a valid 101 for key, 0 while the head is incomplete, -1 with err otherwise (the
 * status line, or which field is wrong). */
int fg_dial_response(const char *buf, size_t len, const char *key, char *err, size_t errlen);

#endif
