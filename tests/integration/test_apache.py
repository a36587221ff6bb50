"""Apache httpd 2.4 in front (Debian's apache2, mod_proxy_fcgi with
`enablereuse=on`, which keeps its FastCGI connections open and sets
FCGI_KEEP_CONN): the configuration of docs/FRONTS.md, really run.

Against the thread-per-connection server this replaced, Apache answered
503 (AH01075) for claims whose kept connection the app had closed, and its
pool of reused connections pinned every worker thread.
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from helpers import path, rows
from fixtures import own_stack
from harness import free_port, wait_for, http_request
from test_concurrency import fire

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"

# The site as docs/FRONTS.md shows it; @...@ are filled in below.
SITE = """
ServerRoot "@DIR@"
ServerName localhost
Listen 127.0.0.1:@PORT@
PidFile "@DIR@/apache.pid"
ErrorLog "@DIR@/apache-error.log"
LogLevel warn proxy_fcgi:info
DefaultRuntimeDir "@DIR@"
Mutex posixsem
User www-data
Group www-data
LoadModule mpm_event_module @MODULES@/mod_mpm_event.so
LoadModule authz_core_module @MODULES@/mod_authz_core.so
LoadModule proxy_module @MODULES@/mod_proxy.so
LoadModule proxy_fcgi_module @MODULES@/mod_proxy_fcgi.so

# -- from here on, as in docs/FRONTS.md
ProxyPass "/api/" "fcgi://127.0.0.1:@APP_PORT@/api/" enablereuse=on
<Location "/api/">
    # without it Apache keeps the Authorization header from the app
    CGIPassAuth On
</Location>
"""


@pytest.fixture(scope="module")
def apache_stack():
    """One app instance on TCP (Apache's children run as www-data, which
    cannot reach the private stack directory), Apache in front of it."""
    if not os.access(APACHE, os.X_OK):
        pytest.fail("apache2 is missing: scripts/install-deps.sh installs it")
    stacks = own_stack(instances=1, tcp=True)
    s = next(stacks)
    port = free_port()
    conf = SITE
    for k, v in {"DIR": s.dir, "PORT": str(port), "MODULES": MODULES,
                 "APP_PORT": str(s.instances[0].socket[1])}.items():
        conf = conf.replace("@%s@" % k, v)
    with open(s.path("apache.conf"), "w") as f:
        f.write(conf)
    log = open(s.path("apache-run.log"), "wb")
    proc = subprocess.Popen([APACHE, "-f", s.path("apache.conf"),
                             "-DFOREGROUND"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    s.apache_url = "http://127.0.0.1:%d" % port

    def up():
        return http_request(s.apache_url, "GET", "/api/events",
                            timeout=2).status == 200
    try:
        wait_for("apache", up, 20, proc, s.path("apache-error.log"))
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        next(stacks, None)  # stops it, and checks its logs


class Via(object):
    """The stack, as fire() sees it, but reached through Apache."""

    def __init__(self, stack):
        self.url = stack.apache_url


def test_storm_of_one_users_claims_through_apache(apache_stack):
    st = apache_stack
    st.reset_tables()
    for rnd in range(3):
        user, event = 600 + rnd, 80 + rnd
        st.make_user(user)
        st.make_event(event)
        tok = st.token(user, exp_delta=300 + rnd)
        results = fire(Via(st), [("POST", path(event), tok)] * 200,
                       threads=200)
        made_up = [(r.status, r.error) for r in results
                   if r.status is None or r.json is None]
        assert made_up == [], "round %d: answers Apache made up" % rnd
        statuses = sorted(r.status for r in results)
        assert statuses.count(201) == 1 and set(statuses) == {200, 201}, \
            statuses
        assert rows(st, user, event) == 1
    assert st.invariant_problems() == []


def test_more_clients_than_threads_through_apache(apache_stack):
    """Apache's children keep a pool of reused connections each, many more
    than the instance's 8 threads."""
    st = apache_stack
    st.reset_tables()
    st.make_event(7)
    answers, slowest = [], [0.0]
    lock = threading.Lock()

    def client():
        for _ in range(10):
            t0 = time.monotonic()
            try:
                a = http_request(st.apache_url, "GET", "/api/events",
                                 timeout=10).status
            except OSError as e:
                a = repr(e)
            with lock:
                answers.append(a)
                slowest[0] = max(slowest[0], time.monotonic() - t0)

    ts = [threading.Thread(target=client, daemon=True) for _ in range(48)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert answers.count(200) == 480, sorted(set(map(str, answers)))
    assert slowest[0] < 8, slowest


def test_the_bearer_token_reaches_the_app(apache_stack):
    st = apache_stack
    st.reset_tables()
    st.make_user(42)
    st.make_event(7)
    r = http_request(st.apache_url, "POST", path(7), token=st.token(42))
    assert r.status == 201, (r.status, r.text)
    r = http_request(st.apache_url, "POST", path(7))
    assert r.status == 401 and r.json["error"] == "unauthorized"
