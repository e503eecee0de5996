/* libFuzzer target: the checks of an OCSP response (common/tls_ocsp.c, fg_tls_ocsp_parse) on any
 * bytes, as the OCSP updater gets them from a responder, for a self-signed certificate that is
 * its own issuer. Whatever it returns must be consistent: a response kept only with a CURRENT or
 * STALE state, a reason for every other. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/tls_ocsp.h"
#include "common/x509gen.h"

static X509 *leaf;
static STACK_OF(X509) * chain;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (leaf == NULL) {
        char *names[] = {"fuzz.example.test"};
        EVP_PKEY *key = fg_x509gen_key();
        leaf = key ? fg_x509gen_placeholder(key, names, 1, 30) : NULL;
        chain = sk_X509_new_null();
        if (leaf == NULL || chain == NULL || sk_X509_push(chain, leaf) <= 0)
            abort();
        EVP_PKEY_free(key);
    }
    char why[512] = "";
    int state = -1;
    fg_tls_ocsp_t *r = fg_tls_ocsp_parse(data, size, leaf, chain, why, sizeof(why), &state);
    if (r != NULL) {
        if (state != FG_TLS_OCSP_CURRENT && state != FG_TLS_OCSP_STALE)
            abort();
        time_t a, b;
        fg_tls_ocsp_times(r, &a, &b);
        fg_tls_ocsp_free(r);
    } else if ((state != FG_TLS_OCSP_REVOKED && state != FG_TLS_OCSP_UNKNOWN &&
                state != FG_TLS_OCSP_INVALID) ||
               why[0] == '\0') {
        abort();
    }
    return 0;
}
