"""bench/report.py: what bench/run reports.

The summarize_* functions turn a scenario's rows of results (and the facts
its measurement returned) into the summary's ratios: medians over
interleaved rounds. report() writes report.md (the tables, the ratios, the
targets of issues 4 and 12, the database check, the perf profile) and
results.json; plot() draws the concurrency sweep with gnuplot.
"""

import json
import os
import shutil
import subprocess

from measure import log, median, stackmod


def rounds_of(results, scenarios, key=lambda r: (r["kind"], r["mode"])):
    """{round: {key(row): row}} of the rows of scenarios with an int round."""
    by = {}
    for r in results:
        if r["scenario"] in scenarios and isinstance(r.get("round"), int):
            by.setdefault(r["round"], {})[key(r)] = r
    return by


def create_rate(results):
    """The median rate of ratio's app create runs (None before ratio)."""
    return median(r["rps"] for r in results
                  if r["scenario"] == "create" and r["kind"] == "app")


def med3(xs):
    return round(median(xs), 3)


def cpu_medians(rows):
    """{part: median} of the rows' cpu_us_per_req."""
    return {p: median(x["cpu_us_per_req"][p] for x in rows)
            for p in rows[0]["cpu_us_per_req"]}


# ---------------------------------------------------------------------------
# the scenarios' summaries

def summarize_ratios(results, facts=None):
    by = rounds_of(results, ("create", "repeat"),
                   key=lambda r: (r["scenario"], r["kind"], r["mode"]))
    v = {k: [] for k in ("a", "b", "b2", "best", "b_vs_a", "rep")}
    for rnd, d in sorted(by.items()):
        app = d[("create", "app", "create")]["rps"]
        ce = {m: d[("create", "ceiling", m)]["rps"] for m in ("a", "b", "b2")}
        for m, rate in ce.items():
            v[m].append(app / rate)
        v["best"].append(app / max(ce.values()))
        v["b_vs_a"].append(ce["b"] / ce["a"])
        v["rep"].append(d[("repeat", "app", "repeat")]["rps"] / app)
    s = {"create_vs_ceiling_a": med3(v["a"]),
         "create_vs_ceiling_b": med3(v["b"]),
         "create_vs_ceiling_b2": med3(v["b2"]),
         "create_vs_best_ceiling": med3(v["best"]),
         "ceiling_b_vs_a": med3(v["b_vs_a"]),
         "repeat_vs_create": med3(v["rep"]),
         "app_create_rps": create_rate(results)}
    # CPU microseconds per request by part, median over the rounds; and
    # the ratios they imply on a machine of our own (clients elsewhere:
    # the app pays mariadbd + app + nginx, a ceiling mariadbd + driver)
    cost = {}
    for r in results:
        if r["scenario"] in ("create", "repeat") and "round" in r:
            cost.setdefault("%s/%s/%s" % (r["scenario"], r["kind"],
                                          r["mode"]), []).append(r)
    med = {}
    for key, rows in cost.items():
        med[key] = cpu_medians(rows)
        parts = (("mariadbd", "app", "nginx") if "/app/" in key
                 else ("mariadbd", "loadgen"))
        med[key]["total"] = sum(med[key][p] for p in parts)
    s["cpu_us_per_req"] = med
    stages = [r["stage_us"] for r in results
              if r.get("stage_us") and r["scenario"] == "create"]
    if stages:
        s["stage_us_ceiling_a"] = {k: round(median(x[k] for x in stages), 1)
                                   for k in stages[0]}
    app = med.get("create/app/create")
    if app:
        for m in ("a", "b", "b2"):
            c = med.get("create/ceiling/%s" % m)
            if c:
                s["cost_create_vs_ceiling_%s" % m] = round(
                    c["total"] / app["total"], 3)
        rep = med.get("repeat/app/repeat")
        if rep:
            s["cost_repeat_vs_create"] = round(app["total"] / rep["total"], 3)
    return s


def summarize_pinned(results, facts=None):
    ratios = {"a": [], "b": [], "b2": [], "best": []}
    for rnd, d in sorted(rounds_of(results, ("pinned",)).items()):
        app = d[("app", "create")]["rps"]
        rates = {m: d[("ceiling", m)]["rps"] for m in ("a", "b", "b2")}
        for m, rate in rates.items():
            ratios[m].append(app / rate)
        ratios["best"].append(app / max(rates.values()))
    if not ratios["best"]:
        return {}
    s = {"pinned_create_vs_%s" % ("best_ceiling" if k == "best"
                                  else "ceiling_" + k): med3(xs)
         for k, xs in ratios.items()}
    s["pinned_create_vs_best_ceiling_rounds"] = [
        round(x, 3) for x in ratios["best"]]
    return s


def summarize_keepalive(results, facts=None):
    rates = {}
    for r in results:
        if r["scenario"] == "keepalive":
            rates.setdefault(r["mode"], {}).setdefault(
                r["keep"], []).append(r["rps"])
    keep = stackmod.UPSTREAM_KEEPALIVE
    return {"keepalive_vs_none": {
        mode: round(median(by[keep]) / median(by[0]), 3)
        for mode, by in rates.items() if by.get(0) and median(by[0])}}


def summarize_hot(results, facts):
    ratios = []
    for rnd, d in sorted(rounds_of(results, ("hot",)).items()):
        ratios.append(d[("app", "others+hot")]["lat_us"]["p99"] /
                      max(1, d[("app", "others")]["lat_us"]["p99"]))
    s = {"hot_lead_s": facts["lead"],
         "hot_others_delay_ms": facts["delay_ms"]}
    out = facts.get("controls")
    if out:
        s["hot_control_p99_ms"] = {k: round(v / 1000, 1)
                                   for k, v in out.items()}
        for k in ("volume", "no_limit", "storm_start", "spell", "fresh"):
            s["hot_control_ratio_" + k] = round(
                out[k] / max(1, out["alone"]), 2)
    s["hot_p99_ratio"] = round(median(ratios), 2)
    s["hot_p99_ratios"] = [round(x, 2) for x in ratios]
    s["hot_others_5xx"] = facts["others_5xx"]
    s["hot_user_bad_answers"] = facts["hot_bad"]
    return s


FLASH_RATIOS = (
    # summary key, name in flash_rounds, numerator, denominator
    ("flash_vs_spread", "vs_spread", "one-event", "spread-create"),
    ("flash_vs_best_ceiling", "vs_best", "one-event", "best"),
    ("flash_vs_ceiling_a", "vs_a", "one-event", "a"),
    ("flash_vs_ceiling_a_seat_first", "vs_a0", "one-event", "a-seat-first"),
    ("flash_vs_ceiling_b", "vs_b", "one-event", "b"),
    ("flash_ceiling_a_vs_seat_first", "a_vs_a0", "a", "a-seat-first"),
    ("flash_vs_ceiling_a_seat_call", "vs_call", "one-event", "a-seat-call"),
    ("flash_ceiling_seat_call_vs_a", "call_vs_a", "a-seat-call", "a"),
    ("sold_out_vs_repeat", "sold_vs_repeat", "sold-out", "repeat"),
)


def summarize_flash(results, facts=None):
    v = {name: [] for _, name, _, _ in FLASH_RATIOS}
    for rnd, d in sorted(rounds_of(results, ("flash",),
                                   key=lambda r: r["mode"]).items()):
        rate = {m: r["rps"] for m, r in d.items()}
        rate["best"] = max(rate[m] for m in
                           ("a", "a-seat-first", "a-seat-call", "b"))
        for _, name, num, den in FLASH_RATIOS:
            v[name].append(rate[num] / rate[den])
    s = {key: med3(v[name]) for key, name, _, _ in FLASH_RATIOS}
    order = ("vs_spread", "vs_best", "vs_a", "vs_a0", "vs_b", "vs_call",
             "a_vs_a0", "call_vs_a", "sold_vs_repeat")
    s["flash_rounds"] = {k: [round(x, 3) for x in v[k]] for k in order}
    flash = [r for r in results if r["scenario"] == "flash"]
    so = [r["server_per_request"] for r in flash if r["mode"] == "sold-out"]
    if so:
        s["sold_out_server_per_request"] = {
            k: median(x[k] for x in so) for k in so[0]}
    waits, cpu = {}, {}
    for r in flash:
        key = "%s/%s" % (r["kind"], r["mode"])
        if r.get("innodb_trx"):
            waits.setdefault(key, []).append(
                r["innodb_trx"]["lock_wait_trx_mean"])
        cpu.setdefault(key, []).append(r)
    s["flash_lock_wait_trx_mean"] = {k: median(x) for k, x in waits.items()}
    s["flash_cpu_us_per_req"] = {k: cpu_medians(rows)
                                 for k, rows in cpu.items()}
    fl = [r for r in flash if r["mode"] == "events-flood"]
    if fl:
        s["events_flood"] = {"rps": fl[0]["rps"], "status": fl[0]["status"],
                             "list_queries": fl[0]["list_queries"]}
    pinned = {}
    for rnd, d in rounds_of_pinned(flash).items():
        pinned[rnd] = d["pinned-one-event"] / max(
            d["pinned-" + m] for m in ("a", "a-seat-call", "b"))
    if pinned:
        ratios = [pinned[k] for k in sorted(pinned)]
        s["flash_pinned_vs_best_ceiling"] = med3(ratios)
        s["flash_pinned_vs_best_ceiling_rounds"] = [round(x, 3)
                                                    for x in ratios]
    return s


def rounds_of_pinned(flash):
    """{round: {mode: rps}} of flash's pinned rounds (round "p0", ...)."""
    by = {}
    for r in flash:
        if isinstance(r.get("round"), str) and r["round"].startswith("p"):
            by.setdefault(int(r["round"][1:]), {})[r["mode"]] = r["rps"]
    return by


def summarize_scale(results, facts):
    small, big = facts["dbs"]
    rates = {db: [r["rps"] for r in results
                  if r["scenario"] == "scale" and r["db"] == db]
             for db in facts["dbs"]}
    ratios = [b / a for a, b in zip(rates[small], rates[big])]
    return {"scale_ratio": med3(ratios),
            "scale_ratios": [round(x, 3) for x in ratios],
            "scale_dbs": facts["dbs"]}


def summarize_perf(results, facts):
    return {"perf": facts} if facts else {}


def rss_summary(results):
    hw = [max(x for x in r["app_rss_hwm_kib"] if x) for r in results
          if r["kind"] == "app" and r["scenario"] != "tuning"
          and any(r["app_rss_hwm_kib"])]
    return {"app_peak_rss_mib": round(max(hw) / 1024, 1) if hw else None}


# ---------------------------------------------------------------------------
# targets of issues 4 and 12

def verdicts(s):
    v = {}
    if "create_vs_best_ceiling" in s:
        v["create >= 0.85 x best ceiling"] = (
            s["create_vs_best_ceiling"], s["create_vs_best_ceiling"] >= 0.85)
        v["repeat >= 3 x create"] = (s["repeat_vs_create"],
                                     s["repeat_vs_create"] >= 3)
    if "hot_p99_ratio" in s:
        v["hot: others' p99 <= 1.2 x"] = (s["hot_p99_ratio"],
                                           s["hot_p99_ratio"] <= 1.2)
        v["hot: others' 5xx = 0"] = (s["hot_others_5xx"],
                                      s["hot_others_5xx"] == 0)
        v["hot: hot user only 200/201/503+Retry-After"] = (
            s["hot_user_bad_answers"] or "ok", not s["hot_user_bad_answers"])
    if "flash_vs_spread" in s:
        v["flash (a) >= 0.9 x spread-out create"] = (
            s["flash_vs_spread"], s["flash_vs_spread"] >= 0.9)
        v["flash (a) >= 0.6 x best one-event ceiling"] = (
            s["flash_vs_best_ceiling"], s["flash_vs_best_ceiling"] >= 0.6)
        v["flash (b) sold-out >= 0.9 x repeat"] = (
            s["sold_out_vs_repeat"], s["sold_out_vs_repeat"] >= 0.9)
        so = s.get("sold_out_server_per_request", {})
        v["flash (b) sold-out: no transaction, no write"] = (
            so, so.get("Com_begin", 1) == 0 and so.get("Handler_write", 1)
            < 0.01)
    for k in ("spell", "fresh"):
        if "hot_control_ratio_" + k in s:
            x = s["hot_control_ratio_" + k]
            v["hot (%s): others' p99 <= 1.2 x" % k] = (x, x <= 1.2)
    if "hot_control_ratio_no_limit" in s:
        x = s["hot_control_ratio_no_limit"]
        v["hot (no nginx limit): others' p99 <= 1.5 x"] = (x, x <= 1.5)
    if "scale_ratio" in s:
        v["1M rate >= 0.85 x 10k rate"] = (s["scale_ratio"],
                                           s["scale_ratio"] >= 0.85)
    if s.get("app_peak_rss_mib") is not None:
        v["peak RSS <= 32 MiB"] = (s["app_peak_rss_mib"],
                                   s["app_peak_rss_mib"] <= 32)
    s["targets"] = {k: {"value": a, "met": b} for k, (a, b) in v.items()}
    return v


# ---------------------------------------------------------------------------
# report.md and results.json

# (title, the rows' scenario, extra columns (heading, row key)), in order
TABLES = (
    ("create and ceilings (rounds)", "create", [("round", "round")]),
    ("repeat", "repeat", [("round", "round")]),
    ("create and ceilings, mariadbd alone on CPU 0 (rounds)", "pinned",
     [("round", "round")]),
    ("read", "read", [("round", "round")]),
    ("keep-alive (nginx keepalive per worker; 0: none)", "keepalive",
     [("round", "round"), ("keepalive", "keep")]),
    ("hot user", "hot", [("round", "round")]),
    ("hot user: controls", "hot-control", []),
    ("flash: one event beside spread-out create (rounds)", "flash",
     [("round", "round")]),
    ("round-trip floor", "floor", []),
    ("scale of data", "scale", [("round", "round"),
                                ("old tickets", "old_tickets")]),
    ("concurrency sweep", "sweep", []),
    ("tuning", "tuning", [("knob", "knob"), ("value", "value")]),
    ("perf run", "perf", []),
)

# the summary's keys listed under "ratios", in order
RATIO_KEYS = (
    "create_vs_ceiling_a", "create_vs_ceiling_b", "create_vs_ceiling_b2",
    "create_vs_best_ceiling", "ceiling_b_vs_a", "repeat_vs_create",
    "cost_create_vs_ceiling_a", "cost_create_vs_ceiling_b",
    "cost_create_vs_ceiling_b2", "cost_repeat_vs_create",
    "pinned_create_vs_ceiling_a", "pinned_create_vs_ceiling_b",
    "pinned_create_vs_ceiling_b2", "pinned_create_vs_best_ceiling",
    "pinned_create_vs_best_ceiling_rounds", "keepalive_vs_none",
    "cpu_us_per_req", "stage_us_ceiling_a", "hot_p99_ratio",
    "hot_p99_ratios", "hot_others_delay_ms", "hot_control_p99_ms",
    "hot_control_ratio_volume", "hot_control_ratio_no_limit",
    "hot_control_ratio_storm_start", "hot_control_ratio_spell",
    "hot_control_ratio_fresh", "hot_lead_s", "flash_vs_spread",
    "flash_vs_best_ceiling", "flash_vs_ceiling_a",
    "flash_vs_ceiling_a_seat_first", "flash_vs_ceiling_b",
    "flash_ceiling_a_vs_seat_first", "flash_vs_ceiling_a_seat_call",
    "flash_ceiling_seat_call_vs_a", "flash_pinned_vs_best_ceiling",
    "flash_pinned_vs_best_ceiling_rounds", "sold_out_vs_repeat",
    "flash_rounds", "sold_out_server_per_request",
    "flash_lock_wait_trx_mean", "flash_cpu_us_per_req", "events_flood",
    "scale_ratio", "scale_ratios", "app_peak_rss_mib")

HEAD = ["req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "statuses", "db",
        "app", "nginx", "loadgen", "other", "app RSS MiB"]


def table_row(r, extra):
    cpu = r["cpu_cores"]
    rss = [x for x in r["app_rss_hwm_kib"] if x]
    st = ", ".join("%s %s" % kv for kv in sorted(
        (r["status"] or {}).items(), key=lambda kv: str(kv[0])) if kv[1])
    if r.get("socket_errors") and any(r["socket_errors"].values()):
        st += "; socket errors %s" % {k: v for k, v in
                                      r["socket_errors"].items() if v}
    lat = r["lat_us"]
    return [r["kind"], r["mode"], str(r["conc"])] + [
        str(r.get(e[1], "")) for e in extra] + [
        "%.0f" % r["rps"], "%.1f" % (lat["p50"] / 1000),
        "%.1f" % (lat["p90"] / 1000), "%.1f" % (lat["p99"] / 1000),
        "%.1f" % (lat["max"] / 1000), st,
        "%.2f" % cpu["mariadbd"], "%.2f" % cpu["app"],
        "%.2f" % cpu["nginx"], "%.2f" % cpu["loadgen"],
        "%.2f" % cpu["other"],
        "%.1f" % (max(rss) / 1024) if rss else "-"]


def table(title, rows, extra):
    if not rows:
        return []
    head = ["kind", "mode", "c"] + [e[0] for e in extra] + HEAD
    lines = ["## " + title, "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(table_row(r, extra)) + " |" for r in rows]
    return lines + [""]


def report(out, smoke, machine, results, summary, problems):
    """report.md and results.json in out; returns report.md's text."""
    lines = ["# tickets-fcgi benchmark (%s)" % ("smoke" if smoke else "full"),
             "", "machine: %s" % json.dumps(machine), ""]
    for title, scenario, extra in TABLES:
        lines += table(title, [r for r in results
                               if r["scenario"] == scenario], extra)
    lines += ["## ratios (median of interleaved rounds)", ""]
    lines += ["- %s: %s" % (k, summary[k]) for k in RATIO_KEYS
              if k in summary]
    lines += ["", "## targets of issues 4 and 12", ""]
    for k, (val, ok) in verdicts(summary).items():
        lines.append("- %s: %s (%s)" % (k, val, "met" if ok else "NOT met"))
    lines += ["", "## database check", ""]
    lines.append("```\n%s\n```" % json.dumps(summary.get("db_check"),
                                             indent=1))
    if summary.get("perf"):
        lines.append("\n## perf\n")
        for k, v in summary["perf"].items():
            lines.append("### %s\n\n```\n%s\n```\n" % (k, v))
    if problems:
        lines.append("## PROBLEMS\n")
        lines += ["- " + p for p in problems]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": machine, "summary": summary,
                   "results": results, "problems": problems},
                  f, indent=1, default=str)
    return text


# ---------------------------------------------------------------------------
# the plot of the sweep

SERIES = ((("app", "create"), "app through nginx (create)"),
          (("ceiling", "a"), "ceiling (a): the SQL of the app, 7 round trips"),
          (("ceiling", "b"), "ceiling (b): one CALL"))

GNUPLOT = """
set terminal pngcairo size 1000,420 font ",10"
set output '%(png)s'
set multiplot layout 1,2 title "tickets-fcgi on %(nproc)d shared cores: new tickets (create) against concurrency, best of 2 passes"
set logscale x 2
set xlabel "concurrent requests (wrk connections / driver threads)"
set key top left
set grid
set ylabel "claims per second"
set yrange [0:*]
plot '%(dat)s' index 0 using 1:2 with linespoints title "%(n0)s", \\
     '' index 1 using 1:2 with linespoints title "%(n1)s", \\
     '' index 2 using 1:2 with linespoints title "%(n2)s"
set ylabel "p99 latency (ms)"
set logscale y
set yrange [*:*]
plot '%(dat)s' index 0 using 1:3 with linespoints title "%(n0)s", \\
     '' index 1 using 1:3 with linespoints title "%(n1)s", \\
     '' index 2 using 1:3 with linespoints title "%(n2)s"
unset multiplot
"""


def plot(out, results):
    rows = [r for r in results if r["scenario"] == "sweep"]
    if not rows or not shutil.which("gnuplot"):
        return None
    series = {}
    for r in rows:
        series.setdefault((r["kind"], r["mode"]), []).append(r)
    dat = os.path.join(out, "sweep.dat")
    with open(dat, "w") as f:
        for key, name in SERIES:
            f.write("# %s\n" % name)
            best = {}
            for r in series.get(key, []):
                b = best.setdefault(r["conc"], [0, float("inf")])
                b[0] = max(b[0], r["rps"])
                b[1] = min(b[1], r["lat_us"]["p99"] / 1000)
            for conc in sorted(best):
                f.write("%d %.1f %.2f\n" % (conc, best[conc][0],
                                            best[conc][1]))
            f.write("\n\n")
    png = os.path.join(out, "perf-concurrency.png")
    gp = GNUPLOT % {"png": png, "dat": dat, "nproc": os.cpu_count(),
                    "n0": SERIES[0][1], "n1": SERIES[1][1],
                    "n2": SERIES[2][1]}
    r = subprocess.run(["gnuplot"], input=gp, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0 or r.stdout.strip():
        log("gnuplot: %s" % r.stdout)
    return png if r.returncode == 0 else None
