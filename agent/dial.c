/* See agent/dial.h. */
/* ERR_load_<LIB>_strings are deprecated in OpenSSL 3 but are the only way to load one
 * library's reason strings after start-up (fg_dial_error_strings). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "agent/dial.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "common/log.h"
#include "common/tunnel_proto.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 1.3 */

int fg_dial_tls_init(void)
{
    /* libssl's reason strings (a handshake's failure) are loaded, libcrypto's are not: hashing
     * its few thousand reasons at start-up touches about 230 KiB of its code and heap for
     * messages that only a failed configuration prints (fg_dial_error_strings loads them
     * then). The system's OpenSSL configuration file is read as usual. */
    return OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS | OPENSSL_INIT_LOAD_SSL_STRINGS,
                            NULL) == 1
               ? 0
               : -1;
}

void fg_dial_error_strings(void)
{
    /* The libraries whose errors loading a CA file, a certificate or a key reports. Each call
     * loads its table once. */
    ERR_load_ERR_strings();
    ERR_load_BIO_strings();
    ERR_load_BUF_strings();
    ERR_load_PEM_strings();
    ERR_load_X509_strings();
    ERR_load_X509V3_strings();
    ERR_load_ASN1_strings();
    ERR_load_EVP_strings();
    ERR_load_EC_strings();
    ERR_load_RSA_strings();
    ERR_load_CRYPTO_strings();
    ERR_load_OSSL_STORE_strings();
}

static void ssl_reason(char *err, size_t errlen, const char *what)
{
    fg_dial_error_strings();
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s", what, buf);
}

SSL_CTX *fg_dial_tls_ctx(const fg_agent_config_t *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        ssl_reason(err, errlen, "TLS");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (cfg->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = cfg->ca_file ? SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL)
                              : SSL_CTX_set_default_verify_paths(ctx);
        if (!ok) {
            char what[600];
            snprintf(what, sizeof(what), "%s: tls.ca: %s", cfg->file,
                     cfg->ca_file ? cfg->ca_file : "(system store)");
            ssl_reason(err, errlen, what);
            SSL_CTX_free(ctx);
            return NULL;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    /* A client certificate, for a gateway server with tls.clientAuth (RFC 8446 4.4.2). */
    if (cfg->cert_file != NULL &&
        (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(ctx) != 1)) {
        char what[1200];
        snprintf(what, sizeof(what), "%s: tls.certificate %s, tls.key %s", cfg->file,
                 cfg->cert_file, cfg->key_file);
        ssl_reason(err, errlen, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL *fg_dial_tls_new(SSL_CTX *ctx, const fg_agent_config_t *cfg)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    const char *name = cfg->server_name ? cfg->server_name : cfg->host;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    int ok = SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1) == 0;
    /* RFC 6066 3: no IP address in SNI; the certificate is checked against the address then
     * (an iPAddress subjectAltName). */
    if (ok && !is_ip)
        ok = SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
    else if (ok)
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

int fg_dial_key(char key[FG_DIAL_KEY_LEN + 1])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw));
    return 0;
}

int fg_dial_request(const fg_agent_config_t *cfg, const char *key, char *buf, size_t len)
{
    /* RFC 6455 4.1; no credential and no agent id here (the handshake carries the id, and
     * the proof of the secret only): intermediaries log request heads. */
    int n = snprintf(buf, len,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Protocol: " FG_TUNNEL_SUBPROTOCOL "\r\n"
                     "User-Agent: fastgateway-agent/" FG_VERSION "\r\n"
                     "\r\n",
                     cfg->path, cfg->host_field, key);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

/* Whether the comma-separated list v[0..n) holds token tok (case-insensitive, RFC 9110 5.6.1). */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

/* The accept value the gateway must send for key: base64(SHA-1(key GUID)) (RFC 6455 4.2.2). */
static void accept_for(const char *key, char out[29])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    char src[FG_DIAL_KEY_LEN + sizeof(WS_GUID)];
    int n = snprintf(src, sizeof(src), "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)src, (size_t)n, md);
    EVP_EncodeBlock((unsigned char *)out, md, sizeof(md));
}

enum { F_UPGRADE = 1, F_CONNECTION = 2, F_ACCEPT = 4, F_PROTOCOL = 8 };

/* One field line of the 101: the bit it proves, 0 for others, -1 with err for a bad value. */
static int check_field(const char *l, size_t n, const char *want_accept, char *err, size_t errlen)
{
    const char *colon = memchr(l, ':', n);
    if (colon == NULL || colon == l) {
        snprintf(err, errlen, "malformed field line in the gateway's 101");
        return -1;
    }
    size_t nl = (size_t)(colon - l);
    const char *v = colon + 1, *end = l + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vl = (size_t)(end - v);
#define NAME_IS(s) (nl == sizeof(s) - 1 && strncasecmp(l, s, nl) == 0)
    if (NAME_IS("Upgrade"))
        return has_token(v, vl, "websocket") ? F_UPGRADE : 0;
    if (NAME_IS("Connection"))
        return has_token(v, vl, "upgrade") ? F_CONNECTION : 0;
    if (NAME_IS("Sec-WebSocket-Accept")) {
        if (vl == strlen(want_accept) && memcmp(v, want_accept, vl) == 0)
            return F_ACCEPT;
        snprintf(err, errlen, "the gateway's Sec-WebSocket-Accept does not match our key");
        return -1;
    }
    if (NAME_IS("Sec-WebSocket-Protocol")) {
        if (vl == sizeof(FG_TUNNEL_SUBPROTOCOL) - 1 && memcmp(v, FG_TUNNEL_SUBPROTOCOL, vl) == 0)
            return F_PROTOCOL;
        snprintf(err, errlen, "the gateway chose another subprotocol than " FG_TUNNEL_SUBPROTOCOL);
        return -1;
    }
#undef NAME_IS
    return 0;
}

int fg_dial_response(const char *buf, size_t len, const char *key, char *err, size_t errlen)
{
    const char *end = NULL;
    for (size_t i = 0; i + 3 < len && end == NULL; i++)
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
            end = buf + i + 2; /* the empty line starts here */
    if (end == NULL) {
        if (len < FG_DIAL_HEAD_MAX)
            return 0;
        snprintf(err, errlen, "the gateway's response head is longer than %d bytes",
                 FG_DIAL_HEAD_MAX);
        return -1;
    }
    const char *eol = memchr(buf, '\r', (size_t)(end - buf));
    size_t sl = (size_t)(eol - buf);
    if (sl < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0 || strncmp(buf + 9, "101", 3) != 0 ||
        (sl > 12 && buf[12] != ' ')) {
        char line[128];
        line[fg_log_escape_text(line, sizeof(line) - 1, buf, sl < 100 ? sl : 100)] = '\0';
        snprintf(err, errlen, "the gateway did not switch protocols: \"%s\"", line);
        return -1;
    }
    char want[29];
    accept_for(key, want);
    int seen = 0;
    for (const char *l = eol + 2; l < end;) {
        const char *le = memchr(l, '\r', (size_t)(end - l));
        if (le == NULL || le[1] != '\n')
            break;
        int f = check_field(l, (size_t)(le - l), want, err, errlen);
        if (f < 0)
            return -1;
        seen |= f;
        l = le + 2;
    }
    static const struct {
        int bit;
        const char *what;
    } need[] = {{F_UPGRADE, "Upgrade: websocket"},
                {F_CONNECTION, "Connection: upgrade"},
                {F_ACCEPT, "Sec-WebSocket-Accept"},
                {F_PROTOCOL, "Sec-WebSocket-Protocol: " FG_TUNNEL_SUBPROTOCOL}};
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (!(seen & need[i].bit)) {
            snprintf(err, errlen, "the gateway's 101 lacks %s", need[i].what);
            return -1;
        }
    return (int)(end + 2 - buf);
}
