"""Helpers shared by the integration tests: paths, the contract's error
shape, and row counts.  Imported as `from helpers import ...` (pytest puts
this directory on sys.path)."""

import contextlib

from harness import claim_path as path  # noqa: F401  (the claim's path)


def is_json(resp):
    return resp.headers.get("content-type", "").startswith("application/json")


def assert_error(resp, status, code):
    """The contract's error: status, JSON, exactly {"error", "message"}."""
    assert resp.status == status, (resp.status, resp.text)
    assert is_json(resp), resp.headers
    body = resp.json
    assert isinstance(body, dict), resp.text
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str), body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["error"] == code, body


def rows(stack, user=None, event=None):
    """free_tickets rows, optionally of one user and/or event."""
    q, a = "SELECT COUNT(*) FROM free_tickets WHERE 1=1", []
    if user is not None:
        q, a = q + " AND user_id=%s", a + [user]
    if event is not None:
        q, a = q + " AND event_id=%s", a + [event]
    return stack.sql(q, a)[0][0]


def issued(stack, event):
    return stack.sql("SELECT free_issued FROM events WHERE id=%s", [event])[0][0]


@contextlib.contextmanager
def general_log(stack, out):
    """The statements the app's account sends while the block runs, from
    the server's own general log: out gets (session id, statement text) in
    the server's order."""
    stack.sql("SET GLOBAL general_log = 0")
    stack.sql("SET GLOBAL log_output = 'TABLE'")
    stack.sql("TRUNCATE TABLE mysql.general_log")
    stack.sql("SET GLOBAL general_log = 1")
    try:
        yield
    finally:
        stack.sql("SET GLOBAL general_log = 0")
        got = stack.sql(
            "SELECT thread_id, CONVERT(argument USING utf8mb4)"
            " FROM mysql.general_log"
            " WHERE user_host LIKE 'tickets[%%'"
            " AND command_type IN ('Query', 'Execute')"
            " ORDER BY event_time")
        out.extend((t, " ".join(a.split())) for t, a in got)
        stack.sql("TRUNCATE TABLE mysql.general_log")
