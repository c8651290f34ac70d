"""The GIMP 3 plug-in, as installed by install/plugins.sh, run non-interactively in a fake GIMP
(tests/python/fake_gimp.py) on the real library with the tiny models."""

import importlib.util
import os
import re
import sys

import pytest

import fake_gimp
from conftest import assert_unedited_layer, needs_models

pytestmark = needs_models
PROMPT = "face with big nose"


@pytest.fixture
def gimp(monkeypatch, installed):
    Gimp = fake_gimp.install(monkeypatch)
    plugin_dir = installed / ".config" / "GIMP" / "3.0" / "plug-ins" / "clipshape"
    path = plugin_dir / "clipshape.py"
    assert os.access(path, os.X_OK), "plug-in is not executable"
    spec = importlib.util.spec_from_file_location("gimp_clipshape_plugin", str(path))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gimp_clipshape_plugin", module)
    spec.loader.exec_module(module)
    return Gimp, module


def max_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def make_image(picture, selection=(100, 40, 90, 70), offsets=(0, 0)):
    w, h, rgba = picture
    image = fake_gimp.Image(w, h)
    layer = fake_gimp.Layer(image, "photo", w, h)
    layer.buffer.data[:] = rgba
    image.add_layer(layer, offsets)
    image.selection = selection
    return image, layer


def run(gimp, image, drawables, model_files, tmp_path, **values):
    Gimp, module = gimp
    plugin = module.ClipShape()
    assert plugin.do_query_procedures() == ["plug-in-clipshape", "plug-in-clipshape-models"]
    proc = plugin.do_create_procedure("plug-in-clipshape")
    config = proc.create_config()
    settings = {"model-set": "files", "device": "cpu",
                "generator-file": fake_gimp.File(model_files["generator"]),
                "clip-file": fake_gimp.File(model_files["clip"]),
                "vocab-file": fake_gimp.File(model_files["vocab"]),
                "library-dir": fake_gimp.File(str(tmp_path / "edits")),
                "prompt": PROMPT, "strengths": "-1.5,0,1.5", "steps": 3}
    settings.update(values)
    for k, v in settings.items():
        config.set_property(k, v)
    return proc.run_func(proc, Gimp.RunMode.NONINTERACTIVE, image, drawables, config, None)


def test_procedure_registration(gimp):
    Gimp, module = gimp
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    assert proc.menu_paths == ["<Image>/Filters/Generic"] and proc.menu_label == "CLIPShape…"
    assert proc.image_types == "RGB*"
    args = proc.arguments
    for name in ("model-set", "prompt", "strengths", "steps", "saved-edit", "library-dir",
                 "layer", "device", "models-dir", "generator-file", "clip-file", "vocab-file"):
        assert name in args
    assert args["strengths"]["default"] == "-3,-1.5,0,1.5,3"
    assert args["steps"]["default"] == 100 and args["model-set"]["default"] == "ffhq"
    assert args["model-set"]["choice"].items == ["ffhq", "car", "horse", "files"]
    assert args["saved-edit"]["action"] == fake_gimp.FileChooserAction.OPEN
    assert args["library-dir"]["action"] == fake_gimp.FileChooserAction.SELECT_FOLDER
    assert set(module.MAIN + module.ADVANCED) == set(args)


# The buttons GIMP 3.0's GimpProcedureDialog adds around a plug-in's arguments, with their
# mnemonics (libgimp/gimpproceduredialog.c: Reset, Cancel, OK, Load Saved Settings, Save
# Settings; GimpDialog's Help). GIMP reports a property label that repeats one of them, or
# another label's, or has none ("Procedure '…': duplicate mnemonic …" / "no mnemonic …").
GIMP_DIALOG_BUTTONS = ["_Help", "_Reset", "_Cancel", "_OK", "_Load Saved Settings",
                       "_Save Settings"]


def mnemonic(label):
    """GTK's mnemonic key of a label ("Stren_gths" → "g"; "__" is a literal underscore)."""
    m = re.search(r"(?<!_)_([^_])", label.replace("__", ""))
    return m.group(1).lower() if m else None


def dialog_of(gimp, config=None):
    """Runs the plug-in's show_dialog in the fake GimpUi → the fake ProcedureDialog."""
    Gimp, module = gimp
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    config = config or proc.create_config()
    assert module.show_dialog(proc, config) is False    # the fake answers Cancel
    (dialog,) = fake_gimp.state.dialogs
    assert dialog.destroyed
    return proc, dialog


def test_dialog_mnemonics_are_unique_with_gimps_own_buttons(gimp):
    proc, dialog = dialog_of(gimp)
    shown = dialog.shown_properties()
    assert sorted(shown) == sorted(proc.arguments), "the dialog shows every argument once"
    labels = {name: proc.arguments[name]["nick"] for name in shown}
    for label_id, (text, with_mnemonic) in dialog.labels.items():
        assert with_mnemonic, "label %s is made without its mnemonic" % label_id
        labels[label_id] = text
    keys = {}
    for owner, text in list(labels.items()) + [("GIMP's " + b, b) for b in GIMP_DIALOG_BUTTONS]:
        key = mnemonic(text)
        assert key is not None, "%s: %r has no mnemonic" % (owner, text)
        assert key not in keys, "%r of %s and %r of %s share the mnemonic %r" % (
            text, owner, labels.get(keys[key], keys[key]), keys[key], key)
        keys[key] = owner
    assert "advanced-label" in labels


def test_every_string_argument_has_a_default_and_reaches_the_dialog_as_text(gimp):
    Gimp, module = gimp
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    strings = [n for n, a in proc.arguments.items() if a["kind"] == "string"]
    assert strings and sorted(strings) == sorted(module.STRING_ARGS)
    for name in strings:
        assert proc.arguments[name]["default"] is not None, name
    # GIMP's saved last values hand an empty string back as None; a None reaching the dialog's
    # entry is the Gtk-CRITICAL "gtk_entry_buffer_set_text: assertion 'chars != NULL'".
    config = proc.create_config()
    for name in strings:
        config.values[name] = None
    config.values["strengths"] = "1,2"
    _, dialog = dialog_of(gimp, config)
    for name in strings:
        assert isinstance(dialog.values_at_build[name], str), name
    assert dialog.values_at_build["strengths"] == "1,2"
    assert dialog.values_at_build["layer"] == "" and dialog.values_at_build["prompt"] == ""


def test_interactive_cancel_returns_cancel_and_adds_nothing(gimp, picture, model_files,
                                                             tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture)
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    status, error = proc.run_func(proc, Gimp.RunMode.INTERACTIVE, image, [layer],
                                  proc.create_config(), None)
    assert status == Gimp.PDBStatusType.CANCEL and len(fake_gimp.state.dialogs) == 1
    assert image.get_layers() == [layer]


def test_noninteractive_run_adds_one_group_in_one_undo_step(gimp, ctx, picture, model_files,
                                                            tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture, offsets=(7, 5))
    status, error = run(gimp, image, [layer], model_files, tmp_path)
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message

    group, photo = image.get_layers()
    assert photo is layer and group.is_group() and group.get_name() == PROMPT
    children = group.get_children()
    assert [c.get_name() for c in children] == [PROMPT + " k=-1.5", PROMPT + " k=0",
                                                PROMPT + " k=+1.5"]
    # Selection (100,40) 90×70 grown to the square frame and centred: (100, 30) 90×90, which
    # lies inside the layer (offset 7,5).
    for c in children:
        assert c.get_offsets() == (True, 100, 30)
        assert (c.get_width(), c.get_height()) == (90, 90)
        assert c.buffer.flushed == 1 and c.updated == [(0, 0, 90, 90)]
    # k=0 is exactly the pixels under the box, and shows nothing.
    box_pixels = layer.buffer.get(fake_gimp.Rectangle(100 - 7, 30 - 5, 90, 90), 1.0,
                                  "R'G'B'A u8", None)
    assert_unedited_layer(children[1].buffer.data, box_pixels)
    # The other strengths show (alpha > 0) where they change the picture.
    assert max(bytes(children[0].buffer.data)[3::4]) > 0
    assert bytes(children[0].buffer.data) != bytes(children[2].buffer.data)
    # One undo group around every change.
    assert image.undo_groups == 1 and image.undo_depth == 0
    assert image.ops and all(depth == 1 for _, _, depth in image.ops)
    # Progress went forward to the end; the learnt edit is in the library.
    assert fake_gimp.state.progress[-1] == 1.0
    assert fake_gimp.state.progress == sorted(fake_gimp.state.progress)
    assert any("step 3/3" in t for t in fake_gimp.state.progress_text)
    saved = os.listdir(tmp_path / "edits")
    assert len(saved) == 1 and saved[0].startswith("face-with-big-nose-")
    assert fake_gimp.state.flushes == 1 and fake_gimp.state.messages == []


def test_whole_layer_without_selection_and_no_fit(gimp, picture, model_files, tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture, selection=None)
    status, error = run(gimp, image, [layer], model_files, tmp_path, **{"fit-to-frame": False,
                                                                       "save-edit": False,
                                                                       "strengths": "2"})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    (only,) = image.get_layers()[0].get_children()
    assert only.get_name() == PROMPT + " k=+2"
    assert only.get_offsets() == (True, 0, 0) and (only.width, only.height) == (301, 200)
    assert not (tmp_path / "edits").exists()


def test_apply_saved_edit(gimp, picture, model_files, tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture)
    assert run(gimp, image, [layer], model_files, tmp_path)[0] == Gimp.PDBStatusType.SUCCESS
    saved = str(tmp_path / "edits" / os.listdir(tmp_path / "edits")[0])
    status, error = run(gimp, image, [layer], model_files, tmp_path, prompt="",
                        strengths="1.5", **{"saved-edit": fake_gimp.File(saved)})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    first, second, photo = image.get_layers()
    assert second.get_name() == PROMPT            # the newest group sits right above the photo
    assert [c.get_name() for c in second.get_children()] == [PROMPT + " k=+1.5"]
    assert second.get_children()[0].buffer.data == first.get_children()[2].buffer.data
    assert len(os.listdir(tmp_path / "edits")) == 1


@pytest.mark.parametrize("values,expected", [
    ({"prompt": "  "}, "prompt is empty"),
    ({"strengths": "1,big"}, "'big' is not a number"),
    ({"layer": "convs.99"}, "unknown layer `convs.99`"),
    ({"generator-file": fake_gimp.File("/no/such/e4e.pt")}, "generator file not found: "
                                                            "/no/such/e4e.pt"),
    ({"model-set": "horse", "generator-file": None, "clip-file": None, "vocab-file": None,
      "models-dir": fake_gimp.File("/no/models")}, "e4e_horse_encode.pt"),
])
def test_errors_become_gimp_errors_and_add_nothing(gimp, picture, model_files, tmp_path,
                                                   values, expected):
    Gimp, module = gimp
    image, layer = make_image(picture)
    status, error = run(gimp, image, [layer], model_files, tmp_path, **values)
    assert status == Gimp.PDBStatusType.EXECUTION_ERROR
    assert expected in error.message and error.message.startswith("CLIPShape: ")
    assert "Traceback" not in error.message
    assert image.get_layers() == [layer] and image.undo_groups == 0
    assert not (tmp_path / "edits").exists()


def test_not_a_model_file_is_named(gimp, picture, model_files, tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture)
    status, error = run(gimp, image, [layer], model_files, tmp_path,
                        **{"generator-file": fake_gimp.File(model_files["vocab"])})
    assert status == Gimp.PDBStatusType.EXECUTION_ERROR
    assert "Model file not usable" in error.message and model_files["vocab"] in error.message


def test_selection_outside_layer_and_several_drawables(gimp, picture, model_files, tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture, selection=(400, 400, 10, 10))
    status, error = run(gimp, image, [layer], model_files, tmp_path)
    assert status == Gimp.PDBStatusType.EXECUTION_ERROR
    assert "does not overlap" in error.message
    image, layer = make_image(picture)
    status, error = run(gimp, image, [layer, layer], model_files, tmp_path)
    assert status == Gimp.PDBStatusType.EXECUTION_ERROR and "exactly one layer" in error.message


def test_a_face_photo_needs_no_selection(gimp, astronaut, model_files, tmp_path):
    Gimp, module = gimp
    from conftest import golden, reference_face
    image, layer = make_image(astronaut, selection=None, offsets=(3, 4))
    status, error = run(gimp, image, [layer], model_files, tmp_path, align="face",
                        **{"face-detector-dir": fake_gimp.File(golden("face/mtcnn"))})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    group, photo = image.get_layers()
    children = group.get_children()
    assert len(children) == 3
    # Layers sit on the face, in image coordinates (the photo layer is at 3, 4).
    x1, y1, x2, y2 = reference_face()["box"]
    for c in children:
        _, x, y = c.get_offsets()
        assert x <= x1 + 3 and y <= y1 + 4, (x, y)
        assert x + c.get_width() >= x2 + 3 and y + c.get_height() >= y2 + 4
        assert x + c.get_width() <= 512 + 3 and y + c.get_height() <= 512 + 4
    # Strength 0 shows nothing; the others show inside the layer only.
    assert set(bytes(children[1].buffer.data)[3::4]) == {0}
    assert max(bytes(children[0].buffer.data)[3::4]) > 0
    assert image.undo_groups == 1


def test_models_procedure_downloads_the_set_with_progress(gimp, picture, model_files,
                                                          tiny_mirror, tmp_path):
    """Filters › Generic › CLIPShape Models…, run non-interactively: the chosen set's files come
    from the (local) mirror through the real library, GIMP's progress shows MB and MB/s; then
    an edit with that model set (no files given) works."""
    Gimp, module = gimp
    server, root = tiny_mirror
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape-models")
    assert proc.menu_paths == ["<Image>/Filters/Generic"]
    assert proc.menu_label == "CLIPShape Models…"
    assert proc.arguments["model-set"]["choice"].items == ["ffhq", "car", "horse"]
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    status, error = proc.run_func(proc, config, None)
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    assert fake_gimp.state.progress[-1] == 1.0
    assert any(t.endswith("MB/s (tiny_clip.pt)") for t in fake_gimp.state.progress_text)
    assert module.logic.model_sets()["ffhq"].complete
    image, layer = make_image(picture)
    status, error = run(gimp, image, [layer], model_files, tmp_path, **{
        "model-set": "ffhq", "generator-file": None, "clip-file": None, "vocab-file": None,
        "align": "none"})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    assert len(image.get_layers()[0].get_children()) == 3


def test_models_procedure_reports_a_failed_download(gimp, tiny_mirror, monkeypatch):
    Gimp, module = gimp
    server, _ = tiny_mirror
    monkeypatch.setenv("CLIPSHAPE_MODELS_MIRROR", server.url + "/gone")
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape-models")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    status, error = proc.run_func(proc, config, None)
    assert status == Gimp.PDBStatusType.EXECUTION_ERROR
    assert error.message.startswith("CLIPShape: Download failed: ")


def test_interactive_run_offers_the_download_of_a_missing_set(gimp, picture, tiny_mirror,
                                                              monkeypatch, tmp_path):
    """OK in the dialog with a set whose files are missing opens the models dialog; closing
    it without the set cancels the run; once the dialog has downloaded it, the edit runs."""
    Gimp, module = gimp
    fake_gimp.state.dialog_answer = True
    calls = []

    def models_dialog(set_name, models_dir, continue_when_done=False):
        calls.append((set_name, models_dir, continue_when_done))
        if len(calls) == 1:
            return False
        return module.logic.ModelDownload(set_name, models_dir).run().state == "done"

    monkeypatch.setattr(module, "models_dialog", models_dialog)
    image, layer = make_image(picture)
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    config = proc.create_config()
    for k, v in {"device": "cpu", "prompt": PROMPT, "steps": 2, "strengths": "1", "align": "none",
                 "library-dir": fake_gimp.File(str(tmp_path / "edits"))}.items():
        config.set_property(k, v)
    status, _ = proc.run_func(proc, Gimp.RunMode.INTERACTIVE, image, [layer], config, None)
    assert status == Gimp.PDBStatusType.CANCEL and calls == [("ffhq", None, True)]
    assert image.get_layers() == [layer]
    status, error = proc.run_func(proc, Gimp.RunMode.INTERACTIVE, image, [layer], config, None)
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    assert len(calls) == 2 and len(image.get_layers()) == 2
    # Complete now: no models dialog.
    status, _ = proc.run_func(proc, Gimp.RunMode.INTERACTIVE, image, [layer], config, None)
    assert status == Gimp.PDBStatusType.SUCCESS and len(calls) == 2
