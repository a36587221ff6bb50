"""The private MariaDB of a run: its data directory, its command line, the
tickets database with its account, root's connections and the checks of
what the database must never hold.

Standard library and pymysql (Debian: python3-pymysql)."""

import os
import secrets
import shutil
import subprocess
import time

try:
    import pymysql
except ImportError:  # pragma: no cover - reported when a DB call is made
    pymysql = None

from .processes import ROOT, StackError, tail_file, write_private

DB_NAME = "tickets"
DB_USER = "tickets"
LOCK_PREFIX = "tickets:user:"
# The private MariaDB runs in a time zone other than UTC on purpose: the
# contract keeps every time in UTC, so an app that used NOW() or
# CURRENT_TIMESTAMP instead of UTC_TIMESTAMP() would be off by two hours
# here and get caught. Override with TICKETS_TEST_DB_TZ.
DB_TIME_ZONE = os.environ.get("TICKETS_TEST_DB_TZ", "+02:00")


def install_datadir(datadir, log_path, user=None):
    """Create a MariaDB data directory (root with an empty password, no
    test database); StackError with the log's tail if it fails. Its
    temporary files go to datadir + "-tmp", not to the shared /tmp, where
    the bootstrap of concurrent runs was seen to lose its temporary tables
    ("Could not remove temporary table", then ERROR 1051).  user: the
    system user mariadbd runs as (as root; default root)."""
    tmpdir = datadir.rstrip("/") + "-tmp"
    os.makedirs(tmpdir, exist_ok=True)
    cmd = ["mariadb-install-db", "--no-defaults",
           "--auth-root-authentication-method=normal",
           "--skip-test-db", "--datadir=" + datadir, "--tmpdir=" + tmpdir]
    if os.geteuid() == 0:
        cmd.append("--user=" + (user or "root"))
        if user:
            shutil.chown(tmpdir, user, user)
    with open(log_path, "wb") as log:
        rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log)
    if rc != 0:
        raise StackError("mariadb-install-db failed (%d):\n%s" % (
            rc, tail_file(log_path)))


def held_locks(sql):
    """Names of the named (GET_LOCK) locks held right now, by anyone, on
    the server `sql(query)` asks."""
    return [r[0] for r in sql(
        "SELECT TABLE_SCHEMA FROM information_schema.METADATA_LOCK_INFO "
        "WHERE LOCK_TYPE = 'User lock'")]


def invariant_problems(sql, held_locks, settle=2.0):
    """What the database must never hold, as a list of problems (empty when
    all is well): ticket locks still held (after up to `settle` seconds for
    claims in flight to end), an event whose free_issued is not its row
    count, more than one ticket per (user, event), a quota exceeded, tickets
    of a missing event.  `sql(query)` returns rows; `held_locks()` names."""
    deadline = time.monotonic() + settle
    while True:
        held = [n for n in held_locks() if n.startswith(LOCK_PREFIX)]
        if not held or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems = []
    if held:
        problems.append("named locks still held: %s" % held)
    bad = sql("SELECT e.id, e.free_issued, COUNT(f.id) FROM events e LEFT JOIN "
              "free_tickets f ON f.event_id = e.id GROUP BY e.id, e.free_issued "
              "HAVING e.free_issued <> COUNT(f.id)")
    if bad:
        problems.append("free_issued != rows (event, free_issued, rows): %s"
                        % [tuple(int(x) for x in r) for r in bad])
    dup = sql("SELECT user_id, event_id, COUNT(*) FROM free_tickets "
              "GROUP BY user_id, event_id HAVING COUNT(*) > 1")
    if dup:
        problems.append("more than one ticket per (user, event): %s"
                        % list(dup[:10]))
    over = sql("SELECT id, free_issued, free_quota FROM events WHERE "
               "free_quota IS NOT NULL AND free_issued > free_quota")
    if over:
        problems.append("quota exceeded: %s" % list(over))
    orphans = sql("SELECT f.event_id, COUNT(*) FROM free_tickets f LEFT JOIN "
                  "events e ON e.id = f.event_id WHERE e.id IS NULL "
                  "GROUP BY f.event_id")
    if orphans:
        problems.append("tickets of missing events: %s" % list(orphans))
    return problems


def root_connect(socket_path, db=DB_NAME, timeout=10):
    """A pymysql connection as root over the unix socket, autocommit.
    lock_wait_timeout: a TRUNCATE or ALTER blocked by a transaction the app
    left open fails after 30 s instead of hanging the run for the server's
    default of a year."""
    return pymysql.connect(unix_socket=socket_path, user="root",
                           password="", database=db, autocommit=True,
                           connect_timeout=timeout, charset="utf8mb4",
                           init_command="SET SESSION lock_wait_timeout = 30")


def query_rows(conn, query, args=None):
    """Run one statement on conn, then close it; its rows as a list of
    tuples."""
    try:
        cur = conn.cursor()
        cur.execute(query, args)
        return list(cur.fetchall())
    finally:
        conn.close()


def mariadb_client(socket_path, sql_bytes, database=DB_NAME, what="mariadb"):
    """Feed SQL (bytes, delimiters and all) to the mariadb client as
    root; StackError with its output when it fails."""
    r = subprocess.run(
        ["mariadb", "--no-defaults", "--socket=" + socket_path,
         "--user=root", "--batch", database],
        input=sql_bytes, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise StackError("%s failed:\n%s" % (
            what, r.stdout.decode("utf-8", "replace")))



def mariadbd_cmd(run_dir, listen=None, tls_dir=None, extra=()):
    """The command line of the private MariaDB of run_dir: data in db/,
    temporary files in db-tmp/, root's socket mysql.sock, its log
    mariadb.err, durability traded for speed (throw-away data), the
    metadata_lock_info plugin (held_locks()), DB_TIME_ZONE.  listen: None
    (the socket only) or (address, port) for TCP too; tls_dir: with
    db-ca.pem, db-server.pem and db-server-key.pem there, TCP clients must
    speak TLS (require_secure_transport)."""
    def path(name):
        return os.path.join(run_dir, name)
    cmd = ["mariadbd", "--no-defaults",
           "--datadir=" + path("db"),
           "--tmpdir=" + path("db-tmp"),
           "--socket=" + path("mysql.sock"),
           "--pid-file=" + path("mariadb.pid"),
           "--log-error=" + path("mariadb.err"),
           "--skip-log-bin",
           "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
           "--sync-binlog=0", "--innodb-buffer-pool-size=256M",
           "--max-connections=500",
           "--plugin-load-add=metadata_lock_info",
           "--default-time-zone=" + DB_TIME_ZONE,
           "--character-set-server=utf8mb4"]
    if listen:
        cmd += ["--bind-address=" + listen[0], "--port=%d" % listen[1]]
    else:
        cmd.append("--skip-networking")
    if tls_dir:
        cmd += ["--ssl-ca=" + os.path.join(tls_dir, "db-ca.pem"),
                "--ssl-cert=" + os.path.join(tls_dir, "db-server.pem"),
                "--ssl-key=" + os.path.join(tls_dir, "db-server-key.pem"),
                "--require-secure-transport=ON",
                "--performance-schema=ON"]
    if os.geteuid() == 0:
        cmd.append("--user=root")
    return cmd + list(extra)


def load_sql(socket_path, filename, database=DB_NAME):
    """Load sql/<filename> of the checkout with the mariadb client (root)."""
    path = os.path.join(ROOT, "sql", filename)
    with open(path, "rb") as f:
        mariadb_client(socket_path, f.read(), database,
                       what="loading " + path)


def create_database(socket_path, run_dir, host="localhost", demo=False):
    """The tickets database: created (utf8mb4), sql/schema.sql, the account
    DB_USER@host with a fresh password (in run_dir/db-password, the app's
    TICKETS_DB_PASSWORD_FILE) and the grants of sql/grants.sql given to
    it, then sql/demo.sql if demo."""
    password = secrets.token_hex(16)
    write_private(os.path.join(run_dir, "db-password"), password + "\n")
    conn = root_connect(socket_path, db=None)
    try:
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8mb4 "
                    "COLLATE utf8mb4_unicode_ci" % DB_NAME)
        cur.execute("DROP USER IF EXISTS %s@%s", [DB_USER, host])
        cur.execute("CREATE USER %s@%s IDENTIFIED BY %s",
                    [DB_USER, host, password])
    finally:
        conn.close()
    load_sql(socket_path, "schema.sql")
    # sql/grants.sql names 'tickets'@'localhost': the same grants for the
    # account of another host (the app hosts' subnet of tests/cluster)
    path = os.path.join(ROOT, "sql", "grants.sql")
    with open(path) as f:
        grants = f.read()
    account = "'%s'@'localhost'" % DB_USER
    if account not in grants:
        raise StackError("%s no longer names %s" % (path, account))
    grants = grants.replace(account, "'%s'@'%s'" % (DB_USER, host))
    mariadb_client(socket_path, grants.encode(), what="loading " + path)
    if demo:
        load_sql(socket_path, "demo.sql")
