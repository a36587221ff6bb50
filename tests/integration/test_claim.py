"""POST /api/events/{event_id}/participation: every row of the claim table,
in contract order, the body rules, and that a refusal writes nothing."""

import datetime
import json
import re

import pytest

from helpers import path, is_json, assert_error, rows, issued

CREATED_AT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
CODE_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_ID = 9223372036854775807


def claim(stack, user, event, **kw):
    return stack.request("POST", path(event), token=stack.token(user), **kw)


def assert_ticket(t, user, event):
    assert isinstance(t, dict), t
    assert {"id", "code", "user_id", "event_id", "created_at"} <= set(t), t
    assert isinstance(t["id"], int) and not isinstance(t["id"], bool) and t["id"] > 0, t
    assert isinstance(t["code"], str) and CODE_RE.match(t["code"]), t
    assert t["user_id"] == user and isinstance(t["user_id"], int), t
    assert t["event_id"] == event and isinstance(t["event_id"], int), t
    assert isinstance(t["created_at"], str) and CREATED_AT_RE.match(t["created_at"]), t


def assert_created(resp, user, event):
    assert resp.status == 201, (resp.status, resp.text)
    assert is_json(resp), resp.headers
    assert set(resp.json) == {"ticket", "created"}, resp.json
    assert resp.json["created"] is True, resp.json
    assert_ticket(resp.json["ticket"], user, event)
    return resp.json["ticket"]


def assert_existing(resp, ticket):
    assert resp.status == 200, (resp.status, resp.text)
    assert is_json(resp), resp.headers
    assert set(resp.json) == {"ticket", "created"}, resp.json
    assert resp.json["created"] is False, resp.json
    assert resp.json["ticket"] == ticket, (resp.json["ticket"], ticket)


def assert_nothing_written(stack, event, before_issued=0):
    assert rows(stack, event=event) == before_issued
    assert issued(stack, event) == before_issued


# ---------------------------------------------------------------------------
# Row 2: canonical decimal id in 1 .. 2^63-1

BAD_IDS = [
    "0", "00", "-1", "+1", "%2B1", "01", "007", "%201", "1%20", "%091", "1a",
    "a1", "abc", "1.0", "1e3", "0x10", "1,2", "%EF%BC%91",  # full-width 1
    "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "9" * 40, "1" * 400,
]


@pytest.mark.parametrize("event_id", BAD_IDS)
def test_row2_bad_event_id_is_400(stack, event_id):
    stack.make_user(1)
    for method in ("POST", "GET"):
        r = stack.request(method, path(event_id), token=stack.token(1))
        assert_error(r, 400, "bad_request")
    assert rows(stack) == 0


def test_row2_largest_id_is_valid_syntax(stack):
    stack.make_user(1)
    assert_error(claim(stack, 1, MAX_ID), 404, "event_not_found")
    assert_error(claim(stack, 1, "1" + "0" * 18), 404, "event_not_found")


def test_row2_before_row3_and_5(stack):
    # unknown user, unknown event, bad id: the id wins
    assert_error(claim(stack, 555, "01"), 400, "bad_request")


# ---------------------------------------------------------------------------
# Row 3: no such event

def test_row3_event_not_found(stack):
    stack.make_user(1)
    stack.make_event(2)
    assert_error(claim(stack, 1, 3), 404, "event_not_found")
    assert rows(stack) == 0


def test_row3_before_row5(stack):
    assert_error(claim(stack, 555, 3), 404, "event_not_found")


# ---------------------------------------------------------------------------
# Row 10 then row 4: created once, then the same ticket every time

def test_row10_created_then_row4_same_ticket(stack):
    stack.make_user(42)
    stack.make_event(7)
    before = datetime.datetime.utcnow().replace(microsecond=0)
    t = assert_created(claim(stack, 42, 7), 42, 7)
    after = datetime.datetime.utcnow()
    for _ in range(3):
        assert_existing(claim(stack, 42, 7), t)
    assert rows(stack, 42, 7) == 1
    assert issued(stack, 7) == 1
    # the database row is the ticket
    (rid, code, uid, eid, created), = stack.sql(
        "SELECT id, code, user_id, event_id, created_at FROM free_tickets")
    assert (rid, code, uid, eid) == (t["id"], t["code"], 42, 7)
    assert created.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == t["created_at"]
    assert before - datetime.timedelta(seconds=5) <= created <= after + datetime.timedelta(seconds=5)
    # and GET shows it too
    g = stack.request("GET", path(7), token=stack.token(42))
    assert g.status == 200 and g.json == {"ticket": t}, g.text


def test_row10_ticket_codes_are_distinct_and_random(stack):
    stack.make_event(7)
    codes = set()
    for u in range(1, 21):
        stack.make_user(u)
        codes.add(assert_created(claim(stack, u, 7), u, 7)["code"])
    assert len(codes) == 20
    # 128 random bits: no two share a long prefix, and all hex digits appear
    assert len({c[:8] for c in codes}) == 20
    assert set("".join(codes)) == set("0123456789abcdef")


def test_row10_large_ids(stack):
    user = MAX_ID
    stack.make_user(user)
    stack.make_event(MAX_ID)
    t = assert_created(claim(stack, user, MAX_ID), user, MAX_ID)
    assert_existing(claim(stack, user, MAX_ID), t)


def test_row10_starting_soon_and_premium_ending_soon(stack):
    stack.make_user(1)
    stack.sql("UPDATE users SET premium_until = UTC_TIMESTAMP() + INTERVAL 2 MINUTE WHERE id=1")
    stack.make_event(2, starts_in=120)
    assert_created(claim(stack, 1, 2), 1, 2)


# ---------------------------------------------------------------------------
# Row 4 wins over rows 5-9

def _make_not_premium(stack, u, e):
    stack.sql("UPDATE users SET premium_until = NULL WHERE id=%s", [u])


def _make_unknown(stack, u, e):
    stack.sql("DELETE FROM users WHERE id=%s", [u])


def _make_not_free(stack, u, e):
    stack.sql("UPDATE events SET free_for_premium = 0 WHERE id=%s", [e])


def _make_started(stack, u, e):
    stack.sql("UPDATE events SET starts_at = UTC_TIMESTAMP() - INTERVAL 1 HOUR WHERE id=%s", [e])


def _make_paid(stack, u, e):
    stack.make_order(u, e, status="paid")


def _make_sold_out(stack, u, e):
    stack.sql("UPDATE events SET free_quota = 1 WHERE id=%s", [e])


CHANGES = {
    "not_premium": _make_not_premium,
    "unknown_user": _make_unknown,
    "not_free": _make_not_free,
    "started": _make_started,
    "paid_order": _make_paid,
    "sold_out": _make_sold_out,
}


@pytest.mark.parametrize("changes", [[c] for c in CHANGES] + [list(CHANGES)],
                         ids=list(CHANGES) + ["all"])
def test_row4_existing_ticket_wins_over_refusals(stack, changes):
    stack.make_user(42)
    stack.make_event(7)
    t = assert_created(claim(stack, 42, 7), 42, 7)
    for c in changes:
        CHANGES[c](stack, 42, 7)
    assert_existing(claim(stack, 42, 7), t)
    assert_existing(claim(stack, 42, 7), t)
    g = stack.request("GET", path(7), token=stack.token(42))
    assert g.status == 200 and g.json == {"ticket": t}, g.text
    assert rows(stack) == 1 and issued(stack, 7) == 1


# ---------------------------------------------------------------------------
# Row 5: not premium

@pytest.mark.parametrize("premium_until", [
    None, "unknown", "UTC_TIMESTAMP() - INTERVAL 1 SECOND",
    "UTC_TIMESTAMP() - INTERVAL 10 MINUTE", "'2001-01-01 00:00:00'",
], ids=["null", "unknown", "just_expired", "expired", "long_ago"])
def test_row5_not_premium(stack, premium_until):
    if premium_until != "unknown":
        stack.make_user(42)
        if premium_until is None:
            stack.sql("UPDATE users SET premium_until = NULL WHERE id=42")
        else:
            stack.sql("UPDATE users SET premium_until = %s WHERE id=42" % premium_until)
    stack.make_event(7)
    assert_error(claim(stack, 42, 7), 403, "not_premium")
    assert_nothing_written(stack, 7)


def test_row5_make_user_not_premium(stack):
    stack.make_user(42, premium=False)
    stack.make_event(7)
    assert_error(claim(stack, 42, 7), 403, "not_premium")
    assert_nothing_written(stack, 7)


# ---------------------------------------------------------------------------
# Rows 6-9

def test_row6_not_free(stack):
    stack.make_user(42)
    stack.make_event(7, free=False)
    assert_error(claim(stack, 42, 7), 409, "not_free")
    assert_nothing_written(stack, 7)


@pytest.mark.parametrize("when", ["1 HOUR", "1 SECOND", "0 SECOND"])
def test_row7_event_started(stack, when):
    stack.make_user(42)
    stack.make_event(7)
    stack.sql("UPDATE events SET starts_at = UTC_TIMESTAMP() - INTERVAL %s WHERE id=7" % when)
    assert_error(claim(stack, 42, 7), 409, "event_started")
    assert_nothing_written(stack, 7)


def test_row7_make_event_in_the_past(stack):
    stack.make_user(42)
    stack.make_event(7, starts_in=-60)
    assert_error(claim(stack, 42, 7), 409, "event_started")
    assert_nothing_written(stack, 7)


@pytest.mark.parametrize("status", ["pending", "paid"])
def test_row8_paid_order_exists(stack, status):
    stack.make_user(42)
    stack.make_event(7)
    stack.make_order(42, 7, status=status)
    assert_error(claim(stack, 42, 7), 409, "paid_order_exists")
    assert_nothing_written(stack, 7)


@pytest.mark.parametrize("status", ["cancelled", "refunded"])
def test_row8_cancelled_or_refunded_order_does_not_count(stack, status):
    stack.make_user(42)
    stack.make_event(7)
    stack.make_order(42, 7, status=status)
    assert_created(claim(stack, 42, 7), 42, 7)


def test_row8_only_this_users_orders_for_this_event(stack):
    stack.make_user(42)
    stack.make_user(43)
    stack.make_event(7)
    stack.make_event(8)
    stack.make_order(42, 8, status="paid")   # same user, other event
    stack.make_order(43, 7, status="paid")   # other user, same event
    assert_created(claim(stack, 42, 7), 42, 7)
    assert_error(claim(stack, 42, 8), 409, "paid_order_exists")
    assert_error(claim(stack, 43, 7), 409, "paid_order_exists")
    assert_created(claim(stack, 43, 8), 43, 8)


def test_row8_several_orders(stack):
    stack.make_user(42)
    stack.make_event(7)
    stack.make_order(42, 7, status="cancelled")
    stack.make_order(42, 7, status="refunded")
    stack.make_order(42, 7, status="pending")
    assert_error(claim(stack, 42, 7), 409, "paid_order_exists")


def test_row9_sold_out(stack):
    stack.make_event(7, quota=2)
    for u in (1, 2, 3, 4):
        stack.make_user(u)
    assert_created(claim(stack, 1, 7), 1, 7)
    assert_created(claim(stack, 2, 7), 2, 7)
    assert_error(claim(stack, 3, 7), 409, "sold_out")
    assert_error(claim(stack, 4, 7), 409, "sold_out")
    assert rows(stack, event=7) == 2 and issued(stack, 7) == 2
    # holders still get their ticket back
    assert claim(stack, 1, 7).status == 200


def test_row9_quota_zero(stack):
    stack.make_user(1)
    stack.make_event(7, quota=0)
    assert_error(claim(stack, 1, 7), 409, "sold_out")
    assert_nothing_written(stack, 7)


def test_row9_quota_raised_later(stack):
    stack.make_user(1)
    stack.make_event(7, quota=0)
    assert_error(claim(stack, 1, 7), 409, "sold_out")
    stack.sql("UPDATE events SET free_quota = 1 WHERE id=7")
    assert_created(claim(stack, 1, 7), 1, 7)


def test_row9_no_quota_means_no_limit(stack):
    stack.make_event(7, quota=None)
    for u in range(1, 31):
        stack.make_user(u)
        assert_created(claim(stack, u, 7), u, 7)
    assert issued(stack, 7) == 30


# ---------------------------------------------------------------------------
# Row order when several refusals apply

def test_row_order(stack):
    cases = [
        # (description, premium, free, started, order, sold_out, expected)
        ("everything wrong", False, False, True, "paid", True, (403, "not_premium")),
        ("not premium + not free", False, False, False, None, False, (403, "not_premium")),
        ("not premium + started", False, True, True, None, False, (403, "not_premium")),
        ("not premium + paid", False, True, False, "paid", False, (403, "not_premium")),
        ("not premium + sold out", False, True, False, None, True, (403, "not_premium")),
        ("not free + started", True, False, True, None, False, (409, "not_free")),
        ("not free + paid", True, False, False, "pending", False, (409, "not_free")),
        ("not free + sold out", True, False, False, None, True, (409, "not_free")),
        ("not free + started + paid + sold out", True, False, True, "paid", True, (409, "not_free")),
        ("started + paid", True, True, True, "paid", False, (409, "event_started")),
        ("started + sold out", True, True, True, None, True, (409, "event_started")),
        ("started + pending + sold out", True, True, True, "pending", True, (409, "event_started")),
        ("paid + sold out", True, True, False, "paid", True, (409, "paid_order_exists")),
        ("pending + sold out", True, True, False, "pending", True, (409, "paid_order_exists")),
        ("cancelled + sold out", True, True, False, "cancelled", True, (409, "sold_out")),
    ]
    for i, (name, premium, free, started, order, sold_out, (status, code)) in enumerate(cases):
        user, event = 100 + i, 200 + i
        stack.make_user(user, premium=premium)
        if not premium:
            stack.sql("UPDATE users SET premium_until = NULL WHERE id=%s", [user])
        stack.make_event(event, free=free, quota=0 if sold_out else None,
                         starts_in=-3600 if started else 86400)
        if order:
            stack.make_order(user, event, status=order)
        r = claim(stack, user, event)
        try:
            assert_error(r, status, code)
        except AssertionError as e:
            raise AssertionError("[%s]: %s" % (name, e))
        assert_nothing_written(stack, event)


# ---------------------------------------------------------------------------
# Body rules

def padded_json(size):
    """A valid JSON object of exactly `size` bytes."""
    base = b'{"pad":""}'
    body = base[:-2] + b"x" * (size - len(base)) + base[-2:]
    assert len(body) == size
    json.loads(body)
    return body


JSON_CT = {"Content-Type": "application/json"}


@pytest.mark.parametrize("body,headers", [
    (None, None),
    (b"", JSON_CT),
    (b"{}", JSON_CT),
    (b"{}", None),
    (b'{"note": "double click", "n": [1, 2.5, null, true], "o": {"x": "\\u00e9"}}', JSON_CT),
    (b"[1, 2, 3]", JSON_CT),
    (b"  {  }\n", JSON_CT),
    ("pad4096", JSON_CT),
], ids=["none", "empty", "empty_object", "no_content_type", "object", "array",
        "whitespace", "exactly_4096"])
def test_body_accepted(stack, body, headers):
    if body == "pad4096":
        body = padded_json(4096)
    stack.make_user(42)
    stack.make_event(7)
    r = claim(stack, 42, 7, body=body, headers=headers)
    t = assert_created(r, 42, 7)
    # and on a repeat, with the same kind of body
    assert_existing(claim(stack, 42, 7, body=body, headers=headers), t)


@pytest.mark.parametrize("body", [
    b"{", b"not json", b"{'single': 'quotes'}", b'{"a": 1,}', b"{}{}", b'{"a": 1} x',
    b"\xff\xfe{}", b'{"a": "\xff"}', b"nul\x00l",
], ids=["open_brace", "text", "single_quotes", "trailing_comma", "two_values",
        "trailing_garbage", "bom_bytes", "bad_utf8", "nul"])
def test_body_invalid_json_is_400(stack, body):
    stack.make_user(42)
    stack.make_event(7)
    assert_error(claim(stack, 42, 7, body=body, headers=JSON_CT), 400, "bad_request")
    assert_nothing_written(stack, 7)


@pytest.mark.parametrize("size", [4097, 4200, 8192, 16000])
def test_body_over_4k_is_413(stack, size):
    stack.make_user(42)
    stack.make_event(7)
    r = claim(stack, 42, 7, body=padded_json(size), headers=JSON_CT)
    assert_error(r, 413, "payload_too_large")
    assert_nothing_written(stack, 7)


@pytest.mark.parametrize("size", [4097, 9000])
def test_body_over_4k_not_json_is_413_or_400(stack, size):
    """Too large and not JSON: either refusal is truthful, nothing is written."""
    stack.make_user(42)
    stack.make_event(7)
    r = claim(stack, 42, 7, body=b"x" * size, headers=JSON_CT)
    assert r.status in (400, 413), (r.status, r.text)
    assert_error(r, r.status, {400: "bad_request", 413: "payload_too_large"}[r.status])
    assert_nothing_written(stack, 7)


@pytest.mark.parametrize("size", [16 * 1024 + 1, 20000, 100000])
def test_body_over_16k_nginx_is_413_json(stack, size):
    stack.make_user(42)
    stack.make_event(7)
    r = claim(stack, 42, 7, body=padded_json(size), headers=JSON_CT)
    assert_error(r, 413, "payload_too_large")
    assert_nothing_written(stack, 7)
    # the stack still serves normally afterwards
    assert_created(claim(stack, 42, 7), 42, 7)


def test_body_ignored_on_existing_ticket_when_valid(stack):
    stack.make_user(42)
    stack.make_event(7)
    t = assert_created(claim(stack, 42, 7, body=b'{"a": 1}', headers=JSON_CT), 42, 7)
    assert_existing(claim(stack, 42, 7, body=b'{"b": 2}', headers=JSON_CT), t)


# ---------------------------------------------------------------------------
# Idempotency in sequence, across many events

def test_sequence_of_claims_across_many_events(stack):
    stack.make_user(42)
    events = list(range(1000, 1025))
    for e in events:
        stack.make_event(e, quota=5 if e % 2 else None)
    tickets = {}
    for e in events:
        tickets[e] = assert_created(claim(stack, 42, e), 42, e)
    for e in reversed(events):
        assert_existing(claim(stack, 42, e), tickets[e])
    assert len({t["id"] for t in tickets.values()}) == len(events)
    assert len({t["code"] for t in tickets.values()}) == len(events)
    assert rows(stack, user=42) == len(events)
    for e in events:
        assert issued(stack, e) == 1
    listed = stack.request("GET", "/api/events").json["events"]
    left = {ev["id"]: ev["free_left"] for ev in listed}
    for e in events:
        assert left[e] == (4 if e % 2 else None), (e, left[e])


def test_refusals_write_nothing_and_do_not_spend_quota(stack):
    stack.make_event(7, quota=1)
    stack.make_user(1, premium=False)
    stack.sql("UPDATE users SET premium_until = NULL WHERE id=1")
    stack.make_user(2)
    stack.make_order(2, 7, status="paid")
    stack.make_user(3)
    for _ in range(3):
        assert_error(claim(stack, 1, 7), 403, "not_premium")
        assert_error(claim(stack, 2, 7), 409, "paid_order_exists")
        assert_error(claim(stack, 3, 7, body=b"{", headers=JSON_CT), 400, "bad_request")
        assert_error(claim(stack, 3, 7, body=padded_json(5000), headers=JSON_CT),
                     413, "payload_too_large")
    assert_nothing_written(stack, 7)
    assert_created(claim(stack, 3, 7), 3, 7)
