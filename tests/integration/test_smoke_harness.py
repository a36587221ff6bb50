"""The harness itself: the stack answers through nginx and the helpers
work. If this fails, look at the stack's logs before any other test."""


def test_events_list_is_json(stack):
    r = stack.request("GET", "/api/events")
    assert r.status == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json, dict) and r.json["events"] == []


def test_unknown_path_is_json_404(stack):
    r = stack.request("GET", "/no/such/path")
    assert r.status == 404, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json["error"] == "not_found"


def test_held_locks_lists_named_locks(stack):
    assert isinstance(stack.held_locks(), list)
    conn = stack.db()
    try:
        cur = conn.cursor()
        cur.execute("SELECT GET_LOCK('tickets-harness-check', 0)")
        assert cur.fetchone()[0] == 1
        assert "tickets-harness-check" in stack.held_locks()
    finally:
        conn.close()


def test_fixtures_write_rows(stack):
    stack.make_user(1)
    stack.make_user(2, premium=False)
    stack.make_event(5, quota=2)
    stack.make_order(1, 5, status="pending")
    assert stack.sql("SELECT id, premium_until > UTC_TIMESTAMP() FROM users "
                     "ORDER BY id") == [(1, 1), (2, 0)]
    assert stack.sql("SELECT free_quota, free_issued FROM events") == [(2, 0)]
    assert stack.sql("SELECT status FROM orders") == [("pending",)]
