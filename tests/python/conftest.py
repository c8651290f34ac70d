"""Shared fixtures of the plug-in tests.

The tests call the REAL libclipshape.so with the tiny golden models; hosts (GIMP, Krita, Qt when
PyQt5 is absent) are fakes installed into sys.modules (see fake_gimp.py, fake_krita.py).

  CLIPSHAPE_LIB     the library (default <repo>/target/release/libclipshape.so)
  CLIPSHAPE_GOLDEN  the tiny models (default <repo>/tests/fixtures/golden)
"""

import os
import tempfile
import struct
import subprocess
import sys
import zlib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(REPO, "plugin-wrappers", "python")
LIB = os.environ.get("CLIPSHAPE_LIB") or os.path.join(REPO, "target", "release",
                                                      "libclipshape.so")
GOLDEN = os.environ.get("CLIPSHAPE_GOLDEN") or os.path.join(REPO, "tests", "fixtures", "golden")

os.environ["CLIPSHAPE_LIB"] = LIB  # the shared module (every copy of it) loads this one
# libtorch on one thread: its default (one per core) swings 10× slower when another job shares
# the CPUs (OpenMP spin-waiting); the tiny models do not need more.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# An empty model store unless a test makes one: what a user's store holds (a face detector,
# a set) must not change what a test sees.
os.environ["CLIPSHAPE_MODELS"] = tempfile.mkdtemp(prefix="clipshape-test-store-")
for path in (SHARED, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

HAVE_LIB = os.path.exists(LIB)
HAVE_GOLDEN = os.path.exists(os.path.join(GOLDEN, "e4e.pt"))
needs_models = pytest.mark.skipif(not (HAVE_LIB and HAVE_GOLDEN),
                                  reason="needs %s and the tiny models in %s" % (LIB, GOLDEN))


def golden(name):
    return os.path.join(GOLDEN, name)


def read_png(path):
    """(width, height, RGBA bytes) of an 8-bit, non-interlaced RGB/RGBA PNG."""
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, [], None
    while pos < len(raw):
        n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    width, height, depth, color, _, _, interlace = hdr
    assert depth == 8 and color in (2, 6) and interlace == 0, "unsupported PNG %r" % (hdr,)
    bpp = 3 if color == 2 else 4
    data = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    out = bytearray()
    for y in range(height):
        ftype = data[y * (stride + 1)]
        line = bytearray(data[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out += line
        prev = line
    if bpp == 3:
        rgba = bytearray(width * height * 4)
        rgba[0::4], rgba[1::4], rgba[2::4] = out[0::3], out[1::3], out[2::3]
        rgba[3::4] = b"\xff" * (width * height)
        out = rgba
    return width, height, bytes(out)


@pytest.fixture(scope="session")
def picture():
    """picture.png of the golden set: (301, 200, RGBA bytes)."""
    if not HAVE_GOLDEN:
        pytest.skip("no golden picture in %s" % GOLDEN)
    return read_png(golden("picture.png"))


@pytest.fixture(scope="session")
def cs():
    if not HAVE_LIB:
        pytest.skip("no library at %s" % LIB)
    import clipshape_ctypes
    return clipshape_ctypes


@pytest.fixture(scope="session")
def logic():
    import clipshape_logic
    return clipshape_logic


@pytest.fixture(scope="session")
def model_files():
    if not HAVE_GOLDEN:
        pytest.skip("no golden models in %s" % GOLDEN)
    return {"generator": golden("e4e.pt"), "clip": golden("clip_jit.pt"),
            "vocab": golden("bpe_simple_vocab_16e6.txt.gz")}


@pytest.fixture(scope="session")
def ctx(cs, model_files):
    c = cs.Context(device="cpu", n_threads=1, **model_files)  # steady timing on busy CI
    yield c
    c.close()


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """The plug-ins installed by install/plugins.sh into a temporary HOME → that HOME."""
    home = tmp_path_factory.mktemp("home")
    out = subprocess.run(["bash", os.path.join(REPO, "install", "plugins.sh"), "--home",
                          str(home), "--create-dirs", "--no-zip"], capture_output=True, text=True,
                         env=dict(os.environ, CLIPSHAPE_LIB=LIB))
    assert out.returncode == 0, out.stdout + out.stderr
    return home


def assert_unedited_layer(layer, photo):
    """The k = 0 layer of the default warp paste: nothing moves, so nothing shows (alpha 0
    everywhere), and its colours are the photo's own pixels under it, exactly."""
    layer, photo = bytes(layer), bytes(photo)
    assert len(layer) == len(photo)
    assert set(layer[3::4]) == {0}, "the unedited layer shows"
    colour = [i for i, (a, b) in enumerate(zip(layer, photo)) if i % 4 != 3 and a != b]
    assert not colour, "the unedited layer differs from the photo at %d values" % len(colour)


@pytest.fixture(scope="session")
def astronaut():
    """A real photo with one face: (512, 512, RGBA bytes)."""
    if not HAVE_GOLDEN:
        pytest.skip("no golden photo in %s" % GOLDEN)
    return read_png(golden("face/astronaut.png"))


@pytest.fixture(scope="session")
def face_ctx(cs, model_files):
    """The tiny models with the real MTCNN face detector."""
    c = cs.Context(device="cpu", n_threads=1, face_detector_dir=golden("face/mtcnn"), **model_files)
    yield c
    c.close()


def reference_face(case="astronaut"):
    import json
    with open(golden("face/face_meta.json")) as f:
        return json.load(f)["cases"][case]["faces"][0]


@pytest.fixture
def tiny_mirror(tmp_path, monkeypatch):
    """The tiny models as the `ffhq` set of a manifest of their own, served over HTTP from this
    machine (tests/python/tiny_store.py), and an empty store: the library's CLIPSHAPE_MANIFEST,
    CLIPSHAPE_MODELS_MIRROR and CLIPSHAPE_MODELS point at them → (server, store dir)."""
    import tiny_store
    mirror, manifest = tiny_store.prepare(GOLDEN, str(tmp_path / "served"))
    server = tiny_store.Server(mirror)
    monkeypatch.setenv("CLIPSHAPE_MANIFEST", manifest)
    monkeypatch.setenv("CLIPSHAPE_MODELS_MIRROR", server.url)
    monkeypatch.setenv("CLIPSHAPE_MODELS", str(tmp_path / "store"))
    yield server, tmp_path / "store"
    server.close()
