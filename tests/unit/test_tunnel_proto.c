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

#include "common/secret.h"
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

/* The AUTH form with instance and role: round trip, the proof (expected values by Python's
 * hmac module) covering instance and role, and the short forms still accepted. */
static void test_instances(void **state)
{
    (void)state;
    static const char p3[] = "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec";
    uint8_t nonce[FG_TUNNEL_NONCE_LEN];
    for (int i = 0; i < FG_TUNNEL_NONCE_LEN; i++)
        nonce[i] = (uint8_t)i;
    fg_tunnel_msg_t m = {.kind = FG_TUNNEL_MSG_AUTH, .role = FG_TUNNEL_ROLE_FIRST}, got;
    strcpy(m.id, "office");
    for (int i = 0; i < FG_TUNNEL_INSTANCE_LEN; i++)
        m.instance[i] = (uint8_t)(16 + i);
    assert_int_equal(fg_tunnel_auth_sign(secret, SECRET_LEN, nonce, &m), 0);
    char buf[FG_TUNNEL_MSG_MAX];
    int n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_string_equal(buf, "FGT/1 AUTH office "
                             "a5b1ec5a67c97b854327c617f588b9ee16b60fb9a63f1fe0c6a6c19b8984923a "
                             "101112131415161718191a1b1c1d1e1f first");
    assert_int_equal(fg_tunnel_msg_parse(buf, (size_t)n, &got), 0);
    assert_int_equal(got.role, FG_TUNNEL_ROLE_FIRST);
    assert_memory_equal(got.instance, m.instance, FG_TUNNEL_INSTANCE_LEN);
    assert_true(fg_tunnel_auth_ok(secret, SECRET_LEN, nonce, &got));
    /* the proof covers the role and the instance */
    got.role = FG_TUNNEL_ROLE_EXTRA;
    assert_false(fg_tunnel_auth_ok(secret, SECRET_LEN, nonce, &got));
    got.role = FG_TUNNEL_ROLE_FIRST;
    got.instance[0] ^= 1;
    assert_false(fg_tunnel_auth_ok(secret, SECRET_LEN, nonce, &got));
    got.instance[0] ^= 1;
    got.role = FG_TUNNEL_ROLE_NONE; /* the short form's proof is another one */
    assert_false(fg_tunnel_auth_ok(secret, SECRET_LEN, nonce, &got));

    m.role = FG_TUNNEL_ROLE_EXTRA;
    assert_int_equal(fg_tunnel_auth_sign(secret, SECRET_LEN, nonce, &m), 0);
    n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_non_null(strstr(buf, "6690d19d5de68bb5974f822bcf3d533501b4f33c1c18d6fd642adf6261c93138 "
                                "101112131415161718191a1b1c1d1e1f extra"));
    assert_int_equal(parse(buf, &got), 0);
    assert_int_equal(got.role, FG_TUNNEL_ROLE_EXTRA);
    assert_true(fg_tunnel_auth_ok(secret, SECRET_LEN, nonce, &got));

    /* the short AUTH: no instance, the proof over the id alone */
    char old[160];
    snprintf(old, sizeof(old), "FGT/1 AUTH office %s", p3);
    assert_int_equal(parse(old, &got), 0);
    assert_int_equal(got.role, FG_TUNNEL_ROLE_NONE);
    assert_true(fg_tunnel_auth_ok(secret, SECRET_LEN, nonce, &got));

    /* OK with and without the worker count, DUPLICATE */
    assert_int_equal(parse("FGT/1 OK 30 4", &got), 0);
    assert_int_equal(got.heartbeat_s, 30);
    assert_int_equal(got.workers, 4);
    assert_int_equal(parse("FGT/1 OK 30", &got), 0);
    assert_int_equal(got.workers, 0);
    m = (fg_tunnel_msg_t){.kind = FG_TUNNEL_MSG_OK, .heartbeat_s = 5, .workers = 16};
    fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_string_equal(buf, "FGT/1 OK 5 16");
    m = (fg_tunnel_msg_t){.kind = FG_TUNNEL_MSG_DUPLICATE};
    fg_tunnel_msg_format(&m, buf, sizeof(buf));
    assert_string_equal(buf, "FGT/1 DUPLICATE");
    assert_int_equal(parse(buf, &got), 0);
    assert_int_equal(got.kind, FG_TUNNEL_MSG_DUPLICATE);

    static const char *bad[] = {
        "FGT/1 OK 30 0",
        "FGT/1 OK 30 1025",
        "FGT/1 OK 30 4 4",
        "FGT/1 OK 30 x",
        "FGT/1 DUPLICATE now",
        "FGT/1 AUTH office "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec "
        "101112131415161718191a1b1c1d1e1f",
        "FGT/1 AUTH office "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec "
        "101112131415161718191a1b1c1d1e1f second",
        "FGT/1 AUTH office "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec "
        "101112131415161718191a1b1c1d1e first",
        "FGT/1 AUTH office "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec "
        "101112131415161718191a1b1c1d1e1z first",
        "FGT/1 AUTH office "
        "74fdf28bdd5745f44f25e54c52cbcce853ab7cb1191778256fcece61d44857ec "
        "101112131415161718191a1b1c1d1e1f first x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &got) == 0)
            fail_msg("accepted: \"%s\"", bad[i]);
    m = (fg_tunnel_msg_t){.kind = FG_TUNNEL_MSG_OK, .heartbeat_s = 5, .workers = 1025};
    assert_int_equal(fg_tunnel_msg_format(&m, buf, sizeof(buf)), -1);
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
    int n = fg_secret_load(p, s, sizeof(s), FG_TUNNEL_SECRET_MIN, err, sizeof(err));
    assert_int_equal(n, (int)SECRET_LEN);
    assert_memory_equal(s, secret, SECRET_LEN);

    p = write_secret("open", "0123456789abcdef-secret\n", 0644);
    assert_int_equal(fg_secret_load(p, s, sizeof(s), FG_TUNNEL_SECRET_MIN, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "chmod 600"));
    assert_null(strstr(err, "0123456789abcdef")); /* never the secret */

    p = write_secret("short", "short-secret\n", 0600);
    assert_int_equal(fg_secret_load(p, s, sizeof(s), FG_TUNNEL_SECRET_MIN, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "shorter than 16"));

    char *big = malloc(FG_TUNNEL_SECRET_MAX + 2);
    memset(big, 'k', FG_TUNNEL_SECRET_MAX + 1);
    big[FG_TUNNEL_SECRET_MAX + 1] = '\0';
    p = write_secret("long", big, 0600);
    assert_int_equal(fg_secret_load(p, s, sizeof(s), FG_TUNNEL_SECRET_MIN, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
    big[FG_TUNNEL_SECRET_MAX] = '\0';
    p = write_secret("max", big, 0600);
    assert_int_equal(fg_secret_load(p, s, sizeof(s), FG_TUNNEL_SECRET_MIN, err, sizeof(err)),
                     FG_TUNNEL_SECRET_MAX);
    free(big);

    char missing[128];
    snprintf(missing, sizeof(missing), "%s/missing", tmpdir);
    assert_int_equal(fg_secret_load(missing, s, sizeof(s), FG_TUNNEL_SECRET_MIN, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(fg_secret_load(tmpdir, s, sizeof(s), FG_TUNNEL_SECRET_MIN, err, sizeof(err)),
                     -1);

    const char *names[] = {"ok", "open", "short", "long", "max"};
    for (size_t i = 0; i < 5; i++) {
        char f[128];
        snprintf(f, sizeof(f), "%s/%s", tmpdir, names[i]);
        unlink(f);
    }
    rmdir(tmpdir);
}

/* The spellings of the placeholder the agent's router takes for it, and names that only
 * resemble it. */
static void test_names_placeholder(void **state)
{
    (void)state;
    static const char *const yes[] = {"fg-tunnel.invalid",       "FG-Tunnel.INVALID",
                                      "fg-tunnel.invalid.",      "fg-tunnel.invalid:80",
                                      "fg-tunnel.invalid.:8443", "fg-tunnel.invalid:"};
    static const char *const no[] = {"fg-tunnel.invalid.example",
                                     "x.fg-tunnel.invalid",
                                     "fg-tunnel.invalid..",
                                     "fg-tunnel.invalid:8a",
                                     "[fg-tunnel.invalid]",
                                     "fg-tunnel",
                                     "",
                                     ":80"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(fg_tunnel_names_placeholder(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(fg_tunnel_names_placeholder(no[i], strlen(no[i])));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),  cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_proof),       cmocka_unit_test(test_instances),
        cmocka_unit_test(test_secret_load), cmocka_unit_test(test_names_placeholder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
