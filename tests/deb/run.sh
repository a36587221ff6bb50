#!/usr/bin/env bash
# The Debian package, end to end (make test-deb; as root, on a Debian 12
# machine that may then carry the package's user "tickets"):
#
#   1. install what the suite needs (debhelper, lintian, man-db, ... and the
#      build-dependencies debian/control declares) when missing
#   2. git clone of this repository's HEAD into a temp dir, and
#      dpkg-buildpackage -us -uc -b there (only the declared build-deps)
#   3. lintian: no error, no warning
#   4. dpkg -i; the installed binary's hardening (tests/hardening),
#      --version, the first-start message, --check-config and a request
#      against a test database (tests/deb/installed.py, tests/harness's
#      MariaDB), systemd-analyze verify on the installed units, the man page
#      (tests/man) from the installed paths
#   5. dpkg -r keeps the conffile; dpkg -P leaves no file of the package
#
# Uncommitted changes are not in the clone: commit first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
PKG=tickets-fcgi

step() { printf '\n== test-deb: %s\n' "$*"; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (dpkg -i, systemd-sysusers)"

# -- 1. packages ------------------------------------------------------------
NEEDED="build-essential debhelper dpkg-dev fakeroot lintian man-db git binutils
systemd python3 python3-pytest python3-pymysql mariadb-server spawn-fcgi nginx-light"
missing=
for p in $NEEDED; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"
done
# the build-dependencies, as debian/control declares them
bd=$(cd "$ROOT" && dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p' |
     sed 's/([^)]*)//g; s/|[^ ]*//g') || true
for p in $bd; do
    case "$p" in debhelper-compat|dh-sequence-*) p=debhelper ;; esac
    missing="$missing $p"
done
if [ -n "$missing" ]; then
    step "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
    for i in 1 2 3 4 5 6; do   # apt may be locked by another run
        apt-get update -q && apt-get install -y -q --no-install-recommends $missing && break
        [ "$i" -lt 6 ] || fail "apt-get install$missing"
        sleep 20
    done
fi

WORK=$(mktemp -d /tmp/tickets-deb.XXXXXX)
chmod 0755 "$WORK"
cleanup() {
    if dpkg-query -W -f='${db:Status-Abbrev}' $PKG 2>/dev/null | grep -q '^[ir]'; then
        dpkg -P $PKG >/dev/null 2>&1 || true
    fi
    rm -f /etc/tickets-fcgi/jwt-secret /etc/tickets-fcgi/db-password
    rmdir /etc/tickets-fcgi 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

if dpkg-query -W -f='${db:Status-Abbrev}' $PKG 2>/dev/null | grep -q '^[ir]'; then
    fail "$PKG is already installed here; purge it first (dpkg -P $PKG)"
fi

# -- 2. build from a clean clone ----------------------------------------------
step "git clone $(git -C "$ROOT" rev-parse --short HEAD) and dpkg-buildpackage -us -uc -b"
git clone -q --no-hardlinks "$ROOT" "$WORK/src"
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ] ||
    echo "test-deb: note: uncommitted changes in $ROOT are not part of this build"
(cd "$WORK/src" && dpkg-checkbuilddeps && dpkg-buildpackage -us -uc -b) \
    >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "dpkg-buildpackage"; }
version=$(cd "$WORK/src" && dpkg-parsechangelog -S Version)
deb=$(ls "$WORK"/${PKG}_"${version}"_*.deb)
changes=$(ls "$WORK"/${PKG}_"${version}"_*.changes)
echo "built $(basename "$deb")"
grep -q -- '-D_FORTIFY_SOURCE=2' "$WORK/build.log" && grep -q -- '-fstack-protector-strong' "$WORK/build.log" &&
    grep -q -- '-Wl,-z,relro' "$WORK/build.log" || fail "dpkg-buildflags' flags are not in the build"

# -- 3. lintian -----------------------------------------------------------------
step "lintian"
lintian --fail-on error,warning --display-info "$changes" 2>&1 | grep -v '^running with root' | tee "$WORK/lintian.log" || true
lintian --fail-on error,warning "$changes" >/dev/null 2>&1 || fail "lintian reports an error or a warning"
if grep -E '^[EW]: ' "$WORK/lintian.log"; then fail "lintian reports an error or a warning"; fi

# -- 4. install -----------------------------------------------------------------
step "dpkg -i"
dpkg -i "$deb"
dpkg -L $PKG | sort >"$WORK/files"
[ "$(tickets-fcgi --version)" = "tickets-fcgi ${version%%-*}" ] || fail "--version: $(tickets-fcgi --version)"
"$ROOT/tests/hardening/check_binary.sh" /usr/bin/tickets-fcgi
getent passwd tickets >/dev/null || fail "sysusers: no user tickets"
getent group tickets-socket | grep -qw www-data || fail "sysusers: www-data is not in tickets-socket"
id -nG tickets | grep -qw www-data && fail "the app's user is in www-data's group"
[ "$(stat -c '%a %U %G' /etc/tickets-fcgi)" = "750 root tickets" ] ||
    fail "tmpfiles: /etc/tickets-fcgi is $(stat -c '%a %U %G' /etc/tickets-fcgi)"
[ -L /etc/systemd/system/sockets.target.wants/tickets-fcgi.socket ] || fail "tickets-fcgi.socket is not enabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/tickets-fcgi.service ] || fail "the service itself is enabled"
grep -qx /etc/tickets-fcgi/env /var/lib/dpkg/info/$PKG.conffiles || fail "/etc/tickets-fcgi/env is not a conffile"
for sql in schema.sql grants.sql; do [ -f /usr/share/$PKG/sql/$sql ] || fail "no $sql"; done
if grep -E '/sql/(demo|bench)' "$WORK/files"; then fail "demo or benchmark SQL installed"; fi

step "systemd-analyze verify (installed units, a template instance)"
units=(/lib/systemd/system/tickets-fcgi.socket /lib/systemd/system/tickets-fcgi.service)
mkdir "$WORK/units"
for u in socket service; do
    cp /lib/systemd/system/tickets-fcgi@.$u "$WORK/units/tickets-fcgi@app2.$u"
    units+=("$WORK/units/tickets-fcgi@app2.$u")
done
out=$(systemd-analyze verify "${units[@]}" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
for u in "${units[@]}"; do grep -q '^\[Service\]' "$u" || continue
    grep -qx 'LimitCORE=0' "$u" || fail "$u: no LimitCORE=0"; done
for doc in $(sed -n 's/^Documentation=//p' "${units[@]}" | tr ' ' '\n' | sed -n 's|^file:||p' | sort -u); do
    [ -f "$doc" ] || fail "Documentation=file:$doc: no such file"
done
echo "verified: ${units[*]}"

step "nginx -t: the shipped site with the installed snippets"
mkdir "$WORK/nginx"
ln -s /etc/nginx/snippets "$WORK/nginx/snippets"
# the site's certificate is the operator's (certbot); a throw-away one here
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=tickets.example.org -keyout "$WORK/nginx/key.pem" \
    -out "$WORK/nginx/cert.pem" 2>/dev/null || fail "openssl: no throw-away certificate"
sed -e "s|/var/log/nginx/|$WORK/nginx/|g" \
    -e "s|/etc/letsencrypt/live/tickets.example.org/fullchain.pem|$WORK/nginx/cert.pem|" \
    -e "s|/etc/letsencrypt/live/tickets.example.org/privkey.pem|$WORK/nginx/key.pem|" \
    /usr/share/$PKG/nginx/tickets.conf >"$WORK/nginx/site.conf"
cat >"$WORK/nginx/nginx.conf" <<NGINX
pid $WORK/nginx/nginx.pid;
error_log stderr;
events {}
http {
    include /etc/nginx/mime.types;
    include $WORK/nginx/site.conf;
}
NGINX
nginx -t -q -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" || fail "nginx -t on the shipped site"
echo "nginx -t: ok"

step "the installed app: first start, --check-config, a request"
"$PYTHON" "$ROOT/tests/deb/installed.py"

step "man page (installed) against --help"
man=/usr/share/man/man8/tickets-fcgi.8.gz
if [ ! -e "$man" ]; then
    # dpkg's path-exclude (slim images) dropped it: check the packaged copy
    dpkg-deb -x "$deb" "$WORK/x" && man="$WORK/x$man"
fi
TICKETS_BIN=/usr/bin/tickets-fcgi TICKETS_MAN="$man" "$PYTHON" -m pytest -q -p no:cacheprovider "$ROOT/tests/man"

# -- 5. remove, purge -------------------------------------------------------
step "dpkg -r keeps the conffile"
rm -f /etc/tickets-fcgi/jwt-secret /etc/tickets-fcgi/db-password   # the operator's, not the package's
echo "# edited by the operator" >>/etc/tickets-fcgi/env
dpkg -r $PKG
[ -f /etc/tickets-fcgi/env ] && grep -q '^# edited by the operator' /etc/tickets-fcgi/env ||
    fail "dpkg -r removed or replaced /etc/tickets-fcgi/env"
[ ! -e /usr/bin/tickets-fcgi ] || fail "dpkg -r left the binary"
dpkg-query -W -f='${db:Status-Abbrev}' $PKG | grep -q '^rc' || fail "not in config-files state after -r"

step "dpkg -P leaves no file of the package"
dpkg -P $PKG
left=
while read -r f; do
    [ "$f" = "/." ] || [ ! -e "$f" ] && continue
    # usrmerge's /lib -> usr/lib and the like: not the package's
    [ -L "$f" ] && [ -d "$f" ] && continue
    # a file, or a directory no other package owns, is the package's leftover
    if [ ! -d "$f" ] || ! dpkg -S "$f" >/dev/null 2>&1; then
        left="$left $f"
    fi
done <"$WORK/files"
for f in /etc/tickets-fcgi /etc/systemd/system/sockets.target.wants/tickets-fcgi.socket \
         /var/lib/systemd/deb-systemd-helper-enabled/tickets-fcgi.socket.dsh-also; do
    [ ! -e "$f" ] || left="$left $f"
done
[ -z "$left" ] || fail "left after dpkg -P:$left"
echo "test-deb: OK ($(basename "$deb"): built from a clean clone, lintian clean, installed, checked, removed, purged)"
