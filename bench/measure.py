"""bench/measure.py: how the benchmark measures (bench/run,
bench/scaling-measure.py).

A Meter runs load generators (wrk with bench/lua/bench.lua, or the ceiling
driver build/bench/claimdrv) against a running tests/harness stack and
returns, beside each generator's output, the CPU that each part of the stack
used meanwhile (mariadbd, the app instances, nginx, the generators, the rest
of the machine, in cores) and the apps' peak RSS. It also reads MariaDB's
counters (SHOW GLOBAL STATUS, INNODB_TRX samples) and checks the database
after a run.

Figures from /proc: utime + stime per process, the machine's busy time from
/proc/stat, VmHWM after clear_refs 5 (a new peak window).
"""

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import harness as stackmod  # noqa: E402
from harness import StackError  # noqa: E402

LUA = os.path.join(BENCH, "lua", "bench.lua")
DRIVER = os.path.join(ROOT, "build", "bench", "claimdrv")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------
# /proc

def proc_cpu(pid):
    """utime + stime of pid in seconds (0 when it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu():
    """(busy, total) seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def vm_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_hwm(pid):
    """Start a new peak-RSS window (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def nginx_pids(st):
    if not st.nginx_pid:
        return []
    return [st.nginx_pid] + stackmod.children(st.nginx_pid)


def app_pids(st):
    return [i.pid for i in st.instances if i.running()]


def machine_info():
    info = {"nproc": os.cpu_count()}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["mem_gib"] = round(int(line.split()[1]) / 1048576, 1)
    info["kernel"] = os.uname().release
    for cmd, key in ((["mariadbd", "--version"], "mariadb"),
                     (["nginx", "-v"], "nginx"), (["wrk", "-v"], "wrk")):
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            info[key] = r.stdout.strip().splitlines()[0]
        except OSError:
            pass
    return info


def need_wrk():
    if not shutil.which("wrk"):
        raise StackError("wrk not found (apt-get install wrk)")


# ---------------------------------------------------------------------------
# the load generators' command lines and outputs

def wrk_cmd(url, mode, conns, seconds, timeout="10s", threads=None, **args):
    """wrk with bench/lua/bench.lua; args are the script's key=value."""
    threads = threads or (1 if conns < 2 else 2)
    kv = dict(mode=mode, threads=threads)
    kv.update(args)
    return ["wrk", "-t%d" % threads, "-c%d" % conns,
            "-d%ds" % max(1, round(seconds)), "--timeout", timeout, "-s", LUA,
            url, "--"] + ["%s=%s" % item for item in kv.items()]


def made_arg(create, conc, threads=None):
    """bench.lua's made= for a replay over the pairs of a create run (a
    row with wrk's answers per thread): per thread, its answers less the
    requests still in flight at the end."""
    threads = threads or (1 if conc < 2 else 2)
    per_thread = max(1, conc // threads)
    return ",".join(str(max(1, a - per_thread)) for a in create["answers"])


def parse_wrk(job):
    for line in job["text"].splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON "):])
            r["rps"] = round(r["requests"] / (r["duration_us"] / 1e6), 1)
            r["status"] = {int(k): v for k, v in r["status"].items()}
            return r
    raise StackError("wrk gave no result:\n%s" % job["text"][-2000:])


def driver_cmd(st, db, mode, threads, seconds, users, events, event_base,
               start, pairs=None, user_base=None, extra=()):
    """build/bench/claimdrv against the stack's MariaDB as the app's user."""
    cmd = [DRIVER, "--socket", st.db_socket, "--user", "tickets",
           "--password-file", st.path("db-password"),
           "--db", db, "--mode", mode, "--threads", str(threads),
           "--seconds", str(seconds), "--users", str(users)]
    if user_base is not None:
        cmd += ["--user-base", str(user_base)]
    cmd += ["--event-base", str(event_base), "--events", str(events),
            "--start", str(start)]
    if pairs:
        cmd += ["--pairs", str(pairs)]
    return cmd + list(extra)


def parse_driver(job):
    try:
        return json.loads(job["text"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise StackError("claimdrv failed:\n%s" % job["text"][-2000:])


# ---------------------------------------------------------------------------
# one measurement

class Meter(object):
    """Runs jobs against stack st; their output files go to tmp."""

    def __init__(self, st, tmp):
        self.st = st
        self.tmp = tmp
        self.pin_clients = None    # CPU list for wrk/claimdrv (pinned())

    def _launch(self, cmd, name):
        if self.pin_clients:
            cmd = ["taskset", "-c", self.pin_clients] + list(cmd)
        outp = os.path.join(self.tmp, "%s.out" % name)
        f = open(outp, "w+")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        return {"proc": p, "file": f, "path": outp, "cmd": cmd, "name": name}

    def _reap(self, job):
        _, status, ru = os.wait4(job["proc"].pid, 0)
        job["proc"].returncode = os.waitstatus_to_exitcode(status)
        job["cpu"] = ru.ru_utime + ru.ru_stime
        job["file"].seek(0)
        job["text"] = job["file"].read()
        job["file"].close()
        return job

    def measure(self, jobs):
        """Run the launchers of jobs at once; return the reaped jobs with the
        CPU used meanwhile by each part of the stack and the apps' peak RSS.
        A job is (cmd, name) or (cmd, name, after): started `after` seconds
        after the others."""
        st = self.st
        apps = app_pids(st)
        for pid in apps:
            reset_hwm(pid)
        groups = {"mariadbd": [st.db_pid], "app": apps,
                  "nginx": nginx_pids(st)}
        before = {g: sum(proc_cpu(p) for p in pids)
                  for g, pids in groups.items()}
        m0 = machine_cpu()
        t0 = time.monotonic()
        running = [None] * len(jobs)
        for i, job in sorted(enumerate(jobs), key=lambda j: j[1][2:]):
            wait = (job[2] if len(job) > 2 else 0) - (time.monotonic() - t0)
            if wait > 0:
                time.sleep(wait)
            running[i] = self._launch(job[0], job[1])
        done = [self._reap(j) for j in running]
        wall = time.monotonic() - t0
        m1 = machine_cpu()
        groups["nginx"] = nginx_pids(st)
        cpu = {g: round((sum(proc_cpu(p) for p in pids) - before[g]) / wall, 3)
               for g, pids in groups.items()}
        cpu["loadgen"] = round(sum(j["cpu"] for j in done) / wall, 3)
        busy = (m1[0] - m0[0]) / wall
        cpu["machine_busy"] = round(busy, 3)
        cpu["other"] = round(max(0.0, busy - sum(
            cpu[k] for k in ("mariadbd", "app", "nginx", "loadgen"))), 3)
        rss = [vm_hwm_kib(p) for p in apps]
        return done, {"cpu_cores": cpu, "wall_s": round(wall, 2),
                      "app_rss_hwm_kib": rss}

    def measure_locks(self, jobs):
        """measure(), sampling INNODB_TRX meanwhile (meta["innodb_trx"])."""
        finish = lock_sampler(self.st)
        try:
            done, meta = self.measure(jobs)
        finally:
            waits = finish()
        meta = dict(meta)
        meta["innodb_trx"] = waits
        return done, meta

    @contextlib.contextmanager
    def pinned(self):
        """mariadbd alone on CPU 0; the apps, nginx and the load generators
        on CPU 1 (as a database on a host of its own). Yields False (and
        pins nothing) without 2 CPUs and taskset."""
        ncpu = os.cpu_count() or 1
        if ncpu < 2 or not shutil.which("taskset"):
            yield False
            return

        def pin(pids, cpus):
            for pid in pids:
                subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)],
                               stdout=subprocess.DEVNULL, check=False)

        rest = app_pids(self.st) + nginx_pids(self.st)
        pin([self.st.db_pid], "0")
        pin(rest, "1")
        self.pin_clients = "1"
        try:
            yield True
        finally:
            self.pin_clients = None
            pin([self.st.db_pid] + rest, "0-%d" % (ncpu - 1))


# ---------------------------------------------------------------------------
# MariaDB's side

STATUS_COUNTERS = ("Com_select", "Com_begin", "Com_commit", "Com_rollback",
                   "Com_insert", "Com_update", "Handler_write",
                   "Handler_update")


def status_counters(st):
    rows = st.sql("SHOW GLOBAL STATUS WHERE Variable_name IN (%s)"
                  % ",".join("'%s'" % n for n in STATUS_COUNTERS))
    return {k: int(v) for k, v in rows}


def lock_sampler(st):
    """Samples information_schema.INNODB_TRX every 150 ms in a thread
    (InnoDB refreshes that table's cache only when it was last read over
    100 ms before: polled faster, it never changes):
    how many transactions are open, and how many wait for a row lock
    (the event row's, in a flash). The returned finish() gives the means."""
    conn = stackmod.root_connect(st.db_socket)
    samples, stop = [], threading.Event()

    def run():
        with conn.cursor() as c:
            while not stop.is_set():
                c.execute("SELECT COUNT(*), COALESCE(SUM(trx_state = "
                          "'LOCK WAIT'), 0) FROM information_schema.INNODB_TRX")
                samples.append(tuple(int(x) for x in c.fetchone()))
                stop.wait(0.15)

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def finish():
        stop.set()
        t.join(5)
        conn.close()
        n = max(1, len(samples))
        return {"samples": len(samples),
                "open_trx_mean": round(sum(a for a, _ in samples) / n, 2),
                "lock_wait_trx_mean": round(sum(b for _, b in samples) / n, 2)}
    return finish


def db_check(st, dbs):
    """No duplicate pair, free_issued = rows, no named lock left, in every
    database of dbs: (checks, problems)."""
    checks, problems = {}, []
    # requests wrk left in flight are still being answered: let them end
    deadline = time.monotonic() + 5
    while True:
        locks = [n for n in st.held_locks()
                 if n.startswith(stackmod.LOCK_PREFIX)]
        if not locks or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for db in dbs:
        dup = st.sql("SELECT COUNT(*) FROM (SELECT 1 FROM %s.free_tickets "
                     "GROUP BY user_id, event_id HAVING COUNT(*) > 1) d"
                     % db)[0][0]
        bad = st.sql(
            "SELECT COUNT(*) FROM (SELECT e.id FROM %s.events e LEFT JOIN "
            "%s.free_tickets f ON f.event_id = e.id GROUP BY e.id, "
            "e.free_issued HAVING e.free_issued <> COUNT(f.id)) b"
            % (db, db))[0][0]
        rows = st.sql("SELECT COUNT(*) FROM %s.free_tickets" % db)[0][0]
        checks[db] = {"rows": rows, "duplicate_pairs": dup,
                      "events_counter_mismatch": bad}
        if dup or bad:
            problems.append("DB check %s: %s" % (db, checks[db]))
    checks["named_locks_held"] = len(locks)
    if locks:
        problems.append("named locks still held: %s" % locks[:5])
    return checks, problems
