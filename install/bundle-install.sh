#!/usr/bin/env bash
# CLIPShape — text-driven shape editing of photos in GIMP 3 and Krita 5.2.
# Installs this release for you alone: no root, no compiler, no Python packages.
#
#   ./install.sh               install (an earlier CLIPShape installed this way is replaced)
#   ./install.sh --gpu-engine DIR
#                              also use the GPU engine in DIR (a folder holding libtorch_cuda.so
#                              of torch 2.11: see README's "GPU" section)
#   ./install.sh --uninstall   remove exactly what install.sh put in place
#   ./install.sh --help
#
# Where things go:
#   the engine       ~/.local/share/clipshape/VERSION/   (library, libtorch's CPU engine, the
#                    command line, header, licences; $XDG_DATA_HOME when set)
#   the command      ~/.local/bin/clipshape              (unless a file of yours is there)
#   GIMP 3           ~/.config/GIMP/3.0/plug-ins/clipshape/, and the Flatpak GIMP's
#                    ~/.var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins/clipshape/ when present
#   Krita            ~/.local/share/krita/pykrita/clipshape.desktop and clipshape/
# A host that has never run (no settings folder yet) is left alone; run it once, then run this
# again. The record of what was installed is ~/.local/share/clipshape/installed.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=$(cat "$HERE/VERSION")
DATA=${XDG_DATA_HOME:-$HOME/.local/share}
CONFIG=${XDG_CONFIG_HOME:-$HOME/.config}
BASE=$DATA/clipshape
ENGINE=$BASE/$VERSION
RECORD=$BASE/installed.txt
LAUNCHER=$HOME/.local/bin/clipshape

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

uninstall() {
    [ -f "$RECORD" ] || { say "Nothing to remove: $RECORD does not exist (CLIPShape was not installed by install.sh)."; return 0; }
    local old
    old=$(sed -n 's/^# version //p' "$RECORD")
    say "Removing CLIPShape ${old:-(unknown version)}:"
    # Files first, then the folders we made, deepest first; a folder that holds anything else
    # (a file of yours) stays.
    local kind path
    while IFS=' ' read -r kind path; do
        [ "$kind" = f ] || continue
        if [ -f "$path" ] || [ -L "$path" ]; then rm -f -- "$path"; fi
    done <"$RECORD"
    tac "$RECORD" | while IFS=' ' read -r kind path; do
        [ "$kind" = d ] || continue
        [ "$path" = "$BASE" ] && continue
        # Python's compiled copies of our modules, made beside them when a host imported them.
        if [ -d "$path/__pycache__" ] && [ ! -L "$path/__pycache__" ]; then rm -rf -- "$path/__pycache__"; fi
        rmdir -- "$path" 2>/dev/null || { [ -d "$path" ] && say "  kept $path (it holds files that are not CLIPShape's)"; }
        true
    done
    rm -f -- "$RECORD"
    rmdir -- "$BASE" 2>/dev/null || true
    say "  done."
    # What CLIPShape made while it was used is the person's: the downloaded models.
    if [ -d "$BASE/models" ]; then
        say "  kept your downloaded models in $BASE/models (remove that folder for the space)"
    fi
}

gpu_engine=""
case "${1:-}" in
    --uninstall) uninstall; exit 0 ;;
    --gpu-engine)
        gpu_engine=$(cd "${2:?--gpu-engine needs the folder holding libtorch_cuda.so}" && pwd)
        [ -f "$gpu_engine/libtorch_cuda.so" ] || die "--gpu-engine $gpu_engine: no libtorch_cuda.so there" ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    "") ;;
    *) die "unknown argument $1 (see --help)" ;;
esac

# The oldest GNU C library the release runs on (a newer one is fine).
floor=$(cat "$HERE/GLIBC_FLOOR")
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')
if [ -z "$have" ]; then
    die "this system has no GNU C library (glibc), which this release of CLIPShape needs ($floor or later)"
fi
if [ "$(printf '%s\n%s\n' "$floor" "$have" | sort -V | head -n1)" != "$floor" ]; then
    die "this system's GNU C library is $have; this release of CLIPShape needs $floor or later"
fi

if [ -f "$RECORD" ]; then
    say "An earlier CLIPShape is installed; replacing it."
    uninstall
fi

new_record=$(mktemp)
trap 'rm -f "$new_record"' EXIT
echo "# version $VERSION" >"$new_record"
# mkdirs DIR: makes DIR and its missing parents, recording each one made.
mkdirs() {
    local missing=() d=$1
    while [ ! -d "$d" ]; do missing+=("$d"); d=$(dirname "$d"); done
    local i
    for ((i = ${#missing[@]} - 1; i >= 0; i--)); do
        mkdir -- "${missing[$i]}"
        echo "d ${missing[$i]}" >>"$new_record"
    done
}
# put SRC DST MODE: a new file of ours (a file already there is left alone and said).
put() {
    if [ -e "$3" ] || [ -L "$3" ]; then
        say "  left alone: $3 (a file that is not CLIPShape's is there)"
        return 1
    fi
    install -m "$1" -- "$2" "$3"
    echo "f $3" >>"$new_record"
}
# copy_tree SRC DST: every file of SRC under DST.
copy_tree() {
    local src=$1 dst=$2 f rel mode
    mkdirs "$dst"
    find "$src" -type f -print0 | sort -z | while IFS= read -r -d '' f; do
        rel=${f#"$src"/}
        mkdirs "$(dirname "$dst/$rel")"
        mode=644
        [ -x "$f" ] && mode=755
        put "$mode" "$f" "$dst/$rel" || true
    done
}
record_now() { cp "$new_record" "$RECORD"; }

say "Installing CLIPShape $VERSION"
say "  engine: $ENGINE"
mkdirs "$BASE"
for part in bin lib include licences; do copy_tree "$HERE/$part" "$ENGINE/$part"; done
for f in VERSION GLIBC_FLOOR; do put 644 "$HERE/$f" "$ENGINE/$f" || true; done
if [ -n "$gpu_engine" ]; then
    gpu_file=$(mktemp)
    echo "$gpu_engine" >"$gpu_file"
    put 644 "$gpu_file" "$ENGINE/lib/gpu_engine.path" && say "  GPU engine: $gpu_engine"
    rm -f "$gpu_file"
fi
put 755 "$HERE/install.sh" "$ENGINE/install.sh" || true
record_now

# The command: a launcher in ~/.local/bin (in PATH on most systems once it exists).
launcher=$(mktemp)
printf '#!/bin/sh\n# CLIPShape %s (installed by install.sh; ./install.sh --uninstall removes it)\nexec "%s" "$@"\n' \
    "$VERSION" "$ENGINE/bin/clipshape" >"$launcher"
mkdirs "$(dirname "$LAUNCHER")"
if put 755 "$launcher" "$LAUNCHER"; then say "  command: $LAUNCHER"; fi
rm -f "$launcher"

# plugin NAME SRC DST: the plug-in's files, told where the engine is.
plugin() {
    local name=$1 src=$2 dst=$3 engine_file
    copy_tree "$src" "$dst"
    engine_file=$(mktemp)
    echo "$ENGINE/lib/libclipshape.so" >"$engine_file"
    put 644 "$engine_file" "$dst/libclipshape.path" || true
    rm -f "$engine_file"
    say "  $name: $dst"
}

gimp_found=0
for gimp in "$CONFIG/GIMP/3.0" "$HOME/.var/app/org.gimp.GIMP/config/GIMP/3.0"; do
    [ -d "$gimp" ] || continue
    gimp_found=1
    if [ -e "$gimp/plug-ins/clipshape" ]; then
        say "  GIMP: $gimp/plug-ins/clipshape exists already (a CLIPShape not installed by install.sh?):"
        say "        left alone; remove it and run install.sh again to use this release there"
        continue
    fi
    plugin "GIMP 3" "$HERE/plugins/gimp/clipshape" "$gimp/plug-ins/clipshape"
done
[ "$gimp_found" = 1 ] || say "  GIMP 3: not found (no $CONFIG/GIMP/3.0): run GIMP 3 once, then run install.sh again"
record_now

krita_found=0
for krita in "$DATA/krita" "$HOME/.var/app/org.kde.krita/data/krita"; do
    [ -d "$krita" ] || continue
    krita_found=1
    pykrita=$krita/pykrita
    if [ -e "$pykrita/clipshape" ] || [ -e "$pykrita/clipshape.desktop" ]; then
        say "  Krita: $pykrita/clipshape exists already (a CLIPShape not installed by install.sh?):"
        say "         left alone; remove it and run install.sh again to use this release there"
        continue
    fi
    mkdirs "$pykrita"
    put 644 "$HERE/plugins/krita/clipshape.desktop" "$pykrita/clipshape.desktop" || true
    plugin "Krita" "$HERE/plugins/krita/clipshape" "$pykrita/clipshape"
done
[ "$krita_found" = 1 ] || say "  Krita: not found (no $DATA/krita): run Krita once, then run install.sh again"
record_now

say ""
say "Done. First steps:"
say "  GIMP 3: Filters › Generic › CLIPShape… (the first run offers to download the models)"
say "  Krita:  Settings › Configure Krita › Python Plugin Manager › tick CLIPShape, restart Krita,"
say "          then Settings › Dockers › CLIPShape (its Models section downloads the models)"
say "  Command line: clipshape --help   (models: clipshape models fetch ffhq)"
say "To remove it: $HERE/install.sh --uninstall (or $ENGINE/install.sh --uninstall)"
