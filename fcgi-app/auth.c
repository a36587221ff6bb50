/*
 * auth.c: HS256 JWT verification.
 *
 * Order of checks: shape, header (alg), signature, then claims: nothing in
 * the payload is trusted before the signature matched.  The signature is
 * compared in constant time (CRYPTO_memcmp).
 */
#include "auth.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util.h"

/* Decoded parts are at most 3/4 of the token. */
#define DECODED_MAX (AUTH_TOKEN_MAX / 4 * 3 + 3)

static bool is_b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* The 6-bit value of a base64url character (already checked). */
static unsigned b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return (unsigned)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (unsigned)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (unsigned)(c - '0' + 52);
    return c == '-' ? 62 : 63;
}

/*
 * Decode unpadded base64url (RFC 7515 section 2) with OpenSSL: translate to
 * the standard alphabet, pad, EVP_DecodeBlock, drop the padding bytes.
 * Only the canonical spelling is accepted: the bits after the last whole
 * byte must be zero (RFC 4648 section 3.5), else one signature would have
 * several spellings and a token several accepted forms.
 */
static bool b64url_decode(const char *in, size_t len, unsigned char *out,
                          size_t *out_len)
{
    char tmp[AUTH_TOKEN_MAX + 4];
    size_t i, pad;
    int n;

    if (len == 0 || len % 4 == 1 || len > AUTH_TOKEN_MAX)
        return false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (!is_b64url_char(c))
            return false;
        tmp[i] = c == '-' ? '+' : c == '_' ? '/' : (char)c;
    }
    if ((len % 4 == 2 && (b64url_value((unsigned char)in[len - 1]) & 0x0f)) ||
        (len % 4 == 3 && (b64url_value((unsigned char)in[len - 1]) & 0x03)))
        return false;
    pad = (4 - len % 4) % 4;
    for (i = 0; i < pad; i++)
        tmp[len + i] = '=';
    n = EVP_DecodeBlock(out, (const unsigned char *)tmp, (int)(len + pad));
    if (n < 0 || (size_t)n < pad)
        return false;
    *out_len = (size_t)n - pad;
    return true;
}

static json_t *decode_object(const char *in, size_t len)
{
    unsigned char buf[DECODED_MAX];
    size_t n;
    json_t *obj;

    if (!b64url_decode(in, len, buf, &n))
        return NULL;
    obj = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static bool header_is_hs256(const json_t *header)
{
    const char *alg = json_string_value(json_object_get(header, "alg"));

    /* "crit" names extensions we would have to understand (RFC 7515 4.1.11) */
    return alg && strcmp(alg, "HS256") == 0 &&
           json_object_get(header, "crit") == NULL;
}

static bool signature_matches(const char *signed_part, size_t signed_len,
                              const char *sig, size_t sig_len,
                              const unsigned char *secret, size_t secret_len)
{
    unsigned char given[DECODED_MAX], mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t given_len;

    if (!b64url_decode(sig, sig_len, given, &given_len))
        return false;
    if (!HMAC(EVP_sha256(), secret, (int)secret_len,
              (const unsigned char *)signed_part, signed_len, mac, &mac_len))
        return false;
    return given_len == mac_len && CRYPTO_memcmp(given, mac, mac_len) == 0;
}

/* A NumericDate as whole seconds; false if absent-but-required or bad. */
static bool numeric_date(const json_t *v, int64_t *out)
{
    double d;

    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (!json_is_real(v))
        return false;
    d = json_real_value(v);
    if (d > 9.0e15 || d < -9.0e15) /* beyond any sane date */
        return false;
    *out = (int64_t)d;
    return true;
}

static bool subject(const json_t *v, int64_t *user_id)
{
    if (json_is_string(v))
        return util_parse_id(json_string_value(v), json_string_length(v),
                             user_id);
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *user_id = json_integer_value(v);
        return true;
    }
    return false;
}

static enum auth_result check_claims(const json_t *claims, int64_t now,
                                     int64_t *user_id)
{
    const json_t *nbf = json_object_get(claims, "nbf");
    int64_t exp, not_before, sub;

    if (!numeric_date(json_object_get(claims, "exp"), &exp))
        return AUTH_BAD_CLAIMS;
    if (nbf && !numeric_date(nbf, &not_before))
        return AUTH_BAD_CLAIMS;
    if (!subject(json_object_get(claims, "sub"), &sub))
        return AUTH_BAD_CLAIMS;
    /* written so that no extreme claim value can overflow */
    if (exp < now - AUTH_SKEW_SECONDS)
        return AUTH_EXPIRED;
    if (nbf && not_before > now + AUTH_SKEW_SECONDS)
        return AUTH_NOT_YET_VALID;
    *user_id = sub;
    return AUTH_OK;
}

enum auth_result auth_verify(const char *header, const unsigned char *secret,
                             size_t secret_len, int64_t now, int64_t *user_id)
{
    const char *token, *dot1, *dot2;
    size_t len;
    json_t *jose = NULL, *claims = NULL;
    enum auth_result r;

    if (!header || !*header)
        return AUTH_MISSING;
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return AUTH_BAD_SCHEME;
    for (token = header + 7; *token == ' '; token++)
        ;
    len = strlen(token);
    if (len == 0 || len > AUTH_TOKEN_MAX)
        return AUTH_MALFORMED;
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))
                : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return AUTH_MALFORMED;

    jose = decode_object(token, (size_t)(dot1 - token));
    if (!jose) {
        r = AUTH_MALFORMED;
        goto out;
    }
    if (!header_is_hs256(jose)) {
        r = AUTH_BAD_ALG;
        goto out;
    }
    if (!signature_matches(token, (size_t)(dot2 - token), dot2 + 1,
                           len - (size_t)(dot2 + 1 - token), secret,
                           secret_len)) {
        r = AUTH_BAD_SIGNATURE;
        goto out;
    }
    claims = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!claims) {
        r = AUTH_MALFORMED;
        goto out;
    }
    r = check_claims(claims, now, user_id);
out:
    json_decref(claims);
    json_decref(jose);
    return r;
}

const char *auth_result_name(enum auth_result r)
{
    static const char *const names[] = {
        [AUTH_OK] = "ok",
        [AUTH_MISSING] = "missing",
        [AUTH_BAD_SCHEME] = "bad_scheme",
        [AUTH_MALFORMED] = "malformed",
        [AUTH_BAD_ALG] = "bad_alg",
        [AUTH_BAD_SIGNATURE] = "bad_signature",
        [AUTH_BAD_CLAIMS] = "bad_claims",
        [AUTH_EXPIRED] = "expired",
        [AUTH_NOT_YET_VALID] = "not_yet_valid",
    };

    return names[r];
}
