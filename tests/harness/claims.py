"""A claim as its client sees it, kept for the checks after a storm: the
fault suite's storms (tests/faults), the hosts of tests/cluster and the
Galera nodes of tests/galera all claim through claim() and check Claims.

    c = claim(stack.url, token, user=42, event=7)
    c.status, c.created, c.retry_after, c.elapsed, c.kind()

Standard library only."""

import time

from .http import http_request


def claim_path(event_id):
    """The claim's path (docs/API.md): /api/events/<id>/participation."""
    return "/api/events/%s/participation" % event_id


class Claim(object):
    """What a client saw: status, error code, Retry-After, ticket, created,
    Content-Type, times; or the transport error (repr) when no answer came."""

    __slots__ = ("user", "event", "method", "status", "error", "retry_after",
                 "ticket", "created", "t0", "t1", "transport", "ctype",
                 "json_ok")

    def __init__(self, user, event, method, t0):
        self.user, self.event, self.method, self.t0 = user, event, method, t0
        self.status = self.error = self.retry_after = self.ticket = None
        self.created = self.transport = self.ctype = None
        self.json_ok = False
        self.t1 = None

    @property
    def elapsed(self):
        return self.t1 - self.t0

    @property
    def code(self):
        """The ticket's code, if the answer carried a ticket."""
        return (self.ticket or {}).get("code")

    @property
    def ok(self):
        """A truthful final answer: a ticket, or sold out."""
        return self.status in (200, 201) or (self.status == 409
                                              and self.error == "sold_out")

    def wrong_ticket(self):
        """True for a 200/201 to a claim whose ticket is not of its (user,
        event), or whose `created` does not say 201."""
        if self.status not in (200, 201) or self.method != "POST":
            return False
        t = self.ticket or {}
        return ((t.get("user_id"), t.get("event_id")) != (self.user, self.event)
                or self.created is not (self.status == 201))

    def kind(self):
        """"201", "409 sold_out", "client error (ConnectionResetError)"..."""
        if self.transport:
            return "client error (%s)" % self.transport.split("(")[0]
        return "%s%s" % (self.status, " " + self.error if self.error else "")

    def __repr__(self):
        return "<%s u%s e%s -> %s %s %.3fs%s>" % (
            self.method, self.user, self.event, self.status, self.error or "",
            self.elapsed, " " + self.transport if self.transport else "")


def send(base_url, method, p, token=None, user=None, event=None, timeout=30,
         body=None, headers=None):
    """One request on a fresh connection, as a Claim of (user, event);
    never raises: a transport error is kept in Claim.transport."""
    a = Claim(user, event, method, time.monotonic())
    try:
        r = http_request(base_url, method, p, token, body,
                         dict({"Connection": "close"}, **(headers or {})),
                         timeout)
        a.status = r.status
        a.retry_after = r.headers.get("retry-after")
        a.ctype = r.headers.get("content-type") or ""
        doc = r.json
        a.json_ok = isinstance(doc, dict)
        if isinstance(doc, dict):
            a.error = doc.get("error")
            a.ticket = doc.get("ticket")
            a.created = doc.get("created")
    except Exception as e:  # noqa: BLE001 - kept for the checks
        a.transport = repr(e)
    finally:
        a.t1 = time.monotonic()
    return a


def claim(base_url, token, user, event, timeout=30):
    """POST user's claim of event (token: user's JWT); a Claim."""
    return send(base_url, "POST", claim_path(event), token, user, event,
                timeout)
