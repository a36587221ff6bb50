#!/bin/sh
# fuzz/run.sh: build and run the fuzz targets of fuzz/ (issue 3, row 9).
#
#   fuzz/run.sh replay          build with $CC (gcc is fine) and ASan+UBSan,
#                               replay fuzz/corpus/<target>/ and the kept
#                               crashes in fuzz/regressions/<target>/; no
#                               clang needed (CI: make test-faults)
#   fuzz/run.sh fuzz [SECONDS]  build with clang -fsanitize=fuzzer and run
#                               every target for SECONDS in total (default
#                               60), starting from the seed corpus; a crash
#                               stops it, fails, and names the input to keep
#                               in fuzz/regressions/<target>/
#
# Targets: auth (auth_verify: token parsing) and request (FastCGI params
# and body to the response: libfcgi, http.c, routes.c, auth.c, util.c,
# tickets.c over fuzz/stub_db.c). Output goes to build/fuzz/ (FUZZ_OUT).
# clang's libFuzzer on Debian: apt-get install clang libclang-rt-14-dev
set -eu
cd "$(dirname "$0")/.."

OUT=${FUZZ_OUT:-build/fuzz}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
TARGETS="auth request"
FLAGS="-std=c11 -g -O1 -D_GNU_SOURCE -DTICKETS_VERSION=\"fuzz\" -Ifcgi-app \
-Wall -Wextra -Wno-unused-parameter -fno-omit-frame-pointer \
$($PKG_CONFIG --cflags fcgi jansson libcrypto)"
LIBS="$($PKG_CONFIG --libs fcgi jansson libcrypto) -pthread"

sources() {
    case $1 in
    auth) echo "fuzz/fuzz_auth.c fcgi-app/auth.c fcgi-app/util.c" ;;
    request) echo "fuzz/fuzz_request.c fuzz/stub_db.c fcgi-app/http.c \
fcgi-app/routes.c fcgi-app/auth.c fcgi-app/util.c fcgi-app/inflight.c \
fcgi-app/conn.c fcgi-app/conn_scan.c fcgi-app/conn_park.c \
fcgi-app/conn_limits.c fcgi-app/park.c fcgi-app/metrics.c fcgi-app/log.c \
fcgi-app/tickets.c fcgi-app/pace.c fcgi-app/textcache.c" ;;
    esac
}

mkdir -p "$OUT"
case ${1:-} in
replay)
    cc=${CC:-cc}
    san="-fsanitize=address,undefined -fno-sanitize-recover=all"
    for t in $TARGETS; do
        # shellcheck disable=SC2046,SC2086
        $cc $FLAGS $san -o "$OUT/replay-$t" fuzz/standalone.c $(sources $t) $LIBS
    done
    for t in $TARGETS; do
        dirs="fuzz/corpus/$t"
        [ -d "fuzz/regressions/$t" ] && dirs="$dirs fuzz/regressions/$t"
        # shellcheck disable=SC2086
        ASAN_OPTIONS=detect_leaks=1 "$OUT/replay-$t" $dirs 2>"$OUT/replay-$t.log" || {
            echo "fuzz/run.sh: replay of $t FAILED; see $OUT/replay-$t.log" >&2
            tail -30 "$OUT/replay-$t.log" >&2
            exit 1
        }
    done
    ;;
fuzz)
    total=${2:-60}
    n=$(echo $TARGETS | wc -w)
    each=$((total / n))
    [ "$each" -ge 1 ] || each=1
    san="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
    for t in $TARGETS; do
        # shellcheck disable=SC2046,SC2086
        clang $FLAGS $san -o "$OUT/fuzz-$t" $(sources $t) $LIBS
    done
    rc=0
    for t in $TARGETS; do
        mkdir -p "$OUT/corpus-$t" "$OUT/artifacts-$t"
        echo "== fuzz $t for ${each}s"
        # stderr of the target (its JSON log lines) closed; sanitizer reports
        # to a file beside the crashing input
        ASAN_OPTIONS="log_path=$OUT/artifacts-$t/sanitizer:detect_leaks=1" \
        UBSAN_OPTIONS="log_path=$OUT/artifacts-$t/sanitizer:print_stacktrace=1" \
            "$OUT/fuzz-$t" -max_total_time="$each" -max_len=16384 -timeout=10 \
            -close_fd_mask=2 -print_final_stats=1 \
            -artifact_prefix="$OUT/artifacts-$t/" "$OUT/corpus-$t" "fuzz/corpus/$t" \
            || { rc=1; echo "fuzz/run.sh: $t found a crash: $(ls "$OUT/artifacts-$t"/crash-* \
                "$OUT/artifacts-$t"/leak-* "$OUT/artifacts-$t"/timeout-* 2>/dev/null | head -3)"
                 echo "fix it, then keep the input: cp <file> fuzz/regressions/$t/"; }
    done
    exit $rc
    ;;
*)
    sed -n '2,17p' "$0"
    exit 2
    ;;
esac
