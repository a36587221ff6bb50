"""What every suite does with a stack, in one place: start one for the
session (tests/integration, tests/faults) or for a module (a stack of its
own: keep-alive over TCP, Apache in front, the systemd units, Prometheus),
prepare each test and check it afterwards.

    from fixtures import own_stack
    @pytest.fixture(scope="module")
    def ka_stack():
        yield from own_stack(instances=2, keepalive=16, tcp=True)
"""

import os
import sys

import pytest

from harness import Stack, StackError


def session_stack(note=""):
    """The session's stack: TICKETS_BIN, two instances, started; pytest
    exits with status 3 when it cannot start. The caller ends it with
    end_session()."""
    s = Stack(app_bin=os.environ.get("TICKETS_BIN"), instances=2)
    try:
        s.start()
    except StackError as e:
        pytest.exit("cannot start the test stack: %s" % e, returncode=3)
    sys.stderr.write("\nstack: %s (internal %s) in %s, started in %.1f s%s\n"
                     % (s.url, s.internal_url, s.dir, s.timings["total"],
                        note))
    return s


def end_session(request, s, findings=None):
    """Stop the session's stack; fail on a crashed instance or a sanitizer
    finding in the app logs."""
    crashed, found = s.end_session(request.session.testsfailed > 0, findings)
    assert not crashed, "app instance(s) died: %s" % crashed
    assert not found, "sanitizer findings in the app logs: %s" % found[:5]


def own_stack(**kw):
    """A generator for a module's fixture: Stack(**kw) (TICKETS_BIN unless
    given, quiet), started, yielded, stopped; the module's tests fail when
    it cannot start, and its end fails on a crash or a sanitizer finding."""
    kw.setdefault("app_bin", os.environ.get("TICKETS_BIN"))
    kw.setdefault("quiet", True)
    s = Stack(**kw)
    try:
        s.start()
    except StackError as e:
        pytest.fail("cannot start the test stack: %s" % e)
    try:
        yield s
    finally:
        crashed, found = s.end_session(False)
    assert not crashed, "app instance(s) died: %s" % crashed
    assert not found, "sanitizer findings: %s" % found[:5]


def before_test(stack):
    """MariaDB up (restarted or resumed if a test left it down), the
    default apps running (restarted if a test changed them), the tables
    empty. Returns the log mark for after_test()."""
    stack.ensure_db()
    if stack.apps_modified():
        stack.restart_apps()
    stack.reset_tables()
    return stack.log_mark()


def after_test(stack, mark, settle=2.0, problems=(), findings=None):
    """No app crash, no named lock held (after `settle` s), free_issued
    equal to each event's rows, no new sanitizer finding; `problems` are
    the caller's own."""
    problems = list(problems)
    crashed = stack.crashed_instances()
    if crashed:
        problems.append("app instance(s) died: %s (exit %s)" % (
            crashed, [i.returncode for i in crashed]))
    if stack.db_running():
        problems += stack.invariant_problems(settle=settle)
    problems += ["sanitizer: " + line for line in
                 (findings or stack.sanitizer_report)(since=mark)]
    assert not problems, "\n".join(problems)
