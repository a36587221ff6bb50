"""JWTs as the site's issuer makes them (HS256), or bent on purpose, and
the secret a run signs them with.

Standard library only."""

import base64
import hashlib
import hmac
import json
import secrets
import time

from .processes import overlay, write_private


def _b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_secret(path):
    """A fresh random secret (64 hex digits) written to path, only its
    owner can read it (the app's TICKETS_JWT_SECRET_FILE); returns it as
    bytes."""
    secret = secrets.token_hex(32).encode("ascii")
    write_private(path, secret.decode() + "\n")
    return secret


def make_token(secret, sub, exp_delta=300, alg="HS256", header=None,
               sub_raw=False, **claims):
    """A JWT signed with secret (bytes or str).

    sub: an int becomes its decimal string (as the site's issuer does) unless
    sub_raw=True; anything else is passed as given; None leaves it out.
    exp: now + exp_delta seconds; exp_delta=None leaves exp out; an explicit
    exp=... in claims wins. header: entries merged over {"alg", "typ"}; a
    value of None removes that entry. alg "HS256"/"HS384"/"HS512" sign with
    HMAC, "none" gives an empty signature, anything else a random one.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    hdr = overlay({"alg": alg, "typ": "JWT"}, header or {})
    payload = {}
    if sub is not None:
        payload["sub"] = str(sub) if isinstance(sub, int) and not sub_raw \
            and not isinstance(sub, bool) else sub
    if exp_delta is not None:
        payload["exp"] = int(time.time()) + int(exp_delta)
    payload.update(claims)
    signing_input = (_b64u(json.dumps(hdr, separators=(",", ":")).encode())
                     + "." +
                     _b64u(json.dumps(payload, separators=(",", ":")).encode()))
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
               "HS512": hashlib.sha512}
    if alg in digests:
        sig = hmac.new(secret, signing_input.encode("ascii"), digests[alg]).digest()
    elif alg.lower() == "none":
        sig = b""
    else:
        sig = secrets.token_bytes(256)
    return signing_input + "." + _b64u(sig)

