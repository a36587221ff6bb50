"""bench/workload.py: the data of a benchmark run and its basic measurements.

Bench holds what every scenario of bench/scenarios.py works on: the stack
(tests/harness: a private MariaDB, two app instances at their defaults,
nginx), the seeded users and events, the tokens, the counter of fresh
(user, event) pairs per database, and the list of results and problems.
Its measurements (app_create, app_replay, app_events, ceiling, flash_app,
flash_ceiling) each run one load generator through bench/measure.py's Meter
and record one row of results.

Pairs: claim k is user user_base + k % users, event event_base +
(k % events + k / users) % events, in wrk (bench/lua/bench.lua) and in
claimdrv alike; next_k[db] is the first k no run has used yet.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import measure
from measure import StackError, log, stackmod

ROOT = measure.ROOT
BENCH = measure.BENCH
PROCEDURE = os.path.join(BENCH, "claim_procedure.sql")
SEAT_PROCEDURE = os.path.join(BENCH, "seat_procedure.sql")

CLAIM_EVENT_BASE = 1001     # the claim events: CLAIM_EVENT_BASE + 0 .. E-1
OLD_EVENT_BASE = 1          # scale databases: events holding the old tickets
# hot user's events: + 1000 x round (hot), + 50000 (controls)
HOT_EVENT_BASE = 100001
# flash (issue 12): its own users (premium, with tokens), and one fresh event
# per measurement, ids FLASH_EVENT_BASE..
FLASH_USER_BASE = 1000001
FLASH_USERS = 200000
FLASH_EVENT_BASE = 900001


class Bench(object):

    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.results = []          # every measurement
        self.problems = []         # functional failures (exit 1)
        if self.smoke:
            # enough fresh pairs for every scenario at a fast second
            # each (the keep-alive rounds create twice)
            self.users, self.events = 8000, 20
            self.seconds = args.seconds or 1
            self.driver_seconds = 0.3
            self.conc = 8
        else:
            self.users, self.events = 50000, 100
            self.seconds = args.seconds or 4.0
            self.driver_seconds = self.seconds
            self.conc = 32
        self.next_k = {}           # database -> next unused claim index
        self.st = None
        self.meter = None
        self.db = "tickets"

    def rounds(self, extra=0, full=None):
        """Interleaved rounds of a scenario: 1 in a smoke run, else full, or
        --rounds + extra."""
        if self.smoke:
            return 1
        return full if full is not None else self.args.rounds + extra

    # -- the stack

    def build(self):
        # make knows when claimdrv is older than its sources
        subprocess.check_call(["make", "-s", "-C", BENCH], stdout=sys.stderr)
        app = os.environ.get("TICKETS_BIN") or stackmod.DEFAULT_BIN
        if not os.access(app, os.X_OK):
            raise StackError("%s missing: run `make` first" % app)
        measure.need_wrk()

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="tickets-bench-")
        # app_env={}: the app's own defaults (threads, lock timeout), as
        # deployed; the tests' smaller pool is not what we measure. The
        # per-address limit of tokenless requests stays off (the stack's
        # default): every wrk request comes from 127.0.0.1, and a read run
        # measures the app, not that limit (flash's flood measures it)
        self.st = stackmod.Stack(dir=os.path.join(self.tmp, "s"), instances=2,
                                 app_env={}, quiet=True, keep=self.args.keep,
                                 keepalive=self.args.keepalive)
        t0 = time.monotonic()
        self.st.start()
        log("stack up in %.1f s (%s)" % (time.monotonic() - t0, self.st.dir))
        self.meter = measure.Meter(self.st, self.tmp)
        self.machine = measure.machine_info()

    def stop(self):
        if self.st:
            self.st.stop()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log("stack files kept in %s" % self.tmp)

    def keepalive_of_run(self):
        """nginx `keepalive` of this run: --keepalive, else as shipped."""
        if self.args.keepalive is None:
            return stackmod.UPSTREAM_KEEPALIVE
        return self.args.keepalive

    def tune_nginx(self, keepalive=None, addr_limit=False, token_limit=True,
                   workers=None):
        """Re-render and reload nginx with these render parameters; without
        arguments, as the run started."""
        st = self.st
        st.keepalive = (self.keepalive_of_run() if keepalive is None
                        else keepalive)
        st.addr_limit, st.token_limit = addr_limit, token_limit
        st.worker_processes = workers
        st.render_nginx()
        st.reload_nginx()

    # -- data

    def mariadb(self, sql_bytes, database):
        stackmod.mariadb_client(self.st.db_socket, sql_bytes, database)

    def seed(self, db, old_tickets=0):
        """Users, the claim events, the procedure, grants; old_tickets rows
        of free_tickets on OLD_EVENT_BASE.. events (scale databases)."""
        sql = self.st.sql
        t0 = time.monotonic()
        if db != "tickets":
            sql("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8mb4 "
                "COLLATE utf8mb4_unicode_ci" % db)
            with open(os.path.join(ROOT, "sql", "schema.sql"), "rb") as f:
                self.mariadb(f.read(), db)
            with open(os.path.join(ROOT, "sql", "grants.sql")) as f:
                grants = f.read().replace(" ON tickets.", " ON %s." % db)
            self.mariadb(grants.encode(), db)
        q = lambda s: sql(s.replace("@DB@", db))  # noqa: E731
        q("INSERT INTO @DB@.users (id, premium_until) SELECT seq, "
          "UTC_TIMESTAMP() + INTERVAL 1 YEAR FROM seq_1_to_%d"
          % (self.users + 1))
        # some orders, so that the order check reads a real index: cancelled
        # ones for the claim events (they do not block a claim)
        q("INSERT INTO @DB@.orders (user_id, event_id, status) SELECT seq, "
          "%d + seq %% %d, 'cancelled' FROM seq_1_to_%d"
          % (CLAIM_EVENT_BASE, self.events, self.users))
        q("INSERT INTO @DB@.events (id, title, starts_at, free_for_premium, "
          "free_quota, free_issued) SELECT seq, CONCAT('Bench event ', seq), "
          "UTC_TIMESTAMP() + INTERVAL 30 DAY + INTERVAL seq MINUTE, 1, NULL, 0 "
          "FROM seq_%d_to_%d" % (CLAIM_EVENT_BASE,
                                 CLAIM_EVENT_BASE + self.events - 1))
        if old_tickets:
            self.seed_old_tickets(q, old_tickets)
        for proc, name in ((PROCEDURE, "tickets_claim"),
                           (SEAT_PROCEDURE, "tickets_take_seat")):
            with open(proc, "rb") as f:
                self.mariadb(f.read(), db)
            q("GRANT EXECUTE ON PROCEDURE @DB@.%s TO 'tickets'@'localhost'"
              % name)
        self.next_k[db] = 0
        log("seeded %s: %d users, %d claim events, %d old tickets (%.1f s)"
            % (db, self.users, self.events, old_tickets,
               time.monotonic() - t0))

    @staticmethod
    def seed_old_tickets(q, old_tickets):
        per_event = 100
        users = old_tickets // per_event
        q("INSERT INTO @DB@.events (id, title, starts_at, free_for_premium, "
          "free_quota, free_issued) SELECT seq, CONCAT('Old event ', seq), "
          "UTC_TIMESTAMP() + INTERVAL 400 DAY, 1, NULL, %d FROM seq_%d_to_%d"
          % (users, OLD_EVENT_BASE, OLD_EVENT_BASE + per_event - 1))
        # secondary indexes off while loading, rebuilt sorted: ~2x faster
        q("ALTER TABLE @DB@.free_tickets DROP INDEX free_tickets_code, "
          "DROP INDEX free_tickets_event")
        q("INSERT INTO @DB@.free_tickets (user_id, event_id, code, "
          "created_at) SELECT 1 + (seq - 1) DIV %d, %d + (seq - 1) MOD %d, "
          "MD5(CONCAT('old', seq)), UTC_TIMESTAMP(6) - INTERVAL 1 DAY "
          "FROM seq_1_to_%d" % (per_event, OLD_EVENT_BASE, per_event,
                                users * per_event))
        q("ALTER TABLE @DB@.free_tickets ADD UNIQUE KEY free_tickets_code "
          "(code), ADD KEY free_tickets_event (event_id)")

    def write_tokens(self, name, users, **kw):
        """A file of one token a line, for each user id of users."""
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            for u in users:
                f.write(self.st.token(u, exp_delta=86400, **kw) + "\n")
        return path

    def tokens(self):
        t0 = time.monotonic()
        self.token_file = self.write_tokens("tokens.txt",
                                            range(1, self.users + 1))
        self.hot_user = self.users + 1
        self.hot_token = self.st.token(self.hot_user, exp_delta=86400)
        # the hot user's fresh token per request (hot control "fresh")
        self.hot_tokens_file = os.path.join(self.tmp, "hot-tokens.txt")
        with open(self.hot_tokens_file, "w") as f:
            for i in range(5000 if not self.smoke else 200):
                f.write(self.st.token(self.hot_user, exp_delta=86400 + i)
                        + "\n")
        log("minted %d tokens (%.1f s)" % (self.users + 1,
                                           time.monotonic() - t0))

    def hot_events(self, base, n):
        """n free events without a quota, ids base.., for a hot user."""
        self.st.sql(
            "INSERT INTO events (id, title, starts_at, free_for_premium, "
            "free_quota, free_issued) SELECT seq, CONCAT('Hot ', seq), "
            "UTC_TIMESTAMP() + INTERVAL 60 DAY, 1, NULL, 0 FROM seq_%d_to_%d"
            % (base, base + n - 1))

    def flash_seed(self):
        """The flash users (premium, FLASH_USER_BASE..) and their tokens."""
        t0 = time.monotonic()
        n = FLASH_USERS if not self.smoke else 20000
        self.flash_users = n
        self.st.sql("INSERT INTO users (id, premium_until) SELECT seq, "
                    "UTC_TIMESTAMP() + INTERVAL 1 YEAR FROM seq_%d_to_%d"
                    % (FLASH_USER_BASE, FLASH_USER_BASE + n - 1))
        self.flash_token_file = self.write_tokens(
            "flash-tokens.txt", range(FLASH_USER_BASE, FLASH_USER_BASE + n))
        self.flash_next_event = FLASH_EVENT_BASE
        log("flash: %d users and tokens (%.1f s)"
            % (n, time.monotonic() - t0))

    def flash_event(self, quota=None):
        ev = self.flash_next_event
        self.flash_next_event += 1
        self.st.sql("INSERT INTO events (id, title, starts_at, "
                    "free_for_premium, free_quota, free_issued) VALUES (%s, "
                    "'Flash', UTC_TIMESTAMP() + INTERVAL 90 DAY, 1, %s, 0)",
                    [ev, quota])
        return ev

    def _next(self, n):
        db = self.db
        k = self.next_k[db]
        self.next_k[db] = k + n
        if self.next_k[db] > self.users * self.events:
            raise StackError("out of fresh (user, event) pairs in %s" % db)
        return k

    def skip(self, n):
        """Leave n pairs unused (after a warm-up that spent some)."""
        self.next_k[self.db] += n

    # -- measurements

    def wrk_cmd(self, mode, conns, seconds, **kw):
        args = dict(users=self.users, events=self.events,
                    event_base=CLAIM_EVENT_BASE, tokens=self.token_file)
        args.update(kw)
        return measure.wrk_cmd(self.st.url, mode, conns, seconds, **args)

    def record(self, scenario, kind, mode, conc, r, meta, **extra):
        rec = {"scenario": scenario, "kind": kind, "mode": mode,
               "conc": conc, "db": self.db}
        rec.update(extra)
        rec.update({"rps": r["rps"], "lat_us": r["lat_us"],
                    "status": r.get("status") or r.get("outcomes")})
        if r.get("errors"):
            rec["socket_errors"] = r["errors"]
        if r.get("stage_us"):
            rec["stage_us"] = r["stage_us"]
        rec.update(meta)
        # CPU time per answered request, by part: far less sensitive to
        # other work on the machine than requests/s
        rps = max(r["rps"], 1e-9)
        rec["cpu_us_per_req"] = {k: round(v / rps * 1e6) for k, v in
                                 meta["cpu_cores"].items()
                                 if k in ("mariadbd", "app", "nginx",
                                          "loadgen")}
        self.results.append(rec)
        lat = r["lat_us"]
        log("%-8s %-7s %-7s c=%-3d %8.1f/s p50 %6.1f p99 %7.1f ms  %s  cpu %s"
            % (scenario, kind, mode, conc, r["rps"], lat["p50"] / 1000,
               lat["p99"] / 1000, json.dumps(rec["status"], sort_keys=True),
               " ".join("%s=%.2f" % kv for kv in meta["cpu_cores"].items()
                        if kv[0] not in ("machine_busy",))))
        return rec

    def warm(self, seconds=1):
        """A create run that is not recorded (its pairs are spent)."""
        self.meter.measure([(self.wrk_cmd("create", self.conc, seconds,
                                          start=self._next(0)), "wrk")])

    def app_create(self, scenario, conc, seconds=None, **extra):
        seconds = seconds or self.seconds
        start = self.next_k[self.db]
        (job,), meta = self.meter.measure([(self.wrk_cmd(
            "create", conc, seconds, start=start), "wrk")])
        r = measure.parse_wrk(job)
        self.next_k[self.db] = max(r["maxk"]) + 1
        self._next(0)
        rec = self.record(scenario, "app", "create", conc, r, meta, **extra)
        rec["start"], rec["answers"] = start, r["answers"]
        bad = {s: n for s, n in r["status"].items() if s != 201}
        if bad and scenario != "tuning":
            self.problems.append("%s create c=%d: statuses other than 201: %s"
                                 % (scenario, conc, bad))
        return rec

    def app_replay(self, scenario, mode, conc, made_from, seconds=None,
                   **extra):
        """mode repeat (POST) or get (GET) over the pairs of a create run."""
        seconds = seconds or self.seconds
        (job,), meta = self.meter.measure([(self.wrk_cmd(
            mode, conc, seconds, start=made_from["start"],
            made=measure.made_arg(made_from, conc)), "wrk")])
        r = measure.parse_wrk(job)
        rec = self.record(scenario, "app", mode, conc, r, meta, **extra)
        # a create run's last answers are not all in: a few of its pairs may
        # have no ticket (201 on repeat, 404 on get), at most one per
        # connection
        bad = {s: n for s, n in r["status"].items() if s != 200}
        if bad and (set(bad) - {201, 404} or sum(bad.values()) > conc):
            self.problems.append("%s %s: statuses other than 200: %s"
                                 % (scenario, mode, bad))
        return rec

    def app_events(self, scenario, conc, seconds=None, **extra):
        (job,), meta = self.meter.measure([(self.wrk_cmd(
            "events", conc, seconds or self.seconds), "wrk")])
        r = measure.parse_wrk(job)
        rec = self.record(scenario, "app", "events", conc, r, meta, **extra)
        if set(r["status"]) != {200}:
            self.problems.append("read events: statuses %s" % r["status"])
        return rec

    def ceiling(self, scenario, mode, threads, seconds=None, repeat_of=None,
                **extra):
        seconds = seconds or self.driver_seconds
        if repeat_of:
            start, pairs = repeat_of["start"], repeat_of["claims"]
        else:
            start, pairs = self.next_k[self.db], None
        (job,), meta = self.meter.measure([(measure.driver_cmd(
            self.st, self.db, mode, threads, seconds, self.users, self.events,
            CLAIM_EVENT_BASE, start, pairs), "claimdrv")])
        r = measure.parse_driver(job)
        if not repeat_of:
            self.next_k[self.db] = r["next"]
            self._next(0)
        name = mode if not repeat_of else "%s-repeat" % mode
        rec = self.record(scenario, "ceiling", name, threads, r, meta, **extra)
        rec["start"], rec["claims"] = start, r["claims"]
        want = "existing" if repeat_of or mode == "ping" else "created"
        bad = {k: v for k, v in r["outcomes"].items() if v and k != want}
        if bad or job["proc"].returncode != 0:
            self.problems.append("ceiling %s: outcomes other than %s: %s%s"
                                 % (name, want, bad, job["text"][-500:]))
        return rec

    def flash_wrk_cmd(self, conc, ev, start=0, users=None, seconds=None):
        """create claims of the flash users on the one event ev."""
        return self.wrk_cmd(
            "create", conc, seconds or self.seconds, start=start,
            users=users or self.flash_users, user_base=FLASH_USER_BASE,
            events=1, event_base=ev, tokens=self.flash_token_file)

    def flash_app(self, mode, conc, ev, start=0, users=None, **extra):
        (job,), meta = self.meter.measure_locks([(self.flash_wrk_cmd(
            conc, ev, start, users), "wrk")])
        r = measure.parse_wrk(job)
        rec = self.record("flash", "app", mode, conc, r, meta, **extra)
        rec["maxk"] = max(r["maxk"])
        return rec

    def flash_ceiling(self, name, threads, ev, extra=(), **fields):
        cmd = measure.driver_cmd(
            self.st, self.db, "a" if name.startswith("a") else name, threads,
            self.driver_seconds, self.flash_users, 1, ev, 0,
            user_base=FLASH_USER_BASE, extra=extra)
        (job,), meta = self.meter.measure_locks([(cmd, "claimdrv")])
        r = measure.parse_driver(job)
        rec = self.record("flash", "ceiling", name, threads, r, meta,
                          **fields)
        bad = {k: v for k, v in r["outcomes"].items() if v and k != "created"}
        if bad or job["proc"].returncode != 0:
            self.problems.append("flash ceiling %s: outcomes other than "
                                 "created: %s" % (name, bad))
        return rec
