"""TLS between the app and MySQL (issue 14): TICKETS_DB_TLS_CA, _CERT, _KEY
and _VERIFY against a private MariaDB that listens on 127.0.0.1 with a
certificate of a throw-away CA (made by openssl in tests/harness) and
require_secure_transport=ON.

- the right CA: the app connects, claims work through nginx, and the
  server sees a cipher on every app session (performance_schema);
- a CA that did not sign the server's certificate: refused, with an error
  that names TICKETS_DB_TLS_CA;
- no TLS settings: the server refuses the app;
- a client certificate for an account that REQUIRE X509: accepted with
  TICKETS_DB_TLS_CERT/_KEY, refused without.
"""

import os
import subprocess
import sys

import pymysql
import pytest

import harness as stack_mod  # tests/harness/, on sys.path via conftest


@pytest.fixture(scope="module")
def tls_stack(stack):
    """A second stack of its own, its database over TCP with TLS only."""
    if getattr(stack, "attached", False):
        pytest.skip("needs a harness-started stack")
    s = stack_mod.Stack(app_bin=stack.app_bin, instances=1, db_tls=True,
                        quiet=True)
    try:
        s.start()
    except stack_mod.StackError as e:
        pytest.fail("cannot start the TLS stack: %s" % e)
    yield s
    crashed, found = s.end_session(False)
    assert not crashed and not found, (crashed, found)


def app_env(s, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_")}
    env.update({"TICKETS_DB_HOST": "127.0.0.1", "TICKETS_DB_PORT": str(s.db_port),
                "TICKETS_DB_PASSWORD_FILE": s.path("db-password"),
                "TICKETS_JWT_SECRET_FILE": s.secret_file,
                "TICKETS_DB_TIMEOUT": "5"})
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def check_config(s, **extra):
    return subprocess.run([s.app_bin, "--check-config"], env=app_env(s, **extra),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)


def app_session_ciphers(s):
    """Ssl_cipher of every session of the account tickets, as the server
    sees it."""
    return [r[0] for r in s.sql(
        "SELECT sbt.VARIABLE_VALUE FROM performance_schema.threads t "
        "JOIN performance_schema.status_by_thread sbt USING (THREAD_ID) "
        "WHERE t.PROCESSLIST_USER = 'tickets' AND sbt.VARIABLE_NAME = 'Ssl_cipher'")]


def test_right_ca_connects_over_tls(tls_stack):
    s = tls_stack
    s.reset_tables()
    s.make_user(1)
    s.make_event(7)
    r = s.request("POST", "/api/events/7/participation", token=s.token(1))
    assert r.status == 201, r.text
    r = s.request("GET", "/api/events/7/participation", token=s.token(1))
    assert r.status == 200, r.text
    ciphers = app_session_ciphers(s)
    assert ciphers and all(ciphers), ciphers     # every session: a cipher
    r = check_config(s, TICKETS_DB_TLS_CA=s.path("tls", "db-ca.pem"))
    assert r.returncode == 0, r
    assert b"over TLS, cipher " in r.stdout, r.stdout
    # the same setting as a config-file key and as a flag
    conf = os.path.join(s.dir, "tls.env")
    with open(conf, "w") as f:
        f.write("TICKETS_DB_TLS_CA=%s\n" % s.path("tls", "db-ca.pem"))
    for args in (["--config", conf], ["--db-tls-ca=" + s.path("tls", "db-ca.pem")]):
        r = subprocess.run([s.app_bin, "--check-config"] + args, env=app_env(s),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        assert r.returncode == 0 and b"over TLS, cipher " in r.stdout, (args, r)
    sys.stderr.write("app sessions' Ssl_cipher: %s\n" % sorted(set(ciphers)))


def test_wrong_ca_is_refused_naming_the_setting(tls_stack, tmp_path):
    s = tls_stack
    other = stack_mod.make_ca(str(tmp_path), "other-ca", "someone else's CA")
    r = check_config(s, TICKETS_DB_TLS_CA=other)
    assert r.returncode == 1, r
    err = r.stderr.decode()
    assert "over TLS" in err and "TICKETS_DB_TLS_CA=%s" % other in err, err
    assert "certificate" in err.lower(), err
    # verification off: encrypted, nothing checked (the CA file unused)
    r = check_config(s, TICKETS_DB_TLS_CA=other, TICKETS_DB_TLS_VERIFY="0")
    assert r.returncode == 0 and b"over TLS" in r.stdout, r


def test_verify_checks_the_host_name(tls_stack):
    """A certificate of the right CA, but for another name: refused while
    verifying (libmariadb checks the name too), accepted with
    TICKETS_DB_TLS_VERIFY=0.  The server's files are swapped and reloaded
    with FLUSH SSL, then put back."""
    s = tls_stack
    tls = s.path("tls")
    ca = os.path.join(tls, "db-ca.pem")
    live = [os.path.join(tls, n) for n in ("db-server.pem", "db-server-key.pem")]
    saved = [open(p, "rb").read() for p in live]
    wrong = stack_mod.make_cert(tls, "db-wrong-name", "db.example.org", ca,
                                san="DNS:db.example.org")
    try:
        for src, dst in zip(wrong, live):
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read())
        s.sql("FLUSH SSL")
        r = check_config(s, TICKETS_DB_TLS_CA=ca)
        assert r.returncode == 1, r
        assert b"TICKETS_DB_TLS_CA=" in r.stderr, r.stderr
        sys.stderr.write("name mismatch: %s\n" % r.stderr.decode().strip())
        r = check_config(s, TICKETS_DB_TLS_CA=ca, TICKETS_DB_TLS_VERIFY="0")
        assert r.returncode == 0, r
    finally:
        for data, dst in zip(saved, live):
            with open(dst, "wb") as g:
                g.write(data)
        s.sql("FLUSH SSL")
    r = check_config(s, TICKETS_DB_TLS_CA=ca)
    assert r.returncode == 0, r


def test_no_tls_is_refused_by_the_server(tls_stack):
    s = tls_stack
    r = check_config(s)
    assert r.returncode == 1, r
    # MariaDB 10.11 says "Access denied" to a clear-text session under
    # require_secure_transport; the control shows that this is the cause
    assert b"Access denied for user 'tickets'" in r.stderr, r.stderr
    s.sql("SET GLOBAL require_secure_transport = OFF")
    try:
        r = check_config(s)
        assert r.returncode == 0 and b"without TLS" in r.stdout, r
    finally:
        s.sql("SET GLOBAL require_secure_transport = ON")


def test_client_certificate(tls_stack, tmp_path):
    """An account that REQUIRE X509: the app's certificate and key get it in."""
    s = tls_stack
    tls = s.path("tls")
    cert, key = stack_mod.make_cert(tls, "db-client", "tickets-app",
                                    os.path.join(tls, "db-ca.pem"), client=True)
    with open(s.path("db-password")) as f:
        password = f.read().strip()
    conn = s.db()
    try:
        conn.cursor().execute("CREATE OR REPLACE USER 'tickets_x509'@'127.0.0.1' "
                              "IDENTIFIED BY %s REQUIRE X509", [password])
    finally:
        conn.close()
    with open(os.path.join(stack_mod.ROOT, "sql", "grants.sql")) as f:
        grants = f.read().replace("'tickets'@'localhost'", "'tickets_x509'@'127.0.0.1'")
    stack_mod.mariadb_client(s.db_socket, grants.encode())
    ca = os.path.join(tls, "db-ca.pem")
    r = check_config(s, TICKETS_DB_USER="tickets_x509", TICKETS_DB_TLS_CA=ca)
    assert r.returncode == 1, r            # no certificate: access denied
    r = check_config(s, TICKETS_DB_USER="tickets_x509", TICKETS_DB_TLS_CA=ca,
                     TICKETS_DB_TLS_CERT=cert)
    assert r.returncode == 2 and b"go together" in r.stderr, r
    r = check_config(s, TICKETS_DB_USER="tickets_x509", TICKETS_DB_TLS_CA=ca,
                     TICKETS_DB_TLS_CERT=cert, TICKETS_DB_TLS_KEY=key)
    assert r.returncode == 0 and b"over TLS" in r.stdout, r
