#!/usr/bin/env python3
"""What READ COMMITTED lets each claim statement see, on the real server.

The claim's INSERT and seat UPDATE (fcgi-app/claim_sql.h, parsed from the
header so the text is the app's), in the app's order (ticket first, seat
last), in two root sessions of a scratch database `rc_check` on the given
MariaDB socket (bench/run's or tests/harness's private server):

    scripts/rc-check.py /path/to/mysql.sock

docs/PROTOCOL.md quotes its output.
"""
import os, sys, threading, time
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import pymysql
from harness import root_connect
import re
def macro(name):
    src = open(ROOT + "/fcgi-app/claim_sql.h").read()
    m = re.search(r"#define %s \\\n((?:    \".*\"(?: \\)?\n)+)" % name, src)
    return "".join(re.findall(r'"(.*?)"(?: \\)?\n', m.group(1))).replace("\\'", "'")
SEAT = macro("CLAIM_SQL_SEAT").replace("?", "%s")
INS = macro("CLAIM_SQL_INSERT").replace("?", "%s")
SOCK = sys.argv[1]

def conn():
    c = root_connect(SOCK, db="rc_check")
    c.autocommit(True)
    cur = c.cursor()
    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cur.execute("SET SESSION innodb_lock_wait_timeout = 10")
    return c

def reset(unique, quota):
    c = root_connect(SOCK, db="mysql"); c.autocommit(True); k = c.cursor()
    k.execute("DROP DATABASE IF EXISTS rc_check"); k.execute("CREATE DATABASE rc_check")
    k.execute("USE rc_check")
    import subprocess
    subprocess.run(["mariadb", "-S", SOCK, "-u", "root", "rc_check"], stdin=open(ROOT + "/sql/schema.sql"), check=True)
    if not unique:
        k.execute("ALTER TABLE free_tickets DROP INDEX free_tickets_user_event")
    k.execute("INSERT INTO users VALUES (1, UTC_TIMESTAMP() + INTERVAL 1 DAY), (2, UTC_TIMESTAMP() + INTERVAL 1 DAY)")
    k.execute("INSERT INTO events VALUES (7, 'x', UTC_TIMESTAMP() + INTERVAL 1 DAY, 1, %s, 0)", (quota,))
    c.close()

def claim_args(u): return (7, u, u, 7, u, 7)
def ins_args(u, code): return (u, 7, code, "2030-01-01 00:00:00")

def session(name, u, code, delay, hold, out, commit_before_update=False):
    c = conn(); k = c.cursor()
    time.sleep(delay)
    t0 = time.time()
    k.execute("START TRANSACTION")
    n_ins = k.execute(INS, ins_args(u, code))
    out[name + " insert rows"] = n_ins
    out[name + " insert waited s"] = round(time.time() - t0, 2)
    if n_ins != 1:
        k.execute("ROLLBACK"); c.close(); return
    t1 = time.time()
    n = k.execute(SEAT, claim_args(u))
    out[name + " seat rows"] = n
    out[name + " seat waited s"] = round(time.time() - t1, 2)
    time.sleep(hold)
    k.execute("COMMIT" if n == 1 else "ROLLBACK")
    c.close()

def run(title, unique, quota, a, b):
    reset(unique, quota)
    out = {}
    ts = [threading.Thread(target=session, args=("A",) + a + (out,)),
          threading.Thread(target=session, args=("B",) + b + (out,))]
    [t.start() for t in ts]; [t.join() for t in ts]
    c = root_connect(SOCK, db="rc_check"); k = c.cursor()
    k.execute("SELECT free_issued FROM events WHERE id = 7"); fi = k.fetchone()[0]
    k.execute("SELECT COUNT(*) FROM free_tickets"); rows = k.fetchone()[0]
    print("%s:\n   %s\n   free_issued=%s rows=%s" % (title, out, fi, rows))

# 1. the lock's order (B starts after A committed), without the unique key:
run("1 lock-alone: B after A's COMMIT, no unique key", False, None,
    (1, "a" * 32, 0, 0), (1, "b" * 32, 1.0, 0))
# 2. no lock at all, unique key: B's INSERT while A's row is uncommitted
run("2 key-alone: B's INSERT while A holds its uncommitted row", True, None,
    (1, "a" * 32, 0, 2), (1, "b" * 32, 0.5, 0))
# 3. no lock, no key: B's seat UPDATE waits for A's event row lock
run("3 no lock, no key: B overlaps A", False, None,
    (1, "a" * 32, 0, 2), (1, "b" * 32, 0.5, 0))
# 4. two users, quota 1: B's seat waits for A's row, then reads it current
run("4 two users, quota 1 (last seat)", True, 1,
    (1, "a" * 32, 0, 2), (2, "b" * 32, 0.5, 0))
