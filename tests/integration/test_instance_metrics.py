"""Per-instance metrics: nginx's internal server reaches each app instance
on its own socket at /instances/NAME/metrics (nginx/snippets/
tickets-instances.conf), so every scrape of a target sees one process's
counters. Through the upstream's /metrics successive scrapes land on
different processes and the counters jump between them."""

import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RULES = os.path.join(ROOT, "deploy", "prometheus", "tickets-fcgi.rules.yml")


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)),
                  text, re.M)
    assert m, "no %s%s in:\n%s" % (name, labels, text[:2000])
    return float(m.group(1))


def needs_instances(stack, n):
    if len(getattr(stack, "instances", [])) < n:
        pytest.skip("needs a harness-started stack with %d instances" % n)


def scrape(stack, name):
    r = stack.request("GET", stack.internal_url + "/instances/%s/metrics" % name)
    assert r.status == 200, (r.status, r.text[:500])
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    return r.text


def names(stack):
    return [os.path.basename(i.socket)[:-len(".sock")] for i in stack.instances]


def test_each_instance_scraped_alone_shows_its_own_counters(stack):
    """Different traffic straight to each instance (FastCGI on its socket,
    bypassing nginx); each instance's target shows exactly its own."""
    needs_instances(stack, 2)
    insts, tags = stack.instances[:2], names(stack)[:2]
    label = '{route="events"}'
    before = [metric(scrape(stack, t), "tickets_http_requests_total", label)
              for t in tags]
    sent = [3, 7]
    for inst, n in zip(insts, sent):
        for _ in range(n):
            assert inst.request("GET", "/api/events").status == 200
    after = [metric(scrape(stack, t), "tickets_http_requests_total", label)
             for t in tags]
    assert [a - b for a, b in zip(after, before)] == sent, (before, after)


def test_an_instance_target_never_jumps_to_another_process(stack):
    """The scrapes of one target count themselves, one by one: the same
    process answers every time (through the upstream they would be spread
    over the instances)."""
    needs_instances(stack, 2)
    for tag in names(stack)[:2]:
        seen = [metric(scrape(stack, tag), "tickets_http_requests_total",
                       '{route="metrics"}') for _ in range(6)]
        assert seen == [seen[0] + i for i in range(6)], (tag, seen)


def test_instance_ping_and_unknown_instance(stack):
    needs_instances(stack, 1)
    tag = names(stack)[0]
    r = stack.request("GET", stack.internal_url + "/instances/%s/ping" % tag)
    assert r.status == 200, r.text
    # no such socket: nginx's 502, mapped to the JSON 503 "unavailable" by
    # snippets/tickets-errors.conf; no other instance answers instead
    r = stack.request("GET", stack.internal_url + "/instances/nosuch/metrics")
    assert r.status == 503 and '"unavailable"' in r.text, (r.status, r.text[:300])
    assert "tickets_" not in r.text
    # nothing but a plain name reaches fastcgi_pass
    # ("%2e%2e" is decoded and normalised by nginx before matching: the
    # path becomes /metrics, the upstream's)
    for bad in ("../app0", "app0.sock", "a/b", "a.b", "x" * 65):
        r = stack.request("GET", stack.internal_url + "/instances/%s/metrics" % bad)
        assert r.status == 404, (bad, r.status)


def test_alert_rules_name_only_exported_metrics(stack):
    """Every tickets_* metric the alert rules use is one the app exports
    (a renamed counter would leave its alert silently quiet forever)."""
    needs_instances(stack, 1)
    text = scrape(stack, names(stack)[0])
    exported = set(re.findall(r"^(tickets_[a-z_]+)", text, re.M))
    with open(RULES) as f:
        used = set(re.findall(r"\b(tickets_[a-z_]+_(?:total|threads|seconds\w*|claims|requests))\b",
                              f.read()))
    assert used, "no metric found in %s" % RULES
    assert used <= exported, sorted(used - exported)
