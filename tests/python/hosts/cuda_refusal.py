"""What the C ABI says when a context is asked for on a GPU: run by install/release-tests.sh and
the archive tier (tests/python/hosts/archive_person.sh) to see the plain "the GPU engine is not
installed" through the ctypes module the plug-ins use.

    python3 cuda_refusal.py MODULE_DIR MODEL   (MODULE_DIR holds clipshape_ctypes.py)
Prints "DeviceError: <message>", or "made a context on cuda"."""
import sys

sys.path.insert(0, sys.argv[1])
import clipshape_ctypes as cs  # noqa: E402

try:
    cs.Context(device="cuda", generator=sys.argv[2])
    print("made a context on cuda")
except cs.DeviceError as e:
    print("DeviceError:", e)
