"""nginx (and php-fpm) of a run: nginx/nginx.conf.in rendered into the run
directory with the shipped snippets beside it, nginx's command line and
its configuration test; php-fpm's configuration for the PHP example.

Standard library only."""

import grp
import os
import pwd
import re
import shutil
import subprocess

from .processes import ROOT, StackError

TEMPLATE = os.path.join(ROOT, "nginx", "nginx.conf.in")
SNIPPETS = os.path.join(ROOT, "nginx", "snippets")
# nginx/tickets.conf's `keepalive` in the upstream (with fastcgi_keep_conn
# on in snippets/tickets-fastcgi.conf): the test stack runs as shipped.
UPSTREAM_KEEPALIVE = 16
WEB_ROOT = os.path.join(ROOT, "web")
PHP_ROOT = os.path.join(ROOT, "examples", "php")


def upstream_servers(addresses, keepalive=UPSTREAM_KEEPALIVE):
    """The body of the upstream: a `server` line per address (as nginx
    writes it: unix:/path or host:port), then `keepalive N;` unless 0."""
    text = "\n        ".join("server %s max_fails=1 fail_timeout=2s;" % a
                             for a in addresses)
    if keepalive:
        text += "\n        keepalive %d;" % keepalive
    return text


def web_block(demo_tokens=None):
    """The page of web/ at `/`; with demo_tokens (a path), the demo
    sign-in's /demo/tokens.json (`make run` only: never in
    nginx/tickets.conf or its snippets)."""
    text = 'root "%s";\n        include snippets/tickets-web.conf;' % WEB_ROOT
    if demo_tokens:
        text += ('\n        location = /demo/tokens.json {\n'
                 '            alias "%s";\n'
                 '            add_header Cache-Control "no-store" always;\n'
                 '        }' % demo_tokens)
    return text


def php_block(php_socket):
    """/php/ to the PHP example's front script under php-fpm."""
    return ('location = /php {\n'
            '            return 301 /php/;\n'
            '        }\n'
            '        location ^~ /php/ {\n'
            '            # every path under /php/ runs the one front script\n'
            '            fastcgi_pass unix:%s;\n'
            '            include /etc/nginx/fastcgi_params;\n'
            '            fastcgi_param SCRIPT_FILENAME "%s";\n'
            '            fastcgi_param HTTP_PROXY "";\n'
            '        }' % (php_socket, os.path.join(PHP_ROOT, "index.php")))


def render(run_dir, port, internal_port, tls_port, upstreams, web="", php="",
           addr_limit=False, token_limit=True, worker_processes=None):
    """nginx.conf.in into run_dir/nginx.conf (the listeners on 127.0.0.1 of
    the namespace nginx runs in; upstreams: the body of upstream_servers()),
    nginx/snippets/ into run_dir/snippets/.  The shipped per-address limit
    of tokenless requests is commented out unless addr_limit: every client
    of a test is one address; the per-token one when not token_limit, and
    worker_processes replaces the shipped count (bench/run's tuning runs).
    TLS: run_dir/tls/nginx.pem and its key."""
    with open(TEMPLATE) as f:
        conf = f.read()
    values = {
        "PREFIX": run_dir,
        "TLS_PORT": str(tls_port),
        "USER": pwd.getpwuid(os.geteuid()).pw_name,
        "GROUP": grp.getgrgid(os.getegid()).gr_name,
        "PORT": str(port),
        "INTERNAL_PORT": str(internal_port),
        "UPSTREAM_SERVERS": upstreams,
        "WEB": web,
        "PHP": php,
    }
    lines = []
    for line in conf.splitlines(True):
        # placeholders in comments (the template documents them) stay
        code, hash_, comment = line.partition("#")
        unknown = set(re.findall(r"@([A-Z_]+)@", code)) - set(values)
        if unknown:
            raise StackError("nginx.conf.in: unknown placeholder(s) %s"
                             % sorted(unknown))
        code = re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], code)
        lines.append(code + hash_ + comment)
    conf = "".join(lines)
    if worker_processes is not None:
        conf, n = re.subn(r"(?m)^worker_processes \d+;",
                          "worker_processes %d;" % worker_processes, conf)
        if n != 1:
            raise StackError("nginx.conf.in: no worker_processes line")
    snippets = os.path.join(run_dir, "snippets")
    os.makedirs(snippets, exist_ok=True)
    for name in os.listdir(SNIPPETS):
        shutil.copyfile(os.path.join(SNIPPETS, name), os.path.join(snippets, name))
    for zone, on in (("tickets_per_addr", addr_limit),
                     ("tickets_per_token", token_limit)):
        if on:
            continue
        public = os.path.join(snippets, "tickets-public.conf")
        with open(public) as f:
            text = f.read()
        if "limit_req zone=" + zone not in text:
            raise StackError("tickets-public.conf: no limit_req %s" % zone)
        with open(public, "w") as f:
            f.write(text.replace("limit_req zone=" + zone,
                                 "# limit_req zone=" + zone))
    os.makedirs(os.path.join(run_dir, "tmp"), exist_ok=True)
    with open(os.path.join(run_dir, "nginx.conf"), "w") as f:
        f.write(conf)


def nginx_cmd(run_dir, *extra):
    """nginx on run_dir/nginx.conf, its prefix and error log there."""
    return ["nginx", "-p", run_dir + "/", "-c", os.path.join(run_dir, "nginx.conf"),
            "-e", os.path.join(run_dir, "nginx-error.log")] + list(extra)


def nginx_test(run_dir, wrap=list):
    """`nginx -t` of the rendered configuration (wrap: how to run it, e.g.
    inside a namespace); StackError with its output if it fails."""
    r = subprocess.run(wrap(nginx_cmd(run_dir, "-t", "-q")),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise StackError("nginx -t failed:\n%s" % r.stdout.decode())


# ---------------------------------------------------------------------------
# php-fpm: the PHP example behind the same nginx

def php_fpm_bin():
    cand = os.environ.get("TICKETS_PHP_FPM")
    if cand:
        return cand
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    for name in ("php-fpm8.2", "php-fpm"):
        found = shutil.which(name, path=path)
        if found:
            return found
    for d in ("/usr/sbin", "/usr/local/sbin"):
        try:
            names = sorted(n for n in os.listdir(d)
                           if re.match(r"php-fpm[0-9.]*$", n))
        except OSError:
            continue
        if names:
            return os.path.join(d, names[-1])
    raise StackError("php-fpm not found (Debian: apt-get install "
                     "php8.2-fpm php8.2-curl; or set TICKETS_PHP_FPM)")


def php_fpm_cmd(run_dir, api_url, secret_file):
    """php-fpm.conf in run_dir (a pool on run_dir/php-fpm.sock running
    examples/php/ against api_url, signing with secret_file) and the
    command line that runs it in the foreground."""
    def path(name):
        return os.path.join(run_dir, name)
    root = os.geteuid() == 0
    os.makedirs(path("php-sessions"), mode=0o700, exist_ok=True)
    lines = [
        "[global]",
        "pid = %s" % path("php-fpm.pid"),
        "error_log = %s" % path("php-fpm.log"),
        "daemonize = no",
        "",
        "[tickets-example]",
    ]
    if root:   # only honoured (and then required) when started as root
        lines += ["user = %s" % pwd.getpwuid(os.geteuid()).pw_name,
                  "group = %s" % grp.getgrgid(os.getegid()).gr_name]
    lines += [
        "listen = %s" % path("php-fpm.sock"),
        "listen.mode = 0660",
        "pm = static",
        "pm.max_children = 4",
        "clear_env = yes",
        "catch_workers_output = yes",
        "decorate_workers_output = no",
        # what examples/php/tickets.php reads: the site's API URL and
        # the shared secret it signs its users' tokens with
        "env[TICKETS_API_URL] = %s" % api_url,
        "env[TICKETS_JWT_SECRET_FILE] = %s" % secret_file,
        # the example's stand-in login (any user id): tests only
        "env[TICKETS_EXAMPLE_DEMO_LOGIN] = 1",
        "php_admin_flag[display_errors] = off",
        "php_admin_flag[log_errors] = on",
        "php_admin_value[error_log] = %s" % path("php-error.log"),
        "php_admin_value[session.save_path] = %s" % path("php-sessions"),
    ]
    with open(path("php-fpm.conf"), "w") as f:
        f.write("\n".join(lines) + "\n")
    cmd = [php_fpm_bin(), "--nodaemonize", "--fpm-config", path("php-fpm.conf"),
           "--prefix", run_dir]
    if root:
        cmd.append("--allow-to-run-as-root")
    return cmd
