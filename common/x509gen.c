/* See common/x509gen.h. */
#include "common/x509gen.h"

#include <string.h>
#include <time.h>

#include <openssl/x509v3.h>

#define PLACEHOLDER_ORG "FastGateway placeholder"

EVP_PKEY *fg_x509gen_key(void)
{
    return EVP_EC_gen("P-256");
}

/* "DNS:a,DNS:b" as a subjectAltName extension. */
static X509_EXTENSION *san(char *const *names, size_t n)
{
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    for (size_t i = 0; gens != NULL && i < n; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (g == NULL || s == NULL || ASN1_STRING_set(s, names[i], (int)strlen(names[i])) != 1) {
            GENERAL_NAME_free(g);
            ASN1_IA5STRING_free(s);
            GENERAL_NAMES_free(gens);
            return NULL;
        }
        GENERAL_NAME_set0_value(g, GEN_DNS, s);
        if (!sk_GENERAL_NAME_push(gens, g)) {
            GENERAL_NAME_free(g);
            GENERAL_NAMES_free(gens);
            return NULL;
        }
    }
    X509_EXTENSION *ext = gens ? X509V3_EXT_i2d(NID_subject_alt_name, 0, gens) : NULL;
    GENERAL_NAMES_free(gens);
    return ext;
}

static X509_NAME *subject(const char *cn, const char *org)
{
    X509_NAME *name = X509_NAME_new();
    if (name == NULL ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        (org != NULL && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                                   (const unsigned char *)org, -1, -1, 0) != 1)) {
        X509_NAME_free(name);
        return NULL;
    }
    return name;
}

X509 *fg_x509gen_placeholder(EVP_PKEY *key, char *const *names, size_t n, int days)
{
    if (n == 0 || strlen(names[0]) > 64) /* RFC 5280 ub-common-name */
        return NULL;
    X509 *x = X509_new();
    X509_NAME *name = subject(names[0], PLACEHOLDER_ORG);
    X509_EXTENSION *ext = san(names, n);
    ASN1_INTEGER *serial = ASN1_INTEGER_new();
    int ok = x != NULL && name != NULL && ext != NULL && serial != NULL &&
             ASN1_INTEGER_set_int64(serial, (int64_t)time(NULL)) == 1 &&
             X509_set_version(x, 2) == 1 && X509_set_serialNumber(x, serial) == 1 &&
             X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) != NULL &&
             X509_set_pubkey(x, key) == 1 && X509_add_ext(x, ext, -1) == 1 &&
             X509_sign(x, key, EVP_sha256()) > 0;
    ASN1_INTEGER_free(serial);
    X509_NAME_free(name);
    X509_EXTENSION_free(ext);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

int fg_x509gen_is_placeholder(X509 *x)
{
    char org[64];
    return X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, org,
                                     sizeof(org)) > 0 &&
           strcmp(org, PLACEHOLDER_ORG) == 0 &&
           X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0;
}

X509_REQ *fg_x509gen_csr(EVP_PKEY *key, char *const *names, size_t n)
{
    if (n == 0 || strlen(names[0]) > 64)
        return NULL;
    X509_REQ *r = X509_REQ_new();
    X509_NAME *name = subject(names[0], NULL);
    X509_EXTENSION *ext = san(names, n);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    int ok = r != NULL && name != NULL && ext != NULL && exts != NULL &&
             sk_X509_EXTENSION_push(exts, ext) && X509_REQ_set_version(r, 0) == 1 &&
             X509_REQ_set_subject_name(r, name) == 1 && X509_REQ_set_pubkey(r, key) == 1 &&
             X509_REQ_add_extensions(r, exts) == 1 && X509_REQ_sign(r, key, EVP_sha256()) > 0;
    if (exts != NULL && sk_X509_EXTENSION_num(exts) > 0)
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    else {
        sk_X509_EXTENSION_free(exts);
        X509_EXTENSION_free(ext);
    }
    X509_NAME_free(name);
    if (!ok) {
        X509_REQ_free(r);
        return NULL;
    }
    return r;
}
