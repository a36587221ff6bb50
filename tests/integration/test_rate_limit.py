"""The per-token limit of the shipped nginx config (limit_req in
nginx/snippets/tickets-public.conf): a storm of one bearer token is paced
(queued in nginx, released at 100/s after a free burst of 200), the other
users are not, and a token's requests beyond the queue get the contract's
503 busy with Retry-After, never an HTML page or a lost claim.
"""

import os
import threading
import time

from helpers import path, rows
from test_concurrency import assert_one_ticket, codes, fire, needs_harness

ZONE = 'zone "tickets_per_token"'


def error_log_size(stack):
    return os.path.getsize(stack.path("nginx-error.log"))


def error_log_since(stack, offset):
    with open(stack.path("nginx-error.log"), "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def test_storm_of_one_token_is_paced_and_others_are_not(stack):
    """500 claims of one token from 100 connections: nginx delays the excess
    (its error log, at info level in the test config, says so), the claims
    still end in one 201 and 499 x 200, and another user's claims meanwhile
    are neither delayed nor refused."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_user(43)
    for e in range(7, 13):
        stack.make_event(e)
    tok42, tok43 = stack.token(42), stack.token(43)
    mark = error_log_size(stack)
    others = []

    def other_user():
        time.sleep(0.5)   # the storm is in full swing
        for e in range(8, 13):
            t0 = time.monotonic()
            r = stack.request("POST", path(e), token=tok43, timeout=20)
            others.append((r.status, time.monotonic() - t0))

    t = threading.Thread(target=other_user, daemon=True)
    t.start()
    t0 = time.monotonic()
    results = fire(stack, [("POST", path(7), tok42)] * 500, threads=100)
    took = time.monotonic() - t0
    t.join(30)
    assert not t.is_alive()
    assert_one_ticket(results, 42, 7)
    assert rows(stack, 42, 7) == 1
    log = error_log_since(stack, mark)
    delayed = [line for line in log.splitlines()
               if "delaying request" in line and ZONE in line]
    assert delayed, "nginx delayed none of the storm's requests"
    assert "limiting requests" not in log, "a request was refused"
    # 500 requests, 200 free, then 100/s: the storm cannot end before ~3 s
    assert took >= 2.0, took
    assert [s for s, _ in others] == [201] * 5, others
    assert max(dt for _, dt in others) < 2.0, others


def test_excess_beyond_the_queue_is_503_busy_with_retry_after(stack):
    """With the queue cut to 5 (the shipped 1000 needs a far bigger storm),
    60 simultaneous claims of one token: the refused ones are 503 busy in
    JSON with Retry-After, the rest one 201 and 200s, one ticket; another
    token is not refused."""
    needs_harness(stack)
    snippet = stack.path("snippets", "tickets-public.conf")
    with open(snippet) as f:
        shipped = f.read()
    assert "burst=1000 delay=200" in shipped
    stack.make_user(42)
    stack.make_user(43)
    stack.make_event(7)
    tok42, tok43 = stack.token(42), stack.token(43)
    try:
        with open(snippet, "w") as f:
            f.write(shipped.replace("burst=1000 delay=200", "burst=5 delay=5"))
        stack.reload_nginx()
        results = fire(stack, [("POST", path(7), tok42)] * 60 +
                       [("POST", path(7), tok43)], threads=61)
    finally:
        with open(snippet, "w") as f:
            f.write(shipped)
        stack.reload_nginx()
    mine, other = results[:60], results[60]
    refused = [r for r in mine if r.status == 503]
    assert refused, codes(mine)
    for r in refused:
        assert r.json == {"error": "busy", "message": r.json["message"]}, r.json
        assert r.headers.get("retry-after") == "1", r.headers
        assert r.headers.get("content-type", "").startswith("application/json")
    answered = [r for r in mine if r.status != 503]
    assert_one_ticket(answered, 42, 7)
    assert other.status == 201, (other.status, other.json)
    assert rows(stack, 42, 7) == 1
