/* Keys, self-signed certificates and certificate requests made by the gateway itself: the
 * placeholder an ACME certificate is served with until it is issued (common/tls.c), and the
 * key and CSR of an ACME order (master/acme.c). Keys are ECDSA P-256. */
#ifndef FG_X509GEN_H
#define FG_X509GEN_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A new P-256 key, or NULL. */
EVP_PKEY *fg_x509gen_key(void);
/* A certificate for names (DNS subjectAltNames; the first is also the CN) signed by key itself,
 * valid from now for days, with the organization "FastGateway placeholder". NULL on failure. */
X509 *fg_x509gen_placeholder(EVP_PKEY *key, char *const *names, size_t n, int days);
/* 1 when x is such a placeholder. */
int fg_x509gen_is_placeholder(X509 *x);
/* A PKCS#10 request for names (RFC 2986; the subjectAltName extension requested, RFC 8555
 * 7.4), signed by key. NULL on failure. */
X509_REQ *fg_x509gen_csr(EVP_PKEY *key, char *const *names, size_t n);

#endif
