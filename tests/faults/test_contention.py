"""Issue 3, rows 4 and 7: a stuck holder of a user's named lock, more
clients than worker threads, and a hot user whose clicks would fill the
pool. Other users' latency is measured against a baseline taken in the
same test, and bounded."""

import threading
import time

from faultlib import SLOW, assert_truthful, fire, pct, record

LOCK_TIMEOUT = 1.0   # tests/harness TEST_APP_ENV


def _jobs(stack, users, event):
    return [(u, event, stack.token(u)) for u in users]


def _in_background(fn, *args):
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("v", fn(*args)), daemon=True)
    t.start()
    return t, res


# ---------------------------------------------------------------------------
# row 4: a session holds a user's named lock longer than the lock timeout

def test_row4_stuck_lock_holder(stack):
    """Another session holds tickets:user:42 throughout. 40 claims of user
    42 (20 clients, both instances) answer 503 busy with Retry-After within
    the lock timeout plus a margin; 200 claims of other users sent at the
    same time are all created, with a p99 latency close to a baseline
    measured just before without the stuck holder."""
    others = list(range(80000, 80400))
    stack.make_users([42] + others)
    stack.make_event(7)
    stack.make_event(8)
    base = fire(stack.url, _jobs(stack, others[:200], 8), 20)
    assert [a.status for a in base] == [201] * 200, [a for a in base if a.status != 201][:5]
    holder = stack.db()
    try:
        cur = holder.cursor()
        cur.execute("SELECT GET_LOCK('tickets:user:42', 0)")
        assert cur.fetchone()[0] == 1
        tok = stack.token(42)
        hot_t, hot = _in_background(fire, stack.url, [(42, 7, tok)] * 40, 20)
        time.sleep(0.05)
        during = fire(stack.url, _jobs(stack, others[200:], 7), 20)
        hot_t.join(60 * SLOW)
        assert not hot_t.is_alive()
        stuck = hot["v"]
    finally:
        holder.close()
    assert_truthful(stuck + during, allow=(201, 503), busy_ok=True)
    assert [a.status for a in during] == [201] * 200, [a for a in during if a.status != 201][:5]
    assert {(a.status, a.error) for a in stuck} == {(503, "busy")}, stuck[:5]
    worst = max(a.elapsed for a in stuck)
    assert worst < (LOCK_TIMEOUT + 1.0) * SLOW, sorted(a.elapsed for a in stuck)[-5:]
    b99, d99 = pct([a.elapsed for a in base], 99), pct([a.elapsed for a in during], 99)
    record("4 stuck lock", stuck_claims=len(stuck), stuck_answer="503 busy",
           stuck_p50_s=pct([a.elapsed for a in stuck], 50), stuck_max_s=worst,
           others_baseline_p50_s=pct([a.elapsed for a in base], 50),
           others_baseline_p99_s=b99,
           others_during_p50_s=pct([a.elapsed for a in during], 50),
           others_during_p99_s=d99, others_extra_p99_s=d99 - b99)
    assert d99 < b99 + 0.5 * SLOW, (b99, d99)


# ---------------------------------------------------------------------------
# row 7: exhaustion

def test_row7_more_clients_than_threads(stack):
    """300 clients at once, one claim each, over 2 x 8 worker threads:
    every one is answered 201, none dropped, in bounded time."""
    users = list(range(90000, 90300))
    stack.make_users(users)
    stack.make_event(7)
    answers = fire(stack.url, _jobs(stack, users, 7), 300)
    assert_truthful(answers, allow=(201,))
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 300
    worst = max(a.elapsed for a in answers)
    record("7 exhaustion", clients_300_threads_16_status="300 x 201",
           clients_300_p50_s=pct([a.elapsed for a in answers], 50),
           clients_300_p99_s=pct([a.elapsed for a in answers], 99),
           clients_300_max_s=worst)
    assert worst < 10.0 * SLOW, worst


def test_row7_hot_user_does_not_starve_others(stack):
    """User 42 clicks 300 times at once while the lock of 42 is held by
    another session (released 0.3 s after the clicks' leaders are seen
    waiting, within the 1 s lock timeout); 200 other users
    claim at the same time. The hot user gets one 201 and 200s carrying the
    same ticket (or 503 busy, truthfully); the others are all created with
    a p99 latency bounded against a baseline; the app's pool is not filled
    by one user (its claims are coalesced: one worker per instance)."""
    others = list(range(91000, 91400))
    stack.make_users([42] + others)
    stack.make_event(7)
    stack.make_event(8)
    base = fire(stack.url, _jobs(stack, others[:200], 8), 20)
    assert [a.status for a in base] == [201] * 200
    holder = stack.db()
    try:
        cur = holder.cursor()
        cur.execute("SELECT GET_LOCK('tickets:user:42', 0)")
        tok = stack.token(42)
        jobs = _jobs(stack, others[200:], 7)
        hot_t, hot = _in_background(fire, stack.url, [(42, 7, tok)] * 300, 300)
        # the clicks are piling up once their leaders wait on the lock:
        # watch them for 0.3 s, then let them through (lock timeout: 1 s)

        def watch_then_release():
            try:
                return _lock_waiters_peak(stack, 0.3)
            finally:
                cur.execute("SELECT RELEASE_LOCK('tickets:user:42')")

        peak_t, peak = _in_background(watch_then_release)
        during = fire(stack.url, jobs, 20)
        peak_t.join(10 * SLOW)
        peak = peak["v"]
        hot_t.join(60 * SLOW)
        assert not hot_t.is_alive()
        clicks = hot["v"]
    finally:
        holder.close()
    assert_truthful(clicks + during, allow=(200, 201, 503), busy_ok=True)
    created = [a for a in clicks if a.status == 201]
    assert len(created) <= 1, created
    rows = stack.sql("SELECT id, code FROM free_tickets WHERE user_id=42")
    assert len(rows) == 1, rows
    for a in clicks:
        if a.status in (200, 201):
            assert (a.ticket["id"], a.ticket["code"]) == tuple(rows[0]), a
    assert [a.status for a in during] == [201] * 200, [a for a in during if a.status != 201][:5]
    b99, d99 = pct([a.elapsed for a in base], 99), pct([a.elapsed for a in during], 99)
    statuses = {}
    for a in clicks:
        statuses["%s %s" % (a.status, a.error or "")] = \
            statuses.get("%s %s" % (a.status, a.error or ""), 0) + 1
    record("7 exhaustion", hot_clicks=len(clicks), hot_answers=str(sorted(statuses.items())),
           hot_workers_waiting_peak=peak,
           others_baseline_p99_s=b99, others_during_p99_s=d99,
           others_extra_p99_s=d99 - b99)
    assert 1 <= peak <= len(stack.instances), \
        "one user's clicks occupy %d worker threads" % peak
    # 300 client threads share the 2 cores with the app and nginx here: the
    # bound is loose; a filled pool is caught by `peak` above
    assert d99 < b99 + 1.0 * SLOW, (b99, d99)


def _lock_waiters_peak(stack, seconds, first_within=3.0):
    """Most app sessions seen at once waiting in GET_LOCK (server state
    "User lock") during `seconds` from the first one seen (which must come
    within `first_within`): the worker threads the hot user holds."""
    peak, end = 0, time.monotonic() + first_within * SLOW
    while time.monotonic() < end:
        n = int(stack.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                          "WHERE USER = 'tickets' AND STATE = 'User lock'")[0][0])
        if n and not peak:
            end = time.monotonic() + seconds
        peak = max(peak, n)
        time.sleep(0.01)
    return peak
