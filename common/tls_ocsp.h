/* OCSP stapling (RFC 6066 8, RFC 8446 4.4.2.1): a certificate's "ocspFile", a DER OCSP
 * response (RFC 6960) fetched from the CA's responder by the master (master/ocsp_update.c, with
 * "ocspUpdate") or by an updater outside the gateway (`openssl ocsp -respout`), checked at load
 * and sent to clients that ask for it. */
#ifndef FG_COMMON_TLS_OCSP_H
#define FG_COMMON_TLS_OCSP_H

#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

typedef struct fg_tls_ocsp_s fg_tls_ocsp_t;

/* The largest response file read. */
#define FG_TLS_OCSP_MAX 65536

/* What a check found (*state of fg_tls_ocsp_parse and fg_tls_ocsp_load). */
#define FG_TLS_OCSP_CURRENT 0 /* fits the certificate, good, stapled now */
#define FG_TLS_OCSP_STALE 1   /* fits and good, but outside thisUpdate..nextUpdate now */
#define FG_TLS_OCSP_REVOKED 2 /* the certificate's status is revoked */
#define FG_TLS_OCSP_UNKNOWN 3 /* the certificate's status is unknown to the responder */
#define FG_TLS_OCSP_INVALID 4 /* anything else: unreadable, malformed, not for it, unsigned */

/* Checks the DER response der for leaf, whose issuer must be among chain (the intermediates of
 * the chain file): a successful response whose status for leaf is good, signed by the issuer or
 * a responder it delegated to. Returns a copy with *state CURRENT or STALE (the reason in why:
 * it is kept, and stapled only within its times, fg_tls_ocsp_stapled), or NULL with *state
 * REVOKED, UNKNOWN or INVALID and the reason in why. */
fg_tls_ocsp_t *fg_tls_ocsp_parse(const unsigned char *der, size_t len, X509 *leaf,
                                 STACK_OF(X509) * chain, char *why, size_t whylen, int *state);
/* The same for the response in the file path. */
fg_tls_ocsp_t *fg_tls_ocsp_load(const char *path, X509 *leaf, STACK_OF(X509) * chain, char *why,
                                size_t whylen, int *state);
/* The first http(s) OCSP responder URL of leaf's Authority Information Access (RFC 5280
 * 4.2.2.1) into url; -1 when it names none. */
int fg_tls_ocsp_responder(X509 *leaf, char *url, size_t len);
/* The certificate of chain that issued leaf; NULL when the chain file lacks it. */
X509 *fg_tls_ocsp_issuer(X509 *leaf, STACK_OF(X509) * chain);
/* ctx's handshakes staple r for clients that ask (status_request), within its times. */
void fg_tls_ocsp_apply(const fg_tls_ocsp_t *r, SSL_CTX *ctx);
/* thisUpdate and nextUpdate of r; returns whether r gives a nextUpdate (else *next_update is
 * meaningless). */
int fg_tls_ocsp_times(const fg_tls_ocsp_t *r, time_t *this_update, time_t *next_update);
/* Whether r is stapled at now: from thisUpdate (5 minutes of leeway) until nextUpdate, and never
 * when nextUpdate is before thisUpdate. */
int fg_tls_ocsp_stapled(const fg_tls_ocsp_t *r, time_t now);
void fg_tls_ocsp_free(fg_tls_ocsp_t *r);

#endif
