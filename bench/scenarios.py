"""bench/scenarios.py: the scenarios of bench/run, one entry each in
SCENARIOS (the end of this file): its name (for --only), what it sets up,
what it measures (rows of results, through bench/workload.py's Bench), and
the function of bench/report.py that turns its rows into the summary's
ratios. A scenario's measurement returns the facts its summary needs besides
the rows; no scenario reads another's summary (hot and read take the create
rate and the last create run from the rows of ratio, which they need).

Every ratio is taken between runs of the same round, interleaved, and the
median over the rounds is reported: other work on the machine changes
absolute figures from run to run.
"""

import collections
import os
import shutil
import subprocess
import time

import measure
import report
from measure import log, stackmod
from workload import HOT_EVENT_BASE

Scenario = collections.namedtuple(
    "Scenario", "name setup measure summarize full_only needs")


def last_create(b):
    """The app create run of ratio's last round (its pairs are replayed)."""
    rows = [r for r in b.results if r["scenario"] == "create"
            and r["kind"] == "app"]
    if not rows:
        raise measure.StackError("no create run to replay: run ratio first")
    return rows[-1]


# ---------------------------------------------------------------------------
# ratio: create against the ceilings, repeat against create

def ratio(b):
    """create vs ceilings (a), (b), (b2); repeat vs create; interleaved."""
    c = b.conc
    for rnd in range(b.rounds()):
        app = b.app_create("create", c, round=rnd)
        ca = b.ceiling("create", "a", c, round=rnd)
        cb = b.ceiling("create", "b", c, round=rnd)
        b.ceiling("create", "b2", c, round=rnd)
        b.app_replay("repeat", "repeat", c, app, round=rnd)
        b.ceiling("repeat", "glance", c, repeat_of=ca, round=rnd)
        b.ceiling("repeat", "b", c, repeat_of=cb, round=rnd)
        if rnd == 0:
            # the floor: a round trip that runs no SQL
            b.ceiling("floor", "ping", c, min(2, b.driver_seconds))


def pinned(b):
    """create against the ceilings with mariadbd alone on CPU 0 and all
    the rest (apps, nginx, wrk, claimdrv) on CPU 1: the database with a
    core of its own, as on a host of its own in production, so that
    what the app and nginx cost no longer comes out of the database's
    CPU. Interleaved rounds, as ratio."""
    with b.meter.pinned() as on:
        if not on:
            log("pinned: skipped (needs 2 CPUs and taskset)")
            return
        for rnd in range(b.rounds()):
            b.app_create("pinned", b.conc, round=rnd)
            for mode in ("a", "b", "b2"):
                b.ceiling("pinned", mode, b.conc, round=rnd)


def read(b):
    c = b.conc
    n_events = b.st.sql("SELECT COUNT(*) FROM events WHERE starts_at > "
                        "UTC_TIMESTAMP()")[0][0]
    made = last_create(b)
    for rnd in range(b.rounds(full=2)):
        b.app_events("read", c, round=rnd, events_listed=min(1000, n_events))
        b.app_replay("read", "get", c, made, round=rnd)


def keepalive(b):
    """nginx `keepalive` with fastcgi_keep_conn on (shipped) against no
    keep-alive: create, repeat, read and a hot user, interleaved rounds
    whose order alternates. The ratios chose the shipped default."""
    c = b.conc
    for rnd in range(b.rounds()):
        order = (stackmod.UPSTREAM_KEEPALIVE, 0)
        for keep in (order if rnd % 2 == 0 else order[::-1]):
            b.tune_nginx(keepalive=keep)
            made = b.app_create("keepalive", c, keep=keep, round=rnd)
            b.app_replay("keepalive", "repeat", c, made, keep=keep, round=rnd)
            b.app_events("keepalive", c, keep=keep, round=rnd)
    b.tune_nginx()


# ---------------------------------------------------------------------------
# hot: one user's storm beside the others

def hot(b):
    """Other users claim (paced, so that their offered rate is the same
    with and without the hot user); one user fires claims from 200
    connections in a loop, a burst of ~200 concurrent claims per event.
    The storm starts `lead` seconds before the others and ends `lead`
    after them, so they are measured while it goes on (its start, when
    wrk opens 200 connections at once and nginx lets the first 200
    through, is the storm_start control).  The order of the pair
    alternates between rounds, so that a drift of the machine does not
    always fall on the same side.  Two rounds more than the others: the
    others' p99 is ~10 ms here, so one hiccup of the machine moves its
    ratio far more than a rate."""
    c = b.conc
    hot_conns = 200 if not b.smoke else 40
    secs = b.seconds + 1 if not b.smoke else b.seconds
    lead = 1 if not b.smoke else 0
    create_rps = report.create_rate(b.results) or 500
    # others offer about 40 % of what the app creates closed-loop
    delay_ms = max(1, int(c / (0.4 * create_rps) * 1000))
    facts = {"lead": lead, "delay_ms": delay_ms, "others_5xx": 0,
             "hot_bad": {}}
    for rnd in range(b.rounds(extra=2)):
        base = HOT_EVENT_BASE + rnd * 1000
        n_hot = 500 if not b.smoke else 20
        b.hot_events(base, n_hot)
        for with_hot in ((False, True) if rnd % 2 == 0 else (True, False)):
            jobs = [(b.wrk_cmd("create", c, secs, start=b.next_k[b.db],
                               delay_ms=delay_ms), "wrk-others",
                     lead if with_hot else 0)]
            if with_hot:
                jobs.append((b.wrk_cmd(
                    "hot", hot_conns, secs + 2 * lead,
                    hot_token=b.hot_token, event_base=base, events=n_hot,
                    burst=hot_conns // 2), "wrk-hot"))
            done, meta = b.meter.measure(jobs)
            others = measure.parse_wrk(done[0])
            b.next_k[b.db] = max(others["maxk"]) + 1
            rec = b.record("hot", "app", "others+hot" if with_hot
                           else "others", c, others, meta, round=rnd)
            facts["others_5xx"] += sum(n for s, n in others["status"].items()
                                       if s >= 500)
            if with_hot:
                hot_user_row(b, rec, done[1], meta, hot_conns, rnd,
                             facts["hot_bad"])
    if not b.smoke:
        facts["controls"] = hot_controls(b, c, hot_conns, secs, delay_ms,
                                         lead)
    if facts["others_5xx"]:
        b.problems.append("hot: other users got %d 5xx" % facts["others_5xx"])
    if facts["hot_bad"]:
        b.problems.append("hot: the hot user got %s" % facts["hot_bad"])
    return facts


def hot_user_row(b, others_rec, job, meta, hot_conns, rnd, hot_bad):
    """The hot user's own row; its answers other than 200/201/503 with
    Retry-After are counted in hot_bad."""
    h = measure.parse_wrk(job)
    hrec = b.record("hot", "app", "hot-user", hot_conns, h, meta, round=rnd)
    others_rec["hot"] = {"rps": h["rps"], "status": h["status"],
                         "lat_us": h["lat_us"],
                         "no_retry_after": h["no_retry_after"]}
    hrec["no_retry_after"] = h["no_retry_after"]
    for s, n in h["status"].items():
        if s not in (200, 201, 503):
            hot_bad[s] = hot_bad.get(s, 0) + n
    if h["no_retry_after"]:
        hot_bad["503 without Retry-After"] = h["no_retry_after"]


# a control of the hot user: (seconds ahead of the others, event block or
# None, extra arguments of the hot load)
HOT_CONTROLS = (
    ("alone", 0, None, None),
    # the hot user starts with the others: its start (200 connections opened
    # at once, the first 200 claims let through by nginx) falls in their
    # measurement
    ("storm_start", 0, 20000, {}),
    # the same 200 connections, repeats of 200 different users: the same
    # load without a hot user
    ("volume", 1, None, None),
    # the scheme spelled 5 ways in turn
    ("spell", 1, 30000, {"spell": "rotate"}),
    # a new token per request (issue 12): nginx's key no longer pins the
    # user, the app's pacing by user id must
    ("fresh", 1, 40000, {"hot_tokens": None}),
    # without the shipped per-token limit_req of nginx: what the app alone
    # does against a storm
    ("no_limit", 1, 0, {}),
)


def hot_controls(b, c, hot_conns, secs, delay_ms, lead):
    """The controls of the hot-user scenario (HOT_CONTROLS), one round each,
    beside a fresh run of the others alone: the others' p99 in each."""
    base = HOT_EVENT_BASE + 50000
    n_hot = 500
    b.hot_events(base, n_hot)
    out = {}
    for variant, ahead, block, how in HOT_CONTROLS:
        ahead = lead if ahead else 0
        if variant == "no_limit":
            b.tune_nginx(token_limit=False)
        jobs = [(b.wrk_cmd("create", c, secs, start=b.next_k[b.db],
                           delay_ms=delay_ms), "wrk-others", ahead)]
        if variant == "volume":
            made = last_create(b)
            jobs.append((b.wrk_cmd("repeat", hot_conns, secs + 2 * ahead,
                                   start=made["start"],
                                   made=measure.made_arg(made, hot_conns)),
                         "wrk-volume"))
        elif block is not None:
            # a fresh block of events: the storm begins anew
            if block:
                b.hot_events(base + block, n_hot)
            how = {k: v or b.hot_tokens_file for k, v in how.items()}
            jobs.append((b.wrk_cmd(
                "hot", hot_conns, secs + 2 * ahead, hot_token=b.hot_token,
                event_base=base + block, events=n_hot, burst=hot_conns // 2,
                **how), "wrk-hot"))
        done, meta = b.meter.measure(jobs)
        others = measure.parse_wrk(done[0])
        b.next_k[b.db] = max(others["maxk"]) + 1
        rec = b.record("hot-control", "app", "others/" + variant, c,
                       others, meta)
        if len(done) > 1:
            b.record("hot-control", "app", variant + "-load", hot_conns,
                     measure.parse_wrk(done[1]), meta)
        out[variant] = rec["lat_us"]["p99"]
        if variant == "no_limit":
            b.tune_nginx()
    return out


# ---------------------------------------------------------------------------
# flash (issue 12): one event, everybody at once

FLASH_CEILINGS = (("a", ()), ("a-seat-first", ("--seat-first",)),
                  ("a-seat-call", ("--seat-call",)), ("b", ()))


def flash(b):
    """(a) one event, every request a new user, beside the spread-out
    create of the same round; (c) the ceilings on the same one-event
    load: the app's statements (claimdrv a), the order of before issue
    12 (a-seat-first) and the stored procedure (b); (b) quota 1,000 and
    50,000 users: 1,000 x 201 then sold_out, and the sold-out storm
    beside the repeat rate, with the server's counters per request.
    Interleaved rounds."""
    c = b.conc
    quota = 1000 if not b.smoke else 100
    storm_users = 50000 if not b.smoke else 2000
    for rnd in range(b.rounds()):
        spread = b.app_create("flash", c, round=rnd)
        spread["mode"] = "spread-create"
        one = b.flash_app("one-event", c, b.flash_event(), round=rnd)
        bad = {s: n for s, n in one["status"].items() if s != 201}
        if bad:
            b.problems.append("flash one-event: statuses other than "
                              "201: %s" % bad)
        for name, extra in FLASH_CEILINGS:
            b.flash_ceiling(name, c, b.flash_event(), extra, round=rnd)
        # (b) the quota storm, then the sold-out storm, then repeats
        ev = b.flash_event(quota)
        flash_quota(b, c, ev, quota, storm_users, rnd)
        flash_sold_out(b, c, ev, storm_users, rnd)
        b.app_replay("flash", "repeat", c, spread, round=rnd)
    flash_flood(b)
    flash_pinned(b)


def flash_quota(b, c, ev, quota, storm_users, rnd):
    storm = b.flash_app("quota-storm", c, ev, users=storm_users, round=rnd)
    st = storm["status"]
    # (a closed loop may come round to the first users again: 200)
    if st.get(201) != quota or set(st) - {200, 201, 409}:
        b.problems.append("flash quota %d: statuses %s" % (quota, st))
    if b.st.sql("SELECT free_issued FROM events WHERE id = %s",
                [ev])[0][0] != quota:
        b.problems.append("flash quota: free_issued != quota")


def flash_sold_out(b, c, ev, storm_users, rnd):
    """Users the storm never reached (from storm_users on): all 409, and
    what MariaDB did per request meanwhile."""
    before = measure.status_counters(b.st)
    (job,), meta = b.meter.measure([(b.flash_wrk_cmd(c, ev, storm_users),
                                     "wrk")])
    after = measure.status_counters(b.st)
    r = measure.parse_wrk(job)
    so = b.record("flash", "app", "sold-out", c, r, meta, round=rnd)
    n = max(1, r["requests"])
    so["server_per_request"] = {k: round((after[k] - before[k]) / n, 3)
                                for k in after}
    if set(r["status"]) != {409}:
        b.problems.append("flash sold-out: statuses %s" % r["status"])


def flash_pinned(b):
    """One-event create against its ceilings with mariadbd alone on CPU
    0 and everything else on CPU 1 (as pinned() does for create):
    interleaved rounds."""
    with b.meter.pinned() as on:
        if not on:
            log("flash pinned: skipped (needs 2 CPUs and taskset)")
            return
        for rnd in range(b.rounds()):
            b.flash_app("pinned-one-event", b.conc, b.flash_event(),
                        round="p%d" % rnd)
            for name, extra in FLASH_CEILINGS:
                if name == "a-seat-first":
                    continue
                rec = b.flash_ceiling(name, b.conc, b.flash_event(), extra,
                                      round="p%d" % rnd)
                rec["mode"] = "pinned-" + name


def flash_flood(b):
    """GET /api/events from 64 connections of one address with the
    shipped per-address limit on: what nginx lets through, what the app
    asks the database (its one-second copy)."""
    b.tune_nginx(addr_limit=True)
    try:
        before = measure.status_counters(b.st)
        (job,), meta = b.meter.measure([(b.wrk_cmd("events", 64, b.seconds),
                                         "wrk")])
        after = measure.status_counters(b.st)
    finally:
        b.tune_nginx()
    r = measure.parse_wrk(job)
    rec = b.record("flash", "app", "events-flood", 64, r, meta)
    rec["list_queries"] = after["Com_select"] - before["Com_select"]
    if set(r["status"]) - {200, 503}:
        b.problems.append("events flood: statuses %s" % r["status"])


# ---------------------------------------------------------------------------
# the full run's extras: sweep, scale, tuning, perf

def sweep(b):
    """Throughput and p99 against concurrency: app create and the two
    ceilings, at each concurrency (the plot)."""
    concs = [1, 4, 16, 32, 64, 128] if not b.smoke else [2]
    secs = 2.0 if not b.smoke else b.seconds
    # two passes, the second in reverse order; the plot takes the best
    # of the two at each point (other work on the machine only ever
    # makes a run slower)
    for pss in range(2 if not b.smoke else 1):
        for c in (concs if pss == 0 else concs[::-1]):
            b.app_create("sweep", c, secs)["pass"] = pss
            b.ceiling("sweep", "a", c, secs)["pass"] = pss
            b.ceiling("sweep", "b", c, secs)["pass"] = pss


def scale_sizes(b):
    if b.smoke:
        return [("tickets_s1k", 1000), ("tickets_s10k", 10000)]
    return [("tickets_s10k", 10000), ("tickets_s1m", 1000000)]


def scale_setup(b):
    for db, n in scale_sizes(b):
        b.seed(db, old_tickets=n)


def scale(b):
    """create with 10 thousand and with 1 million existing tickets, each
    in its own database, the apps restarted between them (interleaved)."""
    sizes = scale_sizes(b)
    for rnd in range(b.rounds()):
        for db, n in sizes:
            b.st.restart_apps(env={"TICKETS_DB_NAME": db})
            b.db = db
            b.warm()
            b.skip(50000 if not b.smoke else 5000)
            b.app_create("scale", b.conc, round=rnd, old_tickets=n)
    b.db = "tickets"
    b.st.restart_apps(env=None)
    return {"dbs": [db for db, _ in sizes]}


def tuning(b):
    c = b.conc
    secs = 3.0
    # threads against concurrency
    for threads in (4, 8, 16, 32, 64):
        b.st.restart_apps(env={"TICKETS_THREADS": str(threads)})
        for conc in (16, 64):
            b.app_create("tuning", conc, secs, knob="threads", value=threads)
    b.st.restart_apps(env=None)
    # nginx workers
    for workers in (1, 2, 4):
        b.tune_nginx(workers=workers)
        b.app_create("tuning", c, secs, knob="nginx_workers", value=workers)
    # upstream keepalive per nginx worker: none, 4, 16 (shipped), 64
    for keep in (0, 4, 16, 64):
        b.tune_nginx(keepalive=keep)
        b.app_create("tuning", c, secs, knob="keepalive", value=keep)
    b.tune_nginx()
    # MariaDB: the log flush at commit (dynamic)
    for flush in (1, 2, 0):
        b.st.sql("SET GLOBAL innodb_flush_log_at_trx_commit = %d" % flush)
        b.app_create("tuning", c, secs, knob="flush_log_at_trx_commit",
                     value=flush)
        b.ceiling("tuning", "b", c, secs)["knob_value"] = flush


def perf_report(data, *how):
    r = subprocess.run(["perf", "report", "-i", data, "--stdio",
                        "--no-children"] + list(how) + ["-g", "none"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True)
    return "\n".join(line for line in r.stdout.splitlines()
                     if line.strip() and not line.startswith("#"))


def perf(b):
    """A perf profile of our own processes during an app create run."""
    if not shutil.which("perf"):
        log("perf not found; skipping the profile")
        return None
    data = os.path.join(b.tmp, "perf.data")
    # only our processes (-p): other work on the machine may run
    # programs of the same names
    pids = [b.st.db_pid] + measure.app_pids(b.st) + measure.nginx_pids(b.st)
    pp = subprocess.Popen(["perf", "record", "-g", "-F", "499", "-p",
                           ",".join(str(p) for p in pids),
                           "-o", data, "--", "sleep", "5"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    b.app_create("perf", b.conc, 4.5)
    pp.wait()
    outs = {}
    for name, sort in (("by_process", "comm"), ("by_dso", "comm,dso")):
        outs[name] = perf_report(data, "--sort", sort, "--percent-limit", "1")
    for comm in ("mariadbd", "tickets-fcgi", "nginx"):
        for sort, limit in (("dso", "2"), ("sym", "1.5")):
            outs["%s_by_%s" % (comm, sort)] = perf_report(
                data, "--comm", comm, "--percentage", "relative", "--sort",
                sort, "--percent-limit", limit)
    with open(os.path.join(b.out, "perf.txt"), "w") as f:
        for k, v in outs.items():
            f.write("== %s\n%s\n\n" % (k, v))
    return outs


# ---------------------------------------------------------------------------
# the table, in the order of a run. full_only: only in a full run (not
# --smoke, not --only), unless --only names it, and --no-NAME leaves it out;
# needs: scenarios that --only NAME runs too.

SCENARIOS = (
    Scenario("ratio", None, ratio, report.summarize_ratios, False, ()),
    Scenario("pinned", None, pinned, report.summarize_pinned, False, ()),
    Scenario("read", None, read, None, False, ("ratio",)),
    Scenario("keepalive", None, keepalive, report.summarize_keepalive,
             False, ()),
    # hot paces the others by create's rate
    Scenario("hot", None, hot, report.summarize_hot, False, ("ratio",)),
    Scenario("flash", lambda b: b.flash_seed(), flash,
             report.summarize_flash, False, ()),
    Scenario("sweep", None, sweep, None, True, ()),
    Scenario("scale", scale_setup, scale, report.summarize_scale, True, ()),
    Scenario("tuning", None, tuning, None, True, ()),
    Scenario("perf", None, perf, report.summarize_perf, True, ()),
)

NAMES = [s.name for s in SCENARIOS]


def chosen(args):
    """The scenarios this run runs, in the table's order."""
    only = set(args.only.split(",")) if args.only else None
    if only:
        for s in SCENARIOS:
            if s.name in only:
                only.update(s.needs)
        return [s for s in SCENARIOS if s.name in only]
    full = not args.smoke
    return [s for s in SCENARIOS if not s.full_only or (
        full and not getattr(args, "no_" + s.name, False))]


def run_all(b, scenarios, summary):
    """Set up, measure and summarize each scenario in turn."""
    for s in scenarios:
        if s.setup:
            s.setup(b)
        facts = s.measure(b)
        if s.summarize:
            summary.update(s.summarize(b.results, facts))
