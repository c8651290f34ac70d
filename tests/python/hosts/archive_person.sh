#!/usr/bin/env bash
# What a person does with a release archive, run by install/host-tests.sh's archive tier as an
# ordinary user inside the trixie root, where nothing of the build machine is visible:
# unpack, install.sh, the command line, the GPU asked for without its engine, the GIMP batch
# run, the Krita run, then install.sh --uninstall. Lines starting with CLIPSHAPE-ARCHIVE-TEST
# are the summary; the last one is OK.
#
#   archive_person.sh ARCHIVE_NAME   (the archive is in ~/Downloads)
# Environment: CLIPSHAPE_TEST_MODELS (the tiny models, the photo, MTCNN), CLIPSHAPE_TEST_SCRIPTS
# (host_gimp.py, host_krita.py).
set -euo pipefail
archive=$1
M=$CLIPSHAPE_TEST_MODELS
T=$CLIPSHAPE_TEST_SCRIPTS
say() { echo "CLIPSHAPE-ARCHIVE-TEST $*"; }
fail() { echo "CLIPSHAPE-ARCHIVE-TEST FAILED: $*"; exit 1; }

cd "$HOME/Downloads"
tar xf "$archive"
dir=$HOME/Downloads/$(basename "$archive" .tar.xz)
version=$(cat "$dir/VERSION")
"$dir/install.sh" | sed 's/^/    install.sh: /'
say "installed $version: $(du -sh "$HOME/.local/share/clipshape" | cut -f1) in ~/.local/share/clipshape"
[ -x "$HOME/.local/bin/clipshape" ] || fail "no ~/.local/bin/clipshape"
[ -f "$HOME/.config/GIMP/3.0/plug-ins/clipshape/clipshape.py" ] || fail "no GIMP plug-in"
[ -f "$HOME/.local/share/krita/pykrita/clipshape/docker.py" ] || fail "no Krita plug-in"

# The command line, from PATH.
clipshape --version | grep -q "$version" || fail "clipshape --version: $(clipshape --version)"
clipshape --device cpu edit "$M/e4e.pt" "$M/astronaut.png" "face with big nose" --clip "$M/clip_jit.pt" \
    --vocab "$M/bpe_simple_vocab_16e6.txt.gz" --mtcnn "$M/mtcnn" --steps 2 --strengths=0,1 \
    --out "$HOME/cli-edit" >/dev/null || fail "clipshape edit"
[ -f "$HOME/cli-edit/01.png" ] && [ -f "$HOME/cli-edit/layer-01.png" ] || fail "clipshape edit wrote $(ls "$HOME/cli-edit")"
say "clipshape edit of the astronaut photo: $(ls "$HOME/cli-edit" | wc -l) files"

# A GPU asked for, without the GPU engine: the plain message from the command line and the ABI.
if out=$(clipshape --device cuda info "$M/e4e.pt" 2>&1); then fail "cuda without the GPU engine worked: $out"; fi
echo "$out" | grep -q "the GPU engine is not installed" || fail "cuda from the CLI said: $out"
say "cuda from the CLI: $(echo "$out" | cut -c1-110)…"
out=$(python3 "$T/cuda_refusal.py" "$HOME/.config/GIMP/3.0/plug-ins/clipshape" "$M/e4e.pt" 2>&1 || true)
echo "$out" | grep -q "DeviceError: .*the GPU engine is not installed" || fail "cuda through the ABI said: $out"
say "cuda through the ABI: $(echo "$out" | cut -c1-100)…"

# GIMP 3, the installed plug-in (it finds the engine through libclipshape.path).
gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval -b "exec(open('$T/host_gimp.py').read())" \
    --quit >"$HOME/gimp.log" 2>&1 || true
grep -q '^CLIPSHAPE-HOST-TEST OK' "$HOME/gimp.log" || { tail -n 40 "$HOME/gimp.log"; fail "the GIMP run"; }
say "GIMP 3: $(grep '^CLIPSHAPE-HOST-TEST OK' "$HOME/gimp.log")"

# Krita 5.2, the installed plug-in.
QT_QPA_PLATFORM=offscreen PYTHONPATH="$T:$HOME/.local/share/krita/pykrita" \
    kritarunner -s host_krita -f main >"$HOME/krita.log" 2>&1 || true
grep -q '^CLIPSHAPE-HOST-TEST OK' "$HOME/krita.log" || { tail -n 40 "$HOME/krita.log"; fail "the Krita run"; }
say "Krita: $(grep '^CLIPSHAPE-HOST-TEST OK' "$HOME/krita.log")"

# --uninstall removes exactly what install.sh put there; the hosts' own folders stay.
"$dir/install.sh" --uninstall | sed 's/^/    install.sh --uninstall: /'
for p in ".local/share/clipshape/$version" .local/share/clipshape/installed.txt .local/bin/clipshape \
         .config/GIMP/3.0/plug-ins/clipshape .local/share/krita/pykrita/clipshape \
         .local/share/krita/pykrita/clipshape.desktop; do
    [ ! -e "$HOME/$p" ] || fail "$p is left after --uninstall"
done
# What the person made with it stays: the models the Krita run added to the store.
left=$(ls -A "$HOME/.local/share/clipshape" 2>/dev/null | tr '\n' ' ')
[ -z "$left" ] || [ "$left" = "models " ] || fail "~/.local/share/clipshape holds $left after --uninstall"

[ -d "$HOME/.config/GIMP/3.0" ] && [ -d "$HOME/.local/share/krita" ] || fail "a host's own folder was removed"
say "uninstall: nothing of CLIPShape left; the hosts' folders and the models added kept (${left:-none})"
# The Krita zip, as Krita's Tools › Scripts › Import Python Plugin from File… takes it: its
# files extracted into pykrita, the engine inside the plug-in's folder.
zip=$HOME/Downloads/clipshape-krita-$version.zip
if [ -f "$zip" ]; then
    rm -rf "$HOME/edits-krita"   # the host test's own results of the first Krita run
    # Krita's own importer (what Tools › Scripts › Import Python Plugin from File… runs).
    importer=/usr/share/krita/pykrita/plugin_importer/plugin_importer.py
    [ -f "$importer" ] || fail "no Krita plug-in importer at $importer"
    python3 "$importer" "$zip" "$HOME/.local/share/krita" | sed 's/^/    importer: /'
    [ -f "$HOME/.local/share/krita/pykrita/clipshape/libclipshape.so" ] || fail "Krita's importer did not import the zip"
    QT_QPA_PLATFORM=offscreen PYTHONPATH="$T:$HOME/.local/share/krita/pykrita" \
        kritarunner -s host_krita -f main >"$HOME/krita-zip.log" 2>&1 || true
    grep -q '^CLIPSHAPE-HOST-TEST OK' "$HOME/krita-zip.log" || { tail -n 40 "$HOME/krita-zip.log"; fail "Krita with the zip's plug-in"; }
    say "Krita, the zip imported: $(grep '^CLIPSHAPE-HOST-TEST OK' "$HOME/krita-zip.log")"
else
    say "no Krita zip beside the archive: not tried"
fi
say OK
