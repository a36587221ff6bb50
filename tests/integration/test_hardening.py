"""Production hardening (issue 14): what the release binary refuses to do.

- the TEST ONLY switch TICKETS_TEST_UNSAFE_NO_LOCK is refused by the release
  binary (only build/tickets-fcgi-test, the tests' build, has it);
- a JWT secret shorter than 32 bytes is refused, also by --check-config;
- TICKETS_LISTEN=unix:PATH replaces only an old socket, never another kind
  of file or what a symlink points at, and gives the socket its mode as
  bind() creates it, not by a chmod() of a path someone could swap.

The binaries are run directly next to the stack's MariaDB; every process
started is stopped by its pid.
"""

import os
import signal
import socket
import stat
import subprocess
import time

import pytest

import harness as stack_mod  # tests/harness/, on sys.path via conftest

UNSAFE = "TICKETS_TEST_UNSAFE_NO_LOCK"


def needs_harness(stack):
    if getattr(stack, "attached", False) or not getattr(stack, "instances", None):
        pytest.skip("needs a harness-started stack")


def app_env(stack, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_")}
    env.update({"TICKETS_DB_SOCKET": stack.db_socket,
                "TICKETS_DB_PASSWORD_FILE": stack.path("db-password"),
                "TICKETS_JWT_SECRET_FILE": stack.secret_file,
                "TICKETS_THREADS": "2", "TICKETS_LOCK_TIMEOUT": "1"})
    env.update(extra)
    return env


def run(binary, args, env, timeout=30):
    return subprocess.run([binary] + args, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


# ---------------------------------------------------------------------------
# the TEST ONLY switch

def test_release_binary_refuses_the_unsafe_switch(stack, tmp_path):
    """Environment, config file or flag: exit 2, a message naming the
    switch, nothing started; =0 stays harmless; --help does not list it."""
    needs_harness(stack)
    env = app_env(stack)
    conf = tmp_path / "tickets.env"
    conf.write_text("%s=1\n" % UNSAFE)
    for args, extra in (([], {UNSAFE: "1"}),
                        (["--check-config"], {UNSAFE: "1"}),
                        (["--config", str(conf), "--check-config"], {}),
                        (["--test-unsafe-no-lock", "--check-config"], {})):
        r = run(stack.app_bin, args, dict(env, **extra))
        assert r.returncode == 2, (args, extra, r)
        assert (UNSAFE + "=1 is refused").encode() in r.stderr, r.stderr
        assert b"configuration OK" not in r.stdout
    r = run(stack.app_bin, ["--check-config"], dict(env, **{UNSAFE: "0"}))
    assert r.returncode == 0, r
    r = run(stack.app_bin, ["--help"], env)
    assert r.returncode == 0 and UNSAFE.encode() not in r.stdout, r.stdout


def test_test_build_still_has_the_switch(stack):
    """The control: the tests' build accepts it (and says so in --help)."""
    needs_harness(stack)
    test_bin = stack_mod.build_for_tests(stack.app_bin)
    if not os.access(test_bin, os.X_OK):
        pytest.skip("%s not built (make test-build)" % test_bin)
    r = run(test_bin, ["--check-config"], app_env(stack, **{UNSAFE: "1"}))
    assert r.returncode == 0, r
    assert UNSAFE.encode() in run(test_bin, ["--help"], app_env(stack)).stdout


# ---------------------------------------------------------------------------
# the JWT secret

@pytest.mark.parametrize("length, ok", [(1, False), (31, False), (32, True),
                                        (64, True)])
def test_jwt_secret_shorter_than_32_bytes_is_refused(stack, tmp_path, length, ok):
    needs_harness(stack)
    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * length + b"\n")   # the newline is not counted
    env = app_env(stack, TICKETS_JWT_SECRET_FILE=str(secret),
                  TICKETS_LISTEN="unix:%s" % (tmp_path / "a.sock"))
    r = run(stack.app_bin, ["--check-config"], env)
    if ok:
        assert r.returncode == 0, r
        return
    assert r.returncode == 2, r
    assert (b"is %d bytes" % length) in r.stderr and b"at least 32" in r.stderr, r
    # and the server itself does not start either
    r = run(stack.app_bin, [], env, timeout=15)
    assert r.returncode == 2 and b"at least 32" in r.stderr, r
    assert not (tmp_path / "a.sock").exists()


# ---------------------------------------------------------------------------
# the socket file

def start(stack, binary, listen, log, **extra):
    with open(log, "wb") as f:
        return subprocess.Popen([binary], env=app_env(stack, TICKETS_LISTEN=listen,
                                                      **extra),
                                stdin=subprocess.DEVNULL, stdout=f, stderr=f)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_socket(path, proc, timeout=20):
    end = time.monotonic() + timeout
    while True:
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(path)
                    return
                except OSError:
                    pass
                finally:
                    s.close()
        except FileNotFoundError:
            pass
        assert proc.poll() is None, "the app exited with %s" % proc.returncode
        assert time.monotonic() < end, "no socket at %s" % path
        time.sleep(0.02)


@pytest.mark.parametrize("kind", ["regular_file", "symlink", "directory"])
def test_listen_unix_removes_nothing_but_an_old_socket(stack, tmp_path, kind):
    """Old code: unlink(path) whatever it was, then bind there."""
    needs_harness(stack)
    path = tmp_path / "app.sock"
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    if kind == "regular_file":
        path.write_text("keep me\n")
    elif kind == "symlink":
        path.symlink_to(victim)
    else:
        path.mkdir()
    r = run(stack.app_bin, [], app_env(stack, TICKETS_LISTEN="unix:%s" % path),
            timeout=15)
    assert r.returncode == 2, r
    assert b"not a socket" in r.stderr, r.stderr
    assert victim.read_text() == "keep me\n"
    if kind == "regular_file":
        assert path.read_text() == "keep me\n"
    elif kind == "symlink":
        assert os.path.islink(path) and os.readlink(path) == str(victim)
    else:
        assert path.is_dir()


def test_listen_unix_replaces_a_stale_socket(stack, tmp_path):
    needs_harness(stack)
    path = str(tmp_path / "app.sock")
    old = socket.socket(socket.AF_UNIX)
    old.bind(path)
    old.close()                      # a socket file nobody serves any more
    proc = start(stack, stack.app_bin, "unix:" + path, tmp_path / "app.log")
    try:
        wait_socket(path, proc)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        assert stop(proc) == 0


SWAP_SHIM = r"""
/* After the app's bind() of the socket, an "attacker" puts a symlink to a
 * victim file in its place: what the app then does by path hits the victim. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    int (*real)(int, const struct sockaddr *, socklen_t) =
        (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    const char *victim = getenv("SHIM_VICTIM");
    int rc = real(fd, sa, len);

    if (rc == 0 && victim && sa->sa_family == AF_UNIX) {
        const char *path = ((const struct sockaddr_un *)sa)->sun_path;
        char moved[200];

        snprintf(moved, sizeof(moved), "%s.moved", path);
        if (rename(path, moved) == 0)
            symlink(victim, path);
    }
    return rc;
}
"""


def sanitized(binary):
    with open(binary, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data


def test_socket_mode_is_not_set_through_a_swappable_path(stack, tmp_path):
    """The path is swapped for a symlink to a 0600 file right after bind()
    (an LD_PRELOAD shim plays the attacker).  The old code then ran
    chmod(path, 0660) and made the victim group-readable and -writable."""
    needs_harness(stack)
    if sanitized(stack.app_bin):
        pytest.skip("a sanitizer runtime must come first in LD_PRELOAD")
    cc = os.environ.get("CC", "cc")
    src, shim = tmp_path / "swap.c", tmp_path / "swap.so"
    src.write_text(SWAP_SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(shim), str(src), "-ldl"],
                   check=True)
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    os.chmod(victim, 0o600)
    path = str(tmp_path / "app.sock")
    proc = start(stack, stack.app_bin, "unix:" + path, tmp_path / "app.log",
                 LD_PRELOAD=str(shim), SHIM_VICTIM=str(victim))
    try:
        end = time.monotonic() + 20
        while not os.path.exists(path + ".moved"):
            assert proc.poll() is None or os.path.exists(path + ".moved"), \
                (tmp_path / "app.log").read_text()
            assert time.monotonic() < end, "the shim did not run"
            time.sleep(0.02)
        time.sleep(0.5)              # the old code's chmod came right after
        assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600
        # the socket itself got its mode when it was made
        assert stat.S_IMODE(os.lstat(path + ".moved").st_mode) == 0o660
    finally:
        stop(proc)
