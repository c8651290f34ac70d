#!/usr/bin/env bash
# One short, prepared GPU check for sessions lent a CUDA machine (device tool: carry
# target/release; that machine's python3 holds the same torch 2.11). It never runs in CI.
# The tiny models travel with the working tree (tests/fixtures/golden).
#   bash install/gpu-check.sh [OUT_DIR]
# 1. the library sees the GPU; 2. a tiny edit on cuda matches the CPU one; 3. the bench table.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-${OUT:-/tmp/clipshape-gpu}}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CLI="$ROOT/target/release/clipshape"
G=${CLIPSHAPE_GOLDEN:-$ROOT/tests/fixtures/golden}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$CLI" --device cuda info "$G/stylegan2.pt" | grep -E "^device:"
for dev in cpu cuda; do
    "$CLI" --device $dev edit "$G/e4e.pt" "face with big nose" --seed 3 --steps 20 --strengths=-2,0,2 \
        --clip "$G/clip_jit.pt" --vocab "$G/bpe_simple_vocab_16e6.txt.gz" --out "$OUT/edit-$dev" 2>&1 | tail -1
done
python3 - "$OUT" <<'PY'
import sys, numpy as np
from PIL import Image
out = sys.argv[1]
for name in ("00.png", "01.png", "02.png"):
    a = np.asarray(Image.open(f"{out}/edit-cpu/{name}"), dtype=int)
    b = np.asarray(Image.open(f"{out}/edit-cuda/{name}"), dtype=int)
    print(f"{name}: max |cpu - cuda| = {np.abs(a - b).max()} levels")
PY
"$CLI" --device cuda bench --full --batches 1,8 --iters 5 | tee "$OUT/bench-cuda.md"
