"""Past one database, for real: three MariaDB Galera nodes (Debian's
galera-4), HAProxy in front with deploy/haproxy/tickets-galera.cfg, three
app hosts and nginx, each a host in its own network namespace
(tests/galera/galera.py on tests/cluster/cluster.py).

    tests/galera/run.sh            (root; make test-galera; installs galera-4,
                                    haproxy, rsync when missing)

In order, on one cluster:
1. storms through the one writer: one user's clicks on every app host, a
   quota across many users, a mixed storm;
2. the writer SIGKILLed mid-storm: HAProxy fails over to a backup; then
   the old writer restarted: it rejoins by IST, HAProxy fails back and cuts
   the backup's sessions, so writes come from one node again;
3. the writer's replication link cut mid-storm: it leaves the Primary
   Component, HAProxy's readiness check takes it out, the others go on;
   the link back: it rejoins (IST) and takes the writes again; then the
   same with both of its links cut;
4. every node a writer (each app host on its own node): the 503 rate of a
   contended event; one node cut off: its app host's /api/health says 503,
   its claims 503 with Retry-After, and it reconnects at the paced rate.
After each: on every node, once synced, at most one row per pair, every 201
has its row and code, free_issued = rows <= quota, no named lock held; the
answers are 200/201/4xx, or 503 with Retry-After.  Measured times are
printed (pytest -s) and written to the run directory (TICKETS_KEEP=1).
"""

import collections
import concurrent.futures
import json
import os
import re
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from galera import GaleraCluster, HAPROXY_CFG  # noqa: E402
from cluster import enter_netns, module_fixture, netns_usable  # noqa: E402
from harness import fcgi_request  # noqa: E402

RESULTS = {}


@pytest.fixture(scope="module")
def gc(request):
    why = netns_usable()
    if why:
        pytest.fail("galera test needs network namespaces: %s" % why)
    c = GaleraCluster(apps=3, nodes=3, app_env={"TICKETS_THREADS": "4"})

    def banner(c):
        RESULTS["startup_s"] = round(c.timings["total"], 1)
        return ("\ngalera: 3 nodes, haproxy %s:3306, 3 app hosts; up in %.1f s; "
                "files in %s\n" % (c.ip["lb"], c.timings["total"], c.dir))

    def results(c):
        with open(c.path("results.json"), "w") as f:
            json.dump(RESULTS, f, indent=2, sort_keys=True)
        sys.stderr.write("\ngalera results:\n%s\n" % json.dumps(
            RESULTS, indent=2, sort_keys=True))
    yield from module_fixture(request, c, banner, results)


# ---------------------------------------------------------------------------
# helpers

NEXT_ID = [1000]


def ids(n):
    first = NEXT_ID[0]
    NEXT_ID[0] += n
    return list(range(first, first + n))


def run_all(c, tokens, tasks, workers=32):
    with c.client_pool(workers) as ex:
        return list(ex.map(lambda t: c.claim(tokens[t[0]], *t), tasks))


def fresh_storm(c, events, make_events=True):
    """3000 fresh users and a Storm of theirs started over events ({id:
    quota}), made first unless make_events is false."""
    users = ids(3000)
    c.make_users(users)
    for e, q in events.items() if make_events else ():
        c.make_event(e, quota=q)
    return Storm(c, list(events), users).start()


class Storm(object):
    """Clients claiming in the background until stop(): fresh users,
    each user's claim sent 3 times at once, over the given events."""

    def __init__(self, c, events, users, clients=16):
        self.c, self.events, self.clients = c, events, clients
        self.tokens = {u: c.token(u) for u in users}
        self.queue = collections.deque(
            (u, e) for u in users for e in events for _ in range(3))
        self.lock = threading.Lock()
        self.outcomes = []
        self.stopping = False

    def _next(self):
        with self.lock:
            return self.queue.popleft() if self.queue else None

    def _client(self):
        enter_netns(self.c.ns["fe"])
        mine = []
        while not self.stopping:
            t = self._next()
            if t is None:
                break
            mine.append(self.c.claim(self.tokens[t[0]], *t))
            time.sleep(0.01)         # a storm that lasts through the fault
        with self.lock:
            self.outcomes.extend(mine)

    def start(self):
        self.threads = [threading.Thread(target=self._client)
                        for _ in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join()
        return self.outcomes


def check_answers(outcomes):
    """Only 200/201/4xx, or 503 with Retry-After; no failed request."""
    bad = collections.Counter(
        o.kind() for o in outcomes
        if o.transport or not (o.status in (200, 201) or 400 <= o.status < 500
                         or (o.status == 503 and (o.retry_after or "").isdigit())))
    assert not bad, "answers outside the contract: %s" % dict(bad)
    wrong = [o for o in outcomes if o.wrong_ticket()]
    assert not wrong, "tickets of another pair: %s" % wrong[:5]


def check_tickets(c, outcomes, quotas):
    """On every node: the invariants; every 201 has its row and code; at
    most one 201 per pair; the answers' codes are the row's."""
    problems = c.invariant_problems_all()
    assert not problems, problems
    events = sorted({o.event for o in outcomes})
    for n in range(1, c.nnodes + 1):
        conn = c.node_conn(n)
        try:
            cur = conn.cursor()
            cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute("SELECT user_id, event_id, code FROM free_tickets "
                        "WHERE event_id IN (%s)" % ",".join(map(str, events)))
            codes = {(int(u), int(e)): code for u, e, code in cur.fetchall()}
        finally:
            conn.close()
        created = collections.Counter((o.user, o.event) for o in outcomes
                                      if o.status == 201)
        assert all(k == 1 for k in created.values()), \
            "node %d: a pair created twice: %s" % (n, [p for p, k in created.items() if k > 1])
        for o in outcomes:
            if o.status in (200, 201):
                assert codes.get((o.user, o.event)) == o.code, \
                    "node %d: %s answered %s %s, row %s" % (
                        n, (o.user, o.event), o.status, o.code,
                        codes.get((o.user, o.event)))
        for e in events:
            q = quotas.get(e)
            rows = sum(1 for (_, ev) in codes if ev == e)
            if q is not None:
                assert rows <= q, (n, e, rows, q)


def summary(outcomes, t_event=None):
    kinds = collections.Counter(o.kind() for o in outcomes)
    out = {"requests": len(outcomes), "answers": dict(kinds)}
    if t_event is not None:
        after = sorted(o.t1 for o in outcomes if o.t1 >= t_event
                       and o.status in (200, 201))
        out["first_2xx_after_s"] = round(after[0] - t_event, 2) if after else None
        # the longest time after the event without any 2xx answer
        done = [t_event] + after
        gaps = [b - a for a, b in zip(done, done[1:])]
        out["longest_no_2xx_s"] = round(max(gaps), 2) if gaps else None
    return out


def sessions_of_app(c, n):
    """The app's sessions on node n (through the balancer: from its address)."""
    return c.sql_on(n, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                       "WHERE USER = 'tickets'")[0][0]


def app_get(c, i, path):
    """GET path straight from app host i (FastCGI, from the front host)."""
    return c.instances[i - 1].request("GET", path, timeout=5)


def app_metric(c, i, name):
    out = app_get(c, i, "/metrics").body
    m = re.search(rb"^%s (\d+)" % re.escape(name.encode()), out, re.M)
    return int(m.group(1)) if m else None


def wait_until(what, fn, timeout):
    t0 = time.monotonic()
    while True:
        v = fn()
        if v:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError("%s: not within %d s" % (what, timeout))
        time.sleep(0.1)


# ---------------------------------------------------------------------------

def test_shipped_haproxy_check_is_the_documented_query():
    """The hex of deploy/haproxy/tickets-galera.cfg is what its comment
    says: a protocol-4.1 login of haproxy_check without a password, the
    readiness query, COM_QUIT."""
    with open(HAPROXY_CFG) as f:
        cfg = f.read()
    sends = [bytes.fromhex(h) for h in re.findall(
        r"(?m)^\s*tcp-check send-binary ([0-9a-f]+)$", cfg)]
    assert len(sends) == 3
    for p in sends:
        assert int.from_bytes(p[:3], "little") == len(p) - 4
    login, query, quit_ = sends
    assert login[3] == 1 and b"haproxy_check\0\0" in login
    assert query[3] == 0 and query[4] == 3
    text = query[5:].decode()
    assert "'tickets_node_synced'" in text and "WSREP_LOCAL_STATE' AND " \
        "VARIABLE_VALUE = '4'" in text and "WSREP_READY' AND VARIABLE_VALUE = " \
        "'ON'" in text, text
    assert quit_ == bytes.fromhex("0100000001")
    assert "expect string tickets_node_synced" in cfg
    assert "on-marked-down shutdown-sessions" in cfg
    assert "on-marked-up shutdown-backup-sessions" in cfg


def test_storms_through_one_writer(gc):
    c = gc
    assert c.haproxy_servers() == {"node1": "UP", "node2": "UP", "node3": "UP"}
    for i in range(1, c.napps + 1):
        status = app_get(c, i, "/api/health").status
        assert status == 200
    # one user's clicks, on every app host at once
    (u1,) = ids(1)
    e_one, e_quota, e_mixed = 1, 2, 3
    users = ids(60)
    c.make_users([u1] + users)
    c.make_event(e_one)
    c.make_event(e_quota, quota=20)
    c.make_event(e_mixed, quota=30)
    tokens = {u: c.token(u) for u in [u1] + users}
    quotas = {e_quota: 20, e_mixed: 30}
    t0 = time.monotonic()
    marks = c.log_sizes()
    one = run_all(c, tokens, [(u1, e_one)] * 60)
    one_per_host = {i: sum(1 for o in c.app_requests(i, marks[i])
                           if o.get("method") == "POST")
                    for i in range(1, c.napps + 1)}
    quota = run_all(c, tokens, [(u, e_quota) for u in users for _ in range(2)])
    mixed = run_all(c, tokens, [(u, e) for u in users[:40]
                                for e in (e_one, e_mixed) for _ in range(2)])
    RESULTS["storms_one_writer"] = {
        "seconds": round(time.monotonic() - t0, 1),
        "one_user": summary(one), "one_user_claims_per_app_host": one_per_host,
        "quota": summary(quota),
        "mixed": summary(mixed)}
    allo = one + quota + mixed
    check_answers(allo)
    # one writer, no conflicts: nothing but truthful answers
    assert all(o.status in (200, 201, 409) for o in allo), \
        collections.Counter(o.kind() for o in allo)
    assert sum(o.status == 201 for o in one) == 1
    # one user's clicks reached every app host: the lock and the key were
    # tested across hosts
    assert all(n > 0 for n in one_per_host.values()), one_per_host
    assert sum(o.status == 201 for o in quota) == 20
    check_tickets(c, allo, quotas)
    # the writes were node 1's: the backups had no client session
    assert sessions_of_app(c, 2) == 0 and sessions_of_app(c, 3) == 0


def test_writer_killed_then_rejoins_by_ist(gc):
    c = gc
    events = {11: None, 12: 150}
    storm = fresh_storm(c, events)
    time.sleep(2.0)
    t_kill = time.monotonic()
    c.kill_node(1)
    down_s = c.wait_haproxy({"node1": "DOWN"}, 20)
    time.sleep(10.0)                 # Galera evicts node 1, node 2 writes
    outcomes = storm.stop()
    kill = summary(outcomes, t_kill)
    kill["haproxy_marked_down_s"] = round(down_s, 2)
    check_answers(outcomes)
    assert kill["first_2xx_after_s"] is not None, kill

    # the old writer comes back: IST from the others' gcache, not a full SST
    err_mark = os.path.getsize(c.node_err(1))
    # fresh users during the rejoin (ticket answers of the first storm's
    # pairs would all be 200s)
    storm2 = fresh_storm(c, events, make_events=False)
    t_start = time.monotonic()
    c.start_node(1, timeout=90)
    synced_s = time.monotonic() - t_start
    up_s = c.wait_haproxy({"node1": "UP"}, 30) + synced_s
    time.sleep(3.0)
    outcomes2 = storm2.stop()
    with open(c.node_err(1)) as f:
        f.seek(err_mark)
        log = f.read()
    ist = "IST received" in log
    sst = "rsync SST completed on joiner" in log
    back = summary(outcomes2, t_start)
    back.update({"rejoin_synced_s": round(synced_s, 2),
                 "haproxy_marked_up_s": round(up_s, 2), "ist": ist, "sst": sst})
    RESULTS["writer_sigkill"] = kill
    RESULTS["writer_rejoin_ist"] = back
    check_answers(outcomes2)
    assert ist and not sst, "node 1 did not rejoin by IST"
    # fail-back: the backup's sessions were cut, every session on node 1
    wait_until("the backup's sessions cut after fail-back",
               lambda: sessions_of_app(c, 2) == 0 and sessions_of_app(c, 3) == 0,
               10)
    check_tickets(c, outcomes + outcomes2, events)


def writer_partition(c, name, events, cut, restore, unready):
    """A storm; node 1 (the writer) cut off by cut(1) 2 s in, back by
    restore(1) once HAProxy has marked it down and unready() held for 4 s;
    node 1 rejoins (IST) and takes the writes again."""
    storm = fresh_storm(c, events)
    time.sleep(2.0)
    t_cut = time.monotonic()
    cut(1)
    try:
        down_s = c.wait_haproxy({"node1": "DOWN"}, 30)
        wait_until("node 1 cut off", unready, 30)
        time.sleep(4.0)
    finally:
        t_back = time.monotonic()
        restore(1)
    c.wait_synced(1, 60)
    up_s = c.wait_haproxy({"node1": "UP"}, 30)
    back_s = time.monotonic() - t_back
    time.sleep(2.0)
    outcomes = storm.stop()
    s = summary(outcomes, t_cut)
    s.update({"haproxy_marked_down_s": round(down_s, 2),
              "cut_s": round(t_back - t_cut, 2),
              "rejoined_and_marked_up_s": round(back_s, 2),
              "haproxy_up_after_synced_s": round(up_s, 2)})
    RESULTS[name] = s
    check_answers(outcomes)
    assert s["first_2xx_after_s"] is not None
    wait_until("the backup's sessions cut after fail-back",
               lambda: sessions_of_app(c, 2) == 0 and sessions_of_app(c, 3) == 0,
               10)
    check_tickets(c, outcomes, events)


def test_writer_replication_cut_then_back(gc):
    """Node 1 loses the other nodes but not its clients: it leaves the
    Primary Component (1047 to every query) and HAProxy's readiness check,
    not a dead port, takes it out."""
    writer_partition(
        gc, "writer_replication_link_cut", {21: None, 22: 150},
        gc.cut_replication, gc.restore_replication,
        lambda: (gc.node_state(1) or "PPPP")[3] != "Primary")


def test_writer_link_cut_then_back(gc):
    """Node 1's cables all out: nobody reaches it, it reaches nobody."""
    writer_partition(
        gc, "writer_whole_link_cut", {23: None, 24: 150},
        gc.cut_links, gc.restore_links,
        lambda: int(gc.wsrep(2).get("wsrep_cluster_size", 0)) == 2)


def test_every_node_a_writer_and_one_cut_off(gc):
    """Each app host on its own node.  The contended event's 503 rate is
    measured (the named lock is per node; certification conflicts on the
    event's row are retried with backoff).  Then node 3 is cut off: app
    host 3's health says 503 while its node refuses (1047), its reads are
    503 with Retry-After, and it does not open a connection per request."""
    c = gc
    c.direct_db = {i: c.ip["g%d" % i] for i in range(1, c.napps + 1)}
    try:
        c.restart_apps()
        e_hot, e_pair = 31, 32
        users = ids(150)
        (u_pair,) = ids(1)
        c.make_users(users + [u_pair])
        c.make_event(e_hot)
        c.make_event(e_pair)
        tokens = {u: c.token(u) for u in users + [u_pair]}
        hot = run_all(c, tokens, [(u, e_hot) for u in users for _ in range(2)])
        pair = run_all(c, tokens, [(u_pair, e_pair)] * 90)
        check_answers(hot + pair)
        n503 = sum(o.status == 503 for o in hot)
        retries = {i: app_metric(c, i, "tickets_db_transaction_retries_total")
                   for i in range(1, c.napps + 1)}
        RESULTS["multi_writer"] = {
            "contended_event": summary(hot),
            "contended_event_503_rate": round(n503 / len(hot), 3),
            "same_pair": summary(pair),
            "same_pair_503_rate": round(
                sum(o.status == 503 for o in pair) / len(pair), 3),
            "tx_retries_per_app": retries}
        check_tickets(c, hot + pair, {})
        assert sum(o.status == 201 for o in pair) <= 1

        # node 3 cut off from the others; app host 3 still reaches it
        c.cut_replication(3)
        t_cut = time.monotonic()
        try:
            wait_until("node 3 outside the Primary Component",
                       lambda: (c.node_state(3) or "PPPP")[3] != "Primary", 30)
            # counted from here: the polling above opened connections too
            conns0 = int(c.status(3, "Connections")["connections"])
            rec0 = app_metric(c, 3, "tickets_db_reconnects_total")
            t_unready = time.monotonic()

            # 8 clients straight at app host 3 for 4 s: health, events,
            # and claims (through FastCGI: nginx would route around it)
            def hammer(k):
                enter_netns(c.ns["fe"])
                got = []
                while time.monotonic() - t_unready < 4.0:
                    path = ("/api/health", "/api/events")[k % 2]
                    r = fcgi_request(c.instances[2].socket, "GET", path, timeout=5)
                    got.append((path, r.status, "retry-after" in r.headers))
                return got
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                answers = [a for r in ex.map(hammer, range(8)) for a in r]
            health = [(st, ra) for p_, st, ra in answers if p_ == "/api/health"]
            claims = [(st, ra) for p_, st, ra in answers if p_ != "/api/health"]
            t_end = time.monotonic()
            conns = int(c.status(3, "Connections")["connections"]) - conns0
            rec = app_metric(c, 3, "tickets_db_reconnects_total")
        finally:
            c.restore_replication(3)
        c.wait_synced(3, 60)
        h_after = wait_until("app host 3 healthy again",
                             lambda: app_get(c, 3, "/api/health").status == 200, 30)
        unready_s = t_end - t_unready
        RESULTS["multi_writer_node_cut_off"] = {
            "node_unready_after_cut_s": round(t_unready - t_cut, 2),
            "requests_to_app3_while_unready": len(answers),
            "health_statuses": dict(collections.Counter(s for s, _ in health)),
            "events_statuses": dict(collections.Counter(s for s, _ in claims)),
            "connections_opened_to_node3": conns,
            "app3_reconnects_metric": (rec - rec0) if rec is not None and rec0 is not None else None,
            "seconds": round(unready_s, 2),
            "health_200_again_after_rejoin_s": round(h_after, 2)}
        # readiness: never 200 while the node refuses work
        assert health and all(s == 503 for s, _ in health), \
            collections.Counter(s for s, _ in health)
        assert claims and all(s == 503 and ra for s, ra in claims), \
            collections.Counter(claims)
        # paced: at most one connect per worker per pause (0.5 s), and then
        # some slack; not one per request
        threads = 4
        limit = threads * (unready_s / 0.5 + 2) + 10
        assert conns <= limit, (conns, limit, len(answers))
        assert rec is not None and rec - rec0 <= limit, (rec, rec0, limit)
        check_tickets(c, hot + pair, {})
    finally:
        c.direct_db = {}
        c.restart_apps()
