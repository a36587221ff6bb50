#!/usr/bin/env bash
# The hardening of a built tickets-fcgi, read off the binary itself with
# binutils (readelf, nm, objdump): what `make` and the Debian package
# promise (Makefile "Hardened by default", debian/rules hardening=+all).
#
#   tests/hardening/check_binary.sh build/tickets-fcgi      (make test-hardening)
#   tests/hardening/check_binary.sh /usr/bin/tickets-fcgi   (make test-deb)
#
# Prints one line per property and exits 1 if any is missing.
set -u
bin=${1:?usage: $0 BINARY}
for tool in readelf nm objdump; do
    command -v "$tool" >/dev/null || { echo "missing $tool (package binutils)"; exit 2; }
done
[ -x "$bin" ] || { echo "no executable at $bin"; exit 2; }

failed=0
check() {   # check NAME COMMAND...: the command succeeds when the property holds
    local name=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "ok      $name"
    else
        echo "MISSING $name"
        failed=1
    fi
}

dynsyms=$(nm -D "$bin")
dynamic=$(readelf -dW "$bin")
check "PIE (ELF type DYN, FLAGS_1 PIE)" \
    sh -c 'readelf -hW "$1" | grep -q "Type:.*DYN" && printf "%s" "$2" | grep -q "FLAGS_1.*PIE"' _ "$bin" "$dynamic"
check "full RELRO: GNU_RELRO segment" sh -c 'readelf -lW "$1" | grep -q GNU_RELRO' _ "$bin"
check "full RELRO: BIND_NOW" sh -c 'printf "%s" "$1" | grep -Eq "\(FLAGS\).*BIND_NOW|FLAGS_1.*NOW"' _ "$dynamic"
check "stack protector: __stack_chk_fail" sh -c 'printf "%s" "$1" | grep -q " __stack_chk_fail"' _ "$dynsyms"
check "FORTIFY_SOURCE: __*_chk functions" sh -c 'printf "%s" "$1" | grep -Eq " __[a-z]+_chk(@|$)"' _ "$dynsyms"
check "non-executable stack (GNU_STACK RW)" sh -c 'readelf -lW "$1" | grep GNU_STACK | grep -qv RWE' _ "$bin"
case "$(readelf -hW "$bin" | sed -n 's/.*Machine: *//p')" in
*X86-64*)
    # -fcf-protection: functions start with endbr64 (glibc's crt files lack
    # the CET note, so the ELF note cannot tell). Stripped binaries (the
    # package's) have no symbols: then count them; a build without the flag
    # has only the couple that come with the crt files.
    if nm "$bin" 2>/dev/null | grep -q ' T config_load$'; then
        check "control-flow protection: endbr64 at function entries" \
            sh -c 'objdump -d --no-show-raw-insn "$1" | grep -A1 "<config_load>:" | grep -q endbr64' _ "$bin"
    else
        check "control-flow protection: endbr64 instructions (stripped binary)" \
            sh -c '[ "$(objdump -d --no-show-raw-insn "$1" | grep -c endbr64)" -ge 20 ]' _ "$bin"
    fi
    ;;
esac
if [ "$failed" -ne 0 ]; then
    echo "check_binary: $bin is NOT hardened as promised"
    exit 1
fi
echo "check_binary: $bin: all hardening properties present"
