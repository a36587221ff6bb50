"""The systemd units of deploy/, checked as far as this machine allows.

    /usr/bin/python3 -m pytest -q tests/install        (make test-install)

There is no running systemd here (PID 1 is not systemd), so nothing below
starts a unit. What is checked instead:

- `systemd-analyze verify` (systemd's own parser, offline) finds nothing to
  say about either unit set, and `systemd-analyze security --offline`
  rates both "OK" or better;
- the settings the deployment relies on are present (Restart, User,
  journal, StandardInput=socket with StandardOutput/StandardError set, ...);
- deploy/systemd/env.example names only variables the app knows;
- the spawn-fcgi unit's ExecStart, run as written (paths moved into a temp
  dir) by an unprivileged user with the unit's group set-up, serves claims
  on a socket only the tickets-socket group (nginx) can reach, in no group
  of nginx's, and exits 0 on SIGTERM;
- the socket-activated convention, for real with systemd's own
  systemd-socket-activate --inetd: the listening socket as standard input
  (and output), no LISTEN_FDS, exactly what StandardInput=socket hands over;
- the pitfall the unit guards against (stdout and stderr inherited = the
  listening socket): the app still serves, and its log lines are lost;
- a socket held by someone else (as systemd holds the .socket unit's)
  survives an app restart: requests made while no app runs wait in the
  backlog and are answered by the next one, none fails.

Not checked (needs systemd as PID 1): that systemd applies User=, the
hardening options, RuntimeDirectory=, SocketUser/Group/Mode=, journald
capture, Restart= and the ordering.
"""

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)

from fixtures import own_stack  # noqa: E402
from harness import ROOT, fcgi_request  # noqa: E402

DEPLOY = os.path.join(ROOT, "deploy")
SPAWN_UNIT = os.path.join(DEPLOY, "systemd", "spawn-fcgi", "tickets-fcgi.service")
SA_SOCKET = os.path.join(DEPLOY, "systemd", "socket-activated", "tickets-fcgi.socket")
SA_SERVICE = os.path.join(DEPLOY, "systemd", "socket-activated", "tickets-fcgi.service")
TPL_SOCKET = os.path.join(DEPLOY, "systemd", "socket-activated", "tickets-fcgi@.socket")
TPL_SERVICE = os.path.join(DEPLOY, "systemd", "socket-activated", "tickets-fcgi@.service")
SYSUSERS = os.path.join(DEPLOY, "sysusers.d", "tickets-fcgi.conf")
ENV_EXAMPLE = os.path.join(DEPLOY, "systemd", "env.example")
APP_BIN = os.path.abspath(os.environ.get("TICKETS_BIN")
                          or os.path.join(ROOT, "build", "tickets-fcgi"))


def parse_unit(path):
    """{section: [(key, value), ...]} with systemd's line continuation."""
    out, section, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("["):
                section = s.strip("[]")
                out.setdefault(section, [])
                continue
            k, _, v = s.partition("=")
            out[section].append((k.strip(), v.strip()))
    return out


def setting(unit, section, key):
    """The last value of key (what systemd uses for single-value keys)."""
    vals = [v for k, v in unit.get(section, []) if k == key]
    return vals[-1] if vals else None


def parse_env_file(path):
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them (the subset
    used here: no quotes, no continuation)."""
    env = {}
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            k, _, v = s.partition("=")
            env[k.strip()] = v.strip()
    return env


def rendered(path, out_dir, bin_path):
    """A copy of a unit file whose /usr/bin/tickets-fcgi is bin_path (a
    template as its instance "app2")."""
    with open(path) as f:
        text = f.read().replace("/usr/bin/tickets-fcgi", bin_path)
    dst = os.path.join(out_dir, os.path.basename(path).replace("@.", "@app2."))
    with open(dst, "w") as f:
        f.write(text)
    return dst


need_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                  reason="systemd-analyze not installed")
need_root = pytest.mark.skipif(os.geteuid() != 0,
                               reason="needs root (setpriv to another user)")


# ---------------------------------------------------------------------------
# static checks

@need_analyze
@pytest.mark.parametrize("units", [[SPAWN_UNIT], [SA_SOCKET, SA_SERVICE],
                                   [TPL_SOCKET, TPL_SERVICE]],
                         ids=["spawn-fcgi", "socket-activated", "template"])
def test_systemd_analyze_verify_is_silent(units, tmp_path):
    assert os.access(APP_BIN, os.X_OK), "build the app first (make)"
    files = [rendered(u, str(tmp_path), APP_BIN) for u in units]
    # --man=no: Documentation=man:tickets-fcgi(8) exists only once installed
    # (make test-deb verifies the installed units with it)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + files,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout


@need_analyze
@pytest.mark.parametrize("unit", [SPAWN_UNIT, SA_SERVICE, TPL_SERVICE],
                         ids=["spawn-fcgi", "socket-activated", "template"])
def test_systemd_analyze_security_offline(unit, tmp_path):
    f = rendered(unit, str(tmp_path), APP_BIN)
    # --threshold=30: fail above an exposure of 3.0 ("OK" is below 4.0)
    r = subprocess.run(["systemd-analyze", "security", "--offline=true",
                        "--no-pager", "--threshold=30", f],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", r.stdout)
    assert m, r.stdout[-2000:]
    sys.stderr.write("\n%s: exposure %s %s\n" % (os.path.relpath(unit, ROOT),
                                                 m.group(1), m.group(2)))
    assert r.returncode == 0, r.stdout[-2000:]


def test_spawn_fcgi_unit_settings():
    u = parse_unit(SPAWN_UNIT)
    s = lambda k: setting(u, "Service", k)  # noqa: E731
    assert s("Type") == "simple"
    argv = shlex.split(s("ExecStart"))
    assert argv[0] == "/usr/bin/spawn-fcgi" and "-n" in argv[:argv.index("--")]
    assert argv[argv.index("-s") + 1] == "/run/tickets-fcgi/app.sock"
    assert argv[argv.index("-M") + 1] == "0660"
    assert int(argv[argv.index("-b") + 1]) >= 1024
    assert argv[argv.index("--") + 1:] == ["/usr/bin/tickets-fcgi"]
    assert s("RuntimeDirectory") == "tickets-fcgi"
    # the socket's group is one of its own, shared with nginx only: never
    # www-data's (on Debian it also owns php-fpm's socket)
    assert s("User") == "tickets" and s("Group") == "tickets-socket"
    assert "www-data" not in (s("SupplementaryGroups") or "").split()
    assert s("Restart") == "on-failure"
    assert s("StandardError") == "journal" and s("StandardOutput") == "journal"
    assert int(s("LimitNOFILE")) >= 4096
    assert s("EnvironmentFile") == "/etc/tickets-fcgi/env"
    assert s("UnsetEnvironment") == "TICKETS_LISTEN"
    for k, v in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                 ("PrivateTmp", "yes"), ("ProtectHome", "yes")]:
        assert s(k) == v, k
    # stop within the app's own bound: lock timeout + db timeout + 5 s
    assert int(s("TimeoutStopSec").rstrip("s")) >= 3 + 10 + 5
    assert s("ExecReload") is None       # the app ignores SIGHUP


def test_sysusers_gives_nginx_the_socket_group_and_the_app_not_nginx_s():
    lines = [tuple(line.split()[:3]) for line in open(SYSUSERS)
             if line.strip() and not line.startswith("#")]
    assert ("u", "tickets", "-") in lines
    assert ("g", "tickets-socket", "-") in lines
    assert ("m", "www-data", "tickets-socket") in lines
    # nginx must not read the secrets (root:tickets 0640)
    assert ("m", "www-data", "tickets") not in lines
    assert not [m for m in lines if m[0] == "m" and m[1] == "tickets"]


@pytest.mark.parametrize("unit", [SPAWN_UNIT, SA_SERVICE, TPL_SERVICE],
                         ids=["spawn-fcgi", "socket-activated", "template"])
def test_no_core_dumps(unit):
    """A core dump would hold the JWT secret and the database password."""
    assert setting(parse_unit(unit), "Service", "LimitCORE") == "0"


def test_template_instance_serves_its_own_socket():
    so, sv = parse_unit(TPL_SOCKET), parse_unit(TPL_SERVICE)
    assert setting(so, "Socket", "ListenStream") == "/run/tickets-fcgi/%i.sock"
    assert setting(so, "Socket", "SocketGroup") == "www-data"
    assert "tickets-fcgi@%i.socket" in setting(sv, "Unit", "Requires")
    envs = [v for k, v in sv["Service"] if k == "EnvironmentFile"]
    assert envs == ["/etc/tickets-fcgi/env", "-/etc/tickets-fcgi/%i.env"]
    # the rest as the default instance's service
    base = dict(parse_unit(SA_SERVICE)["Service"])
    tpl = dict(sv["Service"])
    for k in ("User", "Group", "ExecStart", "StandardInput", "StandardOutput",
              "StandardError", "UnsetEnvironment", "LimitCORE", "SystemCallFilter"):
        assert tpl.get(k) == base.get(k), k


def test_socket_activated_unit_settings():
    so, sv = parse_unit(SA_SOCKET), parse_unit(SA_SERVICE)
    assert setting(so, "Socket", "ListenStream") == "/run/tickets-fcgi/app.sock"
    assert setting(so, "Socket", "SocketMode") == "0660"
    assert setting(so, "Socket", "SocketGroup") == "www-data"
    assert setting(so, "Socket", "Accept") in (None, "no", "false")
    s = lambda k: setting(sv, "Service", k)  # noqa: E731
    assert s("ExecStart") == "/usr/bin/tickets-fcgi"
    assert s("StandardInput") == "socket"
    # the pitfall: StandardOutput= would default to inherit (the socket)
    assert s("StandardOutput") == "journal" and s("StandardError") == "journal"
    assert s("User") == "tickets" and s("Restart") == "on-failure"
    assert s("UnsetEnvironment") == "TICKETS_LISTEN"
    assert s("EnvironmentFile") == "/etc/tickets-fcgi/env"
    assert "tickets-fcgi.socket" in setting(sv, "Unit", "Requires")


def test_env_example_names_only_known_variables():
    env = parse_env_file(ENV_EXAMPLE)
    known = set(re.findall(r"\b(TICKETS_[A-Z_]+)\b", subprocess.run(
        [APP_BIN, "--help"], stdout=subprocess.PIPE, text=True).stdout))
    with open(ENV_EXAMPLE) as f:
        mentioned = set(re.findall(r"\b(TICKETS_[A-Z_]+)\b", f.read()))
    assert mentioned <= known, mentioned - known
    assert "TICKETS_LISTEN" not in env
    assert "TICKETS_TEST_UNSAFE_NO_LOCK" not in mentioned
    assert {"TICKETS_JWT_SECRET_FILE", "TICKETS_DB_PASSWORD_FILE"} <= set(env)


# ---------------------------------------------------------------------------
# running the app the way the units do

@pytest.fixture(scope="module")
def stack():
    """A private MariaDB (and one app, unused) for the apps started here."""
    yield from own_stack(instances=1)


@pytest.fixture
def world(stack):
    """A user and an event, and the environment an app needs (from
    env.example, with the stack's database and copies of its secrets), in a
    temp dir that other users may traverse (pytest's tmp_path is 0700)."""
    tmp = tempfile.mkdtemp(prefix="tickets-units-")
    os.chmod(tmp, 0o755)
    try:
        yield _world(stack, __import__("pathlib").Path(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _world(stack, tmp_path):
    stack.reset_tables()
    stack.make_user(7)
    stack.make_event(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_")}
    env.update(parse_env_file(ENV_EXAMPLE))
    env["TICKETS_DB_SOCKET"] = stack.db_socket
    for name, key in (("db-password", "TICKETS_DB_PASSWORD_FILE"),
                      ("jwt-secret", "TICKETS_JWT_SECRET_FILE")):
        dst = tmp_path / name
        shutil.copyfile(stack.path(name), dst)
        os.chmod(dst, 0o640)
        env[key] = str(dst)
    env["TICKETS_THREADS"] = "4"
    env.pop("TICKETS_LISTEN", None)          # UnsetEnvironment=TICKETS_LISTEN
    return {"env": env, "token": stack.token(7), "dir": tmp_path}


def claim_twice(sock, token):
    h = {"Authorization": "Bearer " + token}
    r1 = fcgi_request(sock, "POST", "/api/events/3/participation", h)
    r2 = fcgi_request(sock, "POST", "/api/events/3/participation", h)
    assert (r1.status, r2.status) == (201, 200), (r1, r2)
    assert r1.json["ticket"]["code"] == r2.json["ticket"]["code"]


def wait_socket(path, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, "exited with %s" % proc.returncode
        assert time.monotonic() < deadline, "no socket at %s" % path
        time.sleep(0.02)


def log_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def stop(proc, timeout=30):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@need_root
def test_spawn_fcgi_unit_execstart_as_written(stack, world):
    """The unit's ExecStart, as an unprivileged user whose primary group is
    the socket's group (User=tickets, Group=tickets-socket; `nobody` stands
    in for tickets, the unused gid 48152 for tickets-socket, group nogroup
    for the supplementary group tickets that reads the secrets), in a
    runtime directory made as RuntimeDirectory= would. nginx is a member of
    tickets-socket (sysusers.d); the app is in no group of nginx's."""
    u = parse_unit(SPAWN_UNIT)
    d = world["dir"]
    os.chmod(stack.dir, 0o711)               # reach mysql.sock (mode 0777)
    run = d / "run"                          # stands for /run/tickets-fcgi
    run.mkdir()
    nobody = pwd.getpwnam("nobody").pw_uid
    www = grp.getgrnam("www-data").gr_gid
    sockgrp = 48152                          # stands for tickets-socket
    nogroup = grp.getgrnam("nogroup").gr_gid
    os.chown(run, nobody, sockgrp)
    os.chmod(run, 0o750)                      # RuntimeDirectoryMode=0750
    app = d / "tickets-fcgi"
    shutil.copy(APP_BIN, app)
    for key in ("TICKETS_DB_PASSWORD_FILE", "TICKETS_JWT_SECRET_FILE"):
        os.chown(world["env"][key], 0, nogroup)  # root:tickets 0640
    argv = [a.replace("/run/tickets-fcgi", str(run))
             .replace("/usr/bin/tickets-fcgi", str(app))
            for a in shlex.split(setting(u, "Service", "ExecStart"))]
    log = d / "app.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(
            ["setpriv", "--reuid=%d" % nobody, "--regid=%d" % sockgrp,
             "--groups=%d" % nogroup, "--no-new-privs", "--"] + argv,
            env=world["env"], stdin=subprocess.DEVNULL, stdout=f, stderr=f,
            start_new_session=True)
    try:
        sock = str(run / "app.sock")
        wait_socket(sock, p)
        st = os.stat(sock)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody, sockgrp, 0o660)
        # spawn-fcgi -n execs the app in place: the pid systemd supervises
        # is the app's
        deadline = time.monotonic() + 5
        while os.readlink("/proc/%d/exe" % p.pid) != str(app):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # the app holds none of www-data's privileges
        with open("/proc/%d/status" % p.pid) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        gids = set(status["Gid"].split()) | set(status["Groups"].split())
        assert str(www) not in gids, status["Gid"] + status["Groups"]
        claim_twice(sock, world["token"])
        # nginx, a member of the socket's group, can connect; others cannot
        # (mode 0660, dir 0750), www-data's group alone included
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX);"
                 "s.connect(sys.argv[1])")
        ok = subprocess.run(["setpriv", "--reuid=48151", "--regid=%d" % www,
                             "--groups=%d" % sockgrp, "--", sys.executable, "-c", probe,
                             sock], capture_output=True)
        assert ok.returncode == 0, ok.stderr
        for groups in (["--clear-groups"], ["--groups=%d" % www]):
            denied = subprocess.run(["setpriv", "--reuid=48151", "--regid=48151"]
                                    + groups + ["--", sys.executable, "-c", probe,
                                                sock], capture_output=True)
            assert b"PermissionError" in denied.stderr, groups
    finally:
        rc = stop(p)
    assert rc == 0
    lines = log_lines(log)
    assert [o["status"] for o in lines if o.get("msg") == "request"] == [201, 200]


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"),
                    reason="systemd-socket-activate not installed (package systemd)")
def test_socket_activation_passes_the_listening_socket_on_stdin(world):
    """systemd-socket-activate --inetd without --accept waits for the first
    connection, then execs the app with the *listening* socket as fd 0 and
    fd 1 and no LISTEN_FDS: what StandardInput=socket does (with the
    StandardOutput=inherit default). The connection that woke it is
    answered by the app."""
    d = world["dir"]
    sock = str(d / "app.sock")
    log = d / "app.log"
    cmd = ["systemd-socket-activate", "--listen=" + sock, "--inetd"]
    for k, v in sorted(world["env"].items()):
        if k.startswith("TICKETS_"):
            cmd.append("--setenv=%s=%s" % (k, v))
    cmd.append(APP_BIN)
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                             start_new_session=True)
    try:
        wait_socket(sock, p)
        claim_twice(sock, world["token"])
        fd0 = os.readlink("/proc/%d/fd/0" % p.pid)
        fd1 = os.readlink("/proc/%d/fd/1" % p.pid)
        assert fd0.startswith("socket:") and fd1 == fd0
        with open("/proc/%d/environ" % p.pid, "rb") as f:
            environ = f.read().split(b"\0")
        assert not [e for e in environ if e.startswith(b"LISTEN_")]
        assert os.readlink("/proc/%d/exe" % p.pid) == os.path.realpath(APP_BIN)
    finally:
        rc = stop(p)
    assert rc == 0
    lines = log_lines(log)
    assert any("listening on fd 0" in o.get("msg", "") for o in lines), lines
    assert [o["status"] for o in lines if o.get("msg") == "request"] == [201, 200]


def _listening_unix_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o660)
    s.listen(1024)
    return s


def test_pitfall_stderr_inherited_from_the_socket_loses_the_logs(world):
    """StandardInput=socket without StandardOutput=/StandardError=: fds 0, 1
    and 2 are all the listening socket. The app still serves (a write to a
    listening socket fails with ENOTCONN, no SIGPIPE), but not one log line
    reaches anyone: hence StandardOutput=journal, StandardError=journal."""
    d = world["dir"]
    path = str(d / "app.sock")
    lsock = _listening_unix_socket(path)
    p = subprocess.Popen([APP_BIN], env=world["env"], stdin=lsock.fileno(),
                         stdout=lsock.fileno(), stderr=lsock.fileno(),
                         start_new_session=True)
    lsock.close()
    try:
        claim_twice(path, world["token"])
        fds = {os.readlink("/proc/%d/fd/%d" % (p.pid, i)) for i in (0, 1, 2)}
        assert len(fds) == 1 and fds.pop().startswith("socket:")
    finally:
        rc = stop(p)
    assert rc == 0
    # nothing to read anywhere: the log lines were written to a socket that
    # has no peer, and the write failed


def test_socket_held_across_restart_loses_no_request(world):
    """What the .socket unit buys: systemd keeps the listening socket while
    the service restarts. Emulated: this test holds the socket, app A serves
    it, gets SIGTERM (it must not shutdown() the shared socket), 0.5 s pass
    with no app at all, app B takes over. Requests sent all along: none
    fails, those sent in the gap wait in the backlog and B answers them."""
    d = world["dir"]
    path = str(d / "app.sock")
    lsock = _listening_unix_socket(path)
    logs = [d / "a.log", d / "b.log"]

    def start(i):
        with open(logs[i], "wb") as f:
            return subprocess.Popen([APP_BIN], env=world["env"],
                                    stdin=lsock.fileno(), stdout=subprocess.DEVNULL,
                                    stderr=f, start_new_session=True)
    results, stop_flag = [], threading.Event()

    def client():
        while not stop_flag.is_set():
            t0 = time.monotonic()
            try:
                r = fcgi_request(path, "GET", "/api/events", timeout=20)
                results.append((t0, time.monotonic(), r.status))
            except Exception as e:  # noqa: BLE001 - counted as a failure
                results.append((t0, time.monotonic(), repr(e)))
    a = start(0)
    threads = [threading.Thread(target=client) for _ in range(4)]
    b = None
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert stop(a) == 0
        gap_start = time.monotonic()
        time.sleep(0.5)
        b = start(1)
        time.sleep(1.0)
    finally:
        stop_flag.set()
        for t in threads:
            t.join(30)
        if a.poll() is None:
            stop(a)
        if b is not None:
            assert stop(b) == 0
        lsock.close()
    failed = [r for r in results if r[2] != 200]
    waited = [r for r in results if r[0] < gap_start + 0.4 and r[1] > gap_start + 0.5]
    served = [len([o for o in log_lines(lg) if o.get("msg") == "request"])
              for lg in logs]
    sys.stderr.write("\nrestart with the socket held: %d requests, %d failed, "
                     "%d waited through the gap; A served %d, B served %d\n"
                     % (len(results), len(failed), len(waited), *served))
    assert not failed, failed[:5]
    assert waited, "no request was made while no app ran"
    assert served[0] > 0 and served[1] > 0
