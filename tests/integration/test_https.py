"""HTTPS (issue 14): the public server over TLS with HTTP/2, modern protocols
only, HSTS on every answer; the shipped site (nginx/tickets.conf) redirects
plain HTTP to it.

The private test nginx serves the shipped snippets over TLS too
(nginx/nginx.conf.in, a throw-away certificate made by tests/harness), and
the shipped site itself is run here on loopback ports in front of the
stack's app, with only its ports and paths rewritten.
"""

import grp
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

import harness as stack_mod  # tests/harness/, on sys.path via conftest

ROOT = stack_mod.ROOT
HSTS = "max-age=63072000"
# the old protocols are named to show that the server refuses them
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def needs_tls(stack):
    if not getattr(stack, "tls_url", None):
        pytest.skip("the stack serves no TLS (an older `make run`?)")


def claim(stack, base, user, event, ctx=None):
    return stack_mod.http_request(base, "POST",
                                  stack_mod.claim_path(event),
                                  token=stack.token(user), tls_context=ctx)


def test_claim_over_https(stack):
    needs_tls(stack)
    stack.make_user(1)
    stack.make_event(7)
    r = stack.request("POST", "/api/events/7/participation", token=stack.token(1),
                      base=stack.tls_url)
    assert r.status == 201 and r.json["created"] is True, r.text
    assert r.headers.get("strict-transport-security") == HSTS, r.headers
    again = stack.request("GET", "/api/events/7/participation",
                          token=stack.token(1), base=stack.tls_url)
    assert again.status == 200 and again.json["ticket"] == r.json["ticket"], again.text
    # nginx's own answers carry it too (server level and error pages)
    for method, p, body, status in (("GET", "/nope", None, 404),
                                    ("POST", "/api/events/7/participation",
                                     "x" * 20000, 413)):
        r = stack.request(method, p, body=body, token=stack.token(1),
                          base=stack.tls_url)
        assert r.status == status, r.text
        assert r.headers.get("strict-transport-security") == HSTS, (p, r.headers)
    # never over plain http (RFC 6797 7.2)
    r = stack.request("GET", "/api/events")
    assert r.status == 200 and "strict-transport-security" not in r.headers


def test_hsts_on_the_503_of_error_pages_over_https(stack):
    """The error locations with add_header of their own (Retry-After) lose
    the server's add_header in nginx; they repeat the HSTS header."""
    needs_tls(stack)
    if not stack.instances:
        pytest.skip("needs a harness-started stack")
    for inst in stack.instances:
        inst.stop()               # the `clean` fixture starts them again
    r = stack.request("GET", "/api/events", base=stack.tls_url)
    assert r.status == 503 and r.json["error"] == "unavailable", r.text
    assert r.headers.get("retry-after") == "1", r.headers
    assert r.headers.get("strict-transport-security") == HSTS, r.headers


def test_snippet_locations_with_add_header_repeat_hsts():
    """Static check of the same rule for every snippet, the page's too."""
    d = os.path.join(ROOT, "nginx", "snippets")
    missing = []
    for name in sorted(os.listdir(d)):
        text = open(os.path.join(d, name)).read()
        for m in re.finditer(r"\nlocation [^{]*\{(.*?)\n\}", text, re.S):
            body = m.group(1)
            if "add_header" in body and "Strict-Transport-Security" not in body:
                missing.append("%s: %s" % (name, m.group(0).split("{")[0].strip()))
    assert not missing, missing


def _handshake(port, ctx, host="127.0.0.1"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            return s.version(), s.selected_alpn_protocol()


def _client(stack, maximum=None, minimum=None):
    ctx = stack.tls_context()
    # let the client offer what the server must refuse (Debian's OpenSSL
    # would not even try TLS 1.1 at its default security level)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def test_https_is_http2_and_tls_12_or_13_only(stack):
    needs_tls(stack)
    port = stack.tls_port
    version, alpn = _handshake(port, _client(stack))
    assert version == "TLSv1.3" and alpn == "h2", (version, alpn)
    version, alpn = _handshake(port, _client(stack, maximum=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2" and alpn == "h2", (version, alpn)
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError):
            _handshake(port, _client(stack, minimum=old, maximum=old))


# ---------------------------------------------------------------------------
# the shipped site, nginx/tickets.conf, run as it is but for ports and paths

def _render_site(stack, d, http_port, https_port, internal_port):
    with open(os.path.join(ROOT, "nginx", "tickets.conf")) as f:
        site = f.read()
    tls = stack.path("tls")
    swaps = [
        (r"\n    listen 80;", "\n    listen 127.0.0.1:%d;" % http_port),
        (r"\n    listen \[::\]:80;", ""),
        (r"\n    listen 443 ssl http2;", "\n    listen 127.0.0.1:%d ssl http2;" % https_port),
        (r"\n    listen \[::\]:443 ssl http2;", ""),
        (r"\n    listen 127\.0\.0\.1:8081;", "\n    listen 127.0.0.1:%d;" % internal_port),
        (r"/etc/letsencrypt/live/tickets\.example\.org/fullchain\.pem",
         os.path.join(tls, "nginx.pem")),
        (r"/etc/letsencrypt/live/tickets\.example\.org/privkey\.pem",
         os.path.join(tls, "nginx-key.pem")),
        (r"/var/log/nginx/", d + "/"),
        (r"server unix:/run/tickets-fcgi/app\.sock",
         "server unix:%s" % stack.instances[0].socket),
        (r"root /var/www/html;", "root %s;" % d),
    ]
    for pattern, repl in swaps:
        site, n = re.subn(pattern, repl.replace("\\", "\\\\"), site)
        assert n >= 1, "nginx/tickets.conf no longer has %r" % pattern
    with open(os.path.join(d, "tickets.conf"), "w") as f:
        f.write(site)
    shutil.copytree(os.path.join(ROOT, "nginx", "snippets"),
                    os.path.join(d, "snippets"))
    os.makedirs(os.path.join(d, "tmp"))
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""daemon off;
master_process on;
worker_processes 1;
user %(user)s %(group)s;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log info;
events { worker_connections 64; }
http {
    client_body_temp_path %(d)s/tmp;
    fastcgi_temp_path %(d)s/tmp;
    proxy_temp_path %(d)s/tmp;
    uwsgi_temp_path %(d)s/tmp;
    scgi_temp_path %(d)s/tmp;
    include tickets.conf;
}
""" % {"user": user, "group": group, "d": d})


def test_shipped_site_redirects_http_and_claims_over_https(stack, tmp_path):
    needs_tls(stack)
    if not stack.instances:
        pytest.skip("needs a harness-started stack")
    d = str(tmp_path)
    ports = [stack_mod.free_port() for _ in range(3)]
    while len(set(ports)) < 3:
        ports = [stack_mod.free_port() for _ in range(3)]
    http_port, https_port, internal_port = ports
    _render_site(stack, d, http_port, https_port, internal_port)
    cmd = ["nginx", "-p", d + "/", "-c", os.path.join(d, "nginx.conf"),
           "-e", os.path.join(d, "error.log")]
    t = subprocess.run(cmd + ["-t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert t.returncode == 0, t.stdout.decode()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), 1).close()
                break
            except OSError:
                assert proc.poll() is None, open(os.path.join(d, "error.log")).read()
                assert time.monotonic() < end, "nginx did not start"
                time.sleep(0.05)
        http_base = "http://127.0.0.1:%d" % http_port
        https_base = "https://127.0.0.1:%d" % https_port
        stack.make_user(1)
        stack.make_event(7)
        # plain HTTP: a 308 to the same path on https, nothing served
        for method in ("GET", "POST"):
            r = stack_mod.http_request(http_base, method,
                                       "/api/events/7/participation?x=1",
                                       token=stack.token(1))
            assert r.status == 308, (method, r.status, r.text)
            assert r.headers["location"] == \
                "https://tickets.example.org/api/events/7/participation?x=1", r.headers
            assert "strict-transport-security" not in r.headers
        assert stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0] == 0
        # HTTPS: the claim, with HSTS; HTTP/2 offered
        ctx = stack.tls_context()
        r = claim(stack, https_base, 1, 7, ctx)
        assert r.status == 201, r.text
        assert r.headers.get("strict-transport-security") == HSTS, r.headers
        assert _handshake(https_port, _client(stack))[1] == "h2"
        with pytest.raises(ssl.SSLError):
            _handshake(https_port, _client(stack, minimum=ssl.TLSVersion.TLSv1_1,
                                           maximum=ssl.TLSVersion.TLSv1_1))
    finally:
        stack_mod.stop_process(proc, 10, "nginx (the shipped site)")
