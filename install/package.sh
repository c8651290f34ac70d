#!/usr/bin/env bash
# Builds a release a person installs without a compiler (PACKAGING.md says what goes in, why,
# and what each platform needs):
#   dist/clipshape-<version>-linux-x86_64.tar.xz   the engine (library, libtorch's CPU engine,
#                                                  command line), header, plug-ins, licences,
#                                                  install.sh
#   dist/clipshape-krita-<version>.zip             Krita's "Import Python Plugin from File", the
#                                                  engine inside
#   dist/clipshape-<version>-linux-x86_64.debug/   the debug info of the library and the command
#                                                  line (not shipped; gdb finds it by debuglink)
#
# The release build lives in target/package (its own flags: no path of this machine, $ORIGIN
# rpaths, no libtorch_cuda), so the developer build in target/release is left alone.
#   --no-zip     skip the Krita zip (the archive alone)
#   --fast       xz -1 instead of -6 (tests; the archive is larger)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
. install/env.sh

zip=1
xz_level=-6
while [ $# -gt 0 ]; do
    case "$1" in
        --no-zip) zip=0 ;;
        --fast) xz_level=-1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

t0=$SECONDS
clipshape_ensure_venv
command -v patchelf >/dev/null || { echo "package.sh: patchelf is needed (apt-get install patchelf)" >&2; exit 1; }
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || { echo "package.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
NAME=clipshape-$VERSION-linux-x86_64
DIST=$REPO/dist
TARGET=$REPO/target/package
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
TORCH_LIB=$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
SITE=$(dirname "$(dirname "$TORCH_LIB")")
TORCH_VERSION=$(python -c 'import torch; print(torch.__version__.split("+")[0])')

clipshape_step "release build $VERSION in target/package (no path of this machine, \$ORIGIN rpaths, no libtorch_cuda)"
# Paths of this machine would reach the binaries through panic messages and C++ __FILE__s.
CLIPSHAPE_RELEASE=1 CARGO_TARGET_DIR=$TARGET \
    RUSTFLAGS="--remap-path-prefix=$HOME=home --remap-path-prefix=$REPO=clipshape --remap-path-prefix=$CARGO_HOME=cargo --remap-path-prefix=$SITE=site-packages" \
    CXXFLAGS="-ffile-prefix-map=$HOME=home -ffile-prefix-map=$REPO=clipshape -ffile-prefix-map=$CARGO_HOME=cargo -ffile-prefix-map=$SITE=site-packages" \
    cargo build --release -p clipshape -p clipshape-cli

stage=$(mktemp -d "${TMPDIR:-/tmp}/clipshape-package.XXXXXX")
trap 'rm -rf "$stage"' EXIT
out=$stage/$NAME
debug=$DIST/$NAME.debug
mkdir -p "$out"/{bin,lib,include,licences,plugins/gimp/clipshape,plugins/krita/clipshape} "$debug"

clipshape_step "the library and the command line, stripped (debug info in $debug)"
# ship SRC DST: stripped copy with a debuglink to DST's debug file.
ship() {
    local src=$1 dst=$2 dbg
    dbg=$debug/$(basename "$dst").debug
    objcopy --only-keep-debug "$src" "$dbg"
    objcopy --strip-debug --strip-unneeded "$src" "$dst"
    (cd "$debug" && objcopy --add-gnu-debuglink="$(basename "$dbg")" "$dst")
}
ship "$TARGET/release/libclipshape.so" "$out/lib/libclipshape.so"
ship "$TARGET/release/clipshape" "$out/bin/clipshape"

clipshape_step "libtorch $TORCH_VERSION's CPU engine from $TORCH_LIB (real files named by their soname)"
# What libtorch_cpu.so NEEDS beyond the system: its own folder's libraries and two small CUDA
# runtime libraries (it links them though it uses no GPU).
for f in libtorch_cpu.so libc10.so libgomp.so.1; do cp -L "$TORCH_LIB/$f" "$out/lib/$f"; done
for f in libcudart.so.13 libcupti.so.13; do
    src=$(find "$SITE/nvidia" -name "$f" -print -quit)
    [ -n "$src" ] || { echo "package.sh: $f not found under $SITE/nvidia" >&2; exit 1; }
    cp -L "$src" "$out/lib/$f"
done
echo "$TORCH_VERSION" >"$out/lib/torch_version.txt"
# The wheel's libraries look in ../../nvidia/… (its own layout) before $ORIGIN: here that would
# be folders outside the install. Only their own folder.
for f in libtorch_cpu.so libc10.so libgomp.so.1 libcudart.so.13 libcupti.so.13; do
    if readelf -d "$out/lib/$f" | grep -qE '\((RPATH|RUNPATH)\)'; then
        patchelf --force-rpath --set-rpath '$ORIGIN' "$out/lib/$f"
    fi
done
chmod 755 "$out"/lib/*.so* "$out/bin/clipshape"

clipshape_step "header, plug-ins, licences, install.sh"
cp include/clipshape.h "$out/include/"
cp plugin-wrappers/gimp/clipshape/clipshape.py "$out/plugins/gimp/clipshape/"
cp plugin-wrappers/krita/clipshape.desktop "$out/plugins/krita/"
cp plugin-wrappers/krita/clipshape/*.py "$out/plugins/krita/clipshape/"
for d in gimp/clipshape krita/clipshape; do
    cp plugin-wrappers/python/clipshape_ctypes.py plugin-wrappers/python/clipshape_logic.py "$out/plugins/$d/"
    echo "$VERSION" >"$out/plugins/$d/VERSION"
done
chmod 755 "$out/plugins/gimp/clipshape/clipshape.py"
cp install/bundle-install.sh "$out/install.sh"
chmod 755 "$out/install.sh"
echo "$VERSION" >"$out/VERSION"
cp LICENSE "$out/licences/clipshape-LICENSE.txt"
dist_info=$(find "$SITE" -maxdepth 1 -name "torch-$TORCH_VERSION*.dist-info" -print -quit)
for f in LICENSE NOTICE; do
    src=$(find "$dist_info" -maxdepth 3 -type f -name "$f*" -print -quit)
    [ -n "$src" ] && cp "$src" "$out/licences/libtorch-$(basename "$src").txt"
done
for w in nvidia_cuda_runtime nvidia_cuda_cupti; do
    src=$(find "$SITE" -maxdepth 3 -type f -path "*$w*dist-info*" -iname "License*" -print -quit)
    [ -n "$src" ] && cp "$src" "$out/licences/$w-License.txt"
done
cp install/LICENSES-THIRD-PARTY.md "$out/licences/README.md"
# The model licences the store shows (the weights are downloaded, not shipped).
python - "$REPO/models/manifest.toml" >"$out/licences/models.txt" <<'EOF'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))
print("Model files are downloaded on first use, never shipped. Their licences:\n")
for name, f in m["files"].items():
    print("%s\n  %s\n" % (name, f.get("licence", "no licence note")))
EOF

clipshape_step "checks: relocatable, no libtorch_cuda, no path of this machine, glibc floor"
bash install/check-bundle.sh "$out" "$REPO" "$CARGO_HOME" "$SITE"
cp install/GLIBC_FLOOR "$out/GLIBC_FLOOR"

mkdir -p "$DIST"
clipshape_step "dist/$NAME.tar.xz (xz $xz_level)"
find "$out" -exec touch -h -d '2026-01-01 00:00:00' {} +
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner -cf - "$NAME" | xz "$xz_level" -T0 >"$DIST/$NAME.tar.xz.part"
mv "$DIST/$NAME.tar.xz.part" "$DIST/$NAME.tar.xz"

if [ "$zip" = 1 ]; then
    clipshape_step "dist/clipshape-krita-$VERSION.zip (the plug-in with the engine inside)"
    kz=$stage/krita-zip
    mkdir -p "$kz/clipshape"
    cp "$out/plugins/krita/clipshape.desktop" "$kz/"
    cp "$out"/plugins/krita/clipshape/* "$kz/clipshape/"
    cp "$out"/lib/* "$kz/clipshape/"
    cp -r "$out/licences" "$kz/clipshape/licences"
    python - "$kz" "$DIST/clipshape-krita-$VERSION.zip" <<'EOF'
import os, sys, zipfile
stage, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out + ".part", "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
    for dirpath, dirnames, filenames in sorted(os.walk(stage)):
        dirnames.sort()
        # Folder entries too: Krita's importer finds the plug-in's package by its `name/` entry.
        for name in dirnames:
            info = zipfile.ZipInfo(os.path.relpath(os.path.join(dirpath, name), stage) + "/", (2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o40755 << 16) | 0x10
            z.writestr(info, b"")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            info = zipfile.ZipInfo(os.path.relpath(path, stage), (2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if ".so" in name else 0o644) << 16
            with open(path, "rb") as f:
                z.writestr(info, f.read())
os.replace(out + ".part", out)
EOF
fi

clipshape_step "done in $((SECONDS - t0)) s:"
ls -l "$DIST/$NAME.tar.xz" ${zip:+"$DIST/clipshape-krita-$VERSION.zip"} 2>/dev/null | awk '{ printf "    %6.1f MB  %s\n", $5 / 1e6, $9 }'
