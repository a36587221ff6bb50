"""Processes of the harness: where the checkout and the binary are, the
harness's errors, ports, private files, starting a child so that it dies
with the harness, stopping it by pid, waiting until something is ready.

Standard library only."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BIN = os.path.join(ROOT, "build", "tickets-fcgi")


def build_for_tests(app_bin):
    """The test build beside a release binary (TICKETS_TEST_BIN, else
    <app_bin>-test, as make builds it): the only one that accepts the TEST
    ONLY switches such as TICKETS_TEST_UNSAFE_NO_LOCK."""
    return os.path.abspath(os.environ.get("TICKETS_TEST_BIN")
                           or app_bin + "-test")


# Lines in an app's stderr that fail a test run (ASan, UBSan, TSan, LSan).
SANITIZER_MARKS = ("runtime error", "Sanitizer")


class StackError(RuntimeError):
    """The stack could not be started, or a part of it failed."""
    fatal = False   # waiting longer will not help


class MalformedResponse(StackError):
    """The app answered, but not in a form nginx accepts."""
    fatal = True


def overlay(base, changes, drop=None):
    """A copy of the dict base with changes made: a change whose value is
    `drop` (default None) removes that key (an environment without a
    variable, a token without a claim)."""
    out = dict(base)
    for k, v in changes.items():
        if v is drop:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def write_private(path, text):
    """Write a file only its owner can read (passwords, secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)



def tail_file(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read: %s)" % e
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



def children(pid):
    """Direct children of pid (nginx workers of a master)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def is_nginx_worker(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().startswith(b"nginx: worker")
    except OSError:
        return False


def guarded(cmd):
    """cmd, run so that it gets SIGTERM if the harness dies without stopping
    it (pytest killed by a timeout, say), instead of living on. The kernel
    ties this to the thread that starts the process, so only from the main
    thread; setpriv (util-linux) execs cmd in place, the pid stays the same."""
    if (threading.current_thread() is threading.main_thread()
            and shutil.which("setpriv")):
        return ["setpriv", "--pdeathsig", "TERM", "--"] + list(cmd)
    return list(cmd)


def stop_process(proc, timeout, name=""):
    """SIGTERM, wait up to timeout seconds, then SIGKILL. Returns the exit
    status. proc is a subprocess.Popen of ours."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            sys.stderr.write("stack: %s (pid %d) ignored SIGTERM for %.0f s; "
                             "killing it\n" % (name, proc.pid, timeout))
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(what, check, timeout, proc=None, log=None, interval=0.02):
    """Poll check() until it returns a true value; fail early when proc dies."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - kept for the message
            if getattr(e, "fatal", False):
                raise
            last_error = e
        if proc is not None and proc.poll() is not None:
            raise StackError("%s: the process exited with status %s%s" % (
                what, proc.returncode,
                ("; last lines of %s:\n%s" % (log, tail_file(log))) if log else ""))
        if time.monotonic() > deadline:
            raise StackError("%s: not ready after %.0f s (%s)%s" % (
                what, timeout, last_error,
                ("; last lines of %s:\n%s" % (log, tail_file(log))) if log else ""))
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)

