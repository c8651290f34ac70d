#!/usr/bin/env python3
"""CLIPShape for GIMP 3: text-driven shape editing of the selection (or the layer).

Filters › Generic › CLIPShape… learns a weight shift of a StyleGAN2 generator that moves the
picture toward a prompt ("face with big nose") and adds a layer group named after the prompt
with one layer per strength ("face with big nose k=+1.5"), in one undo step. The learnt edit is
saved into the edit library and can be applied to other pictures ("Apply saved edit").

Procedure `plug-in-clipshape`, also callable non-interactively (scripts, batch mode) with the
same arguments. Host glue only: the work is done by clipshape_logic / clipshape_ctypes (shared
with the Krita plug-in), installed next to this file with libclipshape.so by install/plugins.sh.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

import clipshape_logic as logic  # noqa: E402

PROC_NAME = "plug-in-clipshape"
MODELS_PROC = "plug-in-clipshape-models"   # Filters › Generic › CLIPShape Models…
RESPONSE_DOWNLOAD = 1
PIXEL_FORMAT = "R'G'B'A u8"   # = the library's RGBA8
RW = GObject.ParamFlags.READWRITE
MODEL_FILES = "files"         # model-set choice: only the files given under Advanced
DEVICES = (("auto", "Automatic (GPU when present)"), ("cpu", "CPU"), ("cuda", "GPU (CUDA)"))
ADVANCED = ["align", "layer", "lambda2", "seed", "device", "models-dir", "generator-file",
            "clip-file", "vocab-file", "face-detector-dir"]
STRING_ARGS = ["prompt", "strengths", "layer"]
MAIN = ["model-set", "prompt", "strengths", "steps", "paste", "saved-edit", "library-dir",
        "save-edit", "fit-to-frame"]
PASTE = (("warp", "Move the picture's own pixels (keeps the person)"),
         ("changes", "The model's picture, where the edit changes it"),
         ("region", "The whole face or selection, feathered"),
         ("frame", "The model's whole frame, opaque"))
ADVANCED_LABEL = "Ad_vanced"   # the expander of ADVANCED
ALIGN = (("auto", "Find and align the face for face models"), ("face", "Find and align a face"),
         ("none", "Use the selection as it is"))


def _choice(items):
    choice = Gimp.Choice.new()
    for i, (nick, label) in enumerate(items):
        choice.add(nick, i, label, "")
    return choice


def _file_path(value):
    return value.get_path() if value is not None else None


class GimpLayerSource(logic.PixelSource):
    """The drawable's pixels through its Gegl buffer, in image coordinates."""

    fmt = "RGBA8"

    def __init__(self, image, drawable):
        _, self.ox, self.oy = drawable.get_offsets()
        layer_box = logic.Box(self.ox, self.oy, drawable.get_width(), drawable.get_height())
        self.bounds = layer_box.intersect(logic.Box(0, 0, image.get_width(), image.get_height()))
        self.drawable = drawable

    def selection(self, image):
        """The selection's bounding box in image coordinates, or None without a selection."""
        if Gimp.Selection.is_empty(image):
            return None
        non_empty, x, y, w, h = self.drawable.mask_intersect()
        if not non_empty:
            raise logic.RequestError("the selection does not overlap the layer")
        return logic.Box(x + self.ox, y + self.oy, w, h)

    def read(self, box):
        rect = Gegl.Rectangle.new(box.x - self.ox, box.y - self.oy, box.width, box.height)
        data = self.drawable.get_buffer().get(rect, 1.0, PIXEL_FORMAT, Gegl.AbyssPolicy.CLAMP)
        return bytes(data)


def insert_result(image, drawable, result):
    """The group "<prompt>" above the drawable, one RGBA layer per strength, one undo step."""
    image.undo_group_start()
    try:
        group = Gimp.GroupLayer.new(image, result.group_name)
        parent = drawable.get_parent()
        image.insert_layer(group, parent, image.get_item_position(drawable))
        for position, r in enumerate(result.layers):
            layer = Gimp.Layer.new(image, r.name, r.width, r.height, Gimp.ImageType.RGBA_IMAGE,
                                   100.0, Gimp.LayerMode.NORMAL)
            image.insert_layer(layer, group, position)
            layer.set_offsets(r.x, r.y)
            buffer = layer.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, r.width, r.height), PIXEL_FORMAT, r.data)
            buffer.flush()
            layer.update(0, 0, r.width, r.height)
    finally:
        image.undo_group_end()
    return group


def requests_from_config(config):
    """The procedure's arguments → (ModelChoice, EditRequest); RequestError names a bad one."""
    g = config.get_property
    model_set = g("model-set")
    model = logic.ModelChoice(
        set_name=None if model_set == MODEL_FILES else model_set,
        models_dir=_file_path(g("models-dir")),
        generator=_file_path(g("generator-file")),
        clip=_file_path(g("clip-file")),
        vocab=_file_path(g("vocab-file")),
        device=g("device"),
        face_detector_dir=_file_path(g("face-detector-dir")),
    ).normalized()
    request = logic.EditRequest.from_values(
        prompt=g("prompt"), strengths=g("strengths"), steps=g("steps"), layer=g("layer"),
        lambda2=g("lambda2"), seed=g("seed"), saved_edit=_file_path(g("saved-edit")),
        library_dir=_file_path(g("library-dir")), save_edit=g("save-edit"),
        fit_to_frame=g("fit-to-frame"), paste=g("paste"), align=g("align"))
    return model, request


def edit_image(image, drawable, model, request, progress=None):
    """Runs the edit on the drawable (its selection) and inserts the layers → EditResult."""
    source = GimpLayerSource(image, drawable)
    job = logic.EditJob(model, request, source, source.selection(image))
    try:
        result = job.run(progress)
    finally:
        job.contexts.close()
    insert_result(image, drawable, result)
    Gimp.displays_flush()
    return result


GUI_TEST_SHOT = "CLIPSHAPE_GUI_TEST_SHOT"


def gui_test_hook(dialog, name, answer=None):
    """The GUI smoke test's hook (install/host-tests.sh): with CLIPSHAPE_GUI_TEST_SHOT=DIR set,
    once ``dialog`` has been shown, its window is saved to DIR/<name>.png and the dialog is
    answered ``answer`` (default Cancel). Does nothing without the variable."""
    shot_dir = os.environ.get(GUI_TEST_SHOT)
    if not shot_dir:
        return
    gi.require_version("Gdk", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gdk, Gtk

    def shoot():
        window = dialog.get_window()
        if window is None or not dialog.get_mapped():
            return True                       # not on screen yet: try again
        pixbuf = Gdk.pixbuf_get_from_window(window, 0, 0, window.get_width(),
                                            window.get_height())
        pixbuf.savev(os.path.join(shot_dir, name + ".png"), "png", [], [])
        print("CLIPSHAPE-GUI-TEST shot %s %dx%d" % (name, pixbuf.get_width(),
                                                    pixbuf.get_height()), flush=True)
        dialog.response(Gtk.ResponseType.CANCEL if answer is None else answer)
        return False

    GLib.timeout_add(2000, shoot)


def models_dialog(set_name, models_dir=None, continue_when_done=False):
    """The model sets' status, the licences of what ``set_name`` still needs, Download with a
    progress bar ("MB done / total, MB/s") and Cancel. The download runs on a worker thread
    (clipshape_logic.ModelDownload), polled from GLib. With ``continue_when_done`` (a run found
    its set missing) the dialog closes by itself once the set is complete. → True when
    ``set_name`` is complete as the dialog closes."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk
    GimpUi.init("clipshape")
    dialog = GimpUi.Dialog(title="CLIPShape Models", role="clipshape-models")
    close = dialog.add_button("_Close", Gtk.ResponseType.CLOSE)
    download = dialog.add_button("_Download", RESPONSE_DOWNLOAD)
    area = dialog.get_content_area()
    area.set_spacing(8)
    area.set_border_width(12)
    sets_label = Gtk.Label(xalign=0)
    licences = Gtk.Label(xalign=0, wrap=True, max_width_chars=72, selectable=True)
    bar = Gtk.ProgressBar(show_text=True)
    for widget in (sets_label, licences, bar):
        area.pack_start(widget, False, False, 0)
    label = logic.SET_LABELS.get(set_name, set_name)
    job = {"download": None}

    def refresh():
        try:
            sets = logic.model_sets(models_dir)
        except Exception as e:
            sets_label.set_text(logic.error_text(e))
            download.set_sensitive(False)
            return False
        sets_label.set_text("\n".join(logic.set_status(m) for m in sets.values()))
        wanted = sets.get(set_name)
        missing = wanted is not None and not wanted.complete
        download.set_sensitive(missing)
        download.set_label("_Download %s (%s)" % (label, logic.format_mb(
            wanted.download_bytes)) if missing else "_Download")
        licences.set_text(("Licences of the files to download:\n" + logic.licence_text(wanted))
                          if missing else "")
        return wanted is not None and wanted.complete

    def poll():
        d = job["download"]
        status = d.status()
        bar.set_fraction(status.fraction)
        bar.set_text(status.text or " ")
        if d.running:
            return True
        d.wait()
        job["download"] = None
        close.set_label("_Close")
        if refresh() and continue_when_done:
            dialog.response(Gtk.ResponseType.OK)
        else:
            gui_test_hook(dialog, "gimp-models-done", Gtk.ResponseType.CLOSE)
        return False

    refresh()
    dialog.show_all()
    gui_test_hook(dialog, "gimp-models", RESPONSE_DOWNLOAD)
    while True:
        response = dialog.run()
        d = job["download"]
        if response == RESPONSE_DOWNLOAD and d is None:
            d = job["download"] = logic.ModelDownload(set_name, models_dir)
            d.start()
            download.set_sensitive(False)
            close.set_label("_Cancel")
            GLib.timeout_add(100, poll)
            continue
        if d is not None:                 # Cancel (or the window closed) while downloading
            d.cancel()
            if response == Gtk.ResponseType.CLOSE:
                continue                  # poll() shows "cancelled" and re-enables Download
            d.wait(30)
        break
    complete = refresh()
    dialog.destroy()
    return complete


def show_dialog(procedure, config):
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi
    GimpUi.init("clipshape")
    # GIMP hands an empty string argument back from its saved last values as NULL, which the
    # dialog's text entry refuses (Gtk-CRITICAL gtk_entry_buffer_set_text: 'chars != NULL').
    for name in STRING_ARGS:
        if config.get_property(name) is None:
            config.set_property(name, "")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "CLIPShape")
    dialog.fill_box("advanced-box", ADVANCED)
    dialog.get_label("advanced-label", ADVANCED_LABEL, False, True)
    dialog.fill_expander("advanced", "advanced-label", False, "advanced-box")
    dialog.fill(MAIN + ["advanced"])
    gui_test_hook(dialog, "gimp-dialog")
    ok = dialog.run()
    dialog.destroy()
    return ok


class ClipShape(Gimp.PlugIn):

    def do_query_procedures(self):
        return [PROC_NAME, MODELS_PROC]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        if name == MODELS_PROC:
            return self.create_models_procedure(name)
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        proc.set_image_types("RGB*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        proc.set_menu_label("CLIPShape…")
        proc.add_menu_path("<Image>/Filters/Generic")
        proc.set_documentation(
            "Edit the shape of a face, car or horse from a text prompt",
            "Inverts the selection (or the layer) into StyleGAN2 with e4e, learns a generator "
            "weight shift that CLIP finds closer to the prompt, and adds a layer group with "
            "the edit at each strength. The learnt edit is saved into the edit library.",
            name)
        proc.set_attribution("libclipshape", "libclipshape authors", "2025")
        proc.add_choice_argument("model-set", "_Model set", "Model set of the model store, or "
                                 "'files' for the files under Advanced",
                                 _choice([("ffhq", "Faces (FFHQ)"), ("car", "Cars"),
                                          ("horse", "Horses"),
                                          (MODEL_FILES, "Files given under Advanced")]),
                                 "ffhq", RW)
        proc.add_string_argument("prompt", "_Prompt", "What the edit should look like, e.g. "
                                 "'face with big nose' (may stay empty with a saved edit)", "",
                                 RW)
        proc.add_string_argument("strengths", "Stren_gths", "Comma-separated strengths k, one "
                                 "layer each", logic.DEFAULT_STRENGTHS, RW)
        proc.add_int_argument("steps", "S_teps", "Optimisation steps", 1, logic.MAX_STEPS,
                              logic.DEFAULT_STEPS, RW)
        proc.add_file_argument("saved-edit", "Apply saved _edit", "A saved edit (.safetensors) "
                               "to apply instead of learning one", Gimp.FileChooserAction.OPEN,
                               True, None, RW)
        proc.add_file_argument("library-dir", "Edit l_ibrary", "Folder where learnt edits are "
                               "saved (default ~/.local/share/clipshape/edits)",
                               Gimp.FileChooserAction.SELECT_FOLDER, True, None, RW)
        proc.add_boolean_argument("save-edit", "Save the lear_nt edit", "Save the learnt edit "
                                  "into the edit library", True, RW)
        proc.add_choice_argument("paste", "Paste _back", "How the results go onto the picture",
                                 _choice(PASTE), "warp", RW)
        proc.add_choice_argument("align", "_Align", "How the picture is prepared for the model",
                                 _choice(ALIGN), "auto", RW)
        proc.add_boolean_argument("fit-to-frame", "Fit the bo_x to the model's frame",
                                  "Grow the selection box to the model's aspect ratio", True, RW)
        proc.add_string_argument("layer", "Generator la_yer", "Layer whose weight is shifted, "
                                 "e.g. convs.3; convs.3,convs.5 learns both together; auto "
                                 "picks by a short probe (empty = the model set's default)", "", RW)
        proc.add_double_argument("lambda2", "λ_2", "Weight of the shift's norm (negative = the "
                                 "model set's default)", -1.0, 10.0, -1.0, RW)
        proc.add_int_argument("seed", "See_d", "Seed of the optimisation", 0, 2 ** 31 - 1, 0, RW)
        proc.add_choice_argument("device", "R_un on", "Where the models run",
                                 _choice(DEVICES), "auto", RW)
        proc.add_file_argument("models-dir", "Model store (do_wnloads)", "Model store folder "
                               "(default $CLIPSHAPE_MODELS or ~/.local/share/clipshape/models)",
                               Gimp.FileChooserAction.SELECT_FOLDER, True, None, RW)
        proc.add_file_argument("generator-file", "e_4e / generator file", "Overrides the set's "
                               "e4e checkpoint", Gimp.FileChooserAction.OPEN, True, None, RW)
        proc.add_file_argument("clip-file", "CLIP chec_kpoint", "Overrides the set's CLIP model",
                               Gimp.FileChooserAction.OPEN, True, None, RW)
        proc.add_file_argument("vocab-file", "CLIP tokeni_zer vocab", "Overrides the set's BPE "
                               "vocab", Gimp.FileChooserAction.OPEN, True, None, RW)
        proc.add_file_argument("face-detector-dir", "_Face detector folder", "Folder with "
                               "MTCNN's pnet.pt, rnet.pt, onet.pt (default: the set's)",
                               Gimp.FileChooserAction.SELECT_FOLDER, True, None, RW)
        return proc

    def create_models_procedure(self, name):
        proc = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run_models, None)
        proc.set_menu_label("CLIPShape Models…")
        proc.add_menu_path("<Image>/Filters/Generic")
        proc.set_documentation(
            "Download the model sets of CLIPShape",
            "Shows each model set's status (ready, or the size still to download) and the "
            "licences, and downloads a set with progress and cancel. Non-interactively, "
            "downloads the set.", name)
        proc.set_attribution("libclipshape", "libclipshape authors", "2025")
        proc.add_enum_argument("run-mode", "Run mode", "The run mode", Gimp.RunMode,
                               Gimp.RunMode.INTERACTIVE, RW)
        proc.add_choice_argument("model-set", "_Model set", "The model set to download",
                                 _choice([(k, logic.SET_LABELS[k]) for k in logic.KNOWN_SETS]),
                                 logic.DEFAULT_SET, RW)
        proc.add_file_argument("models-dir", "Model store (do_wnloads)", "Model store folder "
                               "(default $CLIPSHAPE_MODELS or ~/.local/share/clipshape/models)",
                               Gimp.FileChooserAction.SELECT_FOLDER, True, None, RW)
        return proc

    def run_models(self, procedure, config, run_data):
        set_name = config.get_property("model-set")
        models_dir = _file_path(config.get_property("models-dir"))
        if config.get_property("run-mode") == Gimp.RunMode.INTERACTIVE:
            models_dialog(set_name, models_dir)
            return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)
        Gimp.progress_init("CLIPShape: downloading %s" % set_name)

        def progress(status):
            Gimp.progress_set_text(status.text)
            Gimp.progress_update(status.fraction)

        status = logic.ModelDownload(set_name, models_dir, progress).run()
        Gimp.progress_end()
        if status.state != "done":
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error("CLIPShape: " + status.text))
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        try:
            if len(drawables) != 1:
                raise logic.RequestError("select exactly one layer (%d are selected)"
                                         % len(drawables))
            model, request = requests_from_config(config)
            if (run_mode == Gimp.RunMode.INTERACTIVE and model.set_name
                    and model.missing_files() and not (model.generator and model.clip
                                                       and model.vocab)):
                if not models_dialog(model.set_name, model.models_dir, True):
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            Gimp.progress_init("CLIPShape")

            def progress(fraction, text):
                Gimp.progress_set_text(text)
                Gimp.progress_update(min(1.0, max(0.0, fraction)))

            result = edit_image(image, drawables[0], model, request, progress)
            Gimp.progress_end()
            if run_mode == Gimp.RunMode.INTERACTIVE and result.shift_path:
                Gimp.message("CLIPShape: " + result.summary())
        except Exception as e:  # every failure becomes GIMP's error message, no traceback
            Gimp.progress_end()
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error("CLIPShape: " + logic.error_text(e)))
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


if __name__ == "__main__":
    Gimp.main(ClipShape.__gtype__, sys.argv)
