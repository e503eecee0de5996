/* TLS termination policy: what a TLS transport asks of the configuration. The master builds,
 * for each generation and before forking its workers, the certificates (read and checked
 * once) and per TLS server one SSL_CTX per certificate it offers, all with that server's
 * policy (versions, ciphers, groups, ALPN, tickets). Workers only read these objects.
 *
 * A handshake starts on the server's default context (fg_tls_server_ctx). The servername
 * callback (RFC 6066 3) looks the SNI name up in tables built at load: an exact name first
 * (case-insensitive), then a one-level wildcard ("*.example.com" covers "a.example.com", not
 * "example.com" nor "a.b.example.com"), else the default; no SNI gets the default. It switches
 * to the chosen certificate's context, which carries the same policy, so no setting depends
 * on which of the two OpenSSL reads it from. The SSL_CTX app data of these contexts belongs
 * to this module.
 *
 * Destinations (https://) get their client contexts from common/tls_client.c, built by
 * fg_tls_build too.
 *
 * Session tickets are protected with keys from shm/tickets.c, shared by every worker and
 * generation, so a session resumes on any worker. */
#ifndef FG_TLS_H
#define FG_TLS_H

#include <stddef.h>
#include <time.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/config.h"
#include "shm/arena.h"

/* Certificates expiring within this many days draw a warning at load and from -t. */
#define FG_TLS_EXPIRY_WARN_DAYS 14
/* The TLS 1.2 cipher list of servers (tls.ciphers unset) and of the destination client:
 * Mozilla's "intermediate" list, forward secrecy and AEAD only. */
#define FG_TLS_DEFAULT_CIPHERS                                                                     \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* A PEM file opened for reading without blocking on a FIFO; anything but a regular file is
 * refused. Returns the BIO (caller frees), or NULL with the reason in why. */
BIO *fg_tls_open_pem(const char *path, char *why, size_t whylen);

typedef void (*fg_tls_warn_fn)(void *arg, const char *msg);

/* Read and check every certificate of cfg, and build the contexts of its TLS servers into
 * cfg->tls and each server's tls_compiled. Refused, with "FILE: certificates[i].chain|key:
 * PATH: reason" (OpenSSL's reason where it has one): an unreadable file, a malformed PEM, a
 * key that does not match its certificate, a certificate (or intermediate) expired or not yet
 * valid. Certificates expiring within FG_TLS_EXPIRY_WARN_DAYS are passed to warn (may be NULL).
 * With shm, ticket keys come from its "tickets" zone for generation gen; without (for -t),
 * contexts use OpenSSL's own per-process keys. Returns 0, or -1 with err set (everything
 * built so far is freed by fg_tls_free, which the caller owes either way). Master only. */
int fg_tls_build(fg_config_t *cfg, fg_shm_t *shm, uint64_t gen, fg_tls_warn_fn warn, void *arg,
                 char *err, size_t errlen);
void fg_tls_free(fg_config_t *cfg);

/* Certificate index's leaf, key and intermediates (owned by cfg->tls), for a client
 * certificate (common/tls_client.c). Returns 0, or -1 when not loaded. */
int fg_tls_cert_pair(const fg_config_t *cfg, size_t index, X509 **leaf, EVP_PKEY **pkey,
                     STACK_OF(X509) * *chain);

/* Whether certificate index has an OCSP response ("ocspFile"), its thisUpdate and nextUpdate
 * (*has_next: whether it gives one) and whether it is stapled now. */
int fg_tls_cert_ocsp(const fg_config_t *cfg, size_t index, time_t *this_update, time_t *next_update,
                     int *has_next, int *stapled);

/* The context a server's connections start on; NULL for a plaintext server. */
SSL_CTX *fg_tls_server_ctx(const fg_server_t *s);

/* The protocol ALPN settled (RFC 7301 3.2). The server picks from its "alpn" list in its own
 * order; a client offering nothing in common gets a fatal no_application_protocol alert, so a
 * finished handshake has either an agreed protocol or none offered: FG_TLS_ALPN_NONE, which a
 * front end treats as HTTP/1.1. */
typedef enum { FG_TLS_ALPN_NONE = 0, FG_TLS_ALPN_HTTP11, FG_TLS_ALPN_H2 } fg_tls_alpn_t;
fg_tls_alpn_t fg_tls_alpn(const SSL *ssl);

/* May a request with this Host (port allowed, RFC 9110 7.2) be served on this connection?
 * The policy (docs/tls.md), for RFC 9110 15.5.20 421 Misdirected Request:
 *  - no SNI was sent (IP-address clients, RFC 6066 3 forbids literals): yes, routing by Host;
 *  - Host names the SNI name: yes, the client got the certificate it asked for;
 *  - else yes only when the certificate chosen for the connection covers Host (exactly or by
 *    its one-level wildcard), so reusing a connection for another name of the same
 *    certificate works (RFC 9110 4.3.3) and nothing else does.
 * Returns 1 (serve) or 0 (answer 421). Scans the chosen certificate's names only when Host
 * differs from SNI. */
int fg_tls_host_allowed(const SSL *ssl, const char *host, size_t len);

/* What the access log records of a finished handshake. The strings are OpenSSL's constants
 * or the SSL's own SNI: valid while ssl lives, nothing allocated. */
typedef struct {
    const char *version; /* "TLSv1.3" */
    const char *cipher;  /* "TLS_AES_128_GCM_SHA256" */
    const char *sni;     /* "" when none was sent */
    int resumed;
} fg_tls_info_t;
void fg_tls_info(const SSL *ssl, fg_tls_info_t *out);

/* The certificate index (into cfg->certificates) of the connection's current context. */
long fg_tls_selected_cert(const SSL *ssl);

/* A certificate or CRL date as "2026-12-04 19:54:39 UTC" into buf. */
void fg_tls_format_time(const ASN1_TIME *t, char *buf, size_t len);

/* 1 when s is a name a certificate may be selected by: LDH labels, or "*." followed by two
 * labels or more. */
int fg_tls_name_valid(const char *s);

/* The Location of a redirectHttps answer: "https://" + the authority (r->authority, or the
 * request's Host without its port, plus ":port" unless 443) + target (the request target,
 * origin-form, RFC 9112 3.2.1). Returns the length written (NUL-terminated), or -1 when the
 * host is empty or not a valid authority (answer 400) or out is too small. */
int fg_tls_redirect_location(const fg_redirect_https_t *r, const char *host, size_t hlen,
                             const char *target, size_t tlen, char *out, size_t outlen);

#endif
