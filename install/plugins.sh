#!/usr/bin/env bash
# Installs the CLIPShape plug-ins for the current user and builds the Krita zip.
#
#   GIMP 3 : ${XDG_CONFIG_HOME:-~/.config}/GIMP/3.0/plug-ins/clipshape/
#              clipshape.py (executable) + clipshape_ctypes.py + clipshape_logic.py + libclipshape.so
#   Krita  : ${XDG_DATA_HOME:-~/.local/share}/krita/pykrita/
#              clipshape.desktop + clipshape/ (the package, the same shared modules, libclipshape.so)
#   zip    : dist/clipshape-krita.zip (clipshape.desktop + clipshape/ with the shared modules) for
#            Krita's Tools › Scripts › Import Python Plugin from File
#
# A host is installed only when its directory exists (GIMP 3 or Krita has run once), else the
# script prints where the files would go. Idempotent: unchanged files are left alone, and it says
# what it did. libclipshape.so is linked (a symlink, so a rebuild is picked up) unless --copy-lib.
#
# Options
#   --home DIR       install under DIR instead of $HOME (DESTDIR-like; XDG_* are ignored then)
#   --create-dirs    create the hosts' directories when missing (tests, packaging)
#   --copy-lib       copy libclipshape.so instead of symlinking it (also CLIPSHAPE_PLUGINS_COPY_LIB=1)
#   --zip-only       only build dist/clipshape-krita.zip
#   --no-zip         do not build the zip
#   --dist DIR       where the zip goes (default <repo>/dist)
#   --zip-with-lib   put libclipshape.so into the zip too (only useful on a machine with the same
#                    torch at the library's RUNPATH)
# Environment: CLIPSHAPE_LIB (default <repo>/target/release/libclipshape.so), DESTDIR (a prefix
# for every installed path, like make install).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=${CLIPSHAPE_LIB:-$REPO/target/release/libclipshape.so}
SHARED=("$REPO/plugin-wrappers/python/clipshape_ctypes.py" "$REPO/plugin-wrappers/python/clipshape_logic.py")
GIMP_SRC=$REPO/plugin-wrappers/gimp/clipshape
KRITA_SRC=$REPO/plugin-wrappers/krita
# The one version (Cargo.toml), for the plug-ins' About and tooltip.
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml")

home=$HOME
home_given=0
create=0
copy_lib=${CLIPSHAPE_PLUGINS_COPY_LIB:-0}
zip_only=0
zip_lib=0
no_zip=0
dist=$REPO/dist
while [ $# -gt 0 ]; do
    case "$1" in
        --home) home=${2:?--home needs a directory}; home_given=1; shift ;;
        --create-dirs) create=1 ;;
        --copy-lib) copy_lib=1 ;;
        --zip-only) zip_only=1 ;;
        --no-zip) no_zip=1 ;;
        --dist) dist=${2:?--dist needs a directory}; shift ;;
        --zip-with-lib) zip_lib=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "plugins.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$home_given" = 1 ]; then
    config_home=$home/.config
    data_home=$home/.local/share
else
    config_home=${XDG_CONFIG_HOME:-$home/.config}
    data_home=${XDG_DATA_HOME:-$home/.local/share}
fi
prefix=${DESTDIR:-}
GIMP_BASE=$prefix$config_home/GIMP/3.0
GIMP_DIR=$GIMP_BASE/plug-ins/clipshape
KRITA_BASE=$prefix$data_home/krita
KRITA_DIR=$KRITA_BASE/pykrita

say() { printf '  %s\n' "$*"; }

# put SRC DST [MODE]: copy when different, say what happened.
put() {
    local src=$1 dst=$2 mode=${3:-644}
    if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s "$src" "$dst"; then
        chmod "$mode" "$dst"
        say "unchanged  $dst"
    else
        rm -f "$dst"
        install -m "$mode" "$src" "$dst"
        say "installed  $dst"
    fi
}

put_version() {
    local tmp
    tmp=$(mktemp)
    echo "$VERSION" >"$tmp"
    put "$tmp" "$1/VERSION"
    rm -f "$tmp"
}

put_lib() {
    local dir=$1 dst=$1/libclipshape.so
    if [ ! -e "$LIB" ]; then
        say "MISSING    $LIB (build it with install/setup.sh or cargo build --release; or set CLIPSHAPE_LIB); the plug-in will say so"
        return
    fi
    local lib_abs
    lib_abs=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")
    if [ "$copy_lib" = 1 ]; then
        put "$lib_abs" "$dst" 755
    elif [ -L "$dst" ] && [ "$(readlink "$dst")" = "$lib_abs" ]; then
        say "unchanged  $dst -> $lib_abs"
    else
        rm -f "$dst"
        ln -s "$lib_abs" "$dst"
        say "linked     $dst -> $lib_abs"
    fi
}

# host_dir NAME BASE: whether to install into BASE (exists, or --create-dirs).
host_ready() {
    local name=$1 base=$2
    if [ -d "$base" ]; then return 0; fi
    if [ "$create" = 1 ]; then mkdir -p "$base"; say "created    $base"; return 0; fi
    echo "$name: $base does not exist ($name has not run yet); the files would go to:"
    return 1
}

install_gimp() {
    echo "GIMP 3 plug-in -> $GIMP_DIR"
    if ! host_ready "GIMP 3" "$GIMP_BASE"; then
        say "$GIMP_DIR/{clipshape.py,clipshape_ctypes.py,clipshape_logic.py,libclipshape.so}"
        say "(run GIMP 3 once, or pass --create-dirs)"
        return
    fi
    mkdir -p "$GIMP_DIR"
    put "$GIMP_SRC/clipshape.py" "$GIMP_DIR/clipshape.py" 755
    local f
    for f in "${SHARED[@]}"; do put "$f" "$GIMP_DIR/$(basename "$f")"; done
    put_version "$GIMP_DIR"
    put_lib "$GIMP_DIR"
    say "restart GIMP; the plug-in is Filters › Generic › CLIPShape…"
}

krita_package_files() { (cd "$KRITA_SRC/clipshape" && ls -1 ./*.py | sed 's|^\./||'); }

install_krita() {
    echo "Krita plug-in -> $KRITA_DIR"
    if ! host_ready "Krita" "$KRITA_BASE"; then
        say "$KRITA_DIR/clipshape.desktop and $KRITA_DIR/clipshape/ (package + shared modules + libclipshape.so)"
        say "(run Krita once, or pass --create-dirs, or import dist/clipshape-krita.zip from Krita)"
        return
    fi
    mkdir -p "$KRITA_DIR/clipshape"
    put "$KRITA_SRC/clipshape.desktop" "$KRITA_DIR/clipshape.desktop"
    local f
    for f in $(krita_package_files); do put "$KRITA_SRC/clipshape/$f" "$KRITA_DIR/clipshape/$f"; done
    for f in "${SHARED[@]}"; do put "$f" "$KRITA_DIR/clipshape/$(basename "$f")"; done
    put_version "$KRITA_DIR/clipshape"
    put_lib "$KRITA_DIR/clipshape"
    say "enable it once: Settings › Configure Krita › Python Plugin Manager › CLIPShape, restart Krita"
}

build_zip() {
    local out=$dist/clipshape-krita.zip stage
    echo "Krita zip -> $out"
    stage=$(mktemp -d)
    mkdir -p "$stage/clipshape" "$dist"
    cp "$KRITA_SRC/clipshape.desktop" "$stage/"
    local f
    for f in $(krita_package_files); do cp "$KRITA_SRC/clipshape/$f" "$stage/clipshape/"; done
    for f in "${SHARED[@]}"; do cp "$f" "$stage/clipshape/"; done
    echo "$VERSION" >"$stage/clipshape/VERSION"
    if [ "$zip_lib" = 1 ] && [ -e "$LIB" ]; then cp -L "$LIB" "$stage/clipshape/libclipshape.so"; fi
    # Fixed timestamps and order: the same sources give the same zip.
    find "$stage" -exec touch -h -d '2000-01-01 00:00:00' {} +
    "${PYTHON:-python3}" - "$stage" "$out.tmp" <<'EOF'
import os, sys, zipfile
stage, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for dirpath, dirnames, filenames in sorted(os.walk(stage)):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            arc = os.path.relpath(path, stage)
            info = zipfile.ZipInfo(arc, (2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            with open(path, "rb") as f:
                z.writestr(info, f.read())
EOF
    if [ -f "$out" ] && cmp -s "$out.tmp" "$out"; then
        rm -f "$out.tmp"
        say "unchanged  $out"
    else
        mv "$out.tmp" "$out"
        say "built      $out"
    fi
    rm -rf "$stage"
}

if [ "$zip_only" = 0 ]; then
    install_gimp
    install_krita
fi
if [ "$no_zip" = 0 ]; then build_zip; fi
