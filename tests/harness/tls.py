"""Throw-away TLS certificates of a run (openssl): a CA, certificates it
signs, and the pair nginx or MariaDB serves in a run directory's tls/."""

import os
import subprocess

from .processes import StackError


def make_ca(directory, name, cn):
    """A throw-away CA (EC P-256, valid 2 days) made with openssl:
    <name>.pem and <name>-key.pem in directory; returns the certificate's
    path."""
    os.makedirs(directory, exist_ok=True)
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + "-key.pem")
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out",
              cert, "-days", "2", "-subj", "/CN=" + cn])
    return cert


def make_cert(directory, name, cn, ca, san=None, client=False):
    """A certificate for cn signed by the CA made by make_ca (ca: its
    certificate's path): <name>.pem, <name>-key.pem; san like
    "IP:127.0.0.1,DNS:localhost".  Returns (certificate, key)."""
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + "-key.pem")
    csr = os.path.join(directory, name + ".csr")
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
        if san:
            f.write("subjectAltName=%s\n" % san)
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn])
    _openssl(["x509", "-req", "-in", csr, "-CA", ca, "-CAkey",
              ca[:-len(".pem")] + "-key.pem", "-CAcreateserial", "-days", "2",
              "-extfile", ext, "-out", cert])
    os.chmod(key, 0o600)
    return cert, key


def _openssl(args):
    r = subprocess.run(["openssl"] + args, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise StackError("openssl %s failed:\n%s" % (
            " ".join(args[:2]), r.stdout.decode("utf-8", "replace")))



def make_server_tls(tls_dir, name, cn, ca_name, ca_subject):
    """A throw-away CA `ca_name` and a certificate `name` for 127.0.0.1 and
    localhost in tls_dir, made once per directory (kept if there)."""
    if os.path.exists(os.path.join(tls_dir, name + ".pem")):
        return
    ca = make_ca(tls_dir, ca_name, ca_subject)
    make_cert(tls_dir, name, cn, ca, san="IP:127.0.0.1,DNS:localhost")
