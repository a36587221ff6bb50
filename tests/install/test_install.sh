#!/usr/bin/env bash
# `make install` into a DESTDIR, checked against the FHS layout the README
# promises, then `make uninstall` from the same DESTDIR.
#
#   tests/install/test_install.sh            (make test-install)
#   TICKETS_MAKEFILE=path ...                use another Makefile (to try
#                                            install rules before they land)
#
# PREFIX=/usr (a distribution package) and the default PREFIX=/usr/local.
# The systemd units of deploy/ are checked when the Makefile installs them
# (it mentions deploy/): the spawn-fcgi unit in $(PREFIX)/lib/systemd/system
# with ExecStart naming $(BINDIR), the sysusers.d file, both unit sets as
# examples in $(PREFIX)/share/tickets-fcgi/systemd/, `systemd-analyze
# verify` clean. Needs no root; touches nothing outside its temp dir except
# build/ (make install builds the binary if it is missing or stale).
# shellcheck disable=SC2016 # the bash -c bodies expand their own "$1" on purpose
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MAKEFILE=${TICKETS_MAKEFILE:-$ROOT/Makefile}
MAKE=${MAKE:-make}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tickets-install-XXXXXX")
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

fails=0
pass() { echo "  ok    $*"; }
fail() { echo "  FAIL  $*"; fails=$((fails + 1)); }
check() {   # check <description> <command...>; shows its output on failure
    local what=$1 out; shift
    if out=$("$@" 2>&1); then
        pass "$what"
    else
        fail "$what"
        [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/          /'
    fi
}
mode_is() { [ "$(stat -c %a "$1")" = "$2" ]; }

version=$(sed -n 's/^VERSION := //p' "$MAKEFILE")
units_installed=0
grep -q 'deploy/' "$MAKEFILE" && units_installed=1

install_into() {   # install_into <destdir> <prefix>
    "$MAKE" --no-print-directory -s -C "$ROOT" -f "$MAKEFILE" install \
        DESTDIR="$1" PREFIX="$2" >"$tmp/make.log" 2>&1 || {
        cat "$tmp/make.log"; fail "make install DESTDIR=$1 PREFIX=$2"; return 1; }
    pass "make install DESTDIR=… PREFIX=$2"
}

layout() {   # layout <destdir> <prefix>
    local d=$1 p=$2
    local bin=$d$p/bin/tickets-fcgi share=$d$p/share/tickets-fcgi doc=$d$p/share/doc/tickets-fcgi
    check "binary $p/bin/tickets-fcgi, mode 755" mode_is "$bin" 755
    check "binary runs: --version is $version" \
        bash -c '[ "$("$1" --version)" = "tickets-fcgi $2" ]' _ "$bin" "$version"
    check "binary --help lists TICKETS_LISTEN" bash -c '"$1" --help | grep -q TICKETS_LISTEN' _ "$bin"
    for f in schema.sql grants.sql; do
        check "$p/share/tickets-fcgi/sql/$f, mode 644" mode_is "$share/sql/$f" 644
        check "  … same content as sql/$f" cmp -s "$share/sql/$f" "sql/$f"
    done
    # production files only: no demo data, no benchmark SQL
    check "only schema.sql and grants.sql in $p/share/tickets-fcgi/sql" \
        bash -c '[ "$(ls "$1" | tr "\n" " ")" = "grants.sql schema.sql " ]' _ "$share/sql"
    check "$p/share/man/man8/tickets-fcgi.8" \
        bash -c 'grep -q "^\.TH TICKETS" "$1" && grep -q "TICKETS_JWT_SECRET_FILE" "$1"' _ "$d$p/share/man/man8/tickets-fcgi.8"
    for f in tickets-fcgi.rules.yml prometheus.yml.example; do
        check "$p/share/tickets-fcgi/prometheus/$f" cmp -s "$share/prometheus/$f" "deploy/prometheus/$f"
    done
    check "$p/share/doc/tickets-fcgi/DEPLOYMENT.md" cmp -s "$doc/DEPLOYMENT.md" docs/DEPLOYMENT.md
    check "$p/share/tickets-fcgi/nginx/tickets.conf" cmp -s "$share/nginx/tickets.conf" nginx/tickets.conf
    for f in nginx/snippets/*.conf; do
        check "$p/share/tickets-fcgi/nginx/snippets/$(basename "$f")" \
            cmp -s "$share/nginx/snippets/$(basename "$f")" "$f"
    done
    check "$p/share/doc/tickets-fcgi/README.md, mode 644" mode_is "$doc/README.md" 644
    # nothing outside PREFIX, no stray directories in DESTDIR
    local top
    top=$(cd "$d" && find . -mindepth 1 -maxdepth 1 | sort | tr '\n' ' ')
    check "everything under $p (DESTDIR holds: $top)" \
        bash -c '[ -z "$(cd "$1" && find . -type f ! -path ".$2/*")" ]' _ "$d" "$p"
    check "no file is writable by group or others" \
        bash -c '[ -z "$(find "$1" -type f -perm /022)" ]' _ "$d"
    if [ "$units_installed" = 1 ]; then
        units "$d" "$p"
    fi
}

units() {   # units <destdir> <prefix>: the deploy/ files, when installed
    local d=$1 p=$2
    local unitdir=$d$p/lib/systemd/system ex=$d$p/share/tickets-fcgi/systemd
    check "$p/lib/systemd/system/tickets-fcgi.service, mode 644" \
        mode_is "$unitdir/tickets-fcgi.service" 644
    check "  … is the spawn-fcgi unit" grep -q '^ExecStart=.*spawn-fcgi -n' "$unitdir/tickets-fcgi.service"
    check "  … runs $p/bin/tickets-fcgi" \
        grep -q "^ExecStart=.* -- $p/bin/tickets-fcgi\$" "$unitdir/tickets-fcgi.service"
    check "$p/lib/sysusers.d/tickets-fcgi.conf" \
        cmp -s "$d$p/lib/sysusers.d/tickets-fcgi.conf" deploy/sysusers.d/tickets-fcgi.conf
    check "$p/lib/tmpfiles.d/tickets-fcgi.conf" \
        cmp -s "$d$p/lib/tmpfiles.d/tickets-fcgi.conf" deploy/tmpfiles.d/tickets-fcgi.conf
    for f in spawn-fcgi/tickets-fcgi.service socket-activated/tickets-fcgi.service \
             socket-activated/tickets-fcgi.socket socket-activated/tickets-fcgi@.service \
             socket-activated/tickets-fcgi@.socket env.example; do
        check "$p/share/tickets-fcgi/systemd/$f" test -f "$ex/$f"
    done
    check "socket-activated example runs $p/bin/tickets-fcgi" \
        grep -q "^ExecStart=$p/bin/tickets-fcgi\$" "$ex/socket-activated/tickets-fcgi.service"
    if command -v systemd-analyze >/dev/null; then
        # verify checks that ExecStart's program exists: point it at the
        # DESTDIR copy; any message (unknown key, bad value) fails
        local v=$tmp/verify
        rm -rf "$v"; mkdir -p "$v/a" "$v/b"
        sed "s|$p/bin/tickets-fcgi|$d$p/bin/tickets-fcgi|" "$unitdir/tickets-fcgi.service" \
            >"$v/a/tickets-fcgi.service"
        for f in tickets-fcgi.service tickets-fcgi.socket; do
            sed "s|$p/bin/tickets-fcgi|$d$p/bin/tickets-fcgi|" "$ex/socket-activated/$f" >"$v/b/$f"
        done
        check "systemd-analyze verify: spawn-fcgi unit, silent" bash -c \
            'out=$(systemd-analyze verify --man=no "$1/a/tickets-fcgi.service" 2>&1) && [ -z "$out" ] || { echo "$out" >&2; false; }' _ "$v"
        check "systemd-analyze verify: socket + service, silent" bash -c \
            'out=$(systemd-analyze verify --man=no "$1/b/tickets-fcgi.socket" "$1/b/tickets-fcgi.service" 2>&1) && [ -z "$out" ] || { echo "$out" >&2; false; }' _ "$v"
    else
        echo "  skip  systemd-analyze not installed (apt-get install systemd)"
    fi
}

uninstall_from() {   # uninstall_from <destdir> <prefix>
    "$MAKE" --no-print-directory -s -C "$ROOT" -f "$MAKEFILE" uninstall \
        DESTDIR="$1" PREFIX="$2" >"$tmp/make.log" 2>&1 || {
        cat "$tmp/make.log"; fail "make uninstall PREFIX=$2"; return 1; }
    local left
    left=$(cd "$1" && find . -type f | sort | tr '\n' ' ')
    check "make uninstall PREFIX=$2 removes every file (left: ${left:-none})" test -z "$left"
}

for prefix in /usr /usr/local; do
    echo "== make install DESTDIR=\$tmp PREFIX=$prefix"
    dest=$tmp/dest$(echo "$prefix" | tr / _)
    mkdir -p "$dest"
    install_into "$dest" "$prefix" && layout "$dest" "$prefix" && uninstall_from "$dest" "$prefix"
done
if [ "$units_installed" = 0 ]; then
    echo "  note  this Makefile does not install deploy/ (units not checked)"
fi

if [ "$fails" -ne 0 ]; then
    echo "install test: $fails check(s) FAILED"
    exit 1
fi
echo "install test: OK"
