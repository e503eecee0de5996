/* The tunnel handshake messages and the proof (common/tunnel_proto.h). */
#include "common/tunnel_proto.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define PREFIX FG_TUNNEL_VERSION " "
#define PREFIX_LEN (sizeof(PREFIX) - 1)

static const char hexdig[] = "0123456789abcdef";

static void hex_encode(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[b[i] >> 4];
        out[2 * i + 1] = hexdig[b[i] & 15];
    }
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Exactly 2n hex digits in s (len bytes) into b. */
static int hex_decode(const char *s, size_t len, uint8_t *b, size_t n)
{
    if (len != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int fg_tunnel_names_placeholder(const char *host, size_t len)
{
    static const char name[] = FG_TUNNEL_DEFAULT_AUTHORITY;
    size_t n = len;
    while (n > 0 && isdigit((unsigned char)host[n - 1]))
        n--;
    if (n > 0 && n < len && host[n - 1] == ':')
        len = n - 1; /* host:port */
    else if (n > 0 && n == len && host[n - 1] == ':')
        len = n - 1; /* host: (an empty port, RFC 3986 3.2.3) */
    if (len > 1 && host[len - 1] == '.')
        len--;
    return len == sizeof(name) - 1 && strncasecmp(host, name, len) == 0;
}

int fg_tunnel_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > FG_TUNNEL_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return 0;
    }
    return 1;
}

/* Split [s, end) at single spaces into at most max words; returns the count, or -1 for an
 * empty word (two spaces, a leading or trailing space) or more than max words. */
static int split_words(const char *s, const char *end, const char **w, size_t *n, int max)
{
    int k = 0;
    for (;;) {
        const char *e = memchr(s, ' ', (size_t)(end - s));
        if (e == NULL)
            e = end;
        if (e == s || k == max)
            return -1;
        w[k] = s;
        n[k++] = (size_t)(e - s);
        if (e == end)
            return k;
        s = e + 1;
    }
}

static int word_is(const char *w, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(w, lit, n) == 0;
}

/* A decimal number of 1 to 5 digits within [lo, hi]; -1 otherwise. */
static long small_number(const char *a, size_t na, long lo, long hi)
{
    long v = 0;
    if (na == 0 || na > 5)
        return -1;
    for (size_t i = 0; i < na; i++) {
        if (a[i] < '0' || a[i] > '9')
            return -1;
        v = v * 10 + (a[i] - '0');
    }
    return v < lo || v > hi ? -1 : v;
}

static int parse_auth(const char *const *w, const size_t *n, int words, fg_tunnel_msg_t *m)
{
    if ((words != 3 && words != 5) || !fg_tunnel_id_valid(w[1], n[1]))
        return -1;
    m->kind = FG_TUNNEL_MSG_AUTH;
    memcpy(m->id, w[1], n[1]);
    m->id[n[1]] = '\0';
    if (hex_decode(w[2], n[2], m->proof, FG_TUNNEL_PROOF_LEN) != 0)
        return -1;
    if (words == 3)
        return 0; /* the short form: one connection, an instance of its own */
    if (word_is(w[4], n[4], "first"))
        m->role = FG_TUNNEL_ROLE_FIRST;
    else if (word_is(w[4], n[4], "extra"))
        m->role = FG_TUNNEL_ROLE_EXTRA;
    else
        return -1;
    return hex_decode(w[3], n[3], m->instance, FG_TUNNEL_INSTANCE_LEN);
}

int fg_tunnel_msg_parse(const char *msg, size_t len, fg_tunnel_msg_t *m)
{
    if (len > FG_TUNNEL_MSG_MAX || len <= PREFIX_LEN || memcmp(msg, PREFIX, PREFIX_LEN) != 0)
        return -1;
    memset(m, 0, sizeof(*m));
    const char *wv[5] = {0};
    size_t nv[5] = {0};
    int words = split_words(msg + PREFIX_LEN, msg + len, wv, nv, 5);
    if (words < 0)
        return -1;
    const char *w = wv[0];
    size_t n = nv[0];
    if (word_is(w, n, "CHALLENGE") && words == 2) {
        m->kind = FG_TUNNEL_MSG_CHALLENGE;
        return hex_decode(wv[1], nv[1], m->nonce, FG_TUNNEL_NONCE_LEN);
    }
    if (word_is(w, n, "AUTH"))
        return parse_auth(wv, nv, words, m);
    if (word_is(w, n, "OK") && (words == 2 || words == 3)) {
        long hb = small_number(wv[1], nv[1], 1, 86400);
        long workers = words == 3 ? small_number(wv[2], nv[2], 1, FG_TUNNEL_WORKERS_MAX) : 0;
        if (hb < 0 || workers < 0)
            return -1;
        m->kind = FG_TUNNEL_MSG_OK;
        m->heartbeat_s = (unsigned)hb;
        m->workers = (unsigned)workers;
        return 0;
    }
    if (word_is(w, n, "RECONNECT") && words == 1) {
        m->kind = FG_TUNNEL_MSG_RECONNECT;
        return 0;
    }
    if (word_is(w, n, "DUPLICATE") && words == 1) {
        m->kind = FG_TUNNEL_MSG_DUPLICATE;
        return 0;
    }
    return -1;
}

static const char *role_word(fg_tunnel_role_t r)
{
    return r == FG_TUNNEL_ROLE_FIRST ? "first" : r == FG_TUNNEL_ROLE_EXTRA ? "extra" : NULL;
}

int fg_tunnel_msg_format(const fg_tunnel_msg_t *m, char *buf, size_t len)
{
    char a[2 * FG_TUNNEL_NONCE_LEN + 1];
    int n = -1;
    switch (m->kind) {
    case FG_TUNNEL_MSG_CHALLENGE:
        hex_encode(m->nonce, FG_TUNNEL_NONCE_LEN, a);
        a[2 * FG_TUNNEL_NONCE_LEN] = '\0';
        n = snprintf(buf, len, PREFIX "CHALLENGE %s", a);
        break;
    case FG_TUNNEL_MSG_AUTH:
        if (!fg_tunnel_id_valid(m->id, strnlen(m->id, sizeof(m->id))))
            return -1;
        hex_encode(m->proof, FG_TUNNEL_PROOF_LEN, a);
        a[2 * FG_TUNNEL_PROOF_LEN] = '\0';
        if (m->role == FG_TUNNEL_ROLE_NONE) {
            n = snprintf(buf, len, PREFIX "AUTH %s %s", m->id, a);
            break;
        }
        if (role_word(m->role) == NULL)
            return -1;
        char inst[2 * FG_TUNNEL_INSTANCE_LEN + 1];
        hex_encode(m->instance, FG_TUNNEL_INSTANCE_LEN, inst);
        inst[2 * FG_TUNNEL_INSTANCE_LEN] = '\0';
        n = snprintf(buf, len, PREFIX "AUTH %s %s %s %s", m->id, a, inst, role_word(m->role));
        break;
    case FG_TUNNEL_MSG_OK:
        if (m->heartbeat_s < 1 || m->heartbeat_s > 86400 || m->workers > FG_TUNNEL_WORKERS_MAX)
            return -1;
        if (m->workers == 0)
            n = snprintf(buf, len, PREFIX "OK %u", m->heartbeat_s);
        else
            n = snprintf(buf, len, PREFIX "OK %u %u", m->heartbeat_s, m->workers);
        break;
    case FG_TUNNEL_MSG_RECONNECT:
        n = snprintf(buf, len, PREFIX "RECONNECT");
        break;
    case FG_TUNNEL_MSG_DUPLICATE:
        n = snprintf(buf, len, PREFIX "DUPLICATE");
        break;
    }
    return n < 0 || (size_t)n >= len ? -1 : n;
}

/* HMAC-SHA256(secret, "FGT/1" LF hex(nonce) LF id [LF hex(instance) LF role]). */
static int sign(const uint8_t *secret, size_t secret_len, const uint8_t nonce[FG_TUNNEL_NONCE_LEN],
                const char *id, const uint8_t *instance, const char *role,
                uint8_t proof[FG_TUNNEL_PROOF_LEN])
{
    size_t idlen = strnlen(id, FG_TUNNEL_ID_MAX + 1);
    if (!fg_tunnel_id_valid(id, idlen) || secret_len == 0 || secret_len > FG_TUNNEL_SECRET_MAX)
        return -1;
    char msg[sizeof(FG_TUNNEL_VERSION) + 2 * FG_TUNNEL_NONCE_LEN + 1 + FG_TUNNEL_ID_MAX + 1 +
             2 * FG_TUNNEL_INSTANCE_LEN + 1 + 8];
    size_t vl = sizeof(FG_TUNNEL_VERSION) - 1, n = 0;
    memcpy(msg, FG_TUNNEL_VERSION, vl);
    n = vl;
    msg[n++] = '\n';
    hex_encode(nonce, FG_TUNNEL_NONCE_LEN, msg + n);
    n += 2 * FG_TUNNEL_NONCE_LEN;
    msg[n++] = '\n';
    memcpy(msg + n, id, idlen);
    n += idlen;
    if (instance != NULL) {
        size_t rl = strlen(role);
        msg[n++] = '\n';
        hex_encode(instance, FG_TUNNEL_INSTANCE_LEN, msg + n);
        n += 2 * FG_TUNNEL_INSTANCE_LEN;
        msg[n++] = '\n';
        memcpy(msg + n, role, rl);
        n += rl;
    }
    unsigned outlen = 0;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, n, proof,
             &outlen) == NULL ||
        outlen != FG_TUNNEL_PROOF_LEN)
        return -1;
    return 0;
}

int fg_tunnel_proof(const uint8_t *secret, size_t secret_len,
                    const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const char *id,
                    uint8_t proof[FG_TUNNEL_PROOF_LEN])
{
    return sign(secret, secret_len, nonce, id, NULL, NULL, proof);
}

int fg_tunnel_proof_ok(const uint8_t *secret, size_t secret_len,
                       const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const char *id,
                       const uint8_t got[FG_TUNNEL_PROOF_LEN])
{
    fg_tunnel_msg_t m = {.kind = FG_TUNNEL_MSG_AUTH};
    size_t idlen = strnlen(id, FG_TUNNEL_ID_MAX + 1);
    if (idlen > FG_TUNNEL_ID_MAX)
        return 0;
    memcpy(m.id, id, idlen);
    memcpy(m.proof, got, FG_TUNNEL_PROOF_LEN);
    return fg_tunnel_auth_ok(secret, secret_len, nonce, &m);
}

int fg_tunnel_auth_sign(const uint8_t *secret, size_t secret_len,
                        const uint8_t nonce[FG_TUNNEL_NONCE_LEN], fg_tunnel_msg_t *m)
{
    if (m->role == FG_TUNNEL_ROLE_NONE)
        return sign(secret, secret_len, nonce, m->id, NULL, NULL, m->proof);
    const char *role = role_word(m->role);
    return role ? sign(secret, secret_len, nonce, m->id, m->instance, role, m->proof) : -1;
}

int fg_tunnel_auth_ok(const uint8_t *secret, size_t secret_len,
                      const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const fg_tunnel_msg_t *m)
{
    fg_tunnel_msg_t want = *m;
    if (fg_tunnel_auth_sign(secret, secret_len, nonce, &want) != 0)
        return 0;
    int ok = CRYPTO_memcmp(want.proof, m->proof, FG_TUNNEL_PROOF_LEN) == 0;
    OPENSSL_cleanse(&want, sizeof(want));
    return ok;
}
