#!/usr/bin/env bash
# One command on a fresh machine: venv with libtorch, release build, plug-ins, then the main job.
# Idempotent: every step checks what is already there. Needs nothing beside the clone.
#   CLIPSHAPE_SET      model set of the main job (default ffhq)
#   CLIPSHAPE_PROMPT   its prompt (default "face with big nose")
#   CLIPSHAPE_PHOTO    its photo (default: the astronaut portrait in tests/fixtures/golden/face)
#   CLIPSHAPE_OFFLINE  1: do not try to download the model set
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. install/env.sh

clipshape_ensure_venv

clipshape_step "building libclipshape (release): target/release/libclipshape.so and target/release/clipshape"
cargo build --release

if [ -f install/plugins.sh ]; then
    clipshape_step "installing the GIMP 3 and Krita plug-ins"
    bash install/plugins.sh || clipshape_step "plug-in install reported a problem (see above); the library and CLI are ready"
fi

# The main job: a text-driven shape edit of a photo with the default model set (faces): the face
# is found, aligned as FFHQ, edited, and its displacement moves the photo's own pixels.
SET=${CLIPSHAPE_SET:-ffhq}
PROMPT=${CLIPSHAPE_PROMPT:-face with big nose}
CLI=./target/release/clipshape
FIXTURES=$ROOT/tests/fixtures/golden
PHOTO=${CLIPSHAPE_PHOTO:-}
if [ -z "$PHOTO" ] && [ "$SET" = ffhq ]; then
    PHOTO=$FIXTURES/face/astronaut.png
fi
if [ -n "$PHOTO" ]; then INPUT=("$PHOTO"); else INPUT=(--seed 1); fi
mkdir -p "$ROOT/out"
if ! $CLI models path "$SET" >/dev/null 2>&1; then
    if [ "${CLIPSHAPE_OFFLINE:-0}" = 1 ]; then
        clipshape_step "CLIPSHAPE_OFFLINE=1: not downloading model set '$SET'; what it needs:"
        $CLI models path "$SET" 2>&1 | sed 's/^/    /' || true
    else
        clipshape_step "fetching model set '$SET' (licences are shown below; CLIPSHAPE_OFFLINE=1 skips this)"
        # On failure the command itself says why and what to do; setup carries on with the demo.
        $CLI models fetch "$SET" || true
    fi
fi
if $CLI models path "$SET" >/dev/null 2>&1; then
    clipshape_step "main job: clipshape edit $SET ${INPUT[*]} \"$PROMPT\" --out out/$SET-edit"
    $CLI edit "$SET" "${INPUT[@]}" "$PROMPT" --out "$ROOT/out/$SET-edit"
    clipshape_step "see out/$SET-edit: 00.png … (the photo with the edit at strengths -3..3), layer-00.png …, sheet.png"
else
    clipshape_step "model set '$SET' is not installed, so the real edit cannot run yet."
    clipshape_step "DEMONSTRATION of the mechanics instead: the same job on the tiny models in tests/fixtures/golden."
    echo "    Their weights are random numbers: the pictures are abstract, and no face changes shape."
    echo "    What it shows is every step working on a real photo: find the face, align it, encode,"
    echo "    optimise the shift for the prompt, render the strengths and put them back on the photo."
    $CLI edit "$FIXTURES/e4e.pt" "$FIXTURES/face/astronaut.png" "$PROMPT" --steps 20 \
        --align face --mtcnn "$FIXTURES/face/mtcnn" \
        --clip "$FIXTURES/clip_jit.pt" --vocab "$FIXTURES/bpe_simple_vocab_16e6.txt.gz" \
        --out "$ROOT/out/demo-tiny-models"
    clipshape_step "demonstration written to out/demo-tiny-models (random weights; run setup again once the '$SET' files are in place for the real edit)"
fi
clipshape_step "done"
