/* OCSP stapling (RFC 6066 8, RFC 8446 4.4.2.1): a certificate's "ocspFile", a DER OCSP
 * response (RFC 6960) that an updater outside the gateway fetches from the CA's responder
 * (`openssl ocsp -respout`), checked at load and sent to clients that ask for it. */
#ifndef FG_COMMON_TLS_OCSP_H
#define FG_COMMON_TLS_OCSP_H

#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

typedef struct fg_tls_ocsp_s fg_tls_ocsp_t;

/* The largest response file read. */
#define FG_TLS_OCSP_MAX 65536

/* Reads and checks the response in path for leaf, whose issuer must be among chain (the
 * intermediates of the chain file): a successful response whose status for leaf is good, signed
 * by the issuer or a responder it delegated to. Returns it, or NULL with the reason in why. One
 * that is not stapled now (fg_tls_ocsp_stapled) is returned with *stale set and the
 * reason in why: it is kept, and stapled only within those times. */
fg_tls_ocsp_t *fg_tls_ocsp_load(const char *path, X509 *leaf, STACK_OF(X509) * chain, char *why,
                                size_t whylen, int *stale);
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
