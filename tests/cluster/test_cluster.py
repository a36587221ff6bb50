"""Several hosts, for real: three app hosts, one database host and nginx,
each in its own network namespace on a bridge (tests/cluster/cluster.py).

    /usr/bin/python3 -m pytest -q tests/cluster          (root; make test-cluster)
    TICKETS_KEEP=1 ...      keep the run directory (logs, configs)

1. A storm of concurrent claims by the same users through nginx lands on
   every app host and still yields exactly one ticket per (user, event), a
   quota that holds across hosts, and free_issued = rows.
2. One app host's link goes down in the middle of a storm and comes back:
   nginx routes around it; claims that were in flight may fail at the
   client (counted), the database stays consistent, every pair that was
   tried has at most one ticket, a ticket whose 201 never reached its client
   is one whose claim failed at the client, a retry of every pair answers
   truthfully, and after the link is back the host serves again.

Each test prints a summary (pytest -s shows it; it is also written to
summary-*.json in the run directory when the run is kept).
"""

import collections
import json
import os
import random
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster import Cluster, module_fixture, netns_usable  # noqa: E402



@pytest.fixture(scope="module")
def cluster(request):
    why = netns_usable()
    if why:
        if os.environ.get("TICKETS_CLUSTER_REQUIRED") == "1":
            pytest.fail("cluster test required but impossible here: %s" % why)
        pytest.skip("cluster test needs network namespaces: %s" % why)
    # 4 worker threads per app host: enough for the storms, and it bounds
    # how many claims a cut-off host can have queued on one event's row
    # (see test_link_down_mid_storm_idle_transaction_timeout)
    c = Cluster(apps=3, app_env={"TICKETS_THREADS": "4"})
    yield from module_fixture(request, c, lambda c: (
        "\ncluster: 3 app hosts %s, database %s:3306, nginx in %s; up in "
        "%.1f s; files in %s\n" % (c.app_addrs, c.ip["db"], c.ns["fe"],
                                  c.timings["total"], c.dir)))


# ---------------------------------------------------------------------------
# helpers

def claims_per_host(c, marks, lo=None, hi=None):
    """Per app host, participation POSTs logged since marks (app log
    offsets), optionally only those with ts in [lo, hi] (ISO strings)."""
    out = {}
    for i in range(1, c.napps + 1):
        n = 0
        for o in c.app_requests(i, marks[i]):
            if o.get("method") != "POST" or not o["path"].endswith("/participation"):
                continue
            if lo and o["ts"] < lo or hi and o["ts"] > hi:
                continue
            n += 1
        out[i] = n
    return out


def iso_now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % (
        int((t % 1) * 1e6))


def db_codes(c, events):
    return {(int(u), int(e)): code for u, e, code in c.sql(
        "SELECT user_id, event_id, code FROM free_tickets WHERE event_id IN (%s)"
        % ",".join(str(int(e)) for e in events))}


def report(c, name, summary):
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    sys.stderr.write("\n%s:\n%s\n" % (name, text))
    with open(c.path("summary-%s.json" % name), "w") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------------------

def test_storm_lands_on_every_host_and_one_ticket_each(cluster):
    c = cluster
    users = list(range(1, 41))
    events = {1: None, 2: None, 3: 15}          # event -> quota
    c.make_users(users)
    for e, q in events.items():
        c.make_event(e, quota=q)
    tokens = {u: c.token(u) for u in users}
    repeats = 5
    tasks = [(u, e) for u in users for e in events for _ in range(repeats)]
    random.Random(5).shuffle(tasks)
    marks = c.log_sizes()
    t0 = time.monotonic()
    with c.client_pool(48) as ex:
        outcomes = list(ex.map(lambda t: c.claim(tokens[t[0]], *t), tasks))
    elapsed = time.monotonic() - t0

    kinds = collections.Counter(o.kind() for o in outcomes)
    per_host = claims_per_host(c, marks)
    created_per_host = {
        i: sum(1 for o in c.app_requests(i, marks[i])
               if o.get("outcome") == "created") for i in per_host}
    # which hosts served each user (request log lines carry the user id)
    hosts_of_user = collections.defaultdict(set)
    for i in per_host:
        for o in c.app_requests(i, marks[i]):
            if "user_id" in o:
                hosts_of_user[o["user_id"]].add(i)
    rows = dict((int(e), int(n)) for e, n in c.sql(
        "SELECT event_id, COUNT(*) FROM free_tickets GROUP BY event_id"))
    report(c, "storm", {
        "requests": len(tasks), "seconds": round(elapsed, 2),
        "answers": dict(kinds), "claims_logged_per_host": per_host,
        "tickets_created_per_host": created_per_host,
        "users_served_by_2+_hosts": sum(1 for s in hosts_of_user.values() if len(s) > 1),
        "rows_per_event": rows})

    # every answer is a truthful one: no 5xx, no error
    bad = [o.kind() for o in outcomes if not o.ok]
    assert not bad, "unexpected answers: %s" % collections.Counter(bad)
    wrong = [o for o in outcomes if o.wrong_ticket()]
    assert not wrong, "tickets of another pair, or created wrong: %s" % wrong[:5]
    # the storm landed on every host, each a fair share
    assert sum(per_host.values()) == len(tasks), per_host
    for i, n in per_host.items():
        assert n >= len(tasks) // 10, "app host %d got %d of %d claims" % (
            i, n, len(tasks))
    # the same users were served by several hosts at once: the lock and the
    # key were tested across hosts, not within one
    assert sum(1 for s in hosts_of_user.values() if len(s) == 3) >= len(users) // 2
    # exactly one ticket per (user, event); the quota holds across hosts
    by_pair = collections.defaultdict(list)
    for o in outcomes:
        by_pair[(o.user, o.event)].append(o)
    codes = db_codes(c, events)
    for (u, e), os_ in by_pair.items():
        created = [o for o in os_ if o.status == 201]
        if (u, e) in codes:
            assert len(created) == 1, (u, e, [o.kind() for o in os_])
            assert all(o.code == codes[(u, e)] for o in os_), (u, e)
        else:
            assert events[e] is not None and not created, (u, e)
            assert all(o.status == 409 and o.error == "sold_out" for o in os_)
    for e, q in events.items():
        assert rows.get(e, 0) == (len(users) if q is None else q), (e, rows)
    problems = c.invariant_problems()
    assert not problems, problems


def link_down_storm(c, name, users, events, victim=2, before_down=3.0,
                    down_for=6.0, after_up=4.0, clients=32, hold_row=None):
    """A storm of fresh claims through nginx; app host victim's link goes
    down before_down seconds in, comes back down_for seconds later, the
    storm goes on for after_up seconds more. Then every pair that was tried
    is claimed once more. Checks what must hold whatever the database's
    settings; returns the summary (also printed) for the caller's checks.

    hold_row: an event id whose row the test itself locks for HOLD_S before
    the cut and lets go right after it, so that claims of the victim are
    certainly waiting for that row when its link goes down (without it, the
    victim has a claim transaction open at the cut in about 3 runs of 4)."""
    c.make_users(users)
    for e, q in events.items():
        c.make_event(e, quota=q)
    tokens = {u: c.token(u) for u in users}

    # Fresh pairs all the time: batches of 6 users x every event x 3
    # concurrent copies, shuffled within the batch, so that tickets are being
    # created (and the same user's claims race) when the link goes down.
    lock = threading.Lock()
    source = iter(users)
    queue = collections.deque()
    rnd = random.Random(name)

    def next_task():
        with lock:
            if not queue:
                batch = [u for _, u in zip(range(6), source)]
                if not batch:
                    return None
                b = [(u, e) for u in batch for e in events for _ in range(3)]
                rnd.shuffle(b)
                queue.extend(b)
            return queue.popleft()

    stop_at = [None]
    outcomes = []
    out_lock = threading.Lock()

    def client():
        mine = []
        while time.monotonic() < stop_at[0]:
            t = next_task()
            if t is None:
                break
            mine.append(c.claim(tokens[t[0]], *t))
        with out_lock:
            outcomes.extend(mine)

    marks0 = c.log_sizes()
    nginx0 = c.nginx_log_size()
    t0 = time.monotonic()
    stop_at[0] = t0 + before_down + down_for + after_up
    with c.client_pool(clients) as ex:
        futures = [ex.submit(client) for _ in range(clients)]
        holder, queued = None, None
        try:
            if hold_row is None:
                time.sleep(before_down)
            else:
                time.sleep(before_down - HOLD_S)
                holder = c.root_conn()
                holder.cursor().execute("START TRANSACTION")
                holder.cursor().execute(
                    "SELECT id FROM events WHERE id = %s FOR UPDATE", (hold_row,))
                # until a claim of the cut-off host waits for the row (a
                # busy machine may take longer to get one there), then a
                # moment for others to join it
                end = time.monotonic() + HOLD_MAX_S
                time.sleep(HOLD_S)
                while (queued := victim_waiting(c, victim)) == 0 and \
                        time.monotonic() < end:
                    time.sleep(0.05)
                if queued:
                    time.sleep(0.2)
                    queued = victim_waiting(c, victim)
            t_down, iso_down = time.monotonic(), iso_now()
            stop_at[0] = t_down + down_for + after_up  # the hold may be late
            c.link_down(victim)
            if holder is not None:
                holder.commit()
                holder.close()
                holder = None
            time.sleep(down_for)
        finally:
            if holder is not None:      # failed before the cut: let go
                holder.close()
            t_up, iso_up = time.monotonic(), iso_now()
            c.link_up(victim)
        for f in futures:
            f.result()
    t_end = time.monotonic()
    assert outcomes, "no request was made"

    def phase(o):
        return ("before" if o.t0 < t_down else
                "down" if o.t0 < t_up else "after")
    kinds = collections.defaultdict(collections.Counter)
    for o in outcomes:
        kinds[phase(o)][o.kind()] += 1
    ok_after_up = sum(1 for o in outcomes if o.ok and o.t1 > t_up)
    # answers completed while the link was down, by second since it went down
    ok_by_second = collections.Counter(
        int(o.t1 - t_down) for o in outcomes
        if o.ok and t_down <= o.t1 < t_up)
    # the longest stretch without any answer to any client, and when
    done = sorted(o.t1 for o in outcomes)
    gaps = [(b - a, a - t_down) for a, b in zip(done, done[1:])]
    longest_gap = max(gaps) if gaps else (0, 0)
    served_while_down = claims_per_host(c, marks0, iso_down, iso_up)
    nginx = c.nginx_log(nginx0)
    rerouted = [r for r in nginx if "," in r.get("upstream_addr", "")]
    slowest = max(o.t1 - o.t0 for o in outcomes)

    # The host is back: new claims land on it again (nginx tries it again
    # after fail_timeout), and every pair that was tried, claimed once more,
    # answers truthfully.
    c.wait_app(victim, timeout=30)
    time.sleep(2.5)                      # fail_timeout=2s of the upstream
    marks1 = c.log_sizes()
    tried = sorted({(o.user, o.event) for o in outcomes})
    with c.client_pool(clients) as ex:
        retries = list(ex.map(lambda t: c.claim(tokens[t[0]], *t), tried))
    back = claims_per_host(c, marks1)
    retry_kinds = collections.Counter(o.kind() for o in retries)

    codes = db_codes(c, events)
    rows = collections.Counter(e for (_, e) in codes)
    by_pair = collections.defaultdict(list)
    for o in outcomes + retries:
        by_pair[(o.user, o.event)].append(o)
    lost_201 = [p for p in codes
                if not any(o.status == 201 for o in by_pair[p])]
    first_201_on_retry = [p for p in codes
                          if any(o.status == 201 for o in retries
                                 if (o.user, o.event) == p)]
    app_503 = {i: collections.Counter(
        o.get("outcome") or str(o.get("status"))
        for o in c.app_requests(i, marks0[i]) if o.get("status") == 503)
        for i in range(1, c.napps + 1)}
    summary = {
        "link_down_host": "%d (%s)" % (victim, c.app_addrs[victim - 1]),
        "victim_claims_waiting_for_the_held_row_at_cut": queued,
        "seconds": {"before": before_down, "down": down_for,
                    "after": after_up, "storm_total": round(t_end - t0, 2)},
        "requests": len(outcomes), "pairs_tried": len(tried),
        "answers_by_phase_sent": {k: dict(v) for k, v in kinds.items()},
        "ok_answers_while_down_by_second": dict(sorted(ok_by_second.items())),
        "ok_answers_after_link_up": ok_after_up,
        "longest_time_without_any_answer_s": round(longest_gap[0], 2),
        "  ...starting_s_after_link_down": round(longest_gap[1], 2),
        "claims_logged_per_host_while_down": served_while_down,
        "nginx_retried_on_next_host": len(rerouted),
        "slowest_request_s": round(slowest, 2),
        "app_503_by_host_and_outcome": {i: dict(v) for i, v in app_503.items()},
        "retry_of_every_pair": dict(retry_kinds),
        "claims_per_host_after_link_up": back,
        "tickets_whose_201_was_lost": len(lost_201),
        "pairs_whose_first_201_came_on_the_retry": len(first_201_on_retry),
        "rows_per_event": dict(rows),
    }
    report(c, name, summary)

    # what failed at the client failed as the API says (503), or timed out
    for o in outcomes:
        assert o.ok or o.status == 503 or o.transport, o.kind()
        assert not o.wrong_ticket(), o
    # after the link came back: the host serves again, every retry answers
    # truthfully (a ticket, the same one as in the database, or sold out)
    assert all(n > 0 for n in back.values()), back
    assert all(o.ok for o in retries), retry_kinds
    for p, os_ in by_pair.items():
        created = [o for o in os_ if o.status == 201]
        assert len(created) <= 1, (p, [o.kind() for o in os_])
        if p in codes:
            assert all(o.code == codes[p] for o in os_ if o.code), p
        else:
            # no ticket: only the quota can explain it
            assert events[p[1]] is not None, p
            assert rows[p[1]] == events[p[1]], (p, rows)
    # a ticket nobody was told about belongs to a claim that failed at the
    # client (its answer was lost with the link); the retry then said 200
    for p in lost_201:
        assert any(not o.ok for o in by_pair[p]), p
    # one ticket per user who tried, up to the quota
    for e, q in events.items():
        tried_users = {u for (u, ev) in tried if ev == e}
        expect = len(tried_users) if q is None else min(q, len(tried_users))
        assert rows[e] == expect, (e, rows[e], expect)
    problems = c.invariant_problems(settle=10.0)
    assert not problems, problems
    summary["_ok_by_second"] = ok_by_second
    summary["_served_while_down"] = served_while_down
    summary["_rerouted"] = len(rerouted)
    summary["_queued"] = queued
    return summary


HOLD_S = 0.5
# The longest the test holds the row before the cut. While it is held,
# each user's other claims wait for the user's named lock for
# TICKETS_LOCK_TIMEOUT (3 s here) before new users (and new chances of a
# claim of the cut-off host reaching the row) come: 4 s left room for one
# such wave only, and in about 1 run of 3 none of it was on that host.
HOLD_MAX_S = 10.0


def victim_waiting(c, victim):
    """How many of app host victim's sessions wait for a row lock now."""
    return c.sql(
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
        "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
        "WHERE t.trx_state = 'LOCK WAIT' AND p.HOST LIKE %s",
        (c.ip["a%d" % victim] + ":%",))[0][0]


def test_link_down_mid_storm_db_defaults(cluster):
    """The database as installed, the link cut wherever the storm is. A
    claim in flight on the cut-off host holds its event's row lock (and its
    user's named lock) on the server until the server drops the session
    (the app's idle_transaction_timeout on MariaDB; on a server without it,
    until the link comes back): claims of those events on the other hosts
    wait for it. So the cluster may stall, but nothing is lost or doubled,
    and it recovers by itself when the link is back."""
    s = link_down_storm(cluster, "link-down-db-defaults",
                        list(range(1001, 4001)), {11: None, 12: 400})
    # claims were answered again in the 4 s after the link came back
    assert s["ok_answers_after_link_up"] > 0


def test_link_down_mid_storm_idle_transaction_timeout(cluster):
    """idle_transaction_timeout (MariaDB; the app sets 2 s on each of its
    sessions): the server drops a session that sits idle inside a
    transaction, the cut-off host's among them, which rolls its claim back
    and frees its row and named locks. The other hosts go on serving during
    the outage; nginx routes new requests around the dead host.

    The test holds event 21's row for a moment before the cut, so that
    claims of the cut-off host are surely inside a transaction then (left
    to chance, in about 1 run of 4 none is, and there is nothing to drop).

    The stall is not one timeout long: the cut-off host's other claims of
    the same event wait on the server for that row; each gets it in turn,
    does its UPDATE, and then sits idle in its transaction, holding the row
    for another timeout. So it lasts up to (that host's claims queued on the
    row) x timeout, at most its worker threads (4 here) x 2 s."""
    c = cluster
    # Fresh database sessions on every host: the test before cut host 2's
    # link, and a worker whose session the server dropped meanwhile finds
    # out only when its next read times out (TICKETS_DB_TIMEOUT); with its
    # 4 workers busy so, none of its claims reached the held row.
    c.restart_apps()
    err_mark = os.path.getsize(c.path("mariadb.err"))
    s = link_down_storm(c, "link-down-idle-trx-timeout",
                        list(range(5001, 9001)), {21: None, 22: 400},
                        down_for=12.0, hold_row=21)
    # the server dropped sessions of the cut-off host
    with open(c.path("mariadb.err")) as f:
        f.seek(err_mark)
        dropped = [line for line in f if "Aborted connection" in line
                   and c.ip["a2"] in line]
    sys.stderr.write("sessions of the cut-off host dropped by the server: %d\n"
                     % len(dropped))
    # the test held event 21's row at the cut, so claims of the cut-off host
    # were waiting for it; each then gets the row, cannot finish, and must
    # be dropped by the server (else the row stays locked for the outage)
    assert s["_queued"] > 0, "no claim of the cut-off host waited at the cut"
    assert dropped, "no session of the cut-off host was dropped"
    # the healthy hosts answered claims again while the link was still down:
    # after at most 4 x 2 s of row-lock chain
    late = sum(n for sec, n in s["_ok_by_second"].items() if sec >= 9)
    assert late > 0, s["_ok_by_second"]
    for i in range(1, c.napps + 1):
        if i != 2:
            assert s["_served_while_down"][i] > 0, s["_served_while_down"]
    # requests that met the dead host went to another one
    assert s["_rerouted"] > 0
