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

The hosts are made of the parts of tests/harness/ that make the single-host
stack: the database host runs mariadbd_cmd() with create_database(), each
app host an AppInstance with app_env(), the front host nginx/nginx.conf.in
rendered by render() with the shipped snippets.  What is here is the
network: the namespaces, their cables, and running things inside them.

Standard library and pymysql only.
"""

import concurrent.futures
import contextlib
import ctypes
import json
import os
import re
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
from harness import (DB_NAME, DEFAULT_BIN, AppInstance,  # noqa: E402
                     Database, StackError, app_env, claim, create_database,
                     http_request, install_datadir, make_server_tls,
                     make_token, mariadbd_cmd, new_secret, nginx_cmd,
                     nginx_test, pid_alive, pymysql, render, root_connect,
                     stop_process, tail_file, upstream_servers, wait_for)

NET = os.environ.get("TICKETS_CLUSTER_NET", "10.231.0")
NS_PREFIX = "tkc"                  # every namespace and veth we make starts so
APP_PORT = 9000
DB_PORT = 3306
HTTP_PORT = 8080                   # inside the front namespace only
INTERNAL_PORT = 8081
TLS_PORT = 8443
CLIENT_TIMEOUT = 45               # above nginx's fastcgi_read_timeout (30 s)
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def iproute(*args, check=True):
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
        iproute("netns", "add", probe)
    except StackError as e:
        return "`ip netns add` fails here: %s" % e
    try:
        iproute("link", "add", "eth0", "netns", probe, "type", "veth", "peer",
                "name", "eth1", "netns", probe)
    except StackError as e:
        return "cannot create veth pairs here: %s" % e
    finally:
        iproute("netns", "del", probe, check=False)
    return None


def remove_stale():
    """Namespaces of an earlier run whose process is gone (it was killed
    before it could clean up): kill what still runs inside, delete them.
    Returns their names. Only names of the form tkc<pid>-... are touched."""
    removed = []
    for line in iproute("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^%s(\d+)-[a-z0-9]+$" % NS_PREFIX, name)
        if not m or pid_alive(int(m.group(1))):
            continue
        _kill_netns_pids(name)
        iproute("netns", "del", name, check=False)
        removed.append(name)
    return removed


def _kill_netns_pids(name):
    """SIGKILL whatever still runs inside namespace name (one of ours: only
    this harness starts processes there)."""
    for _ in range(20):
        pids = [int(p) for p in iproute("netns", "pids", name, check=False).split()
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

class Cluster(Database):
    """See the module docstring. Attributes after start(): url (nginx, inside
    the front namespace), secret, dir, ns (role -> namespace name),
    app_addrs (list of "ip:port"), db_socket (root's unix socket),
    instances (an AppInstance per app host, instances[i - 1] is host i).
    The test data and checks of harness.Database."""

    SETTLE = 5.0

    def __init__(self, apps=3, app_bin=None, app_env=None, keep=False,
                 quiet=False):
        if not 1 <= apps <= 9:
            raise ValueError("1 to 9 app hosts")
        self.napps = apps
        self.app_bin = os.path.abspath(app_bin or os.environ.get("TICKETS_BIN")
                                       or DEFAULT_BIN)
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
        self.procs = {}          # name -> Popen (mariadbd, nginx)
        self.instances = []
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

    def inside(self, role):
        """wrap(cmd): cmd run inside role's namespace (ip netns exec, then
        setpriv --pdeathsig: it gets SIGTERM should this process die
        without stopping it; both exec in place, the pid is cmd's)."""
        def wrap(cmd):
            full = ["ip", "netns", "exec", self.ns[role]]
            if shutil.which("setpriv"):
                full += ["setpriv", "--pdeathsig", "TERM", "--"]
            return full + list(cmd)
        return wrap

    def from_front(self, fn, *args, **kwargs):
        """fn(*args) run from the front host, where nginx is."""
        return self.run_in("fe", fn, *args, **kwargs)

    def _popen(self, name, role, cmd, env=None, log=None):
        """cmd inside role's namespace, in its own session, stdout and
        stderr to log."""
        full = self.inside(role)(cmd)
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
            self.secret = new_secret(self.path("jwt-secret"))
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
        if self.procs.get("nginx") is not None:
            stop_process(self.procs["nginx"], 10, "nginx")
        for inst in self.instances:
            inst.stop(10)
        if self.procs.get("mariadbd") is not None:
            stop_process(self.procs["mariadbd"], 30, "mariadbd")
        for name in list(self.made_ns):
            _kill_netns_pids(name)      # nginx workers of a killed master, say
            iproute("netns", "del", name, check=False)
            self.made_ns.remove(name)
        left = [n for n in self.ns.values()
                if n in iproute("netns", "list", check=False).split()]
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
            iproute("netns", "add", name)
            self.made_ns.append(name)
            iproute("-n", name, "link", "set", "lo", "up")
        self.add_bridge("br0")
        for role in self.ns:
            if role != "sw":
                self.add_cable(role, "eth0", "br0", self.veth(role), self.ip[role])

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

    def add_bridge(self, bridge):
        """A switch: a bridge in the switch namespace."""
        iproute("-n", self.ns["sw"], "link", "add", bridge, "type", "bridge")
        iproute("-n", self.ns["sw"], "link", "set", bridge, "up")

    def add_cable(self, role, dev, bridge, veth, addr):
        """role's interface dev, address addr/24, cabled to bridge; the
        switch's end is named veth.  Both ends are made directly in their
        namespaces: the root namespace never sees them."""
        sw = self.ns["sw"]
        iproute("link", "add", dev, "netns", self.ns[role], "type", "veth",
                "peer", "name", veth, "netns", sw)
        iproute("-n", sw, "link", "set", veth, "master", bridge)
        iproute("-n", sw, "link", "set", veth, "up")
        iproute("-n", self.ns[role], "addr", "add", addr + "/24", "dev", dev)
        iproute("-n", self.ns[role], "link", "set", dev, "up")

    def link_down(self, i):
        """Pull app host i's cable: its veth end on the switch goes down
        (the host's own eth0 then loses carrier). Nothing in the host is
        told; its processes keep running."""
        iproute("-n", self.ns["sw"], "link", "set", self.veth("a%d" % i), "down")

    def link_up(self, i):
        iproute("-n", self.ns["sw"], "link", "set", self.veth("a%d" % i), "up")

    # -- MariaDB on the database host

    def _start_db(self):
        install_datadir(self.path("db"), self.path("mariadb-install.log"))
        # TCP on the database host's address only; no DNS in here
        cmd = mariadbd_cmd(self.dir, (self.ip["db"], DB_PORT),
                           extra=["--skip-name-resolve"])
        p = self._popen("mariadbd", "db", cmd, log=self.path("mariadb.out"))
        wait_for("MariaDB on the database host",
                 lambda: self.root_conn(db=None, timeout=2).close() or True,
                 60, p, self.path("mariadb.err"))

    def root_conn(self, db=DB_NAME, timeout=10):
        """root over the unix socket (a path in the shared file system, so
        it works from the root namespace)."""
        return root_connect(self.db_socket, db, timeout)

    def _setup_db(self):
        # the account of the app hosts' subnet, nothing else
        create_database(self.db_socket, self.dir, host=NET + ".%")

    # -- apps

    def app_db(self, i):
        """(host, port) of app host i's database."""
        return (self.ip["db"], DB_PORT)

    def _start_apps(self):
        self.instances = []
        for i in range(1, self.napps + 1):
            inst = AppInstance(i, (self.ip["a%d" % i], APP_PORT), self.app_log(i),
                               self.app_bin, None, listen_env=True,
                               wrap=self.inside("a%d" % i), call=self.from_front)
            self.instances.append(inst)
            self._start_app(i)
        for i in range(1, self.napps + 1):
            self.wait_app(i)

    def _start_app(self, i):
        inst = self.instances[i - 1]
        inst.env = app_env(self.dir, self.app_db(i), {"TICKETS_THREADS": "8"},
                           self.app_env)
        inst.start()

    def restart_apps(self):
        """Stop every app (SIGTERM, by pid; it must exit 0) and start it
        again: new database sessions, which take the server's current
        global settings."""
        for inst in self.instances:
            rc = inst.stop(20)
            if rc != 0:
                raise StackError("app host %d exited with %s on SIGTERM"
                                 % (inst.index, rc))
            self._start_app(inst.index)
        for i in range(1, self.napps + 1):
            self.wait_app(i)

    def app_log(self, i):
        return self.path("app%d.log" % i)

    def wait_app(self, i, timeout=20):
        """Until app host i answers /api/health 200 over FastCGI/TCP, asked
        from the front host (the path nginx uses)."""
        self.instances[i - 1].wait_ready(timeout)

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
        return [i.index for i in self.instances if not i.running()]

    # -- nginx on the front host

    def _start_nginx(self):
        """nginx/nginx.conf.in as the single-host stack renders it, the
        upstream the app hosts' TCP addresses (no kept connections: a cut
        host's would hang until the read timeout), the shipped snippets
        unchanged (per-address limit included)."""
        make_server_tls(self.path("tls"), "nginx", "localhost", "web-ca",
                        "tickets test web CA")
        render(self.dir, HTTP_PORT, INTERNAL_PORT, TLS_PORT,
               upstream_servers(self.app_addrs, keepalive=0), addr_limit=True)
        nginx_test(self.dir, self.inside("fe"))
        proc = self._popen("nginx", "fe", nginx_cmd(self.dir),
                           log=self.path("nginx.out"))

        def ours():
            r = self.from_front(http_request, self.url, "GET", "/.ready",
                                timeout=2)
            return r.status == 404 and (r.json or {}).get("error") == "not_found"
        wait_for("nginx on the front host", ours, 20, proc,
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
        return self.from_front(http_request, self.url, method, path, token,
                               None, None, timeout)

    def client_pool(self, workers):
        """Client threads inside the front host (where nginx listens)."""
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="client",
            initializer=enter_netns, initargs=(self.ns["fe"],))

    def claim(self, token, user, event, timeout=CLIENT_TIMEOUT):
        """user's claim of event through nginx, from a thread inside the
        front host (client_pool()); a harness Claim, never raises."""
        return claim(self.url, token, user, event, timeout)

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
                          % (p, lines, tail_file(p, lines)))


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


def module_fixture(request, c, banner, before_destroy=None):
    """The body of a test module's fixture (yield from it): c started
    (the module fails if it cannot be), banner(c) printed; at the end the
    logs printed if a test failed or an app host died, before_destroy(c)
    (while the run directory still exists), c destroyed; then the module
    fails if an app host died."""
    import pytest
    with sigterm_as_interrupt():
        try:
            c.start()
        except StackError as e:
            pytest.fail("cannot start %s: %s" % (type(c).__name__, e))
        sys.stderr.write(banner(c))
        try:
            yield c
        finally:
            crashed = c.crashed_apps()
            if request.session.testsfailed or crashed:
                c.failed = True
                c.print_logs()
            if before_destroy is not None:
                before_destroy(c)
            c.destroy()
            sys.stderr.write("%s: network removed in %.1f s\n"
                             % (type(c).__name__, c.timings["destroy"]))
        assert not crashed, "app host(s) died: %s" % crashed


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
