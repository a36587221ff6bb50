/*
 * auth.h: the bearer token check (HS256 JWT), a pure function.
 *
 * (header value, secret, now) -> user id or the reason for refusal.  The
 * HMAC and base64 come from OpenSSL and the JSON from jansson; the policy is
 * ours: HS256 only, exp required, nbf honoured, 60 s of clock skew, sub a
 * decimal string (or a JSON integer) in 1 .. INT64_MAX.
 * No global state; safe from any thread.
 */
#ifndef TICKETS_AUTH_H
#define TICKETS_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_SKEW_SECONDS 60
/* Longest token accepted; nginx's header buffers stop larger ones anyway. */
#define AUTH_TOKEN_MAX 8192

enum auth_result {
    AUTH_OK,
    AUTH_MISSING,       /* no Authorization header */
    AUTH_BAD_SCHEME,    /* not "Bearer <token>" */
    AUTH_MALFORMED,     /* not three base64url parts of JSON objects */
    AUTH_BAD_ALG,       /* alg is not HS256 (none included) */
    AUTH_BAD_SIGNATURE,
    AUTH_BAD_CLAIMS,    /* exp missing or not a number, sub missing or bad */
    AUTH_EXPIRED,
    AUTH_NOT_YET_VALID, /* nbf in the future */
};

/*
 * Check an Authorization header value (may be NULL) against the secret at
 * time now (seconds since the epoch).  On AUTH_OK *user_id is set.
 */
enum auth_result auth_verify(const char *header, const unsigned char *secret,
                             size_t secret_len, int64_t now,
                             int64_t *user_id);

/* A short lower-case name of the result, for logs. */
const char *auth_result_name(enum auth_result r);

#endif
