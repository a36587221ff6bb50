#!/usr/bin/env python3
"""A small network of "hosts" on one machine, for tests/cluster/: network
namespaces joined by veth pairs to a bridge, each namespace one host.

    switch   <prefix>-sw   a Linux bridge (br0); every host's veth ends here
    front    <prefix>-fe   nginx, upstream = every app host's TCP address;
                           the test's HTTP clients run in this namespace too
    app N    <prefix>-aN   tickets-fcgi with TICKETS_LISTEN=<its ip>:9000
    database <prefix>-db   a private MariaDB on <its ip>:3306 (and a unix
                           socket in the run directory, for root's checks)

Addresses are 10.231.0.0/24 (TICKETS_CLUSTER_NET=a.b.c to change the first
three octets) and exist only inside these namespaces: the root namespace
gets no interface, route or address, so nothing here can reach or clash with
the machine's own network. Nothing but processes started here lives in the
namespaces, and destroy() removes them whatever state they are in: it stops
every process by pid, kills whatever is still inside a namespace of ours
(`ip netns pids`), then deletes the namespaces (their veths go with them).
Leftovers of a run that was SIGKILLed are removed at the next start
(namespaces named after a pid that no longer runs).

    with Cluster(apps=3) as c:        # needs root, iproute2, MariaDB, nginx
        c.run_in("fe", http_request, c.url, "GET", "/api/events")
        c.link_down(2); ...; c.link_up(2)

Standard library and pymysql only; JWTs and HTTP from tests/harness.
"""

import contextlib
import ctypes
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import harness as _stack  # noqa: E402  (tests/harness/)
from harness import StackError, make_token, http_request  # noqa: E402,F401

ROOT = _stack.ROOT
pymysql = _stack.pymysql

NET = os.environ.get("TICKETS_CLUSTER_NET", "10.231.0")
NS_PREFIX = "tkc"                  # every namespace and veth we make starts so
APP_PORT = 9000
DB_PORT = 3306
HTTP_PORT = 8080                   # inside the front namespace only
INTERNAL_PORT = 8081
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check and r.returncode != 0:
        raise StackError("ip %s: %s" % (" ".join(args),
                                        r.stdout.decode().strip()))
    return r.stdout.decode()


def enter_netns(name):
    """Move the calling *thread* into network namespace name (setns(2) on
    /run/netns/name). Sockets it opens from now on live there. Other threads
    stay where they are; use it in threads made for the purpose."""
    fd = os.open("/run/netns/" + name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (name, os.strerror(err)))
    finally:
        os.close(fd)


def run_in_netns(name, fn, *args, **kwargs):
    """fn(*args) in a fresh thread inside namespace name; its result or
    exception."""
    out = {}

    def body():
        try:
            enter_netns(name)
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            out["error"] = e
    t = threading.Thread(target=body, name="netns-" + name)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def netns_usable():
    """None if this process can make namespaces and veths, else why not."""
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    if not shutil.which("ip"):
        return "iproute2 (`ip`) is not installed"
    probe = "%s%d-probe" % (NS_PREFIX, os.getpid())
    try:
        _ip("netns", "add", probe)
    except StackError as e:
        return "`ip netns add` fails here: %s" % e
    try:
        _ip("link", "add", "eth0", "netns", probe, "type", "veth", "peer",
            "name", "eth1", "netns", probe)
    except StackError as e:
        return "cannot create veth pairs here: %s" % e
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def remove_stale():
    """Namespaces of an earlier run whose process is gone (it was killed
    before it could clean up): kill what still runs inside, delete them.
    Returns their names. Only names of the form tkc<pid>-... are touched."""
    removed = []
    for line in _ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^%s(\d+)-[a-z0-9]+$" % NS_PREFIX, name)
        if not m or _stack.pid_alive(int(m.group(1))):
            continue
        _kill_netns_pids(name)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


def _kill_netns_pids(name):
    """SIGKILL whatever still runs inside namespace name (one of ours: only
    this harness starts processes there)."""
    for _ in range(20):
        pids = [int(p) for p in _ip("netns", "pids", name, check=False).split()
                if p.isdigit()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# FastCGI over TCP (readiness of one app host, from inside the front ns)

def fcgi_tcp_request(addr, port, method, path, timeout=5):
    """One FastCGI request to host:port; returns (status, body)."""
    params = {"REQUEST_METHOD": method, "REQUEST_URI": path,
              "DOCUMENT_URI": path, "SCRIPT_NAME": path, "QUERY_STRING": "",
              "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
              "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "cluster",
              "REQUEST_ID": secrets.token_hex(16), "HTTP_HOST": "cluster"}
    out = _stack.fcgi_exchange((addr, port), params, b"", timeout)
    m = re.search(rb"^Status:\s*(\d+)", out, re.M | re.I)
    return (int(m.group(1)) if m else 200), out


# ---------------------------------------------------------------------------

class Cluster(object):
    """See the module docstring. Attributes after start(): url (nginx, inside
    the front namespace), secret, dir, ns (role -> namespace name),
    app_addrs (list of "ip:port"), db_socket (root's unix socket)."""

    def __init__(self, apps=3, app_bin=None, app_env=None, keep=False,
                 quiet=False):
        if not 1 <= apps <= 9:
            raise ValueError("1 to 9 app hosts")
        self.napps = apps
        self.app_bin = os.path.abspath(app_bin or os.environ.get("TICKETS_BIN")
                                       or _stack.DEFAULT_BIN)
        self.app_env = dict(app_env or {})
        self.keep = keep or os.environ.get("TICKETS_KEEP") == "1"
        self.quiet = quiet
        tag = "%s%d" % (NS_PREFIX, os.getpid())
        self.tag = tag
        self.ns = {"sw": tag + "-sw", "fe": tag + "-fe", "db": tag + "-db"}
        for i in range(1, apps + 1):
            self.ns["a%d" % i] = "%s-a%d" % (tag, i)
        self.ip = {"fe": NET + ".2", "db": NET + ".20"}
        for i in range(1, apps + 1):
            self.ip["a%d" % i] = "%s.%d" % (NET, 10 + i)
        self.app_addrs = ["%s:%d" % (self.ip["a%d" % i], APP_PORT)
                          for i in range(1, apps + 1)]
        self.url = "http://127.0.0.1:%d" % HTTP_PORT
        self.internal_url = "http://127.0.0.1:%d" % INTERNAL_PORT
        self.dir = None
        self.secret = None
        self.procs = {}          # name -> Popen (mariadbd, nginx, app1..)
        self.made_ns = []        # namespaces this object created
        self.timings = {}
        self.failed = False

    # -- helpers

    def _log(self, msg):
        if not self.quiet:
            sys.stderr.write("cluster: %s\n" % msg)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def veth(self, role):
        """Name of role's veth end on the switch (in the switch namespace)."""
        return "%s%s" % (self.tag, role)

    @property
    def db_socket(self):
        return self.path("mysql.sock")

    def run_in(self, role, fn, *args, **kwargs):
        return run_in_netns(self.ns[role], fn, *args, **kwargs)

    def _popen(self, name, role, cmd, env=None, log=None):
        """cmd inside role's namespace, in its own session, stdout and
        stderr to log. setpriv --pdeathsig: it gets SIGTERM should this
        process die without stopping it."""
        full = ["ip", "netns", "exec", self.ns[role]]
        if shutil.which("setpriv"):
            full += ["setpriv", "--pdeathsig", "TERM", "--"]
        full += cmd
        logf = open(log or self.path(name + ".log"), "ab")
        try:
            p = subprocess.Popen(full, env=env, stdin=subprocess.DEVNULL,
                                 stdout=logf, stderr=logf,
                                 start_new_session=True, cwd=self.dir)
        finally:
            logf.close()
        self.procs[name] = p
        return p

    # -- lifecycle

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            self.failed = True
        self.destroy()
        return False

    def start(self):
        t0 = time.monotonic()
        why = netns_usable()
        if why:
            raise StackError(why)
        if not os.access(self.app_bin, os.X_OK):
            raise StackError("%s is missing: run `make` first" % self.app_bin)
        if pymysql is None:
            raise StackError("python3-pymysql is missing")
        stale = remove_stale()
        if stale:
            self._log("removed namespaces of a dead earlier run: %s" % stale)
        self.dir = tempfile.mkdtemp(prefix="tickets-cluster-")
        try:
            self._network()
            self.timings["network"] = time.monotonic() - t0
            self._start_db()
            self.timings["db"] = time.monotonic() - t0
            self._setup_db()
            self._start_apps()
            self.timings["apps"] = time.monotonic() - t0
            self._start_nginx()
            self.timings["total"] = time.monotonic() - t0
        except BaseException:
            self.failed = True
            self.print_logs()
            self.destroy()
            raise
        return self

    def destroy(self):
        """Stop everything and remove the network, whatever state it is in.
        Safe to call twice. Keeps the directory if something failed (or
        TICKETS_KEEP=1), and says where."""
        t0 = time.monotonic()
        order = ["nginx"] + sorted(n for n in self.procs if n.startswith("app")) \
            + ["mariadbd"]
        for name in order:
            p = self.procs.get(name)
            if p is None:
                continue
            _stack.stop_process(p, 30 if name == "mariadbd" else 10, name)
        for name in list(self.made_ns):
            _kill_netns_pids(name)      # nginx workers of a killed master, say
            _ip("netns", "del", name, check=False)
            self.made_ns.remove(name)
        left = [n for n in self.ns.values()
                if n in _ip("netns", "list", check=False).split()]
        self.timings["destroy"] = time.monotonic() - t0
        if left:
            raise StackError("namespaces left behind: %s" % left)
        if self.dir and os.path.isdir(self.dir):
            if self.failed or self.keep:
                self._log("files kept in %s" % self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- network

    def _network(self):
        for role, name in self.ns.items():
            _ip("netns", "add", name)
            self.made_ns.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        sw = self.ns["sw"]
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for role in self.ns:
            if role == "sw":
                continue
            # both ends made directly in their namespaces: the root
            # namespace never sees them
            _ip("link", "add", "eth0", "netns", self.ns[role], "type", "veth",
                "peer", "name", self.veth(role), "netns", sw)
            _ip("-n", sw, "link", "set", self.veth(role), "master", "br0")
            _ip("-n", sw, "link", "set", self.veth(role), "up")
            _ip("-n", self.ns[role], "addr", "add", self.ip[role] + "/24",
                "dev", "eth0")
            _ip("-n", self.ns[role], "link", "set", "eth0", "up")

        def reach(addrs):
            # ARP and the bridge ports are up within milliseconds; wait
            # until a TCP SYN to a closed port is refused (RST), which is
            # proof of a path without any listener
            for a in addrs:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        socket.create_connection((a, 9), timeout=1).close()
                        break
                    except ConnectionRefusedError:
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise StackError("no path from the front to %s" % a)
                        time.sleep(0.05)
        self.run_in("fe", reach, [self.ip[r] for r in self.ns if r not in ("sw", "fe")])

    def link_down(self, i):
        """Pull app host i's cable: its veth end on the switch goes down
        (the host's own eth0 then loses carrier). Nothing in the host is
        told; its processes keep running."""
        _ip("-n", self.ns["sw"], "link", "set", self.veth("a%d" % i), "down")

    def link_up(self, i):
        _ip("-n", self.ns["sw"], "link", "set", self.veth("a%d" % i), "up")

    # -- MariaDB on the database host

    def _start_db(self):
        datadir = self.path("db")
        _stack.install_datadir(datadir, self.path("mariadb-install.log"))
        db = ["mariadbd", "--no-defaults", "--datadir=" + datadir,
              "--socket=" + self.db_socket,
              "--pid-file=" + self.path("mariadb.pid"),
              "--log-error=" + self.path("mariadb.err"),
              # TCP on the database host's address only; no DNS in here
              "--bind-address=" + self.ip["db"], "--port=%d" % DB_PORT,
              "--skip-name-resolve", "--skip-log-bin",
              "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
              "--innodb-buffer-pool-size=128M", "--max-connections=300",
              "--plugin-load-add=metadata_lock_info",
              "--default-time-zone=" + _stack.DB_TIME_ZONE,
              "--character-set-server=utf8mb4"]
        if os.geteuid() == 0:
            db.append("--user=root")
        p = self._popen("mariadbd", "db", db, log=self.path("mariadb.out"))
        _stack.wait_for("MariaDB on the database host",
                        lambda: self.root_conn(db=None, timeout=2).close() or True,
                        60, p, self.path("mariadb.err"))

    def root_conn(self, db="tickets", timeout=10):
        """root over the unix socket (a path in the shared file system, so
        it works from the root namespace)."""
        return _stack.root_connect(self.db_socket, db, timeout)

    def sql(self, query, args=None):
        return _stack.query_rows(self.root_conn(), query, args)


    def make_users(self, ids, premium=True):
        """Users with these ids, premium for 30 days (or expired)."""
        conn = self.root_conn()
        try:
            conn.cursor().executemany(
                "INSERT INTO users (id, premium_until) VALUES (%s, "
                "UTC_TIMESTAMP() + INTERVAL " + ("30" if premium else "-1") +
                " DAY)", [(u,) for u in ids])
        finally:
            conn.close()

    def make_event(self, eid, quota=None):
        """A free event tomorrow, with a quota or none."""
        self.sql("INSERT INTO events (id, title, starts_at, free_for_premium, "
                 "free_quota) VALUES (%s, %s, UTC_TIMESTAMP() + INTERVAL 1 "
                 "DAY, 1, %s)", [eid, "event %d" % eid, quota])
    def _mariadb(self, text, database="tickets"):
        _stack.mariadb_client(self.db_socket, text.encode(), database)

    def _setup_db(self):
        password = secrets.token_hex(16)
        _stack.write_private(self.path("db-password"), password + "\n")
        host = NET + ".%"            # the app hosts' subnet, nothing else
        self.db_account = "'tickets'@'%s'" % host
        conn = self.root_conn(db=None)
        try:
            cur = conn.cursor()
            cur.execute("CREATE DATABASE tickets CHARACTER SET utf8mb4 "
                        "COLLATE utf8mb4_unicode_ci")
            cur.execute("CREATE USER 'tickets'@%s IDENTIFIED BY %s",
                        [host, password])
        finally:
            conn.close()
        with open(os.path.join(ROOT, "sql", "schema.sql")) as f:
            self._mariadb(f.read())
        # sql/grants.sql names 'tickets'@'localhost'; the same grants for
        # the subnet account, rendered into the run directory
        with open(os.path.join(ROOT, "sql", "grants.sql")) as f:
            grants = f.read()
        if "'tickets'@'localhost'" not in grants:
            raise StackError("sql/grants.sql no longer names 'tickets'@'localhost'")
        grants = grants.replace("'tickets'@'localhost'", self.db_account)
        with open(self.path("grants.sql"), "w") as f:
            f.write(grants)
        self._mariadb(grants)

    # -- apps

    def base_app_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_")}
        env.update({
            "TICKETS_DB_HOST": self.ip["db"],
            "TICKETS_DB_PORT": str(DB_PORT),
            "TICKETS_DB_USER": "tickets",
            "TICKETS_DB_PASSWORD_FILE": self.path("db-password"),
            "TICKETS_DB_NAME": "tickets",
            "TICKETS_JWT_SECRET_FILE": self.path("jwt-secret"),
            "TICKETS_THREADS": "8",
        })
        env.update(self.app_env)
        return env

    def _start_apps(self):
        self.secret = secrets.token_hex(32).encode("ascii")
        _stack.write_private(self.path("jwt-secret"), self.secret.decode() + "\n")
        for i in range(1, self.napps + 1):
            self._start_app(i)
        for i in range(1, self.napps + 1):
            self.wait_app(i)

    def _start_app(self, i):
        env = self.base_app_env()
        env["TICKETS_LISTEN"] = self.app_addrs[i - 1]
        with open(self.app_log(i), "ab") as f:
            f.write(("--- app host %d (%s) start: %s\n" % (
                i, self.ns["a%d" % i], " ".join(
                    "%s=%s" % kv for kv in sorted(env.items())
                    if kv[0].startswith("TICKETS_")))).encode())
        self._popen("app%d" % i, "a%d" % i, [self.app_bin], env=env,
                    log=self.app_log(i))

    def restart_apps(self):
        """Stop every app (SIGTERM, by pid; it must exit 0) and start it
        again: new database sessions, which take the server's current
        global settings."""
        for i in range(1, self.napps + 1):
            p = self.procs["app%d" % i]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    raise StackError("app host %d ignored SIGTERM" % i)
            if p.returncode != 0:
                raise StackError("app host %d exited with %s on SIGTERM"
                                 % (i, p.returncode))
            self._start_app(i)
        for i in range(1, self.napps + 1):
            self.wait_app(i)

    def app_log(self, i):
        return self.path("app%d.log" % i)

    def wait_app(self, i, timeout=20):
        """Until app host i answers /api/health 200 over FastCGI/TCP, asked
        from the front host (the path nginx uses)."""
        addr = self.ip["a%d" % i]
        p = self.procs["app%d" % i]

        def healthy():
            status, body = self.run_in("fe", fcgi_tcp_request, addr, APP_PORT,
                                       "GET", "/api/health")
            if status != 200:
                raise StackError("health %s" % status)
            return True
        _stack.wait_for("app host %d (%s:%d)" % (i, addr, APP_PORT), healthy,
                        timeout, p, self.app_log(i))

    def app_requests(self, i, since=0):
        """Request log lines (parsed JSON) of app host i after byte offset
        since."""
        out = []
        with open(self.app_log(i), "rb") as f:
            f.seek(since)
            for line in f.read().decode("utf-8", "replace").splitlines():
                if not line.startswith("{"):
                    continue
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                if "status" in o and "path" in o:
                    out.append(o)
        return out

    def log_sizes(self):
        return {i: os.path.getsize(self.app_log(i))
                for i in range(1, self.napps + 1)}

    def crashed_apps(self):
        return [i for i in range(1, self.napps + 1)
                if self.procs["app%d" % i].poll() is not None]

    # -- nginx on the front host

    def _start_nginx(self):
        servers = "\n        ".join(
            "server %s max_fails=1 fail_timeout=2s;" % a for a in self.app_addrs)
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        p = self.dir
        # The shipped snippets, unchanged; only the upstream differs from
        # nginx/tickets.conf (TCP addresses of the app hosts).
        conf = """# rendered by tests/cluster/cluster.py
daemon off;
master_process on;
worker_processes 2;
user %(user)s %(group)s;
pid %(p)s/nginx.pid;
error_log %(p)s/nginx-error.log info;
events { worker_connections 2048; }
http {
    default_type application/octet-stream;
    server_tokens off;
    keepalive_timeout 30s;
    client_body_temp_path %(p)s/tmp/client_body;
    fastcgi_temp_path %(p)s/tmp/fastcgi;
    proxy_temp_path %(p)s/tmp/proxy;
    uwsgi_temp_path %(p)s/tmp/uwsgi;
    scgi_temp_path %(p)s/tmp/scgi;
    log_format cluster escape=json
        '{"msec":$msec,"request_id":"$request_id","method":"$request_method",'
        '"uri":"$request_uri","status":$status,"request_time":$request_time,'
        '"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status",'
        '"upstream_response_time":"$upstream_response_time"}';
    access_log %(p)s/nginx-access.log cluster;
    # the keys and zones of nginx/tickets.conf (snippets use both zones)
    map $http_authorization $tickets_token_key {
        default $http_authorization;
        "" "";
        "~*^bearer +(?<tickets_token>[^ ]+) *$" $tickets_token;
    }
    map $http_authorization $tickets_addr_key {
        default "";
        "" $binary_remote_addr;
    }
    limit_req_zone $tickets_token_key zone=tickets_per_token:32m rate=100r/s;
    limit_req_zone $tickets_addr_key zone=tickets_per_addr:10m rate=50r/s;
    map $scheme $tickets_hsts { https "max-age=63072000"; default ""; }
    upstream tickets_app {
        %(servers)s
    }
    server {
        listen 127.0.0.1:%(port)d;
        server_name localhost;
        include snippets/tickets-public.conf;
    }
    server {
        listen 127.0.0.1:%(iport)d;
        server_name localhost;
        include snippets/tickets-internal.conf;
    }
}
""" % {"user": user, "group": group, "p": p, "servers": servers,
       "port": HTTP_PORT, "iport": INTERNAL_PORT}
        os.makedirs(self.path("tmp"), exist_ok=True)
        snippets = self.path("snippets")
        os.makedirs(snippets, exist_ok=True)
        src = os.path.join(ROOT, "nginx", "snippets")
        for name in os.listdir(src):
            shutil.copyfile(os.path.join(src, name), os.path.join(snippets, name))
        with open(self.path("nginx.conf"), "w") as f:
            f.write(conf)
        cmd = ["nginx", "-p", self.dir + "/", "-c", self.path("nginx.conf"),
               "-e", self.path("nginx-error.log")]
        r = subprocess.run(["ip", "netns", "exec", self.ns["fe"]] + cmd + ["-t", "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise StackError("nginx -t: %s" % r.stdout.decode())
        proc = self._popen("nginx", "fe", cmd, log=self.path("nginx.out"))

        def ours():
            r = self.run_in("fe", http_request, self.url, "GET", "/.ready",
                            timeout=2)
            return r.status == 404 and (r.json or {}).get("error") == "not_found"
        _stack.wait_for("nginx on the front host", ours, 20, proc,
                        self.path("nginx-error.log"))

    def nginx_log(self, since=0):
        out = []
        with open(self.path("nginx-access.log"), "rb") as f:
            f.seek(since)
            for line in f.read().decode("utf-8", "replace").splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def nginx_log_size(self):
        try:
            return os.path.getsize(self.path("nginx-access.log"))
        except OSError:
            return 0

    # -- HTTP and tokens

    def token(self, sub, exp_delta=600):
        return make_token(self.secret, sub, exp_delta)

    def request(self, method, path, token=None, timeout=30):
        """One request through nginx, from the front host."""
        return self.run_in("fe", http_request, self.url, method, path, token,
                           None, None, timeout)

    # -- database checks

    def held_locks(self):
        return [r[0] for r in self.sql(
            "SELECT TABLE_SCHEMA FROM information_schema.METADATA_LOCK_INFO "
            "WHERE LOCK_TYPE = 'User lock'")]

    def invariant_problems(self, settle=5.0):
        return _stack.invariant_problems(self.sql, self.held_locks, settle)

    def print_logs(self, lines=25, out=None):
        out = out or sys.stderr
        if not self.dir or not os.path.isdir(self.dir):
            return
        names = ["mariadb.err", "nginx-error.log", "nginx.out"]
        names += ["app%d.log" % i for i in range(1, self.napps + 1)]
        for name in names:
            p = self.path(name)
            if os.path.exists(p):
                out.write("----- %s (last %d lines)\n%s\n"
                          % (p, lines, _stack.tail_file(p, lines)))


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a CI timeout, `timeout`(1)) raises KeyboardInterrupt in the
    main thread, so that finally blocks and fixture teardown still remove
    the namespaces."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    # Manual use: bring the cluster up, print where it is, wait for Ctrl-C.
    c = Cluster(apps=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    with sigterm_as_interrupt():
        with c:
            print("cluster up in %.1f s: %s; nginx %s inside %s; files %s"
                  % (c.timings["total"], c.app_addrs, c.url, c.ns["fe"], c.dir))
            print("  ip netns exec %s curl -s %s/api/events" % (c.ns["fe"], c.url))
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
