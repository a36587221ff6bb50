#!/usr/bin/env bash
# Browser tests of the tickets page (web/) and the PHP example
# (examples/php/), in Debian's headless Chromium driven by playwright-core.
#
#   tests/browser/run.sh                  everything (installs what is missing)
#   tests/browser/run.sh page.test.mjs    one file of tests/browser/
#
# What it needs and installs when missing: the Debian packages below (as
# root: apt-get, like scripts/install-deps.sh; the stack's own packages come
# from that script) and playwright-core, pinned by package-lock.json, with
# `npm ci` (it downloads no browser). It builds the app (unless TICKETS_BIN
# is set), starts the stack through tests/browser/serve.py (tests/harness with
# web=True, php=True, demo data) in a temp dir of its own, runs node's test
# runner, and stops the stack by pid.
#
# Environment: TICKETS_BIN (app binary, default build/tickets-fcgi),
# TICKETS_SCREENSHOTS (where screenshots go, default docs/screenshots),
# TICKETS_CHROMIUM (default /usr/bin/chromium), TICKETS_KEEP=1 (keep the
# stack's files), PYTHON (default /usr/bin/python3).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
BROWSER_PACKAGES="chromium php8.2-fpm php8.2-cli php8.2-curl fonts-dejavu-core"
t_start=$(date +%s)

say() { echo "browser-tests: $*"; }

# -- Debian packages
# shellcheck disable=SC2086 # the package list is split on purpose
scripts/install-deps.sh $BROWSER_PACKAGES

# -- playwright-core, exactly as package-lock.json pins it
want=$(node -p "require('$HERE/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('$HERE/node_modules/playwright-core/package.json').version } catch (e) { '' }")
if [ "$want" != "$have" ]; then
    say "npm ci (playwright-core $want)"
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# -- the app: TICKETS_BIN as given (make test-browser passes its build), else
# build/tickets-fcgi brought up to date
if [ -z "${TICKETS_BIN:-}" ]; then
    make --no-print-directory all
    TICKETS_BIN=$ROOT/build/tickets-fcgi
fi
export TICKETS_BIN
t_ready=$(date +%s)

# -- the stack, in a temp dir of our own (Chromium's profiles go there too)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tickets-browser-XXXXXX")
export TMPDIR=$WORK
STATE=$WORK/state.json
serve_pid=
rc=1
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        [ "$rc" -eq 0 ] || touch "$STATE.failed"
        kill -TERM "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    if [ "$rc" -eq 0 ] && [ "${TICKETS_KEEP:-}" != 1 ]; then
        rm -rf "$WORK"
    else
        say "files kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PYTHON" "$HERE/serve.py" --state "$STATE" &
serve_pid=$!
for _ in $(seq 1 600); do
    [ -s "$STATE" ] && break
    if ! kill -0 "$serve_pid" 2>/dev/null; then
        say "the stack did not start"
        exit 1
    fi
    sleep 0.1
done
[ -s "$STATE" ] || { say "the stack did not start within 60 s"; exit 1; }
TICKETS_BROWSER_STATE=$STATE
export TICKETS_BROWSER_STATE

# -- the tests, one file at a time (they share the stack)
if [ "$#" -gt 0 ]; then
    files=()
    for f in "$@"; do files+=("$HERE/$(basename "$f")"); done
else
    files=("$HERE/php.test.mjs" "$HERE/page.test.mjs")
fi
set +e
timeout 600 node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
rc=$?
set -e
say "$([ "$rc" -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t_ready )) s" \
    "(setup $(( t_ready - t_start )) s)"
exit "$rc"
