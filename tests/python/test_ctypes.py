"""The ctypes binding: every signature, the status → exception mapping, handles, callbacks,
cancellation and the library's own validation, against the real libclipshape.so."""

import ctypes
import re
from pathlib import Path
import gc
import json
import importlib.util
import os
import threading
import time

import pytest

from conftest import LIB, REPO, SHARED, golden, needs_models

HEADER = os.path.join(REPO, "include", "clipshape.h")


def fresh_module(name="clipshape_ctypes_fresh"):
    """A second, independent instance of the module (its own library cache)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(SHARED,
                                                                     "clipshape_ctypes.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def pattern(w, h, bpp=4):
    return bytes(((x * 7 + y * 3 + c * 50) % 256) if c < 3 else 255
                 for y in range(h) for x in range(w) for c in range(bpp))


# ───────────────────────────── without the library ───────────────────

def test_every_status_has_its_exception():
    cs = fresh_module()
    header = (Path(__file__).resolve().parents[2] / "include" / "clipshape.h").read_text()
    statuses = {name: int(v) for name, v in re.findall(r"CS_STATUS_(\w+) = (\d+)", header)}
    assert {cls.status for cls in cs.ERRORS.values()} == set(statuses.values()) - {0}
    for name, value in statuses.items():
        assert getattr(cs, "STATUS_" + name) == value, name
    for status, cls in cs.ERRORS.items():
        e = cs.error_for_status(status, "what went wrong")
        assert type(e) is cls and e.status == status and str(e) == "what went wrong"
        assert isinstance(e, cs.ClipShapeError)
    assert isinstance(cs.error_for_status(cs.STATUS_INVALID_ARGUMENT, "x"), ValueError)
    assert isinstance(cs.error_for_status(cs.STATUS_IO, "x"), OSError)
    assert str(cs.error_for_status(cs.STATUS_IO, "no file")) == "no file"
    unknown = cs.error_for_status(42, "odd")
    assert isinstance(unknown, cs.InternalError) and "42" in str(unknown)


def test_header_functions_are_all_declared():
    cs = fresh_module()
    if not os.path.exists(HEADER):
        pytest.skip("no header")
    import re
    with open(HEADER) as f:
        text = f.read()
    declared = set(re.findall(r"\b(cs_[a-z_0-9]+)\s*\(", text)) - {"cs_progress_fn",
                                                                    "cs_fetch_progress_fn"}
    declared = {n for n in declared if not n.endswith("_fn")}
    assert declared == set(cs._SIGNATURES), (declared ^ set(cs._SIGNATURES))


def test_missing_library_message_lists_what_was_tried(monkeypatch, tmp_path):
    cs = fresh_module()
    monkeypatch.setenv("CLIPSHAPE_LIB", str(tmp_path / "nope.so"))
    monkeypatch.setattr(cs, "LIBRARY_NAME", "libclipshape-not-installed.so")
    monkeypatch.setattr(cs, "__file__", str(tmp_path / "clipshape_ctypes.py"))
    with pytest.raises(cs.LibraryNotFoundError) as e:
        cs.version()
    text = str(e.value)
    assert "$CLIPSHAPE_LIB: %s (no such file)" % (tmp_path / "nope.so") in text
    assert str(tmp_path) in text and "CLIPSHAPE_LIB" in text and "plugins.sh" in text
    assert isinstance(e.value, ImportError)


def test_library_order_setting_env_module_dir(monkeypatch):
    cs = fresh_module()
    monkeypatch.setenv("CLIPSHAPE_LIB", "/env/lib.so")
    cs.set_library_path("/setting/lib.so")
    origins = [o for o, _ in cs.library_candidates()]
    paths = [p for _, p in cs.library_candidates()]
    assert origins[:2] == ["setting", "$CLIPSHAPE_LIB"] and paths[:2] == ["/setting/lib.so",
                                                                           "/env/lib.so"]
    assert paths[2] == os.path.join(SHARED, "libclipshape.so") and origins[3] == "system loader"


def test_not_a_clipshape_library():
    cs = fresh_module()
    libs = [p for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1",
                        "/lib64/libz.so.1", "/usr/lib/libz.so.1") if os.path.exists(p)]
    if not libs:
        pytest.skip("no libz to load")
    with pytest.raises(cs.LibraryNotFoundError, match="not a libclipshape"):
        cs.load_library(libs[0])


def test_device_strings():
    cs = fresh_module()
    assert cs.parse_device("auto") == (cs.DEVICE_AUTO, 0)
    assert cs.parse_device("CPU") == (cs.DEVICE_CPU, 0)
    assert cs.parse_device("cuda") == (cs.DEVICE_CUDA, 0)
    assert cs.parse_device("cuda:3") == (cs.DEVICE_CUDA, 3)
    with pytest.raises(cs.InvalidArgumentError, match="tpu"):
        cs.parse_device("tpu")


# ───────────────────────────── with the library ──────────────────────

def test_library_facts(cs):
    assert cs.abi_version() == cs.ABI_VERSION == 2
    assert cs.version().count(".") == 2
    assert cs.cuda_device_count() >= 0
    assert os.path.samefile(cs.load_library().clipshape_path, LIB)


def test_params_structs_match_the_library(cs):
    L = cs.load_library()
    for init, struct in ((L.cs_context_params_init, cs.cs_context_params),
                         (L.cs_optimize_params_init, cs.cs_optimize_params),
                         (L.cs_render_params_init, cs.cs_render_params)):
        p = cs._init(init, struct)
        assert p.struct_size == ctypes.sizeof(struct)
    p = cs._init(L.cs_optimize_params_init, cs.cs_optimize_params)
    assert p.steps == 100 and p.lambda2 < 0 and p.strength == 1.0 and p.method == 0


def test_raw_status_and_thread_local_last_error(cs):
    L = cs.load_library()
    p = cs._init(L.cs_context_params_init, cs.cs_context_params)
    p.generator_path = b"/no/such/generator.pt"
    out = ctypes.POINTER(cs.cs_ctx)()
    assert L.cs_context_create(ctypes.byref(p), ctypes.byref(out)) == cs.STATUS_IO
    assert "/no/such/generator.pt" in cs.last_error()
    seen = []
    t = threading.Thread(target=lambda: seen.append(cs.last_error()))
    t.start()
    t.join()
    assert seen == [""]                          # per thread
    assert L.cs_render_params_init(None) == cs.STATUS_INVALID_ARGUMENT
    assert "params" in cs.last_error()


@needs_models
def test_context_errors_name_the_file(cs, model_files):
    with pytest.raises(cs.FileIOError, match="/no/such/e4e.pt"):
        cs.Context(generator="/no/such/e4e.pt", device="cpu")
    with pytest.raises(cs.ModelFormatError, match="picture.png"):
        cs.Context(generator=golden("picture.png"), device="cpu")
    with pytest.raises(cs.InvalidArgumentError, match="no model"):
        cs.Context(device="cpu")
    with pytest.raises(cs.InvalidArgumentError, match="device"):
        cs.Context(generator=model_files["generator"], device="quantum")


@needs_models
def test_generator_facts(ctx):
    info = ctx.generator_info()
    assert (info.resolution, info.n_latent, info.style_dim) == (64, 10, 64)
    layers = ctx.layers()
    assert len(layers) == info.n_layers
    conv3 = [l for l in layers if l.name == "convs.3"][0]
    assert conv3.weight_shape == (1, 32, 32, 3, 3) and conv3.weight_numel == 9216
    assert ctx.frame_size() == (64, 64)


@needs_models
def test_encode_recon_is_the_k0_render(ctx):
    w, h = 50, 40
    px = pattern(w, h)
    latent, recon = ctx.encode(px, w, h, w * 4, "RGBA8")
    with latent:
        assert len(latent) == 640
        assert (recon.width, recon.height, recon.stride, recon.format) == (50, 40, 200, "RGBA8")
        k0 = ctx.render(latent, [], [0.0], "RGBA8", target=(w, h))[0]
        assert k0 == recon.data
        bgra = ctx.render(latent, [], [0.0], "BGRA8", target=(w, h))[0]
        assert bgra[0::4] == recon.data[2::4] and bgra[2::4] == recon.data[0::4]
        frame = ctx.render_pictures(latent, [], [0.0, 1.0], "RGB8")
        assert [(p.width, p.height, len(p.data)) for p in frame] == [(64, 64, 64 * 64 * 3)] * 2


@needs_models
def test_pixel_buffers_and_strides(ctx, cs):
    w, h = 20, 10
    rgb = pattern(w, h, 3)
    padded = b"".join(rgb[y * w * 3:(y + 1) * w * 3] + b"\0" * 4 for y in range(h))
    a, _ = ctx.encode(rgb, w, h, 0, "RGB8", recon=False)
    b, _ = ctx.encode(bytearray(padded), w, h, w * 3 + 4, "RGB8", recon=False)
    c, _ = ctx.encode(memoryview(padded), w, h, w * 3 + 4, cs.PIXEL_FORMATS["RGB8"], recon=False)
    assert a.to_floats() == b.to_floats() == c.to_floats()
    with pytest.raises(cs.InvalidArgumentError, match="needs"):
        ctx.encode(rgb[:-1], w, h, 0, "RGB8")
    with pytest.raises(cs.InvalidArgumentError, match="stride"):
        ctx.encode(rgb, w, h, 10, "RGB8")
    with pytest.raises(cs.InvalidArgumentError, match="pixel format"):
        ctx.encode(rgb, w, h, 0, "CMYK")
    with pytest.raises(cs.InvalidArgumentError, match="no pixels"):
        ctx.encode(b"", 0, 0, 0, "RGB8")


@needs_models
def test_optimize_at_a_lower_size_and_in_bf16_through_the_abi(ctx, cs):
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)
    shift = ctx.optimize(latent, "face with big nose", steps=2, optimize_size=32, bf16=True)
    assert shift.meta("optimize_size") == "32" and shift.meta("bf16_min_channels") == "256"
    plain = ctx.optimize(latent, "face with big nose", steps=2)
    assert plain.meta("optimize_size") is None and plain.to_floats() != shift.to_floats()
    for bad in (48, 8):  # not a power of two; below the 16 px that convs.3 works at
        with pytest.raises(cs.InvalidArgumentError, match="optimize_size"):
            ctx.optimize(latent, "x", steps=1, optimize_size=bad)
    with pytest.raises(cs.InvalidArgumentError, match="optimize_size"):
        ctx.optimize(latent, "x", steps=1, optimize_size=-1)


@needs_models
def test_layer_auto_through_the_abi(ctx, cs):
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)
    shift = ctx.optimize(latent, "face with big nose", steps=2, layer="auto")
    ranking = shift.meta("layer_probe").split(",")
    assert shift.meta("layer_choice") == "auto" and len(ranking) == 8
    assert shift.layer == ranking[0].split(":")[0]


@needs_models
def test_the_preservation_term_through_the_abi(ctx, cs):
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)
    shift = ctx.optimize(latent, "face with big nose", steps=2, lambda3=1.0, region=(8, 8, 56, 56))
    assert shift.meta("lambda3") == "1" and shift.meta("region") == "8,8,56,56"
    everywhere = ctx.optimize(latent, "face with big nose", steps=2, lambda3=1.0)
    assert everywhere.meta("region") is None and everywhere.to_floats() != shift.to_floats()
    with pytest.raises(cs.InvalidArgumentError, match="region"):
        ctx.optimize(latent, "x", steps=1, lambda3=1.0, region=(1, 2, 3))
    with pytest.raises(cs.InvalidArgumentError, match="region"):
        ctx.optimize(latent, "x", steps=1, lambda3=1.0, region=(30, 8, 10, 56))
    with pytest.raises(cs.InvalidArgumentError, match="lambda3"):
        ctx.optimize(latent, "x", steps=1, lambda3=-2.0)


@needs_models
def test_several_layers_and_jointly_learnt_prompts_through_the_abi(ctx, cs, tmp_path):
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)
    single = ctx.optimize(latent, "face with big nose", steps=2, layer="convs.3")
    both = ctx.optimize(latent, "face with big nose", steps=2, layer=["convs.5", "convs.3"])
    assert both.layer == "convs.3,convs.5" and both.meta("layer") == "convs.3,convs.5"
    numel = {l.name: l.weight_numel for l in ctx.layers()}
    assert len(single.to_floats()) == numel["convs.3"]
    assert len(both.to_floats()) == numel["convs.3"] + numel["convs.5"]
    path = str(tmp_path / "both.safetensors")
    both.save(path)
    back = ctx.load_shift(path)
    assert back.layer == both.layer and back.to_floats() == both.to_floats()
    again = ctx.shift_from_floats(both.layer, both.to_floats())
    assert again.to_floats() == both.to_floats()
    with pytest.raises(cs.InvalidArgumentError, match="twice"):
        ctx.optimize(latent, "x", steps=1, layer="convs.3,convs.3")

    for bad in ([], [""], [3]):
        with pytest.raises(cs.InvalidArgumentError, match="layer"):
            ctx.optimize(latent, "x", steps=1, layer=bad)
    with pytest.raises(cs.InvalidArgumentError, match="auto_layers"):
        ctx.optimize(latent, "x", steps=1, layer="convs.3", auto_layers=2)
    auto = ctx.optimize(latent, "face with big nose", steps=2, layer="auto", auto_layers=2)
    assert auto.layer.count(",") == 1 and auto.meta("layer_choice") == "auto"

    prompts = ["a wide face", "face with big nose"]
    apart = ctx.optimize_batch([latent], prompts, steps=2, lambda4=1.0)
    assert [s.meta("prompt") for s in apart] == prompts
    assert json.loads(apart[0].meta("joint_with")) == [prompts[1]]
    with pytest.raises(cs.InvalidArgumentError, match="lambda4"):
        ctx.optimize_batch([latent], prompts[:1], steps=1, lambda4=1.0)


@needs_models
def test_optimize_params_of_an_older_binding_still_work(ctx, cs):
    """A 0.2 caller's struct ends before optimize_size: accepted, as the fp32 full-size loop."""
    import ctypes
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)

    def run(struct_size):
        p = ctx._optimize_params([], steps=1, optimize_size=48)  # would be refused if read
        p.prompt = b"a face"
        p.struct_size = struct_size
        out = ctypes.POINTER(cs.cs_shift)()
        cs._call(ctx._lib.cs_optimize, ctx.ptr, latent.ptr, ctypes.byref(p), ctypes.byref(out))
        return cs.Shift(out)

    old = cs.cs_optimize_params.optimize_size.offset
    assert run(old).meta("optimize_size") is None
    with pytest.raises(cs.InvalidArgumentError, match="optimize_size"):
        run(ctypes.sizeof(cs.cs_optimize_params))
    with pytest.raises(cs.InvalidArgumentError, match="struct_size"):
        run(old - 4)


@needs_models
def test_optimize_params_ending_at_region_ignore_what_came_after(ctx, cs):
    """A binding built before lambda4 passes a struct ending at `region`: read up to there,
    lambda4 taken as 0."""
    import ctypes
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)

    def run(struct_size):
        p = ctx._optimize_params([], steps=1, lambda4=1.0)  # one prompt: refused if read
        p.prompt = b"a face"
        p.struct_size = struct_size
        out = ctypes.POINTER(cs.cs_shift)()
        cs._call(ctx._lib.cs_optimize, ctx.ptr, latent.ptr, ctypes.byref(p), ctypes.byref(out))
        return cs.Shift(out)

    assert run(cs.cs_optimize_params.lambda4.offset).meta("lambda4") is None
    with pytest.raises(cs.InvalidArgumentError, match="lambda4"):
        run(ctypes.sizeof(cs.cs_optimize_params))


@needs_models
def test_for_warp_optimises_at_the_flows_side_and_older_structs_ignore_it(ctx, cs):
    import ctypes
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)

    def run(struct_size):
        p = ctx._optimize_params([], steps=1, for_warp=True)
        p.prompt = b"a face"
        p.struct_size = struct_size
        out = ctypes.POINTER(cs.cs_shift)()
        cs._call(ctx._lib.cs_optimize, ctx.ptr, latent.ptr, ctypes.byref(p), ctypes.byref(out))
        return cs.Shift(out)

    # The tiny generator is smaller than the flow's side (256): the loop stops at its own 64.
    assert run(ctypes.sizeof(cs.cs_optimize_params)).meta("optimize_size") == "64"
    assert run(cs.cs_optimize_params.for_warp.offset).meta("optimize_size") is None
    with pytest.raises(TypeError, match="unexpected arguments: colour"):
        ctx.optimize(latent, "a face", steps=1, colour="red")


@needs_models
def test_optimize_render_and_shift_files(ctx, cs, tmp_path):
    w, h = 32, 32
    latent, _ = ctx.encode(pattern(w, h), w, h, 0, "RGBA8", recon=False)
    seen = []
    shift = ctx.optimize(latent, "face with big nose", steps=4, progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4] and all(p.total == 4 for p in seen)
    assert shift.layer == "convs.3" and len(shift) == 9216
    assert shift.meta("prompt") == "face with big nose" and shift.meta("layer") == "convs.3"
    assert float(shift.meta("clip_sim_after")) == pytest.approx(seen[-1].clip_sim, abs=0.05)
    assert shift.meta("no such key") is None and shift.meta("x", "d") == "d"
    images = ctx.render(latent, [(shift, 1.0)], [-2, 0, 2], "RGBA8", target=(w, h))
    assert len(images) == 3 and all(len(i) == w * h * 4 for i in images)
    assert images[0] != images[2]
    path = str(tmp_path / "edit.safetensors")
    shift.save(path)
    assert os.listdir(tmp_path) == ["edit.safetensors"]  # atomic: no temporary left behind
    with cs.Shift.load(ctx, path) as again:
        assert again.to_floats() == shift.to_floats() and again.meta("prompt") == shift.meta(
            "prompt")
    copy = ctx.shift_from_floats("convs.3", shift.to_floats())
    assert ctx.render(latent, [(copy, 1.0)], [2], "RGBA8", target=(w, h))[0] == images[2]
    with pytest.raises(cs.InvalidArgumentError, match="convs.99"):
        ctx.optimize(latent, "x", steps=1, layer="convs.99")
    with pytest.raises(cs.InvalidArgumentError, match="prompt is empty"):
        ctx.optimize(latent, "   ", steps=1)
    with pytest.raises(cs.InvalidArgumentError, match="steps"):
        ctx.optimize(latent, "x", steps=0)
    with pytest.raises(cs.InvalidArgumentError, match="strengths"):
        ctx.render(latent, [], [float("nan")])
    with pytest.raises(cs.FileIOError, match="missing.safetensors"):
        ctx.load_shift(str(tmp_path / "missing.safetensors"))
    with pytest.raises(cs.InvalidArgumentError):
        ctx.shift_from_floats("convs.3", [0.0] * 5)
    lat_path = str(tmp_path / "w.safetensors")
    latent.save(lat_path)
    assert ctx.load_latent(lat_path).to_floats() == latent.to_floats()
    assert ctx.latent_from_floats(latent.to_floats()).to_floats() == latent.to_floats()
    shifts = ctx.optimize_batch([latent], ["a", "b"], steps=2)
    assert [s.meta("prompt") for s in shifts] == ["a", "b"]


@needs_models
def test_progress_callback_stops_and_reraises(ctx, cs):
    latent = ctx.latent_from_seed(1, 0.7)

    def stop_at_2(p):
        return p.step < 2

    with pytest.raises(cs.CancelledError):
        ctx.optimize(latent, "a face", steps=50, progress=stop_at_2)

    class Boom(Exception):
        pass

    def boom(p):
        raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        ctx.optimize(latent, "a face", steps=50, progress=boom)
    assert ctx.optimize(latent, "a face", steps=2).layer == "convs.3"  # usable afterwards


@needs_models
def test_cancel_from_another_thread(ctx, cs):
    latent = ctx.latent_from_seed(2, 0.7)
    started = threading.Event()
    steps = []

    def progress(p):
        steps.append(p.step)
        started.set()

    def canceller():
        started.wait(30)
        ctx.cancel()

    t = threading.Thread(target=canceller)
    t.start()
    t0 = time.time()
    with pytest.raises(cs.CancelledError) as e:
        ctx.optimize(latent, "a face", steps=5000, progress=progress)
    t.join()
    assert e.value.status == cs.STATUS_CANCELLED
    assert steps and steps[-1] < 5000 and time.time() - t0 < 30
    assert ctx.optimize(latent, "a face", steps=2) is not None  # a later call starts fresh


@needs_models
def test_cancel_within_a_job_covers_the_gaps(ctx, cs):
    latent = ctx.latent_from_seed(3, 0.7)
    with ctx.job():
        ctx.cancel()          # between calls: the job's next step stops
        with pytest.raises(cs.CancelledError):
            ctx.render(latent, [], [0.0])
        with pytest.raises(cs.CancelledError):
            ctx.optimize(latent, "a face", steps=3)
    assert not ctx.cancel_requested
    assert len(ctx.render(latent, [], [0.0])) == 1


@needs_models
def test_handles_close_once_and_refuse_use(cs, model_files):
    with cs.Context(device="cpu", **model_files) as c:
        latent = c.latent_from_seed(0)
        latent.close()
        latent.close()
        assert latent.closed
        with pytest.raises(cs.InvalidArgumentError, match="closed"):
            len(latent)
        shift = c.shift_from_floats("convs.3", [0.0] * 9216)
        del shift
        gc.collect()
    assert c.closed
    with pytest.raises(cs.InvalidArgumentError, match="closed"):
        c.generator_info()
    c.cancel()  # harmless after close
    c.close()


@needs_models
def test_close_waits_for_a_running_optimisation(cs, model_files):
    c = cs.Context(device="cpu", **model_files)
    latent = c.latent_from_seed(0)
    errors = []
    started = threading.Event()

    def work():
        try:
            c.optimize(latent, "a face", steps=5000, progress=lambda p: started.set())
        except cs.ClipShapeError as e:
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    started.wait(30)
    c.close()                 # cancels, waits for the call to return, then frees
    t.join()
    assert isinstance(errors[0], cs.CancelledError) and c.closed


@needs_models
def test_clip_score(ctx):
    w, h = 40, 30
    s = ctx.clip_score(pattern(w, h), w, h, 0, "RGBA8", "a face")
    assert -1.0 <= s <= 1.0


def test_models_check_names_missing_files(cs, tmp_path):
    with pytest.raises(cs.FileIOError) as e:
        cs.models_check("ffhq", str(tmp_path))
    assert "e4e_ffhq_encode.pt" in str(e.value) and str(tmp_path) in str(e.value)
    assert "e4e_ffhq_encode.pt" in cs.models_missing("car", str(tmp_path)) or \
        "e4e_cars_encode.pt" in cs.models_missing("car", str(tmp_path))
    with pytest.raises(cs.InvalidArgumentError, match="nosuchset"):
        cs.models_check("nosuchset", str(tmp_path))
    with pytest.raises(cs.InvalidArgumentError, match="nosuchset"):
        cs.models_fetch("nosuchset", str(tmp_path), progress=lambda f, d, t: True)


def test_domain_facts_of_a_context(ctx):
    d = ctx.domain()
    # The tiny e4e model is a face-like 64 px generator: the whole square is the picture.
    assert d.frame == (0, 0, 64, 64)
    assert d.has_encoder and d.has_clip
    assert d.default_layer == "convs.3" and 0.01 <= d.default_lambda2 <= 0.1
    assert ctx.frame_size() == (64, 64)


def test_model_sets_are_listed_with_their_state(cs, tmp_path):
    sets = {s.name: s for s in cs.models_list_sets(str(tmp_path))}
    assert {"ffhq", "car", "horse"} <= set(sets)
    assert not sets["car"].complete
    assert "a small-wheel car" in sets["car"].prompts
    # An empty store needs every required file of the set and of the sets it requires.
    import tomllib
    manifest = tomllib.loads((Path(REPO) / "models" / "manifest.toml").read_text())
    for name in ("ffhq", "car"):
        entry = manifest["sets"][name]
        files = set(entry["files"].values())
        for req in entry.get("requires", []):
            files |= set(manifest["sets"][req].get("files", {}).values())
        assert sets[name].download_bytes == sum(manifest["files"][f]["size"] for f in files), name
        assert sets[name].description == entry["description"]
        licences = {manifest["files"][f].get("licence") for f in files} - {None}
        assert all(l in sets[name].licences for l in licences), sets[name].licences


def test_integers_outside_their_c_range_are_refused(ctx, cs):
    w = ctx.latent_from_seed(1)
    # ctypes would wrap these silently: 2**32 + 3 steps ran 3 steps, 2**64 + 5 became seed 5.
    for kw, what in ((dict(steps=2**32 + 3), "steps"), (dict(seed=2**64 + 5), "seed"),
                     (dict(seed=-1), "seed"), (dict(steps=0), "steps"), (dict(steps=2.5), "steps")):
        with pytest.raises(cs.InvalidArgumentError, match=what):
            ctx.optimize(w, "a face", **kw)
    with pytest.raises(cs.InvalidArgumentError, match="seed"):
        ctx.latent_from_seed(-1)
    with pytest.raises(cs.InvalidArgumentError, match="seed"):
        ctx.latent_from_seed(2**64)


def test_text_that_is_not_utf8_is_an_argument_error(ctx, cs):
    w = ctx.latent_from_seed(1)
    with pytest.raises(cs.InvalidArgumentError, match="prompt"):
        ctx.optimize(w, "a face \udc80", steps=1)


def test_callbacks_may_be_null_as_the_header_says(cs):
    L = cs.load_library()
    assert L.cs_set_log(1, None, None) == cs.STATUS_OK
    assert L.cs_set_log(2, None, None) == cs.STATUS_OK


def test_output_structs_honour_the_callers_struct_size(ctx, cs):
    L = cs.load_library()
    size = ctypes.sizeof(cs.cs_domain_info)
    buf = (ctypes.c_uint8 * size)(*([0xEE] * size))
    ctypes.memmove(buf, ctypes.byref(ctypes.c_uint32(8)), 4)  # an old caller's 8-byte struct
    out = ctypes.cast(buf, ctypes.POINTER(cs.cs_domain_info))
    assert L.cs_context_get_domain(ctx.ptr, out) == cs.STATUS_OK
    assert out.contents.struct_size == 8
    assert bytes(buf[8:]) == b"\xee" * (size - 8), "wrote past the caller's struct"
    full = cs.cs_domain_info()  # struct_size 0: this header's struct, written whole
    assert L.cs_context_get_domain(ctx.ptr, ctypes.byref(full)) == cs.STATUS_OK
    assert full.struct_size == size and full.frame_width == 64


def test_faces_are_found_encoded_and_pasted_back(face_ctx, cs, astronaut):
    from conftest import reference_face
    w, h, rgba = astronaut
    faces = face_ctx.detect_faces(rgba, w, h)
    want = reference_face()
    assert len(faces) == 1
    assert all(abs(a - b) <= 0.5 for a, b in zip(faces[0].box, want["box"]))
    assert all(abs(a - b) <= 0.5 for p, q in zip(faces[0].landmarks, want["landmarks"]) for a, b in zip(p, q))
    found, index = face_ctx.find_face(rgba, w, h, selection=(150, 50, 300, 200))
    assert index == 0 and found == faces
    with pytest.raises(cs.InvalidArgumentError, match="selection"):
        face_ctx.find_face(rgba, w, h, selection=(400, 400, 500, 500))
    latent = face_ctx.encode_face(rgba, w, h, faces[0])
    layers = face_ctx.render_layers(latent, [], [0.0], (w, h), face=faces[0], photo=rgba)
    (layer,) = layers
    xs = [p[0] for p in faces[0].quad]
    ys = [p[1] for p in faces[0].quad]
    # The quad holds pixel indices; its footprint starts at their centres (+0.5).
    assert min(xs) - 0.5 <= layer.x <= min(xs) + 0.5 and min(ys) - 0.5 <= layer.y <= min(ys) + 0.5
    assert layer.x + layer.width <= w and layer.y + layer.height <= h
    assert set(layer.data[3::4]) == {0}, "strength 0 changes nothing, so nothing shows"
    region = face_ctx.render_layers(latent, [], [0.0], (w, h), face=faces[0], mode="region")[0]
    assert max(region.data[3::4]) == 255 and (region.x, region.y) == (layer.x, layer.y)
    with pytest.raises(cs.InvalidArgumentError, match="face detector"):
        # The plain context has no detector.
        cs.Context(device="cpu", generator=golden("e4e.pt")).detect_faces(rgba, w, h)


def test_photo_calls_refuse_bad_input(face_ctx, cs, astronaut):
    L = cs.load_library()
    w, h, rgba = astronaut
    faces = face_ctx.detect_faces(rgba, w, h)
    latent = face_ctx.encode_face(rgba, w, h, faces[0])
    r = cs._init(L.cs_render_params_init, cs.cs_render_params)
    ks = (ctypes.c_float * 1)(0.0)
    r.strengths, r.n_strengths = ctypes.cast(ks, ctypes.POINTER(ctypes.c_float)), 1
    out = ctypes.POINTER(cs.cs_images)()
    photo, keep = cs._image_view(rgba, w, h, 0, "RGBA8")

    def layers(**fields):
        p = cs._init(L.cs_paste_params_init, cs.cs_paste_params)
        p.photo_width, p.photo_height = w, h
        p.photo = ctypes.pointer(photo)
        for k, v in fields.items():
            setattr(p, k, v)
        return L.cs_render_layers(face_ctx.ptr, latent.ptr, ctypes.byref(r), ctypes.byref(p),
                                  ctypes.byref(out))

    assert layers(mode=7) == cs.STATUS_INVALID_ARGUMENT and "cs_paste_mode" in cs.last_error()
    assert layers(photo_width=0) == cs.STATUS_INVALID_ARGUMENT and "photo_width" in cs.last_error()
    box = (ctypes.c_float * 4)(600, 600, 700, 700)
    assert layers(bbox=box) == cs.STATUS_INVALID_ARGUMENT and "selection" in cs.last_error()
    r.format = cs.PIXEL_FORMATS["RGB8"]
    assert layers() == cs.STATUS_INVALID_ARGUMENT and "alpha" in cs.last_error()
    r.format = cs.PIXEL_FORMATS["RGBA8"]
    assert layers() == cs.STATUS_OK
    L.cs_images_free(out)
    nan_face = faces[0]._replace(landmarks=[(float("nan"), 0.0)] * 5)
    with pytest.raises(cs.InvalidArgumentError, match="NaN"):
        face_ctx.encode_face(rgba, w, h, nan_face)
    handle = ctypes.POINTER(cs.cs_faces)()
    img, keep = cs._image_view(rgba, w, h, 0, "RGBA8")
    assert L.cs_faces_detect(face_ctx.ptr, ctypes.byref(img), ctypes.byref(handle)) == cs.STATUS_OK
    f = cs.cs_face()
    assert L.cs_faces_get(handle, 5, ctypes.byref(f)) == cs.STATUS_INVALID_ARGUMENT
    assert "index" in cs.last_error()
    L.cs_faces_free(handle)
    assert L.cs_faces_detect(face_ctx.ptr, None, ctypes.byref(handle)) == cs.STATUS_INVALID_ARGUMENT


def test_warp_moves_the_photos_own_pixels_and_slides_between_strengths(face_ctx, cs, astronaut):
    w, h, rgba = astronaut
    faces = face_ctx.detect_faces(rgba, w, h)
    latent = face_ctx.encode_face(rgba, w, h, faces[0])
    shift = face_ctx.optimize(latent, "face with big nose", steps=2)
    ks = [-1.0, 0.0, 1.0]
    layers = face_ctx.render_layers(latent, [(shift, 1.0)], ks, (w, h), face=faces[0], photo=rgba)
    k0 = layers[1]
    assert set(k0.data[3::4]) == {0}, "strength 0 moves nothing"
    for y in (0, k0.height // 2, k0.height - 1):
        row = rgba[((k0.y + y) * w + k0.x) * 4:((k0.y + y) * w + k0.x + k0.width) * 4]
        got = k0.data[y * k0.stride:y * k0.stride + k0.width * 4]
        assert [v for i, v in enumerate(got) if i % 4 != 3] == \
            [v for i, v in enumerate(row) if i % 4 != 3], "the photo's own pixels"
    assert max(layers[2].data[3::4]) == 255, "strength 1 changes the photo"
    with face_ctx.transfer(latent, [(shift, 1.0)], ks, rgba, (w, h), face=faces[0]) as t:
        assert t.range() == (-1.0, 1.0)
        one = t.layer(1.0)
        assert (one.x, one.y, one.width, one.height) == (layers[2].x, layers[2].y,
                                                         layers[2].width, layers[2].height)
        assert one.data == layers[2].data, "the slider at a rendered strength is that layer"
        half = t.layer(0.5)
        assert half.data not in (one.data, k0.data)
        assert 0.0 <= t.blended(0.5) <= 1.0
        with pytest.raises(cs.InvalidArgumentError, match="outside the rendered strengths"):
            t.layer(2.0)
        with pytest.raises(cs.InvalidArgumentError, match="alpha"):
            t.layer(1.0, fmt="RGB8")
    with pytest.raises(cs.InvalidArgumentError, match="photo="):
        face_ctx.render_layers(latent, [(shift, 1.0)], ks, (w, h), face=faces[0])
    L = cs.load_library()
    r, keep = face_ctx._render_params([(shift, 1.0)], ks, "RGBA8", 0)
    p, keep_p = face_ctx._paste_params("warp", (w, h), faces[0], None, rgba, "RGBA8", 0)
    p.photo_width = w // 2
    out = ctypes.POINTER(cs.cs_images)()
    assert L.cs_render_layers(face_ctx.ptr, latent.ptr, ctypes.byref(r), ctypes.byref(p),
                              ctypes.byref(out)) == cs.STATUS_INVALID_ARGUMENT
    assert "photo_width" in cs.last_error()
    p.photo_width, p.photo = w, None
    assert L.cs_render_layers(face_ctx.ptr, latent.ptr, ctypes.byref(r), ctypes.byref(p),
                              ctypes.byref(out)) == cs.STATUS_INVALID_ARGUMENT
    assert "needs them" in cs.last_error()
    del keep, keep_p


def test_every_long_call_honours_a_cancel_and_an_idle_cancel_is_not_lost(face_ctx, cs, astronaut):
    L = cs.load_library()
    w, h, rgba = astronaut
    faces = face_ctx.detect_faces(rgba, w, h)
    latent = face_ctx.encode_face(rgba, w, h, faces[0])
    img, keep = cs._image_view(rgba, w, h, 0, "RGBA8")
    r, keep_r = face_ctx._render_params([], [0.0, 1.0], "RGBA8", 0)
    p, keep_p = face_ctx._paste_params("warp", (w, h), faces[0], None, rgba, "RGBA8", 0)
    images = ctypes.POINTER(cs.cs_images)()
    calls = {
        "cs_faces_detect": lambda: L.cs_faces_detect(face_ctx.ptr, ctypes.byref(img),
                                                     ctypes.byref(ctypes.POINTER(cs.cs_faces)())),
        "cs_encode_face": lambda: L.cs_encode_face(face_ctx.ptr, ctypes.byref(img),
                                                   ctypes.byref(faces[0]._struct()),
                                                   ctypes.byref(ctypes.POINTER(cs.cs_latent)())),
        "cs_render": lambda: L.cs_render(face_ctx.ptr, latent.ptr, ctypes.byref(r), ctypes.byref(images)),
        "cs_render_layers": lambda: L.cs_render_layers(face_ctx.ptr, latent.ptr, ctypes.byref(r),
                                                       ctypes.byref(p), ctypes.byref(images)),
        "cs_transfer_create": lambda: L.cs_transfer_create(face_ctx.ptr, latent.ptr, ctypes.byref(r),
                                                           ctypes.byref(p),
                                                           ctypes.byref(ctypes.POINTER(cs.cs_transfer)())),
    }
    for name, call in calls.items():
        # Sent while nothing runs: the next long call stops at once, and the cancel is spent.
        assert L.cs_cancel(face_ctx.ptr) == cs.STATUS_OK
        assert call() == cs.STATUS_CANCELLED, name
        assert call() == cs.STATUS_OK, name
    assert L.cs_cancel(face_ctx.ptr) == cs.STATUS_OK
    assert L.cs_cancel_clear(face_ctx.ptr) == cs.STATUS_OK
    assert calls["cs_render"]() == cs.STATUS_OK, "a cleared cancel stops nothing"
    # While it runs: 256 strengths one at a time stop long before the end.
    many, keep_m = face_ctx._render_params([], [k / 100 for k in range(256)], "RGBA8", 1)
    timer = threading.Timer(0.05, lambda: L.cs_cancel(face_ctx.ptr))
    t0 = time.time()
    timer.start()
    status = L.cs_render(face_ctx.ptr, latent.ptr, ctypes.byref(many), ctypes.byref(images))
    timer.join()
    full = time.time() - t0
    assert status == cs.STATUS_CANCELLED, "the render ran to its end in %.2f s" % full
    del keep, keep_r, keep_p, keep_m


def test_photo_inputs_that_mean_nothing_are_named(face_ctx, cs, astronaut):
    import array
    L = cs.load_library()
    w, h, rgba = astronaut
    with pytest.raises(cs.InvalidArgumentError, match="8-bit"):
        face_ctx.detect_faces(array.array("f", [0.5] * (w * h * 4)), w, h)
    img, keep = cs._image_view(rgba, w, h, 0, "RGBA8")
    faces = ctypes.POINTER(cs.cs_faces)()
    assert L.cs_faces_detect(face_ctx.ptr, ctypes.byref(img), ctypes.byref(faces)) == cs.STATUS_OK
    index = ctypes.c_size_t(99)
    nan = (ctypes.c_float * 4)(float("nan"), 0, 10, 10)
    assert L.cs_faces_pick(faces, nan, ctypes.byref(index)) == cs.STATUS_INVALID_ARGUMENT
    assert "not a box" in cs.last_error() and index.value == 99
    L.cs_faces_free(faces)
    latent = face_ctx.encode(rgba, w, h, recon=False)[0]
    for box in ((100, 100, 100, 200), (200, 100, 100, 200)):
        with pytest.raises(cs.InvalidArgumentError, match="not a box"):
            face_ctx.render_layers(latent, [], [0.0], (w, h), box=box, photo=rgba)
    del keep


@needs_models
def test_preview_pictures_while_learning(cs, ctx, picture):
    """A picture while it learns: at step 1 and every ``preview_every`` steps, the frame as the
    step rendered it, opaque RGBA; False from the callback stops the run like Cancel."""
    w, h, rgba = picture
    latent, _ = ctx.encode(rgba, w, h, 0, "RGBA8")
    seen = []

    def preview(step, pic):
        seen.append((step, pic.width, pic.height, pic.format, pic.data))

    with latent:
        shift = ctx.optimize(latent, "a round face", steps=5, optimize_size=32,
                             preview=preview, preview_every=2)
        shift.close()
        assert [s[0] for s in seen] == [1, 2, 4]
        assert all((pw, ph, fmt) == (32, 32, "RGBA8") for _, pw, ph, fmt, _ in seen)
        assert all(len(d) == 32 * 32 * 4 and set(d[3::4]) == {255} for *_, d in seen)
        assert seen[0][4] != seen[-1][4]        # the picture changes as the shift is learnt
        with pytest.raises(cs.CancelledError):
            ctx.optimize(latent, "a round face", steps=50, optimize_size=32,
                         preview=lambda step, pic: step < 3, preview_every=1)
        with pytest.raises(ZeroDivisionError):
            ctx.optimize(latent, "a round face", steps=5, optimize_size=32,
                         preview=lambda step, pic: 1 / 0)
