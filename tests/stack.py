"""The tickets-fcgi stack on one machine, for the integration tests and
`make run`: a private MariaDB, N app instances under spawn-fcgi, one nginx.

Everything lives in one directory (a temp dir for tests, `.run/` of the
checkout for `make run`): sockets, data, logs, the rendered nginx.conf, the
database password and the JWT secret. Nothing system-wide is used or changed;
the system's MariaDB and nginx services are never touched.

    stack = Stack(instances=2)
    stack.start()            # MariaDB, schema, grants, apps, nginx
    stack.request("GET", "/api/events").json
    stack.stop()             # reverse order: nginx, apps, MariaDB

`make run` is scripts/run-stack, a thin launcher over this module.

Options of Stack beyond the API: web=True serves the page of web/ at `/`
(and, with demo=True, the demo sign-in's /demo/tokens.json, written by
write_demo_tokens()); php=True starts php-fpm on a unix socket in the run
directory and routes /php/ to the PHP example in examples/php/.

Standard library and pymysql only (Debian: python3, python3-pymysql).
"""

import base64
import grp
import hashlib
import hmac
import http.client
import json
import os
import pwd
import re
import secrets
import ssl
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

try:
    import pymysql
except ImportError:  # pragma: no cover - reported when a DB call is made
    pymysql = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(ROOT, "build", "tickets-fcgi")


def build_for_tests(app_bin):
    """The test build beside a release binary (TICKETS_TEST_BIN, else
    <app_bin>-test, as make builds it): the only one that accepts the TEST
    ONLY switches such as TICKETS_TEST_UNSAFE_NO_LOCK."""
    return os.path.abspath(os.environ.get("TICKETS_TEST_BIN")
                           or app_bin + "-test")
DB_NAME = "tickets"
DB_USER = "tickets"
LOCK_PREFIX = "tickets:user:"
# Lines in an app's stderr that fail a test run (ASan, UBSan, TSan, LSan).
SANITIZER_MARKS = ("runtime error", "Sanitizer")
# The private MariaDB runs in a time zone other than UTC on purpose: the
# contract keeps every time in UTC, so an app that used NOW() or
# CURRENT_TIMESTAMP instead of UTC_TIMESTAMP() would be off by two hours
# here and get caught. Override with TICKETS_TEST_DB_TZ.
DB_TIME_ZONE = os.environ.get("TICKETS_TEST_DB_TZ", "+02:00")
# Environment of the app instances under test (the contract's defaults
# otherwise). `make run` leaves them to the app.
# Pacing by user and the events list's cache are off for the tests: they
# empty the tables between tests and reuse the same ids, which production
# never does, so an answer the app remembers for a second (a ticket, the
# list) would be one of the previous test. tests/integration/test_pacing.py
# turns both on, at their defaults.
TEST_APP_ENV = {"TICKETS_THREADS": "8", "TICKETS_LOCK_TIMEOUT": "1",
                "TICKETS_PACE_RATE": "0", "TICKETS_EVENTS_CACHE": "0"}
# nginx/tickets.conf's `keepalive` in the upstream (with fastcgi_keep_conn
# on in snippets/tickets-fastcgi.conf): the test stack runs as shipped.
UPSTREAM_KEEPALIVE = 16
WEB_ROOT = os.path.join(ROOT, "web")
PHP_ROOT = os.path.join(ROOT, "examples", "php")
# The users of sql/demo.sql, as the demo sign-in of `make run` lists them.
DEMO_USERS = [
    (1, "User 1: premium"),
    (2, "User 2: premium, with an order for Jazz in the park"),
    (3, "User 3: premium expired yesterday"),
    (4, "User 4: never premium"),
]


def install_datadir(datadir, log_path):
    """Create a MariaDB data directory (root with an empty password, no
    test database); StackError with the log's tail if it fails. Its
    temporary files go to datadir + "-tmp", not to the shared /tmp, where
    the bootstrap of concurrent runs was seen to lose its temporary tables
    ("Could not remove temporary table", then ERROR 1051)."""
    tmpdir = datadir.rstrip("/") + "-tmp"
    os.makedirs(tmpdir, exist_ok=True)
    cmd = ["mariadb-install-db", "--no-defaults",
           "--auth-root-authentication-method=normal",
           "--skip-test-db", "--datadir=" + datadir, "--tmpdir=" + tmpdir]
    if os.geteuid() == 0:
        cmd.append("--user=root")
    with open(log_path, "wb") as log:
        rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log)
    if rc != 0:
        raise StackError("mariadb-install-db failed (%d):\n%s" % (
            rc, tail_file(log_path)))


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


class StackError(RuntimeError):
    """The stack could not be started, or a part of it failed."""
    fatal = False   # waiting longer will not help


class MalformedResponse(StackError):
    """The app answered, but not in a form nginx accepts."""
    fatal = True


# ---------------------------------------------------------------------------
# small helpers

def _b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _write_private(path, text):
    """Write a file only its owner can read (passwords, secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def make_ca(directory, name, cn):
    """A throw-away CA (EC P-256, valid 2 days) made with openssl:
    <name>.pem and <name>-key.pem in directory; returns the certificate's
    path."""
    os.makedirs(directory, exist_ok=True)
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + "-key.pem")
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out",
              cert, "-days", "2", "-subj", "/CN=" + cn])
    return cert


def make_cert(directory, name, cn, ca, san=None, client=False):
    """A certificate for cn signed by the CA made by make_ca (ca: its
    certificate's path): <name>.pem, <name>-key.pem; san like
    "IP:127.0.0.1,DNS:localhost".  Returns (certificate, key)."""
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + "-key.pem")
    csr = os.path.join(directory, name + ".csr")
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
        if san:
            f.write("subjectAltName=%s\n" % san)
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn])
    _openssl(["x509", "-req", "-in", csr, "-CA", ca, "-CAkey",
              ca[:-len(".pem")] + "-key.pem", "-CAcreateserial", "-days", "2",
              "-extfile", ext, "-out", cert])
    os.chmod(key, 0o600)
    return cert, key


def _openssl(args):
    r = subprocess.run(["openssl"] + args, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise StackError("openssl %s failed:\n%s" % (
            " ".join(args[:2]), r.stdout.decode("utf-8", "replace")))


def tail_file(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read: %s)" % e
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _children(pid):
    """Direct children of pid (nginx workers of a master)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _is_nginx_worker(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().startswith(b"nginx: worker")
    except OSError:
        return False


def _guarded(cmd):
    """cmd, run so that it gets SIGTERM if the harness dies without stopping
    it (pytest killed by a timeout, say), instead of living on. The kernel
    ties this to the thread that starts the process, so only from the main
    thread; setpriv (util-linux) execs cmd in place, the pid stays the same."""
    if (threading.current_thread() is threading.main_thread()
            and shutil.which("setpriv")):
        return ["setpriv", "--pdeathsig", "TERM", "--"] + list(cmd)
    return list(cmd)


def _stop_process(proc, timeout, name=""):
    """SIGTERM, wait up to timeout seconds, then SIGKILL. Returns the exit
    status. proc is a subprocess.Popen of ours."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            sys.stderr.write("stack: %s (pid %d) ignored SIGTERM for %.0f s; "
                             "killing it\n" % (name, proc.pid, timeout))
            proc.kill()
            proc.wait()
    return proc.returncode


def _wait_for(what, check, timeout, proc=None, log=None, interval=0.02):
    """Poll check() until it returns a true value; fail early when proc dies."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - kept for the message
            if getattr(e, "fatal", False):
                raise
            last_error = e
        if proc is not None and proc.poll() is not None:
            raise StackError("%s: the process exited with status %s%s" % (
                what, proc.returncode,
                ("; last lines of %s:\n%s" % (log, tail_file(log))) if log else ""))
        if time.monotonic() > deadline:
            raise StackError("%s: not ready after %.0f s (%s)%s" % (
                what, timeout, last_error,
                ("; last lines of %s:\n%s" % (log, tail_file(log))) if log else ""))
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


# ---------------------------------------------------------------------------
# HTTP

class Resp(object):
    """An HTTP answer: .status, .headers (lower-case names), .body (bytes),
    .text, .json (parsed, or None when the body is not JSON)."""

    def __init__(self, status, headers, body, reason=""):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8", "replace")
        try:
            self.json = json.loads(self.text) if self.text.strip() else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<Resp %s %s>" % (self.status, self.text[:200])


def http_request(base_url, method, path, token=None, body=None, headers=None,
                 timeout=30, tls_context=None):
    """One request on a fresh connection (thread-safe). body: bytes, str, or
    a dict/list that is sent as JSON.  An https:// base is spoken to with
    tls_context (an ssl.SSLContext; default: the system's CAs)."""
    if path.startswith(("http://", "https://")):
        full = urllib.parse.urlsplit(path)
        base_url = full.scheme + "://" + full.netloc
        path = (full.path or "/") + ("?" + full.query if full.query else "")
    u = urllib.parse.urlsplit(base_url)
    hdrs = {}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode("utf-8")
        hdrs["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode("utf-8")
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    hdrs.update(headers or {})
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                           context=tls_context)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        out = {}
        for k, v in r.getheaders():
            k = k.lower()
            out[k] = out[k] + ", " + v if k in out else v
        return Resp(r.status, out, data, r.reason)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# FastCGI, straight to one instance's socket (readiness, per-instance checks)

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN = 1, 3, 4, 5
FCGI_STDOUT, FCGI_STDERR = 6, 7


def _fcgi_record(rtype, content, request_id=1):
    out = b""
    while True:
        chunk, content = content[:65535], content[65535:]
        pad = -len(chunk) % 8
        out += struct.pack("!BBHHBx", 1, rtype, request_id, len(chunk), pad)
        out += chunk + b"\0" * pad
        if not content:
            return out


def _fcgi_pair(name, value):
    name, value = name.encode(), value.encode()
    out = b""
    for n in (len(name), len(value)):
        out += struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
    return out + name + value


def _fcgi_payload(params, body=b"", keep_conn=False):
    """The records of one request as nginx sends them (request id 1)."""
    payload = _fcgi_record(FCGI_BEGIN_REQUEST,
                           struct.pack("!HB5x", 1, 1 if keep_conn else 0))
    payload += _fcgi_record(FCGI_PARAMS, b"".join(
        _fcgi_pair(k, v) for k, v in params.items()))
    payload += _fcgi_record(FCGI_PARAMS, b"")
    if body:
        payload += _fcgi_record(FCGI_STDIN, body)
    return payload + _fcgi_record(FCGI_STDIN, b"")


def _fcgi_read_response(s):
    """Read records from socket s up to FCGI_END_REQUEST; the stdout bytes.
    StackError if the connection closes before it."""
    buf, stdout = b"", b""
    while True:
        data = s.recv(65536)
        if not data:
            raise StackError("connection closed before FCGI_END_REQUEST")
        buf += data
        while len(buf) >= 8:
            _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            if len(buf) < 8 + clen + plen:
                break
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == FCGI_STDOUT:
                stdout += content
            elif rtype == FCGI_END_REQUEST:
                return stdout


def _fcgi_socket(address, timeout):
    """A socket for address: a unix path, (IPv4 host, port) or (IPv6, port)."""
    fam = (socket.AF_UNIX if isinstance(address, str) else
           socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    return s


def fcgi_exchange(address, params, body=b"", timeout=10):
    """Send one FastCGI request (BEGIN_REQUEST, the params as given, the
    body) to `address`, a unix socket path or (host, port), and return the
    responder's stdout bytes.  StackError if the connection closes before
    FCGI_END_REQUEST."""
    s = _fcgi_socket(address, timeout)
    try:
        s.connect(address)
        s.sendall(_fcgi_payload(params, body))
        return _fcgi_read_response(s)
    finally:
        s.close()


def _fcgi_params(method, path, headers=None, body=b""):
    """The params nginx's fastcgi_params would send for this request."""
    uri, _, query = path.partition("?")
    params = {
        "QUERY_STRING": query, "REQUEST_METHOD": method,
        "CONTENT_TYPE": "application/json" if body else "",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "SCRIPT_NAME": uri, "REQUEST_URI": path, "DOCUMENT_URI": uri,
        "DOCUMENT_ROOT": "/", "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "tests/stack.py", "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0", "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "0",
        "SERVER_NAME": "localhost", "REDIRECT_STATUS": "200",
        "REQUEST_ID": secrets.token_hex(16), "HTTP_HOST": "localhost",
    }
    for k, v in (headers or {}).items():
        params["HTTP_" + k.upper().replace("-", "_")] = v
    return params


def _cgi_response(stdout, what):
    """Resp from a CGI response: header lines, an empty line, the body
    (nginx accepts LF or CRLF line ends; without the empty line it answers
    502)."""
    m = re.search(b"\r?\n\r?\n", stdout)
    if not m:
        raise MalformedResponse("%s: malformed response, no empty line after "
                                "the headers: %r" % (what, stdout[:300]))
    head, resp_body = stdout[:m.start()], stdout[m.end():]
    status, reason, hdrs = 200, "OK", {}
    for line in re.split(r"\r?\n", head.decode("latin-1")):
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip()
        if k == "status":
            code, _, reason = v.partition(" ")
            status = int(code)
        elif k:
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
    return Resp(status, hdrs, resp_body, reason)


def fcgi_request(sock_path, method, path, headers=None, body=b"", timeout=10):
    """Send one request to a FastCGI responder the way nginx would, without
    keep-alive. Returns Resp (status from the CGI Status header)."""
    what = "FastCGI %s %s on %s" % (method, path, sock_path)
    try:
        stdout = fcgi_exchange(sock_path, _fcgi_params(method, path, headers,
                                                       body), body, timeout)
    except StackError as e:
        raise StackError("%s: %s" % (what, e))
    return _cgi_response(stdout, what)


class FcgiConnection(object):
    """One FastCGI connection kept open across requests, as nginx with
    `keepalive` and `fastcgi_keep_conn on` uses it: every request carries
    FCGI_KEEP_CONN, and the app must leave the connection open after its
    answer. request() raises StackError if the app closed it instead."""

    def __init__(self, address, timeout=10):
        self.address = address
        self.sock = _fcgi_socket(address, timeout)
        self.sock.connect(address)

    def request(self, method, path, headers=None, body=b""):
        what = "FastCGI %s %s on a kept connection to %s" % (
            method, path, self.address)
        self.sock.sendall(_fcgi_payload(_fcgi_params(method, path, headers,
                                                     body), body, True))
        try:
            return _cgi_response(_fcgi_read_response(self.sock), what)
        except StackError as e:
            raise StackError("%s: %s" % (what, e))

    def send(self, data):
        """Raw bytes on the connection (a request in parts, a stall)."""
        self.sock.sendall(data)

    def request_bytes(self, method, path, headers=None, body=b""):
        """The bytes of a keep-alive request, to send in parts."""
        return _fcgi_payload(_fcgi_params(method, path, headers, body), body,
                             True)

    def closed_by_peer(self, timeout):
        """True when the app closes the connection within timeout s."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------
# JWT

def make_token(secret, sub, exp_delta=300, alg="HS256", header=None,
               sub_raw=False, **claims):
    """A JWT signed with secret (bytes or str).

    sub: an int becomes its decimal string (as the site's issuer does) unless
    sub_raw=True; anything else is passed as given; None leaves it out.
    exp: now + exp_delta seconds; exp_delta=None leaves exp out; an explicit
    exp=... in claims wins. header: entries merged over {"alg", "typ"}; a
    value of None removes that entry. alg "HS256"/"HS384"/"HS512" sign with
    HMAC, "none" gives an empty signature, anything else a random one.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    hdr = {"alg": alg, "typ": "JWT"}
    for k, v in (header or {}).items():
        if v is None:
            hdr.pop(k, None)
        else:
            hdr[k] = v
    payload = {}
    if sub is not None:
        payload["sub"] = str(sub) if isinstance(sub, int) and not sub_raw \
            and not isinstance(sub, bool) else sub
    if exp_delta is not None:
        payload["exp"] = int(time.time()) + int(exp_delta)
    payload.update(claims)
    signing_input = (_b64u(json.dumps(hdr, separators=(",", ":")).encode())
                     + "." +
                     _b64u(json.dumps(payload, separators=(",", ":")).encode()))
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
               "HS512": hashlib.sha512}
    if alg in digests:
        sig = hmac.new(secret, signing_input.encode("ascii"), digests[alg]).digest()
    elif alg.lower() == "none":
        sig = b""
    else:
        sig = secrets.token_bytes(256)
    return signing_input + "." + _b64u(sig)


# ---------------------------------------------------------------------------
# the parts

class AppInstance(object):
    """One tickets-fcgi process under `spawn-fcgi -n` on its own socket.
    spawn-fcgi execs the app in place, so .pid is the app's pid."""

    def __init__(self, index, socket_path, log_path, app_bin, env):
        self.index = index
        self.socket = socket_path
        self.log_path = log_path
        self.bin = app_bin
        self.env = env
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
        with open(self.log_path, "ab") as log:
            log.write(("--- %s start: %s\n" % (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                " ".join("%s=%s" % kv for kv in sorted(self.env.items())
                         if kv[0].startswith("TICKETS_")))).encode())
            log.flush()
            self.proc = subprocess.Popen(
                _guarded(cmd), env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, cwd=os.path.dirname(self.log_path),
                start_new_session=True)
        self.stopped = False

    def wait_ready(self, timeout=20):
        """The socket exists as soon as spawn-fcgi binds it, before the app
        runs; so ask the app itself, over FastCGI, for /api/health."""
        def healthy():
            r = fcgi_request(self.socket, "GET", "/api/health", timeout=5)
            if r.status != 200:
                raise StackError("health %s %s" % (r.status, r.text.strip()))
            return True
        _wait_for("app instance %d (%s)" % (self.index, self.socket), healthy,
                  timeout, self.proc, self.log_path)

    def request(self, method, path, headers=None, body=b"", timeout=10):
        """A request straight to this instance, bypassing nginx."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        return fcgi_request(self.socket, method, path, headers, body or b"",
                            timeout)

    def stop(self, timeout=10):
        self.stopped = True
        return _stop_process(self.proc, timeout, "app %d" % self.index)

    def __repr__(self):
        return "<AppInstance %d pid=%s %s>" % (self.index, self.pid, self.socket)


class Stack(object):
    """The whole stack in one directory. See the module docstring.

    Attributes: url, internal_url, secret (bytes), dir, db_socket,
    instances (list of AppInstance; empty when attached to a running stack).
    """

    def __init__(self, dir=None, instances=2, app_bin=None, app_env=None,
                 port=None, internal_port=None, demo=False, keep=False,
                 quiet=False, web=False, php=False, keepalive=None, tcp=False,
                 tls_port=None, db_tls=False):
        self.dir = os.path.abspath(dir) if dir else None
        self.own_dir = dir is None
        self.default_count = instances
        self.app_bin = os.path.abspath(app_bin or os.environ.get("TICKETS_BIN")
                                       or DEFAULT_BIN)
        # extra environment of every instance, on top of the TICKETS_DB_*
        # and secret settings (TEST_APP_ENV for tests)
        self.base_env = dict(TEST_APP_ENV if app_env is None else app_env)
        self.extra_env = {}
        self.extra_bin = None   # restart_apps(test_build=True)
        self.port = port
        self.internal_port = internal_port
        self.demo = demo
        self.web = web        # serve web/ at / (and /demo/tokens.json if demo)
        self.php = php        # php-fpm with examples/php/ at /php/
        # nginx also serves the public server over TLS (HTTP/2) on tls_port
        # (free port if None), with a throw-away certificate of its own CA
        self.tls_port = tls_port
        self.tls_url = None
        # db_tls: MariaDB also listens on 127.0.0.1:db_port with TLS (a
        # throw-away CA and server certificate in tls/) and
        # require_secure_transport=ON; the apps connect there over TCP,
        # verifying the server against tls/db-ca.pem
        self.db_tls = db_tls
        self.db_port = None
        self.php_proc = None
        # nginx `keepalive N` (idle kept connections per nginx worker) in
        # the upstream; 0: none. The shipped default unless given.
        self.keepalive = UPSTREAM_KEEPALIVE if keepalive is None else keepalive
        # nginx's per-address limit of tokenless requests (the shipped
        # snippets/tickets-public.conf) is off in the harness: every client
        # of every test is 127.0.0.1, so it would pace a whole suite as one
        # client. set_addr_limit(True) puts it back (tests/integration/
        # test_pacing.py).
        self.addr_limit = False
        self.tcp = tcp        # app instances on 127.0.0.1 TCP ports
        self.keep = keep
        self.quiet = quiet
        self.attached = False
        self.instances = []
        self.secret = None
        self.url = self.internal_url = None
        self.db_proc = self.nginx_proc = None
        self._nginx_workers = []
        self._started = False
        self.timings = {}

    # -- paths

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    @property
    def db_socket(self):
        return self._db_socket if self.attached else self.path("mysql.sock")

    @property
    def secret_file(self):
        return self._secret_file if self.attached else self.path("jwt-secret")

    @property
    def db_pid(self):
        return self.db_proc.pid if self.db_proc else None

    @property
    def php_pid(self):
        return self.php_proc.pid if self.php_proc else None

    @property
    def nginx_pid(self):
        return self.nginx_proc.pid if self.nginx_proc else None

    def _log(self, msg):
        if not self.quiet:
            sys.stderr.write("stack: %s\n" % msg)

    # -- attach to a stack started elsewhere (`make run`)

    @classmethod
    def attach(cls, url=None, state_file=None):
        """Use a running `make run` stack: URL (TICKETS_TEST_URL), database
        socket and secret from its .run/stack.json. Nothing is started or
        stopped; instances is empty, restart_apps() and the database
        controls skip the calling test."""
        state_file = state_file or os.path.join(ROOT, ".run", "stack.json")
        try:
            with open(state_file) as f:
                state = json.load(f)
        except OSError as e:
            raise StackError("cannot attach to %s: %s (is `make run` "
                             "running?)" % (state_file, e))
        s = cls(dir=state["dir"], quiet=True)
        s.attached = True
        s.url = (url or state["url"]).rstrip("/")
        s.internal_url = state["internal_url"]
        s.tls_url = state.get("tls_url")
        s._db_socket = state["db_socket"]
        s._secret_file = state["secret_file"]
        with open(s._secret_file, "rb") as f:
            s.secret = f.read()
        if s.secret.endswith(b"\n"):
            s.secret = s.secret[:-1]
        s._attached_logs = state.get("app_logs", [])
        s._started = True
        return s

    def _not_attached(self, what):
        if self.attached:
            msg = "%s needs a stack started by the harness, not TICKETS_TEST_URL" % what
            if "pytest" in sys.modules:
                import pytest
                pytest.skip(msg)
            raise StackError(msg)

    # -- start and stop

    def start(self):
        """Start everything; on failure stop what was started, keep the
        directory and raise StackError with the tails of the logs."""
        t0 = time.monotonic()
        if not os.access(self.app_bin, os.X_OK):
            raise StackError("%s is missing or not executable: run `make` "
                             "first (or set TICKETS_BIN)" % self.app_bin)
        if pymysql is None:
            raise StackError("python3-pymysql is missing: run "
                             "scripts/install-deps.sh")
        for tool in ("mariadbd", "mariadb-install-db", "mariadb", "nginx",
                     "spawn-fcgi"):
            if not shutil.which(tool, path=os.environ.get("PATH", "") +
                                ":/usr/sbin:/sbin"):
                raise StackError("%s not found: run scripts/install-deps.sh" % tool)
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="tickets-stack-")
        else:
            os.makedirs(self.dir, exist_ok=True)
        longest = self.path("app%d.sock" % max(0, self.default_count - 1))
        if len(self.path("mysql.sock")) > 100 or len(longest) > 100:
            raise StackError("%s: path too long for unix sockets (max ~100 "
                             "bytes); use a shorter directory" % self.dir)
        try:
            self._start_db()
            self.timings["db"] = time.monotonic() - t0
            self._setup_db()
            self.timings["db+schema"] = time.monotonic() - t0
            self._write_secret()
            self._start_apps(self.default_count)
            self.timings["apps"] = time.monotonic() - t0
            self._start_nginx()
            if self.php:
                self._start_php()
            self.timings["total"] = time.monotonic() - t0
        except BaseException as e:
            self._log("start failed: %s" % e)
            self.stop(keep=True)
            self.print_logs()
            raise
        self._started = True
        return self

    def stop(self, keep=None):
        """Stop in reverse order (nginx, apps, MariaDB): SIGTERM, then
        SIGKILL after a timeout. The directory is removed when the harness
        made it, unless keep (or self.keep, or TICKETS_KEEP=1)."""
        if self.attached:
            return
        t0 = time.monotonic()
        if self.php_proc is not None:
            _stop_process(self.php_proc, 10, "php-fpm")
            self.php_proc = None
        if self.nginx_proc is not None:
            workers = _children(self.nginx_proc.pid) or self._nginx_workers
            _stop_process(self.nginx_proc, 10, "nginx")
            for pid in workers:   # a SIGKILLed master leaves its workers
                if _is_nginx_worker(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.nginx_proc = None
        for inst in self.instances:
            if inst.running():
                rc = inst.stop(10)
                if rc != 0:
                    self._log("app %d (pid %d) exited with status %s on "
                              "SIGTERM (expected 0)" % (inst.index, inst.pid, rc))
        if self.db_proc is not None:
            if getattr(self, "_db_paused", False) and self.db_proc.poll() is None:
                os.kill(self.db_proc.pid, signal.SIGCONT)
                self._db_paused = False
            _stop_process(self.db_proc, 60, "mariadbd")
            self.db_proc = None
        self.timings["stop"] = time.monotonic() - t0
        keep = self.keep if keep is None else keep
        if not keep:
            self.remove()

    def remove(self):
        """Delete the stack's directory if the harness made it (a temp dir)
        and TICKETS_KEEP=1 is not set (then say where the files are). A
        directory given by the caller (`make run`: .run/) stays."""
        if (self.attached or not self.own_dir or not self.dir
                or not os.path.isdir(self.dir)):
            return
        if os.environ.get("TICKETS_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            self._log("files kept in %s" % self.dir)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *rest):
        self.stop(keep=exc_type is not None or None)
        return False

    def print_logs(self, lines=30, out=None):
        """The tail of every log, for a failed start or test run."""
        out = out or sys.stderr
        if not self.dir or self.attached:
            return
        names = ["mariadb.err", "nginx-error.log", "nginx.out", "php-fpm.log",
                 "php-error.log"]
        names += sorted(n for n in os.listdir(self.dir)
                        if n.startswith("app") and n.endswith(".log"))
        for name in names:
            p = self.path(name)
            if os.path.exists(p):
                out.write("----- %s (last %d lines)\n%s\n" % (p, lines, tail_file(p, lines)))

    # -- MariaDB

    def _db_cmd(self):
        cmd = ["mariadbd", "--no-defaults",
               "--datadir=" + self.path("db"),
               "--tmpdir=" + self.path("db-tmp"),
               "--socket=" + self.path("mysql.sock"),
               "--pid-file=" + self.path("mariadb.pid"),
               "--log-error=" + self.path("mariadb.err"),
               "--skip-log-bin",
               "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
               "--sync-binlog=0", "--innodb-buffer-pool-size=256M",
               "--max-connections=500",
               "--plugin-load-add=metadata_lock_info",
               "--default-time-zone=" + DB_TIME_ZONE,
               "--character-set-server=utf8mb4"]
        if self.db_tls:
            tls = self.path("tls")
            cmd += ["--bind-address=127.0.0.1", "--port=%d" % self.db_port,
                    "--ssl-ca=" + os.path.join(tls, "db-ca.pem"),
                    "--ssl-cert=" + os.path.join(tls, "db-server.pem"),
                    "--ssl-key=" + os.path.join(tls, "db-server-key.pem"),
                    "--require-secure-transport=ON",
                    "--performance-schema=ON"]
        else:
            cmd.append("--skip-networking")
        if os.geteuid() == 0:
            cmd.append("--user=root")
        return cmd

    def _make_tls(self, name, cn, ca_name, ca_subject):
        """A throw-away CA and a certificate `name` for 127.0.0.1 and
        localhost in the run directory's tls/, made once per directory."""
        tls = self.path("tls")
        if os.path.exists(os.path.join(tls, name + ".pem")):
            return
        ca = make_ca(tls, ca_name, ca_subject)
        make_cert(tls, name, cn, ca, san="IP:127.0.0.1,DNS:localhost")

    def _start_db(self):
        if self.db_tls:
            self._make_tls("db-server", "127.0.0.1", "db-ca",
                           "tickets test database CA")
            if self.db_port is None:
                self.db_port = _free_port()
        datadir = self.path("db")
        if not os.path.isdir(os.path.join(datadir, "mysql")):
            install_datadir(datadir, self.path("mariadb-install.log"))
        self.start_db()

    def start_db(self, timeout=60):
        """Start (or start again) the private MariaDB; wait until it answers."""
        self._not_attached("start_db()")
        if self.db_proc is not None and self.db_proc.poll() is None:
            return
        with open(self.path("mariadb.out"), "ab") as out:
            self.db_proc = subprocess.Popen(
                _guarded(self._db_cmd()), stdin=subprocess.DEVNULL, stdout=out,
                stderr=out, start_new_session=True)
        _wait_for("MariaDB", lambda: self._root_conn(db=None, timeout=2).close()
                  or True, timeout, self.db_proc, self.path("mariadb.err"))

    def stop_db(self, timeout=60):
        """Shut the private MariaDB down (clean shutdown); start_db() brings
        it back with the same data."""
        self._not_attached("stop_db()")
        _stop_process(self.db_proc, timeout, "mariadbd")

    def pause_db(self):
        """SIGSTOP MariaDB: connections hang instead of failing."""
        self._not_attached("pause_db()")
        os.kill(self.db_proc.pid, signal.SIGSTOP)
        self._db_paused = True

    def resume_db(self):
        self._not_attached("resume_db()")
        os.kill(self.db_proc.pid, signal.SIGCONT)
        self._db_paused = False

    def db_running(self):
        if self.attached:
            return True
        return self.db_proc is not None and self.db_proc.poll() is None

    def ensure_db(self):
        """MariaDB running and not paused (after a test that stopped it)."""
        if self.attached:
            return
        if getattr(self, "_db_paused", False):
            self.resume_db()
        if not self.db_running():
            self.start_db()

    def _root_conn(self, db=DB_NAME, timeout=10):
        return root_connect(self.db_socket, db, timeout)

    def _load_sql(self, filename, database=DB_NAME):
        """Load a SQL file with the mariadb client (as root)."""
        path = os.path.join(ROOT, "sql", filename)
        with open(path, "rb") as f:
            mariadb_client(self.db_socket, f.read(), database,
                           what="loading " + path)

    def _setup_db(self):
        password = secrets.token_hex(16)
        _write_private(self.path("db-password"), password + "\n")
        conn = self._root_conn(db=None)
        try:
            cur = conn.cursor()
            cur.execute("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8mb4 "
                        "COLLATE utf8mb4_unicode_ci" % DB_NAME)
            cur.execute("DROP USER IF EXISTS '%s'@'localhost'" % DB_USER)
            cur.execute("CREATE USER '%s'@'localhost' IDENTIFIED BY %%s" % DB_USER,
                        [password])
        finally:
            conn.close()
        self._load_sql("schema.sql")
        self._load_sql("grants.sql")
        if self.demo:
            self._load_sql("demo.sql")

    def _write_secret(self):
        self.secret = secrets.token_hex(32).encode("ascii")
        _write_private(self.path("jwt-secret"), self.secret.decode() + "\n")

    # -- apps

    def _app_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TICKETS_")}
        if self.db_tls:
            env.update({"TICKETS_DB_HOST": "127.0.0.1",
                        "TICKETS_DB_PORT": str(self.db_port),
                        "TICKETS_DB_TLS_CA": self.path("tls", "db-ca.pem")})
        else:
            env["TICKETS_DB_SOCKET"] = self.path("mysql.sock")
        env.update({
            "TICKETS_DB_USER": DB_USER,
            "TICKETS_DB_PASSWORD_FILE": self.path("db-password"),
            "TICKETS_DB_NAME": DB_NAME,
            "TICKETS_JWT_SECRET_FILE": self.path("jwt-secret"),
        })
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.base_env)
        env.update(self.extra_env)
        return env

    def _start_apps(self, count):
        env = self._app_env()
        self.instances = []
        for i in range(count):
            addr = (("127.0.0.1", _free_port()) if self.tcp
                    else self.path("app%d.sock" % i))
            inst = AppInstance(i, addr, self.path("app%d.log" % i),
                               self.extra_bin or self.app_bin, env)
            self.instances.append(inst)
            inst.start()
        for inst in self.instances:
            inst.wait_ready()

    def restart_apps(self, env=None, count=None, test_build=False):
        """Stop every app instance and start count (default: as at start) with
        env merged over the defaults; env=None restores the defaults.
        test_build: run the test build (build_for_tests(app_bin)), which alone
        accepts TICKETS_TEST_UNSAFE_NO_LOCK; the release binary refuses. nginx is
        reloaded so its upstream lists exactly these instances (and forgets
        failures seen before). The logs append to the same app<N>.log."""
        self._not_attached("restart_apps()")
        count = self.default_count if count is None else count
        if count < 1:
            raise ValueError("count must be at least 1")
        for inst in self.instances:
            inst.stop()
        self.extra_env = dict(env or {})
        self.extra_bin = None
        if test_build:
            self.extra_bin = build_for_tests(self.app_bin)
            if not os.access(self.extra_bin, os.X_OK):
                raise StackError("%s is missing: run `make test-build` (or "
                                 "set TICKETS_TEST_BIN)" % self.extra_bin)
        self._start_apps(count)
        self._render_nginx()
        self._reload_nginx()

    def apps_modified(self):
        """True when the apps are not the default set (env, count) or one of
        them is not running."""
        if self.attached:
            return False
        return (bool(self.extra_env) or self.extra_bin is not None
                or len(self.instances) != self.default_count
                or not all(i.running() for i in self.instances))

    def crashed_instances(self):
        """Instances that exited without being stopped by the harness."""
        return [i for i in self.instances if not i.stopped and i.proc is not None
                and i.proc.poll() is not None]

    def app_log_paths(self):
        if self.attached:
            return list(self._attached_logs)
        return sorted(os.path.join(self.dir, n) for n in os.listdir(self.dir)
                      if n.startswith("app") and n.endswith(".log"))

    def app_logs(self):
        """All app stderr so far, every instance and restart, concatenated."""
        out = []
        for p in self.app_log_paths():
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def log_mark(self):
        """Current sizes of the app logs, for sanitizer_report(since=...)."""
        mark = {}
        for p in self.app_log_paths():
            try:
                mark[p] = os.path.getsize(p)
            except OSError:
                pass
        return mark

    def sanitizer_report(self, since=None):
        """App log lines that show a sanitizer finding ("runtime error",
        "...Sanitizer..."), optionally only those after a log_mark()."""
        found = []
        for p in self.app_log_paths():
            try:
                with open(p, "rb") as f:
                    f.seek((since or {}).get(p, 0))
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            for line in text.splitlines():
                if any(m in line for m in SANITIZER_MARKS):
                    found.append("%s: %s" % (os.path.basename(p), line))
        return found

    # -- nginx

    def _render_nginx(self):
        with open(os.path.join(ROOT, "nginx", "nginx.conf.in")) as f:
            conf = f.read()
        servers = "\n        ".join(
            "server %s max_fails=1 fail_timeout=2s;" % i.upstream
            for i in self.instances)
        if self.keepalive:
            servers += "\n        keepalive %d;" % self.keepalive
        values = {
            "PREFIX": self.dir,
            "TLS_PORT": str(self.tls_port),
            "USER": pwd.getpwuid(os.geteuid()).pw_name,
            "GROUP": grp.getgrgid(os.getegid()).gr_name,
            "PORT": str(self.port),
            "INTERNAL_PORT": str(self.internal_port),
            "UPSTREAM_SERVERS": servers,
            "WEB": self._nginx_web(),
            "PHP": self._nginx_php(),
        }
        lines = []
        for line in conf.splitlines(True):
            # placeholders in comments (the template documents them) stay
            code, hash_, comment = line.partition("#")
            unknown = set(re.findall(r"@([A-Z_]+)@", code)) - set(values)
            if unknown:
                raise StackError("nginx.conf.in: unknown placeholder(s) %s"
                                 % sorted(unknown))
            code = re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], code)
            lines.append(code + hash_ + comment)
        conf = "".join(lines)
        snippets = self.path("snippets")
        os.makedirs(snippets, exist_ok=True)
        src = os.path.join(ROOT, "nginx", "snippets")
        for name in os.listdir(src):
            shutil.copyfile(os.path.join(src, name), os.path.join(snippets, name))
        if not self.addr_limit:
            public = os.path.join(snippets, "tickets-public.conf")
            with open(public) as f:
                text = f.read()
            if "limit_req zone=tickets_per_addr" not in text:
                raise StackError("tickets-public.conf: no per-address limit")
            with open(public, "w") as f:
                f.write(text.replace("limit_req zone=tickets_per_addr",
                                     "# limit_req zone=tickets_per_addr"))
        os.makedirs(self.path("tmp"), exist_ok=True)
        with open(self.path("nginx.conf"), "w") as f:
            f.write(conf)

    def set_addr_limit(self, on):
        """The shipped per-address limit of tokenless requests on or off
        (off by default, see __init__); nginx re-rendered and reloaded."""
        self.addr_limit = bool(on)
        self._render_nginx()
        self._reload_nginx()

    def _nginx_web(self):
        if not self.web:
            return ""
        text = ('root "%s";\n        include snippets/tickets-web.conf;'
                % WEB_ROOT)
        if self.demo:
            # make run only: the demo sign-in's users and tokens (never in
            # nginx/tickets.conf or its snippets)
            text += ('\n        location = /demo/tokens.json {\n'
                     '            alias "%s";\n'
                     '            add_header Cache-Control "no-store" always;\n'
                     '        }' % self.path("demo", "tokens.json"))
        return text

    def _nginx_php(self):
        if not self.php:
            return ""
        return ('location = /php {\n'
                '            return 301 /php/;\n'
                '        }\n'
                '        location ^~ /php/ {\n'
                '            # every path under /php/ runs the one front script\n'
                '            fastcgi_pass unix:%s;\n'
                '            include /etc/nginx/fastcgi_params;\n'
                '            fastcgi_param SCRIPT_FILENAME "%s";\n'
                '            fastcgi_param HTTP_PROXY "";\n'
                '        }' % (self.path("php-fpm.sock"),
                              os.path.join(PHP_ROOT, "index.php")))

    def _nginx_cmd(self, *extra):
        return ["nginx", "-p", self.dir + "/", "-c", self.path("nginx.conf"),
                "-e", self.path("nginx-error.log")] + list(extra)

    def _nginx_test(self):
        r = subprocess.run(self._nginx_cmd("-t", "-q"), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise StackError("nginx -t failed:\n%s" % r.stdout.decode())

    def tls_context(self):
        """An ssl.SSLContext that trusts nginx's throw-away CA (and checks
        the host name), for requests to tls_url."""
        ctx = ssl.create_default_context(cafile=self.path("tls", "web-ca.pem"))
        return ctx

    def _start_nginx(self):
        taken = set()
        for attr in ("port", "internal_port", "tls_port"):
            if getattr(self, attr) is None:
                p = _free_port()
                while p in taken:
                    p = _free_port()
                setattr(self, attr, p)
            taken.add(getattr(self, attr))
        self._make_tls("nginx", "localhost", "web-ca", "tickets test web CA")
        self.url = "http://127.0.0.1:%d" % self.port
        self.internal_url = "http://127.0.0.1:%d" % self.internal_port
        self.tls_url = "https://127.0.0.1:%d" % self.tls_port
        self._render_nginx()
        self._nginx_test()
        with open(self.path("nginx.out"), "ab") as out:
            self.nginx_proc = subprocess.Popen(
                _guarded(self._nginx_cmd()), stdin=subprocess.DEVNULL, stdout=out,
                stderr=out, start_new_session=True)

        def ours(url):
            # our own JSON 404, so not some other server on that port
            r = http_request(url, "GET", "/.stack-ready", timeout=2)
            return r.status == 404 and (r.json or {}).get("error") == "not_found"
        for url in (self.url, self.internal_url):
            _wait_for("nginx on " + url, lambda: ours(url), 20,
                      self.nginx_proc, self.path("nginx-error.log"))
        _wait_for("nginx on " + self.tls_url, lambda: http_request(
            self.tls_url, "GET", "/.stack-ready", timeout=2,
            tls_context=self.tls_context()).status == 404, 20,
            self.nginx_proc, self.path("nginx-error.log"))
        self._nginx_workers = _children(self.nginx_proc.pid)

    def _reload_nginx(self, timeout=20):
        self._nginx_test()
        old = set(_children(self.nginx_proc.pid))
        self.nginx_proc.send_signal(signal.SIGHUP)

        def reloaded():
            now = set(_children(self.nginx_proc.pid))
            return now and not (now & old)
        _wait_for("nginx reload", reloaded, timeout, self.nginx_proc,
                  self.path("nginx-error.log"))
        self._nginx_workers = _children(self.nginx_proc.pid)

    # -- php-fpm (php=True): the PHP example behind the same nginx

    def _php_fpm_bin(self):
        cand = os.environ.get("TICKETS_PHP_FPM")
        if cand:
            return cand
        path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
        for name in ("php-fpm8.2", "php-fpm"):
            found = shutil.which(name, path=path)
            if found:
                return found
        for d in ("/usr/sbin", "/usr/local/sbin"):
            try:
                names = sorted(n for n in os.listdir(d)
                               if re.match(r"php-fpm[0-9.]*$", n))
            except OSError:
                continue
            if names:
                return os.path.join(d, names[-1])
        raise StackError("php-fpm not found (Debian: apt-get install "
                         "php8.2-fpm php8.2-curl; or set TICKETS_PHP_FPM)")

    def _start_php(self):
        fpm = self._php_fpm_bin()
        root = os.geteuid() == 0
        os.makedirs(self.path("php-sessions"), mode=0o700, exist_ok=True)
        lines = [
            "[global]",
            "pid = %s" % self.path("php-fpm.pid"),
            "error_log = %s" % self.path("php-fpm.log"),
            "daemonize = no",
            "",
            "[tickets-example]",
        ]
        if root:   # only honoured (and then required) when started as root
            lines += ["user = %s" % pwd.getpwuid(os.geteuid()).pw_name,
                      "group = %s" % grp.getgrgid(os.getegid()).gr_name]
        lines += [
            "listen = %s" % self.path("php-fpm.sock"),
            "listen.mode = 0660",
            "pm = static",
            "pm.max_children = 4",
            "clear_env = yes",
            "catch_workers_output = yes",
            "decorate_workers_output = no",
            # what examples/php/tickets.php reads: the site's API URL and
            # the shared secret it signs its users' tokens with
            "env[TICKETS_API_URL] = %s" % self.url,
            "env[TICKETS_JWT_SECRET_FILE] = %s" % self.secret_file,
            # the example's stand-in login (any user id): tests only
            "env[TICKETS_EXAMPLE_DEMO_LOGIN] = 1",
            "php_admin_flag[display_errors] = off",
            "php_admin_flag[log_errors] = on",
            "php_admin_value[error_log] = %s" % self.path("php-error.log"),
            "php_admin_value[session.save_path] = %s" % self.path("php-sessions"),
        ]
        with open(self.path("php-fpm.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        cmd = [fpm, "--nodaemonize", "--fpm-config", self.path("php-fpm.conf"),
               "--prefix", self.dir]
        if root:
            cmd.append("--allow-to-run-as-root")
        with open(self.path("php-fpm.out"), "ab") as out:
            self.php_proc = subprocess.Popen(
                _guarded(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                cwd=self.dir, start_new_session=True)

        def ready():
            r = http_request(self.url, "GET", "/php/", timeout=5)
            if r.status != 200:
                raise StackError("GET /php/: %s %s" % (r.status, r.text[:200]))
            return True
        _wait_for("php-fpm (%s)" % self.path("php-fpm.sock"), ready, 20,
                  self.php_proc, self.path("php-fpm.log"))

    # -- the demo sign-in (web=True, demo=True)

    def write_demo_tokens(self, exp_delta=86400):
        """Tokens for the users of sql/demo.sql, valid exp_delta seconds,
        into demo/tokens.json of the run directory, which nginx serves as
        /demo/tokens.json when web and demo are on: the page's demo sign-in.
        Returns {user id: token}."""
        tokens = {u: self.token(u, exp_delta=exp_delta) for u, _ in DEMO_USERS}
        data = {"users": [{"id": u, "label": label, "token": tokens[u]}
                          for u, label in DEMO_USERS],
                "expires_at": int(time.time()) + int(exp_delta)}
        os.makedirs(self.path("demo"), exist_ok=True)
        tmp = self.path("demo", "tokens.json.tmp")
        _write_private(tmp, json.dumps(data, indent=2) + "\n")
        os.rename(tmp, self.path("demo", "tokens.json"))
        return tokens

    # -- HTTP, tokens

    def request(self, method, path, token=None, body=None, headers=None,
                timeout=30, base=None):
        """One HTTP request through nginx (public server unless base, e.g.
        stack.internal_url; a full http:// URL as path also works)."""
        base = base or self.url
        ctx = None
        if base.startswith("https://") or path.startswith("https://"):
            ctx = self.tls_context()
        return http_request(base, method, path, token, body, headers, timeout,
                            tls_context=ctx)

    def token(self, sub, exp_delta=300, alg="HS256", secret=None, header=None,
              sub_raw=False, **claims):
        """A JWT for user sub, signed with the stack's secret; see make_token."""
        return make_token(self.secret if secret is None else secret, sub,
                          exp_delta, alg, header, sub_raw, **claims)

    # -- database

    def db(self):
        """A new pymysql connection: root, autocommit, database tickets.
        The caller closes it."""
        return self._root_conn()

    def sql(self, query, args=None):
        """Run one statement as root; return its rows as a list of tuples."""
        return query_rows(self._root_conn(), query, args)

    def make_user(self, id, premium=True, premium_until=None):
        """premium: premium_until = now + 30 days; else a day ago. An explicit
        premium_until (a datetime or 'YYYY-MM-DD hh:mm:ss' in UTC) wins."""
        if premium_until is not None:
            self.sql("INSERT INTO users (id, premium_until) VALUES (%s, %s) "
                     "ON DUPLICATE KEY UPDATE premium_until = VALUES(premium_until)",
                     [id, premium_until])
        else:
            self.sql("INSERT INTO users (id, premium_until) VALUES (%s, "
                     "UTC_TIMESTAMP() + INTERVAL %s DAY) ON DUPLICATE KEY "
                     "UPDATE premium_until = VALUES(premium_until)",
                     [id, 30 if premium else -1])
        return id

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
        conn = self._root_conn()
        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO orders (user_id, event_id, status) "
                        "VALUES (%s, %s, %s)", [user_id, event_id, status])
            return cur.lastrowid
        finally:
            conn.close()

    def held_locks(self):
        """Names of the named (GET_LOCK) locks held right now, by anyone."""
        return [r[0] for r in self.sql(
            "SELECT TABLE_SCHEMA FROM information_schema.METADATA_LOCK_INFO "
            "WHERE LOCK_TYPE = 'User lock'")]

    def reset_tables(self):
        """Empty the four tables (the `clean` fixture, before each test)."""
        conn = self._root_conn()
        try:
            cur = conn.cursor()
            for t in ("free_tickets", "orders", "users", "events"):
                cur.execute("TRUNCATE TABLE %s" % t)
        finally:
            conn.close()

    def end_session(self, tests_failed, findings=None):
        """Stop the stack at the end of a test session.  The logs are
        printed and the files kept when tests failed, an instance crashed or
        a sanitizer reported (read after the stop: LeakSanitizer reports
        when a process exits); else the files are removed.  `findings` is a
        function returning sanitizer lines (default: sanitizer_report).
        Returns (crashed instances, sanitizer lines)."""
        crashed = self.crashed_instances()
        failed = tests_failed or bool(crashed)
        if failed:
            self.print_logs()
        self.stop(keep=True)
        found = (findings or self.sanitizer_report)()
        if found:
            sys.stderr.write("stack: sanitizer findings in the app logs:\n  %s\n"
                             % "\n  ".join(found[:20]))
        if failed or found:
            sys.stderr.write("stack: files kept in %s\n" % self.dir)
        else:
            self.remove()
        return crashed, found

    def invariant_problems(self, settle=2.0):
        """What is wrong after a test: see invariant_problems()."""
        return invariant_problems(self.sql, self.held_locks, settle)

    # -- state for `make run` and TICKETS_TEST_URL

    def write_state(self, path):
        state = {
            "dir": self.dir, "url": self.url, "internal_url": self.internal_url,
            "tls_url": self.tls_url,
            "db_socket": self.db_socket, "db_name": DB_NAME,
            "db_user": DB_USER, "db_password_file": self.path("db-password"),
            "secret_file": self.secret_file, "bin": self.app_bin,
            "pids": {"runner": os.getpid(), "mariadbd": self.db_pid,
                     "nginx": self.nginx_pid, "php_fpm": self.php_pid,
                     "apps": [i.pid for i in self.instances]},
            "app_sockets": [i.socket for i in self.instances],
            "app_logs": [i.log_path for i in self.instances],
        }
        with open(path, "w") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
