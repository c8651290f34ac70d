#!/usr/bin/env bash
# Real-host tests of the plug-ins: GIMP 3.0.4 (gimp-console-3.0, batch mode) and Krita 5.2.9
# (kritarunner, offscreen) inside a Debian trixie root, driving the real libclipshape.so with the
# tiny golden models; then the GUI tier: the real GIMP and Krita windows under Xvfb (GIMP's
# plug-in dialog opened interactively, Krita's docker with Run clicked through Qt), screenshots
# in target/gui/. A separate tier from `pytest tests/python` (which fakes the hosts).
#
#   install/host-tests.sh             run the host tests (and the GUI tier when the root has
#                                     Xvfb) when the trixie root exists, else say how to create
#                                     it and exit 0 ("skipped"); a root that lacks a package of
#                                     the lists below gets it installed first
#   install/host-tests.sh --create    create the root first (root only; ≈ 2–4 min, ≈ 1.8 GB,
#                                     cached outside the repo), then run the tests
#   install/host-tests.sh --only gimp|krita|gui|gui-gimp|gui-krita|archive
#                                     archive: the release archive (dist/clipshape-*-linux-x86_64
#                                     .tar.xz, or $CLIPSHAPE_ARCHIVE) installed in the root by an
#                                     ordinary user with nothing of this machine visible, then the
#                                     GIMP run, the Krita run and `clipshape edit` from it, and
#                                     --uninstall; run by default when an archive exists
#   install/host-tests.sh --gui | --no-gui   GUI tier required (fails without Xvfb) / skipped
#   install/host-tests.sh --check-root    exit 0 when the root exists with every package, 1 otherwise
#   install/host-tests.sh --create-only   create the root when missing, run nothing (.ci/run)
#
# Environment
#   CLIPSHAPE_TRIXIE_ROOT  the root (default ${XDG_CACHE_HOME:-~/.cache}/clipshape/trixie-root)
#   CLIPSHAPE_LIB          libclipshape.so to test (default <repo>/target/release/libclipshape.so)
#   CLIPSHAPE_GOLDEN       tiny models (default <repo>/tests/fixtures/golden)
#   CLIPSHAPE_GUI_TIMEOUT  seconds each GUI host may take before it is killed (default 150)
#
# The library is built against the torch wheel of the project's venv and finds libtorch through
# its RUNPATH (an absolute path into that venv). The script therefore re-creates the venv's
# `torch/lib` and `nvidia/` directories inside the root AT THE SAME ABSOLUTE PATH, as hard links
# (`cp -al`: no bytes copied, no mounts) when the root and the venv share a filesystem, else as a
# plain copy (≈ 3.6 GB). No LD_LIBRARY_PATH is set inside the root.
# Running the hosts needs no mounts; only apt (--create, an upgrade) bind-mounts /proc /sys /dev and
# unmounts them before it returns.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${CLIPSHAPE_TRIXIE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/clipshape/trixie-root}
LIB=${CLIPSHAPE_LIB:-$REPO/target/release/libclipshape.so}
GOLDEN=${CLIPSHAPE_GOLDEN:-$REPO/tests/fixtures/golden}
STAMP=.clipshape-root-ready
PACKAGES_GIMP="gimp python3-gi gir1.2-gimp-3.0"
PACKAGES_KRITA="krita python3-pyqt5"
# The GUI tier: an X server for the real GIMP and Krita windows (screenshots are taken in-process).
PACKAGES_GUI="xvfb xauth"
# What a person's desktop has to unpack a release (the archive tier).
PACKAGES_PERSON="xz-utils"
STAGE_IN_ROOT=/opt/clipshape-test

create=0
check=0
only=""
gui=auto
while [ $# -gt 0 ]; do
    case "$1" in
        --create) create=1 ;;
        --create-only) create=2 ;;
        --check-root) check=1 ;;
        --only) only=${2:?--only needs gimp, krita, gui, gui-gimp, gui-krita or archive}; shift ;;
        --gui) gui=yes ;;
        --no-gui) gui=no ;;
        -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
        *) echo "host-tests.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'host-tests.sh: %s\n' "$*" >&2; exit 1; }

# The Debian mirror this machine already uses (deb822 sources first, then sources.list).
debian_mirror() {
    local f uri=""
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(awk '
            /^[[:space:]]*$/ { if (u != "" && s !~ /security/) { print u; exit } u=""; s=""; next }
            /^URIs:/   { u=$2 }
            /^Suites:/ { s=$0 }
            END { if (u != "" && s !~ /security/) print u }' "$f" | head -n1)
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    printf '%s\n' "$uri"
}

MOUNTED=()
unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
    MOUNTED=()
}

# apt-get install inside root $1 (proc, sys, dev bind-mounted for the run and unmounted before
# it returns): the remaining arguments are package groups separated by `--`, installed in turn.
apt_in_root() {
    local dir=$1 m
    shift
    trap unmount_all EXIT
    for m in proc sys dev dev/pts; do
        mount --bind "/$m" "$dir/$m"
        MOUNTED+=("$dir/$m")
    done
    cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
    local in_root=(chroot "$dir" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)
    local rc=0 group=()
    say "apt-get update (inside the root)"
    "${in_root[@]}" apt-get update -q || rc=$?
    while [ "$rc" = 0 ] && [ $# -gt 0 ]; do
        group=()
        while [ $# -gt 0 ] && [ "$1" != -- ]; do group+=("$1"); shift; done
        [ $# -gt 0 ] && shift
        [ ${#group[@]} -gt 0 ] || continue
        say "apt-get install ${group[*]}"
        "${in_root[@]}" apt-get install -y -q --no-install-recommends "${group[@]}" || rc=$?
    done
    [ "$rc" = 0 ] && "${in_root[@]}" apt-get clean
    unmount_all
    trap - EXIT
    return "$rc"
}

# The packages of PACKAGES_* that root $1 lacks, one line (empty when it has them all).
missing_packages() {
    local dir=$1 p out=()
    # shellcheck disable=SC2086
    for p in $PACKAGES_GIMP $PACKAGES_KRITA $PACKAGES_GUI $PACKAGES_PERSON; do
        [ "$(chroot "$dir" dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || out+=("$p")
    done
    echo "${out[*]}"
}

# A root made before a package joined the lists (e.g. the GUI tier's xvfb) gets it installed,
# once: afterwards missing_packages is empty and this does nothing.
upgrade_root() {
    local missing
    missing=$(missing_packages "$ROOT")
    [ -n "$missing" ] || return 0
    [ "$(id -u)" = 0 ] || { echo "host-tests.sh: the root lacks $missing; upgrading it needs root" >&2; return 1; }
    say "upgrading the trixie root: apt-get install $missing"
    # shellcheck disable=SC2086
    apt_in_root "$ROOT" $missing || { echo "host-tests.sh: could not install $missing into $ROOT" >&2; return 1; }
}

create_root() {
    if [ -e "$ROOT/$STAMP" ]; then
        say "trixie root already made: $ROOT"
        upgrade_root
        return
    fi
    [ "$(id -u)" = 0 ] || die "--create needs root (debootstrap and chroot)"
    if ! command -v debootstrap >/dev/null; then
        say "apt-get install -y debootstrap"
        apt-get update -qq || true
        apt-get install -y debootstrap
    fi
    local mirror partial="$ROOT.partial" t0=$SECONDS
    mirror=$(debian_mirror)
    say "creating the trixie root $ROOT from $mirror (≈ 2–4 min, ≈ 1.8 GB)"
    if [ -d "$partial" ]; then
        say "removing the unfinished $partial"
        for m in dev/pts dev sys proc; do umount -l "$partial/$m" 2>/dev/null || true; done
        rm -rf --one-file-system "$partial"
    fi
    mkdir -p "$(dirname "$ROOT")"
    say "debootstrap --variant=minbase trixie"
    debootstrap --variant=minbase trixie "$partial" "$mirror" >"$(dirname "$ROOT")/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $(dirname "$ROOT")/debootstrap.log"
    # shellcheck disable=SC2086
    apt_in_root "$partial" $PACKAGES_GIMP -- $PACKAGES_KRITA -- $PACKAGES_GUI -- $PACKAGES_PERSON \
        || die "apt-get inside the new root failed (see above)"
    touch "$partial/$STAMP"
    mv "$partial" "$ROOT"
    say "trixie root ready in $((SECONDS - t0)) s: $(du -sh --one-file-system "$ROOT" | cut -f1) in $ROOT"
}

# The torch libraries libclipshape.so's RUNPATH names, at the same absolute path inside the root.
stage_torch() {
    local runpath torch_lib site
    runpath=$(readelf -d "$LIB" 2>/dev/null | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p; s/.*(RPATH).*\[\(.*\)\]/\1/p' | head -n1)
    [ -n "$runpath" ] || die "$LIB has no RUNPATH; cannot tell which libtorch it needs"
    torch_lib=${runpath%%:*}
    [ -e "$torch_lib/libtorch_cpu.so" ] || die "libtorch not found at the library's RUNPATH $torch_lib"
    site=$(dirname "$(dirname "$torch_lib")")   # …/site-packages
    local dir
    for dir in "$torch_lib" "$site/nvidia"; do
        [ -d "$dir" ] || continue
        local dst="$ROOT$dir"
        if [ -e "$dst/.clipshape-staged" ] && [ "$(cat "$dst/.clipshape-staged")" = "$(stat -c %Y "$dir")" ]; then
            continue
        fi
        rm -rf --one-file-system "$dst"
        mkdir -p "$(dirname "$dst")"
        if [ "$(stat -c %d "$dir")" = "$(stat -c %d "$ROOT")" ]; then
            say "hard-linking $dir into the root (same path; no copy)"
            cp -al "$dir" "$dst"
        else
            say "copying $dir into the root (same path; different filesystem, so a real copy)"
            cp -a "$dir" "$dst"
        fi
        stat -c %Y "$dir" >"$dst/.clipshape-staged"
    done
}

stage_files() {
    local stage="$ROOT$STAGE_IN_ROOT"
    rm -rf --one-file-system "$stage"
    mkdir -p "$stage/models" "$stage/home" "$stage/tests"
    cp "$GOLDEN/e4e.pt" "$GOLDEN/clip_jit.pt" "$GOLDEN/bpe_simple_vocab_16e6.txt.gz" "$stage/models/"
    # A real photo and the real face detector, for the edit of a face without a selection.
    mkdir -p "$stage/models/mtcnn"
    cp "$GOLDEN/face/astronaut.png" "$stage/models/"
    cp "$GOLDEN/face/mtcnn/pnet.pt" "$GOLDEN/face/mtcnn/rnet.pt" "$GOLDEN/face/mtcnn/onet.pt" "$stage/models/mtcnn/"
    cp "$REPO/tests/python/hosts/host_gimp.py" "$REPO/tests/python/hosts/host_krita.py" \
        "$REPO/tests/python/hosts/gui_gimp.py" "$REPO/tests/python/hosts/cuda_refusal.py" "$stage/tests/"
    # The plug-ins, installed exactly as a user gets them (install/plugins.sh), into a HOME in the root.
    CLIPSHAPE_LIB="$LIB" CLIPSHAPE_PLUGINS_COPY_LIB=1 bash "$REPO/install/plugins.sh" \
        --home "$stage/home" --create-dirs --no-zip | sed 's/^/    /'
}

# OMP_NUM_THREADS=1: libtorch on one thread. With its default (one per core) the tiny models'
# timings swing 1 s ↔ 17 s when another job shares the CPUs (OpenMP spin-waiting).
run_in_root() {
    chroot "$ROOT" env -i HOME="$STAGE_IN_ROOT/home" PATH=/usr/bin:/bin LANG=C.UTF-8 \
        PYTHONIOENCODING=utf-8 OMP_NUM_THREADS=1 CLIPSHAPE_TEST_MODELS="$STAGE_IN_ROOT/models" "$@"
}

fail=0
# A host passed when it exited 0 AND its test script printed the OK line (GIMP reports success
# for a procedure that returned an error status; kritarunner always exits 0).
# report HOST LOG RC T0 [MARKER]: MARKER starts the summary lines (CLIPSHAPE-HOST-TEST).
report() {
    local host=$1 log=$2 rc=$3 t0=$4 marker=${5:-CLIPSHAPE-HOST-TEST}
    if [ "$rc" = 0 ] && grep -q "^$marker OK" "$log"; then
        grep "^$marker" "$log" | sed 's/^/    /'
        say "$host: passed in $((SECONDS - t0)) s"
    else
        sed 's/^/    /' "$log" | tail -n 80
        say "$host: FAILED (rc $rc) in $((SECONDS - t0)) s; full log: $log"
        fail=1
    fi
}

run_gimp() {
    say "GIMP 3: gimp-console-3.0 batch run of plug-in-clipshape (non-interactive)"
    local t0=$SECONDS log="$ROOT$STAGE_IN_ROOT/gimp.log" rc=0
    run_in_root gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval \
        -b "exec(open('$STAGE_IN_ROOT/tests/host_gimp.py').read())" --quit >"$log" 2>&1 || rc=$?
    report GIMP "$log" "$rc" "$t0"
}

run_krita() {
    say "Krita 5.2: kritarunner (offscreen) running the docker's worker and extension"
    local t0=$SECONDS log="$ROOT$STAGE_IN_ROOT/krita.log" rc=0
    run_in_root env QT_QPA_PLATFORM=offscreen \
        PYTHONPATH="$STAGE_IN_ROOT/tests:$STAGE_IN_ROOT/home/.local/share/krita/pykrita" \
        kritarunner -s host_krita -f main >"$log" 2>&1 || rc=$?
    report Krita "$log" "$rc" "$t0"
}

# ─── The GUI tier: the real GIMP and Krita windows under Xvfb ───
# The screenshots land in target/gui/ of the checkout (look at them); a host that is not done
# within GUI_TIMEOUT seconds is killed and fails.
GUI_TIMEOUT=${CLIPSHAPE_GUI_TIMEOUT:-150}
# A laptop's screen: a dialog or docker that does not fit it fails the tier (the tests check).
SCREEN=1366x768
GUI_OUT=$REPO/target/gui
SHOTS_IN_ROOT=$STAGE_IN_ROOT/shots

have_xvfb() { [ -x "$ROOT/usr/bin/Xvfb" ] && [ -x "$ROOT/usr/bin/xvfb-run" ]; }

# The hosts' model downloads fetch the tiny models as the `ffhq` set (tests/python/tiny_store.py:
# a manifest of their own, served over HTTP by this machine; the root shares its network) into
# an empty store of each host: the library's CLIPSHAPE_MANIFEST / _MODELS_MIRROR / _MODELS.
MIRROR_PID=""
start_mirror() {
    local dir="$ROOT$STAGE_IN_ROOT/tiny-store" url_file
    python3 "$REPO/tests/python/tiny_store.py" "$GOLDEN" "$dir" >/dev/null
    url_file="$dir/url"
    python3 "$REPO/tests/python/tiny_store.py" serve "$dir/mirror" "$url_file" &
    MIRROR_PID=$!
    trap stop_mirror EXIT
    local i
    for i in $(seq 50); do [ -s "$url_file" ] && break; sleep 0.1; done
    [ -s "$url_file" ] || die "the local model mirror did not start"
    MIRROR_URL=$(cat "$url_file")
}
stop_mirror() {
    if [ -n "$MIRROR_PID" ]; then kill "$MIRROR_PID" 2>/dev/null || true; wait "$MIRROR_PID" 2>/dev/null || true; fi
    MIRROR_PID=""
}

xvfb_in_root() {
    local store=$1
    shift
    run_in_root env CLIPSHAPE_GUI_TEST_SHOT="$SHOTS_IN_ROOT" \
        CLIPSHAPE_MANIFEST="$STAGE_IN_ROOT/tiny-store/manifest.toml" \
        CLIPSHAPE_MODELS_MIRROR="$MIRROR_URL" CLIPSHAPE_MODELS="$STAGE_IN_ROOT/$store" \
        timeout -k 10 "$GUI_TIMEOUT" xvfb-run -a -s "-screen 0 ${SCREEN}x24" "$@"
}

# A PNG of at least MIN×MIN px (default 200) in the root's shots → copied to target/gui/; else a
# failure line.
check_shot() {
    local name=$1 min=${2:-200} file="$ROOT$SHOTS_IN_ROOT/$1.png" size
    if [ ! -s "$file" ]; then echo "no screenshot $name.png"; return; fi
    size=$(od -An -tu1 -j16 -N8 "$file" | awk '{ printf "%d %d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }')
    set -- $size
    if [ "$(head -c 8 "$file" | od -An -tx1 | tr -d ' \n')" != 89504e470d0a1a0a ] || [ "$1" -lt "$min" ] || [ "$2" -lt "$min" ]; then
        echo "screenshot $name.png is not a PNG of at least ${min}x${min} px"; return
    fi
    mkdir -p "$GUI_OUT"
    cp "$file" "$GUI_OUT/$name.png"
    say "    screenshot $GUI_OUT/$name.png ($1x$2)" >&2
}

# What fails a GUI run besides its own checks: GTK's criticals and warnings, and GIMP's reports
# of missing or duplicate mnemonics in a procedure dialog.
gui_log_problems() {
    grep -E 'Gtk-CRITICAL|Gtk-WARNING|Procedure .*mnemonic' "$1" || true
}

report_gui() {
    local host=$1 log=$2 rc=$3 t0=$4 problems=$5
    if [ "$rc" = 0 ] && grep -q '^CLIPSHAPE-GUI-TEST OK' "$log" && [ -z "$problems" ]; then
        grep '^CLIPSHAPE-GUI-TEST' "$log" | sed 's/^/    /'
        say "$host: passed in $((SECONDS - t0)) s"
    else
        grep -v NNPACK "$log" | sed 's/^/    /' | tail -n 60
        [ -n "$problems" ] && printf '    problem: %s\n' "$problems" | head -n 20
        [ "$rc" = 124 ] || [ "$rc" = 137 ] && say "$host: killed after ${GUI_TIMEOUT} s"
        say "$host: FAILED (rc $rc) in $((SECONDS - t0)) s; full log: $log"
        fail=1
    fi
}

run_gui_gimp() {
    say "GIMP 3 GUI (Xvfb ${SCREEN}): the plug-in's dialogs, interactively, screenshots to target/gui/"
    local t0=$SECONDS log="$ROOT$STAGE_IN_ROOT/gimp-gui.log" offline_log="$ROOT$STAGE_IN_ROOT/gimp-gui-offline.log"
    local rc=0 problems
    rm -rf "${ROOT:?}$SHOTS_IN_ROOT"; mkdir -p "$ROOT$SHOTS_IN_ROOT"
    # The Models dialog without a network first: a mirror on a closed port fails at once (as a
    # resolver does after its timeout); a GIMP of its own, as the plug-in reads the mirror from
    # the environment GIMP gives it.
    xvfb_in_root store-gimp-offline env CLIPSHAPE_MODELS_MIRROR=http://127.0.0.1:9/ \
        CLIPSHAPE_GUI_TEST_PART=offline gimp-3.0 -n -s --batch-interpreter=python-fu-eval \
        -b "exec(open('$STAGE_IN_ROOT/tests/gui_gimp.py').read())" --quit >"$offline_log" 2>&1 || rc=$?
    problems=$(gui_log_problems "$offline_log"; grep -h 'does not fit' "$offline_log"
               check_shot gimp-models-offline)
    report_gui "GIMP GUI offline" "$offline_log" "$rc" "$t0" "$problems"
    t0=$SECONDS rc=0
    xvfb_in_root store-gimp gimp-3.0 -n -s --batch-interpreter=python-fu-eval \
        -b "exec(open('$STAGE_IN_ROOT/tests/gui_gimp.py').read())" --quit >"$log" 2>&1 || rc=$?
    # The face list (gimp-faces) is answered by choosing the photo's one face; the Strength
    # dialog shows that face's thumbnail.
    problems=$(gui_log_problems "$log"; grep -h 'does not fit' "$log"
               check_shot gimp-models; check_shot gimp-models-done; check_shot gimp-dialog
               check_shot gimp-faces; check_shot gimp-dialog-error; check_shot gimp-learning
               check_shot gimp-strength; check_shot gimp-strength-kept
               grep -q '^CLIPSHAPE-GUI-TEST faces found: .*; chose 1: ' "$log" \
                   || echo "the face list did not choose face 1"
               grep -q '^CLIPSHAPE-GUI-TEST strength dialog shows face: 1: ' "$log" \
                   || echo "the Strength dialog shows no thumbnail of the edited face")
    report_gui "GIMP GUI" "$log" "$rc" "$t0" "$problems"
}

run_gui_krita() {
    say "Krita 5.2 GUI (Xvfb): the docker, Run clicked through Qt, screenshot to target/gui/"
    local t0=$SECONDS log="$ROOT$STAGE_IN_ROOT/krita-gui.log" rc=0 problems
    local home="$ROOT$STAGE_IN_ROOT/home" rc_file
    rm -rf "${ROOT:?}$SHOTS_IN_ROOT"; mkdir -p "$ROOT$SHOTS_IN_ROOT"
    # The test's own plug-in (tests/python/hosts/krita_gui) next to CLIPShape, both enabled.
    cp -r "$REPO/tests/python/hosts/krita_gui/." "$home/.local/share/krita/pykrita/"
    rc_file="$home/.config/kritarc"
    mkdir -p "$(dirname "$rc_file")"
    if [ -e "$rc_file" ]; then
        awk '/^\[/ { skip = ($0 == "[python]") } !skip' "$rc_file" >"$rc_file.new"
        mv "$rc_file.new" "$rc_file"
    fi
    printf '[python]\nenable_clipshape=true\nenable_clipshape_gui_test=true\n' >>"$rc_file"
    xvfb_in_root store-krita krita --nosplash >"$log" 2>&1 || rc=$?
    problems=$(gui_log_problems "$log"; check_shot krita-models; check_shot krita-docker
               check_shot krita-faces; check_shot krita-strength)
    report_gui "Krita GUI" "$log" "$rc" "$t0" "$problems"
}

# ─── The release as a person installs it ───
# The archive alone: the venv's torch staged for the other tiers is removed from the root first,
# and the tier checks that no libtorch is anywhere in the root before the person unpacks it.
PERSON=person
PERSON_UID=4242
run_archive() {
    local archive=${CLIPSHAPE_ARCHIVE:-}
    if [ -z "$archive" ]; then
        archive=$(ls -t "$REPO"/dist/clipshape-*-linux-x86_64.tar.xz 2>/dev/null | head -n1 || true)
    fi
    if [ -z "$archive" ] || [ ! -f "$archive" ]; then
        if [ "$only" = archive ]; then
            say "archive tier: no release archive (bash install/package.sh makes one)"; fail=1
        else
            say "archive tier skipped: no dist/clipshape-*-linux-x86_64.tar.xz (bash install/package.sh makes one)"
        fi
        return
    fi
    say "release archive: $(basename "$archive") installed by an ordinary user, nothing of this machine visible"
    local t0=$SECONDS log="$ROOT$STAGE_IN_ROOT/archive.log" rc=0 venv
    # Nothing staged from the build machine: the other tiers' torch (hard links of the venv).
    venv=$(readelf -d "$LIB" 2>/dev/null | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p' | head -n1)
    venv=${venv%%/lib/python*}
    if [ -n "$venv" ] && [ "$venv" != / ] && [ -e "$ROOT$venv" ]; then
        rm -rf --one-file-system "${ROOT:?}$venv"
    fi
    local home=/home/$PERSON
    grep -q "^$PERSON:" "$ROOT/etc/passwd" \
        || echo "$PERSON:x:$PERSON_UID:$PERSON_UID:A person:$home:/bin/bash" >>"$ROOT/etc/passwd"
    grep -q "^$PERSON:" "$ROOT/etc/group" || echo "$PERSON:x:$PERSON_UID:" >>"$ROOT/etc/group"
    rm -rf --one-file-system "${ROOT:?}$home"
    # GIMP 3 and Krita have been run once (their settings folders exist), nothing else.
    mkdir -p "$ROOT$home/Downloads" "$ROOT$home/.config/GIMP/3.0" "$ROOT$home/.local/share/krita"
    cp "$archive" "$ROOT$home/Downloads/"
    # The Krita zip beside it, when there is one of the same version.
    local zip
    zip=$(dirname "$archive")/$(basename "$archive" | sed 's/^clipshape-\(.*\)-linux-x86_64\.tar\.xz$/clipshape-krita-\1.zip/')
    [ -f "$zip" ] && cp "$zip" "$ROOT$home/Downloads/"
    cp "$REPO/tests/python/hosts/archive_person.sh" "$ROOT$home/"
    chown -R "$PERSON_UID:$PERSON_UID" "$ROOT$home"
    {
        echo "libtorch files in the root before the install (none expected):"
        find "$ROOT" -xdev -name 'libtorch*.so*' -not -path "$ROOT$home/*" | sed "s|^$ROOT||"
        echo "---"
    } >"$log"
    if find "$ROOT" -xdev -name 'libtorch*.so*' -not -path "$ROOT$home/*" | grep -q .; then
        echo "CLIPSHAPE-ARCHIVE-TEST a libtorch of the build machine is visible in the root" >>"$log"
        rc=1
    else
        # A person's system has /proc (the library reads which libtorch it loaded there).
        mount -t proc proc "$ROOT/proc"
        MOUNTED+=("$ROOT/proc")
        trap unmount_all EXIT
        chroot --userspec="$PERSON_UID:$PERSON_UID" "$ROOT" env -i HOME="$home" USER="$PERSON" \
            PATH="$home/.local/bin:/usr/bin:/bin" LANG=C.UTF-8 PYTHONIOENCODING=utf-8 OMP_NUM_THREADS=1 \
            CLIPSHAPE_TEST_MODELS="$STAGE_IN_ROOT/models" CLIPSHAPE_TEST_SCRIPTS="$STAGE_IN_ROOT/tests" \
            bash "$home/archive_person.sh" "$(basename "$archive")" >>"$log" 2>&1 || rc=$?
        unmount_all
        trap - EXIT
    fi
    report archive "$log" "$rc" "$t0" CLIPSHAPE-ARCHIVE-TEST
}

if [ "$check" = 1 ]; then
    [ -e "$ROOT/$STAMP" ] && [ -z "$(missing_packages "$ROOT")" ]
    exit $?
fi
if [ "$create" != 0 ]; then
    create_root
    [ "$create" = 2 ] && exit 0
fi
if [ ! -e "$ROOT/$STAMP" ]; then
    echo "skipped: no trixie root at $ROOT, create it with install/host-tests.sh --create (≈2–4 min, 1.8 GB)"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "skipped: running the hosts in $ROOT needs chroot, i.e. root"; exit 0; }
[ -e "$LIB" ] || die "no library at $LIB (build it: cargo build --release, or set CLIPSHAPE_LIB)"
[ -e "$GOLDEN/e4e.pt" ] || die "no tiny models in $GOLDEN (set CLIPSHAPE_GOLDEN)"
upgrade_root || say "the root could not be upgraded; tiers that need the missing packages skip"

# One run at a time: the staged files, the shots and the hosts' HOMEs are shared.
exec 9>"$ROOT.lock"
if ! flock -n 9; then
    say "another host-test run holds $ROOT.lock; waiting for it"
    flock 9
fi
# The archive first: it must see nothing of the build machine, and the other tiers stage the
# venv's torch into the root.
stage_files
case "$only" in
    ""|archive) run_archive ;;
esac
stage_torch
case "$only" in
    ""|gimp) run_gimp ;;
esac
case "$only" in
    ""|krita) run_krita ;;
esac
case "$only:$gui" in
    :auto|gui*:*|*:yes)
        if have_xvfb; then
            start_mirror
            case "$only" in ""|gui|gui-gimp) run_gui_gimp ;; esac
            case "$only" in ""|gui|gui-krita) run_gui_krita ;; esac
            stop_mirror
        elif [ "${only#gui}" != "$only" ] || [ "$gui" = yes ]; then
            say "GUI tier: no Xvfb in $ROOT (install/host-tests.sh --create-only installs it)"; fail=1
        else
            say "GUI tier skipped: no Xvfb in $ROOT (install/host-tests.sh --create-only installs it)"
        fi ;;
esac
if [ "$fail" = 0 ]; then say "host tests passed"; else say "host tests FAILED"; fi
exit "$fail"
