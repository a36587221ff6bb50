"""The app's database user has least privilege (sql/grants.sql): it can
claim, but it cannot delete, rewrite or forge tickets, nor change quotas,
premium status or orders."""

import pymysql
import pytest

from helpers import path


def app_conn(stack):
    if not getattr(stack, "instances", None):
        pytest.skip("needs a harness-started stack (reads the app's password)")
    with open(stack.path("db-password")) as f:
        password = f.read().rstrip("\n")
    return pymysql.connect(unix_socket=stack.db_socket, user="tickets",
                           password=password, database="tickets",
                           autocommit=True)


def refused(conn, sql, args=None):
    with conn.cursor() as c:
        with pytest.raises(pymysql.err.MySQLError):
            c.execute(sql, args)


def test_app_user_cannot_rewrite_or_delete(stack):
    stack.make_user(1)
    stack.make_event(7, quota=5)
    r = stack.request("POST", "/api/events/7/participation",
                      token=stack.token(1))
    assert r.status == 201, r.text
    ticket = r.json["ticket"]
    conn = app_conn(stack)
    try:
        refused(conn, "DELETE FROM free_tickets")
        refused(conn, "UPDATE free_tickets SET code = REPEAT('0', 32)")
        refused(conn, "UPDATE free_tickets SET user_id = 2")
        refused(conn, "UPDATE events SET free_quota = 1000")
        refused(conn, "UPDATE users SET premium_until = NULL")
        refused(conn, "DELETE FROM orders")
        refused(conn, "TRUNCATE TABLE free_tickets")
        refused(conn, "DROP TABLE free_tickets")
        # ODKU with a real change is refused by the immutability trigger
        refused(conn, "INSERT INTO free_tickets (user_id, event_id, code, "
                      "created_at) VALUES (1, 7, 'x', UTC_TIMESTAMP()) "
                      "ON DUPLICATE KEY UPDATE code = VALUES(code)")
    finally:
        conn.close()
    rows = stack.sql("SELECT id, code, user_id FROM free_tickets")
    assert [tuple(r) for r in rows] == [(ticket["id"], ticket["code"], 1)]


def test_app_user_reads_only_the_columns_it_needs(stack):
    """sql/grants.sql grants columns, not tables: a real site's users table
    has e-mail addresses and password hashes (the contract allows extra
    columns), and the app's account reads none of them; yet every claim
    outcome, the ticket read and the event list still work through nginx.
    Old grants (SELECT on whole tables): SELECT * and the extra column
    were readable."""
    stack.sql("ALTER TABLE users ADD COLUMN password_hash VARCHAR(100) NULL")
    stack.sql("ALTER TABLE orders ADD COLUMN card_last4 CHAR(4) NULL")
    try:
        for u, premium in ((1, True), (2, True), (3, False)):
            stack.make_user(u, premium=premium)
        stack.sql("UPDATE users SET password_hash = 'argon2-secret'")
        stack.make_event(7, quota=5)
        stack.make_event(8, free=False)
        stack.make_event(9, starts_in=-60)
        stack.make_event(10, quota=1)
        stack.make_event(11)
        stack.make_order(2, 11)
        conn = app_conn(stack)
        try:
            for q in ("SELECT * FROM users", "SELECT password_hash FROM users",
                      "SELECT * FROM orders", "SELECT card_last4 FROM orders",
                      "SELECT id FROM orders"):
                refused(conn, q)
            with conn.cursor() as c:     # what the app reads stays readable
                c.execute("SELECT id, premium_until FROM users WHERE id = 1")
                assert c.fetchone()[0] == 1
        finally:
            conn.close()

        def claim(user, event):
            return stack.request("POST", path(event),
                                 token=stack.token(user))
        got = [(claim(1, 7).status, "created"), (claim(1, 7).status, "existing"),
               (claim(3, 7).status, "not premium"), (claim(1, 8).status, "not free"),
               (claim(1, 9).status, "started"), (claim(2, 11).status, "order"),
               (claim(1, 10).status, "last seat"), (claim(2, 10).status, "sold out"),
               (claim(1, 999).status, "no event")]
        assert got == [(201, "created"), (200, "existing"), (403, "not premium"),
                       (409, "not free"), (409, "started"), (409, "order"),
                       (201, "last seat"), (409, "sold out"), (404, "no event")], got
        r = stack.request("GET", "/api/events/7/participation", token=stack.token(1))
        assert r.status == 200 and r.json["ticket"]["event_id"] == 7, r.text
        r = stack.request("GET", "/api/events/7/participation", token=stack.token(2))
        assert r.status == 404, r.text
        r = stack.request("GET", "/api/events")
        assert r.status == 200 and {e["id"] for e in r.json["events"]} >= {7, 8, 10, 11}, r.text
        r = stack.request("GET", "/api/health", base=stack.internal_url)
        assert r.status == 200, r.text
    finally:
        stack.sql("ALTER TABLE users DROP COLUMN password_hash")
        stack.sql("ALTER TABLE orders DROP COLUMN card_last4")
