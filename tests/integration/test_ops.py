"""Operations: liveness without the database, metrics that move with
traffic, the config file and --check-config."""

import os
import re
import subprocess
import time

import pytest

from helpers import assert_error, path

BIN = os.environ.get("TICKETS_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "tickets-fcgi")


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)),
                  text, re.M)
    assert m, "no %s%s in:\n%s" % (name, labels, text[:2000])
    return float(m.group(1))


def needs_harness(stack):
    if not getattr(stack, "instances", None):
        pytest.skip("needs a harness-started stack")


def test_ping_is_internal_and_needs_no_database(stack):
    r = stack.request("GET", stack.internal_url + "/ping")
    assert r.status == 200 and r.json == {"status": "alive"}, r.text
    assert_error(stack.request("GET", "/ping"), 404, "not_found")
    if not hasattr(stack, "stop_db"):
        return
    stack.stop_db()
    try:
        r = stack.request("GET", stack.internal_url + "/ping")
        assert r.status == 200 and r.json == {"status": "alive"}, r.text
        h = stack.request("GET", stack.internal_url + "/api/health")
        assert h.status == 503, h.text
    finally:
        stack.start_db()
        # workers that failed to connect during the outage wait 0.5 s
        # before trying again: let that pass before the next test
        time.sleep(1.0)


def test_metrics_move_with_traffic(stack):
    stack.make_user(1)
    stack.make_event(7)
    before = stack.request("GET", stack.internal_url + "/metrics").text
    for name in ("tickets_idle_threads", "tickets_inflight_requests",
                 "tickets_worker_threads", "tickets_busy_threads"):
        metric(before, name)
    # two instances behind the upstream: send enough that both move
    for _ in range(10):
        assert stack.request("POST", path(7), token=stack.token(1)).status in (200, 201)
        assert stack.request("GET", "/api/events").status == 200
    after = ""
    moved = False
    for _ in range(10):  # each scrape reaches one instance
        after = stack.request("GET", stack.internal_url + "/metrics").text
        if (metric(after, "tickets_http_requests_total", '{route="participation"}')
                > metric(before, "tickets_http_requests_total", '{route="participation"}')
                and metric(after, "tickets_claims_total", '{outcome="existing"}')
                > metric(before, "tickets_claims_total", '{outcome="existing"}')):
            moved = True
            break
    assert moved, after[:3000]
    assert metric(after, "tickets_http_requests_total", '{route="events"}') >= 1
    assert metric(after, "tickets_lock_wait_seconds_count") >= 0


def run_app(args, env=None, timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_")}
    e.update(env or {})
    return subprocess.run([BIN] + args, env=e, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


def app_config_lines(stack):
    return ["TICKETS_DB_SOCKET=%s" % stack.db_socket,
            "TICKETS_DB_PASSWORD_FILE=%s" % stack.path("db-password"),
            "TICKETS_JWT_SECRET_FILE=%s" % stack.secret_file]


def test_check_config_reaches_the_database(stack, tmp_path):
    needs_harness(stack)
    conf = tmp_path / "tickets.env"
    conf.write_text("# the app's settings\n\n" + "\n".join(app_config_lines(stack)) + "\n")
    r = run_app(["--config", str(conf), "--check-config"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert b"configuration OK" in r.stdout
    # the environment wins over the file, and a flag over the environment
    r = run_app(["--config=%s" % conf, "--check-config"],
                env={"TICKETS_DB_SOCKET": str(tmp_path / "nope.sock")})
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert b"not usable" in r.stderr
    r = run_app(["--config=%s" % conf, "--check-config",
                 "--db-socket=%s" % stack.db_socket],
                env={"TICKETS_DB_SOCKET": str(tmp_path / "nope.sock")})
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.parametrize("text, says", [
    ("TICKETS_BOGUS=1\n", b"known key"),
    ("no equals sign\n", b"known key"),
    ("TICKETS_THREADS=lots\n", b"invalid value"),
])
def test_bad_config_file_is_refused_with_its_line(stack, tmp_path, text, says):
    needs_harness(stack)
    conf = tmp_path / "tickets.env"
    conf.write_text("\n".join(app_config_lines(stack)) + "\n" + text)
    r = run_app(["--config", str(conf), "--check-config"])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert says in r.stderr, r.stderr
    r = run_app(["--config", str(tmp_path / "missing.env")])
    assert r.returncode == 2 and b"cannot read config file" in r.stderr
