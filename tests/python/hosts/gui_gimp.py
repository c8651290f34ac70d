# GUI smoke test of the GIMP 3 plug-in, run by install/host-tests.sh inside the trixie root in the
# real GIMP window under Xvfb:
#   xvfb-run gimp-3.0 -n -s --batch-interpreter=python-fu-eval -b "exec(open(THIS).read())" --quit
# Opens the astronaut photo in a display; runs Filters › Generic › CLIPShape Models…
# interactively (its dialog downloads the `ffhq` set, here the tiny models from the local mirror
# host-tests.sh serves); edits the photo with that set; then runs plug-in-clipshape
# INTERACTIVELY, so its GimpProcedureDialog opens. The plug-in's test hook
# (CLIPSHAPE_GUI_TEST_SHOT, see gui_test_hook in clipshape.py) saves a screenshot of each dialog
# it shows and answers it: the models dialog Download, then Close once done; the procedure
# dialog Cancel.
# host-tests.sh checks the screenshots and the log (no Gtk-CRITICAL, no mnemonic warnings).
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

MODELS = os.environ["CLIPSHAPE_TEST_MODELS"]
SHOTS = os.environ["CLIPSHAPE_GUI_TEST_SHOT"]


def say(*parts):
    print("CLIPSHAPE-GUI-TEST", *parts, flush=True)


def edit_values():
    library = os.path.join(os.environ["HOME"], "edits-gui")
    os.makedirs(library, exist_ok=True)
    return {"model-set": "ffhq", "device": "cpu", "prompt": "face with big nose",
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


def main():
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE,
                           Gio.File.new_for_path(os.path.join(MODELS, "astronaut.png")))
    Gimp.Display.new(image)
    Gimp.displays_flush()
    layer = image.get_layers()[0]
    # The models dialog: Download (the hook), progress, done, Close (the hook).
    status = run(None, None, Gimp.RunMode.INTERACTIVE, "plug-in-clipshape-models")
    say("models dialog ->", status.value_nick)
    for shot in ("gimp-models.png", "gimp-models-done.png"):
        if shot not in os.listdir(SHOTS):
            raise AssertionError("no screenshot %s: the models dialog did not %s" % (
                shot, "open" if shot == "gimp-models.png" else "finish the download"))
    # An edit with the downloaded set (GIMP keeps its arguments as the dialog's last values).
    status = run(image, layer, Gimp.RunMode.NONINTERACTIVE, **edit_values())
    say("non-interactive edit with the downloaded ffhq set ->", status.value_nick)
    if status != Gimp.PDBStatusType.SUCCESS:
        raise AssertionError("the edit failed: %s" % status.value_nick)
    group = image.get_layers()[0]
    say("layers", [c.get_name() for c in group.get_children()])
    status = run(image, layer, Gimp.RunMode.INTERACTIVE)
    say("dialog run ->", status.value_nick)
    if status != Gimp.PDBStatusType.CANCEL:
        raise AssertionError("the dialog was not answered Cancel: %s" % status.value_nick)
    shots = sorted(os.listdir(SHOTS))
    say("screenshots", shots)
    if shots != ["gimp-dialog.png", "gimp-models-done.png", "gimp-models.png"]:
        raise AssertionError("no screenshot of the dialog in %s" % SHOTS)
    say("OK gimp-gui")


try:
    main()
except Exception as e:
    say("FAILED", repr(e))
    raise
