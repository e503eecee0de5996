/* The tunnel handshake messages and the proof (common/tunnel_proto.h). */
#include "common/tunnel_proto.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
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

int fg_tunnel_msg_parse(const char *msg, size_t len, fg_tunnel_msg_t *m)
{
    if (len > FG_TUNNEL_MSG_MAX || len <= PREFIX_LEN || memcmp(msg, PREFIX, PREFIX_LEN) != 0)
        return -1;
    memset(m, 0, sizeof(*m));
    const char *wv[3] = {0};
    size_t nv[3] = {0};
    int words = split_words(msg + PREFIX_LEN, msg + len, wv, nv, 3);
    if (words < 0)
        return -1;
    const char *w = wv[0], *a = wv[1], *b = wv[2];
    size_t n = nv[0], na = nv[1], nb = nv[2];
    if (word_is(w, n, "CHALLENGE") && words == 2) {
        m->kind = FG_TUNNEL_MSG_CHALLENGE;
        return hex_decode(a, na, m->nonce, FG_TUNNEL_NONCE_LEN);
    }
    if (word_is(w, n, "AUTH") && words == 3) {
        if (!fg_tunnel_id_valid(a, na))
            return -1;
        m->kind = FG_TUNNEL_MSG_AUTH;
        memcpy(m->id, a, na);
        m->id[na] = '\0';
        return hex_decode(b, nb, m->proof, FG_TUNNEL_PROOF_LEN);
    }
    if (word_is(w, n, "OK") && words == 2) {
        unsigned v = 0;
        if (na == 0 || na > 5)
            return -1;
        for (size_t i = 0; i < na; i++) {
            if (a[i] < '0' || a[i] > '9')
                return -1;
            v = v * 10 + (unsigned)(a[i] - '0');
        }
        if (v < 1 || v > 86400)
            return -1;
        m->kind = FG_TUNNEL_MSG_OK;
        m->heartbeat_s = v;
        return 0;
    }
    if (word_is(w, n, "RECONNECT") && words == 1) {
        m->kind = FG_TUNNEL_MSG_RECONNECT;
        return 0;
    }
    return -1;
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
        n = snprintf(buf, len, PREFIX "AUTH %s %s", m->id, a);
        break;
    case FG_TUNNEL_MSG_OK:
        if (m->heartbeat_s < 1 || m->heartbeat_s > 86400)
            return -1;
        n = snprintf(buf, len, PREFIX "OK %u", m->heartbeat_s);
        break;
    case FG_TUNNEL_MSG_RECONNECT:
        n = snprintf(buf, len, PREFIX "RECONNECT");
        break;
    }
    return n < 0 || (size_t)n >= len ? -1 : n;
}

int fg_tunnel_proof(const uint8_t *secret, size_t secret_len,
                    const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const char *id,
                    uint8_t proof[FG_TUNNEL_PROOF_LEN])
{
    size_t idlen = strnlen(id, FG_TUNNEL_ID_MAX + 1);
    if (!fg_tunnel_id_valid(id, idlen) || secret_len == 0 || secret_len > FG_TUNNEL_SECRET_MAX)
        return -1;
    /* "FGT/1" LF hex(nonce) LF id */
    char msg[sizeof(FG_TUNNEL_VERSION) + 2 * FG_TUNNEL_NONCE_LEN + 1 + FG_TUNNEL_ID_MAX];
    size_t vl = sizeof(FG_TUNNEL_VERSION) - 1, n = 0;
    memcpy(msg, FG_TUNNEL_VERSION, vl);
    n = vl;
    msg[n++] = '\n';
    hex_encode(nonce, FG_TUNNEL_NONCE_LEN, msg + n);
    n += 2 * FG_TUNNEL_NONCE_LEN;
    msg[n++] = '\n';
    memcpy(msg + n, id, idlen);
    n += idlen;
    unsigned outlen = 0;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, n, proof,
             &outlen) == NULL ||
        outlen != FG_TUNNEL_PROOF_LEN)
        return -1;
    return 0;
}

int fg_tunnel_proof_ok(const uint8_t *secret, size_t secret_len,
                       const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const char *id,
                       const uint8_t got[FG_TUNNEL_PROOF_LEN])
{
    uint8_t want[FG_TUNNEL_PROOF_LEN];
    if (fg_tunnel_proof(secret, secret_len, nonce, id, want) != 0)
        return 0;
    int ok = CRYPTO_memcmp(want, got, FG_TUNNEL_PROOF_LEN) == 0;
    OPENSSL_cleanse(want, sizeof(want));
    return ok;
}

int fg_tunnel_secret_load(const char *path, uint8_t *secret, size_t cap, char *err, size_t errlen)
{
    uint8_t buf[FG_TUNNEL_SECRET_MAX + 64];
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "%s may be read or written by others than its owner (mode %03o): "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        close(fd);
        return -1;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            close(fd);
            OPENSSL_cleanse(buf, sizeof(buf));
            return -1;
        }
        if (r == 0 || (n += (size_t)r) == sizeof(buf))
            break;
    }
    close(fd);
    size_t s = 0, e = n;
    while (s < e && isspace(buf[s]))
        s++;
    while (e > s && isspace(buf[e - 1]))
        e--;
    int rc = -1;
    if (n == sizeof(buf) || e - s > FG_TUNNEL_SECRET_MAX || e - s > cap)
        snprintf(err, errlen, "%s: the secret is longer than %d bytes", path, FG_TUNNEL_SECRET_MAX);
    else if (e - s < FG_TUNNEL_SECRET_MIN)
        snprintf(err, errlen, "%s: the secret is shorter than %d bytes", path,
                 FG_TUNNEL_SECRET_MIN);
    else {
        memcpy(secret, buf + s, e - s);
        rc = (int)(e - s);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}
