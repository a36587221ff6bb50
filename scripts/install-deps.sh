#!/bin/sh
# shellcheck disable=SC2086 # word splitting of the package lists is wanted
# Install the Debian packages tickets-fcgi needs to build, test and run.
#
# Idempotent and quick when everything is already there: one dpkg-query call,
# no network.  Only when something is missing does it run `apt-get update`
# and `apt-get install` (as root), non-interactively and with RUNLEVEL=1 so
# that the package scripts do not start the system nginx or MariaDB: the
# tests and `make run` start private copies of both on their own sockets.
#
# Not root and something missing: prints the command to run and exits 1.
#
#   scripts/install-deps.sh                 what make test and make run need
#   scripts/install-deps.sh PKG ...         that, and the packages of one
#                                           extra suite (browser, Galera, ...)
set -eu
set -f  # $PACKAGES and $missing are split on purpose; never globbed

PACKAGES="build-essential pkg-config libfcgi-dev default-libmysqlclient-dev
libjansson-dev libssl-dev libcmocka-dev nginx-light mariadb-server spawn-fcgi
python3 python3-pytest python3-pymysql curl wrk iproute2 systemd spin valgrind
apache2 $*"

# "<package> <status>" for every package dpkg knows; unknown ones are absent.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' $PACKAGES \
    2>/dev/null || true)

missing=
for p in $PACKAGES; do
    if ! printf '%s\n' "$installed" | grep -q "^$p ii"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all required packages are installed"
    exit 0
fi

echo "install-deps: missing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: not root; run:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive" \
        "apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# RUNLEVEL=1 makes invoke-rc.d skip starting services (nginx, mariadb).
export RUNLEVEL=1
echo "install-deps: installing:$missing"
apt-get update
apt-get install -y --no-install-recommends $missing
echo "install-deps: done"
