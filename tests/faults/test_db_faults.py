"""Issue 3, rows 1, 2 and 5: the database restarting under load, a worker's
connection killed between GET_LOCK and COMMIT, and a hung database.

Each test is bounded: a fixed set of (user, event) pairs, a storm with a
deadline, a timeout on every request and join."""

import collections
import threading
import time

import pytest

from harness import LOCK_PREFIX
from faultlib import (SLOW, Storm, all_workers_serve, app_sessions,
                      assert_truthful, check_claims_against_db,
                      check_quota_storm, held_ticket_locks, path, pct, record,
                      send, wait_no_locks)

THREADS = 8   # per instance: tests/harness TEST_APP_ENV


def _assert_503_unavailable(a):
    assert a.status == 503 and a.error == "unavailable", a
    assert (a.retry_after or "").strip().isdigit(), a


# ---------------------------------------------------------------------------
# row 1: MariaDB restarted while a few hundred clients claim

def test_row1_db_restart_under_load(stack):
    """200 clients claim 3000 pairs (two events, one with a quota smaller
    than its demand); MariaDB is shut down a third of the way through and
    started again 2 s later. During the outage: 503 unavailable with
    Retry-After, quickly. After it: no 503 once the reconnect pause has
    passed, every worker thread of both instances back on the database.
    At the end: one ticket per pair at most, every 201 committed, the quota
    kept, free_issued equal to the rows, no lock held."""
    users = list(range(10000, 11500))
    stack.make_users(users + list(range(20000, 20000 + 2 * THREADS)))
    stack.make_event(7)
    stack.make_event(8, quota=1000)
    pairs = [(u, 7) for u in users] + [(u, 8) for u in users]
    st = Storm(stack, pairs, threads=200, duration=60 * SLOW, backoff=0.1,
               timeout=30).start()
    # a third of the way
    end = time.monotonic() + 30 * SLOW
    while len(st.answers) < len(pairs) // 3 and time.monotonic() < end:
        time.sleep(0.01)
    assert len(st.answers) >= len(pairs) // 3, "the storm did not get going"
    t_down = time.monotonic()
    stack.stop_db()
    t_stopped = time.monotonic()
    time.sleep(2.0)
    stack.start_db()
    t_up = time.monotonic()
    st.join(extra=30)
    assert not st.unfinished(), "pairs without a final answer: %d, e.g. %s" % (
        len(st.unfinished()), st.unfinished()[:5])

    allow = (200, 201, 409, 503)
    assert_truthful(st.answers, allow=allow, busy_ok=False)
    conflicts = [a for a in st.answers if a.status == 409]
    assert all(a.error == "sold_out" and a.event == 8 for a in conflicts), \
        conflicts[:5]

    # during the outage: 503 unavailable, fast; never a 201 the DB lacks
    outage = st.between(t_stopped, t_up)
    o503 = [a for a in outage if a.status == 503]
    assert o503, "no request was answered during the outage"
    slow = [a for a in o503 if a.elapsed > 3.0 * SLOW]
    assert not slow, "slow 503s during the outage: %s" % slow[:5]

    created, lost = check_claims_against_db(stack, st.answers, pairs)
    rows8 = stack.sql("SELECT COUNT(*) FROM free_tickets WHERE event_id=8")[0][0]
    assert rows8 == 1000, rows8
    final = collections.Counter(a.status for a in st.final.values())
    assert final[201] + final[200] == created + lost
    assert final[409] == len(users) - 1000, final

    # after the restart: no 503 once the reconnect pause has passed
    after = [a for a in st.answers if a.t0 > t_up + 1.0]
    late503 = [a for a in after if a.status == 503]
    first_ok = min((a.t1 for a in st.answers
                    if a.t0 >= t_up and a.status in (200, 201, 409)), default=None)
    assert first_ok is not None
    # every worker thread of every instance is back on the database
    for i, inst in enumerate(stack.instances):
        first = 20000 + i * THREADS
        seen, answers = all_workers_serve(stack, inst, THREADS,
                                          range(first, first + THREADS), 7)
        ok = [a for a in answers if getattr(a, "status", None) == 201 or (
            getattr(a, "status", None) == 503 and (a.json or {}).get("error") == "busy")]
        assert seen == THREADS and len(ok) == THREADS, (
            inst, seen, [getattr(a, "text", a) for a in answers])
    record("1 db restart", clients=200, pairs=len(pairs),
           answers=len(st.answers),
           outage_s=t_up - t_down, stop_s=t_stopped - t_down,
           outage_503=len(o503),
           outage_503_p99_s=pct([a.elapsed for a in o503], 99),
           outage_503_max_s=max(a.elapsed for a in o503),
           recovery_first_answer_s=first_ok - t_up,
           late_503_after_1s=len(late503),
           created_201=created, lost_answers=lost,
           sold_out_409=final[409], status_500=0)
    assert not late503, "503s more than 1 s after MariaDB was back: %d, e.g. %s" \
        % (len(late503), late503[:5])


# ---------------------------------------------------------------------------
# row 2: the claim's connection killed between GET_LOCK and COMMIT

def _block_and_kill(stack, user, event, block, kill):
    """Block the app's claim of (user, event) at `block` ("seat": the UPDATE
    of the event row, after the ticket's INSERT; "insert": the INSERT of
    the ticket, the claim's first write) from a root session, then KILL
    `kill` ("QUERY" or
    "CONNECTION") the app session that holds the user's named lock.
    Returns (answer, seconds from the kill to the lock being free)."""
    holder = stack.db()
    out = []
    try:
        cur = holder.cursor()
        if block == "seat":
            cur.execute("START TRANSACTION")
            cur.execute("SELECT free_issued FROM events WHERE id=%s FOR UPDATE",
                        [event])
            want = "UPDATE events%"
        else:
            # a next-key lock on the (user, event) slot of the unique key:
            # the app's INSERT, its first write, waits for it
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION")
            cur.execute("SELECT id FROM free_tickets WHERE user_id=%s AND "
                        "event_id=%s FOR UPDATE", [user, event])
            want = "INSERT INTO free_tickets%"
        t = threading.Thread(target=lambda: out.append(send(
            stack.url, "POST", path(event), stack.token(user), user, event,
            timeout=30)), daemon=True)
        t.start()
        end, cid = time.monotonic() + 10 * SLOW, None
        while cid is None and time.monotonic() < end:
            rows = stack.sql(
                "SELECT p.ID FROM information_schema.PROCESSLIST p JOIN "
                "information_schema.METADATA_LOCK_INFO m ON m.THREAD_ID = p.ID "
                "WHERE p.USER = 'tickets' AND m.LOCK_TYPE = 'User lock' AND "
                "m.TABLE_SCHEMA = %s AND p.INFO LIKE %s",
                [LOCK_PREFIX + str(user), want])
            cid = rows[0][0] if rows else None
            time.sleep(0.01)
        assert cid is not None, "the claim never blocked at %s" % block
        if block == "insert":
            assert stack.sql("SELECT free_issued FROM events WHERE id=%s",
                             [event])[0][0] == 0   # not visible: uncommitted
        stack.sql("KILL %s %d" % (kill, cid))
        t_kill = time.monotonic()
        t.join(20)
        assert not t.is_alive(), "the claim did not answer"
        free = wait_no_locks(stack, 5.0)
        t_free = time.monotonic() - t_kill
        assert free == [], free
        cur.execute("ROLLBACK")
    finally:
        holder.close()
    return out[0], t_free


@pytest.mark.parametrize("kill", ["CONNECTION", "QUERY"])
@pytest.mark.parametrize("block", ["seat", "insert"])
def test_row2_connection_killed_mid_claim(stack, block, kill):
    stack.make_user(42)
    stack.make_event(7, quota=5)
    a, t_free = _block_and_kill(stack, 42, 7, block, kill)
    _assert_503_unavailable(a)
    # nothing half-written: no row, the counted seat rolled back
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 0
    assert stack.sql("SELECT free_issued FROM events WHERE id=7")[0][0] == 0
    # the retry is served, by whichever worker
    r = send(stack.url, "POST", path(7), stack.token(42), 42, 7)
    assert r.status == 201, r
    r = send(stack.url, "POST", path(7), stack.token(42), 42, 7)
    assert r.status == 200, r
    record("2 kill mid-claim", **{"%s_%s_answer" % (block, kill.lower()):
                                  "%d %s" % (a.status, a.error),
                                  "%s_%s_lock_free_s" % (block, kill.lower()): t_free})


def test_row2_lock_holders_killed_at_random(stack):
    """A killer KILLs whichever app session holds a user lock, every 20 ms,
    while 100 clients claim 600 pairs: each kill lands somewhere between
    GET_LOCK and RELEASE_LOCK (the seat, the insert, COMMIT). Every answer
    is true, every pair ends with one ticket, nothing half-written."""
    users = list(range(30000, 30300))
    stack.make_users(users)
    stack.make_event(7)
    stack.make_event(8, quota=250)
    pairs = [(u, e) for u in users for e in (7, 8)]
    stop = threading.Event()
    kills = []

    def killer():
        while not stop.wait(0.02):
            try:
                rows = stack.sql(
                    "SELECT THREAD_ID FROM information_schema.METADATA_LOCK_INFO "
                    "WHERE LOCK_TYPE = 'User lock' AND TABLE_SCHEMA LIKE "
                    "'tickets:user:%%'")
                for (cid,) in rows[:2]:
                    try:
                        stack.sql("KILL CONNECTION %d" % cid)
                        kills.append(cid)
                    except Exception:  # noqa: BLE001 - ended meanwhile
                        pass
            except Exception:  # noqa: BLE001 - keep killing
                pass

    kt = threading.Thread(target=killer, daemon=True)
    st = Storm(stack, pairs, threads=100, duration=60 * SLOW, backoff=0.05)
    kt.start()
    try:
        st.start().join(extra=30)
    finally:
        stop.set()
        kt.join(10)
    created, lost, _ = check_quota_storm(stack, st, pairs, 8, 250, 5.0)
    n503 = sum(1 for a in st.answers if a.status == 503)
    record("2 kill mid-claim", random_kills=len(kills), random_answers=len(st.answers),
           random_503=n503, random_created=created, random_lost_answers=lost)
    assert kills, "the killer never found a lock holder"


# ---------------------------------------------------------------------------
# row 5: a hung database (a table locked by another session)

DB_TIMEOUT_ENV = {"TICKETS_DB_TIMEOUT": "1"}   # read timeout: 1 + 1 = 2 s


def _hang(stack, how, users, event, extra_get=True):
    """Lock what a claim needs from a root session (`how`: "table" = LOCK
    TABLES events WRITE, a metadata lock; "row" = the event row FOR UPDATE,
    after GET_LOCK), send one claim per user at once (more than the pool),
    keep sampling the app's server sessions, release. Returns (answers,
    max sessions, health answers during the hang)."""
    holder = stack.db()
    answers, health = [], []
    peak = [0]
    try:
        cur = holder.cursor()
        if how == "table":
            cur.execute("LOCK TABLES events WRITE")
        else:
            cur.execute("START TRANSACTION")
            cur.execute("SELECT * FROM events WHERE id=%s FOR UPDATE", [event])
        lock = threading.Lock()

        def one(u):
            a = send(stack.url, "POST", path(event), stack.token(u), u, event,
                     timeout=30)
            with lock:
                answers.append(a)

        ts = [threading.Thread(target=one, args=(u,), daemon=True) for u in users]
        for t in ts:
            t.start()
        end = time.monotonic() + 20 * SLOW
        while any(t.is_alive() for t in ts) and time.monotonic() < end:
            peak[0] = max(peak[0], len(app_sessions(stack)))
            if extra_get and len(health) < 5:
                health.append(send(stack.internal_url, "GET", "/api/health",
                                   timeout=30))
            time.sleep(0.05)
        for t in ts:
            t.join(max(0.1, end - time.monotonic()))
        assert not any(t.is_alive() for t in ts), "claims still waiting"
        peak[0] = max(peak[0], len(app_sessions(stack)))
        held_at_answer = held_ticket_locks(stack)
        if how == "table":
            cur.execute("UNLOCK TABLES")
        else:
            cur.execute("ROLLBACK")
    finally:
        holder.close()
    return answers, peak[0], health, held_at_answer


@pytest.mark.parametrize("how", ["table", "row"])
def test_row5_hung_database_answers_503_within_the_db_timeout(stack, how):
    """TICKETS_DB_TIMEOUT=1 (read timeout 2 s). 40 claims at once (16
    worker threads) against a locked table or row: each is answered 503
    unavailable, none later than its wait for a thread plus the read
    timeout; the app never has more server sessions than worker threads
    (no pile-up of abandoned queries), no named lock outlives its claim,
    and everything is served at once when the lock goes."""
    stack.restart_apps(env=DB_TIMEOUT_ENV)
    end = time.monotonic() + 5 * SLOW
    while len(app_sessions(stack)) > 2 * THREADS and time.monotonic() < end:
        time.sleep(0.05)   # the stopped instances' sessions are going
    users = list(range(40000, 40040))
    stack.make_users(users)
    stack.make_event(7)
    t0 = time.monotonic()
    answers, peak, health, held = _hang(stack, how, users, 7)
    took = time.monotonic() - t0
    assert_truthful(answers, allow=(503,), busy_ok=True)
    assert all(a.error == "unavailable" for a in answers), \
        collections.Counter(a.error for a in answers)
    # 40 claims over 16 threads: at most three rounds of one read timeout
    worst = max(a.elapsed for a in answers)
    assert worst < (3 * 2.0 + 2.0) * SLOW, sorted(a.elapsed for a in answers)[-5:]
    assert peak <= 2 * THREADS, "%d server sessions for %d worker threads " \
                                "(abandoned queries pile up)" % (peak, 2 * THREADS)
    # the named locks of abandoned claims are gone (the server gave up too)
    free = wait_no_locks(stack, 1.5 * SLOW)
    assert free == [], "named locks held after the claims were answered: %s" % free
    # nothing written, and served at once afterwards
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 0
    t1 = time.monotonic()
    r = [send(stack.url, "POST", path(7), stack.token(u), u, 7) for u in users[:5]]
    assert [a.status for a in r] == [201] * 5, r
    record("5 hung db", **{
        how + "_claims": len(answers),
        how + "_answer_p50_s": pct([a.elapsed for a in answers], 50),
        how + "_answer_max_s": worst,
        how + "_peak_sessions": peak,
        how + "_locks_held_at_last_answer": len(held),
        how + "_health_max_s": max((a.elapsed for a in health), default=0.0),
        how + "_served_after_s": time.monotonic() - t1,
        "total_s_" + how: took})
