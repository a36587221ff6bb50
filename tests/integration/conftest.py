"""Fixtures of the integration tests: one stack per session (tests/harness),
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

from fixtures import after_test, before_test, end_session, session_stack  # noqa: E402
from harness import Stack  # noqa: E402  (tests/harness)


@pytest.fixture(scope="session")
def stack(request):
    """The running stack; see tests/harness (Stack) for its API."""
    url = os.environ.get("TICKETS_TEST_URL")
    if url:
        yield Stack.attach(url)
        return
    s = session_stack()
    yield s
    end_session(request, s)


@pytest.fixture(autouse=True)
def clean(stack):
    """tests/fixtures.py: before_test, then after_test (2 s to settle)."""
    mark = before_test(stack)
    yield
    after_test(stack, mark, settle=2.0)
