#!/usr/bin/env bash
# Tests of the release archives on this machine (install/test.sh runs it after
# install/package.sh; the archive tier of install/host-tests.sh installs them as a person would):
#   - check-bundle.sh on the unpacked archive: $ORIGIN-relative rpaths only, no libtorch_cuda in
#     libclipshape.so's NEEDED, every NEEDED shipped or a system library, no path of this machine
#     in any byte, no glibc symbol newer than install/GLIBC_FLOOR;
#   - a GPU asked for: "the GPU engine is not installed" without it; with the venv's
#     libtorch_cuda.so named by CLIPSHAPE_GPU_ENGINE, libtorch's CUDA backend is registered
#     (no GPU here: it says "no NVIDIA driver" / "no CUDA GPUs", not "Could not run … 'CUDA'
#     backend");
#   - a libtorch of another version is refused by name;
#   - the Krita zip: the plug-in with the engine inside, no links, what Krita's importer needs.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
. install/env.sh
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
NAME=clipshape-$VERSION-linux-x86_64
archive=dist/$NAME.tar.xz
[ -f "$archive" ] || { echo "release-tests.sh: no $archive (bash install/package.sh)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/clipshape-release.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; fail=1; }

clipshape_step "release tests of $archive"
tar -C "$work" -xf "$archive"
b=$work/$NAME
torch_lib=$("$CLIPSHAPE_VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
site=$(dirname "$(dirname "$torch_lib")")
# The build machine's paths, and the venv's layout below the home folder (remapped to `home/…`).
venv_rel=${CLIPSHAPE_VENV#"$HOME"/}
if bash install/check-bundle.sh "$b" "$REPO" "${CARGO_HOME:-$HOME/.cargo}" "$site" "$CLIPSHAPE_VENV" "$venv_rel"; then
    ok "check-bundle: relocatable, no libtorch_cuda, nothing of this machine, glibc ≤ $(cat install/GLIBC_FLOOR)"
else
    bad "check-bundle (above)"
fi

model=tests/fixtures/golden/e4e.pt
out=$(env -u LD_LIBRARY_PATH "$b/bin/clipshape" --device cpu info "$model" 2>&1) && ok "bin/clipshape runs from anywhere: $(echo "$out" | sed -n 2p)" \
    || bad "bin/clipshape info: $out"
"$b/bin/clipshape" --version | grep -qx "clipshape $VERSION" && ok "clipshape --version: $VERSION" || bad "clipshape --version: $("$b/bin/clipshape" --version)"

out=$(env -u CLIPSHAPE_GPU_ENGINE "$b/bin/clipshape" --device cuda info "$model" 2>&1 || true)
case "$out" in
    *"the GPU engine is not installed"*) ok "cuda without the GPU engine: the plain message" ;;
    *) bad "cuda without the GPU engine said: $out" ;;
esac
out=$(CLIPSHAPE_GPU_ENGINE=$torch_lib "$b/bin/clipshape" --device cuda info "$model" 2>&1 || true)
case "$out" in
    *"'CUDA' backend"*|*"GPU engine is not installed"*) bad "the GPU engine in $torch_lib did not register CUDA: $out" ;;
    *"NVIDIA driver"*|*"no CUDA GPUs"*|*"resolution:"*) ok "the GPU engine named by CLIPSHAPE_GPU_ENGINE loads: $(echo "$out" | head -n1 | cut -c1-100)…" ;;
    *) bad "with the GPU engine: $out" ;;
esac
# Through the C ABI (the ctypes module the plug-ins use), without the engine.
out=$(CLIPSHAPE_LIB=$b/lib/libclipshape.so env -u CLIPSHAPE_GPU_ENGINE \
    python3 tests/python/hosts/cuda_refusal.py plugin-wrappers/python "$model" 2>&1 || true)
case "$out" in
    *"DeviceError: "*"the GPU engine is not installed"*) ok "cuda through the ABI without the GPU engine: the plain message" ;;
    *) bad "cuda through the ABI said: $out" ;;
esac

echo 2.10.0 >"$b/lib/torch_version.txt"
out=$("$b/bin/clipshape" --device cpu info "$model" 2>&1 || true)
case "$out" in
    *"is version 2.10.0; this library was built for libtorch"*) ok "a libtorch of another version is refused by name" ;;
    *) bad "another libtorch version: $out" ;;
esac

zip=dist/clipshape-krita-$VERSION.zip
if [ -f "$zip" ]; then
    if python3 - "$zip" <<'EOF'
import stat, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
links = [i.filename for i in z.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
need = ["clipshape.desktop", "clipshape/__init__.py", "clipshape/clipshape_ctypes.py", "clipshape/libclipshape.so",
        "clipshape/libtorch_cpu.so", "clipshape/libc10.so", "clipshape/VERSION"]
missing = [n for n in need if n not in names]
outside = [n for n in names if not (n == "clipshape.desktop" or n.startswith("clipshape/"))]
assert not links and not missing and not outside, (links, missing, outside)
print("  ok    the Krita zip: %d files, the engine inside, no links" % len(names))
EOF
    then :; else bad "the Krita zip $zip"; fi
fi

[ "$fail" = 0 ] && clipshape_step "release tests passed" || clipshape_step "release tests FAILED"
exit "$fail"
