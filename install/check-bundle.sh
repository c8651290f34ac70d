#!/usr/bin/env bash
# Checks an unpacked release (install/package.sh runs it on what it ships; the tests run it on
# the archive): fails, naming the file, when
#   - an ELF file's RPATH/RUNPATH holds anything but $ORIGIN-relative folders inside the bundle;
#   - libclipshape.so NEEDS libtorch_cuda.so (a CPU-only person would need the GPU engine);
#   - a library an ELF file NEEDS is neither shipped in lib/ nor part of the system every Linux
#     has (the GNU C library's own, libstdc++, libgcc_s);
#   - any shipped file holds a path of the build machine (given as further arguments);
#   - an ELF file needs a GNU C library newer than install/GLIBC_FLOOR.
#
#   install/check-bundle.sh BUNDLE_DIR [BUILD_PATH…]
set -euo pipefail
bundle=${1:?usage: check-bundle.sh BUNDLE_DIR [BUILD_PATH…]}
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
floor=$(cat "$HERE/GLIBC_FLOOR")
fail=0
bad() { echo "check-bundle: $*" >&2; fail=1; }

# What every glibc-based Linux has; anything else must be in lib/.
system_lib() {
    case "$1" in
        libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|libutil.so.1|ld-linux-x86-64.so.2) return 0 ;;
        libstdc++.so.6|libgcc_s.so.1) return 0 ;;
    esac
    return 1
}

newest=0.0
while IFS= read -r -d '' f; do
    head -c 4 "$f" | grep -q $'\x7fELF' || continue
    rel=${f#"$bundle"/}
    while read -r path; do
        IFS=: read -ra parts <<<"$path"
        for p in "${parts[@]}"; do
            case "$p" in
                '$ORIGIN'|'$ORIGIN/'*)
                    # …and it stays inside the bundle (a wheel's `$ORIGIN/../../nvidia` would not).
                    where=$(realpath -m --relative-to="$bundle" "$(dirname "$f")${p#\$ORIGIN}")
                    case "$where" in ..|../*) bad "$rel: RPATH/RUNPATH entry $p leads out of the bundle" ;; esac ;;
                *) bad "$rel: RPATH/RUNPATH entry $p is not relative to \$ORIGIN" ;;
            esac
        done
    done < <(readelf -d "$f" | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p')
    while read -r need; do
        if [ "$rel" = lib/libclipshape.so ] && [ "$need" = libtorch_cuda.so ]; then
            bad "lib/libclipshape.so NEEDS libtorch_cuda.so: a CPU-only person would need the GPU engine"
        fi
        [ -e "$bundle/lib/$need" ] || system_lib "$need" || bad "$rel NEEDS $need, which is neither in lib/ nor a system library"
    done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    v=$(objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)
    if [ -n "$v" ]; then
        if [ "$(printf '%s\n%s\n' "$floor" "$v" | sort -V | tail -n1)" != "$floor" ]; then
            bad "$rel needs GLIBC_$v, newer than the stated floor $floor (install/GLIBC_FLOOR)"
        fi
        newest=$(printf '%s\n%s\n' "$newest" "$v" | sort -V | tail -n1)
    fi
done < <(find "$bundle" -type f -print0)

for p in "$@"; do
    [ -n "$p" ] || continue
    hits=$(grep -rlF --binary-files=binary -- "$p" "$bundle" || true)
    [ -z "$hits" ] || bad "a path of the build machine ($p) is in: $(echo "$hits" | sed "s|$bundle/||" | tr '\n' ' ')"
done
[ -z "$(find "$bundle" -type l)" ] || bad "symbolic links: $(find "$bundle" -type l | tr '\n' ' ')"

if [ "$fail" = 0 ]; then
    echo "check-bundle: relocatable, no libtorch_cuda, nothing of the build machine; newest glibc needed $newest (floor $floor)"
fi
exit "$fail"
