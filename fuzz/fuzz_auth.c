/*
 * fuzz_auth.c: libFuzzer target for token parsing, auth_verify().
 *
 * The first byte picks how the rest is used:
 *   0  the whole Authorization header value, as sent;
 *   1  a JOSE header JSON, a NUL byte, a payload JSON: the harness signs
 *      them with the right secret (reaching the alg and claim checks);
 *   2  the same, signed with a wrong secret: must never be accepted;
 *   3  a payload JSON under {"alg":"HS256"}, signed: the result is checked
 *      against the contract's rules computed here (exp, nbf, 60 s skew,
 *      sub a canonical decimal string or a positive integer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

#define SECRET "fuzz-secret-0123456789abcdef0123"
#define NOW 1700000000
#define FUZZ_MAX_INPUT 12000

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    unsigned char tmp[4 * (FUZZ_MAX_INPUT / 3 + 2) + 1];
    int m = EVP_EncodeBlock(tmp, in, (int)n), i;
    size_t k = 0;

    for (i = 0; i < m && tmp[i] != '='; i++)
        out[k++] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : (char)tmp[i];
    return k;
}

static char *signed_header(const unsigned char *h, size_t hn,
                           const unsigned char *p, size_t pn, const char *key)
{
    char *out = malloc(7 + 2 * (4 * (FUZZ_MAX_INPUT / 3 + 2)) + 64 + 3);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t k = 7, start = 7;

    if (!out)
        abort();
    memcpy(out, "Bearer ", 7);
    k += b64url(h, hn, out + k);
    out[k++] = '.';
    k += b64url(p, pn, out + k);
    HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)out + start,
         k - start, mac, &mac_len);
    out[k++] = '.';
    k += b64url(mac, mac_len, out + k);
    out[k] = '\0';
    return out;
}

/* A NumericDate: an integer, or a real within any sane range. */
static int date(const json_t *v, int64_t *out)
{
    double d;

    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 1;
    }
    if (!json_is_real(v))
        return 0;
    d = json_real_value(v);
    if (d > 9.0e15 || d < -9.0e15)
        return 0;
    *out = (int64_t)d;
    return 1;
}

/* The contract's verdict on a payload signed with the right key. */
static int expected(const unsigned char *p, size_t n, int64_t *sub)
{
    json_t *doc = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
    json_t *nbf, *s;
    int64_t exp, not_before = 0;
    int ok = 0;

    if (!json_is_object(doc))
        goto out;
    nbf = json_object_get(doc, "nbf");
    s = json_object_get(doc, "sub");
    if (!date(json_object_get(doc, "exp"), &exp) ||
        (nbf && !date(nbf, &not_before)))
        goto out;
    if (json_is_string(s)) {
        const char *v = json_string_value(s);
        size_t len = json_string_length(s), i;

        if (len == 0 || len > 19 || v[0] == '0')
            goto out;
        for (i = 0; i < len; i++)
            if (v[i] < '0' || v[i] > '9')
                goto out;
        if (len == 19 && strcmp(v, "9223372036854775807") > 0)
            goto out;
        *sub = strtoll(v, NULL, 10);
    } else if (json_is_integer(s) && json_integer_value(s) > 0) {
        *sub = json_integer_value(s);
    } else {
        goto out;
    }
    if (exp < (int64_t)NOW - AUTH_SKEW_SECONDS)
        goto out;
    if (nbf && not_before > (int64_t)NOW + AUTH_SKEW_SECONDS)
        goto out;
    ok = 1;
out:
    json_decref(doc);
    return ok;
}

/*
 * A 32-byte HMAC takes 43 base64url characters, the last one with 2 bits
 * no byte uses: the other three spellings of an accepted token must be
 * refused (one token, one spelling).
 */
static void respelled_refused(char *header)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(header);
    const char *pos = strchr(alphabet, header[n - 1]);
    char orig = header[n - 1];
    int64_t uid;
    int low;

    if (!pos)
        abort();
    for (low = 1; low < 4; low++) {
        header[n - 1] = alphabet[((pos - alphabet) & ~3) | low];
        if (header[n - 1] != orig &&
            auth_verify(header, (const unsigned char *)SECRET, strlen(SECRET),
                        NOW, &uid) == AUTH_OK) {
            fprintf(stderr, "accepted another spelling of a token: %s\n",
                    header);
            abort();
        }
    }
    header[n - 1] = orig;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    unsigned char mode;
    const unsigned char *rest, *nul;
    size_t n;
    char *header;
    int64_t uid = 0, want_uid = 0;
    enum auth_result r;

    if (size < 1 || size > FUZZ_MAX_INPUT)
        return 0;
    mode = data[0] & 3;
    rest = data + 1;
    n = size - 1;
    if (mode == 0) {
        header = malloc(n + 1);
        if (!header)
            abort();
        memcpy(header, rest, n);
        header[n] = '\0';
    } else if (mode == 3) {
        static const char h[] = "{\"alg\":\"HS256\"}";

        header = signed_header((const unsigned char *)h, sizeof(h) - 1, rest, n,
                               SECRET);
    } else {
        nul = memchr(rest, '\0', n);
        if (!nul)
            return 0;
        header = signed_header(rest, (size_t)(nul - rest), nul + 1,
                               n - (size_t)(nul + 1 - rest),
                               mode == 1 ? SECRET : "not-the-secret");
    }
    r = auth_verify(header, (const unsigned char *)SECRET, strlen(SECRET), NOW,
                    &uid);
    if ((int)r < AUTH_OK || r > AUTH_NOT_YET_VALID || !auth_result_name(r))
        abort();
    if (r == AUTH_OK && uid < 1) {
        fprintf(stderr, "accepted with user id %lld\n", (long long)uid);
        abort();
    }
    if (mode == 2 && r == AUTH_OK) {
        fprintf(stderr, "accepted a token signed with another key\n");
        abort();
    }
    if (r == AUTH_OK && mode != 0)
        respelled_refused(header);
    if (mode == 3) {
        int want = expected(rest, n, &want_uid);

        if (want != (r == AUTH_OK) || (want && uid != want_uid)) {
            fprintf(stderr, "auth_verify says %s (user %lld), the contract "
                            "%s (user %lld): %.*s\n", auth_result_name(r),
                    (long long)uid, want ? "accept" : "refuse",
                    (long long)want_uid, (int)(n > 300 ? 300 : n), rest);
            abort();
        }
    }
    free(header);
    return 0;
}
