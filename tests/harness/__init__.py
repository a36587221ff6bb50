"""The test harness of tickets-fcgi, one concern a module:

    processes  paths, errors, ports, private files, children started and
               stopped by pid, waiting until ready
    mariadb    the private MariaDB: data directory, command line, the
               tickets database and account, root's queries, invariants
    data       test data and the checks after a test (class Database)
    apps       an app instance's environment and process (AppInstance)
    nginx      nginx/nginx.conf.in rendered with the shipped snippets;
               php-fpm for the PHP example
    tls        throw-away certificates
    http       the HTTP client (http_request, Resp)
    fastcgi    the FastCGI encoder and client, straight to an instance
    jwt        tokens and the secret
    claims     one claim as a client sees it (claim, Claim), for storms
    stack      Stack: the whole stack on one machine (tests, `make run`)

tests/cluster builds its hosts from the same parts.  Everything public is
importable from the package:

    from harness import Stack, http_request
"""

from .processes import (DEFAULT_BIN, ROOT, SANITIZER_MARKS,  # noqa: F401
                        MalformedResponse, StackError, build_for_tests,
                        children, free_port, guarded, is_nginx_worker,
                        overlay, pid_alive, port_free, stop_process, tail_file,
                        wait_for, write_private)
from .tls import make_ca, make_cert, make_server_tls  # noqa: F401
from .mariadb import (DB_NAME, DB_TIME_ZONE, DB_USER,  # noqa: F401
                      LOCK_PREFIX, create_database, held_locks,
                      install_datadir,
                      invariant_problems, load_sql, mariadb_client,
                      mariadbd_cmd, pymysql, query_rows, root_connect)
from .http import Resp, http_request  # noqa: F401
from .fastcgi import (FCGI_ABORT_REQUEST, FCGI_BEGIN_REQUEST,  # noqa: F401
                      FCGI_END_REQUEST, FCGI_GET_VALUES, FCGI_PARAMS,
                      FCGI_STDERR, FCGI_STDIN, FCGI_STDOUT, FcgiConnection,
                      begin_bytes, cgi_response, fcgi_exchange, fcgi_request,
                      length_bytes, nginx_params, pair_bytes, parse_records,
                      payload_bytes, record_bytes, request_bytes,
                      stdout_status)
from .jwt import make_token, new_secret  # noqa: F401
from .data import DEMO_USERS, Database  # noqa: F401
from .apps import TEST_APP_ENV, AppInstance, app_env  # noqa: F401
from .nginx import (PHP_ROOT, UPSTREAM_KEEPALIVE, WEB_ROOT,  # noqa: F401
                    nginx_cmd, nginx_test, render, upstream_servers)
from .claims import Claim, claim, claim_path, send  # noqa: F401
from .stack import Stack  # noqa: F401
