"""The app's database user has least privilege (sql/grants.sql): it can
claim, but it cannot delete, rewrite or forge tickets, nor change quotas,
premium status or orders."""

import pymysql
import pytest


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
