"""The FastCGI side and the configuration (contract: "The FastCGI side",
"Configuration"): routing on DOCUMENT_URI with REQUEST_URI as fallback, the
listening socket (fd 0, unix:/path, host:port), --help/--version, flags
winning over the environment, the lock prefix and a decimal lock timeout.

The app binary is run directly here (stack.app_bin) next to the stack's
MariaDB; every process started is stopped by its pid in `finally`.
"""

import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import harness as stack_mod  # tests/harness/, on sys.path via conftest
from helpers import path

CONTRACT_VARS = [
    "TICKETS_DB_SOCKET", "TICKETS_DB_HOST", "TICKETS_DB_PORT", "TICKETS_DB_USER",
    "TICKETS_DB_PASSWORD_FILE", "TICKETS_DB_NAME", "TICKETS_JWT_SECRET_FILE",
    "TICKETS_THREADS", "TICKETS_LOCK_TIMEOUT", "TICKETS_LOCK_PREFIX", "TICKETS_LISTEN",
]


# ---------------------------------------------------------------------------
# A small FastCGI client (params exactly as given, unix or TCP)

def fcgi(address, method, params, body=b"", timeout=10):
    """One FastCGI request; `address` is a unix socket path or (host, port);
    `params` are sent as given, plus REQUEST_METHOD.  A Resp."""
    p = {"REQUEST_METHOD": method, "SERVER_PROTOCOL": "HTTP/1.1",
         "GATEWAY_INTERFACE": "CGI/1.1", "REMOTE_ADDR": "127.0.0.1",
         "REQUEST_ID": secrets.token_hex(8)}
    if body:
        p["CONTENT_LENGTH"] = str(len(body))
        p["CONTENT_TYPE"] = "application/json"
    p.update(params)
    out = stack_mod.fcgi_exchange(address, p, body, timeout)
    return stack_mod.cgi_response(out, "FastCGI %s on %s" % (method, address))


def uri_params(document_uri=None, request_uri=None, token=None):
    p = {"QUERY_STRING": ""}
    if document_uri is not None:
        p["DOCUMENT_URI"] = document_uri
        p["SCRIPT_NAME"] = document_uri
    if request_uri is not None:
        p["REQUEST_URI"] = request_uri
        p["QUERY_STRING"] = request_uri.partition("?")[2]
    if token:
        p["HTTP_AUTHORIZATION"] = "Bearer " + token
    return p


def needs_harness(stack):
    if getattr(stack, "attached", False) or not getattr(stack, "instances", None):
        pytest.skip("needs a harness-started stack")


# ---------------------------------------------------------------------------
# Routing on DOCUMENT_URI, falling back to REQUEST_URI

def test_routes_on_document_uri(stack):
    needs_harness(stack)
    sock = stack.instances[0].socket
    # DOCUMENT_URI wins over REQUEST_URI
    r = fcgi(sock, "GET", uri_params("/api/health", "/nope?x=1"))
    assert r.status == 200 and r.json == {"status": "ok"}, (r.status, r.text)
    r = fcgi(sock, "GET", uri_params("/nope", "/api/health"))
    assert r.status == 404 and r.json["error"] == "not_found", (r.status, r.text)


def test_falls_back_to_request_uri_path(stack):
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    sock = stack.instances[0].socket
    tok = stack.token(42)
    r = fcgi(sock, "GET", uri_params(None, "/api/health"))
    assert r.status == 200, (r.status, r.text)
    # the query string is not part of the path
    r = fcgi(sock, "GET", uri_params(None, "/api/events?limit=3"))
    assert r.status == 200 and [e["id"] for e in r.json["events"]] == [7], r.text
    r = fcgi(sock, "POST", uri_params(None, path(7) + "?a=b", token=tok))
    assert r.status == 201, (r.status, r.text)
    assert r.json["ticket"]["event_id"] == 7
    r = fcgi(sock, "GET", uri_params(None, path(7), token=tok))
    assert r.status == 200, (r.status, r.text)
    r = fcgi(sock, "GET", uri_params(None, "/nope?/api/health"))
    assert r.status == 404, (r.status, r.text)


def test_direct_instances_agree(stack):
    """Each instance alone answers the same (they share only the database)."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    first = None
    for inst in stack.instances:
        r = fcgi(inst.socket, "POST", uri_params(path(7), path(7), token=tok))
        if first is None:
            assert r.status == 201, r.text
            first = r.json["ticket"]
        else:
            assert r.status == 200 and r.json["ticket"] == first, r.text


# ---------------------------------------------------------------------------
# The binary: options, sockets, signals

def app_env(stack, **extra):
    """The harness's app environment, 4 threads, a 1 s lock timeout, then
    extra (None: without that variable)."""
    return stack_mod.overlay(stack_mod.app_env(
        stack.dir, stack.db_socket,
        {"TICKETS_THREADS": "4", "TICKETS_LOCK_TIMEOUT": "1"}), extra)


def run_bin(stack, args, env, timeout=10, stdin=subprocess.DEVNULL):
    return subprocess.run([stack.app_bin] + list(args), env=env, stdin=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


class App(object):
    """The app started directly, listening where `listen` says."""

    def __init__(self, stack, args=(), listen=None, address=None, **env):
        self.address = address
        self.log = tempfile.TemporaryFile()
        e = app_env(stack, **env)
        if listen is not None:
            e["TICKETS_LISTEN"] = listen
        self.proc = subprocess.Popen([stack.app_bin] + list(args), env=e,
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout=10):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("app exited %s: %s" % (self.proc.returncode, self.output()))
            try:
                r = fcgi(self.address, "GET", uri_params("/api/health"), timeout=2)
                if r.status == 200:
                    return
                last = r.status
            except (OSError, AssertionError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("app not ready: %r %s" % (last, self.output()))

    def output(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("app ignored SIGTERM for %d s" % timeout)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()
        return False


def help_flags(stack):
    r = run_bin(stack, ["--help"], app_env(stack))
    assert r.returncode == 0, r
    text = (r.stdout + r.stderr).decode()
    flags = {}
    for line in text.splitlines():
        m = re.search(r"(--[a-z0-9][a-z0-9-]*)\b.*\b(TICKETS_[A-Z_]+)", line)
        if m:
            flags[m.group(2)] = m.group(1)
    return text, flags


def test_help_lists_every_option(stack):
    needs_harness(stack)
    text, flags = help_flags(stack)
    for var in CONTRACT_VARS:
        assert var in text, "--help does not mention %s:\n%s" % (var, text)
        assert var in flags, "--help names no --flag for %s:\n%s" % (var, text)


def test_version(stack):
    needs_harness(stack)
    r = run_bin(stack, ["--version"], app_env(stack))
    assert r.returncode == 0, r
    assert re.search(rb"\d+\.\d+", r.stdout + r.stderr), r


@pytest.mark.parametrize("change", [
    {"TICKETS_JWT_SECRET_FILE": None},
    {"TICKETS_JWT_SECRET_FILE": "/nonexistent/jwt-secret"},
    {"TICKETS_LISTEN": "unix:/nonexistent-dir/app.sock"},
    {"TICKETS_LISTEN": "127.0.0.1:99999"},
    {"TICKETS_LISTEN": "not a socket address"},
    {"TICKETS_LOCK_TIMEOUT": "soon"},
    {"TICKETS_THREADS": "0"},
    {"TICKETS_LOCK_PREFIX": "x" * 60},
], ids=["no_secret", "missing_secret_file", "unix_bad_dir", "tcp_bad_port",
        "listen_garbage", "lock_timeout_garbage", "zero_threads", "prefix_too_long"])
def test_bad_configuration_exits_nonzero(stack, change, tmp_path):
    needs_harness(stack)
    env = app_env(stack, TICKETS_LISTEN="unix:%s" % (tmp_path / "a.sock"))
    for k, v in change.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    r = run_bin(stack, [], env, timeout=15)
    assert r.returncode != 0, (change, r)
    assert r.stderr.strip(), "no word on stderr for %r" % change


def test_fd0_not_a_socket_exits_nonzero(stack):
    needs_harness(stack)
    r = run_bin(stack, [], app_env(stack, TICKETS_LISTEN=None), timeout=15)
    assert r.returncode != 0, r
    assert r.stderr.strip(), r


def test_listen_unix_serves_and_stops_cleanly(stack, tmp_path):
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    sock = str(tmp_path / "direct.sock")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    # TICKETS_DB_SOCKET is used instead of host and port (nothing listens there)
    with App(stack, listen="unix:" + sock, address=sock,
             TICKETS_DB_HOST="127.0.0.1", TICKETS_DB_PORT=str(closed_port)) as app:
        app.wait_ready()
        r = fcgi(sock, "GET", uri_params(path(7), token=stack.token(42)))
        assert r.status == 404 and r.json["error"] == "no_ticket", r.text
        r = fcgi(sock, "POST", uri_params(path(7), token=stack.token(42)))
        assert r.status == 201, r.text
        assert app.stop() == 0, app.output()


def test_listen_tcp_serves(stack):
    needs_harness(stack)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with App(stack, listen="127.0.0.1:%d" % port, address=("127.0.0.1", port)) as app:
        app.wait_ready()
        r = fcgi(("127.0.0.1", port), "GET", uri_params("/api/events"))
        assert r.status == 200 and r.json == {"events": []}, r.text
        assert app.stop() == 0, app.output()


def free_port(family, host):
    s = socket.socket(family)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _answered(address, timeout=10):
    """True when the app answers a request from us, False when it closes
    the connection without an answer (a refused peer); waits while the
    socket is not listening yet."""
    end = time.monotonic() + timeout
    while True:
        try:
            return fcgi(address, "GET", uri_params("/ping"), timeout=3).status == 200
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
        except (stack_mod.StackError, ConnectionResetError):
            return False


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_web_server_addrs_for_ipv4_and_ipv6_peers(stack, host):
    """FCGI_WEB_SERVER_ADDRS is applied to every TCP peer: libfcgi's own
    check knew only IPv4, so an IPv6 listener was open to every peer."""
    needs_harness(stack)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if fam == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    other = "127.0.0.1" if fam == socket.AF_INET6 else "::1"
    listen = ("[%s]:%d" if fam == socket.AF_INET6 else "%s:%d")
    for allowed, served in ((other, False), ("%s, %s" % (other, host), True)):
        port = free_port(fam, host)
        with App(stack, listen=listen % (host, port),
                 FCGI_WEB_SERVER_ADDRS=allowed) as app:
            assert _answered((host, port)) is served, (allowed, app.output())
            assert app.stop() == 0, app.output()


def test_web_server_addrs_must_be_addresses(stack):
    needs_harness(stack)
    r = run_bin(stack, [], app_env(stack, TICKETS_LISTEN="127.0.0.1:%d" % free_port(
        socket.AF_INET, "127.0.0.1"), FCGI_WEB_SERVER_ADDRS="127.0.0.1,nginx.local"),
        timeout=15)
    assert r.returncode != 0
    assert b"FCGI_WEB_SERVER_ADDRS" in r.stderr and b"nginx.local" in r.stderr, r.stderr


def test_flags_win_over_environment(stack, tmp_path):
    needs_harness(stack)
    _, flags = help_flags(stack)
    stack.make_user(42)
    stack.make_event(7)
    sock = str(tmp_path / "flag.sock")
    args = ["%s=unix:%s" % (flags["TICKETS_LISTEN"], sock),
            "%s=%s" % (flags["TICKETS_JWT_SECRET_FILE"], stack.secret_file)]
    with App(stack, args=args, listen="unix:/nonexistent-dir/env.sock", address=sock,
             TICKETS_JWT_SECRET_FILE="/nonexistent/secret") as app:
        app.wait_ready()
        r = fcgi(sock, "POST", uri_params(path(7), token=stack.token(42)))
        assert r.status == 201, r.text
        assert app.stop() == 0


def test_wrong_db_password_is_503_not_a_crash(stack, tmp_path):
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    pw = tmp_path / "wrong-password"
    pw.write_text("not-the-password\n")
    sock = str(tmp_path / "pw.sock")
    with App(stack, listen="unix:" + sock, address=sock,
             TICKETS_DB_PASSWORD_FILE=str(pw)) as app:
        end = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < end:
            assert app.proc.poll() is None, app.output()
            time.sleep(0.05)
        r = fcgi(sock, "GET", uri_params("/api/health"))
        assert r.status == 503 and r.json == {"status": "unavailable"}, (r.status, r.text)
        r = fcgi(sock, "POST", uri_params(path(7), token=stack.token(42)))
        assert r.status == 503 and r.json["error"] == "unavailable", (r.status, r.text)
        assert "retry-after" in r.headers, r.headers
        # auth still works without the database
        r = fcgi(sock, "POST", uri_params(path(7)))
        assert r.status == 401, r.text
        assert app.stop() == 0
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 0


def test_lock_prefix_and_decimal_lock_timeout(stack, tmp_path):
    """TICKETS_LOCK_PREFIX names the lock; TICKETS_LOCK_TIMEOUT=0.6 waits
    about 0.6 s; the default name no longer blocks this app."""
    needs_harness(stack)
    for u in (42, 43):
        stack.make_user(u)
    stack.make_event(7)
    sock = str(tmp_path / "prefix.sock")
    held = stack.db()
    try:
        cur = held.cursor()
        cur.execute("SELECT GET_LOCK('itest_prefix:42', 0), GET_LOCK('tickets:user:43', 0)")
        assert cur.fetchone() == (1, 1)
        with App(stack, listen="unix:" + sock, address=sock,
                 TICKETS_LOCK_PREFIX="itest_prefix:", TICKETS_LOCK_TIMEOUT="0.6") as app:
            app.wait_ready()
            t0 = time.monotonic()
            r = fcgi(sock, "POST", uri_params(path(7), token=stack.token(42)))
            took = time.monotonic() - t0
            assert r.status == 503 and r.json["error"] == "busy", (r.status, r.text)
            assert "retry-after" in r.headers, r.headers
            assert 0.55 <= took < 2.0, took
            t0 = time.monotonic()
            r = fcgi(sock, "POST", uri_params(path(7), token=stack.token(43)))
            assert r.status == 201, (r.status, r.text)
            assert time.monotonic() - t0 < 0.5
            assert app.stop() == 0
    finally:
        held.close()


def test_one_process_serves_many_requests_at_once(stack, tmp_path):
    """Multithreaded: while claims of two users wait for their locks, the
    same process answers other requests at once."""
    needs_harness(stack)
    for u in (42, 43, 44):
        stack.make_user(u)
    stack.make_event(7)
    sock = str(tmp_path / "mt.sock")
    held = stack.db()
    try:
        cur = held.cursor()
        cur.execute("SELECT GET_LOCK('tickets:user:42', 0), GET_LOCK('tickets:user:43', 0)")
        assert cur.fetchone() == (1, 1)
        with App(stack, listen="unix:" + sock, address=sock, TICKETS_THREADS="4",
                 TICKETS_LOCK_TIMEOUT="1.5") as app:
            app.wait_ready()
            slow = []

            def waiting(u):
                r = fcgi(sock, "POST", uri_params(path(7), token=stack.token(u)))
                slow.append(r.status)

            ts = [threading.Thread(target=waiting, args=(u,)) for u in (42, 43)]
            for t in ts:
                t.start()
            time.sleep(0.2)
            t0 = time.monotonic()
            assert fcgi(sock, "GET", uri_params("/api/health")).status == 200
            r = fcgi(sock, "POST", uri_params(path(7), token=stack.token(44)))
            assert r.status == 201, r.text
            assert time.monotonic() - t0 < 0.5
            assert slow == [], "the waiting claims ended first"
            for t in ts:
                t.join(10)
            assert slow == [503, 503], slow
            assert app.stop() == 0
    finally:
        held.close()


def test_secret_is_the_file_less_one_trailing_newline(stack, tmp_path):
    """The secret file "<32 bytes>\n\n" holds the secret "<32 bytes>\n"."""
    needs_harness(stack)
    stack.make_user(42)
    stack.make_event(7)
    base = b"0123456789abcdef0123456789abcdef"
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(base + b"\n\n")
    sock = str(tmp_path / "secret.sock")
    with App(stack, listen="unix:" + sock, address=sock,
             TICKETS_JWT_SECRET_FILE=str(secret_file)) as app:
        app.wait_ready()
        for secret, status in ((base, 401), (base + b"\n\n", 401),
                               (stack.secret, 401), (base + b"\n", 404)):
            tok = stack.token(42, secret=secret)
            r = fcgi(sock, "GET", uri_params(path(7), token=tok))
            assert r.status == status, (secret, r.status, r.text)
        assert app.stop() == 0
