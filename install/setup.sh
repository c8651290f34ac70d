#!/usr/bin/env bash
# One command on a fresh machine: venv with libtorch, release build, C header, then the main job.
# Idempotent: every step checks what is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. install/env.sh

clipshape_ensure_venv

clipshape_step "building libclipshape (release): target/release/libclipshape.so and target/release/clipshape"
cargo build --release

clipshape_step "regenerating include/clipshape.h (cbindgen)"
CLIPSHAPE_UPDATE_HEADER=1 cargo test --release --quiet --test header >/dev/null

if [ -f install/plugins.sh ]; then
    clipshape_step "installing the GIMP 3 and Krita plug-ins"
    bash install/plugins.sh || clipshape_step "plug-in install reported a problem (see above); the library and CLI are ready"
fi

# The main job: a text-driven shape edit of a photo with the default model set (faces): the face
# is found, aligned as FFHQ, edited, and pasted back into the photo. The photo is
# $CLIPSHAPE_PHOTO, else the public-domain astronaut portrait of a checkout's shared/golden, else
# a sampled image (--seed 1). Models come from the model store ($CLIPSHAPE_MODELS or the XDG
# data dir); offline, setup still finishes and says which files remain to be fetched.
SET=${CLIPSHAPE_SET:-ffhq}
PROMPT=${CLIPSHAPE_PROMPT:-face with big nose}
CLI=./target/release/clipshape
GOLDEN=${CLIPSHAPE_GOLDEN:-$ROOT/../shared/golden}
PHOTO=${CLIPSHAPE_PHOTO:-}
if [ -z "$PHOTO" ] && [ "$SET" = ffhq ] && [ -f "$GOLDEN/face/astronaut.png" ]; then
    PHOTO=$GOLDEN/face/astronaut.png
fi
if [ -n "$PHOTO" ]; then INPUT=("$PHOTO"); else INPUT=(--seed 1); fi
mkdir -p "$ROOT/out"
if ! $CLI models path "$SET" >/dev/null 2>&1 && [ "${CLIPSHAPE_OFFLINE:-0}" != 1 ]; then
    clipshape_step "fetching model set '$SET' (licences are shown below; CLIPSHAPE_OFFLINE=1 skips this)"
    $CLI models fetch "$SET" || true
fi
if $CLI models path "$SET" >/dev/null 2>&1; then
    clipshape_step "main job: clipshape edit $SET ${INPUT[*]} \"$PROMPT\" --out out/$SET-edit"
    $CLI edit "$SET" "${INPUT[@]}" "$PROMPT" --out "$ROOT/out/$SET-edit"
    clipshape_step "see out/$SET-edit: 00.png … (the photo with the edit at strengths -3..3), layer-00.png …, sheet.png"
else
    clipshape_step "model set '$SET' is not complete yet; the remaining step:"
    $CLI models path "$SET" 2>&1 | sed 's/^/    /' || true
    if [ -f "$GOLDEN/e4e.pt" ]; then
        clipshape_step "meanwhile, the same job on the tiny test models of the checkout (random weights: abstract pictures)"
        TINY=(--seed 1)
        if [ -f "$GOLDEN/face/astronaut.png" ]; then
            TINY=("$GOLDEN/face/astronaut.png" --align face --mtcnn "$GOLDEN/face/mtcnn")
        fi
        $CLI edit "$GOLDEN/e4e.pt" "${TINY[@]}" "$PROMPT" --steps 20 \
            --clip "$GOLDEN/clip_jit.pt" --vocab "$GOLDEN/bpe_simple_vocab_16e6.txt.gz" --out "$ROOT/out/tiny-edit"
    fi
fi
clipshape_step "done"
