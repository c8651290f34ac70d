#!/usr/bin/env bash
# The README's test command (also what CI runs): every test suite, on the CPU, with the tiny
# golden models of ../shared/golden (or $CLIPSHAPE_GOLDEN).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. install/env.sh

clipshape_ensure_venv
clipshape_step "cargo test --release (unit, golden parity, C ABI, CLI, header)"
cargo test --release
