"""Fixtures of the integration tests: one stack per session (tests/stack.py),
tables emptied before every test and invariants checked after it.

    /usr/bin/python3 -m pytest tests/integration
    TICKETS_BIN=build/asan/tickets-fcgi ...   test another build of the app
    TICKETS_TEST_URL=http://127.0.0.1:8080 ...   use a running `make run`
                                              (its tables get emptied!)
    TICKETS_KEEP=1 ...                        keep the stack's directory
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stack import Stack, StackError  # noqa: E402  (tests/stack.py)


@pytest.fixture(scope="session")
def stack(request):
    """The running stack; see tests/stack.py (Stack) for its API."""
    url = os.environ.get("TICKETS_TEST_URL")
    if url:
        yield Stack.attach(url)
        return
    s = Stack(app_bin=os.environ.get("TICKETS_BIN"), instances=2)
    try:
        s.start()
    except StackError as e:
        pytest.exit("cannot start the test stack: %s" % e, returncode=3)
    sys.stderr.write("\nstack: %s (internal %s) in %s, started in %.1f s\n"
                     % (s.url, s.internal_url, s.dir, s.timings["total"]))
    yield s
    crashed, found = s.end_session(request.session.testsfailed > 0)
    assert not crashed, "app instance(s) died: %s" % crashed
    assert not found, "sanitizer findings in the app logs: %s" % found[:5]


@pytest.fixture(autouse=True)
def clean(stack):
    """Before: MariaDB up (restarted or resumed if a test left it down),
    the default apps running (restarted if a test changed them), the four
    tables empty.
    After: no tickets:user:% lock held (2 s to settle), free_issued equal to
    each event's ticket rows, no app crash, no new sanitizer finding."""
    stack.ensure_db()
    if stack.apps_modified():
        stack.restart_apps()
    stack.reset_tables()
    mark = stack.log_mark()
    yield
    crashed = stack.crashed_instances()
    problems = []
    if crashed:
        problems.append("app instance(s) died: %s (exit %s)" % (
            crashed, [i.returncode for i in crashed]))
    if stack.db_running():
        problems += stack.invariant_problems(settle=2.0)
    problems += ["sanitizer: " + line for line in stack.sanitizer_report(since=mark)]
    assert not problems, "\n".join(problems)
