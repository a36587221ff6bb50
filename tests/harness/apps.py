"""App instances: the environment an instance of a run gets, and one
tickets-fcgi process, on a unix socket under `spawn-fcgi -n` (Stack) or on
TCP with TICKETS_LISTEN inside a host's namespace (tests/cluster).

Standard library only."""

import json
import os
import subprocess
import time

from .fastcgi import fcgi_request
from .mariadb import DB_NAME, DB_USER
from .processes import StackError, guarded, stop_process, wait_for

# Environment of the app instances under test (the contract's defaults
# otherwise). `make run` leaves them to the app.
# Pacing by user and the events list's cache are off for the tests: they
# empty the tables between tests and reuse the same ids, which production
# never does, so an answer the app remembers for a second (a ticket, the
# list) would be one of the previous test. tests/integration/test_pacing.py
# turns both on, at their defaults.
TEST_APP_ENV = {"TICKETS_THREADS": "8", "TICKETS_LOCK_TIMEOUT": "1",
                "TICKETS_PACE_RATE": "0", "TICKETS_EVENTS_CACHE": "0"}


def app_env(run_dir, db, *extra, tls_ca=None):
    """The environment of an app instance of run_dir: the caller's without
    its TICKETS_* variables, the database (db: root's unix socket path, or
    (host, port) over TCP, verified against tls_ca if given), the account
    DB_USER with run_dir/db-password, the JWT secret run_dir/jwt-secret,
    then each dict of extra in turn."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_")}
    if isinstance(db, str):
        env["TICKETS_DB_SOCKET"] = db
    else:
        env["TICKETS_DB_HOST"], env["TICKETS_DB_PORT"] = db[0], str(db[1])
    if tls_ca:
        env["TICKETS_DB_TLS_CA"] = tls_ca
    env.update({
        "TICKETS_DB_USER": DB_USER,
        "TICKETS_DB_PASSWORD_FILE": os.path.join(run_dir, "db-password"),
        "TICKETS_DB_NAME": DB_NAME,
        "TICKETS_JWT_SECRET_FILE": os.path.join(run_dir, "jwt-secret"),
    })
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    for e in extra:
        env.update(e or {})
    return env


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


class AppInstance(object):
    """One tickets-fcgi process on its own socket (a unix path, or a
    (host, port) pair).  By default under `spawn-fcgi -n`, which binds the
    socket and execs the app in place, so .pid is the app's pid.

    listen_env: no spawn-fcgi, the app binds TICKETS_LISTEN itself.
    wrap(cmd): the command as started (default guarded(); tests/cluster
    starts it inside a host's namespace).  call(fn, *args): how the
    harness reaches the socket (tests/cluster: from the front host)."""

    def __init__(self, index, socket_path, log_path, app_bin, env,
                 listen_env=False, wrap=guarded, call=_call):
        self.index = index
        self.socket = socket_path
        self.log_path = log_path
        self.bin = app_bin
        self.env = env
        self.listen_env = listen_env
        self.wrap = wrap
        self.call = call
        self.proc = None
        self.stopped = False   # stopped on purpose (not a crash)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def tcp(self):
        """True when .socket is a (host, port) pair, not a unix path."""
        return isinstance(self.socket, tuple)

    @property
    def upstream(self):
        """The address as nginx's `server` directive writes it."""
        return ("%s:%d" % self.socket if self.tcp else "unix:" + self.socket)

    def start(self):
        where = (["-a", self.socket[0], "-p", str(self.socket[1])] if self.tcp
                 else ["-s", self.socket, "-M", "0660"])
        cmd = ["spawn-fcgi", "-n"] + where + ["-b", "1024", "--", self.bin]
        if self.listen_env:
            self.env = dict(self.env, TICKETS_LISTEN=self.upstream)
            cmd = [self.bin]
        with open(self.log_path, "ab") as log:
            log.write(("--- %s start: %s\n" % (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                " ".join("%s=%s" % kv for kv in sorted(self.env.items())
                         if kv[0].startswith("TICKETS_")))).encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.wrap(cmd), env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, cwd=os.path.dirname(self.log_path),
                start_new_session=True)
        self.stopped = False

    def wait_ready(self, timeout=20):
        """The socket exists as soon as spawn-fcgi binds it, before the app
        runs; so ask the app itself, over FastCGI, for /api/health."""
        def healthy():
            r = self.call(fcgi_request, self.socket, "GET", "/api/health",
                          timeout=5)
            if r.status != 200:
                raise StackError("health %s %s" % (r.status, r.text.strip()))
            return True
        wait_for("app instance %d (%s)" % (self.index, self.socket), healthy,
                 timeout, self.proc, self.log_path)

    def request(self, method, path, headers=None, body=b"", timeout=10):
        """A request straight to this instance, bypassing nginx."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        return self.call(fcgi_request, self.socket, method, path, headers,
                         body or b"", timeout)

    def stop(self, timeout=10):
        self.stopped = True
        return stop_process(self.proc, timeout, "app %d" % self.index)

    def __repr__(self):
        return "<AppInstance %d pid=%s %s>" % (self.index, self.pid, self.socket)

