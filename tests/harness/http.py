"""HTTP as a client sees it: one request on a fresh connection, its
answer kept as a Resp.  The one request function of tests/ and bench/.

Standard library only."""

import http.client
import json
import time
import urllib.parse


class Resp(object):
    """An HTTP answer: .status, .headers (lower-case names), .body (bytes),
    .text, .json (parsed, or None when the body is not JSON), .elapsed
    (seconds, when timed).  A request that got no answer, kept rather than
    raised (a storm's), is Resp(None, error=repr of what happened)."""

    def __init__(self, status, headers=None, body=b"", reason="", error=None):
        self.status = status
        self.reason = reason
        self.error = error
        self.elapsed = None
        self.headers = headers or {}
        self.body = body
        self.text = body.decode("utf-8", "replace")
        try:
            self.json = json.loads(self.text) if self.text.strip() else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<Resp %s %s>" % (self.status, self.text[:200])


def http_request(base_url, method, path, token=None, body=None, headers=None,
                 timeout=30, tls_context=None, conn=None):
    """One request on a fresh connection (thread-safe). body: bytes, str, or
    a dict/list that is sent as JSON.  An https:// base is spoken to with
    tls_context (an ssl.SSLContext; default: the system's CAs).  conn: an
    http.client connection to base_url made (connected) beforehand, used
    and closed here.  Raises what http.client raises; .elapsed is set."""
    t0 = time.monotonic()
    if path.startswith(("http://", "https://")):
        full = urllib.parse.urlsplit(path)
        base_url = full.scheme + "://" + full.netloc
        path = (full.path or "/") + ("?" + full.query if full.query else "")
    u = urllib.parse.urlsplit(base_url)
    hdrs = {}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode("utf-8")
        hdrs["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode("utf-8")
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    hdrs.update(headers or {})
    if conn is not None:
        pass
    elif u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                           context=tls_context)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        out = {}
        for k, v in r.getheaders():
            k = k.lower()
            out[k] = out[k] + ", " + v if k in out else v
        resp = Resp(r.status, out, data, r.reason)
        resp.elapsed = time.monotonic() - t0
        return resp
    finally:
        conn.close()

