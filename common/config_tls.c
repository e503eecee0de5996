/* Configuration loader, part 5: TLS. The top-level "certificates" and "tls", a server's "tls"
 * and "redirectHttps", and a cluster's "httpClient". Only the schema is checked here; the files
 * are read and checked (key match, validity dates) by common/tls.c when the master builds a
 * generation, and by -t. Schema: docs/config.md, docs/tls.md. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "common/config.h"
#include "common/config_impl.h"
#include "common/tls.h"

#define DEFAULT_GROUPS "X25519:P-256:P-384"

/* ---- certificates ---- */

/* "http[s]://HOST[:PORT][/PATH][?QUERY]", what the master's client (master/http_fetch.h) takes:
 * a host name or address ([IPv6]), a port 1..65535, printable ASCII without a fragment. */
static int http_url(const char *s)
{
    size_t skip = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
    if (skip == 0 || strlen(s) >= 1024)
        return 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '#')
            return 0; /* RFC 3986 2, 3.5: it would split the request line; never sent */
    const char *h = s + skip, *end = h + strcspn(h, "/?"), *port = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (rb == NULL || rb == h + 1 ||
            strspn(h + 1, "0123456789abcdefABCDEF:.") < (size_t)(rb - h - 1))
            return 0;
        if (rb + 1 != end && rb[1] != ':')
            return 0;
        port = rb + 1 != end ? rb + 2 : NULL;
    } else {
        size_t n = strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
        if (n == 0 || (h + n != end && h[n] != ':'))
            return 0;
        port = h + n != end ? h + n + 1 : NULL;
    }
    if (port) {
        size_t n = (size_t)(end - port);
        if (n == 0 || n > 5 || strspn(port, "0123456789") < n || atoi(port) < 1 ||
            atoi(port) > 65535)
            return 0;
    }
    return 1;
}

static int load_cert(fg_config_ctx_t *c, const json_t *o, fg_tls_cert_config_t *cert)
{
    static const char *const keys[] = {"id",       "chain",      "key",           "names", "acme",
                                       "ocspFile", "ocspUpdate", "ocspResponder", NULL};
    char *chain = NULL, *key = NULL, *ocsp = NULL;
    int rc = -1;

    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 ||
        fg_config_require_string(c, o, "id", &cert->id) < 0 ||
        fg_config_require_string(c, o, "chain", &chain) < 0 ||
        fg_config_require_string(c, o, "key", &key) < 0 ||
        fg_config_get_strings(c, o, "names", &cert->names, &cert->nnames) < 0 ||
        fg_config_get_bool(c, o, "acme", &cert->acme) < 0 ||
        fg_config_get_string(c, o, "ocspFile", 1, &ocsp) < 0 ||
        fg_config_get_bool(c, o, "ocspUpdate", &cert->ocsp_update) < 0 ||
        fg_config_get_string(c, o, "ocspResponder", 1, &cert->ocsp_responder) < 0)
        goto out;
    cert->chain = fg_config_abs_path(c, chain);
    cert->key = fg_config_abs_path(c, key);
    if (ocsp && cert->acme && !cert->ocsp_update) {
        fg_config_fail(c, "ocspFile",
                       "an \"acme\" certificate changes with each renewal: a fixed OCSP response "
                       "cannot follow it (\"ocspUpdate\": true fetches one for each)");
        goto out;
    }
    if (cert->ocsp_update && ocsp == NULL) {
        fg_config_fail(c, "ocspUpdate",
                       "needs \"ocspFile\": the file the fetched response is "
                       "kept in");
        goto out;
    }
    if (cert->ocsp_responder && !cert->ocsp_update) {
        fg_config_fail(c, "ocspResponder", "is used only with \"ocspUpdate\": true");
        goto out;
    }
    if (cert->ocsp_responder && !http_url(cert->ocsp_responder)) {
        fg_config_fail(c, "ocspResponder",
                       "not an http:// or https:// URL with a host, of at most 1023 bytes "
                       "(RFC 6960 A.1): \"%.200s\"",
                       cert->ocsp_responder);
        goto out;
    }
    cert->ocsp_file = ocsp ? fg_config_abs_path(c, ocsp) : NULL;
    if (cert->names && cert->nnames == 0) {
        fg_config_fail(c, "names", "must not be empty (leave it out to use the certificate's)");
        goto out;
    }
    for (size_t i = 0; i < cert->nnames; i++) {
        if (!fg_tls_name_valid(cert->names[i])) {
            size_t mark = fg_config_push_key(c, "names");
            fg_config_push_index(c, i);
            fg_config_fail(c, NULL,
                           "\"%s\" is not a host name or a \"*.\" wildcard over two labels or "
                           "more",
                           cert->names[i]);
            fg_config_pop(c, mark);
            goto out;
        }
    }
    rc = 0;
out:
    free(chain);
    free(key);
    free(ocsp);
    return rc;
}

static int load_cert_item(fg_config_ctx_t *c, const json_t *o, void *out)
{
    return load_cert(c, o, out);
}

/* "externalAccount": {keyId, macKeyFile} (RFC 8555 7.3.4). The key file is checked with the
 * certificates (common/tls.c); the ACME client reads it when it creates the account. */
static int load_eab(fg_config_ctx_t *c, const json_t *acme, fg_acme_config_t *a)
{
    static const char *const keys[] = {"keyId", "macKeyFile", NULL};
    json_t *o = NULL;
    char *file = NULL;
    if (fg_config_get_object(c, acme, "externalAccount", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "externalAccount");
    int rc = -1;
    if (fg_config_require_string(c, o, "keyId", &a->eab_key_id) < 0 ||
        fg_config_require_string(c, o, "macKeyFile", &file) < 0)
        goto out;
    if (a->eab_key_id[0] == '\0' || strlen(a->eab_key_id) > 256) {
        fg_config_fail(c, "keyId", "must be 1 to 256 characters");
        goto out;
    }
    a->eab_mac_file = fg_config_abs_path(c, file);
    rc = 0;
out:
    free(file);
    fg_config_pop(c, mark);
    return rc;
}

/* "acme": {directory, email, stateDir, caFile, renewBefore, checkInterval, externalAccount}. */
static int load_acme(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const keys[] = {"directory",   "email",         "stateDir",        "caFile",
                                       "renewBefore", "checkInterval", "externalAccount", NULL};
    fg_acme_config_t *a = &c->cfg->acme;
    json_t *o = NULL;
    char *dir = NULL, *ca = NULL;
    a->renew_before_ms = 30ULL * 86400 * 1000;
    a->check_interval_ms = 12ULL * 3600 * 1000;
    if (fg_config_get_object(c, root, "acme", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "acme");
    int rc = -1;
    if (fg_config_require_string(c, o, "directory", &a->directory) < 0 ||
        fg_config_get_string(c, o, "email", 1, &a->email) < 0 ||
        fg_config_require_string(c, o, "stateDir", &dir) < 0 ||
        fg_config_get_string(c, o, "caFile", 1, &ca) < 0 ||
        fg_config_get_duration(c, o, "renewBefore", &a->renew_before_ms) < 0 ||
        fg_config_get_duration(c, o, "checkInterval", &a->check_interval_ms) < 0)
        goto out;
    /* RFC 8555 6.1: every ACME request goes over HTTPS. */
    if (strncmp(a->directory, "https://", 8) != 0 || a->directory[8] == '\0' ||
        a->directory[8] == '/') {
        fg_config_fail(c, "directory", "\"%s\" is not an https:// URL", a->directory);
        goto out;
    }
    if (a->email && (strchr(a->email, '@') == NULL || strpbrk(a->email, " \t\r\n,<>\"") != NULL)) {
        fg_config_fail(c, "email", "\"%s\" is not an e-mail address", a->email);
        goto out;
    }
    if (a->check_interval_ms < 60 * 1000) {
        fg_config_fail(c, "checkInterval", "must be at least 1m");
        goto out;
    }
    if (a->renew_before_ms < 86400 * 1000) {
        fg_config_fail(c, "renewBefore", "must be at least 1d");
        goto out;
    }
    a->state_dir = fg_config_abs_path(c, dir);
    a->ca_file = ca ? fg_config_abs_path(c, ca) : NULL;
    if (load_eab(c, o, a) < 0)
        goto out;
    a->enabled = 1;
    rc = 0;
out:
    free(dir);
    free(ca);
    fg_config_pop(c, mark);
    return rc;
}

/* The certificate other than i whose chain or key file is path, or -1. */
static long file_shared(const fg_config_t *cfg, size_t i, const char *path)
{
    for (size_t k = 0; k < cfg->ncertificates; k++) {
        const fg_tls_cert_config_t *o = &cfg->certificates[k];
        if (k != i && (strcmp(o->chain, path) == 0 || strcmp(o->key, path) == 0 ||
                       (o->ocsp_file && strcmp(o->ocsp_file, path) == 0)))
            return (long)k;
    }
    return -1;
}

/* A certificate with "ocspUpdate" has its ocspFile written by the master: a file of its own,
 * neither its certificate nor its key, nor any file of another certificate (two updaters
 * would each find the other's response there, and fetch and reload again and again). */
static int check_ocsp_files(fg_config_ctx_t *c)
{
    fg_config_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        const fg_tls_cert_config_t *t = &cfg->certificates[i];
        if (!t->ocsp_update)
            continue;
        size_t mark = fg_config_push_key(c, "certificates");
        size_t m = fg_config_push_index(c, i);
        int rc = 0;
        long other = file_shared(cfg, i, t->ocsp_file);
        if (strcmp(t->ocsp_file, t->chain) == 0 || strcmp(t->ocsp_file, t->key) == 0)
            rc = fg_config_fail(c, "ocspFile",
                                "%s is the certificate's own chain or key file: the fetched "
                                "response is written there",
                                t->ocsp_file);
        else if (other >= 0)
            rc = fg_config_fail(c, "ocspFile",
                                "%s is also a file of certificates[%ld]: the fetched response is "
                                "written there",
                                t->ocsp_file, other);
        fg_config_pop(c, m);
        fg_config_pop(c, mark);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A certificate with "acme": true needs the "acme" section and names to order, and files of
 * its own: two certificates writing one file would each find the other's there, order again
 * after every reload, and overwrite a certificate managed by hand. */
static int check_acme_certs(fg_config_ctx_t *c)
{
    fg_config_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        const fg_tls_cert_config_t *t = &cfg->certificates[i];
        if (!t->acme)
            continue;
        size_t mark = fg_config_push_key(c, "certificates");
        size_t m = fg_config_push_index(c, i);
        int rc = 0;
        if (!cfg->acme.enabled)
            rc = fg_config_fail(c, "acme", "needs a top-level \"acme\" section");
        else if (t->nnames == 0)
            rc = fg_config_fail(c, "names", "required with \"acme\": the DNS names to order");
        for (size_t k = 0; rc == 0 && k < t->nnames; k++)
            if (t->names[k][0] == '*')
                rc = fg_config_fail(c, "names",
                                    "\"%s\": a wildcard needs the DNS-01 challenge; "
                                    "HTTP-01 orders exact names only",
                                    t->names[k]);
        long other = rc == 0 ? file_shared(cfg, i, t->chain) : -1;
        if (other >= 0)
            rc = fg_config_fail(c, "chain", "%s is also a file of certificates[%ld]", t->chain,
                                other);
        other = rc == 0 ? file_shared(cfg, i, t->key) : -1;
        if (other >= 0)
            rc = fg_config_fail(c, "key", "%s is also a file of certificates[%ld]", t->key, other);
        fg_config_pop(c, m);
        fg_config_pop(c, mark);
        if (rc < 0)
            return -1;
    }
    return 0;
}

int fg_config_load_certificates(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const tls_keys[] = {"ticketKeyRotation", NULL};
    fg_config_t *cfg = c->cfg;
    json_t *tls = NULL;
    void *items;

    cfg->tls_ticket_rotation_ms = 3600 * 1000;
    int rc = fg_config_load_list(c, root, "certificates", sizeof(fg_tls_cert_config_t),
                                 offsetof(fg_tls_cert_config_t, id), load_cert_item, &items,
                                 &cfg->ncertificates);
    cfg->certificates = items;
    if (rc < 0 || load_acme(c, root) < 0 || check_acme_certs(c) < 0 || check_ocsp_files(c) < 0 ||
        fg_config_get_object(c, root, "tls", tls_keys, &tls) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "tls");
    rc = fg_config_get_duration(c, tls, "ticketKeyRotation", &cfg->tls_ticket_rotation_ms);
    if (rc >= 0 && cfg->tls_ticket_rotation_ms < 60 * 1000)
        rc = fg_config_fail(c, "ticketKeyRotation", "must be at least 1m");
    fg_config_pop(c, mark);
    return rc < 0 ? -1 : 0;
}

static int find_cert(const fg_config_t *cfg, const char *id, size_t *index)
{
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        if (strcmp(cfg->certificates[i].id, id) == 0) {
            *index = i;
            return 0;
        }
    }
    return -1;
}

/* ---- a server's "tls" ---- */

/* "TLSv1.2" or "TLSv1.3" into a wire version; older versions are refused by name (RFC 8996
 * deprecates TLS 1.0 and 1.1). */
static int get_version(fg_config_ctx_t *c, const json_t *o, const char *key, int *out)
{
    static const char *const names[] = {"TLSv1.2", "TLSv1.3", NULL};
    json_t *v = o ? json_object_get(o, key) : NULL;
    int i = 0;

    if (json_is_string(v) && (strcmp(json_string_value(v), "TLSv1") == 0 ||
                              strcmp(json_string_value(v), "TLSv1.0") == 0 ||
                              strcmp(json_string_value(v), "TLSv1.1") == 0))
        return fg_config_fail(c, key, "%s is not supported (RFC 8996): use TLSv1.2 or TLSv1.3",
                              json_string_value(v));
    int rc = fg_config_get_enum(c, o, key, names, &i);
    if (rc == 1)
        *out = i == 0 ? FG_TLS_VERSION_1_2 : FG_TLS_VERSION_1_3;
    return rc;
}

static int load_protocols(fg_config_ctx_t *c, const json_t *tls, int *min, int *max)
{
    static const char *const keys[] = {"min", "max", NULL};
    json_t *o = NULL;

    *min = FG_TLS_VERSION_1_2;
    *max = FG_TLS_VERSION_1_3;
    if (fg_config_get_object(c, tls, "protocols", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "protocols");
    int rc = 0;
    if (get_version(c, o, "min", min) < 0 || get_version(c, o, "max", max) < 0)
        rc = -1;
    else if (*min > *max)
        rc = fg_config_fail(c, "min", "is above max");
    fg_config_pop(c, mark);
    return rc;
}

/* ALPN identifiers the front ends speak (RFC 7301 6 registry names). The default offers HTTP/2
 * first, as browsers and modern gateways expect, then HTTP/1.1. */
static int load_alpn(fg_config_ctx_t *c, const json_t *tls, fg_tls_server_config_t *t)
{
    if (fg_config_get_strings(c, tls, "alpn", &t->alpn, &t->nalpn) < 0)
        return -1;
    if (t->alpn == NULL) {
        t->alpn = fg_config_xcalloc(3, sizeof(char *));
        t->alpn[0] = fg_config_xstrdup("h2");
        t->alpn[1] = fg_config_xstrdup("http/1.1");
        t->nalpn = 2;
        return 0;
    }
    if (t->nalpn == 0)
        return fg_config_fail(c, "alpn", "must list at least one protocol");
    size_t mark = fg_config_push_key(c, "alpn");
    int rc = 0;
    for (size_t i = 0; i < t->nalpn && rc == 0; i++) {
        size_t m = fg_config_push_index(c, i);
        if (strcmp(t->alpn[i], "h2") != 0 && strcmp(t->alpn[i], "http/1.1") != 0)
            rc = fg_config_fail(
                c, NULL, "unknown protocol \"%s\" (expected \"h2\" or \"http/1.1\")", t->alpn[i]);
        for (size_t j = 0; j < i && rc == 0; j++)
            if (strcmp(t->alpn[j], t->alpn[i]) == 0)
                rc = fg_config_fail(c, NULL, "\"%s\" is listed twice", t->alpn[i]);
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return rc;
}

/* "hsts": "off" | false | {maxAge, includeSubDomains, preload}; the header value is built
 * here once (RFC 6797 6.1). preload follows the preload list's conditions: a year or more
 * and includeSubDomains. */
static int load_hsts(fg_config_ctx_t *c, const json_t *tls, fg_tls_server_config_t *t)
{
    static const char *const keys[] = {"maxAge", "includeSubDomains", "preload", NULL};
    json_t *v = json_object_get(tls, "hsts");
    uint64_t age = 365ULL * 86400 * 1000;
    int sub = 0, preload = 0;
    json_t *o = NULL;

    if (v == NULL || json_is_false(v) ||
        (json_is_string(v) && strcmp(json_string_value(v), "off") == 0))
        return 0;
    if (!json_is_object(v))
        return fg_config_fail(c, "hsts", "expected an object or \"off\", got %s",
                              fg_config_type_name(v));
    if (fg_config_get_object(c, tls, "hsts", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "hsts");
    int rc = -1;
    if (fg_config_get_duration(c, o, "maxAge", &age) < 0 ||
        fg_config_get_bool(c, o, "includeSubDomains", &sub) < 0 ||
        fg_config_get_bool(c, o, "preload", &preload) < 0)
        goto out;
    if (preload && (!sub || age < 365ULL * 86400 * 1000)) {
        fg_config_fail(c, "preload", "needs includeSubDomains and a maxAge of a year or more");
        goto out;
    }
    char buf[96];
    snprintf(buf, sizeof(buf), "max-age=%llu%s%s", (unsigned long long)(age / 1000),
             sub ? "; includeSubDomains" : "", preload ? "; preload" : "");
    t->hsts_header = fg_config_xstrdup(buf);
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

/* "clientAuth": {mode, caFile, crlFile, verifyDepth}. The files are read by common/tls.c. */
static int load_client_auth(fg_config_ctx_t *c, const json_t *tls, fg_tls_server_config_t *t)
{
    static const char *const keys[] = {"mode", "caFile", "crlFile", "verifyDepth", NULL};
    static const char *const modes[] = {"off", "optional", "required", NULL};
    json_t *o = NULL;
    char *ca = NULL, *crl = NULL;
    long long depth = 2;
    int mode = FG_TLS_CLIENT_AUTH_OFF;

    if (fg_config_get_object(c, tls, "clientAuth", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "clientAuth");
    int rc = -1;
    if (json_object_get(o, "mode") == NULL) {
        fg_config_fail(c, "mode", "required: \"required\", \"optional\" or \"off\"");
        goto out;
    }
    if (fg_config_get_enum(c, o, "mode", modes, &mode) < 0 ||
        fg_config_get_string(c, o, "caFile", 1, &ca) < 0 ||
        fg_config_get_string(c, o, "crlFile", 1, &crl) < 0 ||
        fg_config_get_int(c, o, "verifyDepth", 0, 8, &depth) < 0)
        goto out;
    if (mode != FG_TLS_CLIENT_AUTH_OFF && ca == NULL) {
        fg_config_fail(c, "caFile", "required: the CAs that sign the clients' certificates");
        goto out;
    }
    t->client_auth = mode;
    t->client_ca_file = ca ? fg_config_abs_path(c, ca) : NULL;
    t->client_crl_file = crl ? fg_config_abs_path(c, crl) : NULL;
    t->client_verify_depth = (int)depth;
    rc = 0;
out:
    free(ca);
    free(crl);
    fg_config_pop(c, mark);
    return rc;
}

/* certificates -> indexes; default among them. */
static int resolve_server_certs(fg_config_ctx_t *c, fg_tls_server_config_t *t)
{
    const fg_config_t *cfg = c->cfg;

    if (t->ncertificates == 0)
        return fg_config_fail(c, "certificates", "at least one certificate id is required");
    t->cert_index = fg_config_xcalloc(t->ncertificates, sizeof(size_t));
    size_t mark = fg_config_push_key(c, "certificates");
    for (size_t i = 0; i < t->ncertificates; i++) {
        size_t m = fg_config_push_index(c, i);
        int rc = 0;
        if (find_cert(cfg, t->certificates[i], &t->cert_index[i]) < 0)
            rc = fg_config_fail(c, NULL, "unknown certificate id \"%s\"", t->certificates[i]);
        for (size_t j = 0; j < i && rc == 0; j++)
            if (t->cert_index[j] == t->cert_index[i])
                rc = fg_config_fail(c, NULL, "certificate \"%s\" is listed twice (first at [%zu])",
                                    t->certificates[i], j);
        fg_config_pop(c, m);
        if (rc < 0) {
            fg_config_pop(c, mark);
            return -1;
        }
    }
    fg_config_pop(c, mark);
    if (t->default_id == NULL && t->ncertificates > 1)
        return fg_config_fail(c, NULL,
                              "missing \"default\": with several certificates, name the one "
                              "offered without SNI or on no match");
    if (t->default_id == NULL)
        t->default_id = fg_config_xstrdup(t->certificates[0]);
    for (size_t i = 0; i < t->ncertificates; i++) {
        if (strcmp(t->certificates[i], t->default_id) == 0) {
            t->default_index = i;
            return 0;
        }
    }
    return fg_config_fail(c, "default", "\"%s\" is not one of this server's certificates",
                          t->default_id);
}

static int load_tls_object(fg_config_ctx_t *c, const json_t *tls, fg_tls_server_config_t *t)
{
    long long cache = 0, tickets = 1;

    t->session_tickets = 1;
    t->handshake_timeout_ms = 10 * 1000;
    if (fg_config_get_strings(c, tls, "certificates", &t->certificates, &t->ncertificates) < 0 ||
        fg_config_get_string(c, tls, "default", 1, &t->default_id) < 0 ||
        resolve_server_certs(c, t) < 0 ||
        load_protocols(c, tls, &t->min_version, &t->max_version) < 0 ||
        fg_config_get_string(c, tls, "ciphers", 1, &t->ciphers) < 0 ||
        fg_config_get_string(c, tls, "ciphersuites", 1, &t->ciphersuites) < 0 ||
        fg_config_get_string(c, tls, "groups", 1, &t->groups) < 0 || load_alpn(c, tls, t) < 0 ||
        fg_config_get_bool(c, tls, "sessionTickets", &t->session_tickets) < 0 ||
        fg_config_get_int(c, tls, "sessionCache", 0, 1000000, &cache) < 0 ||
        fg_config_get_int(c, tls, "ticketsPerHandshake", 1, 8, &tickets) < 0 ||
        load_hsts(c, tls, t) < 0 || load_client_auth(c, tls, t) < 0 ||
        fg_config_get_duration(c, tls, "handshakeTimeout", &t->handshake_timeout_ms) < 0)
        return -1;
    if (t->groups == NULL)
        t->groups = fg_config_xstrdup(DEFAULT_GROUPS);
    if (t->handshake_timeout_ms == 0)
        return fg_config_fail(c, "handshakeTimeout", "must be greater than 0");
    t->session_cache = (unsigned)cache;
    t->tickets_per_handshake = (unsigned)tickets;
    return 0;
}

/* RFC 3986 3.2.2-3.2.3: host [ ":" port ], the host a reg-name (letters, digits, "-._~") or
 * a bracketed IPv6 literal, the port 1..65535; no user info, path, query or spaces. */
static int valid_authority(const char *a)
{
    const char *p = a, *port;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (close == NULL || close == p + 1 || (size_t)(close - p - 1) >= INET6_ADDRSTRLEN)
            return 0;
        char ip[INET6_ADDRSTRLEN];
        memcpy(ip, p + 1, (size_t)(close - p - 1));
        ip[close - p - 1] = '\0';
        struct in6_addr in6;
        if (inet_pton(AF_INET6, ip, &in6) != 1)
            return 0;
        p = close + 1;
    } else {
        while (isalnum((unsigned char)*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
            p++;
        if (p == a)
            return 0;
    }
    if (*p == '\0')
        return 1;
    if (*p != ':')
        return 0;
    port = p + 1;
    if (*port == '\0' || strlen(port) > 5)
        return 0;
    for (p = port; *p; p++)
        if (!isdigit((unsigned char)*p))
            return 0;
    long n = strtol(port, NULL, 10);
    return n >= 1 && n <= 65535;
}

/* "redirectHttps": true | {port, authority, status}. */
static int load_redirect(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const keys[] = {"port", "authority", "status", NULL};
    fg_redirect_https_t *r = &s->redirect;
    json_t *v = json_object_get(srv, "redirectHttps"), *o = NULL;
    long long port = 443, status = 308;

    if (v == NULL || json_is_false(v))
        return 0;
    if (s->tls)
        return fg_config_fail(c, "redirectHttps",
                              "only a plaintext server (without \"tls\") "
                              "redirects to https");
    if (!json_is_true(v) && !json_is_object(v))
        return fg_config_fail(c, "redirectHttps", "expected true or an object, got %s",
                              fg_config_type_name(v));
    if (json_is_object(v) && fg_config_get_object(c, srv, "redirectHttps", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "redirectHttps");
    int rc = -1;
    if (fg_config_get_int(c, o, "port", 1, 65535, &port) < 0 ||
        fg_config_get_string(c, o, "authority", 1, &r->authority) < 0 ||
        fg_config_get_int(c, o, "status", 301, 308, &status) < 0)
        goto out;
    if (status != 301 && status != 308) {
        fg_config_fail(c, "status", "must be 301 or 308");
        goto out;
    }
    if (r->authority && o && json_object_get(o, "port")) {
        fg_config_fail(c, "authority", "give either port or authority, not both");
        goto out;
    }
    if (r->authority && !valid_authority(r->authority)) {
        fg_config_fail(c, "authority", "\"%s\" is not a host[:port]", r->authority);
        goto out;
    }
    r->enabled = 1;
    r->port = (uint16_t)port;
    r->status = (int)status;
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

int fg_config_load_server_tls(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const keys[] = {"certificates", "default",
                                       "protocols",    "ciphers",
                                       "ciphersuites", "groups",
                                       "alpn",         "sessionTickets",
                                       "sessionCache", "ticketsPerHandshake",
                                       "hsts",         "handshakeTimeout",
                                       "clientAuth",   NULL};
    json_t *tls = NULL;

    if (fg_config_get_object(c, srv, "tls", keys, &tls) < 0)
        return -1;
    if (tls) {
        s->tls = fg_config_xcalloc(1, sizeof(*s->tls));
        size_t mark = fg_config_push_key(c, "tls");
        int rc = load_tls_object(c, tls, s->tls);
        fg_config_pop(c, mark);
        if (rc < 0)
            return -1;
    }
    return load_redirect(c, srv, s);
}

/* ---- a cluster's "httpClient" (YARP's HttpClient names) ---- */

static int load_ssl_protocols(fg_config_ctx_t *c, const json_t *o, fg_tls_client_config_t *h)
{
    static const char *const names[] = {"Tls12", "Tls13", NULL};
    char **list = NULL;
    size_t n = 0;

    h->min_version = FG_TLS_VERSION_1_2;
    h->max_version = FG_TLS_VERSION_1_3;
    int rc = fg_config_get_strings(c, o, "sslProtocols", &list, &n);
    if (rc <= 0)
        return rc;
    size_t mark = fg_config_push_key(c, "sslProtocols");
    int min = 0, max = 0;
    for (size_t i = 0; i < n && rc >= 0; i++) {
        int v = strcmp(list[i], names[0]) == 0   ? FG_TLS_VERSION_1_2
                : strcmp(list[i], names[1]) == 0 ? FG_TLS_VERSION_1_3
                                                 : 0;
        size_t m = fg_config_push_index(c, i);
        if (v == 0)
            rc =
                fg_config_fail(c, NULL, "\"%s\" is not supported (expected Tls12, Tls13)", list[i]);
        fg_config_pop(c, m);
        min = min == 0 || v < min ? v : min;
        max = v > max ? v : max;
    }
    if (rc >= 0 && n == 0)
        rc = fg_config_fail(c, NULL, "must list at least one protocol");
    fg_config_pop(c, mark);
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    if (rc < 0)
        return -1;
    h->min_version = min;
    h->max_version = max;
    return 1;
}

int fg_config_load_http_client(fg_config_ctx_t *c, const json_t *cl_json, fg_cluster_t *cl)
{
    static const char *const keys[] = {"dangerousAcceptAnyServerCertificate",
                                       "sslProtocols",
                                       "caFile",
                                       "serverName",
                                       "clientCertificate",
                                       "handshakeTimeout",
                                       "ciphers",
                                       "ciphersuites",
                                       "groups",
                                       NULL};
    fg_tls_client_config_t *h = &cl->http_client;
    json_t *o = NULL;
    int any = 0;
    char *ca = NULL;

    h->verify = 1;
    h->min_version = FG_TLS_VERSION_1_2;
    h->max_version = FG_TLS_VERSION_1_3;
    h->handshake_timeout_ms = 10 * 1000;
    if (fg_config_get_object(c, cl_json, "httpClient", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "httpClient");
    int rc = -1;
    if (fg_config_get_bool(c, o, "dangerousAcceptAnyServerCertificate", &any) < 0 ||
        load_ssl_protocols(c, o, h) < 0 || fg_config_get_string(c, o, "caFile", 1, &ca) < 0 ||
        fg_config_get_string(c, o, "serverName", 1, &h->server_name) < 0 ||
        fg_config_get_string(c, o, "clientCertificate", 1, &h->client_cert_id) < 0 ||
        fg_config_get_duration(c, o, "handshakeTimeout", &h->handshake_timeout_ms) < 0 ||
        fg_config_get_string(c, o, "ciphers", 1, &h->ciphers) < 0 ||
        fg_config_get_string(c, o, "ciphersuites", 1, &h->ciphersuites) < 0 ||
        fg_config_get_string(c, o, "groups", 1, &h->groups) < 0)
        goto out;
    h->verify = !any;
    if (ca)
        h->ca_file = fg_config_abs_path(c, ca);
    if (h->server_name && !fg_tls_name_valid(h->server_name)) {
        fg_config_fail(c, "serverName", "\"%s\" is not a host name", h->server_name);
        goto out;
    }
    if (h->client_cert_id && find_cert(c->cfg, h->client_cert_id, &h->client_cert_index) < 0) {
        fg_config_fail(c, "clientCertificate", "unknown certificate id \"%s\"", h->client_cert_id);
        goto out;
    }
    if (h->handshake_timeout_ms == 0) {
        fg_config_fail(c, "handshakeTimeout", "must be greater than 0");
        goto out;
    }
    rc = 0;
out:
    free(ca);
    fg_config_pop(c, mark);
    return rc;
}

/* ---- freeing ---- */

static void free_strings(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void fg_config_free_tls(fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        fg_tls_cert_config_t *cert = &cfg->certificates[i];
        free(cert->id);
        free(cert->chain);
        free(cert->key);
        free(cert->ocsp_file);
        free(cert->ocsp_responder);
        free_strings(cert->names, cert->nnames);
    }
    free(cfg->certificates);
    free(cfg->acme.directory);
    free(cfg->acme.email);
    free(cfg->acme.state_dir);
    free(cfg->acme.ca_file);
    free(cfg->acme.eab_key_id);
    free(cfg->acme.eab_mac_file);
    for (size_t i = 0; i < cfg->nservers; i++) {
        fg_server_t *s = &cfg->servers[i];
        fg_tls_server_config_t *t = s->tls;
        free(s->redirect.authority);
        if (t == NULL)
            continue;
        free_strings(t->certificates, t->ncertificates);
        free(t->cert_index);
        free(t->default_id);
        free(t->ciphers);
        free(t->ciphersuites);
        free(t->groups);
        free_strings(t->alpn, t->nalpn);
        free(t->hsts_header);
        free(t->client_ca_file);
        free(t->client_crl_file);
        free(t);
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fg_tls_client_config_t *h = &cfg->clusters[i].http_client;
        free(h->ca_file);
        free(h->server_name);
        free(h->client_cert_id);
        free(h->ciphers);
        free(h->ciphersuites);
        free(h->groups);
    }
}
