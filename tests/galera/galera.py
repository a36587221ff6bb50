"""A three-node MariaDB Galera cluster behind HAProxy, for tests/galera/:
tests/cluster/cluster.py's network of namespaces, with its database host
replaced by

    node N   <prefix>-gN   mariadbd with galera-4 (Debian), clients on
                           eth0 (<net>.2N:3306), replication (group
                           communication, IST, SST by rsync) on eth1, a
                           second bridge (<net+1>.2N), so that cutting a
                           node's replication link leaves it reachable by
                           clients but outside the Primary Component
    balancer <prefix>-lb   haproxy with deploy/haproxy/tickets-galera.cfg
                           (only addresses, stats socket and log replaced)
                           on <net>.30:3306; the app hosts' database

Everything else (app hosts, nginx, the HTTP helpers, clean-up by pid and
namespace) is the Cluster class's.  Node 1 bootstraps the cluster, nodes 2
and 3 join by SST (rsync); a node restarted later rejoins by IST.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "cluster"))
import cluster as _cluster  # noqa: E402  (tests/cluster/cluster.py)
from cluster import Cluster, StackError, iproute  # noqa: E402
from harness import (DB_TIME_ZONE, ROOT, held_locks, install_datadir,  # noqa: E402
                     invariant_problems, pymysql, query_rows, root_connect,
                     stop_process, tail_file, wait_for)

NET = _cluster.NET
_o = NET.split(".")
REPL_NET = "%s.%s.%d" % (_o[0], _o[1], (int(_o[2]) + 1) % 256)
PROVIDER = "/usr/lib/galera/libgalera_smm.so"
HAPROXY_CFG = os.path.join(ROOT, "deploy", "haproxy", "tickets-galera.cfg")
SYNCED = 4


class GaleraCluster(Cluster):
    """Cluster(apps) with nodes Galera nodes and an HAProxy instead of the
    single database host.  db_socket is node 1's (root's checks);
    sql_on(n, ...) asks node n."""

    def __init__(self, apps=3, nodes=3, **kw):
        super().__init__(apps=apps, **kw)
        self.nnodes = nodes
        del self.ns["db"]
        self.rip = {}
        for n in range(1, nodes + 1):
            self.ns["g%d" % n] = "%s-g%d" % (self.tag, n)
            self.ip["g%d" % n] = "%s.%d" % (NET, 20 + n)
            self.rip["g%d" % n] = "%s.%d" % (REPL_NET, 20 + n)
        self.ns["lb"] = self.tag + "-lb"
        self.ip["lb"] = NET + ".30"
        self.ip["db"] = self.ip["lb"]      # the apps' database: the balancer
        # app host i -> the address of its node; none: the balancer
        self.direct_db = {}

    # -- network: the Cluster's, plus the replication bridge

    def _network(self):
        super()._network()
        self.add_bridge("br1")
        for n in range(1, self.nnodes + 1):
            self.add_cable("g%d" % n, "eth1", "br1", self.rveth(n),
                           self.rip["g%d" % n])

    def rveth(self, n):
        return "%sr%d" % (self.tag, n)

    def cut_replication(self, n):
        """Node n's replication cable out: it still answers clients, but
        loses the other nodes (and they it)."""
        iproute("-n", self.ns["sw"], "link", "set", self.rveth(n), "down")

    def restore_replication(self, n):
        iproute("-n", self.ns["sw"], "link", "set", self.rveth(n), "up")

    def cut_links(self, n):
        """Both of node n's cables out: clients and the other nodes lose it."""
        for v in (self.veth("g%d" % n), self.rveth(n)):
            iproute("-n", self.ns["sw"], "link", "set", v, "down")

    def restore_links(self, n):
        for v in (self.veth("g%d" % n), self.rveth(n)):
            iproute("-n", self.ns["sw"], "link", "set", v, "up")

    # -- the Galera nodes

    def node_dir(self, n):
        """Node n's files (data in data/), owned by the mysql user: the
        donor's rsync writes into the joiner's directory through an rsync
        daemon, which, started as root, would switch to "nobody"."""
        return self.path("g%d" % n)

    def sock(self, n):
        return os.path.join(self.node_dir(n), "mysql.sock")

    @property
    def db_socket(self):
        """Root's socket for set-up and checks: the first node that is
        running and ready (node 1 while it is)."""
        for n in range(1, self.nnodes + 1):
            p = self.procs.get("g%d" % n)
            if p is None or p.poll() is not None:
                continue
            if n == self.nnodes:
                return self.sock(n)
            s = self.node_state(n)
            if s and s[0]:
                return self.sock(n)
        return self.sock(1)

    def node_err(self, n):
        return os.path.join(self.node_dir(n), "mariadb.err")

    def _write_cnf(self, n):
        role = "g%d" % n
        peers = ",".join(self.rip["g%d" % m] for m in range(1, self.nnodes + 1))
        cnf = """# rendered by tests/galera/galera.py
[mysqld]
datadir=%(d)s/data
socket=%(sock)s
pid-file=%(d)s/mariadb.pid
log-error=%(err)s
bind-address=0.0.0.0
port=3306
skip-name-resolve
skip-log-bin
max-connections=400
max-connect-errors=1000000
innodb-flush-log-at-trx-commit=0
innodb-doublewrite=0
innodb-buffer-pool-size=64M
innodb-autoinc-lock-mode=2
binlog-format=ROW
plugin-load-add=metadata_lock_info
default-time-zone=%(tz)s
character-set-server=utf8mb4
%(user)s
wsrep-on=ON
wsrep-provider=%(provider)s
wsrep-cluster-name=tickets_test
wsrep-cluster-address=gcomm://%(peers)s
wsrep-node-address=%(rip)s
wsrep-node-incoming-address=%(ip)s:3306
wsrep-node-name=g%(n)d
wsrep-sst-method=rsync
wsrep-slave-threads=2
wsrep-provider-options="gcache.size=64M"
""" % {"d": self.node_dir(n), "n": n, "sock": self.sock(n), "err": self.node_err(n),
           "tz": DB_TIME_ZONE, "provider": PROVIDER, "peers": peers,
           "rip": self.rip[role], "ip": self.ip[role],
           "user": "user=mysql" if os.geteuid() == 0 else ""}
        path = self.path("g%d.cnf" % n)
        with open(path, "w") as f:
            f.write(cnf)
        return path

    def start_node(self, n, bootstrap=False, timeout=90):
        """Start node n (after a kill too: it then rejoins, by IST when the
        others' gcache still holds what it missed) and wait until it is
        synced."""
        cnf = self._write_cnf(n)
        datadir = os.path.join(self.node_dir(n), "data")
        if not os.path.isdir(datadir):
            os.makedirs(datadir)          # a joiner's is filled by SST
            os.chmod(self.dir, 0o711)     # mysql reaches its own directory
            if os.geteuid() == 0:
                subprocess.check_call(["chown", "-R", "mysql:mysql",
                                       self.node_dir(n)])
            if bootstrap:
                install_datadir(datadir, self.path("g%d-install.log" % n),
                                "mysql")
        cmd = ["mariadbd", "--defaults-file=" + cnf]
        if bootstrap:
            cmd.append("--wsrep-new-cluster")
        elif os.path.exists(os.path.join(datadir, "grastate.dat")):
            # after a crash grastate.dat says seqno -1: recover the position
            # from InnoDB first (as Debian's unit does with galera_recovery),
            # else the node asks for a full SST instead of IST
            pos = self._recover_position(n, cnf)
            if pos:
                cmd.append("--wsrep-start-position=" + pos)
        p = self._popen("g%d" % n, "g%d" % n, cmd, log=self.path("g%d.out" % n))
        self.wait_synced(n, timeout, p)
        return p

    def _recover_position(self, n, cnf):
        log = os.path.join(self.node_dir(n), "recover.err")
        if os.path.exists(log):
            os.unlink(log)
        subprocess.run(["mariadbd", "--defaults-file=" + cnf, "--wsrep-recover",
                        "--log-error=" + log], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
        try:
            with open(log) as f:
                found = re.findall(r"WSREP: Recovered position: (\S+:-?\d+)",
                                   f.read())
        except OSError:
            return None
        return found[-1] if found else None

    def node_conn(self, n, db="tickets", timeout=5):
        return root_connect(self.sock(n), db, timeout)

    def sql_on(self, n, query, args=None):
        return query_rows(self.node_conn(n), query, args)

    def status(self, n, like):
        """Node n's global status variables named like `like` (lower-case
        names).  Works on a node outside the Primary Component too (SHOW
        is allowed there; root_connect's autocommit COMMIT is not)."""
        conn = pymysql.connect(unix_socket=self.sock(n), user="root",
                                      password="", connect_timeout=5,
                                      autocommit=None)
        rows = query_rows(conn, "SHOW GLOBAL STATUS LIKE %s", (like,))
        return {k.lower(): v for k, v in rows}

    def wsrep(self, n):
        """Node n's wsrep status variables (lower-case names)."""
        return self.status(n, "wsrep%")

    def node_state(self, n):
        """(ready, local_state, cluster_size, cluster_status), or None if
        the node does not answer."""
        try:
            w = self.wsrep(n)
        except Exception:  # noqa: BLE001 - not answering is a state
            return None
        return (w.get("wsrep_ready") == "ON", int(w.get("wsrep_local_state", 0)),
                int(w.get("wsrep_cluster_size", 0)),
                w.get("wsrep_cluster_status"))

    def wait_synced(self, n, timeout=60, proc=None, size=None):
        def synced():
            s = self.node_state(n)
            return (s and s[0] and s[1] == SYNCED and s[3] == "Primary"
                    and (size is None or s[2] == size))
        wait_for("Galera node %d synced" % n, synced, timeout,
                         proc or self.procs.get("g%d" % n), self.node_err(n))

    def kill_node(self, n):
        """SIGKILL node n's mariadbd (by pid); returns when it is gone."""
        p = self.procs["g%d" % n]
        # ip netns exec / setpriv exec in place: p.pid is mariadbd
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

    def _start_db(self):
        self.start_node(1, bootstrap=True)
        # joiners one at a time: each takes a full copy (SST) from a donor
        for n in range(2, self.nnodes + 1):
            self.start_node(n, timeout=120)
        self.wait_synced(1, 30, size=self.nnodes)
        self._start_haproxy()

    def _setup_db(self):
        super()._setup_db()
        # the balancer's health-check user: no password, no privileges
        conn = self.root_conn(db=None)
        try:
            conn.cursor().execute("CREATE USER 'haproxy_check'@%s",
                                  (self.ip["lb"],))
        finally:
            conn.close()
        self.wait_haproxy({"node1": "UP"}, 30)

    # -- HAProxy

    def render_haproxy(self):
        with open(HAPROXY_CFG) as f:
            cfg = f.read()
        subs = [(r"(?m)^(\s*bind )\S+$", r"\g<1>%s:3306" % self.ip["lb"]),
                (r"(?m)^(\s*stats socket )\S+", r"\g<1>" + self.haproxy_sock),
                (r"(?m)^(\s*log )stdout( format raw local0 \w+)$",
                 r"\g<1>stdout\g<2>")]
        for n in range(1, self.nnodes + 1):
            subs.append((r"(?m)^(\s*server node%d )\S+" % n,
                         r"\g<1>%s:3306" % self.ip["g%d" % n]))
        for pat, rep in subs:
            cfg, k = re.subn(pat, rep, cfg)
            if k != 1:
                raise StackError("%s: %r matched %d times" % (HAPROXY_CFG, pat, k))
        path = self.path("haproxy.cfg")
        with open(path, "w") as f:
            f.write("# rendered by tests/galera/galera.py from %s\n%s"
                    % (os.path.relpath(HAPROXY_CFG, ROOT), cfg))
        return path

    @property
    def haproxy_sock(self):
        return self.path("haproxy.sock")

    def _start_haproxy(self):
        cfg = self.render_haproxy()
        r = subprocess.run(["haproxy", "-c", "-q", "-f", cfg],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise StackError("haproxy -c: %s" % r.stdout.decode())
        self._popen("haproxy", "lb", ["haproxy", "-db", "-f", cfg],
                    log=self.path("haproxy.log"))

    def haproxy_cmd(self, cmd):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(self.haproxy_sock)
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        finally:
            s.close()
        return out.decode()

    def haproxy_servers(self):
        """{"node1": "UP" | "DOWN" | ..., ...} from `show stat`."""
        out = {}
        lines = self.haproxy_cmd("show stat").splitlines()
        if not lines:
            return out
        head = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("svname", "").startswith("node"):
                out[row["svname"]] = row.get("status", "")
        return out

    def wait_haproxy(self, want, timeout):
        """Until the balancer's view includes want ({"node1": "UP"}, a
        status prefix); returns the seconds it took."""
        t0 = time.monotonic()

        def ok():
            s = self.haproxy_servers()
            return all(s.get(k, "").startswith(v) for k, v in want.items())
        wait_for("haproxy sees %s" % want, ok, timeout,
                         self.procs.get("haproxy"), self.path("haproxy.log"))
        return time.monotonic() - t0

    # -- apps: the balancer, or one node each (multi-writer)

    def app_db(self, i):
        """The node of app host i (direct_db), else the balancer."""
        direct = self.direct_db.get(i)
        return (direct, 3306) if direct else super().app_db(i)

    # -- checks, on every node

    def held_locks_on(self, n):
        return held_locks(lambda q, a=None: self.sql_on(n, q, a))

    def invariant_problems_all(self, settle=5.0):
        """stack.invariant_problems on each node (once it is synced), and
        the nodes agreeing on every ticket."""
        problems = []
        snapshots = {}
        for n in range(1, self.nnodes + 1):
            self.wait_synced(n, 60)
            # wsrep_sync_wait: this node's reads wait until it has applied
            # everything the cluster committed before them
            def sql(q, a=None, n=n):
                conn = self.node_conn(n)
                try:
                    conn.cursor().execute("SET SESSION wsrep_sync_wait = 1")
                except BaseException:
                    conn.close()
                    raise
                return query_rows(conn, q, a)     # closes conn
            problems += ["node %d: %s" % (n, p) for p in invariant_problems(
                sql, lambda n=n: self.held_locks_on(n), settle)]
            snapshots[n] = sorted(sql(
                "SELECT user_id, event_id, code FROM free_tickets"))
        for n in range(2, self.nnodes + 1):
            if snapshots[n] != snapshots[1]:
                problems.append("node %d's tickets differ from node 1's" % n)
        return problems

    # -- lifecycle

    def destroy(self):
        for name in ["haproxy"] + ["g%d" % n for n in range(self.nnodes, 0, -1)]:
            p = self.procs.pop(name, None)
            if p is not None:
                stop_process(p, 30 if name != "haproxy" else 10, name)
        super().destroy()

    def print_logs(self, lines=25, out=None):
        super().print_logs(lines, out)
        out = out or sys.stderr
        if not self.dir or not os.path.isdir(self.dir):
            return
        for p in [self.path("haproxy.log")] + [
                self.node_err(n) for n in range(1, self.nnodes + 1)]:
            if os.path.exists(p):
                out.write("----- %s (last %d lines)\n%s\n"
                          % (p, lines, tail_file(p, lines)))


if __name__ == "__main__":
    c = GaleraCluster(apps=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    with _cluster.sigterm_as_interrupt():
        with c:
            print("galera cluster up in %.1f s: apps %s; nginx %s inside %s; "
                  "files %s" % (c.timings["total"], c.app_addrs, c.url,
                                c.ns["fe"], c.dir))
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
