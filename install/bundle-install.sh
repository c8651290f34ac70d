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
#   the command      ~/.local/bin/clipshape              (a link; unless a file of yours is there)
#   GIMP 3           ~/.config/GIMP/3.0/plug-ins/clipshape/, and the Flatpak GIMP's
#                    ~/.var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins/clipshape/ when present
#   Krita            ~/.local/share/krita/pykrita/clipshape.desktop and clipshape/
# A host that has never run (no settings folder yet) is left alone; run it once, then run this
# again. What was installed is listed, with each file's SHA-256, in
# ~/.local/share/clipshape/installed.txt; --uninstall removes only what is still as installed.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail
# A reader of our output that went away (| head) is no reason to stop half-way.
trap '' PIPE

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd -P)
VERSION=$(cat "$HERE/VERSION")
# XDG's rule: a relative path in these variables is ignored.
xdg() { case "${1:-}" in /*) printf '%s' "$1" ;; *) printf '%s' "$2" ;; esac; }
DATA=$(xdg "${XDG_DATA_HOME:-}" "$HOME/.local/share")
CONFIG=$(xdg "${XDG_CONFIG_HOME:-}" "$HOME/.config")
STATE=$(xdg "${XDG_STATE_HOME:-}" "$HOME/.local/state")
BASE=$DATA/clipshape
LAUNCHER=$HOME/.local/bin/clipshape

say() { printf '%s\n' "$*" 2>/dev/null || true; }
die() { printf 'install.sh: %s\n' "$*" >&2 || true; exit 1; }

case "$HOME$DATA$CONFIG" in
    *$'\n'*) die "a folder name with a line break (HOME or XDG_*) is not supported" ;;
esac

# PATH with the links of its folders resolved (its own name as it is).
physical() {
    local dir
    dir=$(cd "$(dirname "$1")" 2>/dev/null && pwd -P) || return 1
    printf '%s/%s' "${dir%/}" "$(basename "$1")"
}
sha() { sha256sum <"$1" | cut -d' ' -f1; }

# Removes what a record lists, still as install.sh made it: files of the same content reached
# through no link, links to what it linked, then the folders it made when they are empty
# (Python's caches of our modules aside). Anything else is kept, and said.
remove_recorded() {
    local rec=$1 lines line kind a b i
    mapfile -t lines <"$rec"
    for line in "${lines[@]}"; do
        IFS=' ' read -r kind a b <<<"$line"
        # Only where install.sh puts files, whatever a record says.
        case "$kind:$b" in
            [fl]:"$BASE"/*|[fl]:*/plug-ins/clipshape/*|[fl]:*/pykrita/clipshape/*|[fl]:*/pykrita/clipshape.desktop) ;;
            [fl]:*/.local/bin/clipshape) ;;
            [fl]:*) say "  not removed: $b (no place of CLIPShape's)"; continue ;;
        esac
        case "$kind" in
            f) if [ -f "$b" ] && [ ! -L "$b" ] && [ "$(physical "$b")" = "$b" ] && [ "$(sha "$b")" = "$a" ]; then
                   rm -f -- "$b"
               elif [ -e "$b" ] || [ -L "$b" ]; then
                   say "  kept $b (changed since it was installed, or reached through a link)"
               fi
               rm -f -- "$b.part" ;;
            l) if [ -L "$b" ] && [ "$(readlink "$b" | sha256sum | cut -d' ' -f1)" = "$a" ]; then rm -f -- "$b"; fi ;;
        esac
    done
    # The record goes once its files are gone (stopped before, a later run finishes the job).
    rm -f -- "$rec"
    for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
        IFS=' ' read -r kind a <<<"${lines[$i]}"
        [ "$kind" = d ] && [ -d "$a" ] && [ ! -L "$a" ] && [ "$(physical "$a")" = "$a" ] || continue
        if [ -d "$a/__pycache__" ] && [ ! -L "$a/__pycache__" ]; then rm -rf -- "$a/__pycache__"; fi
        rmdir -- "$a" 2>/dev/null || [ "$a" = "$BASE" ] || say "  kept $a (it holds files that are not CLIPShape's)"
    done
}

# uninstall [replacing]: replacing = called by an install, whose own staging folder stays.
uninstall() {
    local found=0 rec old replacing=${1:-}
    for rec in "$BASE/installed.txt" "$BASE/installed.txt.new"; do
        [ -f "$rec" ] || continue
        found=1
        old=$(sed -n 's/^# version \([^ ]*\).*/\1/p' "$rec" | head -n1)
        say "Removing CLIPShape ${old:-(unknown version)}:"
        remove_recorded "$rec"
    done
    if [ "$found" = 0 ]; then
        say "Nothing to remove: $BASE/installed.txt does not exist (CLIPShape was not installed by install.sh)."
        return 0
    fi
    [ -n "$replacing" ] || rm -rf -- "$BASE"/.installing-*
    rmdir -- "$BASE" 2>/dev/null || true
    say "  done."
    [ -d "$BASE/models" ] && say "  kept your downloaded models in $BASE/models (remove that folder for the space)"
    [ -f "$STATE/clipshape/record.key" ] \
        && say "  kept $STATE/clipshape/record.key (a later CLIPShape recognises its output folders by it)"
    return 0
}

gpu_engine=""
case "${1:-}" in
    --uninstall) uninstall; exit 0 ;;
    --gpu-engine)
        gpu_engine=$(cd "${2:?--gpu-engine needs the folder holding libtorch_cuda.so}" && pwd -P)
        [ -f "$gpu_engine/libtorch_cuda.so" ] || die "--gpu-engine $gpu_engine: no libtorch_cuda.so there" ;;
    -h|--help) sed -n '2,22p' "$HERE/install.sh"; exit 0 ;;
    "") ;;
    *) die "unknown argument $1 (see --help)" ;;
esac

# The installed copy of this script only uninstalls: installing copies from the release's
# folder, which an installed engine is not.
[ -d "$HERE/plugins" ] && [ -d "$HERE/lib" ] \
    || die "this is the installed copy of install.sh, which only removes CLIPShape (--uninstall); to install, run install.sh of the unpacked release"

# The oldest GNU C library the release runs on (a newer one is fine).
floor=$(cat "$HERE/GLIBC_FLOOR")
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')
[ -n "$have" ] || die "this system has no GNU C library (glibc), which this release of CLIPShape needs ($floor or later)"
if [ "$(printf '%s\n%s\n' "$floor" "$have" | sort -V | head -n1)" != "$floor" ]; then
    die "this system's GNU C library is $have; this release of CLIPShape needs $floor or later"
fi

# The record is written as the install goes (what an interrupted install made is removed by
# the next one, or by --uninstall), as installed.txt.new until the install is complete.
# The folders made for $BASE, the outermost first (recorded once the record exists).
made_for_base=()
d=$BASE
while [ ! -e "$d" ] && [ ! -L "$d" ]; do made_for_base=("$d" "${made_for_base[@]}"); d=$(dirname "$d"); done
mkdir -p -- "$BASE" 2>/dev/null || die "cannot create $BASE"
BASE=$(cd "$BASE" && pwd -P)
ENGINE=$BASE/$VERSION
STAGING=$BASE/.installing-$VERSION
[ -w "$BASE" ] || die "cannot write in $BASE"
trap 'say "install.sh: stopped before it finished; run it again, or ./install.sh --uninstall"' INT TERM

say "Installing CLIPShape $VERSION"
# 1. The engine, copied whole into a folder of its own before anything earlier is removed.
rm -rf -- "$STAGING"
mkdir -- "$STAGING" || die "cannot create $STAGING"
for part in bin lib include licences install.sh VERSION GLIBC_FLOOR; do
    cp -R -- "$HERE/$part" "$STAGING/$part" 2>/dev/null \
        || { rm -rf -- "$STAGING"; die "could not copy the engine into $STAGING (a full disk, or no permission?)"; }
done
if [ -n "$gpu_engine" ]; then
    printf '%s\n' "$gpu_engine" >"$STAGING/lib/gpu_engine.path" || { rm -rf -- "$STAGING"; die "cannot write in $STAGING"; }
fi
# 2. An earlier install goes (what of it is still as it was installed).
if [ -f "$BASE/installed.txt" ] || [ -f "$BASE/installed.txt.new" ]; then
    say "  replacing an earlier CLIPShape"
    uninstall replacing | sed 's/^/  /'
    mkdir -p -- "$BASE"
fi
# Folders left empty by a removal that was stopped are nothing of anyone's.
[ -d "$ENGINE" ] && [ ! -L "$ENGINE" ] && find "$ENGINE" -depth -type d -empty -delete 2>/dev/null
if [ -e "$ENGINE" ] || [ -L "$ENGINE" ]; then
    rm -rf -- "$STAGING"
    die "$ENGINE exists and holds files that are not CLIPShape's: move them away and run install.sh again"
fi

NEW_RECORD=$BASE/installed.txt.new
printf '# version %s (installing)\n' "$VERSION" >"$NEW_RECORD" || die "cannot write $NEW_RECORD"
record() { printf '%s\n' "$*" >>"$NEW_RECORD" || die "cannot write $NEW_RECORD"; }
for d in "${made_for_base[@]}"; do record "d $(physical "$d")"; done
# Recorded under their final names before they move there: whenever this stops, the record
# lists all that is in place. Folders before the files in them (removal goes deepest first),
# each file with its SHA-256.
while IFS= read -r -d '' d; do record "d $ENGINE${d#"$STAGING"}"; done < <(find "$STAGING" -type d -print0 | sort -z)
while IFS= read -r -d '' f; do record "f $(sha "$f") $ENGINE${f#"$STAGING"}"; done < <(find "$STAGING" -type f -print0 | sort -z)
mv -- "$STAGING" "$ENGINE" || die "cannot move $STAGING to $ENGINE"
say "  engine: $ENGINE"

# mkdirs DIR: makes DIR and its missing parents, recording each one made.
mkdirs() {
    local missing=() d=$1 i
    while [ ! -e "$d" ] && [ ! -L "$d" ]; do missing+=("$d"); d=$(dirname "$d"); done
    for ((i = ${#missing[@]} - 1; i >= 0; i--)); do
        mkdir -- "${missing[$i]}" || die "cannot create ${missing[$i]}"
        record "d $(physical "${missing[$i]}")"
    done
}
# put MODE SRC DST: a new file of ours, written under a temporary name and renamed (never half
# a file under its name); returns 1, said, when a file is already there.
put() {
    local mode=$1 src=$2 dst=$3
    if [ -e "$dst" ] || [ -L "$dst" ]; then
        say "  left alone: $dst (a file that is not CLIPShape's is there)"
        return 1
    fi
    install -m "$mode" -- "$src" "$dst.part" 2>/dev/null && mv -f -- "$dst.part" "$dst" \
        || { rm -f -- "$dst.part"; die "could not write $dst (a full disk, or no permission?)"; }
    record "f $(sha "$dst") $(physical "$dst")"
}

# 3. The command: a link in ~/.local/bin (in PATH on most systems once it exists).
mkdirs "$(dirname "$LAUNCHER")"
if [ -e "$LAUNCHER" ] || [ -L "$LAUNCHER" ]; then
    say "  left alone: $LAUNCHER (a file that is not CLIPShape's is there); the command is $ENGINE/bin/clipshape"
elif ln -s -- "$ENGINE/bin/clipshape" "$LAUNCHER" 2>/dev/null; then
    # The link by the SHA-256 of where it points (a path may hold spaces), then its own path.
    record "l $(readlink "$LAUNCHER" | sha256sum | cut -d' ' -f1) $(physical "$LAUNCHER")"
    say "  command: $LAUNCHER"
else
    say "  could not make $LAUNCHER; the command is $ENGINE/bin/clipshape"
fi

# 4. The plug-ins, each told where the engine is (libclipshape.path beside its modules).
engine_path=$BASE/.engine-path
printf '%s\n' "$ENGINE/lib/libclipshape.so" >"$engine_path" || die "cannot write in $BASE"
plugin() {
    local name=$1 src=$2 dst=$3 f
    mkdirs "$dst"
    for f in "$src"/*; do
        [ -f "$f" ] || continue
        if [ -x "$f" ]; then put 755 "$f" "$dst/$(basename "$f")" || true; else put 644 "$f" "$dst/$(basename "$f")" || true; fi
    done
    put 644 "$engine_path" "$dst/libclipshape.path" || true
    say "  $name: $dst"
}
gimp_found=0
for gimp in "$CONFIG/GIMP/3.0" "$HOME/.var/app/org.gimp.GIMP/config/GIMP/3.0"; do
    [ -d "$gimp" ] || continue
    gimp_found=1
    if [ -e "$gimp/plug-ins/clipshape" ] || [ -L "$gimp/plug-ins/clipshape" ]; then
        say "  GIMP: $gimp/plug-ins/clipshape exists (a CLIPShape not installed by install.sh?): left alone;"
        say "        remove it and run install.sh again to use this release there"
        continue
    fi
    plugin "GIMP 3" "$HERE/plugins/gimp/clipshape" "$gimp/plug-ins/clipshape"
done
[ "$gimp_found" = 1 ] || say "  GIMP 3: not found (no $CONFIG/GIMP/3.0): run GIMP 3 once, then run install.sh again"

krita_found=0
for krita in "$DATA/krita" "$HOME/.var/app/org.kde.krita/data/krita"; do
    [ -d "$krita" ] || continue
    krita_found=1
    pykrita=$krita/pykrita
    if [ -e "$pykrita/clipshape" ] || [ -L "$pykrita/clipshape" ] || [ -e "$pykrita/clipshape.desktop" ]; then
        say "  Krita: $pykrita/clipshape exists (a CLIPShape not installed by install.sh?): left alone;"
        say "         remove it and run install.sh again to use this release there"
        continue
    fi
    mkdirs "$pykrita"
    put 644 "$HERE/plugins/krita/clipshape.desktop" "$pykrita/clipshape.desktop" || true
    plugin "Krita" "$HERE/plugins/krita/clipshape" "$pykrita/clipshape"
done
[ "$krita_found" = 1 ] || say "  Krita: not found (no $DATA/krita): run Krita once, then run install.sh again"
rm -f -- "$engine_path"

# 5. Complete: the record under its name.
sed -i "1s/.*/# version $VERSION/" "$NEW_RECORD"
mv -f -- "$NEW_RECORD" "$BASE/installed.txt" || die "cannot write $BASE/installed.txt"
trap - INT TERM

say ""
say "Done. First steps:"
say "  GIMP 3: Filters › Generic › CLIPShape… (the first run offers to download the models)"
say "  Krita:  Settings › Configure Krita › Python Plugin Manager › tick CLIPShape, restart Krita,"
say "          then Settings › Dockers › CLIPShape (its Models section downloads the models)"
say "  Command line: clipshape --help   (models: clipshape models fetch ffhq)"
say "To remove it: $ENGINE/install.sh --uninstall"
