"""Test data and the checks after a test, on any harness that reaches its
database as root: a Stack, a Cluster, a GaleraCluster.

    class Stack(Database):
        def root_conn(self, db=DB_NAME, timeout=10): ...

Standard library and pymysql."""

from .mariadb import DB_NAME, held_locks, invariant_problems, query_rows

# The users of sql/demo.sql, as the demo sign-in of `make run` lists them.
DEMO_USERS = [
    (1, "User 1: premium"),
    (2, "User 2: premium, with an order for Jazz in the park"),
    (3, "User 3: premium expired yesterday"),
    (4, "User 4: never premium"),
]


class Database(object):
    """Users, events, orders, named locks and the invariants, for a class
    with root_conn(db=DB_NAME, timeout=10), a new pymysql connection as
    root.  SETTLE: how long invariant_problems() waits by default for
    claims in flight to release their locks."""

    SETTLE = 2.0

    def root_conn(self, db=DB_NAME, timeout=10):
        raise NotImplementedError

    def db(self):
        """A new pymysql connection: root, autocommit, database tickets.
        The caller closes it."""
        return self.root_conn()

    def sql(self, query, args=None):
        """Run one statement as root; return its rows as a list of tuples."""
        return query_rows(self.root_conn(), query, args)

    def make_user(self, id, premium=True, premium_until=None):
        """premium: premium_until = now + 30 days; else a day ago. An explicit
        premium_until (a datetime or 'YYYY-MM-DD hh:mm:ss' in UTC) wins."""
        if premium_until is not None:
            self.sql("INSERT INTO users (id, premium_until) VALUES (%s, %s) "
                     "ON DUPLICATE KEY UPDATE premium_until = VALUES(premium_until)",
                     [id, premium_until])
        else:
            self.make_users([id], premium)
        return id

    def make_users(self, ids, premium=True):
        """Users with these ids, a statement per thousand, premium for 30
        days (or expired a day ago)."""
        ids = list(ids)
        for k in range(0, len(ids), 1000):
            self.sql("INSERT INTO users (id, premium_until) VALUES " + ", ".join(
                "(%d, UTC_TIMESTAMP() + INTERVAL %d DAY)" % (int(i), 30 if premium else -1)
                for i in ids[k:k + 1000]) + " ON DUPLICATE KEY UPDATE "
                "premium_until = VALUES(premium_until)")
        return list(ids)

    def make_event(self, id, title=None, free=True, quota=None, starts_in=86400,
                   issued=0):
        """An event starting starts_in seconds from now (negative: started)."""
        self.sql("INSERT INTO events (id, title, starts_at, free_for_premium, "
                 "free_quota, free_issued) VALUES (%s, %s, UTC_TIMESTAMP() + "
                 "INTERVAL %s SECOND, %s, %s, %s)",
                 [id, title if title is not None else "Event %d" % id,
                  int(starts_in), 1 if free else 0, quota, issued])
        return id

    def make_order(self, user_id, event_id, status="paid"):
        """An order as the shop writes it; returns its id."""
        conn = self.root_conn()
        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO orders (user_id, event_id, status) "
                        "VALUES (%s, %s, %s)", [user_id, event_id, status])
            return cur.lastrowid
        finally:
            conn.close()

    def held_locks(self):
        """Names of the named (GET_LOCK) locks held right now, by anyone."""
        return held_locks(self.sql)

    def reset_tables(self):
        """Empty the four tables (the `clean` fixture, before each test)."""
        conn = self.root_conn()
        try:
            cur = conn.cursor()
            for t in ("free_tickets", "orders", "users", "events"):
                cur.execute("TRUNCATE TABLE %s" % t)
        finally:
            conn.close()

    def invariant_problems(self, settle=None):
        """What is wrong after a test: see mariadb.invariant_problems()."""
        return invariant_problems(self.sql, self.held_locks,
                                  self.SETTLE if settle is None else settle)
