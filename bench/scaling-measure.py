#!/usr/bin/python3
"""Size one app host and one database host (docs/SCALING.md, "Numbers").

Starts a stack with tests/harness (private MariaDB, two app instances at
their defaults, 16 threads each, under spawn-fcgi, nginx), seeds users and an
event, and drives nginx with wrk, one scenario after the other:

    events    GET /api/events                     one indexed read
    create    POST claim, a new user each time    201: facts, GET_LOCK,
                                                  transaction, RELEASE_LOCK
    repeat    POST claim of those same pairs      200: one lock-free read
    refuse    POST claim by non-premium users     403: one lock-free read

For each: requests/s, latency p50/p99, statuses, and the CPU time that
mariadbd, the app instances, nginx and wrk spent per request (from
/proc/<pid>/stat), which is what sizes a host: a core serves about
1000 / (CPU ms per request) requests per second of that kind, whatever else
the machine is doing. Throughput itself depends on the load of the machine
(it is printed with the load average); CPU per request much less so.

    /usr/bin/python3 bench/scaling-measure.py [--seconds 6] [--connections 32]
        [--json out.json]

Standard library, tests/harness (python3-pymysql) and wrk.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from harness import Stack, children  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

LUA = r"""
-- one token per line in tokens=FILE; each thread walks its own stride of
-- them (thread t: lines t+1, t+1+T, ...), so no two requests of a run share
-- a user unless the run wraps around
local threads, nthreads = {}, 0
function setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
   table.insert(threads, thread)
end
function init(args)
   local cfg = {}
   for _, a in ipairs(args) do
      local k, v = a:match("^([%w_]+)=(.*)$")
      if k then cfg[k] = v end
   end
   mode, path, nt = cfg.mode, cfg.path, tonumber(cfg.threads)
   toks = {}
   if cfg.tokens then
      for line in io.lines(cfg.tokens) do toks[#toks + 1] = line end
   end
   i, counts = tid % math.max(1, #toks) + 1, {}
end
function request()
   if mode == "get" then
      return wrk.format("GET", path)
   end
   local t = toks[i]
   i = i + nt
   if i > #toks then i = tid % #toks + 1 end
   return wrk.format("POST", path, {Authorization = "Bearer " .. t})
end
function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
   local all = {}
   for _, th in ipairs(threads) do
      local c = th:get("counts")
      for k, v in pairs(c) do all[tostring(k)] = (all[tostring(k)] or 0) + v end
   end
   local parts = {}
   for k, v in pairs(all) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
   io.write(string.format(
      'SCALING_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"errors":%d,"status":{%s}}\n',
      summary.requests, summary.duration, latency:percentile(50),
      latency:percentile(90), latency:percentile(99),
      summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.timeout, table.concat(parts, ",")))
end
"""


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2:].split()
    # utime, stime, cutime, cstime (fields 14-17 of stat, 12-15 here)
    return sum(int(x) for x in fields[11:15])


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def group_ticks(pids):
    return sum(cpu_ticks(p) for p in pids)


def run_wrk(url, lua, mode, path, tokens, seconds, connections, threads):
    cmd = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
           "--timeout", "10s", "-s", lua, url, "--",
           "mode=" + mode, "path=" + path, "threads=%d" % threads]
    if tokens:
        cmd.append("tokens=" + tokens)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--users", type=int, default=40000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")

    tmp = tempfile.mkdtemp(prefix="tickets-scaling-")
    lua = os.path.join(tmp, "scaling.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    stack = Stack(instances=2, app_env={}, quiet=True)
    stack.start()
    results = {}
    try:
        conn = stack.db()
        cur = conn.cursor()
        cur.execute("INSERT INTO users (id, premium_until) SELECT seq, "
                    "UTC_TIMESTAMP() + INTERVAL 30 DAY FROM seq_1_to_%d"
                    % args.users)
        # non-premium users for the refusals (many, so that the app's
        # per-user coalescing does not answer most of them from one read)
        cur.execute("INSERT INTO users (id, premium_until) SELECT seq, NULL "
                    "FROM seq_1000001_to_1005000")
        conn.close()
        stack.make_event(1, quota=None)
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            for u in range(1, args.users + 1):
                f.write(stack.token(u, exp_delta=3600) + "\n")
        refuse = os.path.join(tmp, "refuse")
        with open(refuse, "w") as f:
            for u in range(1000001, 1005001):
                f.write(stack.token(u, exp_delta=3600) + "\n")

        groups = {
            "mariadbd": [stack.db_pid],
            "apps": [i.pid for i in stack.instances],
            "nginx": [stack.nginx_pid] + children(stack.nginx_pid),
        }
        scenarios = [
            ("events", "get", "/api/events", None),
            ("create", "post", "/api/events/1/participation", tokens),
            ("repeat", "post", "/api/events/1/participation", None),
            ("refuse", "post", "/api/events/1/participation", refuse),
        ]
        peak_rss = {"mariadbd": 0, "apps": 0}
        with open("/proc/loadavg") as f:
            load_before = f.read().split()[:3]
        for name, mode, path, toks in scenarios:
            if name == "repeat":
                # exactly the users the create run gave a ticket
                toks = os.path.join(tmp, "repeat")
                with open(toks, "w") as f:
                    for (u,) in stack.sql("SELECT user_id FROM free_tickets "
                                          "WHERE event_id = 1"):
                        f.write(stack.token(int(u), exp_delta=3600) + "\n")
            before = {g: group_ticks(p) for g, p in groups.items()}
            t0 = time.monotonic()
            p = run_wrk(stack.url, lua, mode, path, toks, args.seconds,
                        args.connections, args.threads)
            wrk_pid = p.pid
            wrk_ticks = 0
            while p.poll() is None:
                wrk_ticks = max(wrk_ticks, cpu_ticks(wrk_pid))
                for g in ("mariadbd", "apps"):
                    peak_rss[g] = max(peak_rss[g], max(rss_kib(x) for x in groups[g]))
                time.sleep(0.2)
            out = p.stdout.read()
            wall = time.monotonic() - t0
            after = {g: group_ticks(p_) for g, p_ in groups.items()}
            m = re.search(r"SCALING_JSON (\{.*\})", out)
            if not m:
                raise SystemExit("wrk failed:\n" + out)
            r = json.loads(m.group(1))
            n = max(1, r["requests"])
            cpu_ms = {g: (after[g] - before[g]) * 1000.0 / CLK_TCK
                      for g in groups}
            cpu_ms["wrk"] = wrk_ticks * 1000.0 / CLK_TCK
            r.update({
                "rps": round(n / (r["duration_us"] / 1e6), 1),
                "wall_s": round(wall, 2),
                "cpu_ms_per_request": {g: round(v / n, 3)
                                       for g, v in cpu_ms.items()},
                "cpu_share": {g: round(v / max(1e-9, sum(cpu_ms.values())), 3)
                              for g, v in cpu_ms.items()},
            })
            results[name] = r
            print("%-7s %8.1f req/s  p50 %6.2f ms  p99 %7.2f ms  status %s  "
                  "CPU ms/req: db %.3f apps %.3f nginx %.3f wrk %.3f" % (
                      name, r["rps"], r["p50_us"] / 1000.0, r["p99_us"] / 1000.0,
                      r["status"], r["cpu_ms_per_request"]["mariadbd"],
                      r["cpu_ms_per_request"]["apps"],
                      r["cpu_ms_per_request"]["nginx"],
                      r["cpu_ms_per_request"]["wrk"]), flush=True)
        with open("/proc/loadavg") as f:
            load_after = f.read().split()[:3]
        rows = stack.sql("SELECT COUNT(*), (SELECT free_issued FROM events "
                         "WHERE id = 1) FROM free_tickets")[0]
        problems = stack.invariant_problems()
        meta = {"cpus": os.cpu_count(), "load_before": load_before,
                "load_after": load_after, "seconds": args.seconds,
                "connections": args.connections, "wrk_threads": args.threads,
                "app_instances": 2, "app_threads": 16,
                "tickets": int(rows[0]), "free_issued": int(rows[1]),
                "peak_rss_kib": peak_rss,
                "invariant_problems": problems}
        results["_meta"] = meta
        print("machine: %d CPUs, load average %s before, %s after; %d tickets, "
              "free_issued %d, problems: %s; peak RSS: mariadbd %d MiB, one "
              "app instance %d MiB" % (
                  meta["cpus"], " ".join(load_before), " ".join(load_after),
                  meta["tickets"], meta["free_issued"], problems or "none",
                  peak_rss["mariadbd"] // 1024, peak_rss["apps"] // 1024))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)
                f.write("\n")
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
