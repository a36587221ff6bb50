"""Issue 3, row 8: raw FastCGI to an app instance's socket, bypassing
nginx. Whatever arrives, the process keeps running with all its worker
threads, holds no named lock, writes nothing for a request that was not
complete, and keeps serving. The one input libfcgi itself dies on (a
PARAMS record whose lengths add up past 2^31, Debian's 2.4.2) kills the
process: the supervisor restarts it and nothing is lost."""

import os
import signal
import struct
import time

import pytest

from faultlib import (SLOW, Storm, all_workers_serve,
                      assert_truthful, check_claims_against_db, raw_exchange,
                      record, wait_no_locks)
from harness import (FCGI_ABORT_REQUEST, FCGI_BEGIN_REQUEST, FCGI_GET_VALUES,
                     FCGI_PARAMS, FCGI_STDIN, begin_bytes, claim_path,
                     length_bytes, pair_bytes, record_bytes, request_bytes,
                     stdout_status)

THREADS = 8


def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))


@pytest.fixture
def target(stack):
    """Instance 0 with user 42 and event 7; after the test: the same
    process, the same number of threads, every worker serving, no lock,
    no ticket."""
    inst = stack.instances[0]
    stack.make_users([42] + list(range(20000, 20000 + THREADS)))
    stack.make_event(7)
    pid = inst.pid
    n = threads_of(pid)
    yield inst
    assert inst.pid == pid and inst.running(), "the instance died"
    assert threads_of(pid) == n, "threads: %d before, %d after" % (n, threads_of(pid))
    seen, answers = all_workers_serve(stack, inst, THREADS,
                                      range(20000, 20000 + THREADS), 7,
                                      timeout=10 * SLOW)
    assert seen == THREADS, (seen, answers)
    assert wait_no_locks(stack, 2.0) == []


def claim_request(stack, user=42, event=7, body=b'{"note": "x"}'):
    return request_bytes("POST", claim_path(event),
                         headers={"Authorization": "Bearer " + stack.token(user),
                                  "Content-Type": "application/json"},
                         body=body)


def tickets(stack):
    return stack.sql("SELECT COUNT(*) FROM free_tickets")[0][0]


def test_row8_connection_closed_at_every_byte_offset(stack, target):
    """A claim request cut at every byte offset (the peer closes): never a
    ticket for an incomplete request, never a crash or a lost thread."""
    data = claim_request(stack)
    t0 = time.monotonic()
    ends = {}
    for k in range(len(data)):
        _, how = raw_exchange(target.socket, data[:k], timeout=5 * SLOW,
                              close_write=True)
        ends[how] = ends.get(how, 0) + 1
    took = time.monotonic() - t0
    assert "timeout" not in ends, ends
    assert tickets(stack) == 0, "a ticket was created from a request cut short"
    # the whole request is served
    got, how = raw_exchange(target.socket, data, timeout=10 * SLOW)
    assert stdout_status(got) == 201, got[:300]
    record("8 raw fastcgi", cut_offsets=len(data), cut_sweep_s=took,
           cut_tickets_written=0)


def test_row8_closed_before_reading_the_answer(stack, target):
    """A complete request whose peer goes away at once (nginx's client
    abort): the claim is carried out, the answer is lost, the retry is
    200 with that ticket."""
    data = claim_request(stack)
    _, how = raw_exchange(target.socket, data, timeout=0.001)
    end = time.monotonic() + 5 * SLOW
    while tickets(stack) == 0 and time.monotonic() < end:
        time.sleep(0.02)
    assert tickets(stack) == 1
    got, _ = raw_exchange(target.socket, data, timeout=10 * SLOW)
    assert stdout_status(got) == 200, got[:300]


def _first_record_of(data, rtype):
    """Offset of the first record of type rtype in a record stream."""
    off = 0
    while off + 8 <= len(data):
        _, t, _, clen, plen = struct.unpack("!BBHHBx", data[off:off + 8])
        if t == rtype:
            return off
        off += 8 + clen + plen
    raise ValueError("no record of type %d" % rtype)


def _params(pairs_bytes, rid=1):
    return record_bytes(FCGI_PARAMS, pairs_bytes, rid)


HOSTILE = {
    "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4,
    "short_header": b"\x01\x01\x00",
    "begin_cut": begin_bytes()[:12],
    "wrong_version": record_bytes(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", 1, 0),
                                  version=2) + _params(b"") + record_bytes(FCGI_STDIN, b""),
    "unknown_role": begin_bytes(role=99) + _params(b"") + record_bytes(FCGI_STDIN, b""),
    "params_before_begin": _params(pair_bytes("A", "B")),
    "lying_name_length": begin_bytes() + _params(length_bytes(1000) + length_bytes(1) + b"ab")
    + _params(b"") + record_bytes(FCGI_STDIN, b""),
    "lying_value_length": begin_bytes() + _params(length_bytes(1) + length_bytes(60000) + b"ab")
    + _params(b"") + record_bytes(FCGI_STDIN, b""),
    "length_0x7fffffff": begin_bytes() + _params(length_bytes(0x7fffffff) + length_bytes(1)
                                                 + b"ab") + _params(b""),
    "record_longer_than_sent": begin_bytes() + struct.pack("!BBHHBx", 1, FCGI_PARAMS, 1,
                                                           65535, 0) + b"x" * 100,
    "padding_lie": begin_bytes() + record_bytes(FCGI_PARAMS, pair_bytes("A", "B"), pad=255),
    "second_begin_other_id": begin_bytes(1) + begin_bytes(2) + _params(b"") +
    record_bytes(FCGI_STDIN, b""),
    "get_values": record_bytes(FCGI_GET_VALUES, pair_bytes("FCGI_MAX_CONNS", "")
                               + pair_bytes("FCGI_MPXS_CONNS", ""), rid=0),
    "unknown_type": record_bytes(42, b"hello", rid=0),
    "abort_before_params": begin_bytes() + record_bytes(FCGI_ABORT_REQUEST, b""),
    "stdin_without_params_end": begin_bytes() + _params(pair_bytes("REQUEST_METHOD", "GET"))
    + record_bytes(FCGI_STDIN, b""),
    "nul_in_names": begin_bytes() + _params(pair_bytes("DOCUMENT_URI\0X", "/api/health\0")
                                            + pair_bytes("REQUEST_METHOD", "GET"))
    + _params(b"") + record_bytes(FCGI_STDIN, b""),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_row8_malformed_records(stack, target, name):
    """Each malformed stream on its own connection: an answer, or the
    connection closed, within a few seconds; the fixture then checks the
    process, its threads, its locks."""
    t0 = time.monotonic()
    got, how = raw_exchange(target.socket, HOSTILE[name], timeout=5 * SLOW,
                            close_write=True)
    # libfcgi closes a connection it cannot parse, or one whose peer has
    # finished sending (EOF) before a request was complete
    assert how in ("eof", "reset"), how
    assert time.monotonic() - t0 < 3.0 * SLOW
    assert tickets(stack) == 0


def test_row8_thousands_of_params(stack, target):
    """2 000 params (110 KB, past nginx's default 32 KiB of headers but
    within the connection layer's 128 KiB window): answered. 20 000 params
    (1.08 MB) do not end within the window: the connection is closed at
    once, without a worker ever reading them (they used to be answered)."""
    small = {"HTTP_X_%05d" % i: "v" * 40 for i in range(2000)}
    data = request_bytes("GET", "/api/health", extra=small)
    t0 = time.monotonic()
    got, how = raw_exchange(target.socket, data, timeout=20 * SLOW)
    assert stdout_status(got) == 200, (how, got[:200])
    took = time.monotonic() - t0
    big = {"HTTP_X_%05d" % i: "v" * 40 for i in range(20000)}
    data = request_bytes("GET", "/api/health", extra=big)
    got, how = raw_exchange(target.socket, data, timeout=20 * SLOW)
    assert how in ("eof", "reset") and got == b"", (how, got[:200])
    record("8 raw fastcgi", params_2000_kb=len(request_bytes(
        "GET", "/api/health", extra=small)) / 1e3, params_2000_s=took,
        params_20000="closed unread")


def test_row8_abort_request_mid_body(stack, target):
    """FCGI_ABORT_REQUEST after the first STDIN record of a claim's body
    (what came is JSON already), the connection kept open: no ticket."""
    body = b"{}" + b" " * 300
    data = claim_request(stack, body=body)
    head = data[:_first_record_of(data, FCGI_STDIN)]
    stream = head + record_bytes(FCGI_STDIN, body[:100]) + \
        record_bytes(FCGI_ABORT_REQUEST, b"")
    got, how = raw_exchange(target.socket, stream, timeout=5 * SLOW)
    assert how in ("eof", "reset"), how
    assert tickets(stack) == 0, "a ticket for an aborted request"
    assert stdout_status(got) in (None, 400), got[:300]


def test_row8_slow_peers_do_not_stop_the_others(stack, target):
    """Half the worker threads held by peers that send a byte a second:
    the other half keep serving at once."""
    import socket as _s
    held = []
    try:
        for _ in range(THREADS // 2):
            c = _s.socket(_s.AF_UNIX, _s.SOCK_STREAM)
            c.connect(target.socket)
            c.sendall(begin_bytes()[:4])
            held.append(c)
        time.sleep(0.2)
        t0 = time.monotonic()
        for _ in range(10):
            r = target.request("GET", "/api/health", timeout=5 * SLOW)
            assert r.status == 200, r
        took = time.monotonic() - t0
    finally:
        for c in held:
            c.close()
    record("8 raw fastcgi", slow_peers_holding=THREADS // 2,
           others_10_requests_s=took)


KILLER = begin_bytes() + record_bytes(
    FCGI_PARAMS, length_bytes(0x40000000) + length_bytes(0x40000000) + b"x")


@pytest.mark.parametrize("rest", [b"", record_bytes(FCGI_PARAMS, b"") +
                                  record_bytes(FCGI_STDIN, b"")],
                         ids=["cut", "whole"])
def test_row8_params_past_2gib_are_refused(stack, target, rest):
    """Debian's libfcgi 2.4.2 aborts the process on one PARAMS record whose
    name and value lengths add up past 2^31 (CVE-2025-23016, fixed only in
    part); it used to kill the instance here (SIGABRT, a supervisor
    restart, 503s for a concurrent storm). The connection layer reads
    every pair's lengths before libfcgi sees a byte and closes a connection
    whose pair announces more than 1 MiB: the process lives, a concurrent
    storm is served, no claim is lost."""
    inst = target
    users = list(range(95000, 95400))
    stack.make_users(users)
    pairs = [(u, 7) for u in users]
    st = Storm(stack, pairs, threads=32, duration=30 * SLOW, backoff=0.05).start()
    while len(st.answers) < 100 and time.monotonic() < st.t_start + 10 * SLOW:
        time.sleep(0.005)
    pid = inst.pid
    t0 = time.monotonic()
    got, how = raw_exchange(inst.socket, KILLER + rest, timeout=5 * SLOW)
    closed_after = time.monotonic() - t0
    st.join(extra=30)
    assert inst.pid == pid and inst.running(), "the instance died"
    assert how in ("eof", "reset") and got == b"", (how, got[:200])
    assert closed_after < 1.0 * SLOW, closed_after
    assert not st.unfinished(), st.unfinished()[:5]
    assert_truthful(st.answers, allow=(200, 201), busy_ok=False)
    created, lost = check_claims_against_db(stack, st.answers, pairs)
    assert created + lost == len(pairs) and lost == 0, (created, lost)
    record("8 raw fastcgi", killer="closed unread after %.3f s; process "
           "alive; storm %d x 201, 0 x 503" % (closed_after, created))
