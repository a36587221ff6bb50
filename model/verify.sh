#!/bin/sh
# model/verify.sh: model-check the claim protocol (model/claim.pml) with
# spin.  See docs/PROTOCOL.md for what the model is and what it shows.
#
#   model/verify.sh            every check; exit 0 only if the real
#                              protocol passes, every variant that must
#                              hold holds and every broken one fails
#   model/verify.sh NAME...    only these checks (names: -l)
#   model/verify.sh -l         list the checks
#
# Each check: spin -a on claim.pml with the check's -D macros, pan compiled
# with bounded memory and depth, then
#   safety    assertions (one ticket per pair, free_issued = rows <= quota,
#             201/200 truthful, serve_one's "no lock held"), invalid end
#             states (deadlock), and at quiescence: every claim answered, no
#             named lock held, no transaction open;
#   liveness  ltl `live`: on every path all claims are answered and all named
#             locks are free (no wait without bound, no lock left behind).
# A check that must hold runs both, depth-first, exhaustively.  A broken
# variant must fail: its safety search is breadth-first, so the trail spin
# finds is a shortest one; it is replayed with `spin -t -p` into
# $VERIFY_OUT/<check>/trail.txt and summarised here (the model's MSC lines).
#
# Environment: VERIFY_OUT (default build/model), VERIFY_JOBS (2 checks at a
# time), VERIFY_MEMLIM (MB per pan, 2048), VERIFY_DEPTH (pan -m, 10000),
# VERIFY_MAXFAIL (failure budget of the real protocol's checks, 3; the
# variants use 1).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${VERIFY_OUT:-$root/build/model}
jobs=${VERIFY_JOBS:-2}
memlim=${VERIFY_MEMLIM:-2048}
depth=${VERIFY_DEPTH:-10000}
maxfail=${VERIFY_MAXFAIL:-3}
CC=${CC:-cc}

# name | -D macros | expect (pass: must hold, fail: must be refuted) | why
# The large state spaces get an optimised pan (gcc -O2 takes ~10 s to
# compile it, more than the small checks take to run at -O0): BIG below.
BIG="real key-alone reuse-after-reconnect"
checks() {
    cat <<EOF
real|-DMAXFAIL=$maxfail|pass|the protocol as fcgi-app/ implements it: one user, 3 claims, 2 instances
real-quota|-DCFG_QUOTA -DMAXFAIL=$maxfail|pass|the protocol, two users racing for the last seat (quota 1)
lock-alone|-DNO_UNIQUE_KEY|pass|no unique key: the lock and the UPDATE's ticket check keep one ticket
key-alone|-DNO_LOCK|pass|no named lock (TICKETS_TEST_UNSAFE_NO_LOCK): the unique key keeps one ticket
no-ticket-check|-DNO_TICKET_CHECK_IN_UPDATE|pass|UPDATE without the ticket check: lock + key still hold
release-before-commit|-DRELEASE_BEFORE_COMMIT|pass|RELEASE_LOCK before COMMIT: the unique key catches it
reuse-after-reconnect|-DREUSE_AFTER_RECONNECT|pass|reconnect assumed to keep the lock: the unique key catches it
no-lock-timeout|-DNO_LOCK_TIMEOUT|pass|GET_LOCK without timeout: no deadlock (dead sessions always end)
no-lock-no-key|-DNO_LOCK -DNO_UNIQUE_KEY|fail|neither guard: two tickets
lock-without-ticket-check|-DNO_UNIQUE_KEY -DNO_TICKET_CHECK_IN_UPDATE|fail|the lock alone without the UPDATE's ticket check (before 1433162)
release-before-commit-no-key|-DRELEASE_BEFORE_COMMIT -DNO_UNIQUE_KEY|fail|the lock released before COMMIT is no guard
reuse-after-reconnect-no-key|-DREUSE_AFTER_RECONNECT -DNO_UNIQUE_KEY|fail|a reconnected session does not hold the lock
auto-reconnect|-DAUTO_RECONNECT|fail|MYSQL_OPT_RECONNECT: the transaction is silently lost halfway
no-transaction|-DNO_TRANSACTION|fail|seat UPDATE and INSERT in autocommit
quota-only-in-facts|-DCFG_QUOTA -DNO_QUOTA_IN_UPDATE|fail|quota checked only in the lock-free read: oversold
leak-lock-on-refusal|-DLEAK_LOCK_ON_REFUSAL|fail|RELEASE_LOCK skipped on a refusal: a lock left behind
take-once|-DTAKE_ONCE|fail|coalescing leader ends its lead in a second step: a parked claim is never answered
EOF
}

# ---------------------------------------------------------------------------
# one check, run in $out/<name>; writes result (one line) and summary.txt

pan_stats() { # file -> "N states, T s"
    s=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$1" | head -n 1)
    t=$(sed -n 's/^pan: elapsed time \([0-9.e+]*\) .*/\1/p' "$1" | head -n 1)
    echo "${s:-?} states, ${t:-?} s"
}

# did this pan run search everything it should have?
pan_incomplete() { # file
    grep -q -e 'max search depth too small' -e 'reached -DMEMLIM bound' \
        -e 'out of memory' "$1"
}

pan_errors() { # file -> number of errors
    sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$1" | head -n 1
}

build_pan() { # dir flags...
    d=$1; shift
    (cd "$d" && $CC $opt -w -DMEMLIM="$memlim" "$@" -o pan pan.c)
}

summarise_trail() { # dir macros kind
    d=$1; macros=$2; kind=$3
    # the whole trail, every step (spin -t -p), and the model's own account
    # of it (its MSC lines, from a plain replay, where they are not cut up)
    # shellcheck disable=SC2086 # the macros are split on purpose
    (cd "$d" && spin -t -p $macros claim.pml > trail.txt 2>&1) || true
    # shellcheck disable=SC2086
    (cd "$d" && spin -t $macros claim.pml > story.txt 2>&1) || true
    steps=$(grep -c '^ *[0-9]*:.*proc ' "$d/trail.txt" || true)
    {
        echo "    $kind counterexample ($steps steps; every step: ${d#"$root"/}/trail.txt):"
        sed -n 's/^[[:space:]]*MSC: //p' "$d/story.txt" |
            sed 's/->[[:space:]]*/-> /; s/^/      /'
        grep -e 'Error:' -e 'text of failed' -e 'acceptance cycle' \
            "$d/trail.txt" | sed 's/^ */      /' | head -n 4
    } >> "$d/summary.txt"
}

run_one() { # name
    line=$(checks | grep "^$1|") || { echo "no check $1" >&2; exit 2; }
    name=$1
    macros=$(echo "$line" | cut -d'|' -f2)
    expect=$(echo "$line" | cut -d'|' -f3)
    why=$(echo "$line" | cut -d'|' -f4)
    d=$out/$name
    opt=-O0
    case " $BIG " in *" $name "*) opt=-O2 ;; esac
    rm -rf "$d"
    mkdir -p "$d"
    cp "$here/claim.pml" "$d/"
    t0=$(date +%s)
    : > "$d/summary.txt"
    # shellcheck disable=SC2086
    if ! (cd "$d" && spin -a $macros claim.pml > spin.txt 2>&1); then
        cat "$d/spin.txt" >> "$d/summary.txt"
        echo "ERROR" > "$d/result"
        return 0
    fi
    found=
    incomplete=
    if [ "$expect" = fail ]; then
        # breadth-first: the first error found is a shortest one
        search=-DBFS label="safety (BFS):" trail="shortest safety"
    else
        search=-DCOLLAPSE label="safety:  " trail=safety
    fi
    build_pan "$d" -DSAFETY -DNOCLAIM "$search"
    (cd "$d" && ./pan -m"$depth" > safety.txt 2>&1) || true
    echo "    $label $(pan_errors "$d/safety.txt") error(s), $(pan_stats "$d/safety.txt")" >> "$d/summary.txt"
    if [ "$(pan_errors "$d/safety.txt")" != 0 ] && [ -f "$d/claim.pml.trail" ]; then
        found=safety
        summarise_trail "$d" "$macros" "$trail"
    elif pan_incomplete "$d/safety.txt"; then
        incomplete=safety
    fi
    if [ -z "$found" ]; then
        rm -f "$d/claim.pml.trail"
        build_pan "$d" -DCOLLAPSE
        (cd "$d" && ./pan -a -N live -m"$depth" > liveness.txt 2>&1) || true
        echo "    liveness: $(pan_errors "$d/liveness.txt") error(s), $(pan_stats "$d/liveness.txt")" >> "$d/summary.txt"
        if [ "$(pan_errors "$d/liveness.txt")" != 0 ] && [ -f "$d/claim.pml.trail" ]; then
            found=liveness
            summarise_trail "$d" "$macros" "liveness"
        elif pan_incomplete "$d/liveness.txt"; then
            incomplete="${incomplete:+$incomplete, }liveness"
        fi
    fi
    t1=$(date +%s)
    if [ -n "$incomplete" ]; then
        verdict="INCOMPLETE ($incomplete: raise VERIFY_MEMLIM / VERIFY_DEPTH)"
        ok=no
    elif [ "$expect" = pass ] && [ -z "$found" ]; then
        verdict="holds, as it must"; ok=yes
    elif [ "$expect" = fail ] && [ -n "$found" ]; then
        verdict="refuted ($found), as it must be"; ok=yes
    elif [ "$expect" = pass ]; then
        verdict="VIOLATED ($found): the protocol is broken"; ok=no
    else
        verdict="UNEXPECTEDLY HOLDS: the check cannot see this break"; ok=no
    fi
    printf '%s %s %ss|%s %-28s %-40s %s\n' "$ok" "$name" "$((t1 - t0))" \
        "$([ "$ok" = yes ] && echo ok || echo FAIL)" "$name" "[$macros]" \
        "$verdict ($((t1 - t0)) s)" > "$d/result"
    echo "    $why" >> "$d/summary.txt"
}

# ---------------------------------------------------------------------------

if [ "${1:-}" = "-l" ]; then
    checks | awk -F'|' '{ printf "%-30s %-6s %-44s %s\n", $1, $3, $2, $4 }'
    exit 0
fi
if [ "${1:-}" = "--one" ]; then
    run_one "$2"
    exit 0
fi

command -v spin > /dev/null || {
    echo "verify: spin is not installed (apt-get install spin; scripts/install-deps.sh)" >&2
    exit 2
}

if [ $# -gt 0 ]; then
    names=$*
else
    names=$(checks | cut -d'|' -f1 | tr '\n' ' ')
fi
for n in $names; do
    checks | grep -q "^$n|" || { echo "verify: no check '$n' (-l lists them)" >&2; exit 2; }
done

mkdir -p "$out"
start=$(date +%s)
echo "verify: $(spin -V | head -n 1); $(echo "$names" | wc -w) checks, $jobs at a time, results in ${out#"$root"/}/"
# the big searches first, so that the small ones fill the other core
order=
for n in $BIG; do
    case " $names " in *" $n "*) order="$order $n" ;; esac
done
for n in $names; do
    case " $BIG " in *" $n "*) ;; *) order="$order $n" ;; esac
done
# shellcheck disable=SC2086
printf '%s\n' $order | xargs -P "$jobs" -I{} "$0" --one {}

failed=0
for n in $names; do
    if [ ! -f "$out/$n/result" ]; then
        echo "FAIL $n: no result"
        failed=1
        continue
    fi
    cut -d'|' -f2- "$out/$n/result"
    cat "$out/$n/summary.txt"
    [ "$(cut -d' ' -f1 "$out/$n/result")" = yes ] || failed=1
done
end=$(date +%s)
if [ "$failed" -ne 0 ]; then
    echo "verify: FAILED ($((end - start)) s)"
    exit 1
fi
echo "verify: OK: the protocol holds, every broken variant is refuted ($((end - start)) s)"
