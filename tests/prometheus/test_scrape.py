"""A real Prometheus (Debian's) scrapes the two instances of a test stack
with the shipped scrape configuration (deploy/prometheus/
prometheus.yml.example: one target per instance through nginx's
/instances/NAME/metrics, `instance` naming it), and stores each process's
own counters under its own instance label. The shipped rules load."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))

from fixtures import own_stack  # noqa: E402
from harness import free_port, stop_process  # noqa: E402

EXAMPLE = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml.example")
RULES = os.path.join(ROOT, "deploy", "prometheus", "tickets-fcgi.rules.yml")
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(not PROMETHEUS, reason="prometheus not installed")


def render_config(example, internal_port, tags, rules):
    """The example, with this stack's internal server, its instances'
    socket names instead of app/app2, a 1 s interval and the rules file."""
    with open(example) as f:
        text = f.read()
    text = text.replace("127.0.0.1:8081", "127.0.0.1:%d" % internal_port)
    text = text.replace("/etc/prometheus/tickets-fcgi.rules.yml", rules)
    text = re.sub(r"(scrape|evaluation)_interval: 15s", r"\1_interval: 1s", text)
    for old, new in (("app2", tags[1]), ("app/", tags[0] + "/"),
                     ("web1:app\n", "web1:%s\n" % tags[0])):
        assert old in text, old
        text = text.replace(old, new)
    return text


def query(base, promql):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return {s["metric"].get("instance"): float(s["value"][1])
            for s in body["data"]["result"]}


@pytest.fixture(scope="module")
def stack():
    yield from own_stack(instances=2)


def test_prometheus_scrapes_each_instance_alone(stack):
    tags = [os.path.basename(i.socket)[:-len(".sock")] for i in stack.instances]
    tmp = tempfile.mkdtemp(prefix="tickets-prom-")
    try:
        conf = os.path.join(tmp, "prometheus.yml")
        with open(conf, "w") as f:
            f.write(render_config(EXAMPLE, int(stack.internal_url.rsplit(":", 1)[1]),
                                  tags, RULES))
        check = subprocess.run(["promtool", "check", "config", conf],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        # different traffic straight to each instance
        sent = {tags[0]: 3, tags[1]: 7}
        for inst, tag in zip(stack.instances, tags):
            for _ in range(sent[tag]):
                assert inst.request("GET", "/api/events").status == 200
        port = free_port()
        base = "http://127.0.0.1:%d" % port
        with open(os.path.join(tmp, "prometheus.log"), "wb") as log:
            p = subprocess.Popen(
                [PROMETHEUS, "--config.file=" + conf,
                 "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                 "--web.listen-address=127.0.0.1:%d" % port],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        try:
            want = {"web1:" + t: float(n) for t, n in sent.items()}
            got, deadline = {}, time.monotonic() + 60
            while time.monotonic() < deadline:
                assert p.poll() is None, "prometheus exited"
                try:
                    got = query(base, 'tickets_http_requests_total{job="tickets-fcgi",route="events"}')
                except OSError:
                    got = {}
                if got == want:
                    break
                time.sleep(0.5)
            assert got == want, (got, want)
            assert query(base, 'up{job="tickets-fcgi"}') == {k: 1.0 for k in want}
            with urllib.request.urlopen(base + "/api/v1/rules", timeout=5) as r:
                groups = json.load(r)["data"]["groups"]
            alerts = {rule["name"] for g in groups for rule in g["rules"]}
            assert {"TicketsInstanceDown", "TicketsDatabaseUnavailable",
                    "TicketsAllThreadsBusy"} <= alerts, alerts
            firing = query(base, 'ALERTS{alertstate="firing"}')
            assert not firing, firing
        finally:
            stop_process(p, 20, "prometheus")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
