#!/usr/bin/env python3
"""The stack for the browser tests, plus a small control server for them.

    python3 tests/browser/serve.py --state FILE

starts tests/harness's Stack with the page (web/), the demo data and its
demo sign-in, and the PHP example under php-fpm; then serves a JSON control
API on 127.0.0.1 (a random port and key, both in FILE, mode 0600) through
which the node tests reach what a browser cannot: SQL as root, tokens, the
database's stop and start, a held per-user lock, the harness's invariant
check. SIGTERM or SIGINT stops everything by pid; the stack's temp dir is
kept (and its logs printed) when FILE.failed exists by then, or when
TICKETS_KEEP=1.

Standard library and pymysql only, like tests/harness.
"""

import argparse
import datetime
import decimal
import http.server
import json
import os
import secrets
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness import LOCK_PREFIX, Stack, StackError, write_private  # noqa: E402


def _plain(value):
    """A database value as JSON can carry it."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class Control(object):
    """What the control API can do to the stack. Each method takes the JSON
    body of the request as keyword arguments and returns something JSON."""

    def __init__(self, stack):
        self.stack = stack
        self.lock_threads = []

    def sql(self, query, args=None):
        return [[_plain(v) for v in row] for row in self.stack.sql(query, args)]

    def token(self, sub, exp_delta=300):
        return self.stack.token(sub, exp_delta=exp_delta)

    def reset(self):
        """Tables as sql/demo.sql leaves them (its times relative to now)."""
        self.stack.reset_tables()
        self.stack.load_sql("demo.sql")
        return True

    def make_user(self, id, premium=True):
        return self.stack.make_user(id, premium=premium)

    def make_event(self, id, title=None, free=True, quota=None,
                   starts_in=86400, issued=0):
        return self.stack.make_event(id, title, free, quota, starts_in, issued)

    def db_stop(self):
        self.stack.stop_db()
        return True

    def db_start(self):
        self.stack.start_db()
        return True

    def hold_lock(self, user, seconds):
        """Take the user's named lock on a connection of our own and keep it
        for `seconds`; returns once the lock is held."""
        conn = self.stack.db()
        cur = conn.cursor()
        cur.execute("SELECT GET_LOCK(%s, 5)", [LOCK_PREFIX + str(user)])
        if cur.fetchone()[0] != 1:
            conn.close()
            raise StackError("could not take the lock of user %s" % user)

        def release():
            time.sleep(float(seconds))
            try:
                cur.execute("SELECT RELEASE_LOCK(%s)", [LOCK_PREFIX + str(user)])
            finally:
                conn.close()
        t = threading.Thread(target=release, daemon=True)
        t.start()
        self.lock_threads.append(t)
        return True

    def check(self):
        """The harness's after-test checks: locks released, free_issued
        equal to the ticket rows, no app instance died."""
        problems = self.stack.invariant_problems(settle=2.0)
        crashed = self.stack.crashed_instances()
        if crashed:
            problems.append("app instance(s) died: %s" % crashed)
        return problems


def serve(stack, state_file):
    control = Control(stack)
    key = secrets.token_hex(16)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def do_POST(self):
            try:
                if not secrets.compare_digest(self.headers.get("X-Key", ""), key):
                    return self._send(403, {"error": "bad key"})
                name = self.path.strip("/").replace("/", "_")
                fn = getattr(control, name, None)
                if name.startswith("_") or not callable(fn):
                    return self._send(404, {"error": "no such call: %s" % self.path})
                n = int(self.headers.get("Content-Length") or 0)
                args = json.loads(self.rfile.read(n) or b"{}")
                self._send(200, {"result": fn(**args)})
            except Exception as e:  # noqa: BLE001 - reported to the test
                self._send(500, {"error": "%s: %s" % (type(e).__name__, e)})

        def _send(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = {
        "url": stack.url,
        "internal_url": stack.internal_url,
        "dir": stack.dir,
        "db_socket": stack.db_socket,
        "control_url": "http://127.0.0.1:%d" % server.server_address[1],
        "control_key": key,
        "pids": {"serve": os.getpid(), "mariadbd": stack.db_pid,
                 "nginx": stack.nginx_pid, "php_fpm": stack.php_pid,
                 "apps": [i.pid for i in stack.instances]},
    }
    tmp = state_file + ".tmp"
    write_private(tmp, json.dumps(state, indent=2) + "\n")
    os.rename(tmp, state_file)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return server


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", required=True, help="where to write the URLs, "
                   "the control port and key (JSON, mode 0600)")
    p.add_argument("--bin", default=None, help="app binary (default "
                   "$TICKETS_BIN or build/tickets-fcgi)")
    args = p.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *a: stop.set())

    stack = Stack(app_bin=args.bin, instances=2, demo=True, web=True, php=True)
    try:
        stack.start()
    except StackError as e:
        sys.stderr.write("serve.py: the stack did not start: %s\n" % e)
        return 1
    stack.write_demo_tokens(exp_delta=3600)
    sys.stderr.write("serve.py: stack on %s (php at %s/php/) in %s, started "
                     "in %.1f s\n" % (stack.url, stack.url, stack.dir,
                                      stack.timings["total"]))
    server = None
    try:
        server = serve(stack, args.state)
        while not stop.wait(0.5):
            dead = stack.crashed_instances()
            if stack.php_proc is not None and stack.php_proc.poll() is not None:
                sys.stderr.write("serve.py: php-fpm exited (%s)\n"
                                 % stack.php_proc.returncode)
                break
            if dead:
                sys.stderr.write("serve.py: app instance(s) died: %s\n" % dead)
                # keep serving: the tests fail on /check and say so
    finally:
        if server is not None:
            server.shutdown()
        failed = os.path.exists(args.state + ".failed")
        if failed:
            stack.print_logs()
        stack.stop(keep=True)
        if failed or os.environ.get("TICKETS_KEEP") == "1":
            sys.stderr.write("serve.py: stack files kept in %s\n" % stack.dir)
        else:
            stack.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
