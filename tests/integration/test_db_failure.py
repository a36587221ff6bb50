"""The database failing under the app: 503 unavailable with Retry-After,
no lock left behind, and recovery without a restart."""

import collections
import threading
import time

import pytest

from helpers import path


def assert_unavailable(resp):
    assert resp.status == 503, (resp.status, resp.text)
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    assert isinstance(resp.json, dict) and set(resp.json) == {"error", "message"}, resp.text
    assert resp.json["error"] == "unavailable", resp.text
    ra = resp.headers.get("retry-after")
    assert ra is not None and ra.strip().isdigit(), resp.headers


class table_away:
    """Renames a table for the duration of a `with` block."""

    def __init__(self, stack, table):
        self.stack, self.table = stack, table

    def __enter__(self):
        self.stack.sql("RENAME TABLE %s TO %s_away" % (self.table, self.table))

    def __exit__(self, *exc):
        self.stack.sql("RENAME TABLE %s_away TO %s" % (self.table, self.table))
        return False


def test_failing_query_is_503_unavailable_then_recovers(stack):
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    with table_away(stack, "free_tickets"):
        for _ in range(4):   # several workers, several connections
            assert_unavailable(stack.request("POST", path(7), token=tok))
            assert_unavailable(stack.request("GET", path(7), token=tok))
        # the lock was released on the failure path
        time.sleep(0.2)
        assert [n for n in stack.held_locks() if n.startswith("tickets:user:")] == []
    r = stack.request("POST", path(7), token=tok)
    assert r.status == 201, r.text
    assert stack.request("POST", path(7), token=tok).status == 200


def test_orders_table_failing_is_503_not_a_ticket(stack):
    """A fact that cannot be read is not a fact: no ticket is issued."""
    stack.make_user(42)
    stack.make_event(7)
    with table_away(stack, "orders"):
        assert_unavailable(stack.request("POST", path(7), token=stack.token(42)))
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 0
    assert stack.request("POST", path(7), token=stack.token(42)).status == 201


def app_connections(stack):
    return [row[0] for row in stack.sql(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'tickets'")]


def test_killed_connections_recover(stack):
    """Every app connection is killed between requests: answers are true
    (a result, or 503 unavailable) and the app reconnects by itself."""
    events = list(range(1, 9))
    for e in events:
        stack.make_event(e)
    users = list(range(100, 164))
    for u in users:
        stack.make_user(u)
    # warm up: make every worker open its connection
    _round(stack, users[:32], 1)
    ids = app_connections(stack)
    assert ids, "no app connection to the database seen"
    for cid in ids:
        try:
            stack.sql("KILL CONNECTION %d" % cid)
        except Exception:   # noqa: BLE001 - it may have gone already
            pass
    seen = collections.Counter()
    for rnd in range(10):
        bad = _round(stack, users[rnd % 2 * 32:(rnd % 2 + 1) * 32], events[rnd % len(events)], seen)
        if not bad:
            break
    else:
        pytest.fail("still failing after 10 rounds: %r" % seen)
    for e in events:
        n = stack.sql("SELECT COUNT(*) FROM free_tickets WHERE event_id=%s", [e])[0][0]
        assert stack.sql("SELECT free_issued FROM events WHERE id=%s", [e])[0][0] == n


def _round(stack, users, event, seen=None):
    """32 concurrent claims; returns how many were 503 unavailable; any
    other answer than 201/200/503 unavailable fails."""
    results = [None] * len(users)
    barrier = threading.Barrier(len(users))

    def one(i, u):
        barrier.wait(10)
        results[i] = stack.request("POST", path(event), token=stack.token(u), timeout=20)

    ts = [threading.Thread(target=one, args=(i, u), daemon=True) for i, u in enumerate(users)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    bad = 0
    for r in results:
        if seen is not None:
            seen[r.status] += 1
        if r.status in (200, 201):
            continue
        assert_unavailable(r)
        bad += 1
    return bad


def test_health_reports_ok_while_db_answers(stack):
    r = stack.request("GET", "/api/health")
    assert r.status == 200 and r.json == {"status": "ok"}, r.text


def test_health_is_readiness_not_a_ping(stack):
    """/api/health runs one of the app's statements: with a table it reads
    gone, the server still answers pings (mysql_ping would say ok) but
    nothing can be served, so health is 503 unavailable; /ping, liveness,
    stays 200.  Back to 200 when the table is."""
    with table_away(stack, "free_tickets"):
        for _ in range(4):   # several workers, several connections
            h = stack.request("GET", "/api/health")
            assert h.status == 503 and h.json == {"status": "unavailable"}, h.text
            assert (h.headers.get("retry-after") or "").strip().isdigit(), h.headers
        r = stack.request("GET", stack.internal_url + "/ping")
        assert r.status == 200, r.text
    ok = _until(5, lambda: stack.request("GET", "/api/health").status == 200)
    assert ok, "health did not come back with the table"


def _until(deadline_s, fn):
    """Call fn() until it returns true or deadline_s pass; return the last
    value."""
    end = time.monotonic() + deadline_s
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.2)


def needs_harness(stack):
    if getattr(stack, "attached", False) or not hasattr(stack, "stop_db"):
        pytest.skip("needs a harness-started stack (stops MariaDB)")


def test_db_stopped_is_503_then_recovers(stack):
    """MariaDB stopped mid-run: quick 503s (unavailable, Retry-After; health
    says unavailable), and the same app processes recover once it is back."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_user(43)
    stack.make_event(7)
    tok = stack.token(42)
    assert stack.request("POST", path(7), token=stack.token(43)).status == 201
    pids = [i.pid for i in stack.instances]
    stack.stop_db()
    try:
        for _ in range(6):   # both instances, several workers
            for method in ("POST", "GET"):
                t0 = time.monotonic()
                r = stack.request(method, path(7), token=tok, timeout=20)
                assert time.monotonic() - t0 < 3.0, (method, time.monotonic() - t0)
                assert_unavailable(r)
            t0 = time.monotonic()
            h = stack.request("GET", "/api/health", timeout=20)
            assert time.monotonic() - t0 < 3.0
            assert h.status == 503, h.text
            assert h.json == {"status": "unavailable"}, h.text
            assert h.headers.get("content-type", "").startswith("application/json")
            ev = stack.request("GET", "/api/events", timeout=20)
            assert ev.status == 503, ev.text
        # a request that needs no database is still answered
        r = stack.request("POST", path(7))
        assert r.status == 401, r.text
    finally:
        stack.start_db()
    # recovery, without restarting the apps
    ok = _until(15, lambda: stack.request("GET", "/api/health").status == 200)
    assert ok, "health did not recover within 15 s of MariaDB's restart"
    seen = collections.Counter()

    def claimed():
        r = stack.request("POST", path(7), token=tok)
        seen[r.status] += 1
        if r.status == 503:
            assert_unavailable(r)
            return False
        return r
    r = _until(15, claimed)
    assert r and r.status == 201, (seen, r and r.text)
    assert stack.request("POST", path(7), token=tok).status == 200
    # every worker is healthy again once the app's reconnect back-off
    # (0.5 s after a failed connect) has passed: a burst of claims has no 503
    time.sleep(1.0)
    for u in range(100, 140):
        stack.make_user(u)
    results = []
    ts = [threading.Thread(target=lambda u=u: results.append(
        stack.request("POST", path(7), token=stack.token(u), timeout=20).status))
        for u in range(100, 140)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert sorted(results) == [201] * 40, collections.Counter(results)
    assert [i.pid for i in stack.instances] == pids, "the apps were restarted"


def test_db_hanging_is_503_quickly(stack):
    """MariaDB stops answering (SIGSTOP): with a 1 s database timeout a
    claim is answered 503 within a few seconds, not left hanging."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_user(43)
    stack.make_event(7)
    stack.restart_apps(env={"TICKETS_DB_TIMEOUT": "1"})
    try:
        assert stack.request("GET", path(7), token=stack.token(43)).status == 404
        results = []

        def one(method):
            t0 = time.monotonic()
            r = stack.request(method, path(7), token=stack.token(42), timeout=25)
            results.append((method, r, time.monotonic() - t0))

        stack.pause_db()
        try:
            ts = [threading.Thread(target=one, args=(m,)) for m in ("POST", "GET", "POST")]
            for t in ts:
                t.start()
            for t in ts:
                t.join(25)
        finally:
            stack.resume_db()
        assert not any(t.is_alive() for t in ts)
        for method, r, took in results:
            assert_unavailable(r)
            assert took < 8.0, (method, took)
        ok = _until(15, lambda: stack.request(
            "POST", path(7), token=stack.token(42)).status in (200, 201))
        assert ok, "no recovery within 15 s after MariaDB resumed"
    finally:
        stack.restart_apps()


# ---------------------------------------------------------------------------
# A claim interrupted half-way: nothing half-done, no lock left, recovery

def _blocked_claim(stack, user, event, interrupt):
    """Hold the event row from another session so the app's claim blocks in
    its transaction; then `interrupt` it ("QUERY" or "CONNECTION") every time
    it shows up blocked, until it answers. Returns (response, kills)."""
    holder = stack.db()
    kills = 0
    try:
        cur = holder.cursor()
        cur.execute("START TRANSACTION")
        cur.execute("SELECT free_issued FROM events WHERE id=%s FOR UPDATE", [event])
        out = []
        t = threading.Thread(target=lambda: out.append(stack.request(
            "POST", path(event), token=stack.token(user), timeout=30)), daemon=True)
        t.start()
        end = time.monotonic() + 20
        while t.is_alive() and time.monotonic() < end:
            ids = [r[0] for r in stack.sql(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'tickets' "
                "AND INFO LIKE 'UPDATE events%%'")]
            for cid in ids:
                try:
                    stack.sql("KILL %s %d" % (interrupt, cid))
                    kills += 1
                except Exception:   # noqa: BLE001 - it may have ended
                    pass
            time.sleep(0.05)
        t.join(15)
        assert not t.is_alive(), "the claim did not answer"
        cur.execute("ROLLBACK")
    finally:
        holder.close()
    return out[0], kills


@pytest.mark.parametrize("interrupt", ["QUERY", "CONNECTION"])
def test_claim_interrupted_mid_transaction(stack, interrupt):
    stack.make_user(42)
    stack.make_event(7)
    r, kills = _blocked_claim(stack, 42, 7, interrupt)
    assert kills >= 1, "the claim never blocked on the event row"
    assert_unavailable(r)
    # nothing half-done: no ticket row, counter untouched, lock released
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 0
    assert stack.sql("SELECT free_issued FROM events WHERE id=7")[0][0] == 0
    time.sleep(0.2)
    assert [n for n in stack.held_locks() if n.startswith("tickets:user:")] == []
    # and the user is served at once afterwards, by whichever worker
    for _ in range(2):
        r = stack.request("POST", path(7), token=stack.token(42))
        assert r.status in (200, 201), (r.status, r.text)
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 1


# ---------------------------------------------------------------------------
# App instances down: nginx answers for them

def test_one_instance_down_the_other_serves(stack):
    if getattr(stack, "attached", False) or len(getattr(stack, "instances", [])) < 2:
        pytest.skip("needs two harness-started instances")
    stack.make_event(7)
    for u in range(1, 21):
        stack.make_user(u)
    stack.instances[0].stop()
    try:
        statuses = [stack.request("POST", path(7), token=stack.token(u)).status
                    for u in range(1, 21)]
        assert statuses == [201] * 20, statuses
    finally:
        stack.restart_apps()


def test_all_instances_down_is_503_json(stack):
    if getattr(stack, "attached", False) or not getattr(stack, "instances", None):
        pytest.skip("needs harness-started instances")
    stack.make_user(1)
    stack.make_event(7)
    for inst in stack.instances:
        inst.stop()
    try:
        for method, p in (("POST", path(7)), ("GET", "/api/events"), ("GET", "/api/health")):
            t0 = time.monotonic()
            r = stack.request(method, p, token=stack.token(1), timeout=20)
            assert time.monotonic() - t0 < 5
            assert_unavailable(r)
    finally:
        stack.restart_apps()
    assert stack.request("POST", path(7), token=stack.token(1)).status == 201


def test_db_restart_while_idle_costs_no_503(stack):
    """MariaDB restarted while the apps were idle: every worker's connection
    is dead, yet no request is answered 503 for it: a connection found gone
    at the first statement of a request is replaced and the statement run
    again (no lock is held there, nothing written)."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    stack.stop_db()
    stack.start_db()
    statuses = collections.Counter()
    lock = threading.Lock()

    def get():
        r = stack.request("GET", path(7), token=tok, timeout=20)
        with lock:
            statuses[(r.status, (r.json or {}).get("error"))] += 1
    # more concurrent requests than workers, so every worker meets its dead
    # connection on a request
    ts = [threading.Thread(target=get) for _ in range(48)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert statuses == {(404, "no_ticket"): 48}, statuses
