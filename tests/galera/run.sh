#!/usr/bin/env bash
# make test-galera: three MariaDB Galera nodes behind HAProxy, three app
# hosts and nginx, each a host in a network namespace (tests/galera/).
#
#   tests/galera/run.sh               everything (installs what is missing)
#   tests/galera/run.sh -k storms     pytest arguments
#
# Needs root (network namespaces).  Installs when missing, as
# tests/browser/run.sh does: galera-4 (the provider), haproxy, rsync (SST);
# the stack's own packages come from scripts/install-deps.sh.  Bounded: the
# whole run is stopped after TICKETS_GALERA_TIMEOUT seconds (default 480);
# the harness stops its processes by pid and removes its namespaces on any
# exit, SIGTERM included; a SIGKILLed run's namespaces go at the next start.
#
# Environment: TICKETS_BIN (default build/tickets-fcgi, built if unset),
# TICKETS_KEEP=1 (keep the run directory), PYTHON (default /usr/bin/python3).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
GALERA_PACKAGES="galera-4 haproxy rsync"

say() { echo "galera-tests: $*"; }

# shellcheck disable=SC2086 # the package list is split on purpose
scripts/install-deps.sh $GALERA_PACKAGES

if [ -z "${TICKETS_BIN:-}" ]; then
    make --no-print-directory all
    TICKETS_BIN=$ROOT/build/tickets-fcgi
fi
export TICKETS_BIN
t0=$(date +%s)
set +e
timeout -k 30 -s TERM "${TICKETS_GALERA_TIMEOUT:-480}" \
    "$PYTHON" -m pytest -q -s -p no:cacheprovider tests/galera "$@"
rc=$?
set -e
say "$([ "$rc" -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t0 )) s"
exit "$rc"
