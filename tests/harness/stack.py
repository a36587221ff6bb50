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

`make run` is scripts/run-stack, a thin launcher over this module; the
parts it is made of are the other modules of tests/harness/, which
tests/cluster builds its hosts from too.

Options of Stack beyond the API: web=True serves the page of web/ at `/`
(and, with demo=True, the demo sign-in's /demo/tokens.json, written by
write_demo_tokens()); php=True starts php-fpm on a unix socket in the run
directory and routes /php/ to the PHP example in examples/php/.

Standard library and pymysql only (Debian: python3, python3-pymysql).
"""

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

from .apps import TEST_APP_ENV, AppInstance, app_env
from .data import DEMO_USERS, Database
from .http import http_request
from .jwt import make_token, new_secret
from .mariadb import (DB_NAME, DB_USER, create_database, install_datadir,
                      load_sql, mariadbd_cmd, pymysql, root_connect)
from .nginx import (UPSTREAM_KEEPALIVE, nginx_cmd, nginx_test, php_block,
                    php_fpm_cmd, render, upstream_servers, web_block)
from .processes import (DEFAULT_BIN, ROOT, SANITIZER_MARKS, StackError,
                        build_for_tests, children, free_port, guarded,
                        is_nginx_worker, stop_process, tail_file, wait_for,
                        write_private)
from .tls import make_server_tls


class Stack(Database):
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
        # more render parameters, for bench/run's tuning runs: the shipped
        # per-token limit_req on, nginx's worker_processes as shipped
        self.token_limit = True
        self.worker_processes = None
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
            create_database(self.db_socket, self.dir, demo=self.demo)
            self.timings["db+schema"] = time.monotonic() - t0
            self.secret = new_secret(self.path("jwt-secret"))
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
            stop_process(self.php_proc, 10, "php-fpm")
            self.php_proc = None
        if self.nginx_proc is not None:
            workers = children(self.nginx_proc.pid) or self._nginx_workers
            stop_process(self.nginx_proc, 10, "nginx")
            for pid in workers:   # a SIGKILLed master leaves its workers
                if is_nginx_worker(pid):
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
            stop_process(self.db_proc, 60, "mariadbd")
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

    def _start_db(self):
        if self.db_tls:
            make_server_tls(self.path("tls"), "db-server", "127.0.0.1", "db-ca",
                            "tickets test database CA")
            if self.db_port is None:
                self.db_port = free_port()
        datadir = self.path("db")
        if not os.path.isdir(os.path.join(datadir, "mysql")):
            install_datadir(datadir, self.path("mariadb-install.log"))
        self.start_db()

    def _db_cmd(self):
        if self.db_tls:
            return mariadbd_cmd(self.dir, ("127.0.0.1", self.db_port),
                                self.path("tls"))
        return mariadbd_cmd(self.dir)

    def start_db(self, timeout=60):
        """Start (or start again) the private MariaDB; wait until it answers."""
        self._not_attached("start_db()")
        if self.db_proc is not None and self.db_proc.poll() is None:
            return
        with open(self.path("mariadb.out"), "ab") as out:
            self.db_proc = subprocess.Popen(
                guarded(self._db_cmd()), stdin=subprocess.DEVNULL, stdout=out,
                stderr=out, start_new_session=True)
        wait_for("MariaDB", lambda: self.root_conn(db=None, timeout=2).close()
                 or True, timeout, self.db_proc, self.path("mariadb.err"))

    def stop_db(self, timeout=60):
        """Shut the private MariaDB down (clean shutdown); start_db() brings
        it back with the same data."""
        self._not_attached("stop_db()")
        stop_process(self.db_proc, timeout, "mariadbd")

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

    def root_conn(self, db=DB_NAME, timeout=10):
        """A new pymysql connection as root (autocommit, database db)."""
        return root_connect(self.db_socket, db, timeout)

    def load_sql(self, filename, database=DB_NAME):
        """Load sql/<filename> with the mariadb client (as root)."""
        load_sql(self.db_socket, filename, database)

    # -- apps

    def _start_apps(self, count):
        if self.db_tls:
            env = app_env(self.dir, ("127.0.0.1", self.db_port), self.base_env,
                          self.extra_env, tls_ca=self.path("tls", "db-ca.pem"))
        else:
            env = app_env(self.dir, self.db_socket, self.base_env, self.extra_env)
        self.instances = []
        for i in range(count):
            addr = (("127.0.0.1", free_port()) if self.tcp
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
        self.render_nginx()
        self.reload_nginx()

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

    def render_nginx(self):
        """nginx.conf and the snippets into the run directory (see
        nginx.render()), for the instances of now."""
        web = php = ""
        if self.web:
            web = web_block(self.path("demo", "tokens.json") if self.demo else None)
        if self.php:
            php = php_block(self.path("php-fpm.sock"))
        render(self.dir, self.port, self.internal_port, self.tls_port,
               upstream_servers([i.upstream for i in self.instances],
                                self.keepalive),
               web, php, self.addr_limit, self.token_limit,
               self.worker_processes)

    def set_addr_limit(self, on):
        """The shipped per-address limit of tokenless requests on or off
        (off by default, see __init__); nginx re-rendered and reloaded."""
        self.addr_limit = bool(on)
        self.render_nginx()
        self.reload_nginx()

    def tls_context(self):
        """An ssl.SSLContext that trusts nginx's throw-away CA (and checks
        the host name), for requests to tls_url."""
        ctx = ssl.create_default_context(cafile=self.path("tls", "web-ca.pem"))
        return ctx

    def _start_nginx(self):
        taken = set()
        for attr in ("port", "internal_port", "tls_port"):
            if getattr(self, attr) is None:
                p = free_port()
                while p in taken:
                    p = free_port()
                setattr(self, attr, p)
            taken.add(getattr(self, attr))
        make_server_tls(self.path("tls"), "nginx", "localhost", "web-ca",
                        "tickets test web CA")
        self.url = "http://127.0.0.1:%d" % self.port
        self.internal_url = "http://127.0.0.1:%d" % self.internal_port
        self.tls_url = "https://127.0.0.1:%d" % self.tls_port
        self.render_nginx()
        nginx_test(self.dir)
        with open(self.path("nginx.out"), "ab") as out:
            self.nginx_proc = subprocess.Popen(
                guarded(nginx_cmd(self.dir)), stdin=subprocess.DEVNULL, stdout=out,
                stderr=out, start_new_session=True)

        def ours(url):
            # our own JSON 404, so not some other server on that port
            r = http_request(url, "GET", "/.stack-ready", timeout=2)
            return r.status == 404 and (r.json or {}).get("error") == "not_found"
        for url in (self.url, self.internal_url):
            wait_for("nginx on " + url, lambda: ours(url), 20,
                     self.nginx_proc, self.path("nginx-error.log"))
        wait_for("nginx on " + self.tls_url, lambda: http_request(
            self.tls_url, "GET", "/.stack-ready", timeout=2,
            tls_context=self.tls_context()).status == 404, 20,
            self.nginx_proc, self.path("nginx-error.log"))
        self._nginx_workers = children(self.nginx_proc.pid)

    def reload_nginx(self, timeout=20):
        """nginx -t, SIGHUP, and wait until only new workers run."""
        nginx_test(self.dir)
        old = set(children(self.nginx_proc.pid))
        self.nginx_proc.send_signal(signal.SIGHUP)

        def reloaded():
            now = set(children(self.nginx_proc.pid))
            return now and not (now & old)
        wait_for("nginx reload", reloaded, timeout, self.nginx_proc,
                 self.path("nginx-error.log"))
        self._nginx_workers = children(self.nginx_proc.pid)

    # -- php-fpm (php=True): the PHP example behind the same nginx

    def _start_php(self):
        cmd = php_fpm_cmd(self.dir, self.url, self.secret_file)
        with open(self.path("php-fpm.out"), "ab") as out:
            self.php_proc = subprocess.Popen(
                guarded(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                cwd=self.dir, start_new_session=True)

        def ready():
            r = http_request(self.url, "GET", "/php/", timeout=5)
            if r.status != 200:
                raise StackError("GET /php/: %s %s" % (r.status, r.text[:200]))
            return True
        wait_for("php-fpm (%s)" % self.path("php-fpm.sock"), ready, 20,
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
        write_private(tmp, json.dumps(data, indent=2) + "\n")
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
