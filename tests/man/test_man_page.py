"""tickets-fcgi(8) against the binary: the man page renders without a
warning, has the sections an operator looks for, and lists exactly the
settings `tickets-fcgi --help` lists, with the same flag, environment
variable (= config file key) and default.

    TICKETS_BIN=build/tickets-fcgi TICKETS_MAN=build/tickets-fcgi.8 \\
        python3 -m pytest tests/man                   (make test-man)
    TICKETS_BIN=/usr/bin/tickets-fcgi \\
        TICKETS_MAN=/usr/share/man/man8/tickets-fcgi.8.gz ...   (make test-deb)
"""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("TICKETS_BIN") or os.path.join(ROOT, "build", "tickets-fcgi")
MAN = os.environ.get("TICKETS_MAN") or os.path.join(ROOT, "build", "tickets-fcgi.8")

pytestmark = pytest.mark.skipif(not shutil.which("man"), reason="man-db not installed")


def render(*extra):
    env = dict(os.environ, LC_ALL="C", MANWIDTH="200")
    env.pop("MANPAGER", None)
    return subprocess.run(["man", "-P", "cat"] + list(extra) + ["-l", MAN], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)


def help_settings():
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        m = re.match(r"^  --(\S+)\s+(TICKETS_[A-Z0-9_]+)\s+.*?(?: \[default: (.*)\])?$", line)
        if m:
            found.add((m.group(1), m.group(2), m.group(3)))
    return found


def man_settings(text):
    """(flag, env, default) of each entry of the SETTINGS section:
    '--flag[=METAVAR], TICKETS_X' then the help, then 'Default: x.'"""
    section = text.split("\nSETTINGS\n", 1)[1].split("\nSIGNALS\n", 1)[0]
    found = set()
    for m in re.finditer(r"^\s+--([a-z0-9-]+)(?:=[A-Z]+)?, (TICKETS_[A-Z0-9_]+)\n"
                         r"(.*?)^\s+Default: ([^\n]*)\.$", section, re.M | re.S):
        default = None if m.group(4) == "unset" else m.group(4)
        found.add((m.group(1), m.group(2), default))
    return found


def test_man_page_renders_without_warnings():
    assert os.path.exists(MAN), "no man page at %s (make man)" % MAN
    r = render("--warnings")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "SETTINGS", "SIGNALS",
                    "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"):
        assert re.search(r"^%s$" % section, r.stdout, re.M), section


def test_man_page_lists_every_setting_of_help():
    text = render().stdout
    from_help, from_man = help_settings(), man_settings(text)
    assert len(from_help) >= 10, from_help     # the parser still reads --help
    assert from_man == from_help, (
        "only in --help: %s\nonly in the man page: %s"
        % (sorted(from_help - from_man), sorted(from_man - from_help)))


def test_man_page_version_is_the_binary_s():
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    assert re.search(r"tickets-fcgi %s\s" % re.escape(version), render().stdout)
