/* Unit tests for common/tunnel_proto.c: control messages round-trip and malformed ones are
 * refused, the proof matches HMAC-SHA256 as an independent implementation computes it (Python's
 * hmac module gave the expected value) and binds secret, nonce and id, and secret files are
 * read only when private and of a sane length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/tunnel_proto.h"

static int parse(const char *s, fg_tunnel_msg_t *m)
{
    return fg_tunnel_msg_parse(s, strlen(s), m);
}

static void test_round_trip(void **state)
{
    (void)state;
    fg_tunnel_msg_t m = {.kind = FG_TUNNEL_MSG_CHALLENGE}, got;
    char buf[FG_TUNNEL_MSG_MAX];
    for (int i = 0; i < FG_TUNNEL_NONCE_LEN; i++)
        m.nonce[i] = (uint8_t)(i * 7 + 1);
    int n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(fg_tunnel_msg_parse(buf, (size_t)n, &got), 0);
    assert_int_equal(got.kind, FG_TUNNEL_MSG_CHALLENGE);
    assert_memory_equal(got.nonce, m.nonce, FG_TUNNEL_NONCE_LEN);

    m = (fg_tunnel_msg_t){.kind = FG_TUNNEL_MSG_AUTH};
    strcpy(m.id, "office-1.eu_west");
    memset(m.proof, 0xab, sizeof(m.proof));
    n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(fg_tunnel_msg_parse(buf, (size_t)n, &got), 0);
    assert_int_equal(got.kind, FG_TUNNEL_MSG_AUTH);
    assert_string_equal(got.id, "office-1.eu_west");
    assert_memory_equal(got.proof, m.proof, FG_TUNNEL_PROOF_LEN);

    m = (fg_tunnel_msg_t){.kind = FG_TUNNEL_MSG_OK, .heartbeat_s = 30};
    n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_string_equal(buf, "FGT/1 OK 30");
    assert_int_equal(fg_tunnel_msg_parse(buf, (size_t)n, &got), 0);
    assert_int_equal(got.heartbeat_s, 30);

    m = (fg_tunnel_msg_t){.kind = FG_TUNNEL_MSG_RECONNECT};
    n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_string_equal(buf, "FGT/1 RECONNECT");
    assert_int_equal(parse(buf, &got), 0);
    assert_int_equal(got.kind, FG_TUNNEL_MSG_RECONNECT);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "FGT/1",
        "FGT/1 ",
        "FGT/2 RECONNECT",
        "fgt/1 RECONNECT",
        "FGT/1 RECONNECT ",
        "FGT/1  RECONNECT",
        "FGT/1 RECONNECT now",
        "FGT/1 reconnect",
        "FGT/1 OK",
        "FGT/1 OK 0",
        "FGT/1 OK 86401",
        "FGT/1 OK -1",
        "FGT/1 OK 3x",
        "FGT/1 OK 000030000",
        "FGT/1 CHALLENGE 00",
        "FGT/1 CHALLENGE "
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g",
        "FGT/1 AUTH office",
        "FGT/1 AUTH of/fice "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec",
        "FGT/1 AUTH office "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857e",
        "FGT/1 AUTH office "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec extra",
        "FGT/1 AUTH  "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec",
        "FGT/1 PING",
    };
    fg_tunnel_msg_t m;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &m) == 0)
            fail_msg("accepted: \"%s\"", bad[i]);
    }
    /* a message with a NUL inside is not the message before it */
    assert_int_not_equal(fg_tunnel_msg_parse("FGT/1 RECONNECT\0x", 17, &m), 0);
    /* longer than any message */
    char big[FG_TUNNEL_MSG_MAX + 2];
    memset(big, 'a', sizeof(big));
    memcpy(big, "FGT/1 AUTH ", 11);
    assert_int_not_equal(fg_tunnel_msg_parse(big, sizeof(big), &m), 0);
    /* ids: 64 characters is the most */
    char id[FG_TUNNEL_ID_MAX + 2];
    memset(id, 'x', sizeof(id));
    assert_true(fg_tunnel_id_valid(id, FG_TUNNEL_ID_MAX));
    assert_false(fg_tunnel_id_valid(id, FG_TUNNEL_ID_MAX + 1));
    assert_false(fg_tunnel_id_valid(id, 0));
    assert_false(fg_tunnel_id_valid("a b", 3));
    /* format refuses what parse would */
    fg_tunnel_msg_t f = {.kind = FG_TUNNEL_MSG_AUTH};
    strcpy(f.id, "no spaces");
    char buf[FG_TUNNEL_MSG_MAX];
    assert_int_equal(fg_tunnel_msg_format(&f, buf, sizeof(buf)), -1);
    f = (fg_tunnel_msg_t){.kind = FG_TUNNEL_MSG_OK, .heartbeat_s = 0};
    assert_int_equal(fg_tunnel_msg_format(&f, buf, sizeof(buf)), -1);
}

static const uint8_t secret[] = "0123456789abcdef-secret";
#define SECRET_LEN (sizeof(secret) - 1)

static void test_proof(void **state)
{
    (void)state;
    uint8_t nonce[FG_TUNNEL_NONCE_LEN], proof[FG_TUNNEL_PROOF_LEN];
    for (int i = 0; i < FG_TUNNEL_NONCE_LEN; i++)
        nonce[i] = (uint8_t)i;
    assert_int_equal(fg_tunnel_proof(secret, SECRET_LEN, nonce, "office", proof), 0);
    /* HMAC-SHA256(secret, "FGT/1\n" hex(nonce) "\noffice"), by Python's hmac module */
    char hex[2 * FG_TUNNEL_PROOF_LEN + 1];
    for (int i = 0; i < FG_TUNNEL_PROOF_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", proof[i]);
    assert_string_equal(hex, "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec");
    assert_true(fg_tunnel_proof_ok(secret, SECRET_LEN, nonce, "office", proof));
    /* another secret, nonce or id: refused */
    assert_false(fg_tunnel_proof_ok(secret, SECRET_LEN - 1, nonce, "office", proof));
    assert_false(fg_tunnel_proof_ok(secret, SECRET_LEN, nonce, "office2", proof));
    nonce[31] ^= 1;
    assert_false(fg_tunnel_proof_ok(secret, SECRET_LEN, nonce, "office", proof));
    nonce[31] ^= 1;
    proof[0] ^= 0x80;
    assert_false(fg_tunnel_proof_ok(secret, SECRET_LEN, nonce, "office", proof));
    /* an invalid id has no proof */
    assert_int_equal(fg_tunnel_proof(secret, SECRET_LEN, nonce, "a b", proof), -1);
    assert_false(fg_tunnel_proof_ok(secret, SECRET_LEN, nonce, "a b", proof));
}

static char tmpdir[64];

static const char *write_secret(const char *name, const char *content, mode_t mode)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

static void test_secret_load(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/fg-tunnel-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    uint8_t s[FG_TUNNEL_SECRET_MAX];
    char err[256];
    const char *p = write_secret("ok", "  0123456789abcdef-secret\n", 0600);
    int n = fg_tunnel_secret_load(p, s, sizeof(s), err, sizeof(err));
    assert_int_equal(n, (int)SECRET_LEN);
    assert_memory_equal(s, secret, SECRET_LEN);

    p = write_secret("open", "0123456789abcdef-secret\n", 0644);
    assert_int_equal(fg_tunnel_secret_load(p, s, sizeof(s), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "chmod 600"));
    assert_null(strstr(err, "0123456789abcdef")); /* never the secret */

    p = write_secret("short", "short-secret\n", 0600);
    assert_int_equal(fg_tunnel_secret_load(p, s, sizeof(s), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "shorter than 16"));

    char *big = malloc(FG_TUNNEL_SECRET_MAX + 2);
    memset(big, 'k', FG_TUNNEL_SECRET_MAX + 1);
    big[FG_TUNNEL_SECRET_MAX + 1] = '\0';
    p = write_secret("long", big, 0600);
    assert_int_equal(fg_tunnel_secret_load(p, s, sizeof(s), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
    big[FG_TUNNEL_SECRET_MAX] = '\0';
    p = write_secret("max", big, 0600);
    assert_int_equal(fg_tunnel_secret_load(p, s, sizeof(s), err, sizeof(err)),
                     FG_TUNNEL_SECRET_MAX);
    free(big);

    char missing[128];
    snprintf(missing, sizeof(missing), "%s/missing", tmpdir);
    assert_int_equal(fg_tunnel_secret_load(missing, s, sizeof(s), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(fg_tunnel_secret_load(tmpdir, s, sizeof(s), err, sizeof(err)), -1);

    const char *names[] = {"ok", "open", "short", "long", "max"};
    for (size_t i = 0; i < 5; i++) {
        char f[128];
        snprintf(f, sizeof(f), "%s/%s", tmpdir, names[i]);
        unlink(f);
    }
    rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_proof),
        cmocka_unit_test(test_secret_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
