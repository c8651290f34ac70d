"""Defects of the third hostile round (issue #29) through the C ABI and the ctypes module; each
test failed on the tree before it."""

import ctypes
import os
import subprocess
import sys
import textwrap
import threading
import time

from conftest import GOLDEN, LIB, SHARED, golden, needs_models


@needs_models
def test_closing_a_transfer_while_another_thread_reads_it_is_safe():
    """Item 6: a strength slider's thread in Transfer.layer() and a Close button's
    Transfer.close() (it segfaulted 3 times of 3). Run in a child process: a crash must fail
    this test, not end the test run."""
    script = textwrap.dedent("""
        import sys, threading
        sys.path.insert(0, %r)
        import clipshape_ctypes as cs
        from conftest import read_png
        w, h, rgba = read_png(%r)
        ctx = cs.Context(device="cpu", n_threads=1, generator=%r, face_detector_dir=%r)
        face = ctx.detect_faces(rgba, w, h)[0]
        latent = ctx.encode_face(rgba, w, h, face)
        for round in range(3):
            t = ctx.transfer(latent, [], [-1.0, 0.0, 1.0], rgba, (w, h), face=face)
            started, errors = threading.Event(), []
            def slide():
                k = 0.0
                while True:
                    try:
                        t.layer(k)
                    except cs.InvalidArgumentError as e:   # closed: the slider sees that
                        errors.append(str(e))
                        return
                    started.set()
                    k = -k if k else 0.5
            thread = threading.Thread(target=slide)
            thread.start()
            started.wait()
            t.close()
            thread.join()
            assert errors and "closed" in errors[0], errors
        print("ok")
    """) % (SHARED, golden("face/astronaut.png"), golden("e4e.pt"), golden("face/mtcnn"))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)), CLIPSHAPE_LIB=LIB)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and "ok" in done.stdout, (done.returncode, done.stdout, done.stderr[-2000:])


@needs_models
def test_a_cancel_stops_the_layers_of_a_warp_render_and_is_spent(cs, model_files):
    """Item 9: cs_render_layers ignored cs_cancel while it made the layers (OK 7 s after the
    cancel) and left it pending, so the next call was cancelled at once."""
    ctx = cs.Context(device="cpu", n_threads=1, **model_files)
    try:
        w, h = 4000, 3000
        photo = bytes(range(256)) * (w * h * 4 // 256)
        latent = ctx.latent_from_seed(3)
        strengths = [-3, -2, -1, 0, 1, 2, 3]
        t0 = time.time()
        timer = threading.Timer(1.5, ctx.cancel)
        timer.start()
        try:
            ctx.render_layers(latent, [], strengths, (w, h), box=(0, 0, w, h), photo=photo)
            raise AssertionError("the layers ran to their end in %.1f s" % (time.time() - t0))
        except cs.CancelledError:
            took = time.time() - t0
        timer.join()
        assert took < 4.0, "stopped %.1f s after the start (the cancel came at 1.5 s)" % took
        # The cancel was spent on the call it stopped.
        small = bytes(64 * 64 * 4)
        assert ctx.encode(small, 64, 64, 0, "RGBA8")[0] is not None
    finally:
        ctx.close()


def test_models_add_checks_its_arguments_before_copying(cs, tmp_path, monkeypatch):
    """Item 17: cs_models_add with needed = NULL copied the file into the store, then said
    INVALID_ARGUMENT."""
    import tiny_store
    _, manifest = tiny_store.prepare(GOLDEN, str(tmp_path / "served"))
    store = tmp_path / "store"
    monkeypatch.setenv("CLIPSHAPE_MANIFEST", manifest)
    L = cs.load_library()
    status = L.cs_models_add(str(store).encode(), b"ffhq", golden("face/mtcnn/pnet.pt").encode(), None, 0, None)
    assert status == cs.STATUS_INVALID_ARGUMENT and "needed" in cs.last_error()
    assert not any(p.name.endswith(".pt") for p in store.rglob("*")), list(store.rglob("*"))
    needed = ctypes.c_size_t()
    status = L.cs_models_add(str(store).encode(), b"ffhq", golden("face/mtcnn/pnet.pt").encode(), None, 0,
                             ctypes.byref(needed))
    assert status == cs.STATUS_OK, cs.last_error()
    assert (store / "mtcnn_pnet.pt").is_file() and needed.value > 1
    assert not list(store.glob("*.lock")), "the store's locks live in .locks/, not beside the models"


@needs_models
def test_closing_a_context_from_its_own_progress_callback_is_safe():
    """The review of #29: a plug-in's Close handled inside the progress callback's event pump
    freed the context under the running optimisation (abort). It now frees it once the call
    has returned. In a child process: a crash must fail this test, not end the run."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        import clipshape_ctypes as cs
        ctx = cs.Context(device="cpu", n_threads=1, generator=%r, clip=%r, vocab=%r)
        latent = ctx.latent_from_seed(1)
        for at in (1, 3, 5):
            ctx = ctx if not ctx.closed else cs.Context(device="cpu", n_threads=1, generator=%r, clip=%r, vocab=%r)
            latent = ctx.latent_from_seed(1)
            try:
                ctx.optimize(latent, "face", steps=5, progress=lambda p, at=at: (p.step == at and ctx.close()) or True)
            except cs.CancelledError:
                pass
            assert ctx.closed, at
        print("ok")
    """) % ((SHARED,) + (golden("e4e.pt"), golden("clip_jit.pt"), golden("bpe_simple_vocab_16e6.txt.gz")) * 2)
    env = dict(os.environ, CLIPSHAPE_LIB=LIB)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and "ok" in done.stdout, (done.returncode, done.stdout, done.stderr[-2000:])


@needs_models
def test_a_photo_too_large_for_the_memory_left_is_an_error_not_an_abort():
    """Item 7: cs_transfer_create aborted the host process ("memory allocation of 864000000
    bytes failed"). With the address space limited to what the process holds plus 150 MB, a
    9000 × 9000 photo's transfer is CS_STATUS_OUT_OF_MEMORY with one line naming what was too
    big, and the process goes on. In a child process: an abort must fail this test."""
    script = textwrap.dedent("""
        import resource, sys
        sys.path.insert(0, %r)
        import clipshape_ctypes as cs
        ctx = cs.Context(device="cpu", n_threads=1, generator=%r)
        latent = ctx.latent_from_seed(1)
        w = h = 9000
        photo = bytes(w * h * 3)
        ctx.transfer(latent, [], [0.0, 1.0], bytes(64 * 64 * 3), (64, 64), box=(0, 0, 64, 64), fmt="RGB8")
        vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize:")][0].split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))
        try:
            ctx.transfer(latent, [], [0.0, 1.0], photo, (w, h), box=(0, 0, w, h), fmt="RGB8")
            print("no error")
        except cs.OutOfMemoryError as e:
            print("OOM:", e)
        print("alive")
    """) % (SHARED, golden("e4e.pt"))
    env = dict(os.environ, CLIPSHAPE_LIB=LIB)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    out = done.stdout
    assert done.returncode == 0 and "alive" in out, (done.returncode, out, done.stderr[-2000:])
    line = [l for l in out.splitlines() if l.startswith("OOM:")]
    assert line and "MB" in line[0] and len(line[0]) < 300, out


def test_a_system_too_old_for_the_library_is_said_in_plain_words(cs):
    """#30: on a system older than the release's glibc floor the loader refuses the library;
    the plug-ins say what is missing."""
    e = OSError("/x/libclipshape.so: /lib/x86_64-linux-gnu/libm.so.6: version `GLIBC_2.99' not found "
                "(required by /x/libclipshape.so)")
    text = cs._load_failure(e)
    assert "needs a newer system: GNU C library 2.99 or later" in text and "this system has" in text
