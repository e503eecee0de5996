/* Client certificates on TLS servers (a server's "tls.clientAuth"; RFC 8446 4.3.2, 4.4.2.4,
 * RFC 5280 6 and 6.3 for the chain and the CRLs).
 *
 * The master reads the CA and CRL files once per server and generation (fg_tls_clientauth_load)
 * and applies them to each of the server's contexts (fg_tls_clientauth_apply): the server asks
 * for a certificate in every full handshake, names the CAs of caFile in its request, and
 * verifies what comes against them (and the CRLs, for every certificate of the chain) with the
 * "TLS client" purpose. "required" aborts a handshake without a certificate; either mode aborts
 * one whose certificate does not verify, with the alert OpenSSL maps the verify error to.
 *
 * Sessions remember the verified certificate, so a resumed connection has the same identity.
 * The session id context hashes the server's id, the mode, the depth and the bytes of both
 * files: a session never resumes on a server with another policy, nor after a reload that
 * changed the CAs or the CRLs (a revoked certificate cannot come back through a ticket); a
 * ticket whose client certificate has expired since gives a full handshake. */
#ifndef FG_TLS_CLIENTAUTH_H
#define FG_TLS_CLIENTAUTH_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "common/config.h"
#include "common/str.h"
#include "common/tls.h"

typedef struct fg_tls_clientauth_s fg_tls_clientauth_t;

/* Reads t's caFile (one certificate or more) and crlFile (one CRL or more). Refused, with
 * "FILE: servers[SI].tls.clientAuth.caFile|crlFile: PATH: reason": an unreadable file, no PEM
 * certificate or CRL in it, a PEM block that cannot be decoded (a damaged or truncated file), a
 * CRL whose nextUpdate has passed. A CRL whose nextUpdate is less than FG_TLS_EXPIRY_WARN_DAYS
 * away, and a CA of caFile with no CRL in crlFile, go to warn (may be NULL). Returns the object
 * (NULL with err set). t->client_auth must not be off. */
fg_tls_clientauth_t *fg_tls_clientauth_load(const fg_tls_server_config_t *t, const char *server_id,
                                            const char *file, size_t si, fg_tls_warn_fn warn,
                                            void *arg, char *err, size_t errlen);
/* Sets ctx's verification, CA names and session id context. Returns 0, or -1 (no memory). */
int fg_tls_clientauth_apply(const fg_tls_clientauth_t *a, SSL_CTX *ctx);
void fg_tls_clientauth_free(fg_tls_clientauth_t *a);
/* The session id context a's contexts get (a hash of the server, the policy and the files) into
 * buf; returns its length (at most len). */
size_t fg_tls_clientauth_sid(const fg_tls_clientauth_t *a, unsigned char *buf, size_t len);

/* Why a server handshake failed, when client authentication is the reason: "no client
 * certificate (...)" for err (OpenSSL's first error code) saying the client sent none, or
 * "client certificate SUBJECT rejected: REASON (verify error N at depth D)". Returns 1 with
 * buf set, or 0 when the failure has another cause. */
int fg_tls_clientauth_why(const SSL *ssl, unsigned long err, char *buf, size_t len);

/* The connection's verified client certificate (NULL: none; also after a resumption). */
X509 *fg_tls_client_cert(const SSL *ssl);
/* What requests use of it: its subject in RFC 2253 form ("CN=alice,O=Example", for the access
 * log) and the base64 of its DER (RFC 4648 4, for the ClientCert transform). Made on first use
 * and kept on the SSL, so a connection's requests do not format it again (the certificate
 * cannot change: renegotiation is off). NULL without a certificate, or without memory; valid
 * while ssl lives. */
typedef struct {
    fg_str_t subject;
    fg_str_t der64;
} fg_tls_client_id_t;
const fg_tls_client_id_t *fg_tls_client_id(const SSL *ssl);

#endif
