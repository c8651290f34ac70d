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

# The main job. Until the edit pipeline lands it renders a sample: with the user's generator
# when CLIPSHAPE_GENERATOR names one, else with the tiny test generator of a checkout.
GEN=${CLIPSHAPE_GENERATOR:-$ROOT/../shared/golden/stylegan2.pt}
mkdir -p "$ROOT/out"
if [ -f "$GEN" ]; then
    clipshape_step "main job: clipshape sample $GEN --seed 1 --truncation 0.7"
    ./target/release/clipshape sample "$GEN" --seed 1 --truncation 0.7 --out "$ROOT/out/sample.png"
    ./target/release/clipshape info "$GEN" | head -8
else
    clipshape_step "no generator at $GEN: set CLIPSHAPE_GENERATOR to a rosinality/e4e checkpoint to render a sample"
fi
clipshape_step "done"
