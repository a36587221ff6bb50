"""Fixtures of the fault tests (issue 3): one stack per session, as in
tests/integration, plus a supervisor that restarts a dead app instance (the
test stand-in for systemd's Restart=on-failure) and a record of the
measured figures that docs/RELIABILITY.md quotes.

    /usr/bin/python3 -m pytest tests/faults
    TICKETS_BIN=build/address,undefined/tickets-fcgi ...   a sanitizer build
    TICKETS_TEST_SLOW=3 ...         scale every latency bound (set by itself
                                    for ASan/TSan builds)
    TICKETS_FAULTS_FIGURES=f.json   also write the figures there
    TICKETS_KEEP=1 ...              keep the stack's directory

Unlike tests/integration, these tests need a stack the harness started
(they stop MariaDB, kill app instances, restart them): TICKETS_TEST_URL is
not supported.
"""

import json
import os
import re
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # tests/, for stack.py

from stack import Stack, StackError  # noqa: E402  (tests/stack.py)

import faultlib  # noqa: E402  (tests/faults/faultlib.py)


# ---------------------------------------------------------------------------
# the supervisor

class Supervisor(object):
    """Restarts an app instance that exited without being stopped by the
    harness, as systemd's Restart=on-failure (RestartSec=0) or runit would:
    same command (spawn-fcgi -n on the same socket), same environment.

    Every restart is recorded; the `clean` fixture fails a test that saw a
    restart it did not announce with expect_restarts()."""

    POLL = 0.02

    def __init__(self, stack):
        self.stack = stack
        self.events = []          # dicts: index, pid, code, died, restarted, new_pid
        self.expected = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="supervisor",
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.wait(self.POLL):
            for inst in list(self.stack.instances):
                proc = inst.proc
                if proc is None or inst.stopped or proc.poll() is None:
                    continue
                with self._lock:
                    if inst.proc is not proc or inst.stopped:
                        continue
                    died = time.monotonic()
                    ev = {"index": inst.index, "pid": proc.pid,
                          "code": proc.returncode, "died": died}
                    try:
                        inst.start()
                        ev["restarted"] = time.monotonic()
                        ev["new_pid"] = inst.pid
                    except Exception as e:  # noqa: BLE001 - recorded
                        ev["error"] = repr(e)
                    self.events.append(ev)
                    sys.stderr.write("supervisor: app %d (pid %d) exited with "
                                     "%s; restarted as pid %s\n" % (
                                         inst.index, proc.pid, proc.returncode,
                                         ev.get("new_pid")))

    def mark(self):
        return len(self.events)

    def since(self, mark):
        return self.events[mark:]

    def expect_restarts(self, n=1):
        """The running test kills instances on purpose (n at most)."""
        self.expected += n

    def wait_restarted(self, mark, n=1, timeout=10):
        """Wait until n restarts happened after mark and the restarted
        instances answer; returns those events (with 'ready' times)."""
        end = time.monotonic() + timeout
        while len(self.since(mark)) < n:
            if time.monotonic() > end:
                raise AssertionError("the supervisor restarted %d of %d "
                                     "instances within %.0f s" % (
                                         len(self.since(mark)), n, timeout))
            time.sleep(0.02)
        evs = self.since(mark)[:n]
        for ev in evs:
            inst = self.stack.instances[ev["index"]]
            inst.wait_ready(timeout=max(1.0, end - time.monotonic()))
            ev.setdefault("ready", time.monotonic())
        return evs


# ---------------------------------------------------------------------------
# session

# Sanitizer report lines that a test may expect: the ASan/TSan allocator
# refusing libfcgi's 2 GiB malloc (test_hostile_fastcgi's killer record).
EXPECTED_SANITIZER = re.compile(
    r"allocation-size-too-big|requested allocation size|"
    r"allocator_may_return_null|exceeds maximum supported size")


def _sanitizer_findings(stack, since=None):
    return [line for line in stack.sanitizer_report(since=since)
            if not EXPECTED_SANITIZER.search(line)]


@pytest.fixture(scope="session")
def figures():
    """{row: {name: value}}: the measured figures of this run."""
    return faultlib.FIGURES


@pytest.fixture(scope="session")
def stack(request):
    """The running stack (tests/stack.py), two instances, and its supervisor
    as stack.supervisor."""
    if os.environ.get("TICKETS_TEST_URL"):
        pytest.exit("tests/faults need a stack of their own: unset "
                    "TICKETS_TEST_URL", returncode=4)
    s = Stack(app_bin=os.environ.get("TICKETS_BIN"), instances=2)
    try:
        s.start()
    except StackError as e:
        pytest.exit("cannot start the test stack: %s" % e, returncode=3)
    sys.stderr.write("\nstack: %s (internal %s) in %s, started in %.1f s, "
                     "app %s, slow factor %g\n" % (
                         s.url, s.internal_url, s.dir, s.timings["total"],
                         s.app_bin, faultlib.SLOW))
    s.supervisor = Supervisor(s).start()
    yield s
    s.supervisor.stop()
    crashed, found = s.end_session(request.session.testsfailed > 0,
                                   lambda: _sanitizer_findings(s))
    assert not crashed, "app instance(s) died: %s" % crashed
    assert not found, "sanitizer findings in the app logs: %s" % found[:5]


@pytest.fixture(autouse=True)
def clean(stack):
    """Before: MariaDB up, the default apps running, the tables empty.
    After: no tickets:user:% lock held (settled), free_issued equal to the
    rows of each event, no unannounced instance restart or crash, no new
    sanitizer finding."""
    stack.ensure_db()
    if stack.apps_modified():
        stack.restart_apps()
    stack.reset_tables()
    mark = stack.log_mark()
    sup = stack.supervisor
    sup.expected = 0
    smark = sup.mark()
    yield
    problems = []
    restarts = sup.since(smark)
    if len(restarts) > sup.expected:
        problems.append("app instance(s) died and were restarted by the "
                        "supervisor: %s" % restarts)
    crashed = stack.crashed_instances()
    if crashed:
        problems.append("app instance(s) died: %s (exit %s)" % (
            crashed, [i.returncode for i in crashed]))
    if stack.db_running():
        problems += stack.invariant_problems(settle=5.0)
    problems += ["sanitizer: " + line
                 for line in _sanitizer_findings(stack, since=mark)]
    assert not problems, "\n".join(problems)


def pytest_terminal_summary(terminalreporter):
    if not faultlib.FIGURES:
        return
    terminalreporter.section("fault matrix figures (docs/RELIABILITY.md)")
    for row in sorted(faultlib.FIGURES):
        for k, v in sorted(faultlib.FIGURES[row].items()):
            terminalreporter.write_line("%-28s %-36s %s" % (row, k, v))
    out = os.environ.get("TICKETS_FAULTS_FIGURES")
    if out:
        with open(out, "w") as f:
            json.dump(faultlib.FIGURES, f, indent=2, sort_keys=True)
            f.write("\n")
