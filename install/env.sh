# Sourced by setup.sh and test.sh: makes sure the Python venv that provides libtorch exists and
# exports what tch's build needs. The venv lives outside the repo (it is ~4.7 GB with the CUDA
# wheels) and is created on first use.
#   CLIPSHAPE_VENV    where the venv lives (default: $XDG_CACHE_HOME/clipshape/venv)
#   CLIPSHAPE_PYTHON  the interpreter that creates it (default: python3)

CLIPSHAPE_TORCH_VERSION=2.11.0   # what tch 0.24 is built against
CLIPSHAPE_VENV=${CLIPSHAPE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/clipshape/venv}

clipshape_step() { printf '==> %s\n' "$*"; }

clipshape_ensure_venv() {
    local py=${CLIPSHAPE_PYTHON:-python3}
    if [ ! -x "$CLIPSHAPE_VENV/bin/python" ]; then
        clipshape_step "creating the Python venv $CLIPSHAPE_VENV"
        mkdir -p "$(dirname "$CLIPSHAPE_VENV")"
        "$py" -m venv "$CLIPSHAPE_VENV"
    fi
    local have
    have=$("$CLIPSHAPE_VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
    if [ "$have" != "$CLIPSHAPE_TORCH_VERSION" ]; then
        clipshape_step "installing torch==$CLIPSHAPE_TORCH_VERSION into $CLIPSHAPE_VENV (libtorch for tch; several GB, once)"
        "$CLIPSHAPE_VENV/bin/python" -m pip install --quiet --progress-bar off "torch==$CLIPSHAPE_TORCH_VERSION"
    else
        clipshape_step "torch $have found in $CLIPSHAPE_VENV"
    fi
    export VIRTUAL_ENV="$CLIPSHAPE_VENV"
    export PATH="$CLIPSHAPE_VENV/bin:$PATH"
    export LIBTORCH_USE_PYTORCH=1
}
