"""GET /api/events is never older than the request that asked for it
(fcgi-app/textcache.c): a client that got its 201 sees its ticket counted
in free_left at once, whichever instance answers; and requests that arrive
together share one read of the database instead of one each."""

import concurrent.futures
import re
import subprocess

from helpers import path, general_log
from test_pacing import LIST_SQL


def shipped_default(stack, var):
    """The default the binary itself gives var, from its --help."""
    out = subprocess.run([stack.app_bin, "--help"], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"\b%s\b.*\[default: ([^\]]*)\]" % var, out)
    assert m, out
    return m.group(1)


def free_left(stack, event):
    r = stack.request("GET", "/api/events")
    assert r.status == 200, (r.status, r.text)
    return {e["id"]: e["free_left"] for e in r.json["events"]}[event]


def test_list_counts_my_ticket_at_once(stack):
    """At the shipped defaults: lists served just before a claim (on every
    instance) do not stand in for the list asked for after its 201."""
    stack.make_user(1)
    stack.make_user(2)
    stack.make_event(5, quota=10)
    stack.restart_apps(env={"TICKETS_EVENTS_CACHE": shipped_default(
        stack, "TICKETS_EVENTS_CACHE")})
    for user, left in ((1, 9), (2, 8)):
        for _ in range(4):  # each instance answers the list twice
            assert free_left(stack, 5) == left + 1
        r = stack.request("POST", path(5), token=stack.token(user))
        assert r.status == 201, (r.status, r.text)
        for _ in range(4):
            assert free_left(stack, 5) == left


def test_lists_asked_together_share_reads(stack):
    """300 lists from 60 connections at once: every answer is right, and
    the database is read fewer times than there are answers."""
    stack.make_event(7, quota=3)
    log = []
    with general_log(stack, log):
        with concurrent.futures.ThreadPoolExecutor(60) as ex:
            got = list(ex.map(lambda _: stack.request("GET", "/api/events"),
                              range(300)))
    assert [r.status for r in got] == [200] * 300
    assert all(r.json["events"][0]["free_left"] == 3 for r in got)
    reads = [a for _, a in log if LIST_SQL in a.upper()]
    assert 0 < len(reads) < len(got), len(reads)
