"""Issue 3, rows 9 and 11: the fuzz targets' seed corpus and kept crashes
replayed (with any C compiler, ASan+UBSan), and a short Valgrind memcheck
run of the app: no memory error, no leak of our own."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from faultlib import SLOW, record, raw_exchange
from harness import request_bytes, stdout_status

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_row9_fuzz_corpus_and_regressions_replay(stack, tmp_path):
    """fuzz/run.sh replay: both targets over fuzz/corpus and
    fuzz/regressions, built with ASan+UBSan; any crash fails."""
    if not shutil.which(os.environ.get("CC", "cc")):
        pytest.skip("no C compiler")
    env = dict(os.environ, FUZZ_OUT=str(tmp_path))
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(ROOT, "fuzz", "run.sh"), "replay"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out[-3000:]
    counts = dict((m.group(1), int(m.group(2))) for m in re.finditer(
        r"replay-(\w+): replayed (\d+) inputs", out))
    assert set(counts) == {"auth", "request"} and all(counts.values()), out
    record("9 fuzzing", replayed_inputs=str(sorted(counts.items())),
           replay_s=time.monotonic() - t0)


# ---------------------------------------------------------------------------
# valgrind

OURS = re.compile(r"\((?:main|config|server|http|routes|auth|inflight|tickets|db|"
                  r"metrics|log|util)\.c:\d+\)")


def _loss_records(text):
    """[(kind, bytes, stack text)] of the definitely/indirectly lost records."""
    out = []
    blocks = re.split(r"\n(?===\d+== \n)", text)
    for b in blocks:
        m = re.search(r"([\d,]+) (?:\([\d,]+ direct, [\d,]+ indirect\) )?bytes in "
                      r"[\d,]+ blocks are (definitely|indirectly|possibly) lost", b)
        if m:
            out.append((m.group(2), int(m.group(1).replace(",", "")), b))
    return out


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed")
def test_row11_valgrind_memcheck_short_run(stack, tmp_path):
    """The app under valgrind --tool=memcheck, two threads: a claim (201),
    its repeat (200), a read, the events, health, a 401, a 400, a 404, a 405,
    a 413, a busy claim, a request cut short; then SIGTERM. No memory error
    in any thread, exit 0, and no definitely or indirectly lost block
    allocated by our code (libraries' own one-off allocations aside)."""
    b = stack.app_bin
    if "address" in b or "thread" in b or "undefined" in b or SLOW > 1:
        pytest.skip("valgrind needs a build without sanitizers")
    stack.make_user(42)
    stack.make_user(43)
    stack.make_event(7)
    sock = str(tmp_path / "vg.sock")
    log = str(tmp_path / "valgrind.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_")}
    env.update({"TICKETS_DB_SOCKET": stack.db_socket, "TICKETS_DB_USER": "tickets",
                "TICKETS_DB_PASSWORD_FILE": stack.path("db-password"),
                "TICKETS_DB_NAME": "tickets", "TICKETS_JWT_SECRET_FILE": stack.secret_file,
                "TICKETS_THREADS": "2", "TICKETS_LOCK_TIMEOUT": "0.5",
                "TICKETS_LISTEN": "unix:" + sock})
    out = open(str(tmp_path / "app.log"), "wb")
    proc = subprocess.Popen(
        ["valgrind", "--tool=memcheck", "--leak-check=full",
         "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=none",
         "--num-callers=30", "--log-file=" + log, b],
        env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    holder = stack.db()
    t0 = time.monotonic()
    try:
        end = time.monotonic() + 60
        while True:
            assert proc.poll() is None, open(log).read()[-3000:]
            if os.path.exists(sock):
                got, _ = raw_exchange(sock, request_bytes("GET", "/api/health"), timeout=20)
                if stdout_status(got) == 200:
                    break
            assert time.monotonic() < end, "the app did not start under valgrind"
            time.sleep(0.2)
        tok = {"Authorization": "Bearer " + stack.token(42)}
        p = "/api/events/7/participation"
        cur = holder.cursor()
        cur.execute("SELECT GET_LOCK('tickets:user:43', 0)")
        cases = [
            ("POST", p, tok, b"", 201), ("POST", p, tok, b"{}", 200),
            ("GET", p, tok, b"", 200), ("GET", "/api/events", {}, b"", 200),
            ("GET", "/api/health", {}, b"", 200), ("GET", "/metrics", {}, b"", 200),
            ("POST", p, {"Authorization": "Bearer x.y.z"}, b"", 401),
            ("POST", "/api/events/0/participation", tok, b"", 400),
            ("POST", p, tok, b"{bad", 400), ("GET", "/nope", {}, b"", 404),
            ("PUT", p, tok, b"", 405), ("POST", p, tok, b"[" + b" " * 5000 + b"]", 413),
            ("POST", p, {"Authorization": "Bearer " + stack.token(43)}, b"", 503),
        ]
        for method, path, hdrs, body, want in cases:
            got, _ = raw_exchange(sock, request_bytes(method, path, hdrs, body), timeout=30)
            assert stdout_status(got) == want, (method, path, want, got[:300])
        data = request_bytes("POST", p, tok, b"{}")
        raw_exchange(sock, data[:len(data) - 8], timeout=5, close_write=True)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
    took = time.monotonic() - t0
    text = open(log).read()
    assert rc == 0, text[-3000:]
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    assert m, text[-2000:]
    errors = int(m.group(1))
    losses = _loss_records(text)
    ours = [(k, n) for k, n, st in losses if OURS.search(st) and k != "possibly"]
    definite = sum(n for k, n, _ in losses if k == "definitely")
    record("11 sanitizers", valgrind_errors=errors,
           valgrind_definitely_lost_bytes_all=definite,
           valgrind_lost_records_of_ours=len(ours), valgrind_run_s=took)
    assert errors == 0, re.findall(r"==\d+== (?:Invalid|Conditional|Use of|Syscall).*",
                                   text)[:10]
    assert not ours, [st for k, n, st in losses if OURS.search(st)][:3]
