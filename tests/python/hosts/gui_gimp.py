# GUI smoke test of the GIMP 3 plug-in, run by install/host-tests.sh inside the trixie root in the
# real GIMP window under Xvfb:
#   xvfb-run gimp-3.0 -n -s --batch-interpreter=python-fu-eval -b "exec(open(THIS).read())" --quit
# Opens the astronaut photo in a display and runs plug-in-clipshape INTERACTIVELY, so its
# GimpProcedureDialog opens. The plug-in's test hook (CLIPSHAPE_GUI_TEST_SHOT, see
# gui_test_hook in clipshape.py) saves a screenshot of each dialog it shows and answers Cancel.
# host-tests.sh checks the screenshots and the log (no Gtk-CRITICAL, no mnemonic warnings).
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

MODELS = os.environ["CLIPSHAPE_TEST_MODELS"]
SHOTS = os.environ["CLIPSHAPE_GUI_TEST_SHOT"]


def say(*parts):
    print("CLIPSHAPE-GUI-TEST", *parts, flush=True)


def models():
    path = lambda name: Gio.File.new_for_path(os.path.join(MODELS, name))  # noqa: E731
    os.makedirs(os.path.join(os.environ["HOME"], "edits-gui"), exist_ok=True)
    return {"model-set": "files", "generator-file": path("e4e.pt"), "clip-file": path("clip_jit.pt"),
            "vocab-file": path("bpe_simple_vocab_16e6.txt.gz"), "device": "cpu",
            "face-detector-dir": path("mtcnn"), "prompt": "face with big nose",
            "strengths": "0,3", "steps": 3,
            "library-dir": Gio.File.new_for_path(os.path.join(os.environ["HOME"], "edits-gui"))}


def run(image, layer, mode, **values):
    proc = Gimp.get_pdb().lookup_procedure("plug-in-clipshape")
    if proc is None:
        raise AssertionError("plug-in-clipshape is not registered")
    config = proc.create_config()
    config.set_property("run-mode", mode)
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
    # A real edit first, in the GUI instance (GIMP keeps its arguments as the dialog's last values).
    status = run(image, layer, Gimp.RunMode.NONINTERACTIVE, **models())
    say("non-interactive edit ->", status.value_nick)
    if status != Gimp.PDBStatusType.SUCCESS:
        raise AssertionError("the edit failed: %s" % status.value_nick)
    status = run(image, layer, Gimp.RunMode.INTERACTIVE)
    say("dialog run ->", status.value_nick)
    if status != Gimp.PDBStatusType.CANCEL:
        raise AssertionError("the dialog was not answered Cancel: %s" % status.value_nick)
    shots = sorted(os.listdir(SHOTS))
    say("screenshots", shots)
    if "gimp-dialog.png" not in shots:
        raise AssertionError("no screenshot of the dialog in %s" % SHOTS)
    say("OK gimp-gui")


try:
    main()
except Exception as e:
    say("FAILED", repr(e))
    raise
