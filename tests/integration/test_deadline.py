"""Answers in time: every claim has a budget (TICKETS_REQUEST_TIMEOUT from
its arrival) below the front's read timeout, parked claims wait on their
own budget, not on the leader's, and HEAD answers carry no body.

The database is made slow by a proxy of this test between the app (TCP)
and MariaDB (its unix socket) that holds back every answer.
"""

import os
import re
import socket
import threading
import time

from helpers import assert_error, path, rows
from harness import LOCK_PREFIX, ROOT
from test_fastcgi import App, app_env, fcgi, run_bin, uri_params


class SlowProxy(object):
    """127.0.0.1:port -> a unix socket; answers from the server are held
    back `delay` seconds each (changeable while it runs)."""

    def __init__(self, target, delay=0.0):
        self.target, self.delay = target, delay
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.socks, self.closed = [], False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.target)
            self.socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True),
                             daemon=True).start()

    def _pump(self, src, dst, slow):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if slow and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.listener.close()
        for s in self.socks:
            s.close()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_a_claim_is_answered_within_its_budget_when_the_database_is_slow(
        stack, tmp_path):
    """Every answer of the database held back 0.4 s: a new ticket needs 7
    round trips (2.8 s), its budget is 1.5 s. The claim stops at the first
    statement past its deadline, rolls back, releases the lock and answers
    503 unavailable with Retry-After, in about 2.4 s, and writes nothing;
    before budgets it committed after 3.2 s, past the front's patience
    here. With the database fast again the same claim gets its ticket."""
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    proxy = SlowProxy(stack.db_socket)
    sock = str(tmp_path / "app.sock")
    try:
        with App(stack, listen="unix:" + sock, address=sock,
                 TICKETS_DB_SOCKET=None, TICKETS_DB_HOST="127.0.0.1",
                 TICKETS_DB_PORT=str(proxy.port), TICKETS_THREADS="2",
                 TICKETS_REQUEST_TIMEOUT="1.5") as app:
            app.wait_ready()
            proxy.delay = 0.4
            t0 = time.monotonic()
            r = fcgi(sock, "POST", uri_params(path(7), token=tok), timeout=20)
            took = time.monotonic() - t0
            assert_error(r, 503, "unavailable")
            assert r.headers.get("retry-after") == "1", r.headers
            assert took < 3.5, took
            assert rows(stack, 42, 7) == 0
            proxy.delay = 0
            r = fcgi(sock, "POST", uri_params(path(7), token=tok), timeout=20)
            assert r.status == 201, r.text
            m = fcgi(sock, "GET", uri_params("/metrics")).text
            assert metric(m, "tickets_claim_deadline_exceeded_total") >= 1, m
            assert app.stop() == 0, app.output()
    finally:
        proxy.close()


def test_a_parked_claim_of_another_event_waits_on_its_own_budget(stack):
    """The user's lock is held elsewhere for 3.5 s (lock timeout 3 s). A
    claim of event 1 leads and waits; one of event 2 arrives 2.9 s later
    and parks behind it. The leader is busy at 3 s; the parked claim then
    tries the lock itself, with the 2.9 s it has left, and gets its ticket
    at 3.5 s. It used to get the leader's 503 busy at once."""
    stack.restart_apps(env={"TICKETS_LOCK_TIMEOUT": "3"})
    inst = stack.instances[0]
    stack.make_user(43)
    stack.make_event(1)
    stack.make_event(2)
    tok = stack.token(43)
    got = {}

    def claim(event):
        got[event] = inst.request("POST", path(event),
                                  {"Authorization": "Bearer " + tok},
                                  timeout=20)

    holder = stack.db()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", [LOCK_PREFIX + "43"])
        t0 = time.monotonic()
        a = threading.Thread(target=claim, args=(1,))
        a.start()
        time.sleep(2.9)
        b = threading.Thread(target=claim, args=(2,))
        b.start()
        time.sleep(max(0, 3.5 - (time.monotonic() - t0)))
        with holder.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK(%s)", [LOCK_PREFIX + "43"])
        a.join(20)
        b.join(20)
    finally:
        holder.close()
    assert_error(got[1], 503, "busy")
    assert got[2].status == 201, (got[2].status, got[2].text)
    assert rows(stack, 43, 2) == 1 and rows(stack, 43, 1) == 0


def test_head_answers_carry_no_body(stack):
    """RFC 9110 9.3.2: the headers of GET, no body (nginx drops a HEAD
    body itself, so this speaks FastCGI straight to an instance)."""
    stack.make_event(7)
    inst = stack.instances[0]
    get = inst.request("GET", "/api/events")
    head = inst.request("HEAD", "/api/events")
    assert get.status == head.status == 200
    assert head.body == b"", head.body[:100]
    assert head.headers["content-length"] == str(len(get.body))
    assert head.headers["content-type"] == get.headers["content-type"]
    missing = inst.request("HEAD", "/nope")
    assert missing.status == 404 and missing.body == b""


def test_check_config_warns_when_the_budget_reaches_the_front(stack):
    """--check-config warns when TICKETS_REQUEST_TIMEOUT plus one
    statement's TICKETS_DB_TIMEOUT reach the shipped nginx read timeout,
    which the app knows as CONFIG_FRONT_READ_TIMEOUT_S."""
    with open(os.path.join(ROOT, "nginx", "snippets",
                           "tickets-fastcgi.conf")) as f:
        front = int(re.search(r"^fastcgi_read_timeout (\d+)s;", f.read(),
                              re.M).group(1))
    with open(os.path.join(ROOT, "fcgi-app", "config.h")) as f:
        known = int(re.search(r"#define CONFIG_FRONT_READ_TIMEOUT_S (\d+)",
                              f.read()).group(1))
    assert front == known, "nginx says %d s, config.h %d s" % (front, known)
    ok = run_bin(stack, ["--check-config"], app_env(stack), timeout=20)
    assert ok.returncode == 0 and b"warning" not in ok.stderr, ok.stderr
    late = run_bin(stack, ["--check-config"], app_env(
        stack, TICKETS_REQUEST_TIMEOUT="25"), timeout=20)
    assert late.returncode == 0, late.stderr
    assert b"warning" in late.stderr and b"fastcgi_read_timeout" in late.stderr
