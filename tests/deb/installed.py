"""The installed package's app, run from its installed paths as its user
(part of tests/deb/run.sh, as root, after dpkg -i):

  - with the shipped /etc/tickets-fcgi/env and no secret yet: exit 2 and the
    first-start message naming the missing file;
  - the installed SQL (schema and grants) loads into a test MariaDB
    (tests/harness), the operator's secrets go to /etc/tickets-fcgi, and
    `tickets-fcgi --config=/etc/tickets-fcgi/env --check-config` (the
    database's socket given as a flag) says OK;
  - the app serves a claim on a socket as user tickets, and stops on SIGTERM.
"""

import grp
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness import Stack, fcgi_request, mariadb_client  # noqa: E402

APP = "/usr/bin/tickets-fcgi"
ENV = "/etc/tickets-fcgi/env"
SQL = "/usr/share/tickets-fcgi/sql"


def as_tickets(args, **kw):
    """The app as the unit runs it: user tickets, group tickets, a clean
    environment."""
    return ["setpriv", "--reuid=tickets", "--regid=tickets", "--init-groups",
            "--no-new-privs", "--", "env", "-i", "PATH=/usr/bin:/bin", APP] + args


def check(cond, what):
    if not cond:
        sys.exit("installed.py: FAILED: " + what)
    print("ok  " + what)


def main():
    r = subprocess.run(as_tickets(["--config=" + ENV, "--check-config"]),
                       capture_output=True, text=True)
    check(r.returncode == 2 and "/etc/tickets-fcgi/jwt-secret" in r.stderr
          and "first start" in r.stderr,
          "no secret yet: exit 2 and the first-start message (%s)"
          % r.stderr.strip().splitlines()[-1:])

    s = Stack(instances=1, quiet=True)
    s.start()
    try:
        os.chmod(s.dir, 0o711)                   # user tickets reaches mysql.sock
        for f in ("schema.sql", "grants.sql"):   # the installed SQL loads
            with open(os.path.join(SQL, f), "rb") as fh:
                mariadb_client(s.db_socket, fh.read(), what=f)
        gid = grp.getgrnam("tickets").gr_gid
        for name in ("jwt-secret", "db-password"):
            dst = "/etc/tickets-fcgi/" + name
            shutil.copyfile(s.path(name), dst)
            os.chown(dst, 0, gid)
            os.chmod(dst, 0o640)
        flags = ["--config=" + ENV, "--db-socket=" + s.db_socket]
        r = subprocess.run(as_tickets(flags + ["--check-config"]),
                           capture_output=True, text=True)
        check(r.returncode == 0 and "configuration OK" in r.stdout,
              "--check-config from the installed paths: %s%s"
              % (r.stdout.strip(), r.stderr.strip()))

        run = tempfile.mkdtemp(prefix="tickets-deb-run-")
        os.chmod(run, 0o777)
        sock = os.path.join(run, "app.sock")
        p = subprocess.Popen(as_tickets(flags + ["--threads=2", "--listen=unix:" + sock]),
                             stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(sock):
                check(p.poll() is None and time.monotonic() < deadline,
                      "the installed app is listening")
                time.sleep(0.05)
            s.make_user(5)
            s.make_event(9)
            h = {"Authorization": "Bearer " + s.token(5)}
            r1 = fcgi_request(sock, "POST", "/api/events/9/participation", h)
            r2 = fcgi_request(sock, "POST", "/api/events/9/participation", h)
            check((r1.status, r2.status) == (201, 200),
                  "a claim as user tickets: %s then %s" % (r1.status, r2.status))
        finally:
            p.terminate()
            rc = p.wait(30)
            shutil.rmtree(run, ignore_errors=True)
        check(rc == 0, "SIGTERM: exit %s" % rc)
    finally:
        s.stop()


if __name__ == "__main__":
    main()
