/* test_auth.c: HS256 JWT verification edge cases (auth.c), no network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

#define NOW 1800000000LL
static const unsigned char secret[] = "s3cret-for-tests-0123456789abcdef";
#define SECRET_LEN (sizeof(secret) - 1)

/* base64url without padding, for minting test tokens */
static void b64url(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n), i;

    for (i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
}

/* "Bearer " + header.payload.signature, signed with key (or unsigned). */
static void mint(char *out, const char *header, const char *payload,
                 const unsigned char *key, size_t key_len)
{
    char h[512], p[1024], signing[1600], sig[128] = "";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len;

    b64url((const unsigned char *)header, strlen(header), h);
    b64url((const unsigned char *)payload, strlen(payload), p);
    snprintf(signing, sizeof(signing), "%s.%s", h, p);
    if (key) {
        HMAC(EVP_sha256(), key, (int)key_len, (unsigned char *)signing,
             strlen(signing), mac, &mac_len);
        b64url(mac, mac_len, sig);
    }
    sprintf(out, "Bearer %s.%s", signing, sig);
}

static const char *hs256 = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static enum auth_result check(const char *header, const char *payload,
                              int64_t *uid)
{
    char tok[2048];

    mint(tok, header, payload, secret, SECRET_LEN);
    return auth_verify(tok, secret, SECRET_LEN, NOW, uid);
}

static void valid_string_sub(void **state)
{
    int64_t uid = 0;

    assert_int_equal(check(hs256, "{\"sub\":\"42\",\"exp\":1800000100}", &uid),
                     AUTH_OK);
    assert_int_equal(uid, 42);
}

static void valid_integer_sub(void **state)
{
    int64_t uid = 0;

    assert_int_equal(check(hs256, "{\"sub\":7,\"exp\":1800000100}", &uid),
                     AUTH_OK);
    assert_int_equal(uid, 7);
}

static void max_user_id(void **state)
{
    int64_t uid = 0;

    assert_int_equal(
        check(hs256,
              "{\"sub\":\"9223372036854775807\",\"exp\":1800000100}", &uid),
        AUTH_OK);
    assert_int_equal(uid, INT64_MAX);
    assert_int_equal(
        check(hs256,
              "{\"sub\":\"9223372036854775808\",\"exp\":1800000100}", &uid),
        AUTH_BAD_CLAIMS);
}

static void bad_subjects(void **state)
{
    static const char *const subs[] = {
        "\"007\"", "\"0\"", "\"-1\"", "\"+1\"", "\" 1\"", "\"1 \"", "\"\"",
        "\"abc\"", "-5",    "0",      "1.5",    "true",   "null", "[1]",
        "{}",      "\"1e3\""};
    char payload[256];
    int64_t uid;
    size_t i;

    for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        snprintf(payload, sizeof(payload),
                 "{\"sub\":%s,\"exp\":1800000100}", subs[i]);
        assert_int_equal(check(hs256, payload, &uid), AUTH_BAD_CLAIMS);
    }
    assert_int_equal(check(hs256, "{\"exp\":1800000100}", &uid),
                     AUTH_BAD_CLAIMS);
}

static void exp_rules(void **state)
{
    int64_t uid;

    assert_int_equal(check(hs256, "{\"sub\":\"1\"}", &uid), AUTH_BAD_CLAIMS);
    assert_int_equal(check(hs256, "{\"sub\":\"1\",\"exp\":\"1800000100\"}",
                           &uid),
                     AUTH_BAD_CLAIMS);
    /* within the 60 s skew: accepted; beyond: expired */
    assert_int_equal(check(hs256, "{\"sub\":\"1\",\"exp\":1799999940}", &uid),
                     AUTH_OK);
    assert_int_equal(check(hs256, "{\"sub\":\"1\",\"exp\":1799999939}", &uid),
                     AUTH_EXPIRED);
    assert_int_equal(check(hs256, "{\"sub\":\"1\",\"exp\":1799999000.5}",
                           &uid),
                     AUTH_EXPIRED);
    /* extreme values must not overflow into "valid" */
    assert_int_equal(
        check(hs256, "{\"sub\":\"1\",\"exp\":-9223372036854775807}", &uid),
        AUTH_EXPIRED);
    assert_int_equal(
        check(hs256, "{\"sub\":\"1\",\"exp\":9223372036854775807}", &uid),
        AUTH_OK);
}

static void nbf_rules(void **state)
{
    int64_t uid;

    assert_int_equal(
        check(hs256, "{\"sub\":\"1\",\"exp\":1800000100,\"nbf\":1800000060}",
              &uid),
        AUTH_OK);
    assert_int_equal(
        check(hs256, "{\"sub\":\"1\",\"exp\":1800000900,\"nbf\":1800000061}",
              &uid),
        AUTH_NOT_YET_VALID);
    assert_int_equal(
        check(hs256, "{\"sub\":\"1\",\"exp\":1800000100,\"nbf\":\"x\"}", &uid),
        AUTH_BAD_CLAIMS);
    assert_int_equal(
        check(hs256,
              "{\"sub\":\"1\",\"exp\":1800000100,\"nbf\":9223372036854775807}",
              &uid),
        AUTH_NOT_YET_VALID);
}

static void algorithms(void **state)
{
    const char *payload = "{\"sub\":\"1\",\"exp\":1800000100}";
    char tok[2048];
    int64_t uid;

    assert_int_equal(check("{\"alg\":\"HS512\"}", payload, &uid), AUTH_BAD_ALG);
    assert_int_equal(check("{\"alg\":\"RS256\"}", payload, &uid), AUTH_BAD_ALG);
    assert_int_equal(check("{\"alg\":\"hs256\"}", payload, &uid), AUTH_BAD_ALG);
    assert_int_equal(check("{\"typ\":\"JWT\"}", payload, &uid), AUTH_BAD_ALG);
    assert_int_equal(check("{\"alg\":\"HS256\",\"crit\":[\"x\"]}", payload,
                           &uid),
                     AUTH_BAD_ALG);
    /* alg none, with an empty signature and with a real one */
    mint(tok, "{\"alg\":\"none\"}", payload, NULL, 0);
    assert_int_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid),
                     AUTH_BAD_ALG);
    assert_int_equal(check("{\"alg\":\"none\"}", payload, &uid), AUTH_BAD_ALG);
}

static void signatures(void **state)
{
    const char *payload = "{\"sub\":\"1\",\"exp\":1800000100}";
    char tok[2048];
    int64_t uid;
    size_t n;

    mint(tok, hs256, payload, (const unsigned char *)"other", 5);
    assert_int_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid),
                     AUTH_BAD_SIGNATURE);
    mint(tok, hs256, payload, NULL, 0); /* no signature at all */
    assert_int_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid),
                     AUTH_BAD_SIGNATURE);
    mint(tok, hs256, payload, secret, SECRET_LEN);
    n = strlen(tok);
    tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A'; /* flip the signature */
    assert_int_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid),
                     AUTH_BAD_SIGNATURE);
    mint(tok, hs256, payload, secret, SECRET_LEN);
    tok[n - 1] = '\0'; /* truncated signature */
    assert_int_not_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid),
                         AUTH_OK);
}

/*
 * A 32-byte HMAC is 43 base64url characters; the last one carries 2 bits
 * that no byte uses. Setting them decodes to the same signature: a second
 * spelling of a valid token, refused (tests/faults: a thousand bad tokens).
 */
static void signature_spelled_one_way(void **state)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *payload = "{\"sub\":\"1\",\"exp\":1800000100}";
    char tok[2048];
    int64_t uid;
    size_t n;
    const char *pos;

    mint(tok, hs256, payload, secret, SECRET_LEN);
    assert_int_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid), AUTH_OK);
    n = strlen(tok);
    pos = strchr(alphabet, tok[n - 1]);
    assert_non_null(pos);
    assert_int_equal((pos - alphabet) & 3, 0);
    tok[n - 1] = alphabet[(pos - alphabet) | 1]; /* same 4 data bits */
    assert_int_not_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid),
                         AUTH_OK);
}

static void malformed(void **state)
{
    static const char *const bad[] = {
        "Bearer ",         "Bearer a",           "Bearer a.b",
        "Bearer a.b.c.d",  "Bearer ...",         "Bearer !!.??.**",
        "Bearer e30.e30.", "Bearer e30 .e30.xx", "Bearer eyJ.e30.xx",
    };
    int64_t uid;
    size_t i;

    assert_int_equal(auth_verify(NULL, secret, SECRET_LEN, NOW, &uid),
                     AUTH_MISSING);
    assert_int_equal(auth_verify("", secret, SECRET_LEN, NOW, &uid),
                     AUTH_MISSING);
    assert_int_equal(auth_verify("Basic dXNlcjpwYXNz", secret, SECRET_LEN,
                                 NOW, &uid),
                     AUTH_BAD_SCHEME);
    assert_int_equal(auth_verify("Bearer", secret, SECRET_LEN, NOW, &uid),
                     AUTH_BAD_SCHEME);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_not_equal(auth_verify(bad[i], secret, SECRET_LEN, NOW, &uid),
                             AUTH_OK);
}

static void header_not_object_or_duplicate_keys(void **state)
{
    int64_t uid;

    assert_int_equal(check("[1]", "{\"sub\":\"1\",\"exp\":1800000100}", &uid),
                     AUTH_MALFORMED);
    assert_int_equal(check(hs256, "\"just a string\"", &uid), AUTH_MALFORMED);
    assert_int_equal(
        check(hs256, "{\"sub\":\"1\",\"sub\":\"2\",\"exp\":1800000100}", &uid),
        AUTH_MALFORMED);
}

static void scheme_is_case_insensitive(void **state)
{
    char tok[2048];
    int64_t uid;

    mint(tok, hs256, "{\"sub\":\"5\",\"exp\":1800000100}", secret, SECRET_LEN);
    memcpy(tok, "bEaReR", 6);
    assert_int_equal(auth_verify(tok, secret, SECRET_LEN, NOW, &uid), AUTH_OK);
    assert_int_equal(uid, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_string_sub),
        cmocka_unit_test(valid_integer_sub),
        cmocka_unit_test(max_user_id),
        cmocka_unit_test(bad_subjects),
        cmocka_unit_test(exp_rules),
        cmocka_unit_test(nbf_rules),
        cmocka_unit_test(algorithms),
        cmocka_unit_test(signatures),
        cmocka_unit_test(signature_spelled_one_way),
        cmocka_unit_test(malformed),
        cmocka_unit_test(header_not_object_or_duplicate_keys),
        cmocka_unit_test(scheme_is_case_insensitive),
    };

    return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
