"""Everything but the claim itself: GET participation, the event list,
health, metrics, unknown paths, wrong methods and routing details."""

import http.client
import re
import time
import urllib.parse

import pytest

from helpers import path, is_json, assert_error

STARTS_AT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def claim(stack, user, event):
    r = stack.request("POST", path(event), token=stack.token(user))
    assert r.status == 201, (r.status, r.text)
    return r.json["ticket"]


# ---------------------------------------------------------------------------
# GET /api/events/{id}/participation

def test_get_participation(stack):
    stack.make_user(42)
    stack.make_user(43)
    stack.make_event(7)
    stack.make_event(8)
    tok = stack.token(42)
    assert_error(stack.request("GET", path(7), token=tok), 404, "no_ticket")
    t = claim(stack, 42, 7)
    for _ in range(2):
        r = stack.request("GET", path(7), token=tok)
        assert r.status == 200, r.text
        assert is_json(r)
        assert r.json == {"ticket": t}
    # another event, another user: no ticket
    assert_error(stack.request("GET", path(8), token=tok), 404, "no_ticket")
    assert_error(stack.request("GET", path(7), token=stack.token(43)), 404, "no_ticket")
    # GET never creates anything
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 1


def test_get_participation_errors(stack):
    stack.make_user(42)
    stack.make_event(7)
    tok = stack.token(42)
    r = stack.request("GET", path(7))
    assert r.status == 401 and r.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert_error(r, 401, "unauthorized")
    assert_error(stack.request("GET", path("07"), token=tok), 400, "bad_request")
    assert_error(stack.request("GET", path("x"), token=tok), 400, "bad_request")
    assert_error(stack.request("GET", path(8), token=tok), 404, "event_not_found")
    assert_error(stack.request("GET", path(9223372036854775807), token=tok), 404, "event_not_found")
    assert_error(stack.request("GET", path(9223372036854775808), token=tok), 400, "bad_request")


def test_get_participation_needs_no_premium(stack):
    """Reading one's ticket is not a claim: a user who is no longer premium,
    or whose event has started, still sees the ticket."""
    stack.make_user(42)
    stack.make_event(7)
    t = claim(stack, 42, 7)
    stack.sql("UPDATE users SET premium_until = NULL WHERE id=42")
    stack.sql("UPDATE events SET starts_at = UTC_TIMESTAMP() - INTERVAL 1 DAY WHERE id=7")
    r = stack.request("GET", path(7), token=stack.token(42))
    assert r.status == 200 and r.json == {"ticket": t}, r.text


# ---------------------------------------------------------------------------
# GET /api/events

def db_starts_at(stack, event):
    dt = stack.sql("SELECT starts_at FROM events WHERE id=%s", [event])[0][0]
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_events_list(stack):
    title = 'Konzert "Ü" <&> \\ \u2603 \u00e9t\u00e9'
    stack.make_event(30, title=title, free=True, quota=None, starts_in=3 * 86400)
    stack.make_event(10, title="first", free=True, quota=5, starts_in=3600)
    stack.make_event(20, title="second", free=False, quota=None, starts_in=2 * 86400)
    stack.make_event(40, title="quota zero", free=True, quota=0, starts_in=4 * 86400)
    stack.make_event(50, title="past", starts_in=-60)
    stack.make_event(60, title="long past", starts_in=-86400 * 30)
    for u in (1, 2):
        stack.make_user(u)
        claim(stack, u, 10)
    claim(stack, 1, 30)

    r = stack.request("GET", "/api/events")
    assert r.status == 200, r.text
    assert is_json(r), r.headers
    assert set(r.json) == {"events"}, r.json
    events = r.json["events"]
    assert [e["id"] for e in events] == [10, 20, 30, 40], events
    by_id = {e["id"]: e for e in events}
    for e in events:
        assert {"id", "title", "starts_at", "free_for_premium", "free_quota", "free_left"} <= set(e), e
        assert isinstance(e["id"], int)
        assert STARTS_AT_RE.match(e["starts_at"]), e
        assert e["starts_at"] == db_starts_at(stack, e["id"]), e
        assert isinstance(e["free_for_premium"], bool), e
    assert by_id[10]["title"] == "first"
    assert by_id[30]["title"] == title
    assert (by_id[10]["free_for_premium"], by_id[10]["free_quota"], by_id[10]["free_left"]) == (True, 5, 3)
    assert (by_id[20]["free_for_premium"], by_id[20]["free_quota"], by_id[20]["free_left"]) == (False, None, None)
    assert (by_id[30]["free_for_premium"], by_id[30]["free_quota"], by_id[30]["free_left"]) == (True, None, None)
    assert (by_id[40]["free_quota"], by_id[40]["free_left"]) == (0, 0)


def test_events_list_order_is_by_start_not_id(stack):
    starts = {1: 5000, 2: 100, 3: 3000, 4: 200, 5: 86400 * 400}
    for eid, s in starts.items():
        stack.make_event(eid, starts_in=s)
    r = stack.request("GET", "/api/events")
    assert [e["id"] for e in r.json["events"]] == [2, 4, 3, 1, 5]


def test_events_list_empty_and_started_excluded(stack):
    r = stack.request("GET", "/api/events")
    assert r.status == 200 and r.json == {"events": []}, r.text
    stack.make_event(1, starts_in=3600)
    stack.sql("UPDATE events SET starts_at = UTC_TIMESTAMP() WHERE id=1")   # starts now
    r = stack.request("GET", "/api/events")
    assert r.json == {"events": []}, r.text


def test_events_list_sold_out_and_query_string(stack):
    stack.make_event(1, quota=1)
    stack.make_user(1)
    claim(stack, 1, 1)
    r = stack.request("GET", "/api/events?limit=1&x=%20")
    assert r.status == 200, r.text
    (e,) = r.json["events"]
    assert (e["free_quota"], e["free_left"]) == (1, 0)


def test_events_list_many(stack):
    for eid in range(1, 101):
        stack.make_event(eid, title="event %d" % eid, starts_in=1000 + eid)
    r = stack.request("GET", "/api/events")
    assert r.status == 200
    assert [e["id"] for e in r.json["events"]] == list(range(1, 101))


# ---------------------------------------------------------------------------
# GET /api/health

def test_health(stack):
    r = stack.request("GET", "/api/health")
    assert r.status == 200, r.text
    assert is_json(r), r.headers
    assert r.json == {"status": "ok"}


# ---------------------------------------------------------------------------
# /metrics

SAMPLE_RE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?$")


def parse_metrics(text):
    """{sample name with labels: value}, {metric name: type}; fails on any
    line that is not valid text exposition format."""
    samples, types = {}, {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE_RE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        float(m.group(3))
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples, types


def get_metrics(stack):
    u = urllib.parse.urlsplit(stack.internal_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode("utf-8")
        return resp.status, resp.getheader("Content-Type", ""), text
    finally:
        conn.close()


def test_metrics_internal(stack):
    status, ctype, text = get_metrics(stack)
    assert status == 200, text
    assert ctype.startswith("text/plain"), ctype
    samples, types = parse_metrics(text)
    assert types, "no # TYPE line:\n" + text
    assert samples, text
    assert "counter" in types.values(), types
    # every sample belongs to a declared metric
    for name in samples:
        base = name.split("{")[0]
        assert any(base == m or base.startswith(m + "_") for m in types), (name, types)


def counters(samples, types):
    out = {}
    for name, v in samples.items():
        base = name.split("{")[0]
        for m, t in types.items():
            if t == "counter" and (base == m or base == m + "_total"):
                out[name] = v
    return out


def test_metrics_counters_increase_after_claims(stack):
    """Counters are per instance, so one instance serves this test."""
    if not getattr(stack, "instances", None):
        pytest.skip("needs a harness-started stack")
    stack.restart_apps(count=1)
    try:
        stack.make_user(1)
        stack.make_event(1)
        _, _, text = get_metrics(stack)
        before = counters(*parse_metrics(text))
        claim(stack, 1, 1)
        assert stack.request("POST", path(1), token=stack.token(1)).status == 200
        assert stack.request("POST", path(2), token=stack.token(1)).status == 404
        _, _, text = get_metrics(stack)
        after = counters(*parse_metrics(text))
        assert before and after, text
        for name, v in before.items():
            assert after.get(name, v) >= v, ("counter went down", name, v, after.get(name))
        grew = [n for n in after if after[n] > before.get(n, 0)]
        about_claims = [n for n in grew if re.search(r"claim|ticket|creat|issu", n)]
        assert about_claims, "no claim/ticket counter increased; grew: %r\n%s" % (grew, text)
    finally:
        stack.restart_apps()


def test_metrics_not_public(stack):
    for p in ("/metrics", "/metrics/", "/api/metrics"):
        assert_error(stack.request("GET", p), 404, "not_found")


# ---------------------------------------------------------------------------
# Unknown paths and wrong methods

@pytest.mark.parametrize("p", [
    "/", "/api", "/api/", "/api/event", "/api/events/", "/api/events/7",
    "/api/events/7/", "/api/events/7/participations", "/api/events/7/participation/",
    "/api/events/7/participation/x", "/api/events/participation",
    "/api/events/7/8/participation", "/api/health/", "/api/health/x", "/nope",
    "/API/EVENTS", "/api/events.json", "/index.html", "/favicon.ico",
])
def test_unknown_paths_404(stack, p):
    tok = stack.token(1)
    for method in ("GET", "POST"):
        assert_error(stack.request(method, p, token=tok), 404, "not_found")


def allow_set(resp):
    allow = resp.headers.get("allow")
    assert allow is not None, "405 without Allow: %r" % resp.headers
    return {m.strip().upper() for m in allow.split(",") if m.strip()}


@pytest.mark.parametrize("method,p,needed", [
    ("PUT", "/api/events/7/participation", {"GET", "POST"}),
    ("DELETE", "/api/events/7/participation", {"GET", "POST"}),
    ("PATCH", "/api/events/7/participation", {"GET", "POST"}),
    ("POST", "/api/events", {"GET"}),
    ("PUT", "/api/events", {"GET"}),
    ("DELETE", "/api/events", {"GET"}),
    ("POST", "/api/health", {"GET"}),
    ("DELETE", "/api/health", {"GET"}),
])
def test_wrong_method_405(stack, method, p, needed):
    stack.make_user(1)
    stack.make_event(7)
    r = stack.request(method, p, token=stack.token(1), body=b"{}",
                      headers={"Content-Type": "application/json"})
    assert_error(r, 405, "method_not_allowed")
    allowed = allow_set(r)
    assert needed <= allowed, (allowed, needed)
    assert method not in allowed, allowed
    assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 0


# ---------------------------------------------------------------------------
# Routing on DOCUMENT_URI

def test_percent_encoded_id_routes_as_decoded(stack):
    stack.make_user(1)
    stack.make_event(7)
    tok = stack.token(1)
    r = stack.request("POST", "/api/events/%37/participation", token=tok)
    assert r.status == 201, r.text
    assert r.json["ticket"]["event_id"] == 7
    r2 = stack.request("GET", "/api/%65vents/7/particip%61tion", token=tok)
    assert r2.status == 200 and r2.json == {"ticket": r.json["ticket"]}, r2.text


def test_query_string_is_not_part_of_the_id(stack):
    stack.make_user(1)
    stack.make_event(7)
    tok = stack.token(1)
    r = stack.request("POST", "/api/events/7/participation?event=8&x=%2F", token=tok)
    assert r.status == 201, r.text
    assert r.json["ticket"]["event_id"] == 7
    r = stack.request("GET", "/api/events/7/participation?", token=tok)
    assert r.status == 200, r.text


def test_dot_segments_are_normalized(stack):
    stack.make_user(1)
    stack.make_event(7)
    r = stack.request("POST", "/api/events/8/../7/participation", token=stack.token(1))
    assert r.status == 201, r.text
    assert r.json["ticket"]["event_id"] == 7


def test_responses_are_quick(stack):
    """A truthful answer quickly: nothing in the plain paths waits."""
    stack.make_user(1)
    stack.make_event(7)
    tok = stack.token(1)
    for method, p in [("GET", "/api/health"), ("GET", "/api/events"),
                      ("POST", path(7)), ("POST", path(7)), ("GET", path(7)),
                      ("GET", "/nope")]:
        t0 = time.monotonic()
        r = stack.request(method, p, token=tok)
        assert r.status < 500, (method, p, r.status)
        assert time.monotonic() - t0 < 1.0, (method, p)
