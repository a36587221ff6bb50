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

The requests are bench/lua/bench.lua's and the measurement is
bench/measure.py's, as in bench/run.

Standard library, tests/harness (python3-pymysql) and wrk.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure  # noqa: E402
from measure import stackmod  # noqa: E402

REFUSE_BASE, REFUSE_USERS = 1000001, 5000


def wrk_scenarios(args, tokens, refuse):
    """(name, bench.lua mode, its arguments) in order; repeat replays the
    pairs that create made."""
    create = dict(tokens=tokens, users=args.users, events=1, event_base=1,
                  start=0)
    return [
        ("events", "events", {}),
        ("create", "create", create),
        ("repeat", "repeat", create),
        # non-premium users (many, so that the app's per-user coalescing
        # does not answer most of them from one read)
        ("refuse", "create", dict(tokens=refuse, users=REFUSE_USERS,
                                  user_base=REFUSE_BASE, events=1,
                                  event_base=1, start=0)),
    ]


def result(r, meta):
    """One scenario's figures: CPU milliseconds per request by part."""
    n = max(1, r["requests"])
    parts = (("mariadbd", "mariadbd"), ("apps", "app"), ("nginx", "nginx"),
             ("wrk", "loadgen"))
    cpu_ms = {g: meta["cpu_cores"][k] * meta["wall_s"] * 1000.0
              for g, k in parts}
    lat = r["lat_us"]
    return {
        "requests": r["requests"], "duration_us": r["duration_us"],
        "p50_us": lat["p50"], "p90_us": lat["p90"], "p99_us": lat["p99"],
        "errors": sum(v for k, v in r["errors"].items() if k != "status"),
        "status": {str(k): v for k, v in r["status"].items()},
        "rps": r["rps"], "wall_s": meta["wall_s"],
        "cpu_ms_per_request": {g: round(v / n, 3) for g, v in cpu_ms.items()},
        "cpu_share": {g: round(v / max(1e-9, sum(cpu_ms.values())), 3)
                      for g, v in cpu_ms.items()},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--users", type=int, default=40000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    try:
        measure.need_wrk()
    except stackmod.StackError as e:
        sys.exit(str(e))

    tmp = tempfile.mkdtemp(prefix="tickets-scaling-")
    stack = stackmod.Stack(instances=2, app_env={}, quiet=True)
    stack.start()
    results = {}
    try:
        stack.sql("INSERT INTO users (id, premium_until) SELECT seq, "
                  "UTC_TIMESTAMP() + INTERVAL 30 DAY FROM seq_1_to_%d"
                  % args.users)
        stack.sql("INSERT INTO users (id, premium_until) SELECT seq, NULL "
                  "FROM seq_%d_to_%d" % (REFUSE_BASE,
                                         REFUSE_BASE + REFUSE_USERS - 1))
        stack.make_event(1, quota=None)
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            for u in range(1, args.users + 1):
                f.write(stack.token(u, exp_delta=3600) + "\n")
        refuse = os.path.join(tmp, "refuse")
        with open(refuse, "w") as f:
            for u in range(REFUSE_BASE, REFUSE_BASE + REFUSE_USERS):
                f.write(stack.token(u, exp_delta=3600) + "\n")

        meter = measure.Meter(stack, tmp)
        peak_rss = {"mariadbd": 0, "apps": 0}
        with open("/proc/loadavg") as f:
            load_before = f.read().split()[:3]
        made = None
        for name, mode, kw in wrk_scenarios(args, tokens, refuse):
            if name == "repeat":
                kw = dict(kw, made=measure.made_arg(
                    made, args.connections, args.threads))
            measure.reset_hwm(stack.db_pid)
            (job,), meta = meter.measure([(measure.wrk_cmd(
                stack.url, mode, args.connections, args.seconds,
                threads=args.threads, **kw), "wrk-" + name)])
            r = measure.parse_wrk(job)
            if name == "create":
                made = r
            peak_rss["mariadbd"] = max(peak_rss["mariadbd"],
                                       measure.vm_hwm_kib(stack.db_pid) or 0)
            peak_rss["apps"] = max([peak_rss["apps"]] + [
                x or 0 for x in meta["app_rss_hwm_kib"]])
            r = results[name] = result(r, meta)
            print("%-7s %8.1f req/s  p50 %6.2f ms  p99 %7.2f ms  status %s  "
                  "CPU ms/req: db %.3f apps %.3f nginx %.3f wrk %.3f" % (
                      name, r["rps"], r["p50_us"] / 1000.0,
                      r["p99_us"] / 1000.0, r["status"],
                      r["cpu_ms_per_request"]["mariadbd"],
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
