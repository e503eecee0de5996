/* Unit tests for the tunnel endpoint's proof check (worker/tunnel/endpoint.c): an unknown
 * agent id costs the same work as a known id with a wrong proof. The test interposes HMAC (the
 * endpoint links OpenSSL's through libfg.a, so this executable's definition wins) to count the
 * HMACs computed and the key lengths they ran with, then hands each call to OpenSSL's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <string.h>

#include <openssl/hmac.h>

#include "common/config.h"
#include "common/tunnel_proto.h"
#include "worker/tunnel/endpoint.h"

static unsigned hmacs;
static int last_key_len;

typedef unsigned char *(*hmac_fn)(const EVP_MD *, const void *, int, const unsigned char *, size_t,
                                  unsigned char *, unsigned int *);

unsigned char *HMAC(const EVP_MD *md, const void *key, int key_len, const unsigned char *d,
                    size_t n, unsigned char *out, unsigned int *out_len)
{
    hmac_fn real = (hmac_fn)dlsym(RTLD_NEXT, "HMAC");
    hmacs++;
    last_key_len = key_len;
    return real(md, key, key_len, d, n, out, out_len);
}

static const char SECRET[] = "office-secret-0123456789abcdef-0123456789ab"; /* 43 bytes */

/* A configuration with the one agent "office". */
static void make_cfg(fg_config_t *cfg, fg_tunnel_agent_t *ag)
{
    memset(cfg, 0, sizeof(*cfg));
    memset(ag, 0, sizeof(*ag));
    ag->id = "office";
    memcpy(ag->secret, SECRET, sizeof(SECRET) - 1);
    ag->secret_len = sizeof(SECRET) - 1;
    cfg->tunnels.agents = ag;
    cfg->tunnels.nagents = 1;
}

static void auth_msg(fg_tunnel_msg_t *m, const char *id, const uint8_t *nonce, int right)
{
    memset(m, 0, sizeof(*m));
    m->kind = FG_TUNNEL_MSG_AUTH;
    strcpy(m->id, id);
    assert_int_equal(
        fg_tunnel_proof((const uint8_t *)SECRET, sizeof(SECRET) - 1, nonce, id, m->proof), 0);
    if (!right)
        m->proof[0] ^= 1;
}

static void test_unknown_id_costs_one_hmac(void **state)
{
    (void)state;
    fg_config_t cfg;
    fg_tunnel_agent_t ag;
    fg_tunnel_msg_t m;
    uint8_t nonce[FG_TUNNEL_NONCE_LEN] = {1, 2, 3};
    int a;
    make_cfg(&cfg, &ag);

    auth_msg(&m, "office", nonce, 0);
    hmacs = 0;
    assert_int_equal(fg_tunnel_endpoint_verify(&cfg, nonce, &m, &a), FG_TUNNEL_WRONG_PROOF);
    assert_int_equal(a, 0);
    assert_int_equal(hmacs, 1);
    int known_key_len = last_key_len;

    /* A proof that would be right for "nobody" had it the secret: still only an unknown id. */
    auth_msg(&m, "nobody", nonce, 1);
    hmacs = 0;
    assert_int_equal(fg_tunnel_endpoint_verify(&cfg, nonce, &m, &a), FG_TUNNEL_UNKNOWN_AGENT);
    assert_int_equal(a, -1);
    assert_int_equal(hmacs, 1);
    /* both keys fit one HMAC block (64 bytes): the same number of compressions */
    assert_true(known_key_len <= 64 && last_key_len <= 64);

    auth_msg(&m, "office", nonce, 1);
    hmacs = 0;
    assert_int_equal(fg_tunnel_endpoint_verify(&cfg, nonce, &m, &a), 0);
    assert_int_equal(a, 0);
    assert_int_equal(hmacs, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_id_costs_one_hmac),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
