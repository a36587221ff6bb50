"""Pacing (issue 12): a hot user is paced by who they are, not by how their
header is spelled, and requests without a token are paced per address.

- nginx: the per-token key is the token itself, so "Bearer X", "bearer X"
  and "BEARER  X" share one bucket (its error log says when it delays);
- the app: a bucket per verified user id (TICKETS_PACE_RATE/_BURST), which
  a fresh token per request does not escape: claims over it are answered
  from what the app knows (the ticket) without the database, or 503 busy
  with Retry-After;
- tokenless requests (GET /api/events, /api/health): limited per client
  address in nginx (503 busy beyond the burst), and the list is answered
  from a one-second copy (TICKETS_EVENTS_CACHE), so a flood reaches the
  database about once a second per instance.
"""

import concurrent.futures
import contextlib
import time

from helpers import path, assert_error, rows, general_log
from test_concurrency import needs_harness
from test_rate_limit import ZONE, error_log_size, error_log_since

SPELLINGS = ("Bearer ", "bearer ", "BEARER  ", "bEaReR   ", "BeArEr ")
LIST_SQL = "FROM EVENTS WHERE STARTS_AT > UTC_TIMESTAMP() ORDER BY"


@contextlib.contextmanager
def addr_limit(stack):
    """The shipped per-address limit of tokenless requests, which the test
    stack leaves off (all its clients are 127.0.0.1)."""
    stack.set_addr_limit(True)
    try:
        yield
    finally:
        stack.set_addr_limit(False)


def send_all(stack, reqs, threads=50):
    """reqs: (method, path, headers); all at once from `threads` threads;
    the responses in order."""
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        futs = [ex.submit(stack.request, m, p, None, None, h, 30)
                for m, p, h in reqs]
        return [f.result() for f in futs]


def test_app_accepts_every_spelling(stack):
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    got = [stack.request("POST", path(7), headers={"Authorization": s + tok})
           for s in SPELLINGS]
    assert [r.status for r in got] == [201] + [200] * (len(SPELLINGS) - 1), \
        [(r.status, r.text) for r in got]


def test_spelling_variants_share_one_nginx_bucket(stack):
    """500 claims of one token in 5 spellings from 100 connections: one
    bucket of 200 free, so nginx delays some (in 5 buckets of 100 each, as
    keyed on the raw header, it would delay none); still one ticket."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    mark = error_log_size(stack)
    reqs = [("POST", path(7), {"Authorization": SPELLINGS[i % 5] + tok})
            for i in range(500)]
    got = send_all(stack, reqs, threads=100)
    statuses = sorted(r.status for r in got)
    assert statuses.count(201) == 1 and statuses.count(200) == 499, statuses
    log = error_log_since(stack, mark)
    delayed = [line for line in log.splitlines()
               if "delaying request" in line and ZONE in line]
    assert delayed, "nginx kept the spellings in separate buckets"
    assert rows(stack, 42, 7) == 1


def test_fresh_token_per_request_is_paced_by_user(stack):
    """40 claims of one user, each with a new token (as a frontend that
    mints one per call): nginx sees 40 keys; the app's bucket (burst 3,
    1/s) lets about 3 reach the database, and answers the rest from the
    ticket it learned: one 201, then 200 with that ticket."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    stack.restart_apps(env={"TICKETS_PACE_RATE": "1", "TICKETS_PACE_BURST": "3"})
    # distinct tokens: a different exp each
    toks = [stack.token(42, exp_delta=300 + i) for i in range(40)]
    assert len(set(toks)) == 40
    log = []
    t0 = time.monotonic()
    with general_log(stack, log):
        got = [stack.request("POST", path(7), token=t) for t in toks]
    took = time.monotonic() - t0
    statuses = [r.status for r in got]
    assert statuses[0] == 201 and set(statuses[1:]) <= {200}, statuses
    ticket = got[0].json["ticket"]
    assert all(r.json == {"ticket": ticket, "created": False}
               for r in got[1:]), [r.text for r in got[1:] if r.status == 200][:3]
    glances = [a for _, a in log if a.upper().startswith("SELECT E.FREE_FOR_PREMIUM")]
    # each of the 2 instances: its burst of 3, then 1 a second
    allowed = 2 * (3 + int(took) + 1)
    assert len(glances) <= allowed, (len(glances), allowed, took)
    assert rows(stack, 42, 7) == 1


def test_over_the_pace_with_nothing_known_is_503_busy(stack):
    """One user claims 12 events in a row, faster than 1/s after a burst of
    2: the claims beyond get 503 busy with Retry-After (JSON), write
    nothing, and go through again once the bucket refills."""
    needs_harness(stack)
    stack.make_user(42)
    events = list(range(100, 112))
    for e in events:
        stack.make_event(e)
    # one instance, so that one bucket sees every claim
    stack.restart_apps(env={"TICKETS_PACE_RATE": "1", "TICKETS_PACE_BURST": "2"},
                       count=1)
    tok = stack.token(42)
    got = [stack.request("POST", path(e), token=tok) for e in events]
    busy = [(e, r) for e, r in zip(events, got) if r.status == 503]
    made = [e for e, r in zip(events, got) if r.status == 201]
    assert busy and len(made) >= 2, [r.status for r in got]
    assert set(r.status for r in got) <= {201, 503}, [r.status for r in got]
    for e, r in busy:
        assert_error(r, 503, "busy")
        assert r.headers.get("retry-after") == "1", r.headers
        assert rows(stack, 42, e) == 0
    e, _ = busy[0]
    time.sleep(1.2)
    assert stack.request("POST", path(e), token=tok).status == 201


def test_tokenless_flood_is_paced_per_address_and_cached(stack):
    """300 GET /api/events from 60 connections of one address: nginx lets
    its burst through and answers the rest 503 busy (JSON, Retry-After);
    what passes is answered from the app's one-second copy, so the database
    sees about one list query a second per instance, not one per answer; a
    user with a token is not held up by it."""
    needs_harness(stack)
    stack.make_user(42)
    for e in (7, 8):
        stack.make_event(e)
    stack.restart_apps(env={"TICKETS_EVENTS_CACHE": "1"})
    with addr_limit(stack):
        _tokenless_flood(stack)


def _tokenless_flood(stack):
    # each instance makes its copy first (round robin: one GET each, twice)
    for _ in range(4):
        assert stack.request("GET", "/api/events").status == 200
    log = []
    t0 = time.monotonic()
    with general_log(stack, log):
        reqs = [("GET", "/api/events", None)] * 300
        with concurrent.futures.ThreadPoolExecutor(61) as ex:
            flood = [ex.submit(stack.request, m, p, None, None, h, 30)
                     for m, p, h in reqs]
            mine = ex.submit(stack.request, "POST", path(7), stack.token(42))
            got = [f.result() for f in flood]
            claim = mine.result()
    took = time.monotonic() - t0
    statuses = [r.status for r in got]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0, "no tokenless request was limited"
    ok = [r for r in got if r.status == 200]
    assert ok and all(sorted(e["id"] for e in r.json["events"]) == [7, 8]
                      for r in ok)
    for r in got:
        if r.status == 503:
            assert_error(r, 503, "busy")
            assert r.headers.get("retry-after"), r.headers
    assert claim.status == 201, (claim.status, claim.text)
    lists = [a for _, a in log if LIST_SQL in a.upper()]
    # per instance about one refresh a second (its copy made before);
    # without the copy, one query per 200 answer
    allowed = 2 * (int(took) + 2)
    assert len(lists) <= allowed and len(lists) < len(ok), \
        (len(lists), allowed, len(ok), took)


def test_health_is_paced_per_address_too(stack):
    needs_harness(stack)
    with addr_limit(stack):
        got = send_all(stack, [("GET", "/api/health", None)] * 300, threads=60)
    statuses = [r.status for r in got]
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert statuses.count(503) > 0, "/api/health was not limited"
