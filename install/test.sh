#!/usr/bin/env bash
# The README's test command (also what CI runs): every test suite, on the CPU, with the tiny
# golden models of tests/fixtures/golden (or $CLIPSHAPE_GOLDEN).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. install/env.sh

clipshape_ensure_venv
if ! python -c 'import pytest' 2>/dev/null; then
    clipshape_step "installing pytest into $CLIPSHAPE_VENV"
    python -m pip install --quiet --progress-bar off pytest
fi
# PyQt5 runs the Krita docker's real widgets offscreen in the fake-host tests; without it (no
# wheel for this platform) that one test skips itself.
if ! python -c 'import PyQt5.QtWidgets' 2>/dev/null; then
    clipshape_step "installing PyQt5 into $CLIPSHAPE_VENV (the Krita docker's widgets, offscreen)"
    python -m pip install --quiet --progress-bar off PyQt5 \
        || clipshape_step "PyQt5 could not be installed: the docker's widget test will be skipped"
fi
# Ray runs tools/eval_ray.py's shards on a local runtime in the scaled table's test; without
# it (no wheel for this platform) that test skips itself.
if ! python -c 'import ray' 2>/dev/null; then
    clipshape_step "installing ray into $CLIPSHAPE_VENV (tools/eval_ray.py's test)"
    python -m pip install --quiet --progress-bar off 'ray>=2.40' \
        || clipshape_step "ray could not be installed: tools/eval_ray.py's tests will be skipped"
fi
# A PyQt5 whose Qt cannot start offscreen (a missing system library) would abort pytest: the
# tests then use their fake Qt.
if python -c 'import PyQt5.QtWidgets' 2>/dev/null \
    && ! QT_QPA_PLATFORM=offscreen python -c 'from PyQt5.QtWidgets import QApplication; QApplication(["t"])' >/dev/null 2>&1; then
    clipshape_step "PyQt5 cannot start Qt offscreen here: the docker's widget tests use the fake Qt"
    export CLIPSHAPE_FAKE_QT=1
fi

# The Python and host tests load target/release/libclipshape.so, which only `cargo build`
# refreshes (`cargo test` rebuilds the copy in target/release/deps).
# rustfmt and clippy ship with this machine's toolchain; a toolchain without them (they cannot
# be fetched here) skips the style checks rather than failing the tests.
if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
    clipshape_step "cargo fmt --check, cargo clippy -D warnings"
    cargo fmt --all --check
    cargo clippy --release --all-targets -- -D warnings
else
    clipshape_step "rustfmt/clippy not installed with this toolchain: style checks skipped"
fi
clipshape_step "cargo build --release"
cargo build --release
clipshape_step "cargo test --release (unit, golden parity, fuzzing, C ABI, CLI, header)"
# The C ABI program also runs under valgrind when it is installed (a few minutes).
if command -v valgrind >/dev/null; then
    export CLIPSHAPE_VALGRIND=1
    clipshape_step "valgrind found: the C ABI program also runs under memcheck"
fi
cargo test --release
clipshape_step "the release archives: install/package.sh (its own build in target/package), then their tests"
bash install/package.sh --fast
bash install/release-tests.sh
clipshape_step "real GIMP 3 / Krita 5.2 hosts and the release installed as a person would (skipped without the trixie root; see install/host-tests.sh)"
bash install/host-tests.sh
clipshape_step "pytest: the shared ctypes module and both plug-ins with fake hosts, on the real library"
python -m pytest tests/python -q
