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
def gimp(monkeypatch, installed, tmp_path):
    Gimp = fake_gimp.install(monkeypatch)
    fake_gimp.state.directory = str(tmp_path / "gimp-profile")
    # The default folders the dialog shows live in this test's data folder.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
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


def run(gimp, image, drawables, model_files, tmp_path, mode=None, **values):
    Gimp, module = gimp
    plugin = module.ClipShape()
    assert plugin.do_query_procedures() == ["plug-in-clipshape", "plug-in-clipshape-models"]
    proc = plugin.do_create_procedure("plug-in-clipshape")
    config = proc.create_config()
    # Files on a synthetic picture: the selection as it is (a face model looks for a face).
    settings = {"model-set": "files", "device": "cpu", "align": "none",
                "generator-file": fake_gimp.File(model_files["generator"]),
                "clip-file": fake_gimp.File(model_files["clip"]),
                "vocab-file": fake_gimp.File(model_files["vocab"]),
                "library-dir": fake_gimp.File(str(tmp_path / "edits")),
                "prompt": PROMPT, "strengths": "-1.5,0,1.5", "steps": 3}
    settings.update(values)
    for k, v in settings.items():
        config.set_property(k, v)
    if mode is None:
        mode = Gimp.RunMode.NONINTERACTIVE
    return proc.run_func(proc, mode, image, drawables, config,
                         None)


def name(k):
    return "k=%s %s" % (k, PROMPT)


def visible(group):
    return [c.get_name() for c in group.get_children() if c.get_visible()]


def test_procedure_registration(gimp):
    Gimp, module = gimp
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    assert proc.menu_paths == ["<Image>/Filters/Generic"] and proc.menu_label == "CLIPShape…"
    assert proc.image_types == "RGB*"
    args = proc.arguments
    for name in ("model-set", "prompt", "strengths", "steps", "saved-edit", "library-dir",
                 "layer", "device", "models-dir", "generator-file", "clip-file", "vocab-file",
                 "face", "also", "optimize-size"):
        assert name in args
    assert args["strengths"]["default"] == "-3,-1.5,0,1.5,3"
    # What k means is said where the strengths are typed.
    assert module.logic.STRENGTH_HELP in args["strengths"]["blurb"]
    assert "auto" in args["layer"]["blurb"] and "convs.3" in args["layer"]["blurb"]
    # λ2's default is an empty field, not a "-1.00" that means "default".
    assert args["lambda2"]["kind"] == "string" and args["lambda2"]["default"] == ""
    assert (args["face"]["default"], args["optimize-size"]["default"], args["also"]["default"]) \
        == (0, 0, "")
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
    n = len(fake_gimp.state.dialogs)
    assert module.show_dialog(proc, config) is None     # the fake answers Cancel
    (dialog,) = fake_gimp.state.dialogs[n:]
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
    # The strongest on top, the strength first in the name; k=0 of the default paste (the
    # picture's own pixels, unmoved) would be an empty layer: not added.
    assert [c.get_name() for c in children] == [name("+1.5"), name("-1.5")]
    # One result shown: the strongest positive strength, what the prompt asked for.
    assert visible(group) == [name("+1.5")] and group.get_visible()
    # Warp layers are placed where the picture's pixels moved, within the selection's box
    # grown to the square frame and centred: (100, 30) 90×90 (the layer is offset 7,5).
    for c in children:
        _, x, y = c.get_offsets()
        assert 100 <= x and 30 <= y and x + c.get_width() <= 190 and y + c.get_height() <= 120
        assert c.buffer.flushed == 1 and c.updated == [(0, 0, c.get_width(), c.get_height())]
    # Both strengths show (alpha > 0) where they move the picture, each its own way.
    assert max(bytes(children[0].buffer.data)[3::4]) > 0
    assert max(bytes(children[1].buffer.data)[3::4]) > 0
    assert bytes(children[0].buffer.data) != bytes(children[1].buffer.data)
    # One undo group around every change.
    assert image.undo_groups == 1 and image.undo_depth == 0
    assert image.ops and all(depth == 1 for _, _, depth, _ in image.ops)
    # Progress went forward to the end; the learnt edit is in the library.
    assert fake_gimp.state.progress[-1] == 1.0
    assert fake_gimp.state.progress == sorted(fake_gimp.state.progress)
    assert any("step 3/3" in t for t in fake_gimp.state.progress_text)
    saved = os.listdir(tmp_path / "edits")
    assert len(saved) == 1 and saved[0].startswith("face-with-big-nose-")
    assert fake_gimp.state.flushes == 1 and fake_gimp.state.messages == []


@pytest.mark.parametrize("paste", ["changes", "region", "frame"])
def test_other_pastes_keep_order_and_show_one(gimp, picture, model_files, tmp_path, paste):
    """k=0 of "changes" would be empty too; "region" and "frame" show the model's picture at
    k=0, a layer worth having (hidden)."""
    Gimp, module = gimp
    image, layer = make_image(picture)
    status, error = run(gimp, image, [layer], model_files, tmp_path, paste=paste,
                        strengths="0,-3,1.5,3")
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    group = image.get_layers()[0]
    expected = ["+3", "+1.5"] + ([] if paste == "changes" else ["0"]) + ["-3"]
    assert [c.get_name() for c in group.get_children()] == [name(k) for k in expected]
    assert visible(group) == [name("+3")]
    for c in group.get_children():
        assert c.get_offsets() == (True, 100, 30) and (c.width, c.height) == (90, 90)


def test_whole_layer_without_selection_and_no_fit(gimp, picture, model_files, tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture, selection=None)
    status, error = run(gimp, image, [layer], model_files, tmp_path, **{"fit-to-frame": False,
                                                                       "save-edit": False,
                                                                       "strengths": "2"})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    (only,) = image.get_layers()[0].get_children()
    assert only.get_name() == name("+2") and only.get_visible()
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
    applied, learnt, photo = image.get_layers()
    assert applied.get_name() == PROMPT           # the newest group above the earlier result
    assert [c.get_name() for c in applied.get_children()] == [name("+1.5")]
    assert applied.get_children()[0].buffer.data == learnt.get_children()[0].buffer.data
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
    """A face model given as files, its face detector given, Align left at its default: the
    face is found and edited (not the whole photo replaced by the model's frame)."""
    Gimp, module = gimp
    from conftest import golden, reference_face
    image, layer = make_image(astronaut, selection=None, offsets=(3, 4))
    status, error = run(gimp, image, [layer], model_files, tmp_path, align="auto",
                        **{"face-detector-dir": fake_gimp.File(golden("face/mtcnn"))})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    group, photo = image.get_layers()
    children = group.get_children()
    assert [c.get_name() for c in children] == [name("+1.5"), name("-1.5")]
    # Layers sit on the face, in image coordinates (the photo layer is at 3, 4): the moved
    # pixels overlap the face and stay inside the photo.
    x1, y1, x2, y2 = reference_face()["box"]
    for c in children:
        _, x, y = c.get_offsets()
        assert x < x2 + 3 and y < y2 + 4 and x + c.get_width() > x1 + 3
        assert y + c.get_height() > y1 + 4
        assert x >= 3 and y >= 4 and x + c.get_width() <= 512 + 3 and y + c.get_height() <= 512 + 4
        assert max(bytes(c.buffer.data)[3::4]) > 0
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
    assert len(image.get_layers()[0].get_children()) == 2     # -1.5 and +1.5: no k=0


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
    """OK in the dialog with a set whose files are missing opens the models dialog over it;
    closing that without the set goes back to the dialog, values kept, saying what to do;
    once the models dialog has downloaded the set, the edit runs."""
    Gimp, module = gimp
    calls = []

    def models_dialog(set_name, models_dir, continue_when_done=False, parent=None):
        calls.append((set_name, models_dir, continue_when_done, parent))
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
    fake_gimp.state.dialog_answer = [True, False]       # OK, then Cancel
    status, _ = proc.run_func(proc, Gimp.RunMode.INTERACTIVE, image, [layer], config, None)
    (dialog,) = fake_gimp.state.dialogs
    assert status == Gimp.PDBStatusType.CANCEL and calls == [("ffhq", None, True, dialog)]
    assert dialog.runs == 2 and "Faces (FFHQ) is not downloaded yet" in dialog.message()
    assert image.get_layers() == [layer]
    fake_gimp.state.dialog_answer = [True]
    status, error = proc.run_func(proc, Gimp.RunMode.INTERACTIVE, image, [layer], config, None)
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    assert len(calls) == 2 and len(image.get_layers()) == 2
    # Complete now: no models dialog.
    fake_gimp.state.dialog_answer = [True]
    status, _ = proc.run_func(proc, Gimp.RunMode.INTERACTIVE, image, [layer], config, None)
    assert status == Gimp.PDBStatusType.SUCCESS and len(calls) == 2
    # No message box after a success: the layers (and the Strength dialog) are the answer.
    assert fake_gimp.state.messages == []


# ───────────────────────── the dialog as a person uses it ─────────────────────────

def interactive(gimp, image, layer, model_files, tmp_path, answers, **typed):
    """An interactive run where the user types ``typed`` into the dialog and answers
    ``answers`` (True = OK) → (status, error, the ProcedureDialog)."""
    Gimp, module = gimp
    fake_gimp.state.dialog_answer = list(answers)
    fake_gimp.state.typed = typed
    n = len(fake_gimp.state.dialogs)
    status, error = run(gimp, image, [layer], model_files, tmp_path,
                        mode=Gimp.RunMode.INTERACTIVE)
    return status, error, fake_gimp.state.dialogs[n]


def test_the_dialog_keeps_what_was_typed_after_cancel_and_error(gimp, picture, model_files,
                                                                 tmp_path):
    """GIMP keeps last values only after a success: the plug-in's own copy brings back what
    was typed before a Cancel, and an error keeps the dialog open with every value."""
    Gimp, module = gimp
    image, layer = make_image(picture)
    status, _, dialog = interactive(gimp, image, layer, model_files, tmp_path, [False],
                                    prompt="a wide smile", strengths="0.5,2.5", lambda2="0.1")
    assert status == Gimp.PDBStatusType.CANCEL and image.get_layers() == [layer]
    saved = os.listdir(fake_gimp.state.directory)
    assert saved == ["clipshape-dialog.json"], "written atomically, no temporary file left"
    # The next dialog opens on a fresh config (GIMP's last values: the defaults here).
    proc, dialog = dialog_of(gimp)
    assert dialog.values_at_build["prompt"] == "a wide smile"
    assert dialog.values_at_build["strengths"] == "0.5,2.5"
    assert dialog.values_at_build["lambda2"] == "0.1"
    assert dialog.values_at_build["generator-file"].get_path() == model_files["generator"]

    # OK with a bad value: the message is shown IN the dialog, which runs again.
    status, _, dialog = interactive(gimp, image, layer, model_files, tmp_path, [True, False],
                                    prompt="  ", strengths="1,big")
    assert status == Gimp.PDBStatusType.CANCEL and dialog.runs == 2 and dialog.destroyed
    assert "prompt is empty" in dialog.message()
    (label,) = [w for w in dialog.area.children if w.props.get("visible")]
    assert "<span foreground=" in label.props["markup"] and label.props["wrap"]
    assert image.get_layers() == [layer] and image.undo_groups == 0
    proc, dialog = dialog_of(gimp)
    assert dialog.values_at_build["strengths"] == "1,big"


@pytest.mark.parametrize("values,expected", [
    ({"lambda2": "strong"}, "λ2: 'strong' is not a number"),
    ({"lambda2": "-1"}, "λ2: -1 is not within 0..10"),
    ({"optimize-size": 8}, "Learning side: 8 px"),
    ({"saved-edit": fake_gimp.File("/no/edit.safetensors"), "also": "a beard"},
     "saved edit not found"),
    ({"generator-file": fake_gimp.File("/no/e4e.pt")}, "e4e / generator file not found"),
])
def test_errors_are_shown_in_the_dialog_with_its_field_names(gimp, picture, model_files,
                                                             tmp_path, values, expected):
    Gimp, module = gimp
    image, layer = make_image(picture)
    status, _, dialog = interactive(gimp, image, layer, model_files, tmp_path, [True, False],
                                    **values)
    assert status == Gimp.PDBStatusType.CANCEL and dialog.runs == 2
    assert expected in dialog.message(), dialog.message()
    assert "--" not in dialog.message()


def test_library_messages_speak_of_the_dialogs_not_the_command_line(gimp, tiny_mirror,
                                                                    picture, model_files,
                                                                    tmp_path):
    Gimp, module = gimp
    words = module.gimp_words
    assert "--mtcnn" not in words("give the MTCNN files (pnet.pt; --mtcnn DIR)")
    assert "Face detector folder" in words("give the MTCNN files (pnet.pt; --mtcnn DIR)")
    # The library's message about a missing set, run non-interactively: the commands it
    # advises are the Models dialog's buttons, its files and folder are all still there.
    image, layer = make_image(picture)
    status, error = run(gimp, image, [layer], model_files, tmp_path, **{
        "model-set": "ffhq", "generator-file": None, "clip-file": None, "vocab-file": None})
    assert status == Gimp.PDBStatusType.EXECUTION_ERROR
    text = error.message
    assert "clipshape models" not in text and "CLIPSHAPE_MODELS to" not in text, text
    assert "Download in Filters › Generic › CLIPShape Models…" in text
    assert "Use a file I already have…" in text
    assert "tiny_e4e.pt" in text and str(tiny_mirror[1]) in text


def test_dialog_layout_fits_a_laptop_screen_and_explains_its_fields(gimp, tmp_path):
    """Advanced sits beside the main fields (stacked it was 810 px tall); the layer shows an
    example, λ2 what empty means, file choosers their file types, folders the folder used."""
    Gimp, module = gimp
    (tmp_path / "data" / "clipshape" / "edits").mkdir(parents=True)
    proc, dialog = dialog_of(gimp)
    assert dialog.filled == ["columns"]
    assert dialog.containers["columns"] == ["main-box", "advanced"]
    assert dialog.container_widgets["columns"].props["orientation"] == 0   # HORIZONTAL
    assert dialog.containers["main-box"] == module.MAIN
    assert dialog.containers["advanced-box"] == module.ADVANCED
    layer_entry = dialog.widgets["layer"].children[1]
    assert "convs.3" in layer_entry.props["placeholder_text"]
    assert "auto" in layer_entry.props["placeholder_text"]
    assert "default" in dialog.widgets["lambda2"].children[1].props["placeholder_text"]
    patterns = {n: dialog.widgets[n].children[1].props["filters"][0].props["patterns"]
                for n in ("saved-edit", "generator-file", "clip-file", "vocab-file")}
    assert patterns == {"saved-edit": ["*.safetensors"],
                        "generator-file": ["*.pt", "*.pth", "*.safetensors"],
                        "clip-file": ["*.pt"], "vocab-file": ["*.txt.gz"]}
    for n in patterns:   # the chooser can still show every file
        assert dialog.widgets[n].children[1].props["filters"][1].props["patterns"] == ["*"]
    assert (dialog.values_at_build["library-dir"].get_path()
            == str(tmp_path / "data" / "clipshape" / "edits"))


def test_strength_slider_previews_live_and_keeps_a_layer(gimp, picture, model_files, tmp_path):
    """After an interactive warp run, the Strength dialog's slider shows the photo moved to
    any strength in a preview layer; Keep adds it to the group as the shown result (one undo
    step), Close removes the preview; the preview itself leaves nothing in the undo history."""
    Gimp, module = gimp
    image, layer = make_image(picture)
    seen = {}

    def move_slider(dialog):
        if "scale" not in seen:
            (scale,) = [w for w in dialog.area.children if "range" in w.props]
            seen["scale"], seen["range"] = scale, scale.props["range"]
            group = image.get_layers()[0]
            seen["at_open"] = [(c.get_name(), c.get_visible()) for c in group.get_children()]
            scale.set_value(0.8)   # GLib's timeout would show it; Keep shows the value first

    fake_gimp.state.answers["clipshape-strength"] = [module.RESPONSE_KEEP,
                                                     fake_gimp.ResponseType.CLOSE]
    fake_gimp.state.before_answer["clipshape-strength"] = [move_slider]
    status, error, _ = interactive(gimp, image, layer, model_files, tmp_path, [True],
                                   strengths="-1.5,1.5")
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    (strength,) = dialogs("clipshape-strength")
    assert strength.destroyed
    lo, hi = seen["range"]
    assert lo <= -1.5 and hi >= 1.5
    # When it opened: the preview on top at the shown strength, the results hidden under it.
    assert seen["at_open"] == [("preview " + name("+1.5"), True), (name("+1.5"), False),
                               (name("-1.5"), False)]
    group = image.get_layers()[0]
    assert [c.get_name() for c in group.get_children()] == [name("+1.5"), name("+0.8"),
                                                            name("-1.5")]
    assert visible(group) == [name("+0.8")]
    kept = group.get_children()[1]
    assert bytes(kept.buffer.data) != bytes(group.get_children()[0].buffer.data)
    assert max(bytes(kept.buffer.data)[3::4]) > 0
    # Two undo steps: the run's group and the kept layer; the preview is not in the history.
    assert image.undo_groups == 2 and image.undo_depth == 0 and image.undo_frozen == 0
    undoable = image.undoable_ops()
    assert all(depth == 1 for _, _, depth in undoable)
    assert not [op for op in undoable if "preview" in op[1]]
    assert ("insert_layer", name("+0.8"), 1) in undoable
    texts = " ".join(w.text() for w in strength.labels())
    assert "Kept " + name("+0.8") in texts and "k is the edit's strength" in texts


def dialogs(role):
    return [d for d in fake_gimp.state.gimp_dialogs if d.props.get("role") == role]


def test_strength_preview_follows_the_slider(gimp, picture, model_files, tmp_path):
    Gimp, module = gimp
    image, layer = make_image(picture)
    fake_gimp.state.answers["clipshape-strength"] = [fake_gimp.ResponseType.CLOSE]
    status, error = run(gimp, image, [layer], model_files, tmp_path, strengths="-1.5,1.5")
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    # Non-interactive: no Strength dialog; the result is reproduced for the class alone.
    assert fake_gimp.state.gimp_dialogs == []
    source = module.GimpLayerSource(image, layer)
    model, request = module.requests_from_config(_config(gimp, model_files, tmp_path))
    job = module.logic.EditJob(model, request, source, source.selection(image))
    result = job.run()
    job.contexts.close()
    group = module.insert_result(image, layer, result)
    preview = module.StrengthPreview(image, group, result)
    a = preview.show(0.5)
    b = preview.show(1.2)
    children = group.get_children()
    assert children[0] is preview.layer and children[0].get_name() == "preview " + name("+1.2")
    assert bytes(preview.layer.buffer.data[:len(b.data)]) == b.data and a.data != b.data
    assert [c.get_visible() for c in children] == [True, False, False]
    # Keeping a strength that has a layer already shows that layer, no duplicate.
    preview.show(-1.5)
    assert preview.keep() is group.get_children()[2]
    preview.close()
    assert [c.get_name() for c in group.get_children()] == [name("+1.5"), name("-1.5")]
    assert visible(group) == [name("-1.5")]
    assert image.undo_frozen == 0 and not [o for o in image.undoable_ops() if "preview" in o[1]]


def _config(gimp, model_files, tmp_path, **values):
    Gimp, module = gimp
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    config = proc.create_config()
    settings = {"model-set": "files", "device": "cpu", "align": "none", "prompt": PROMPT,
                "generator-file": fake_gimp.File(model_files["generator"]),
                "clip-file": fake_gimp.File(model_files["clip"]),
                "vocab-file": fake_gimp.File(model_files["vocab"]),
                "library-dir": fake_gimp.File(str(tmp_path / "edits")),
                "strengths": "-1.5,1.5", "steps": 2, "save-edit": False}
    settings.update(values)
    for k, v in settings.items():
        config.set_property(k, v)
    return config


# ───────────────────────── CLIPShape Models… ─────────────────────────

def test_models_dialog_shows_the_store_and_adds_a_file_the_user_has(gimp, tiny_mirror,
                                                                    model_files, tmp_path):
    Gimp, module = gimp
    server, store = tiny_mirror
    status = module.ModelsStatus("ffhq")
    assert status.missing and not status.complete and status.store == str(store)
    assert status.download_label.startswith("_Download Faces (FFHQ) (")
    assert "Use a file I already have" in status.hint and "Tiny e4e" in status.licences
    assert "Cars" in module.ModelsStatus("car").error     # not in this store's manifest

    # "Use a file I already have…": a file that is not one of the set, then the e4e file.
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"not a model")
    fake_gimp.state.chosen_files = [str(junk), model_files["generator"]]
    fake_gimp.state.answers["clipshape-models"] = [module.RESPONSE_ADD, module.RESPONSE_ADD]
    texts = []
    fake_gimp.state.before_answer["clipshape-models"] = [
        lambda d: texts.append(" ".join(w.text() for w in d.labels()
                                        if w.props.get("visible")))]
    assert module.models_dialog("ffhq") is False      # Close: still incomplete
    (dialog,) = fake_gimp.state.gimp_dialogs
    assert dialog.destroyed
    assert "Model store: %s" % store in texts[0]
    assert "notes.pt is not a file of Faces (FFHQ)" in texts[1]
    assert "Added e4e.pt as a file of Faces (FFHQ)" in texts[2]
    assert os.path.isfile(model_files["generator"]) and os.path.isfile(junk)   # theirs stay
    assert "tiny_e4e.pt" in os.listdir(store)
    # Several files at once, one of them none of the set's: the others are added all the same.
    from conftest import golden
    fake_gimp.state.gimp_dialogs.clear()
    fake_gimp.state.chosen_files = [[golden("face/mtcnn/pnet.pt"), str(junk),
                                     golden("bpe_simple_vocab_16e6.txt.gz")]]
    fake_gimp.state.answers["clipshape-models"] = [module.RESPONSE_ADD]
    texts.clear()
    assert module.models_dialog("ffhq") is False
    assert "Added pnet.pt" in texts[1] and "Added bpe_simple_vocab_16e6.txt.gz" in texts[1], texts[1]
    assert "notes.pt is not a file of Faces (FFHQ)" in texts[1]
    assert {"mtcnn_pnet.pt", "bpe_simple_vocab_16e6.txt.gz"} <= set(os.listdir(store))
    # The file chooser offered model files first.
    assert module.MODEL_FILE_FILTER[1] == ["*.pt", "*.pth", "*.safetensors", "*.txt.gz"]


def test_download_progress_says_it_is_connecting_and_keeps_failures_short(gimp):
    Gimp, module = gimp
    status = module.logic.DownloadStatus("running", 0, 1000, None, "")
    assert module.download_text(status) == "Connecting to the download server…"
    failed = module.logic.DownloadStatus("failed", 0, 1000, None, "", "x" * 2000)
    assert len(module.download_text(failed)) < 40


def test_strength_dialog_names_the_edited_face_and_only_follows_a_warp(gimp, astronaut,
                                                                       picture, model_files,
                                                                       tmp_path):
    Gimp, module = gimp
    from conftest import golden, reference_face
    image, layer = make_image(astronaut, selection=None)
    status, error, _ = interactive(gimp, image, layer, model_files, tmp_path, [True],
                                   align="auto", strengths="0,2",
                                   **{"face-detector-dir": fake_gimp.File(golden("face/mtcnn"))})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    (strength,) = dialogs("clipshape-strength")
    texts = " ".join(w.text() for w in strength.labels())
    assert "edited face 1 of 1 at " in texts and "showing" not in texts.split(";")[0]
    # The edited face's thumbnail beside that text: the face's pixels, 64 px at most.
    (thumb,) = [w for w in walk(strength.area) if "from_pixbuf" in w.props]
    pixbuf = thumb.props["from_pixbuf"]
    assert max(pixbuf.width, pixbuf.height) == module.FACE_THUMB
    assert thumb.props["tooltip_text"].startswith("The edited face: 1: ")
    x1, y1, x2, y2 = reference_face()["box"]
    w, h = pixbuf.stride // 4, len(pixbuf.data) // pixbuf.stride
    assert abs(w - (x2 - x1)) <= 2 and abs(h - (y2 - y1)) <= 2
    assert pixbuf.data == face_pixels(astronaut, thumb.props["tooltip_text"])
    assert [c.get_name() for c in image.get_layers()[0].get_children()] == [name("+2")]
    # The model's picture (no transfer of the photo's pixels): no slider, no dialog.
    image, layer = make_image(picture)
    status, error, _ = interactive(gimp, image, layer, model_files, tmp_path, [True],
                                   align="none", paste="region", **{"face-detector-dir": None})
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    assert len(dialogs("clipshape-strength")) == 1


def test_a_successful_run_and_the_advanced_expander_are_remembered(gimp, picture, model_files,
                                                                   tmp_path):
    """Scripts' successful runs become GIMP's last values; the plug-in's copy follows, so
    the dialog never opens on values older than GIMP's. Advanced stays open once opened."""
    Gimp, module = gimp
    image, layer = make_image(picture)
    fake_gimp.state.while_open = [     # the user opens Advanced, then Cancel
        lambda d: d.container_widgets["advanced"].set_expanded(True)]
    proc, dialog = dialog_of(gimp)
    assert run(gimp, image, [layer], model_files, tmp_path, prompt="a long chin",
               strengths="2")[0] == Gimp.PDBStatusType.SUCCESS
    proc, dialog = dialog_of(gimp)
    assert dialog.values_at_build["prompt"] == "a long chin"
    assert dialog.container_widgets["advanced"].props["expanded"] is True


def test_the_learning_window_shows_the_picture_and_cancels(gimp, picture, model_files, tmp_path):
    """An interactive run opens a small window while it learns: the picture every few steps
    (the model's frame, scaled for a laptop's screen), what is done and the time left; its
    Cancel stops the run with nothing added and the run ends as cancelled."""
    Gimp, module = gimp
    image, layer = make_image(picture)
    status, error, _ = interactive(gimp, image, layer, model_files, tmp_path, [True],
                                   strengths="-1.5,1.5", steps=12)
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    (window,) = dialogs("clipshape-learning")
    # Gtk.Image.set_from_pixbuf, as the fake records it.
    (image_widget,) = [w for w in window.area.children if "from_pixbuf" in w.props]
    pixbuf = image_widget.props["from_pixbuf"]
    assert max(pixbuf.width, pixbuf.height) == module.LearningWindow.SIDE
    assert len(pixbuf.data) == 64 * 64 * 4           # the tiny model's frame, RGBA
    texts = " ".join(w.text() for w in window.labels())
    assert "Done" in texts or "Learning" in texts or "Moving" in texts
    assert window.destroyed

    # Cancel while it learns: the progress report after the click stops the run.
    fake_gimp.state.gimp_dialogs.clear()
    layers_before = list(image.get_layers())
    original = module.LearningWindow.progress

    def click_cancel(self, fraction, text):
        original(self, fraction, text)
        if "step 2/" in text:
            self.dialog.response(fake_gimp.ResponseType.CANCEL)

    module.LearningWindow.progress = click_cancel
    try:
        status, error, _ = interactive(gimp, image, layer, model_files, tmp_path, [True],
                                       strengths="1.5", steps=500)
    finally:
        module.LearningWindow.progress = original
    assert status == Gimp.PDBStatusType.CANCEL, error and error.message
    assert image.get_layers() == layers_before


# ───────────────────────── choosing the face ─────────────────────────

def walk(widget):
    """``widget`` and every widget under it."""
    out, todo = [], [widget]
    while todo:
        w = todo.pop(0)
        out.append(w)
        todo[:0] = w.children
    return out


def face_pixels(picture, label):
    """The picture's pixels in the box a face label names ("1: 87×110 at 181,62")."""
    w, h, x, y = (int(v) for v in re.search(r"(\d+)×(\d+) at (\d+),(\d+)", label).groups())
    width, _, rgba = picture
    return b"".join(bytes(rgba[((y + j) * width + x) * 4:((y + j) * width + x + w) * 4])
                    for j in range(h))


def find_button(dialog):
    """"Find faces…" beside the dialog's "Which face" field (in its GimpLabelSpin's grid)."""
    (row,) = [w for w in dialog.widgets["face"].children if w.props.get("cell") == (2, 0)]
    (button,) = [w for w in walk(row) if w.props.get("label") == "Find faces…"]
    return button, row


def test_find_faces_lists_the_faces_and_the_choice_sets_which_face(gimp, astronaut,
                                                                   model_files, tmp_path):
    """"Find faces…" beside "Which face" runs the detection with the dialog's model choice and
    lists each face (thumbnail, size and place); a click on one sets the field, and the
    chosen face's thumbnail stays beside it until another number is typed."""
    Gimp, module = gimp
    from conftest import golden, reference_face
    image, layer = make_image(astronaut, selection=None)
    seen = {}

    def click_find(dialog):
        button, row = find_button(dialog)
        assert row.props["visible"] and button.props["visible"]
        # Not one of the mnemonics GIMP checks (they are all taken): no mnemonic at all.
        assert "_" not in button.props["label"]
        button.clicked()
        seen["face after the click"] = dialog.config.get_property("face")
        seen["thumb"] = [w for w in walk(row) if "from_pixbuf" in w.props]
        seen["thumb shown"] = [w.props.get("visible") for w in seen["thumb"]]
        dialog.config.set_property("face", 2)            # the user types another number
        seen["thumb shown after typing"] = [w.props.get("visible") for w in seen["thumb"]]

    def choose_first(faces_dialog):
        rows = [w for w in walk(faces_dialog.area) if isinstance(w, fake_gimp.Button)]
        seen["rows"] = [[x.text() for x in walk(r) if "label" in x.props and x is not r]
                        for r in rows]
        seen["thumbs"] = [x.props["from_pixbuf"] for r in rows for x in walk(r)
                          if "from_pixbuf" in x.props]
        seen["title"] = " ".join(w.text() for w in walk(faces_dialog.area)
                                 if "label" in w.props)
        rows[0].clicked()

    fake_gimp.state.while_open = [click_find]
    fake_gimp.state.before_answer["clipshape-faces"] = [choose_first]
    status, _, dialog = interactive(
        gimp, image, layer, model_files, tmp_path, [False], align="auto",
        **{"face-detector-dir": fake_gimp.File(golden("face/mtcnn"))})
    assert status == Gimp.PDBStatusType.CANCEL and image.get_layers() == [layer]
    (faces,) = dialogs("clipshape-faces")
    assert faces.destroyed and faces.props["transient_for"] is dialog
    assert "1 face found" in seen["title"]
    (row_texts,) = seen["rows"]
    x1, y1, x2, y2 = reference_face()["box"]
    assert row_texts[0].startswith("Face 1: ") and " at %d," % int(x1) in row_texts[0]
    (pixbuf,) = seen["thumbs"]
    assert max(pixbuf.width, pixbuf.height) == module.FACE_THUMB
    assert pixbuf.data == face_pixels(astronaut, row_texts[0])
    # The choice is the dialog's "Which face" value; its thumbnail is shown beside the field.
    assert seen["face after the click"] == 1
    (thumb,) = seen["thumb"]
    assert seen["thumb shown"] == [True]
    assert max(thumb.props["from_pixbuf"].width,
               thumb.props["from_pixbuf"].height) == module.FACE_THUMB_SMALL
    assert thumb.props["tooltip_text"] == "Face " + row_texts[0][len("Face "):]
    # A number typed by hand is another face: the thumbnail goes.
    assert seen["thumb shown after typing"] == [False]
    assert dialog.message() == ""


def test_find_faces_errors_are_shown_in_the_dialog_and_cancel_keeps_the_face(
        gimp, astronaut, model_files, tmp_path):
    Gimp, module = gimp
    from conftest import golden
    image, layer = make_image(astronaut, selection=None)
    # Files without a face detector: nothing to find faces with; said in the dialog, naming
    # its field, and no list opens.
    fake_gimp.state.while_open = [lambda d: find_button(d)[0].clicked()]
    status, _, dialog = interactive(gimp, image, layer, model_files, tmp_path, [False],
                                    **{"face-detector-dir": None})
    assert status == Gimp.PDBStatusType.CANCEL and dialogs("clipshape-faces") == []
    assert "Face detector folder" in dialog.message(), dialog.message()
    (label,) = [w for w in dialog.area.children if w.props.get("visible")]
    assert "<span foreground=" in label.props["markup"]
    # The list cancelled: "Which face" keeps its value.
    fake_gimp.state.while_open = [lambda d: find_button(d)[0].clicked()]
    fake_gimp.state.answers["clipshape-faces"] = [fake_gimp.ResponseType.CANCEL]
    status, _, dialog = interactive(gimp, image, layer, model_files, tmp_path, [False],
                                    face=3, **{"face-detector-dir":
                                               fake_gimp.File(golden("face/mtcnn"))})
    assert len(dialogs("clipshape-faces")) == 1 and dialog.config.get_property("face") == 3
    assert dialog.message() == ""


def test_face_rows_and_choice_are_plain_functions(gimp):
    Gimp, module = gimp
    logic = module.logic
    crop = bytes(range(256)) * (40 * 20 * 4 // 256) + bytes(40 * 20 * 4 % 256)
    faces = [logic.FaceChoice(1, logic.Box(10, 5, 40, 20), 0.99, crop, "RGBA8"),
             logic.FaceChoice(2, logic.Box(0, 0, 0, 0), 0.5, b"", "RGBA8")]
    rows = module.face_rows(faces)
    assert [(n, t) for n, _, t in rows] == [(1, "Face 1: 40×20 at 10,5"),
                                           (2, "Face 2: 0×0 at 0,0")]
    pixbuf = rows[0][1]
    assert (pixbuf.width, pixbuf.height, pixbuf.stride) == (64, 32, 160)
    assert pixbuf.data == crop and rows[1][1] is None      # an empty box: no picture
    proc = module.ClipShape().do_create_procedure("plug-in-clipshape")
    config = proc.create_config()
    assert module.choose_face(config, faces, 2) is faces[1]
    assert config.get_property("face") == 2
    assert module.choose_face(config, faces, None) is None and config.get_property("face") == 2
    assert module.choose_face(config, faces, 7) is None and config.get_property("face") == 2


def test_a_new_result_goes_above_earlier_ones_and_the_photo_stays_selected(gimp, picture,
                                                                           model_files,
                                                                           tmp_path):
    """A second run's group lies above the first's (else the strength the first shows would
    hide it), under a layer of the user's that is above them; the photo stays the selected
    layer, so the next run edits it and not a result."""
    Gimp, module = gimp
    image, layer = make_image(picture)
    fake_gimp.state.answers["clipshape-strength"] = [fake_gimp.ResponseType.CLOSE] * 2
    for prompt in ("a round face", "a long face"):
        status, error, _ = interactive(gimp, image, layer, model_files, tmp_path, [True],
                                       prompt=prompt, strengths="-1.5,1.5", steps=1)
        assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
        assert image.get_selected_layers() == [layer]
    assert [l.get_name() for l in image.get_layers()] == ["a long face", "a round face", "photo"]
    # A layer of the user's on top: the third result goes under it, above the other results.
    mine = Gimp.Layer.new(image, "my text", 10, 10, Gimp.ImageType.RGBA_IMAGE, 100.0,
                          Gimp.LayerMode.NORMAL)
    image.insert_layer(mine, None, 0)
    status, error, _ = interactive(gimp, image, layer, model_files, tmp_path, [True],
                                   prompt="a wide face", strengths="1.5", steps=1)
    assert status == Gimp.PDBStatusType.SUCCESS, error and error.message
    assert [l.get_name() for l in image.get_layers()] == ["my text", "a wide face",
                                                          "a long face", "a round face", "photo"]
    assert image.get_selected_layers() == [layer]
