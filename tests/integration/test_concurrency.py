"""Concurrent claims: the two guards (per-user named lock, unique key) and the
quota, each shown to matter.

Every test here is bounded: a fixed number of requests, client threads that
start together on a barrier, a timeout on every request and on every join.
Tests that change the apps or the schema put them back in `finally`.
"""

import collections
import http.client
import os
import threading
import time
import urllib.parse

import pytest

from harness import Resp, http_request
from helpers import path, issued, rows

UNSAFE = {"TICKETS_TEST_UNSAFE_NO_LOCK": "1"}
REQUEST_TIMEOUT = 30
JOIN_TIMEOUT = 90


def _send(conn, base, method, p, token, body):
    """One request of fire() on conn, made beforehand; a Resp, also when
    no answer came (status None, .error)."""
    headers = {"Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    t0 = time.monotonic()
    try:
        return http_request(base, method, p, token, body, headers,
                            REQUEST_TIMEOUT, conn=conn)
    except Exception as e:  # noqa: BLE001 - reported by the caller
        r = Resp(None, error=repr(e))
        r.elapsed = time.monotonic() - t0
        return r


def fire(stack, reqs, threads=64):
    """Send `reqs` ((method, path, token) or (method, path, token, body))
    from `threads` client threads that start together; return the results
    in the order of `reqs`.  Each thread connects before the barrier."""
    u = urllib.parse.urlsplit(stack.url)
    threads = max(1, min(threads, len(reqs)))
    results = [None] * len(reqs)
    barrier = threading.Barrier(threads)

    def work(k):
        mine = list(range(k, len(reqs), threads))
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.connect()
        except OSError:
            pass   # the request below reconnects and reports
        try:
            barrier.wait(timeout=JOIN_TIMEOUT)
        except threading.BrokenBarrierError:
            pass
        for n, i in enumerate(mine):
            if n:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=REQUEST_TIMEOUT)
            r = reqs[i]
            results[i] = _send(conn, stack.url, r[0], r[1], r[2],
                                r[3] if len(r) > 3 else None)

    ts = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in ts:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in ts), "client threads still running after %d s" % JOIN_TIMEOUT
    assert None not in results
    errors = [r.error for r in results if r.error]
    assert not errors, "transport errors: %d, e.g. %s" % (len(errors), errors[:3])
    return results


def statuses(results):
    return collections.Counter(r.status for r in results)


def codes(results):
    return collections.Counter((r.status, (r.json or {}).get("error")) for r in results)


def add_premium_users(stack, ids):
    ids = list(ids)
    for k in range(0, len(ids), 500):
        chunk = ids[k:k + 500]
        stack.sql("INSERT INTO users (id, premium_until) VALUES " + ", ".join(
            "(%d, UTC_TIMESTAMP() + INTERVAL 30 DAY)" % int(i) for i in chunk))


def assert_one_ticket(results, user, event):
    """Exactly one 201; every other answer a 200 with the same ticket."""
    c = statuses(results)
    assert c[201] == 1 and c[200] == len(results) - 1, codes(results)
    (created,) = [r for r in results if r.status == 201]
    ticket = created.json["ticket"]
    assert created.json["created"] is True
    assert (ticket["user_id"], ticket["event_id"]) == (user, event), ticket
    for r in results:
        if r.status == 200:
            assert r.json["created"] is False, r.json
            assert r.json["ticket"] == ticket, (r.json["ticket"], ticket)
    return ticket


def needs_harness(stack):
    if not getattr(stack, "instances", None):
        pytest.skip("needs a harness-started stack (restarts apps / reads logs)")


class unique_key_dropped:
    """`with unique_key_dropped(stack):` runs without the (user_id,
    event_id) unique key; on the way out it deletes all tickets (duplicates
    would stop the key from coming back), resets free_issued and restores
    the key."""

    def __init__(self, stack):
        self.stack = stack

    def __enter__(self):
        self.stack.sql("ALTER TABLE free_tickets DROP INDEX free_tickets_user_event")
        return self

    def __exit__(self, *exc):
        s = self.stack
        s.sql("DELETE FROM free_tickets")
        s.sql("UPDATE events SET free_issued = 0")
        s.sql("ALTER TABLE free_tickets ADD UNIQUE KEY free_tickets_user_event (user_id, event_id)")
        keys = {row[2] for row in s.sql("SHOW INDEX FROM free_tickets WHERE Non_unique = 0")}
        assert "free_tickets_user_event" in keys, keys
        return False


class apps_with(object):
    """`with apps_with(stack, env):` restarts the apps with `env`, and
    restarts them with the defaults on the way out.  The TEST ONLY switch
    needs the test build (the release binary refuses it), so env holding it
    runs that build."""

    def __init__(self, stack, env):
        self.stack, self.env = stack, env

    def __enter__(self):
        try:
            self.stack.restart_apps(env=self.env,
                                    test_build=UNSAFE.items() <= self.env.items())
        except BaseException:
            self.stack.restart_apps()
            raise
        return self

    def __exit__(self, *exc):
        self.stack.restart_apps()
        return False


def log_offsets(stack):
    out = []
    for inst in stack.instances:
        try:
            out.append(os.path.getsize(inst.log_path))
        except (OSError, AttributeError, TypeError):
            out.append(None)
    return out


def new_log_lines(stack, offsets):
    out = []
    for inst, off in zip(stack.instances, offsets):
        if off is None:
            out.append(None)
            continue
        with open(inst.log_path, "rb") as f:
            f.seek(off)
            out.append(f.read().decode("utf-8", "replace").splitlines())
    return out


# ---------------------------------------------------------------------------
# (a) without both guards the race is real: this is what the others guard

def test_a_race_is_real_without_lock_and_unique_key(stack):
    needs_harness(stack)
    event = 7
    stack.make_event(event)
    seen = []
    # up to 20 rounds: since issue 12 the event row is held only from the
    # seat UPDATE to COMMIT, so the window (another claim's UPDATE starting
    # inside that hold) is narrower than it was, and a round may miss it
    with unique_key_dropped(stack), apps_with(stack, UNSAFE):
        for rnd in range(20):
            user = 1000 + rnd
            stack.make_user(user)
            tok = stack.token(user)
            results = fire(stack, [("POST", path(event), tok)] * 50, threads=50)
            n = rows(stack, user, event)
            seen.append((n, dict(codes(results))))
            if n > 1:
                break
    assert any(n > 1 for n, _ in seen), (
        "50 simultaneous claims with no lock and no unique key never wrote a "
        "duplicate: the race is not exercised (rows per round, answers): %r" % seen)


# ---------------------------------------------------------------------------
# (b) both guards, two instances: one 201, then 200s with that ticket

def test_b_500_identical_claims_over_two_instances(stack):
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    offsets = log_offsets(stack) if getattr(stack, "instances", None) else []
    t0 = time.monotonic()
    results = fire(stack, [("POST", path(7), tok)] * 500, threads=64)
    took = time.monotonic() - t0
    assert_one_ticket(results, 42, 7)
    assert rows(stack, 42, 7) == 1
    assert rows(stack) == 1
    assert issued(stack, 7) == 1
    assert max(r.elapsed for r in results) < 10, max(r.elapsed for r in results)
    assert took < 60, took
    if len(offsets) >= 2:
        lines = new_log_lines(stack, offsets)
        served = [sum(1 for l in ls if "participation" in l) if ls is not None else None
                  for ls in lines]
        known = [n for n in served if n is not None]
        assert len(known) >= 2, served
        assert all(n > 0 for n in known), (
            "an app instance served none of the 500 claims: %r" % served)


# ---------------------------------------------------------------------------
# (c1) lock off, unique key on: the key alone keeps one row and true answers

def test_c1_unique_key_alone_keeps_one_ticket(stack):
    needs_harness(stack)
    stack.make_event(7)
    with apps_with(stack, UNSAFE):
        for rnd, user in enumerate((42, 43)):
            stack.make_user(user)
            results = fire(stack, [("POST", path(7), stack.token(user))] * 200, threads=64)
            assert not [r for r in results if r.status >= 500], (rnd, codes(results))
            assert_one_ticket(results, user, 7)
            assert rows(stack, user, 7) == 1
        assert issued(stack, 7) == 2


# ---------------------------------------------------------------------------
# (c2) lock on, unique key off: the lock alone keeps one row

def test_c2_lock_alone_keeps_one_ticket(stack):
    needs_harness(stack)
    stack.make_event(7)
    with unique_key_dropped(stack):
        for user in (42, 43):
            stack.make_user(user)
            results = fire(stack, [("POST", path(7), stack.token(user))] * 200, threads=64)
            assert rows(stack, user, 7) == 1, codes(results)
            assert_one_ticket(results, user, 7)
        assert issued(stack, 7) == 2


# ---------------------------------------------------------------------------
# (d) the quota race: distinct users, so only the database can guard it

def test_d_quota_under_concurrency(stack):
    stack.make_event(7, quota=50)
    users = list(range(5001, 5301))
    add_premium_users(stack, users)
    results = fire(stack, [("POST", path(7), stack.token(u)) for u in users], threads=64)
    c = codes(results)
    assert c[(201, None)] == 50 and c[(409, "sold_out")] == 250, c
    winners = sorted(r.json["ticket"]["user_id"] for r in results if r.status == 201)
    assert len(set(winners)) == 50
    assert rows(stack, event=7) == 50
    assert issued(stack, 7) == 50
    assert sorted(x[0] for x in stack.sql("SELECT user_id FROM free_tickets")) == winners
    listed = stack.request("GET", "/api/events").json["events"]
    assert [(e["free_quota"], e["free_left"]) for e in listed if e["id"] == 7] == [(50, 0)]


def test_d_quota_with_repeats(stack):
    """Users double-click while the quota runs out: each user's answers
    agree with each other, and the quota holds."""
    stack.make_event(7, quota=20)
    users = list(range(6001, 6061))
    add_premium_users(stack, users)
    reqs = [("POST", path(7), stack.token(u)) for u in users for _ in range(3)]
    results = fire(stack, reqs, threads=64)
    by_user = collections.defaultdict(list)
    for (m, p, tok), r in zip(reqs, results):
        by_user[tok].append(r)
    winners = 0
    for rs in by_user.values():
        c = statuses(rs)
        assert not [r for r in rs if r.status >= 500], codes(rs)
        if c[201]:
            winners += 1
            assert c[201] == 1, codes(rs)
            ticket = [r for r in rs if r.status == 201][0].json["ticket"]
            # a double-click may arrive before the ticket (sold_out is then
            # no longer possible after it), or after it (200, same ticket)
            for r in rs:
                if r.status == 200:
                    assert r.json["ticket"] == ticket
                else:
                    assert r.status in (201, 409), codes(rs)
        else:
            assert set(c) == {409}, codes(rs)
            assert all(r.json["error"] == "sold_out" for r in rs)
    assert winners == 20
    assert rows(stack, event=7) == 20 and issued(stack, 7) == 20


# ---------------------------------------------------------------------------
# (e) lock timeout: 503 busy for that user only

def test_e_lock_timeout_is_503_busy_and_other_users_are_served(stack):
    stack.make_user(42)
    stack.make_user(43)
    stack.make_event(7)
    held = stack.db()
    try:
        cur = held.cursor()
        cur.execute("SELECT GET_LOCK(%s, 0)", ["tickets:user:42"])
        assert cur.fetchone()[0] == 1

        blocked = []
        tok42 = stack.token(42)

        def busy_claim():
            t0 = time.monotonic()
            r = stack.request("POST", path(7), token=tok42, timeout=20)
            blocked.append((r, time.monotonic() - t0))

        ts = [threading.Thread(target=busy_claim, daemon=True) for _ in range(2)]
        for t in ts:
            t.start()
        time.sleep(0.1)   # let them reach GET_LOCK
        tok43 = stack.token(43)
        other = []
        for _ in range(5):
            t0 = time.monotonic()
            r = stack.request("POST", path(7), token=tok43)
            other.append((r.status, time.monotonic() - t0))
        others_done = len(blocked)
        for t in ts:
            t.join(20)
        assert not any(t.is_alive() for t in ts)
        # the other user was served while user 42's claims were waiting
        assert others_done == 0, "user 43 was served only after user 42's claims ended"

        assert [s for s, _ in other] == [201, 200, 200, 200, 200], other
        assert max(e for _, e in other) < 0.6, other
        assert len(blocked) == 2
        for r, elapsed in blocked:
            assert r.status == 503, (r.status, r.text)
            assert r.json == {"error": "busy", "message": r.json.get("message")}, r.text
            assert isinstance(r.json["message"], str) and r.json["message"]
            assert r.headers.get("content-type", "").startswith("application/json")
            ra = r.headers.get("retry-after")
            assert ra is not None and ra.strip().isdigit(), r.headers
            assert 0.8 <= elapsed <= 4.0, elapsed
        assert rows(stack, 42, 7) == 0
        # the app itself holds nothing while it waits for nobody
        assert [n for n in stack.held_locks() if n != "tickets:user:42"] == []
    finally:
        held.close()
    # released: the user is served again
    r = stack.request("POST", path(7), token=stack.token(42))
    assert r.status == 201, r.text


# ---------------------------------------------------------------------------
# (f) one user, many events at once: one ticket per event

def test_f_one_user_many_events_at_once(stack):
    stack.make_user(42)
    events = list(range(101, 111))
    for e in events:
        stack.make_event(e)
    tok = stack.token(42)
    reqs = [("POST", path(e), tok) for e in events for _ in range(3)]
    results = fire(stack, reqs, threads=30)
    by_event = collections.defaultdict(list)
    for (m, p, t), r in zip(reqs, results):
        by_event[p].append(r)
    for e in events:
        assert_one_ticket(by_event[path(e)], 42, e)
        assert issued(stack, e) == 1
    assert rows(stack, user=42) == 10
    assert stack.sql("SELECT COUNT(DISTINCT event_id) FROM free_tickets WHERE user_id=42")[0][0] == 10


# ---------------------------------------------------------------------------
# (g) a mixed crowd: many users, events, repeats and refusals at once

def test_g_mixed_crowd_is_consistent(stack):
    events = {11: None, 12: 15, 13: None}
    for e, q in events.items():
        stack.make_event(e, quota=q)
    stack.make_event(14, free=False)
    stack.make_event(15, starts_in=-60)
    premium = list(range(7001, 7041))
    add_premium_users(stack, premium)
    lapsed = list(range(7101, 7106))
    for u in lapsed:
        stack.make_user(u, premium=False)
    stack.make_order(7001, 11, status="paid")
    stack.make_order(7002, 11, status="pending")
    reqs = []
    for u in premium + lapsed:
        tok = stack.token(u)
        for e in (11, 12, 13, 14, 15):
            reqs += [("POST", path(e), tok)] * 2
    reqs.append(("GET", "/api/events", None))
    results = fire(stack, reqs, threads=64)
    assert not [r for r in results if r.status is None or r.status >= 500], codes(results)
    outcome = collections.defaultdict(list)
    for (m, p, tok), r in zip(reqs, results):
        outcome[(tok, p)].append(r)
    for rs in outcome.values():
        if any(r.status == 201 for r in rs):
            assert statuses(rs)[201] == 1, codes(rs)
    c = codes(results)
    lapsed_n = len(lapsed) * 5 * 2
    assert c[(403, "not_premium")] == lapsed_n, c
    assert c[(409, "not_free")] == len(premium) * 2, c
    assert c[(409, "event_started")] == len(premium) * 2, c
    assert c[(409, "paid_order_exists")] == 4, c
    assert rows(stack, event=11) == len(premium) - 2
    assert rows(stack, event=12) == 15
    assert rows(stack, event=13) == len(premium)
    assert rows(stack, event=14) == rows(stack, event=15) == 0
    for e in (11, 12, 13, 14, 15):
        assert issued(stack, e) == rows(stack, event=e)
    assert c[(201, None)] == rows(stack)


def test_e2_lock_released_during_the_wait_is_served(stack):
    """GET_LOCK really waits: a lock freed within the timeout lets the claim
    through (201), no 503."""
    stack.make_user(42)
    stack.make_event(7)
    held = stack.db()
    try:
        cur = held.cursor()
        cur.execute("SELECT GET_LOCK('tickets:user:42', 0)")
        assert cur.fetchone()[0] == 1
        out = []

        def claim():
            t0 = time.monotonic()
            out.append((stack.request("POST", path(7), token=stack.token(42), timeout=20),
                        time.monotonic() - t0))

        t = threading.Thread(target=claim, daemon=True)
        t.start()
        time.sleep(0.4)
        assert not out, "the claim did not wait for the lock: %r" % out
        cur.execute("SELECT RELEASE_LOCK('tickets:user:42')")
        t.join(10)
        assert not t.is_alive()
        (r, took), = out
        assert r.status == 201, (r.status, r.text)
        assert 0.35 <= took < 1.0, took
    finally:
        held.close()
