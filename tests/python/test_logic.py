"""The host-independent logic: strengths, names, boxes, pixels, requests, and one full run."""

import datetime
import os
import threading

import pytest

from conftest import assert_unedited_layer, needs_models


# ───────────────────────────── strengths and names ─────────────────

def test_parse_strengths(logic):
    assert logic.parse_strengths("-3,-1.5,0,1.5,3") == [-3.0, -1.5, 0.0, 1.5, 3.0]
    assert logic.parse_strengths(" 1 ; 2  -0.5 ") == [1.0, 2.0, -0.5]
    assert logic.parse_strengths("\u22122") == [-2.0]
    assert logic.parse_strengths(["1", "2"]) == [1.0, 2.0]
    for bad, why in (("", "at least one"), ("1,x", "'x' is not a number"),
                     ("nan", "finite"), ("1,1.0", "given twice"), ("1000", "too large"),
                     (",".join(str(i) for i in range(17)), "at most 16")):
        with pytest.raises(logic.RequestError, match=why):
            logic.parse_strengths(bad)


def test_format_strength_and_layer_names(logic):
    cases = {1.5: "+1.5", -3: "-3", 0: "0", -0.0: "0", 3.0: "+3", 0.25: "+0.25",
             -1.125: "-1.125", 2.00001: "+2", 10: "+10"}
    for k, text in cases.items():
        assert logic.format_strength(k) == text
    # The strength first: a narrow Layers panel cuts the end of a name.
    assert logic.layer_name("face with big nose", 1.5) == "k=+1.5 face with big nose"
    assert logic.layer_name("  a   round face ", 0) == "k=0 a round face"
    assert logic.group_name(" a  round face") == "a round face"
    assert logic.format_strengths([-3, 0, 1.5]) == "-3,0,1.5"


def test_edit_file_names(logic, tmp_path):
    when = datetime.datetime(2025, 1, 2, 3, 4, 5)
    assert logic.edit_file_name("Face with BIG nose!", when) == \
        "face-with-big-nose-20250102-030405.safetensors"
    assert logic.edit_file_name("???", when) == "edit-20250102-030405.safetensors"
    (tmp_path / "a.safetensors").write_bytes(b"")
    (tmp_path / "a-2.safetensors").write_bytes(b"")
    assert logic.unique_path(str(tmp_path), "a.safetensors") == str(tmp_path / "a-3.safetensors")
    assert logic.unique_path(str(tmp_path), "b.safetensors") == str(tmp_path / "b.safetensors")


def test_default_library_dir(logic, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    assert logic.default_library_dir() == "/data/clipshape/edits"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert logic.default_library_dir().endswith(".local/share/clipshape/edits")


# ───────────────────────────── boxes ──────────────────────────────

def test_box_basics(logic):
    B = logic.Box
    assert B(0, 0, 10, 10).intersect(B(5, 6, 10, 10)) == B(5, 6, 5, 4)
    assert B(0, 0, 10, 10).intersect(B(20, 0, 5, 5)).empty
    assert B.of((1, 2, 3, 4)) == B(1, 2, 3, 4) and B.of(None) is None
    assert B(0, 0, 10, 10).contains(B(2, 2, 8, 8)) and not B(0, 0, 10, 10).contains(B(2, 2, 9, 8))


@pytest.mark.parametrize("box,aspect,bounds,expected", [
    ((30, 20, 60, 50), 1.0, (0, 0, 160, 120), (30, 15, 60, 60)),    # taller, centred
    ((30, 20, 50, 60), 1.0, (0, 0, 160, 120), (25, 20, 60, 60)),    # wider, centred
    ((0, 0, 60, 50), 1.0, (0, 0, 160, 120), (0, 0, 60, 60)),        # pushed inside the top
    ((100, 100, 60, 10), 1.0, (0, 0, 160, 120), (100, 60, 60, 60)),  # pushed up from the bottom
    ((10, 10, 100, 20), 1.0, (0, 0, 200, 50), (35, 0, 50, 50)),     # bounds too low: cut width
    ((0, 0, 40, 40), 4 / 3, (0, 0, 160, 120), (0, 0, 53, 40)),      # the car frame
    ((5, 5, 64, 64), 1.0, (0, 0, 100, 100), (5, 5, 64, 64)),        # already square
])
def test_fit_box_to_aspect(logic, box, aspect, bounds, expected):
    out = logic.fit_box_to_aspect(box, aspect, bounds)
    assert out == logic.Box(*expected)
    assert logic.Box(*bounds).contains(out)


def test_edit_box(logic):
    B = logic.Box
    layer = B(0, 0, 160, 120)
    assert logic.edit_box(layer, None, (64, 64), True) == B(20, 0, 120, 120)
    assert logic.edit_box(layer, None, (64, 64), False) == layer
    assert logic.edit_box(layer, (30, 20, 60, 50), (64, 64), True) == B(30, 15, 60, 60)
    assert logic.edit_box(layer, (30, 20, 60, 50), (64, 64), False) == B(30, 20, 60, 50)
    assert logic.edit_box(layer, (-10, -10, 40, 30), None) == B(0, 0, 30, 20)
    with pytest.raises(logic.RequestError, match="does not overlap"):
        logic.edit_box(layer, (200, 200, 10, 10))
    with pytest.raises(logic.RequestError, match="no pixels"):
        logic.edit_box(B(0, 0, 0, 0))
    with pytest.raises(logic.RequestError, match="at most"):
        logic.edit_box(B(0, 0, 9000, 100), None, None)


# ───────────────────────────── pixels ─────────────────────────────

def test_crop_and_buffer_source(logic):
    w, h = 5, 4
    data = bytes(range(w * h * 4))
    crop = logic.crop_pixels(data, w, h, 4, (1, 2, 3, 2))
    assert crop == data[(2 * w + 1) * 4:(2 * w + 4) * 4] + data[(3 * w + 1) * 4:(3 * w + 4) * 4]
    assert logic.crop_pixels(data, w, h, 4, (0, 1, 5, 2)) == data[w * 4:3 * w * 4]
    with pytest.raises(ValueError, match="outside"):
        logic.crop_pixels(data, w, h, 4, (3, 0, 3, 1))
    src = logic.BufferSource(data, (10, 20, w, h), "BGRA8")
    assert src.read((11, 22, 3, 2)) == crop
    with pytest.raises(ValueError, match="needs"):
        logic.BufferSource(data[:-1], (0, 0, w, h), "BGRA8")
    assert logic.swap_red_blue(b"\x01\x02\x03\x04\x05\x06\x07\x08") == \
        b"\x03\x02\x01\x04\x07\x06\x05\x08"


# ───────────────────────────── requests ───────────────────────────

def test_edit_request_from_values(logic, tmp_path):
    r = logic.EditRequest.from_values(prompt="  face  with big nose ", strengths="-1,1",
                                      steps="20", layer=" convs.4 ", lambda2=-1, seed=3,
                                      library_dir=str(tmp_path))
    assert (r.prompt, r.strengths, r.steps, r.layer, r.lambda2, r.seed) == \
        ("face with big nose", [-1.0, 1.0], 20, "convs.4", None, 3)
    assert r.library_dir == str(tmp_path) and r.saved_edit is None and r.fit_to_frame
    assert logic.EditRequest.from_values(prompt="x", lambda2=0.05).lambda2 == 0.05
    assert logic.EditRequest.from_values(prompt="x").library_dir == logic.default_library_dir()
    for kw, why in ((dict(prompt=" "), "prompt is empty"),
                    (dict(prompt="x", steps=0), "steps"),
                    (dict(prompt="x", steps="many"), "steps"),
                    (dict(prompt="x", strengths="a"), "strengths"),
                    (dict(saved_edit=str(tmp_path / "none.safetensors")), "saved edit not found")):
        with pytest.raises(logic.RequestError, match=why):
            logic.EditRequest.from_values(**kw)
    saved = tmp_path / "e.safetensors"
    saved.write_bytes(b"x")
    r = logic.EditRequest.from_values(prompt="", saved_edit=str(saved))
    assert r.saved_edit == str(saved) and r.prompt == ""


def test_model_choice(logic, tmp_path):
    m = logic.ModelChoice(set_name=" car ", models_dir=" ", device="CPU").normalized()
    assert (m.set_name, m.models_dir, m.device) == ("car", None, "cpu")
    f = tmp_path / "g.pt"
    f.write_bytes(b"")
    m = logic.ModelChoice(set_name="files", generator=str(f)).normalized()
    assert m.set_name is None and m.generator == str(f) and m.describe() == "g.pt"
    with pytest.raises(logic.RequestError, match="choose a model set"):
        logic.ModelChoice(set_name="files").normalized()
    with pytest.raises(logic.RequestError, match="CLIP model file not found: /x/clip.pt"):
        logic.ModelChoice(set_name="ffhq", clip="/x/clip.pt").normalized()
    with pytest.raises(logic.RequestError, match="device"):
        logic.ModelChoice(device="tpu").normalized()
    assert m.key() == logic.ModelChoice(set_name=None, generator=str(f)).normalized().key()


def test_missing_model_set_is_a_request_error(logic, cs, tmp_path):
    m = logic.ModelChoice(set_name="horse", models_dir=str(tmp_path)).normalized()
    with pytest.raises(logic.RequestError) as e:
        m.open()
    assert "horse" in str(e.value) and "e4e_horse_encode.pt" in str(e.value)
    assert "e4e_horse_encode.pt" in logic.error_text(e.value)
    # A plug-in's guidance, not the command line's (#22 item 9).
    assert "clipshape models" not in str(e.value) and "--link" not in str(e.value)
    assert str(e.value).endswith(logic.PLUGIN_GUIDANCE) and str(tmp_path) in str(e.value)


def test_error_text(logic, cs):
    assert logic.error_text(cs.CancelledError()) == "Cancelled."
    assert logic.error_text(logic.RequestError("steps: bad")) == "steps: bad"
    assert logic.error_text(cs.ModelFormatError("x.pt: not a model")) == \
        "Model file not usable: x.pt: not a model"
    assert logic.error_text(cs.FileIOError("x: no such file")) == "File error: x: no such file"
    assert logic.error_text(KeyError("k")).startswith("Unexpected error: KeyError")
    offline = cs.DownloadError("download of e4e.pt from http://x/e4e.pt failed after 0 bytes: "
                               "io: Connection refused (os error 111)")
    assert logic.error_text(offline).startswith(
        "Download failed: the download server cannot be reached (no network")
    assert logic.error_text(offline).endswith("Connection refused (os error 111)")
    assert logic.error_text(cs.DownloadError("HTTP 404 for http://x/e4e.pt")) == \
        "Download failed: HTTP 404 for http://x/e4e.pt"


# ───────────────────────────── a full run ─────────────────────────

@needs_models
def test_run_edit_layers_and_saved_shift(logic, ctx, picture, tmp_path):
    w, h, rgba = picture
    src = logic.BufferSource(rgba, (0, 0, w, h), "RGBA8")
    box = logic.edit_box(src.bounds, (100, 40, 90, 70), ctx.frame_size(), True)
    assert box == logic.Box(100, 30, 90, 90)
    # The picture is no face: the selection as it is, pasted where the edit changes it.
    req = logic.EditRequest.from_values(prompt="face with big nose", strengths="-1.5,0,1.5",
                                        steps=3, library_dir=str(tmp_path / "lib"),
                                        align="none", paste="changes")
    seen = []
    result = logic.run_edit(ctx, req, src, box, lambda f, t: seen.append((f, t)))
    assert result.group_name == "face with big nose"
    # Top first, descending; k=0 would be an empty layer here, so there is none; one shown.
    assert [l.name for l in result.layers] == ["k=+1.5 face with big nose",
                                               "k=-1.5 face with big nose"]
    assert [l.visible for l in result.layers] == [True, False]
    assert all((l.x, l.y, l.width, l.height, len(l.data)) == (100, 30, 90, 90, 90 * 90 * 4)
               for l in result.layers)
    assert result.layers[0].data != result.layers[1].data
    assert "showing k=+1.5" in result.summary()

    # The region paste keeps k=0: it is the model's picture of the box, not nothing.
    region = logic.EditRequest.from_values(prompt="face with big nose", strengths="0,1.5",
                                           steps=2, save_edit=False, align="none",
                                           paste="region")
    kept = logic.run_edit(ctx, region, src, box)
    assert [l.strength for l in kept.layers] == [1.5, 0.0]
    assert os.listdir(tmp_path / "lib") == [os.path.basename(result.shift_path)]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 3/3" in t for _, t in seen)
    assert result.clip_sim_before is not None and "CLIP similarity" in result.summary()

    # The saved edit renders the same pixels without optimising, named after its prompt.
    again = logic.EditRequest.from_values(saved_edit=result.shift_path, strengths="1.5",
                                          library_dir=str(tmp_path / "lib"), align="none",
                                          paste="changes")
    seen.clear()
    applied = logic.run_edit(ctx, again, src, box, lambda f, t: seen.append(t))
    assert applied.group_name == "face with big nose" and applied.shift_path is None
    assert applied.layers[0].name == "k=+1.5 face with big nose"
    assert applied.layers[0].data == result.layers[0].data
    assert not any("step" in t for t in seen)
    assert len(os.listdir(tmp_path / "lib")) == 1


@needs_models
def test_edit_job_cancel_from_another_thread(logic, cs, model_files, picture, tmp_path):
    w, h, rgba = picture
    src = logic.BufferSource(rgba, (0, 0, w, h), "RGBA8")
    model = logic.ModelChoice(set_name=None, device="cpu", **model_files).normalized()
    req = logic.EditRequest.from_values(prompt="a round face", steps=5000,
                                        library_dir=str(tmp_path), align="none")
    job = logic.EditJob(model, req, src, (10, 10, 64, 64))
    fired = threading.Event()

    def progress(f, t):
        if "step" in t:
            fired.set()

    threading.Thread(target=lambda: (fired.wait(30), job.cancel())).start()
    with pytest.raises(cs.CancelledError):
        job.run(progress)
    assert job.cancelled and os.listdir(tmp_path) == []
    job.contexts.close()

    early = logic.EditJob(model, req, src, None)
    early.cancel()            # before the models are even loaded
    with pytest.raises(cs.CancelledError):
        early.run()
    early.contexts.close()


@needs_models
def test_context_cache_reuses_and_replaces(logic, model_files):
    cache = logic.ContextCache()
    m1 = logic.ModelChoice(set_name=None, device="cpu", **model_files).normalized()
    a = cache.get(m1)
    assert cache.get(logic.ModelChoice(set_name=None, device="cpu", **model_files).normalized()) \
        is a
    m2 = logic.ModelChoice(set_name=None, device="cpu", n_threads=1, **model_files).normalized()
    b = cache.get(m2)
    assert b is not a and a.closed and not b.closed
    cache.close()
    assert b.closed and cache.current() is None


@needs_models
def test_face_model_given_as_files_edits_the_face(logic, cs, model_files, astronaut, tmp_path):
    """A face e4e checkpoint given as a file (no model set) is a face model: with Align left
    at its default the face is found by the given detector, aligned and edited, and only its
    surroundings move (#22 item 1). Without a detector the error names the field to fill."""
    w, h, rgba = astronaut
    src = logic.BufferSource(rgba, (0, 0, w, h), "RGBA8")
    model = logic.ModelChoice(set_name="files", device="cpu", n_threads=1,
                              face_detector_dir=os.path.join(os.path.dirname(
                                  model_files["generator"]), "face", "mtcnn"),
                              **model_files).normalized()
    req = logic.EditRequest.from_values(prompt="a round face", strengths="2", steps=2,
                                        save_edit=False)
    job = logic.EditJob(model, req, src)
    result = job.run()
    assert job.contexts.current().domain().name == "face"
    assert result.face is not None and result.face_text().startswith("face 1 of 1 at ")
    (layer,) = result.layers
    x1, y1, x2, y2 = result.face.box
    # The face's region, not the whole photo replaced by the generator's frame.
    assert layer.width < w and layer.x <= x1 and layer.x + layer.width >= x2
    job.contexts.close()

    bare = logic.ModelChoice(set_name="files", device="cpu", n_threads=1,
                             **model_files).normalized()
    job = logic.EditJob(bare, req, src)
    with pytest.raises(logic.RequestError, match="Face detector folder"):
        job.run()
    job.contexts.close()


def test_eta_and_durations(logic):
    assert [logic.format_duration(s) for s in (0, 0.4, 45, 60, 125, 3725)] == \
        ["under 1 s", "under 1 s", "45 s", "1 min", "2 min 5 s", "1 h 2 min"]
    clock = iter([10.0, 12.0, 14.0]).__next__
    eta = logic.Eta(clock)
    assert eta.left(1, 11) is None          # the first step sets the pace's start
    assert eta.left(2, 11) == pytest.approx(2.0 * 9)
    assert eta.left(3, 11) == pytest.approx(2.0 * 8)


def test_shown_strength(logic):
    assert logic.shown_strength([-3, -1.5, 1.5, 3]) == 3
    assert logic.shown_strength([-3, -1]) == -3
    assert logic.shown_strength([0.5]) == 0.5


def test_request_method_options(logic):
    r = logic.EditRequest.from_values(prompt="a", face=2, also=" big   eyes ", optimize_size=128)
    assert (r.face, r.also, r.optimize_size) == (2, "big eyes", 128)
    r = logic.EditRequest.from_values(prompt="a")
    assert (r.face, r.also, r.optimize_size) == (None, None, None)
    for kw, why in ((dict(face=-1), "face"), (dict(face="x"), "face"),
                    (dict(optimize_size=8), "learning size"),
                    (dict(optimize_size="big"), "learning size")):
        with pytest.raises(logic.RequestError, match=why):
            logic.EditRequest.from_values(prompt="a", **kw)


@needs_models
def test_second_prompt_learnt_jointly_and_face_choice(logic, ctx, face_ctx, picture, astronaut,
                                                      tmp_path):
    w, h, rgba = picture
    src = logic.BufferSource(rgba, (0, 0, w, h), "RGBA8")
    req = logic.EditRequest.from_values(prompt="a round face", also="big eyes", strengths="2",
                                        steps=2, align="none", optimize_size=32,
                                        library_dir=str(tmp_path))
    seen, pictures = [], []
    result = logic.run_edit(ctx, req, src, logic.Box(0, 0, 200, 200),
                            lambda f, t: seen.append(t), preview=pictures.append)
    # The picture while it learns: the first step's (steps < PREVIEW_EVERY).
    assert [(p.width, p.height, p.format) for p in pictures] == [(32, 32, "RGBA8")]
    assert result.group_name == "a round face + big eyes"
    assert any('Learning "a round face + big eyes": step 2/2' in t for t in seen)
    assert len(os.listdir(tmp_path)) == 1

    w, h, rgba = astronaut
    src = logic.BufferSource(rgba, (0, 0, w, h), "RGBA8")
    second = logic.EditRequest.from_values(prompt="a round face", steps=1, face=2,
                                           save_edit=False)
    with pytest.raises(logic.RequestError, match="the picture has 1 face; choose 1..1"):
        logic.run_edit(face_ctx, second, src, logic.Box(0, 0, w, h))


@needs_models
def test_keep_the_rest_around_the_selection_and_the_face(logic, ctx, face_ctx, picture,
                                                         astronaut):
    """"Keep the rest": λ3 with the selection's (or the face's) region in generator pixels;
    without a selection around which to keep anything, the error says so."""
    w, h, rgba = picture
    src = logic.BufferSource(rgba, (0, 0, w, h), "RGBA8")
    box = logic.edit_box(src.bounds, (100, 40, 90, 70), ctx.frame_size(), True)
    req = logic.EditRequest.from_values(prompt="a round face", strengths="2", steps=2,
                                        align="none", keep_rest=True, save_edit=False)
    region = logic._keep_region(ctx, req, None, src.bounds, box, logic.Box(100, 40, 90, 70))
    side = ctx.frame_size()[0]
    # The 90×70 selection inside the 90×90 box: the full width, 70/90 of the height.
    assert region[0] == pytest.approx(0, abs=0.5) and region[2] == pytest.approx(side, abs=0.5)
    assert region[3] - region[1] == pytest.approx(side * 70 / 90, abs=1)
    result = logic.run_edit(ctx, req, src, box, selection=logic.Box(100, 40, 90, 70))
    assert len(result.layers) == 1
    with pytest.raises(logic.RequestError, match="keep the rest: select the part"):
        logic.run_edit(ctx, req, src, box)

    w, h, rgba = astronaut
    src = logic.BufferSource(rgba, (0, 0, w, h), "RGBA8")
    faces, face = logic._find_face(face_ctx, req, rgba, src.bounds, None, "RGBA8")
    x1, y1, x2, y2 = logic._keep_region(face_ctx, req, face, src.bounds, src.bounds, None)
    assert 0 <= x1 < x2 <= side and 0 <= y1 < y2 <= side and (x2 - x1) < side


@needs_models
def test_faces_to_choose_from_and_the_face_used(logic, model_files, astronaut):
    """"Find faces" lists each face with its box on the canvas and its pixels for a thumbnail;
    after a run, the face used is the same choice."""
    w, h, rgba = astronaut
    src = logic.BufferSource(rgba, (10, 20, w, h), "RGBA8")     # the layer sits at 10,20
    model = logic.ModelChoice(set_name="files", device="cpu", n_threads=1,
                              face_detector_dir=os.path.join(os.path.dirname(
                                  model_files["generator"]), "face", "mtcnn"),
                              **model_files).normalized()
    contexts = logic.ContextCache()
    (choice,) = logic.find_faces(model, src, contexts)
    b = choice.box
    assert choice.number == 1 and 0.9 < choice.score <= 1
    assert 180 < b.x < 200 and 75 < b.y < 90 and 80 < b.width < 100   # 171,62 + the offset
    assert choice.label() == "1: %d×%d at %d,%d" % (b.width, b.height, b.x, b.y)
    assert choice.crop == logic.crop_pixels(rgba, w, h, 4, b.translated(-10, -20))
    req = logic.EditRequest.from_values(prompt="a round face", strengths="2", steps=1, face=1,
                                        save_edit=False)
    result = logic.EditJob(model, req, src, contexts=contexts).run()
    used = result.face_choice(src)
    assert (used.number, used.box, used.crop) == (1, choice.box, choice.crop)
    contexts.close()


def test_result_groups_are_recognised_by_their_layers(logic):
    assert logic.is_result_group(["k=+3 a face", "k=-1.5 a face"])
    assert logic.is_result_group(["preview (strength slider)", "k=+1 a face"])
    assert not logic.is_result_group([])
    assert not logic.is_result_group(["k=+3 a face", "my sketch"])


def test_a_saved_edit_takes_no_second_prompt(logic, tmp_path):
    saved = tmp_path / "edit.safetensors"
    saved.write_bytes(b"")
    with pytest.raises(logic.RequestError, match="second prompt: a saved edit is applied as it is"):
        logic.EditRequest.from_values(saved_edit=str(saved), also="big eyes")


@needs_models
def test_subject_region_refuses_what_lies_outside_the_frame(cs, ctx):
    """A box that covers no pixel of the model's frame has no region to keep the rest around;
    a bad box is named."""
    side = ctx.frame_size()[0]
    x1, y1, x2, y2 = ctx.subject_region((200, 100), box=(50, 25, 150, 75))
    assert 0 <= x1 < x2 <= side and 0 <= y1 < y2 <= side
    with pytest.raises(cs.InvalidArgumentError):
        ctx.subject_region((200, 100), box=(150, 75, 50, 25))     # x2 < x1
    with pytest.raises(cs.InvalidArgumentError):
        ctx.subject_region((0, 100), box=None)                    # a photo without pixels
