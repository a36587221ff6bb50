"""FastCGI as nginx speaks it, straight to an app instance's socket: the
one encoder of records, params and whole requests (well-formed for the
harness's readiness checks and per-instance requests, or bent on purpose
by tests/faults), the reader of the answer, a kept connection.

Standard library only."""

import re
import secrets
import socket
import struct

from .http import Resp
from .processes import MalformedResponse, StackError

FCGI_BEGIN_REQUEST, FCGI_ABORT_REQUEST, FCGI_END_REQUEST = 1, 2, 3
FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = 4, 5, 6, 7
FCGI_GET_VALUES = 9
RECORD_MAX = 65535      # content bytes in one record


# ---------------------------------------------------------------------------
# encoding

def record_bytes(rtype, content, rid=1, version=1, pad=None):
    """One record; pad: padding bytes (default: to a multiple of 8)."""
    if pad is None:
        pad = -len(content) % 8
    return struct.pack("!BBHHBx", version, rtype, rid, len(content), pad) + \
        content + b"\0" * pad


def stream_bytes(rtype, content, rid=1):
    """content as a stream of records of at most RECORD_MAX bytes, without
    the empty record that ends the stream."""
    return b"".join(record_bytes(rtype, content[i:i + RECORD_MAX], rid)
                    for i in range(0, len(content), RECORD_MAX))


def length_bytes(n):
    return struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)


def pair_bytes(name, value):
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return length_bytes(len(name)) + length_bytes(len(value)) + name + value


def begin_bytes(rid=1, role=1, flags=0):
    return record_bytes(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", role, flags), rid)


def payload_bytes(params, body=b"", keep_conn=False):
    """The records of one request (id 1) with exactly these params, as
    nginx sends them: BEGIN_REQUEST (FCGI_KEEP_CONN if keep_conn), the
    params stream, the body stream."""
    return (begin_bytes(flags=1 if keep_conn else 0)
            + stream_bytes(FCGI_PARAMS, b"".join(
                pair_bytes(k, v) for k, v in params.items()))
            + record_bytes(FCGI_PARAMS, b"")
            + stream_bytes(FCGI_STDIN, body) + record_bytes(FCGI_STDIN, b""))


def nginx_params(method, path, headers=None, body=b""):
    """The params nginx's fastcgi_params would send for this request."""
    uri, _, query = path.partition("?")
    params = {
        "QUERY_STRING": query, "REQUEST_METHOD": method,
        "CONTENT_TYPE": "application/json" if body else "",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "SCRIPT_NAME": uri, "REQUEST_URI": path, "DOCUMENT_URI": uri,
        "DOCUMENT_ROOT": "/", "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "tests/harness", "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0", "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "0",
        "SERVER_NAME": "localhost", "REDIRECT_STATUS": "200",
        "REQUEST_ID": secrets.token_hex(16), "HTTP_HOST": "localhost",
    }
    for k, v in (headers or {}).items():
        params["HTTP_" + k.upper().replace("-", "_")] = v
    return params


def request_bytes(method, path, headers=None, body=b"", extra=None,
                  keep_conn=False):
    """A whole request as nginx would send it; extra: more params, or
    params to replace."""
    params = nginx_params(method, path, headers, body)
    params.update(extra or {})
    return payload_bytes(params, body, keep_conn)


# ---------------------------------------------------------------------------
# decoding

def parse_records(data):
    """[(type, request id, content)] of a byte stream of records."""
    out = []
    while len(data) >= 8:
        _, rtype, rid, clen, plen = struct.unpack("!BBHHBx", data[:8])
        if len(data) < 8 + clen + plen:
            break
        out.append((rtype, rid, data[8:8 + clen]))
        data = data[8 + clen + plen:]
    return out


def stdout_status(data):
    """The Status: of the CGI response in a record stream, or None."""
    out = b"".join(c for t, _, c in parse_records(data) if t == FCGI_STDOUT)
    for line in out.split(b"\n"):
        if line.lower().startswith(b"status:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
        if not line.strip():
            break
    return None if not out else 200


def read_response(s):
    """Read records from socket s up to FCGI_END_REQUEST; the stdout bytes.
    StackError if the connection closes before it."""
    buf, stdout = b"", b""
    while True:
        data = s.recv(65536)
        if not data:
            raise StackError("connection closed before FCGI_END_REQUEST")
        buf += data
        while len(buf) >= 8:
            _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            if len(buf) < 8 + clen + plen:
                break
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == FCGI_STDOUT:
                stdout += content
            elif rtype == FCGI_END_REQUEST:
                return stdout


def cgi_response(stdout, what):
    """Resp from a CGI response: header lines, an empty line, the body
    (nginx accepts LF or CRLF line ends; without the empty line it answers
    502)."""
    m = re.search(b"\r?\n\r?\n", stdout)
    if not m:
        raise MalformedResponse("%s: malformed response, no empty line after "
                                "the headers: %r" % (what, stdout[:300]))
    head, resp_body = stdout[:m.start()], stdout[m.end():]
    status, reason, hdrs = 200, "OK", {}
    for line in re.split(r"\r?\n", head.decode("latin-1")):
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip()
        if k == "status":
            code, _, reason = v.partition(" ")
            status = int(code)
        elif k:
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
    return Resp(status, hdrs, resp_body, reason)


# ---------------------------------------------------------------------------
# exchanges

def fcgi_socket(address, timeout):
    """A socket for address: a unix path, (IPv4 host, port) or (IPv6, port)."""
    fam = (socket.AF_UNIX if isinstance(address, str) else
           socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    return s


def fcgi_exchange(address, params, body=b"", timeout=10):
    """Send one FastCGI request (BEGIN_REQUEST, the params as given, the
    body) to `address`, a unix socket path or (host, port), and return the
    responder's stdout bytes.  StackError if the connection closes before
    FCGI_END_REQUEST."""
    s = fcgi_socket(address, timeout)
    try:
        s.connect(address)
        s.sendall(payload_bytes(params, body))
        return read_response(s)
    finally:
        s.close()


def fcgi_request(sock_path, method, path, headers=None, body=b"", timeout=10):
    """Send one request to a FastCGI responder the way nginx would, without
    keep-alive. Returns Resp (status from the CGI Status header)."""
    what = "FastCGI %s %s on %s" % (method, path, sock_path)
    try:
        stdout = fcgi_exchange(sock_path, nginx_params(method, path, headers,
                                                        body), body, timeout)
    except StackError as e:
        raise StackError("%s: %s" % (what, e))
    return cgi_response(stdout, what)


class FcgiConnection(object):
    """One FastCGI connection kept open across requests, as nginx with
    `keepalive` and `fastcgi_keep_conn on` uses it: every request carries
    FCGI_KEEP_CONN, and the app must leave the connection open after its
    answer. request() raises StackError if the app closed it instead."""

    def __init__(self, address, timeout=10):
        self.address = address
        self.sock = fcgi_socket(address, timeout)
        self.sock.connect(address)

    def request(self, method, path, headers=None, body=b""):
        what = "FastCGI %s %s on a kept connection to %s" % (
            method, path, self.address)
        self.sock.sendall(self.request_bytes(method, path, headers, body))
        try:
            return cgi_response(read_response(self.sock), what)
        except StackError as e:
            raise StackError("%s: %s" % (what, e))

    def send(self, data):
        """Raw bytes on the connection (a request in parts, a stall)."""
        self.sock.sendall(data)

    def request_bytes(self, method, path, headers=None, body=b""):
        """The bytes of a keep-alive request, to send in parts."""
        return request_bytes(method, path, headers, body, keep_conn=True)

    def closed_by_peer(self, timeout):
        """True when the app closes the connection within timeout s."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()

