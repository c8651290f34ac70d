# GUI smoke test of the GIMP 3 plug-in, run by install/host-tests.sh inside the trixie root in the
# real GIMP window under Xvfb (a 1366×768 screen):
#   xvfb-run gimp-3.0 -n -s --batch-interpreter=python-fu-eval -b "exec(open(THIS).read())" --quit
# The plug-in's test hook (CLIPSHAPE_GUI_TEST_SHOT, see gui_test_hook in clipshape.py) saves a
# screenshot of the WHOLE screen once each of its dialogs is shown, reports a dialog that does
# not fit the screen, and answers the dialog. host-tests.sh checks the screenshots and the log
# (no Gtk-CRITICAL, no mnemonic warnings, no dialog that does not fit).
#
# CLIPSHAPE_GUI_TEST_PART=offline (host-tests.sh points the model mirror at a closed port):
#   Filters › Generic › CLIPShape Models… interactively: Download (the hook) fails; the dialog
#   shows why, with the library's guidance, within the screen (gimp-models-offline), Close.
# Otherwise, on the astronaut photo in a display:
#   1. CLIPShape Models…: Download (the `ffhq` set, here the tiny models from the local mirror
#      host-tests.sh serves), progress, done (gimp-models, gimp-models-done), Close;
#   2. a non-interactive edit with that set (its values become the dialog's);
#   3. plug-in-clipshape INTERACTIVELY with a bad strength among the values the plug-in keeps
#      for its dialog: "Find faces…" is clicked, the list of the photo's faces opens (one face:
#      gimp-faces) and the face is chosen (Which face = 1, its thumbnail beside the field);
#      OK shows the error in the dialog, which stays open (gimp-dialog-error), Cancel;
#   4. again with good values (and face 1): the dialog with Advanced open (gimp-dialog), OK;
#      the edit runs; the Strength dialog opens with the edited face's thumbnail and the slider
#      moved (gimp-strength), Keep (gimp-strength-kept), Close: the kept strength is a layer of
#      the group, the preview gone.
import json
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

MODELS = os.environ["CLIPSHAPE_TEST_MODELS"]
SHOTS = os.environ["CLIPSHAPE_GUI_TEST_SHOT"]
PART = os.environ.get("CLIPSHAPE_GUI_TEST_PART", "main")
PROMPT = "face with big nose"


def say(*parts):
    print("CLIPSHAPE-GUI-TEST", *parts, flush=True)


def edit_values():
    library = os.path.join(os.environ["HOME"], "edits-gui")
    os.makedirs(library, exist_ok=True)
    return {"model-set": "ffhq", "device": "cpu", "prompt": PROMPT,
            "strengths": "0,3", "steps": 3, "library-dir": Gio.File.new_for_path(library)}


def procedure(name):
    proc = Gimp.get_pdb().lookup_procedure(name)
    if proc is None:
        raise AssertionError("%s is not registered" % name)
    return proc


def run(image, layer, mode, name="plug-in-clipshape", **values):
    proc = procedure(name)
    config = proc.create_config()
    config.set_property("run-mode", mode)
    if image is not None:
        config.set_property("image", image)
        config.set_core_object_array("drawables", [layer])
    for key, value in values.items():
        config.set_property(key, value)
    result = proc.run(config)
    return result.index(0)


def dialog_values():
    """The values the plug-in keeps for its dialog (written when the dialog closes)."""
    path = os.path.join(Gimp.directory(), "clipshape-dialog.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def set_dialog_values(**values):
    """Changes the values the plug-in keeps for its dialog (as a user would have typed them)."""
    path = os.path.join(Gimp.directory(), "clipshape-dialog.json")
    saved = dialog_values()
    saved.update(values)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(saved, f)


def need_shots(*names):
    missing = [n for n in names if n + ".png" not in os.listdir(SHOTS)]
    if missing:
        raise AssertionError("no screenshot %s in %s" % (", ".join(missing), SHOTS))


def offline():
    status = run(None, None, Gimp.RunMode.INTERACTIVE, "plug-in-clipshape-models")
    say("offline models dialog ->", status.value_nick)
    need_shots("gimp-models", "gimp-models-offline")
    say("OK gimp-gui-offline")


def main():
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE,
                           Gio.File.new_for_path(os.path.join(MODELS, "astronaut.png")))
    Gimp.Display.new(image)
    Gimp.displays_flush()
    layer = image.get_layers()[0]
    # The models dialog: Download (the hook), progress, done, Close (the hook).
    status = run(None, None, Gimp.RunMode.INTERACTIVE, "plug-in-clipshape-models")
    say("models dialog ->", status.value_nick)
    need_shots("gimp-models", "gimp-models-done")
    # An edit with the downloaded set (its values become the dialog's).
    status = run(image, layer, Gimp.RunMode.NONINTERACTIVE, **edit_values())
    say("non-interactive edit with the downloaded ffhq set ->", status.value_nick)
    if status != Gimp.PDBStatusType.SUCCESS:
        raise AssertionError("the edit failed: %s" % status.value_nick)
    group = image.get_layers()[0]
    say("layers", [(c.get_name(), c.get_visible()) for c in group.get_children()])
    # A bad value: OK keeps the dialog open with the error (the hook answers Cancel then).
    set_dialog_values(strengths="0,big")
    status = run(image, layer, Gimp.RunMode.INTERACTIVE)
    say("dialog run with a bad strength ->", status.value_nick)
    need_shots("gimp-dialog", "gimp-faces", "gimp-dialog-error")
    if status != Gimp.PDBStatusType.CANCEL or len(image.get_layers()) != 2:
        raise AssertionError("a bad strength was not kept in the dialog: %s, layers %r" % (
            status.value_nick, [l.get_name() for l in image.get_layers()]))
    # The face chosen from the list is the dialog's "Which face".
    face = dialog_values().get("face")
    say("Which face after choosing from the list:", face)
    if face != 1:
        raise AssertionError("choosing the face from the list did not set Which face: %r"
                             % face)
    # The dialog (OK), the edit, the Strength dialog (Keep, then Close).
    # Enough steps for two pictures in the learning window (it is shot at the second).
    set_dialog_values(strengths="0,3", steps=25)
    status = run(image, layer, Gimp.RunMode.INTERACTIVE)
    say("dialog run ->", status.value_nick)
    if status != Gimp.PDBStatusType.SUCCESS:
        raise AssertionError("the interactive run did not succeed: %s" % status.value_nick)
    need_shots("gimp-dialog", "gimp-learning", "gimp-strength", "gimp-strength-kept")
    group = image.get_layers()[0]    # a new group goes above the photo and earlier results
    if image.get_selected_layers() != [layer]:
        raise AssertionError("after the run the selected layers are %r, not the photo" % [
            l.get_name() for l in image.get_selected_layers()])
    layers = [(c.get_name(), c.get_visible()) for c in group.get_children()]
    say("layers after Keep and Close", layers)
    names = [n for n, _ in layers]
    if any(n.startswith("preview ") for n in names):
        raise AssertionError("the preview layer was left in the image: %r" % names)
    kept = [n for n, shown in layers if shown]
    if len(kept) != 1 or kept[0] == "k=+3 " + PROMPT or not kept[0].startswith("k=+"):
        raise AssertionError("the kept strength is not the one shown layer: %r" % layers)
    say("screenshots", sorted(os.listdir(SHOTS)))
    say("OK gimp-gui")


try:
    offline() if PART == "offline" else main()
except Exception as e:
    say("FAILED", repr(e))
    raise
