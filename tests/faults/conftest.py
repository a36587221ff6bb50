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
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # tests/, for harness/

from fixtures import after_test, before_test, end_session, session_stack  # noqa: E402

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

@pytest.fixture(scope="session")
def stack(request):
    """The running stack (tests/harness), two instances, and its supervisor
    as stack.supervisor."""
    if os.environ.get("TICKETS_TEST_URL"):
        pytest.exit("tests/faults need a stack of their own: unset "
                    "TICKETS_TEST_URL", returncode=4)
    s = session_stack(", app %s, slow factor %g" % (
        os.environ.get("TICKETS_BIN"), faultlib.SLOW))
    s.supervisor = Supervisor(s).start()
    yield s
    s.supervisor.stop()
    end_session(request, s)


@pytest.fixture(autouse=True)
def clean(stack):
    """tests/fixtures.py: before_test, then after_test (5 s to settle), and
    no unannounced instance restart."""
    mark = before_test(stack)
    sup = stack.supervisor
    sup.expected = 0
    smark = sup.mark()
    yield
    restarts = sup.since(smark)
    after_test(stack, mark, settle=5.0, problems=[
        "app instance(s) died and were restarted by the supervisor: %s"
        % restarts] if len(restarts) > sup.expected else [])


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
