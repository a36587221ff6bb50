"""Helpers of the fault tests: a bounded claim storm with a record of every
answer, the checks that the answers were truthful and the database
consistent, latency figures, and raw FastCGI records.

Standard library only (plus tests/harness through the fixtures)."""

import collections
import heapq
import os
import socket
import threading
import time

from harness import LOCK_PREFIX, claim_path as path, send  # noqa: F401


def _slow_factor():
    env = os.environ.get("TICKETS_TEST_SLOW")
    if env:
        return float(env)
    b = os.environ.get("TICKETS_BIN", "")
    if "thread" in b:
        return 5.0
    if "address" in b or "undefined" in b:
        return 3.0
    return 1.0


# Every latency bound is multiplied by this (sanitizer builds are slower).
SLOW = _slow_factor()

# {row: {name: value}}, printed at the end of the run (conftest.py).
FIGURES = collections.defaultdict(dict)

def record(row, **values):
    for k, v in values.items():
        FIGURES[row][k] = round(v, 3) if isinstance(v, float) else v


def pct(values, p):
    """The p-th percentile (nearest rank) of values; 0 when empty."""
    if not values:
        return 0.0
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


# ---------------------------------------------------------------------------
# claims all at once

def fire(base_url, jobs, threads, join=60.0):
    """POST each job's claim ((user, event, token)) from `threads` clients
    that start together; the Claims in job order.  Every client ends
    within join (x SLOW) seconds."""
    out = [None] * len(jobs)
    nxt = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work():
        try:
            barrier.wait(30)
        except threading.BrokenBarrierError:
            pass
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(jobs):
                return
            u, e, tok = jobs[i]
            out[i] = send(base_url, "POST", path(e), tok, u, e, timeout=30)

    ts = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(join * SLOW)
    assert not any(t.is_alive() for t in ts), "clients still running"
    return out


# ---------------------------------------------------------------------------
# a bounded storm of claims

class Storm(object):
    """`threads` clients claim (user, event) pairs until every pair got a
    final answer (anything but a 503 or a transport error) or `duration`
    seconds passed; a pair answered 503 is claimed again after `backoff`
    seconds (a client retrying, as Retry-After asks). Each pair is queued `repeat` times at the start
    (duplicate clicks). Every answer is kept in .answers.

        st = Storm(stack, pairs, threads=64, duration=10).start()
        ...inject the fault...
        st.join()
    """

    def __init__(self, stack, pairs, threads=32, duration=10.0, backoff=0.05,
                 repeat=1, timeout=30, base_url=None):
        self.stack = stack
        self.base_url = base_url or stack.url
        self.pairs = list(pairs)
        self.threads = threads
        self.duration = duration
        self.backoff = backoff
        self.timeout = timeout
        self.answers = []
        self.done = set()
        self.final = {}             # pair -> its final Claim
        self._pending = collections.deque(
            pr for _ in range(repeat) for pr in self.pairs)
        self._delayed = []          # heap of (ready time, seq, pair)
        self._seq = 0
        self._inflight = 0
        self._lock = threading.Lock()
        self._tokens = {}
        self._ts = []
        self.t_start = None
        self._stop = threading.Event()

    def token(self, user):
        t = self._tokens.get(user)
        if t is None:
            t = self._tokens[user] = self.stack.token(user, exp_delta=3600)
        return t

    def _take(self):
        """A pair to claim, None to wait a little, False when all is done."""
        with self._lock:
            now = time.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                self._pending.append(heapq.heappop(self._delayed)[2])
            if self._pending:
                self._inflight += 1
                return self._pending.popleft()
            if not self._delayed and self._inflight == 0:
                return False
            return None

    def _work(self):
        end = self.t_start + self.duration
        while not self._stop.is_set() and time.monotonic() < end:
            pr = self._take()
            if pr is False:
                return
            if pr is None:
                time.sleep(0.005)
                continue
            user, event = pr
            a = send(self.base_url, "POST", path(event), self.token(user),
                     user, event, timeout=self.timeout)
            with self._lock:
                self._inflight -= 1
                self.answers.append(a)
                if a.status is not None and a.status != 503:
                    self.done.add(pr)
                    self.final.setdefault(pr, a)
                elif pr not in self.done:
                    self._seq += 1
                    heapq.heappush(self._delayed, (time.monotonic() + self.backoff,
                                                   self._seq, pr))

    def start(self):
        self.t_start = time.monotonic()
        self._ts = [threading.Thread(target=self._work, daemon=True)
                    for _ in range(self.threads)]
        for t in self._ts:
            t.start()
        return self

    def join(self, extra=30.0):
        deadline = self.t_start + self.duration + extra
        for t in self._ts:
            t.join(max(0.1, deadline - time.monotonic()))
        self._stop.set()
        alive = [t for t in self._ts if t.is_alive()]
        assert not alive, "%d storm clients still running" % len(alive)
        self.t_end = time.monotonic()
        return self

    def unfinished(self):
        return sorted(set(self.pairs) - self.done)

    # -- views

    def by_status(self):
        return collections.Counter(
            (a.status, a.error) if a.status else ("transport", a.transport)
            for a in self.answers)

    def between(self, t0, t1):
        return [a for a in self.answers if t0 <= a.t0 < t1]


# ---------------------------------------------------------------------------
# checks

def assert_truthful(answers, allow=(200, 201, 503), busy_ok=True):
    """Every answer is one of `allow`, JSON in the API's shape; every 503 is
    `unavailable` (or `busy`) with a numeric Retry-After; every 200/201 of a
    claim carries a ticket of that pair. Nothing is a transport error."""
    bad = []
    for a in answers:
        if a.transport:
            bad.append(a)
        elif a.status not in allow:
            bad.append(a)
        elif not a.json_ok or not a.ctype.startswith("application/json"):
            bad.append(a)
        elif a.status == 503:
            codes = ("unavailable", "busy") if busy_ok else ("unavailable",)
            if a.error not in codes or not (a.retry_after or "").strip().isdigit():
                bad.append(a)
        elif a.wrong_ticket():
            bad.append(a)
    assert not bad, "untruthful answers (%d), e.g. %s" % (len(bad), bad[:5])


def check_quota_storm(stack, st, pairs, event, quota, settle):
    """After a Storm st over `pairs`, some of them of `event`, whose quota
    `quota` is less than its pairs: every pair got a final answer, every
    answer truthful (503s allowed), the claims agree with the rows, exactly
    quota tickets of event and a final 409 for each of its other pairs, no
    lock held after settle seconds.  Returns created and lost (see
    check_claims_against_db) and the final statuses (a Counter)."""
    assert not st.unfinished(), st.unfinished()[:5]
    assert_truthful(st.answers, allow=(200, 201, 409, 503), busy_ok=True)
    created, lost = check_claims_against_db(stack, st.answers, pairs)
    final = collections.Counter(a.status for a in st.final.values())
    assert stack.sql("SELECT COUNT(*) FROM free_tickets WHERE event_id=%s",
                     [event])[0][0] == quota
    assert final[409] == sum(1 for p in pairs if p[1] == event) - quota, final
    assert wait_no_locks(stack, settle) == []
    return created, lost, final


def tickets_in_db(stack, event=None):
    """{(user, event): (id, code)} of every ticket row."""
    q = "SELECT user_id, event_id, id, code FROM free_tickets"
    rows = stack.sql(q + (" WHERE event_id=%s" if event else ""),
                     [event] if event else None)
    out = {}
    for u, e, i, c in rows:
        key = (int(u), int(e))
        assert key not in out, "two tickets for %s" % (key,)
        out[key] = (int(i), c)
    return out


def check_claims_against_db(stack, answers, pairs):
    """The database against what the clients were told:
    - a 201 was answered at most once per pair, and its ticket is the row;
    - every 200 carried the row's ticket;
    - a pair with a row but no 201 is a 'lost answer' (503 for a commit
      that happened): allowed by the contract (its retry answers 200 with
      that ticket), counted and returned;
    - no row for a pair nobody claimed.
    Returns (created, lost) counts."""
    db = tickets_in_db(stack)
    pairs = set(pairs)
    created = collections.Counter()
    for a in answers:
        if a.status not in (200, 201) or a.method != "POST":
            continue
        key = (a.user, a.event)
        row = db.get(key)
        assert row is not None, "%r answered a ticket that is not in the " \
                                "database" % a
        assert (a.ticket["id"], a.ticket["code"]) == row, (a, a.ticket, row)
        if a.status == 201:
            created[key] += 1
    twice = [k for k, n in created.items() if n > 1]
    assert not twice, "created twice: %s" % twice[:5]
    stray = [k for k in db if k not in pairs]
    assert not stray, "tickets nobody claimed: %s" % stray[:5]
    lost = [k for k in db if k not in created]
    return len(created), len(lost)


def held_ticket_locks(stack):
    return [n for n in stack.held_locks() if n.startswith(LOCK_PREFIX)]


def wait_no_locks(stack, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        held = held_ticket_locks(stack)
        if not held or time.monotonic() > end:
            return held
        time.sleep(0.05)


def app_sessions(stack, state=None):
    """Server sessions of the app's MySQL user (optionally in a state)."""
    q = ("SELECT ID, COMMAND, STATE, TIME, INFO FROM information_schema.PROCESSLIST"
         " WHERE USER = 'tickets'")
    args = None
    if state:
        q += " AND STATE = %s"
        args = [state]
    return stack.sql(q, args)


def all_workers_serve(stack, inst, threads, users, event, timeout=10.0):
    """Prove that every worker thread of `inst` has a live database
    connection: hold the named locks of `threads` distinct users from a
    root session, send their claims straight to the instance at once; each
    distinct user occupies one worker (claims of different users are never
    coalesced), and each worker must reach GET_LOCK on the server. Returns
    (waiting sessions seen, answers: 201 once the locks are released, or
    503 busy when the wait outlasted the lock timeout)."""
    assert len(users) >= threads
    users = list(users)[:threads]
    holder = stack.db()
    answers = [None] * threads
    try:
        cur = holder.cursor()
        for u in users:
            cur.execute("SELECT GET_LOCK(%s, 0)", [LOCK_PREFIX + str(u)])
            assert cur.fetchone()[0] == 1

        def one(i, u):
            try:
                answers[i] = inst.request("POST", path(event),
                                          headers={"Authorization": "Bearer "
                                                   + stack.token(u)},
                                          timeout=timeout)
            except Exception as e:  # noqa: BLE001 - checked below
                answers[i] = e

        ts = [threading.Thread(target=one, args=(i, u), daemon=True)
              for i, u in enumerate(users)]
        for t in ts:
            t.start()
        seen, end = 0, time.monotonic() + timeout
        while time.monotonic() < end and any(t.is_alive() for t in ts):
            rows = stack.sql(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE "
                "USER = 'tickets' AND STATE = 'User lock'")
            seen = max(seen, int(rows[0][0]))
            if seen >= threads:
                break
            time.sleep(0.02)
    finally:
        holder.close()    # releases the locks: the claims go on at once
    for t in ts:
        t.join(timeout)
    return seen, answers


# ---------------------------------------------------------------------------
# raw FastCGI (the records themselves: harness/fastcgi.py)

def raw_exchange(sock_path, data, timeout=5.0, close_write=False,
                 chunks=None, pause=0.0):
    """Send data (or the list `chunks`, `pause` seconds apart) on a fresh
    connection, read until the peer closes or `timeout`. Returns (bytes
    read, how it ended: 'eof', 'reset', 'timeout', 'refused')."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    got = b""
    try:
        try:
            s.connect(sock_path)
        except (ConnectionRefusedError, FileNotFoundError):
            return got, "refused"
        try:
            for c in (chunks if chunks is not None else [data]):
                s.sendall(c)
                if pause:
                    time.sleep(pause)
            if close_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                return got, "timeout"
            except ConnectionResetError:
                return got, "reset"
            if not d:
                return got, "eof"
            got += d
    finally:
        s.close()


# ---------------------------------------------------------------------------
# an instance whose listening socket outlives it (systemd's socket unit)

def held_socket_instance(inst):
    """A replacement for the harness's AppInstance `inst` (same socket path,
    log and environment) whose listening socket is created once and held by
    the test process, as a systemd .socket unit (Accept=no,
    StandardInput=socket) holds it for its service: the app gets it on fd 0
    at every start, and connections that arrive while it restarts wait in
    the backlog instead of being refused or reset."""
    import subprocess
    from harness import AppInstance

    class HeldSocketInstance(AppInstance):
        def __init__(self, old):
            AppInstance.__init__(self, old.index, old.socket, old.log_path,
                                 old.bin, old.env)
            self.listener = None

        def start(self):
            if self.listener is None:
                try:
                    os.unlink(self.socket)
                except FileNotFoundError:
                    pass
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(self.socket)
                os.chmod(self.socket, 0o660)
                s.listen(1024)
                self.listener = s
            with open(self.log_path, "ab") as log:
                log.write(b"--- start with a held socket\n")
                log.flush()
                self.proc = subprocess.Popen(
                    [self.bin], env=self.env, stdin=self.listener.fileno(),
                    stdout=log, stderr=log, cwd=os.path.dirname(self.socket),
                    start_new_session=True)
            self.stopped = False

        def stop(self, timeout=10):
            rc = AppInstance.stop(self, timeout)
            return rc

        def close(self):
            if self.listener is not None:
                self.listener.close()
                self.listener = None

    return HeldSocketInstance(inst)
