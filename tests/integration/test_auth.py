"""Authentication of /api/events/{id}/participation (contract: Authentication,
claim row 1).

Tokens are built here by hand rather than with stack.token(), so that every
header and claim is exactly what the test says: HS256 is the only accepted
alg, the secret is stack.secret, sub is a string of digits (or a JSON
integer), exp is required, nbf is honoured, 60 s of skew is allowed.
Anything else is 401 with `WWW-Authenticate: Bearer` and error unauthorized.
"""

import base64
import hashlib
import hmac
import json
import re
import time

import pytest

from harness import claim_path, overlay

USER = 4242
EVENT = 77
PATH = claim_path(EVENT)


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj):
    return b64u(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def jwt(secret, payload, header=None, sign="HS256"):
    """A JWT over `payload`; `sign` is the MAC actually used (None: empty
    signature), whatever `header` claims."""
    if header is None:
        header = {"alg": "HS256", "typ": "JWT"}
    signing_input = b64json(header) + "." + b64json(payload)
    if sign is None:
        sig = b""
    else:
        digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[sign]
        sig = hmac.new(secret, signing_input.encode("ascii"), digest).digest()
    return signing_input + "." + b64u(sig)


DROP = object()


def claims(**over):
    """The claims of a valid token, with over's changes (DROP: without)."""
    return overlay({"sub": str(USER), "exp": int(time.time()) + 300}, over,
                   drop=DROP)


def error_body(resp):
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json
    assert isinstance(body, dict), resp.text
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body
    assert body["message"], body
    return body


def assert_401(resp):
    assert resp.status == 401, (resp.status, resp.text)
    www = resp.headers.get("www-authenticate")
    assert www is not None, "401 without WWW-Authenticate: %r" % resp.headers
    assert re.match(r"(?i)^bearer\b", www), www
    assert error_body(resp)["error"] == "unauthorized", resp.text


@pytest.fixture
def world(stack):
    """A premium user and an open free event: with a valid token a GET is
    404 no_ticket, so anything else is down to the token."""
    stack.make_user(USER, premium=True)
    stack.make_event(EVENT, free=True)
    return stack


def assert_accepted(stack, authz):
    r = stack.request("GET", PATH, headers={"Authorization": authz})
    assert r.status == 404, (authz, r.status, r.text)
    assert error_body(r)["error"] == "no_ticket", r.text


def rows(stack):
    return stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0]


# ---------------------------------------------------------------------------
# Malformed Authorization headers

def bad_headers(secret):
    good = jwt(secret, claims())
    h, p, s = good.split(".")
    flipped = s[:-2] + ("AA" if s[-2:] != "AA" else "BB")
    return [
        ("no header", None),
        ("basic scheme", "Basic dXNlcjpwYXNz"),
        ("token scheme", "Token " + good),
        ("jwt without scheme", good),
        ("bearer only", "Bearer"),
        ("bearer empty", "Bearer "),
        ("bearer spaces", "Bearer    "),
        ("garbage", "Bearer garbage"),
        ("dots only", "Bearer .."),
        ("two segments", "Bearer %s.%s" % (h, p)),
        ("four segments", "Bearer %s.%s.%s.%s" % (h, p, s, s)),
        ("bad base64 header", "Bearer !!!.%s.%s" % (p, s)),
        ("bad base64 payload", "Bearer %s.%%%%%%.%s" % (h, s)),
        ("bad base64 signature", "Bearer %s.%s.***" % (h, p)),
        ("header not json", "Bearer %s.%s.%s" % (b64u(b"not json"), p, s)),
        ("payload not json", "Bearer " + _signed(secret, b64json({"alg": "HS256"}), b64u(b"{nope"))),
        ("payload a json array", "Bearer " + _signed(secret, b64json({"alg": "HS256"}), b64u(b"[1,2]"))),
        ("bad signature", "Bearer %s.%s.%s" % (h, p, flipped)),
        ("empty signature", "Bearer %s.%s." % (h, p)),
        ("wrong secret", "Bearer " + jwt(b"not-the-secret", claims())),
        ("secret plus newline", "Bearer " + jwt(secret + b"\n", claims())),
        ("alg none unsigned", "Bearer " + jwt(secret, claims(), {"alg": "none", "typ": "JWT"}, sign=None)),
        ("alg none signed", "Bearer " + jwt(secret, claims(), {"alg": "none", "typ": "JWT"})),
        ("alg None unsigned", "Bearer " + jwt(secret, claims(), {"alg": "None"}, sign=None)),
        ("alg HS512", "Bearer " + jwt(secret, claims(), {"alg": "HS512", "typ": "JWT"}, sign="HS512")),
        ("alg HS512 header, HS256 mac", "Bearer " + jwt(secret, claims(), {"alg": "HS512"})),
        ("alg RS256", "Bearer " + jwt(secret, claims(), {"alg": "RS256", "typ": "JWT"})),
        ("alg hs256 lower case", "Bearer " + jwt(secret, claims(), {"alg": "hs256"})),
        ("alg missing", "Bearer " + jwt(secret, claims(), {"typ": "JWT"})),
    ]


def _signed(secret, h, p):
    sig = hmac.new(secret, (h + "." + p).encode("ascii"), hashlib.sha256).digest()
    return h + "." + p + "." + b64u(sig)


MALFORMED = [name for name, _ in bad_headers(b"x")]


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_tokens_are_401(world, name):
    stack = world
    authz = dict(bad_headers(stack.secret))[name]
    headers = {} if authz is None else {"Authorization": authz}
    for method in ("POST", "GET"):
        r = stack.request(method, PATH, headers=headers)
        try:
            assert_401(r)
        except AssertionError as e:
            raise AssertionError("%s %s [%s]: %s" % (method, PATH, name, e))
    assert rows(stack) == 0


# ---------------------------------------------------------------------------
# Claims: exp, nbf, skew, sub

def bad_claims():
    now = int(time.time())
    return [
        ("exp missing", claims(exp=DROP)),
        ("exp expired 61+ s ago", claims(exp=now - 90)),
        ("exp expired an hour ago", claims(exp=now - 3600)),
        ("exp a string", claims(exp=str(now + 300))),
        ("exp null", claims(exp=None)),
        ("exp a bool", claims(exp=True)),
        ("nbf beyond the skew", claims(nbf=now + 120)),
        ("nbf far future", claims(nbf=now + 86400)),
        ("nbf a string", claims(nbf=str(now - 10))),
        ("sub missing", claims(sub=DROP)),
        ("sub empty", claims(sub="")),
        ("sub non-digit string", claims(sub="alice")),
        ("sub digits then letters", claims(sub="%da" % USER)),
        ("sub leading zero", claims(sub="0%d" % USER)),
        ("sub 007", claims(sub="007")),
        ("sub with sign", claims(sub="+%d" % USER)),
        ("sub with space", claims(sub=" %d" % USER)),
        ("sub negative string", claims(sub="-%d" % USER)),
        ("sub negative int", claims(sub=-USER)),
        ("sub float", claims(sub=float(USER))),
        ("sub float string", claims(sub="%d.0" % USER)),
        ("sub null", claims(sub=None)),
        ("sub bool", claims(sub=True)),
        ("sub object", claims(sub={"id": USER})),
        ("sub array", claims(sub=[USER])),
    ]


BAD_CLAIMS = [name for name, _ in bad_claims()]


@pytest.mark.parametrize("name", BAD_CLAIMS)
def test_bad_claims_are_401(world, name):
    stack = world
    payload = dict(bad_claims())[name]
    authz = "Bearer " + jwt(stack.secret, payload)
    for method in ("POST", "GET"):
        r = stack.request(method, PATH, headers={"Authorization": authz})
        try:
            assert_401(r)
        except AssertionError as e:
            raise AssertionError("%s [%s] %r: %s" % (method, name, payload, e))
    assert rows(stack) == 0


def test_valid_tokens_within_skew_are_accepted(world):
    stack = world
    now = int(time.time())
    good = [
        ("plain", claims()),
        ("exp 30 s ago, within skew", claims(exp=now - 30)),
        ("nbf 30 s ahead, within skew", claims(nbf=now + 30)),
        ("nbf in the past", claims(nbf=now - 3600)),
        ("sub as JSON integer", claims(sub=USER)),
        ("extra claims", claims(iss="shop", aud="tickets", iat=now, jti="x")),
        ("header without typ", None),
    ]
    for name, payload in good:
        if payload is None:
            tok = jwt(stack.secret, claims(), {"alg": "HS256"})
        else:
            tok = jwt(stack.secret, payload)
        try:
            assert_accepted(stack, "Bearer " + tok)
        except AssertionError as e:
            raise AssertionError("[%s] %r: %s" % (name, payload, e))


def test_integer_sub_claims_for_that_user(world):
    stack = world
    tok = jwt(stack.secret, claims(sub=USER))
    r = stack.request("POST", PATH, headers={"Authorization": "Bearer " + tok})
    assert r.status == 201, r.text
    assert r.json["ticket"]["user_id"] == USER
    # the same user with a string sub sees the same ticket
    tok2 = jwt(stack.secret, claims(sub=str(USER)))
    r2 = stack.request("POST", PATH, headers={"Authorization": "Bearer " + tok2})
    assert r2.status == 200, r2.text
    assert r2.json["ticket"] == r.json["ticket"]


def test_harness_token_is_accepted(world):
    """stack.token() and this file agree on what a good token is."""
    r = world.request("GET", PATH, token=world.token(USER))
    assert r.status == 404 and r.json["error"] == "no_ticket", r.text


# ---------------------------------------------------------------------------
# 401 comes first (row 1 before rows 2 and 3)

def test_401_before_400_and_404(stack):
    bad = "Bearer " + jwt(b"wrong", claims())
    for path in ("/api/events/abc/participation",
                 "/api/events/0/participation",
                 "/api/events/01/participation",
                 "/api/events/99999999999999999999999/participation",
                 "/api/events/123456/participation"):   # no such event
        for method in ("POST", "GET"):
            for headers in ({}, {"Authorization": bad}):
                r = stack.request(method, path, headers=headers)
                try:
                    assert_401(r)
                except AssertionError as e:
                    raise AssertionError("%s %s %r: %s" % (method, path, headers, e))


def test_401_before_body_checks(world):
    stack = world
    for body in (b"{not json", b"{" + b" " * 5000 + b"}"):
        r = stack.request("POST", PATH, body=body,
                          headers={"Content-Type": "application/json"})
        assert_401(r)
    assert rows(stack) == 0


def test_events_list_needs_no_token(stack):
    stack.make_event(EVENT)
    for headers in ({}, {"Authorization": "Bearer garbage"}):
        r = stack.request("GET", "/api/events", headers=headers)
        assert r.status == 200, r.text
