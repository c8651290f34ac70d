#!/usr/bin/env python3
"""CLIPShape for GIMP 3: text-driven shape editing of the selection (or the layer).

Filters › Generic › CLIPShape… learns a weight shift of a StyleGAN2 generator that moves the
picture toward a prompt ("face with big nose") and adds a layer group named after the prompt
with one layer per strength ("k=+1.5 face with big nose", the strongest on top and the only one
shown), in one undo step. After an interactive run that moved the picture's own pixels, a
Strength dialog moves the photo live along a slider and keeps any strength as a layer. The
learnt edit is saved into the edit library and can be applied to other pictures ("Apply saved
edit"). Filters › Generic › CLIPShape Models… downloads the model sets or registers model files
the user already has.

Procedure `plug-in-clipshape`, also callable non-interactively (scripts, batch mode) with the
same arguments. Host glue only: the work is done by clipshape_logic / clipshape_ctypes (shared
with the Krita plug-in), installed next to this file with libclipshape.so by install/plugins.sh.
"""

import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402

import clipshape_logic as logic  # noqa: E402

PROC_NAME = "plug-in-clipshape"
MODELS_PROC = "plug-in-clipshape-models"   # Filters › Generic › CLIPShape Models…
RESPONSE_DOWNLOAD = 1
RESPONSE_ADD = 2
RESPONSE_KEEP = 3
PIXEL_FORMAT = "R'G'B'A u8"   # = the library's RGBA8
RW = GObject.ParamFlags.READWRITE
MODEL_FILES = "files"         # model-set choice: only the files given under Advanced
DEVICES = (("auto", "Automatic (GPU when present)"), ("cpu", "CPU"), ("cuda", "GPU (CUDA)"))
METHOD = ["align", "face", "keep-rest", "layer", "also", "lambda2", "seed", "optimize-size",
          "device"]
FILES = ["models-dir", "generator-file", "clip-file", "vocab-file", "face-detector-dir"]
ADVANCED = METHOD + FILES
STRING_ARGS = ["prompt", "strengths", "layer", "also", "lambda2"]
MAIN = ["model-set", "prompt", "strengths", "steps", "paste", "saved-edit", "library-dir",
        "save-edit", "fit-to-frame"]
PASTE = (("warp", "Move the picture's own pixels (keeps the person)"),
         ("changes", "The model's picture, where the edit changes it"),
         ("region", "The whole face or selection, feathered"),
         ("frame", "The model's whole frame, opaque"))
ADVANCED_LABEL = "Ad_vanced"   # the expander of ADVANCED
ALIGN = (("auto", "Find and align the face for face models"), ("face", "Find and align a face"),
         ("none", "Use the selection as it is"))
LAYER_EXAMPLE = "e.g. convs.3, convs.3,convs.5 or auto"
# What each file argument's chooser lists first ("All files" is always offered too).
FILE_FILTERS = {
    "saved-edit": ("Saved edits (*.safetensors)", ["*.safetensors"]),
    "generator-file": ("e4e or generator checkpoints (*.pt, *.pth, *.safetensors)",
                       ["*.pt", "*.pth", "*.safetensors"]),
    "clip-file": ("CLIP checkpoints (*.pt)", ["*.pt"]),
    "vocab-file": ("CLIP tokenizer vocab (*.txt.gz)", ["*.txt.gz"]),
}
MODEL_FILE_FILTER = ("Model files (*.pt, *.pth, *.safetensors, *.txt.gz)",
                     ["*.pt", "*.pth", "*.safetensors", "*.txt.gz"])
SETTINGS_FILE = "clipshape-dialog.json"   # in GIMP's profile folder (Gimp.directory())
ADVANCED_OPEN = "_advanced-open"          # the settings' key of the expander's state
PREVIEW_PREFIX = "preview "               # the strength slider's layer: "preview k=+1.2 …"
ERROR_COLOUR = "#c01c28"

# The library's and the logic's words for things the user sets, as GIMP's dialogs call them
# (the library's messages are written for its command line).
GIMP_WORDS = [
    (re.compile(r"--mtcnn DIR"), "the Face detector folder under Advanced"),
    (re.compile(r"(?:run )?`clipshape models add [^`]*`"),
     "“Use a file I already have…” of Filters › Generic › CLIPShape Models…"),
    (re.compile(r"`clipshape models fetch [^`]*`"),
     "Download in Filters › Generic › CLIPShape Models…"),
    (re.compile(r"under Models \(its Download button\)"),
     "with Download in Filters › Generic › CLIPShape Models…"),
    (re.compile(r"Set CLIPSHAPE_MODELS to use another directory"),
     "Choose another Model store under Advanced to use another folder"),
    (re.compile(r"^generator file not found"), "e4e / generator file not found"),
    (re.compile(r"^vocab file not found"), "CLIP tokenizer vocab not found"),
    (re.compile(r"^learning size:"), "Learning side:"),
    (re.compile(r"^face:"), "Which face:"),
    (re.compile(r"^second prompt:"), "Joint second prompt:"),
]


def gimp_words(text):
    """``text`` with the command line's flags and commands replaced by the dialogs' fields."""
    for pattern, words in GIMP_WORDS:
        text = pattern.sub(words, text)
    return text


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


def _new_layer(image, r, name=None):
    return Gimp.Layer.new(image, name or r.name, r.width, r.height, Gimp.ImageType.RGBA_IMAGE,
                          100.0, Gimp.LayerMode.NORMAL)


def _write_pixels(layer, r):
    """A LayerResult's place and pixels into ``layer`` (inserted, of the result's size)."""
    layer.set_offsets(r.x, r.y)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, r.width, r.height), PIXEL_FORMAT, r.data)
    buffer.flush()
    layer.update(0, 0, r.width, r.height)


def insert_result(image, drawable, result):
    """The group "<prompt>" above the drawable with the result's layers in the result's order
    (top first: the strongest) and only the one the result shows visible; one undo step."""
    image.undo_group_start()
    try:
        group = Gimp.GroupLayer.new(image, result.group_name)
        parent = drawable.get_parent()
        image.insert_layer(group, parent, _result_position(image, drawable))
        for position, r in enumerate(result.layers):
            layer = _new_layer(image, r)
            image.insert_layer(layer, group, position)
            layer.set_visible(r.visible)
            _write_pixels(layer, r)
    finally:
        image.undo_group_end()
    return group


def _result_position(image, drawable):
    """Where a new result goes among the drawable's siblings: above the drawable and above the
    earlier results stacked right on it (top first: a smaller position is higher)."""
    parent = drawable.get_parent()
    siblings = parent.get_children() if parent is not None else image.get_layers()
    position = image.get_item_position(drawable)
    while position > 0:
        above = siblings[position - 1]
        if not (above.is_group() and logic.is_result_group(
                c.get_name() for c in above.get_children())):
            break
        position -= 1
    return position


def keep_selected(image, drawable):
    """The user's layer stays the selected one (GIMP selects a newly inserted layer), so the
    next run (or Filters › Repeat) edits the photo again, not the result."""
    image.set_selected_layers([drawable])


def _lambda2(text):
    """The λ2 field: empty = the model set's default (-1 for the logic), else a number ≥ 0."""
    text = (text or "").strip()
    if not text:
        return -1.0
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise logic.RequestError("λ2: %r is not a number (leave it empty for the model set's "
                                 "default)" % text) from None
    if not 0 <= value <= 10:
        raise logic.RequestError("λ2: %s is not within 0..10 (leave it empty for the model set's "
                                 "default)" % text)
    return value


def model_from_config(config):
    """The procedure's model arguments → a ModelChoice."""
    g = config.get_property
    model_set = g("model-set")
    return logic.ModelChoice(
        set_name=None if model_set == MODEL_FILES else model_set,
        models_dir=_file_path(g("models-dir")),
        generator=_file_path(g("generator-file")),
        clip=_file_path(g("clip-file")),
        vocab=_file_path(g("vocab-file")),
        device=g("device"),
        face_detector_dir=_file_path(g("face-detector-dir")),
    ).normalized()


def requests_from_config(config):
    """The procedure's arguments → (ModelChoice, EditRequest); RequestError names a bad one."""
    g = config.get_property
    model = model_from_config(config)
    request = logic.EditRequest.from_values(
        prompt=g("prompt"), strengths=g("strengths"), steps=g("steps"), layer=g("layer"),
        lambda2=_lambda2(g("lambda2")), seed=g("seed"), saved_edit=_file_path(g("saved-edit")),
        library_dir=_file_path(g("library-dir")), save_edit=g("save-edit"),
        fit_to_frame=g("fit-to-frame"), paste=g("paste"), align=g("align"), face=g("face"),
        also=g("also"), optimize_size=g("optimize-size"), keep_rest=g("keep-rest"))
    return model, request


def needs_download(model):
    """Whether ``model`` names a store set whose files are not all there (and are not all
    given as files)."""
    return bool(model.set_name and not (model.generator and model.clip and model.vocab)
                and model.missing_files())


def check_run(config, drawables, dialog=None):
    """Everything that can be said about a run before it starts → (ModelChoice, EditRequest).
    With ``dialog`` (interactive), a model set still to download opens CLIPShape Models over
    it; closing that without the set is a RequestError, so the dialog stays with its values."""
    if len(drawables) != 1:
        raise logic.RequestError("select exactly one layer (%d are selected)" % len(drawables))
    model, request = requests_from_config(config)
    if dialog is not None and needs_download(model):
        if not models_dialog(model.set_name, model.models_dir, True, parent=dialog):
            raise logic.RequestError(
                "%s is not downloaded yet: press OK to open CLIPShape Models again, or choose "
                "\"Files given under Advanced\" as the Model set and give the files there"
                % logic.SET_LABELS.get(model.set_name, model.set_name))
    return model, request


def edit_image(image, drawable, model, request, progress=None, window=None):
    """Runs the edit on the drawable (its selection) and inserts the layers
    → (EditResult, the group). ``window`` (a LearningWindow, interactive runs) shows the
    picture while it learns and cancels the job."""
    source = GimpLayerSource(image, drawable)
    job = logic.EditJob(model, request, source, source.selection(image))
    preview = None
    if window is not None:
        window.job = job
        preview = window.picture
    try:
        result = job.run(progress, preview)
    finally:
        job.contexts.close()
    group = insert_result(image, drawable, result)
    keep_selected(image, drawable)
    Gimp.displays_flush()
    return result, group


# ───────────────────────────── choosing the face ─────────────────────────────

FACE_THUMB = 64         # px: a face in the faces list and in the Strength dialog
FACE_THUMB_SMALL = 30   # px: the chosen face beside the dialog's "Which face" field


def find_faces(config, image, drawables):
    """"Find faces…": every face the dialog's current model choice finds in the layer
    → [logic.FaceChoice] (1 = the most certain); RequestError says why there is none."""
    if len(drawables) != 1:
        raise logic.RequestError("select exactly one layer (%d are selected)" % len(drawables))
    source = GimpLayerSource(image, drawables[0])
    contexts = logic.ContextCache()
    try:
        faces = logic.find_faces(model_from_config(config), source, contexts)
    finally:
        contexts.close()
    if not faces:
        raise logic.RequestError("Which face: no face found in the layer (leave it at 0 and "
                                 "select the part to edit, with Align set to use the "
                                 "selection as it is)")
    return faces


def face_pixbuf(choice, side=FACE_THUMB):
    """A FaceChoice's pixels (RGBA8) as a GdkPixbuf fitting ``side`` px, or None without
    pixels."""
    if choice is None:
        return None
    w, h = choice.box.width, choice.box.height
    if w <= 0 or h <= 0 or choice.fmt != "RGBA8" or len(choice.crop) < w * h * 4:
        return None
    gi.require_version("GdkPixbuf", "2.0")
    from gi.repository import GdkPixbuf
    pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(bytes(choice.crop[:w * h * 4])),
                                             GdkPixbuf.Colorspace.RGB, True, 8, w, h, w * 4)
    scale = side / max(w, h)
    return pixbuf.scale_simple(max(1, round(w * scale)), max(1, round(h * scale)),
                               GdkPixbuf.InterpType.BILINEAR)


def face_rows(faces, side=FACE_THUMB):
    """The faces list's rows: [(number, thumbnail pixbuf or None, text)], in the order found."""
    return [(f.number, face_pixbuf(f, side), "Face %s" % f.label()) for f in faces]


def choose_face(config, faces, number):
    """The faces list's answer (a face's number, or None) → the FaceChoice now in the
    dialog's "Which face" value, or None when nothing was chosen."""
    chosen = next((f for f in faces if f.number == number), None)
    if chosen is not None:
        config.set_property("face", chosen.number)
    return chosen


def _plugin_dialog(title, role, parent=None):
    """One of the plug-in's own dialogs (GIMP's UI initialised; over ``parent`` when given; its
    content spaced as all of them are) → (dialog, content area)."""
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi
    GimpUi.init("clipshape")
    dialog = GimpUi.Dialog(title=title, role=role)
    if parent is not None:
        dialog.set_transient_for(parent)
    area = dialog.get_content_area()
    area.set_spacing(8)
    area.set_border_width(12)
    return dialog, area


def faces_dialog(faces, parent=None):
    """A small list of the faces found, each its thumbnail and where it is; a click on one
    → its number, or None (Cancel)."""
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk
    dialog, area = _plugin_dialog("CLIPShape: faces in the layer", "clipshape-faces", parent)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    area.pack_start(Gtk.Label(label="%d face%s found (1 is the most certain): click the one "
                              "to edit." % (len(faces), "" if len(faces) == 1 else "s"),
                              xalign=0), False, False, 0)
    rows = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
    for number, pixbuf, text in face_rows(faces):
        button = Gtk.Button()
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
        thumb = Gtk.Image()
        thumb.set_size_request(FACE_THUMB, FACE_THUMB)
        if pixbuf is not None:
            thumb.set_from_pixbuf(pixbuf)
        row.pack_start(thumb, False, False, 0)
        row.pack_start(Gtk.Label(label=text, xalign=0), True, True, 0)
        button.add(row)
        button.connect("clicked", lambda _button, n=number: dialog.response(n))
        rows.pack_start(button, False, False, 0)
    # Many faces scroll instead of growing the dialog past the screen.
    scroller = Gtk.ScrolledWindow(hscrollbar_policy=Gtk.PolicyType.NEVER,
                                  vscrollbar_policy=Gtk.PolicyType.AUTOMATIC,
                                  propagate_natural_height=True, max_content_height=420)
    scroller.add(rows)
    area.pack_start(scroller, True, True, 0)
    dialog.show_all()

    def test_place():   # no window manager in the test: beside the dialog, not over it
        screen = dialog.get_screen()
        dialog.move(screen.get_width() - dialog.get_allocated_width(),
                    screen.get_height() - dialog.get_allocated_height())

    gui_test_hook(dialog, "gimp-faces", faces[0].number, prepare=test_place)
    response = dialog.run()
    dialog.destroy()
    numbers = [f.number for f in faces]
    return response if isinstance(response, int) and response in numbers else None


def _face_chooser(dialog, config, message, find, Gtk):
    """"Find faces…" and the chosen face's thumbnail beside the "Which face" field (inside its
    row when GIMP made it a grid, else under it) → the button."""
    button = Gtk.Button(label="Find faces…")
    button.set_tooltip_text("Find the faces in the layer with the model set chosen, and choose "
                            "the one to edit from a list")
    thumb = Gtk.Image()
    thumb.set_no_show_all(True)
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    row.pack_start(button, False, False, 0)
    row.pack_start(thumb, False, False, 0)
    shown = {"number": None}

    def pump():
        while Gtk.events_pending():
            Gtk.main_iteration_do(False)

    def on_find(_button):
        _show_text(message, "Looking for faces (loading the models may take a moment)…")
        pump()
        try:
            faces = find()
        except Exception as e:
            _show_error(message, gimp_words(logic.error_text(e)))
            GLib.idle_add(_fit, dialog)
            return
        _show_text(message, "")
        chosen = choose_face(config, faces, faces_dialog(faces, dialog))
        if os.environ.get(GUI_TEST_SHOT):
            print("CLIPSHAPE-GUI-TEST faces found: %s; chose %s"
                  % ([f.label() for f in faces], chosen.label() if chosen else None), flush=True)
        pixbuf = face_pixbuf(chosen, FACE_THUMB_SMALL)
        if pixbuf is not None:
            thumb.set_from_pixbuf(pixbuf)
            thumb.set_tooltip_text("Face " + chosen.label())
            shown["number"] = chosen.number
            thumb.show()
        GLib.idle_add(_fit, dialog)

    def on_face_changed(*_args):    # a number typed by hand: the thumbnail is no longer it
        if shown["number"] is not None and config.get_property("face") != shown["number"]:
            shown["number"] = None
            thumb.hide()

    button.connect("clicked", on_find)
    config.connect("notify::face", on_face_changed)
    field = dialog.get_widget("face", GObject.TYPE_NONE)
    if isinstance(field, getattr(Gtk, "Grid", ())):   # GimpLabelSpin: label, spin button
        field.attach(row, 2, 0, 1, 1)
        row.show_all()
        return button, None
    row.show_all()
    return button, row


# ───────────────────────────── the dialog's values ─────────────────────────────
# GIMP keeps a procedure's last values only after a run that succeeded; a value typed before an
# error or a Cancel would be lost. The plug-in keeps its own copy, written whenever the dialog
# closes and after every successful run (so it is never older than GIMP's), and puts it back
# into the dialog when it opens.

def settings_path():
    return os.path.join(Gimp.directory(), SETTINGS_FILE)


def dialog_values(config, names):
    """The arguments ``names`` as JSON-able values (files as their paths)."""
    out = {}
    for name in names:
        value = config.get_property(name)
        if hasattr(value, "get_path"):
            value = {"file": value.get_path()}
        elif isinstance(value, (bool, int, float, str)) or value is None:
            pass
        else:
            continue
        out[name] = value
    return out


def save_dialog_values(config, extra=None):
    """Writes the dialog's values atomically (a reader never sees half a file, and a failed
    write leaves the previous values); a failure to write is no reason to fail a run."""
    values = {k: v for k, v in load_dialog_values().items() if k.startswith("_")}
    values.update(dialog_values(config, MAIN + ADVANCED))
    values.update(extra or {})
    path = settings_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".clipshape-", suffix=".json",
                                   dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(values, f, indent=1, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def load_dialog_values():
    try:
        with open(settings_path(), encoding="utf-8") as f:
            values = json.load(f)
        return values if isinstance(values, dict) else {}
    except (OSError, ValueError):
        return {}


def restore_dialog_values(config, values):
    """Puts saved values back into ``config``; one that no longer fits (a choice or a range
    changed between versions) keeps the config's value."""
    for name in MAIN + ADVANCED:
        if name not in values:
            continue
        value = values[name]
        if isinstance(value, dict):
            path = value.get("file")
            value = Gio.File.new_for_path(path) if path else None
        try:
            config.set_property(name, value)
        except (TypeError, ValueError, OverflowError):
            pass


def _default_folders(config):
    """Folder arguments left empty show the folder that will be used, when it exists ("(None)"
    says nothing about where edits go)."""
    for name, folder in (("library-dir", logic.default_library_dir()),
                         ("models-dir", _store_dir())):
        if config.get_property(name) is None and folder and os.path.isdir(folder):
            config.set_property(name, Gio.File.new_for_path(folder))


def _store_dir(models_dir=None):
    try:
        return logic.store_dir(models_dir)
    except Exception:   # a library without cs_models_dir: the store's folder is not shown
        return ""


GUI_TEST_SHOT = "CLIPSHAPE_GUI_TEST_SHOT"


def shoot_now(dialog, name, pump):
    """The GUI tier's shot of a window that is not run as a dialog (the learning window):
    the whole screen, at once, after ``pump()`` has drawn it. Nothing without the variable."""
    shot_dir = os.environ.get(GUI_TEST_SHOT)
    if not shot_dir:
        return
    import time
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:   # mapped and drawn, with no main loop running
        pump()
        time.sleep(0.05)
    _save_screen(dialog, name, shot_dir)


def _save_screen(dialog, name, shot_dir):
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk
    root = Gdk.get_default_root_window()
    sw, sh = root.get_width(), root.get_height()
    window = dialog.get_window()
    _, x, y = window.get_origin()
    w, h = window.get_width(), window.get_height()
    pixbuf = Gdk.pixbuf_get_from_window(root, 0, 0, sw, sh)
    pixbuf.savev(os.path.join(shot_dir, name + ".png"), "png", [], [])
    print("CLIPSHAPE-GUI-TEST shot %s: screen %dx%d, dialog %dx%d at %d,%d"
          % (name, sw, sh, w, h, x, y), flush=True)
    if x < 0 or y < 0 or x + w > sw or y + h > sh:
        print("CLIPSHAPE-GUI-TEST %s: the dialog (%dx%d at %d,%d) does not fit the %dx%d "
              "screen" % (name, w, h, x, y, sw, sh), flush=True)


def _shot_taken(name):
    shot_dir = os.environ.get(GUI_TEST_SHOT)
    return bool(shot_dir) and os.path.exists(os.path.join(shot_dir, name + ".png"))


def gui_test_hook(dialog, name, answer=None, prepare=None):
    """The GUI smoke test's hook (install/host-tests.sh): with CLIPSHAPE_GUI_TEST_SHOT=DIR set,
    once ``dialog`` has been shown (and ``prepare()`` run and drawn), the whole screen is saved
    to DIR/<name>.png and the dialog is answered ``answer`` (default Cancel). A dialog whose
    window does not lie within the screen is reported ("does not fit"), which fails the test.
    Does nothing without the variable."""
    shot_dir = os.environ.get(GUI_TEST_SHOT)
    if not shot_dir:
        return
    gi.require_version("Gdk", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gdk, Gtk
    state = {"prepared": prepare is None}

    def shoot():
        window = dialog.get_window()
        if window is None or not dialog.get_mapped():
            return True                       # not on screen yet: try again
        if not state["prepared"]:
            prepare()
            state["prepared"] = True
            return True                       # shoot once it has been drawn
        root = Gdk.get_default_root_window()
        sw, sh = root.get_width(), root.get_height()
        # The pointer off the dialog: a tooltip would hide what the shot is for.
        pointer = Gdk.Display.get_default().get_default_seat().get_pointer()
        if pointer is not None:
            pointer.warp(root.get_screen(), sw - 1, sh - 1)
        _save_screen(dialog, name, shot_dir)
        dialog.response(Gtk.ResponseType.CANCEL if answer is None else answer)
        return False

    GLib.timeout_add(1500, shoot)


# ───────────────────────────── CLIPShape Models… ─────────────────────────────

def _wrapped_label(Gtk, Pango, chars=80, selectable=False):
    """A label that wraps (also inside long paths and URLs) instead of widening its dialog.
    Its narrowest is its widest: GTK sizes a window's height for its narrowest width, where a
    label wrapping into more lines left blank rows below the text."""
    label = Gtk.Label(xalign=0, wrap=True, max_width_chars=chars, width_chars=chars,
                      selectable=selectable)
    label.set_line_wrap_mode(Pango.WrapMode.WORD_CHAR)
    return label


def _show_error(label, text, more=""):
    """``text`` in red, then ``more`` (what to do about it) in the label's own colour."""
    markup = '<span foreground="%s">%s</span>' % (ERROR_COLOUR, GLib.markup_escape_text(text))
    if more:
        markup += "\n\n" + GLib.markup_escape_text(more)
    label.set_markup(markup)
    label.set_visible(bool(text))


def _fit(dialog):
    """Sizes ``dialog`` to what its contents ask for now: a window keeps the size it once had
    and does not grow for a longer message (GTK clamps this to the contents' minimum)."""
    dialog.resize(dialog.get_preferred_width()[1], dialog.get_preferred_height()[1])
    return False


def _show_text(label, text):
    label.set_text(text)
    label.set_visible(bool(text))


class ModelsStatus:
    """What the Models dialog says about ``set_name``: the sets' lines, the store's folder, the
    download button's label, the licences and what to do when the set is missing."""

    def __init__(self, set_name, models_dir=None):
        self.set_name, self.models_dir = set_name, models_dir
        self.error = ""
        self.store = _store_dir(models_dir)
        self.complete, self.missing, self.sets_text = False, False, ""
        self.download_label, self.licences, self.hint = "_Download", "", ""
        label = logic.SET_LABELS.get(set_name, set_name)
        try:
            sets = logic.model_sets(models_dir)
        except Exception as e:
            self.error = gimp_words(logic.error_text(e))
            return
        self.sets_text = "\n".join(logic.set_status(m) for m in sets.values())
        wanted = sets.get(set_name)
        if wanted is None:
            self.error = ("%s is not a model set of this store's manifest (it has %s)"
                          % (label, ", ".join(logic.SET_LABELS.get(n, n) for n in sets)))
            return
        self.complete = wanted.complete
        self.missing = not wanted.complete
        if self.missing:
            self.download_label = "_Download %s (%s)" % (label, logic.format_mb(
                wanted.download_bytes))
            self.licences = "Licences of the files to download:\n" + logic.licence_text(wanted)
            self.hint = ("Without a network: download the files elsewhere, then add each with "
                         "“Use a file I already have…”.")


def add_model_file(set_name, path, models_dir=None):
    """Registers a file the user has (copied into the store; theirs stays) → the message to
    show; a RequestError says why it could not."""
    stored = logic.add_model_file(set_name, path, models_dir)
    return "Added %s as a file of %s: %s" % (os.path.basename(path),
                                             logic.SET_LABELS.get(set_name, set_name), stored)


def download_text(status):
    """The progress bar's short text: the bar cannot wrap, so a failure's (long) reason goes
    to the dialog's message instead."""
    if status.state == "running" and not status.file and not status.done:
        return "Connecting to the download server…"
    if status.state == "failed":
        return "Download failed (see above)"
    return status.text or " "


def failure_guidance(set_name, models_dir=None):
    """After a failed download: what the set still lacks and from where, and what to do
    without a network (the library's guidance; the failure alone says nothing of it)."""
    try:
        return gimp_words(logic.missing_set_text(set_name, models_dir) or "")
    except Exception:   # the store cannot be read: the failure's reason alone
        return ""


def _choose_model_files(Gtk, parent, set_name):
    """The model files the user picks (several at once: a set has up to nine) → [path]."""
    chooser = Gtk.FileChooserDialog(title="Model files of %s you already have"
                                    % logic.SET_LABELS.get(set_name, set_name),
                                    transient_for=parent, action=Gtk.FileChooserAction.OPEN)
    chooser.add_buttons("_Cancel", Gtk.ResponseType.CANCEL, "_Add", Gtk.ResponseType.ACCEPT)
    chooser.set_select_multiple(True)
    _add_filters(Gtk, chooser, MODEL_FILE_FILTER)
    paths = []
    if chooser.run() == Gtk.ResponseType.ACCEPT:
        paths = list(chooser.get_filenames() or [])
    chooser.destroy()
    return paths


def models_dialog(set_name, models_dir=None, continue_when_done=False, parent=None):
    """The model sets' status, the store's folder, a set chooser, the licences of what the set
    still needs, Download with a progress bar ("MB done / total, MB/s") and Cancel, and "Use a
    file I already have…" (the file is copied into the store). The download runs on a worker
    thread (clipshape_logic.ModelDownload), polled from GLib. With ``continue_when_done`` (a run
    found its set missing) the set is fixed and the dialog closes by itself once the set is
    complete. → True when the chosen set is complete as the dialog closes."""
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk, Pango
    dialog, area = _plugin_dialog("CLIPShape Models", "clipshape-models", parent)
    add = dialog.add_button("_Use a file I already have…", RESPONSE_ADD)
    close = dialog.add_button("_Close", Gtk.ResponseType.CLOSE)
    download = dialog.add_button("_Download", RESPONSE_DOWNLOAD)
    chooser_row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=8)
    chooser_row.pack_start(Gtk.Label(label="Model set:"), False, False, 0)
    sets_combo = Gtk.ComboBoxText()
    for name in logic.KNOWN_SETS:
        sets_combo.append(name, logic.SET_LABELS.get(name, name))
    sets_combo.set_active_id(set_name)
    sets_combo.set_sensitive(not continue_when_done)   # a run waits for its own set
    chooser_row.pack_start(sets_combo, False, False, 0)
    store_label = _wrapped_label(Gtk, Pango)
    sets_label = Gtk.Label(xalign=0)
    licences = _wrapped_label(Gtk, Pango)
    message = _wrapped_label(Gtk, Pango, selectable=True)   # URLs and paths to copy
    # A failure holds the library's guidance (files, sizes, URLs): it scrolls rather than
    # pushing the dialog past the screen.
    scroller = Gtk.ScrolledWindow(hscrollbar_policy=Gtk.PolicyType.NEVER,
                                  vscrollbar_policy=Gtk.PolicyType.AUTOMATIC,
                                  propagate_natural_height=True, max_content_height=260)
    scroller.add(message)
    # Shown with a message only: empty, its scroller would still take room.
    message.set_no_show_all(True)
    scroller.set_no_show_all(True)
    message.connect("notify::visible", lambda *_: scroller.set_visible(message.get_visible()))
    bar = Gtk.ProgressBar(show_text=True)
    bar.set_text("")                    # not "0%" before any download
    for widget in (chooser_row, store_label, sets_label, licences, scroller, bar):
        area.pack_start(widget, False, False, 0)
    job = {"download": None, "set": set_name}

    def refresh(note=None):
        status = ModelsStatus(job["set"], models_dir)
        store_label.set_text("Model store: %s" % (status.store or models_dir or
                                                  "$CLIPSHAPE_MODELS or "
                                                  "~/.local/share/clipshape/models"))
        sets_label.set_text(status.sets_text)
        downloading = job["download"] is not None
        download.set_sensitive(status.missing and not downloading)
        add.set_sensitive(not downloading)
        download.set_label(status.download_label)
        _show_text(licences, "\n".join(t for t in (status.licences, status.hint) if t))
        if status.error:
            _show_error(message, status.error)
        elif note is not None:
            _show_text(message, note)
        GLib.idle_add(_fit, dialog)      # grown for a licence or an error, shrunk after
        return status.complete

    def on_set_changed(combo):
        if combo.get_active_id():
            job["set"] = combo.get_active_id()
            _show_text(message, "")
            refresh()

    sets_combo.connect("changed", on_set_changed)

    def poll():
        d = job["download"]
        status = d.status()
        if status.state == "running" and not status.file and not status.done:
            bar.pulse()
        else:
            bar.set_fraction(status.fraction)
        bar.set_text(download_text(status))
        if d.running:
            return True
        d.wait()
        job["download"] = None
        close.set_label("_Close")
        if status.state == "failed":
            refresh()
            _show_error(message, gimp_words(status.text),
                        failure_guidance(job["set"], models_dir))
        elif refresh() and continue_when_done:
            dialog.response(Gtk.ResponseType.OK)
            return False
        gui_test_hook(dialog, "gimp-models-offline" if status.state == "failed"
                      else "gimp-models-done", Gtk.ResponseType.CLOSE)
        return False

    refresh()
    dialog.show_all()
    refresh()                   # show_all shows the empty licences refresh() hid
    gui_test_hook(dialog, "gimp-models", RESPONSE_DOWNLOAD)
    while True:
        response = dialog.run()
        d = job["download"]
        if response == RESPONSE_ADD and d is None:
            added, failed = [], []
            for path in _choose_model_files(Gtk, dialog, job["set"]):
                try:     # one file that is none of the set's does not stop the others
                    added.append(add_model_file(job["set"], path, models_dir))
                except Exception as e:
                    failed.append(gimp_words(logic.error_text(e)))
            refresh("\n".join(added) if added else None)
            if failed:    # in red, with what was added all the same
                _show_error(message, "\n".join(failed + added))
                GLib.idle_add(_fit, dialog)
            continue
        if response == RESPONSE_DOWNLOAD and d is None:
            d = job["download"] = logic.ModelDownload(job["set"], models_dir)
            _show_text(message, "")
            bar.set_text("Connecting to the download server…")   # a resolver may take 10+ s
            bar.pulse()
            d.start()
            download.set_sensitive(False)
            add.set_sensitive(False)
            close.set_label("_Cancel")
            GLib.timeout_add(100, poll)
            continue
        if d is not None:                 # Cancel (or the window closed) while downloading
            d.cancel()
            if response == Gtk.ResponseType.CLOSE:
                continue                  # poll() shows "cancelled" and re-enables Download
            d.wait(30)
        break
    complete = ModelsStatus(job["set"], models_dir).complete
    dialog.destroy()
    return complete


# ───────────────────────────── the procedure's dialog ─────────────────────────────

def _add_filters(Gtk, chooser, spec):
    label, patterns = spec
    wanted = Gtk.FileFilter()
    wanted.set_name(label)
    for pattern in patterns:
        wanted.add_pattern(pattern)
    everything = Gtk.FileFilter()
    everything.set_name("All files")
    everything.add_pattern("*")
    chooser.add_filter(wanted)
    chooser.add_filter(everything)
    chooser.set_filter(wanted)


def _find(widget, test):
    """The first widget in ``widget``'s tree (itself included) for which ``test`` holds."""
    if test(widget):
        return widget
    get_children = getattr(widget, "get_children", None)
    for child in (get_children() if get_children else []):
        found = _find(child, test)
        if found is not None:
            return found
    return None


def _decorate(dialog, Gtk):
    """What GimpProcedureDialog's generated widgets lack: the layer's example as placeholder
    text, and the file choosers' filters. Must run before fill() (which reuses the widgets)."""
    entry = _find(dialog.get_widget("layer", GObject.TYPE_NONE),
                  lambda w: isinstance(w, Gtk.Entry))
    if entry is not None:
        entry.set_placeholder_text(LAYER_EXAMPLE)
    entry = _find(dialog.get_widget("lambda2", GObject.TYPE_NONE),
                  lambda w: isinstance(w, Gtk.Entry))
    if entry is not None:
        entry.set_placeholder_text("empty = the model set's default")
    for name, spec in FILE_FILTERS.items():
        chooser = _find(dialog.get_widget(name, GObject.TYPE_NONE),
                        lambda w: isinstance(w, Gtk.FileChooser))
        if chooser is not None:
            _add_filters(Gtk, chooser, spec)


def show_dialog(procedure, config, check=None, find=None):
    """The procedure's dialog → what ``check()`` returned for the values of OK, or None for
    Cancel. ``check`` runs while the dialog is still open: its RequestError (or any error) is
    shown in the dialog, which stays with every value for the user to fix. With ``find`` (→
    the layer's FaceChoices), "Find faces…" beside "Which face" lists the faces to choose."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk, Pango
    GimpUi.init("clipshape")
    saved = load_dialog_values()
    restore_dialog_values(config, saved)
    _default_folders(config)
    # GIMP hands an empty string argument back from its saved last values as NULL, which the
    # dialog's text entry refuses (Gtk-CRITICAL gtk_entry_buffer_set_text: 'chars != NULL').
    for name in STRING_ARGS:
        if config.get_property(name) is None:
            config.set_property(name, "")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "CLIPShape")
    message = _wrapped_label(Gtk, Pango, 90)
    message.set_no_show_all(True)
    dialog.get_content_area().pack_start(message, False, False, 0)   # above the fields
    _decorate(dialog, Gtk)
    find_button = below_face = None
    if find is not None:
        find_button, below_face = _face_chooser(dialog, config, message, find, Gtk)
    # Two columns: the main fields, and Advanced beside them (stacked, Advanced made the
    # dialog taller than a 768 px screen).
    dialog.fill_box("main-box", MAIN)
    advanced_box = dialog.fill_box("advanced-box", ADVANCED)
    if below_face is not None:
        advanced_box.pack_start(below_face, False, False, 0)
        advanced_box.reorder_child(below_face, ADVANCED.index("face") + 1)
    dialog.get_label("advanced-label", ADVANCED_LABEL, False, True)
    expander = dialog.fill_expander("advanced", "advanced-label", False, "advanced-box")
    expander.set_expanded(bool(saved.get(ADVANCED_OPEN)))
    expander.set_valign(Gtk.Align.START)

    # Opened after the dialog was shown, Advanced left the window 890 px tall on a 768 px
    # screen (the height it had grown to, not what the fields need).
    expander.connect("notify::expanded", lambda *_: GLib.idle_add(_fit, dialog))
    columns = dialog.fill_box("columns", ["main-box", "advanced"])
    columns.set_orientation(Gtk.Orientation.HORIZONTAL)
    columns.set_spacing(24)
    dialog.fill(["columns"])

    def test_prepare():
        expander.set_expanded(True)
        # The GUI tier's first dialog also lists the faces (its shot: gimp-faces).
        if find_button is not None and not _shot_taken("gimp-faces"):
            find_button.clicked()

    gui_test_hook(dialog, "gimp-dialog", Gtk.ResponseType.OK, prepare=test_prepare)
    checked = None
    while True:
        ok = dialog.run()
        save_dialog_values(config, {ADVANCED_OPEN: expander.get_expanded()})
        if not ok or check is None:
            checked = True if ok else None
            break
        try:
            checked = check(dialog)
            break
        except Exception as e:   # shown where the value is fixed, not after the dialog closed
            _show_error(message, gimp_words(logic.error_text(e)))
            message.show()
            GLib.idle_add(_fit, dialog)
            gui_test_hook(dialog, "gimp-dialog-error")
    dialog.destroy()
    return checked


# ───────────────────────────── while it learns ─────────────────────────────

class LearningWindow:
    """A small window while an interactive run works (a CPU edit takes minutes): the picture as
    the edit is being learnt (every logic.PREVIEW_EVERY steps), what is being done and the time
    left, and Cancel. The run blocks GIMP's plug-in loop, so each progress report lets GTK
    handle the window's events (drawing, the Cancel button)."""

    SIDE = 192   # px of the picture: the window stays small on a laptop's screen

    def __init__(self):
        gi.require_version("Gtk", "3.0")
        from gi.repository import Gtk, Pango
        self.Gtk = Gtk
        self.job = None
        self.pictures = 0
        self.dialog, area = _plugin_dialog("CLIPShape: learning", "clipshape-learning")
        self.dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        self.dialog.connect("response", self._response)
        self.image = Gtk.Image()
        self.image.set_size_request(self.SIDE, self.SIDE)
        self.bar = Gtk.ProgressBar(show_text=False)
        self.text = _wrapped_label(Gtk, Pango, 40)
        for widget in (self.image, self.bar, self.text):
            area.pack_start(widget, False, False, 0)
        self.dialog.show_all()
        self.pump()

    def _response(self, _dialog, response):
        if self.job is not None:
            self.text.set_text("Cancelling…")
            self.job.cancel()

    def pump(self):
        Gtk = self.Gtk
        while Gtk.events_pending():
            Gtk.main_iteration_do(False)

    def progress(self, fraction, text):
        self.bar.set_fraction(min(1.0, max(0.0, fraction)))
        self.text.set_text(text)
        self.pump()

    def picture(self, pic):
        gi.require_version("GdkPixbuf", "2.0")
        from gi.repository import GdkPixbuf
        pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(pic.data),
                                                 GdkPixbuf.Colorspace.RGB, True, 8,
                                                 pic.width, pic.height, pic.stride)
        scale = self.SIDE / max(pic.width, pic.height)
        if scale != 1:
            pixbuf = pixbuf.scale_simple(max(1, round(pic.width * scale)),
                                         max(1, round(pic.height * scale)),
                                         GdkPixbuf.InterpType.BILINEAR)
        self.image.set_from_pixbuf(pixbuf)
        self.pictures += 1
        self.pump()
        if self.pictures == 2:      # the GUI tier's shot: a picture that learning has moved
            shoot_now(self.dialog, "gimp-learning", self.pump)

    def close(self):
        self.dialog.destroy()
        self.pump()


# ───────────────────────────── the strength slider ─────────────────────────────

class StrengthPreview:
    """The strength slider's effect on the image: a preview layer on top of the result group
    showing the photo's own pixels moved to strength k (result.layer_at), the group's other
    layers hidden meanwhile; keep() adds the previewed strength as a layer of the group (one
    undo step); close() removes the preview and shows what was shown before.

    The preview is made with the image's undo frozen: dragging the slider would otherwise fill
    the undo history with steps nobody wants, and undoing them would leave a stale preview."""

    def __init__(self, image, group, result):
        self.image, self.group, self.result = image, group, result
        # (strength, layer) of the group's result layers, top first (descending strength).
        self.layers = list(zip([r.strength for r in result.layers], group.get_children()))
        self.layer = None
        self.strength = None
        self._hidden = []

    def _frozen(self, change):
        self.image.undo_freeze()
        try:
            return change()
        finally:
            self.image.undo_thaw()

    def _hide_results(self):
        for _, layer in self.layers:
            if layer.get_visible():
                layer.set_visible(False)
                self._hidden.append(layer)

    def _unhide_results(self):
        for layer in self._hidden:
            layer.set_visible(True)
        self._hidden = []

    def show(self, strength):
        """The preview at ``strength`` → its LayerResult."""
        r = self.result.layer_at(strength)

        def change():
            if self.layer is not None and (self.layer.get_width(),
                                           self.layer.get_height()) != (r.width, r.height):
                self.image.remove_layer(self.layer)
                self.layer = None
            if self.layer is None:
                self.layer = _new_layer(self.image, r, PREVIEW_PREFIX + r.name)
                self.image.insert_layer(self.layer, self.group, 0)
            else:
                self.layer.set_name(PREVIEW_PREFIX + r.name)
            _write_pixels(self.layer, r)
            self._hide_results()

        self._frozen(change)
        self.strength = r.strength
        Gimp.displays_flush()
        return r

    def keep(self):
        """The previewed strength as a layer of the group, in strength order and the one shown
        once the preview closes → that layer (the existing one for a strength already kept)."""
        if self.strength is None:
            return None
        k = self.strength
        same = [layer for s, layer in self.layers
                if logic.format_strength(s) == logic.format_strength(k)]
        r = None if same else self.result.layer_at(k)
        # The undo step must see the group as it is without the preview (positions and
        # visibilities it records are replayed by undo and redo after the preview is gone).
        self.close()
        self.image.undo_group_start()
        try:
            if same:
                layer = same[0]
            else:
                layer = _new_layer(self.image, r)
                above = sum(1 for s, _ in self.layers if s > k)
                self.image.insert_layer(layer, self.group, above)
                _write_pixels(layer, r)
                self.layers.insert(above, (k, layer))
            for _, other in self.layers:
                other.set_visible(other is layer)
        finally:
            self.image.undo_group_end()
        self.show(k)
        return layer

    def close(self):
        def change():
            if self.layer is not None:
                self.image.remove_layer(self.layer)
                self.layer = None
            self._unhide_results()

        self._frozen(change)
        Gimp.displays_flush()


def strength_dialog(image, group, result, face=None):
    """After an interactive run that moved the picture's own pixels: a slider over the
    strengths the edit can show, moving a preview in the image live; Keep adds the previewed
    strength as a layer, Close removes the preview. ``face`` (the edited face's FaceChoice)
    is shown beside the text that names it."""
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk, Pango
    lo, hi = result.strength_range()
    preview = StrengthPreview(image, group, result)
    shown = [r.strength for r in result.layers if r.visible]
    start = min(hi, max(lo, shown[0] if shown else hi))
    dialog, area = _plugin_dialog("CLIPShape: strength of \"%s\"" % result.group_name,
                                  "clipshape-strength")
    dialog.add_button("_Close", Gtk.ResponseType.CLOSE)
    dialog.add_button("_Keep as a layer", RESPONSE_KEEP)
    about = _wrapped_label(Gtk, Pango, 70)
    lines = [result.summary() + "."]
    lines.append(logic.STRENGTH_HELP + ".")
    about.set_text("\n".join(lines))
    pixbuf = face_pixbuf(face)
    if pixbuf is not None:       # the face that was edited, beside the text naming it
        thumb = Gtk.Image()
        thumb.set_from_pixbuf(pixbuf)
        thumb.set_tooltip_text("The edited face: " + face.label())
        thumb.set_valign(Gtk.Align.START)
        header = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
        header.pack_start(thumb, False, False, 0)
        header.pack_start(about, True, True, 0)
        about_row = header
    else:
        about_row = about
    if os.environ.get(GUI_TEST_SHOT):
        print("CLIPSHAPE-GUI-TEST strength dialog shows face: %s"
              % (face.label() if pixbuf is not None else None), flush=True)
    scale = Gtk.Scale.new_with_range(Gtk.Orientation.HORIZONTAL, lo, hi, 0.1)
    scale.set_digits(1)
    scale.set_size_request(420, -1)
    scale.add_mark(0.0, Gtk.PositionType.BOTTOM, "0")
    for r in result.layers:
        scale.add_mark(r.strength, Gtk.PositionType.BOTTOM, logic.format_strength(r.strength))
    scale.set_value(start)
    status = _wrapped_label(Gtk, Pango, 70)
    for widget in (about_row, scale, status):
        area.pack_start(widget, False, False, 0)
    pending = {"id": None}

    def update():
        pending["id"] = None
        try:
            r = preview.show(round(scale.get_value(), 2))
            _show_text(status, "Showing %s in the preview layer; Keep adds it as a layer."
                       % r.name)
        except Exception as e:
            _show_error(status, gimp_words(logic.error_text(e)))
        return False

    def on_changed(_scale):
        # Dragging sends many values; the image follows the latest one.
        if pending["id"] is None:
            pending["id"] = GLib.timeout_add(60, update)

    scale.connect("value-changed", on_changed)
    update()
    dialog.show_all()
    def test_slider():
        scale.set_value(round(start * 0.6, 1) if start > 0 else round((lo + hi) / 2, 1))
        # The test's X server has no window manager: the dialog would sit at 0,0, over the face.
        screen = dialog.get_screen()
        dialog.move(screen.get_width() - dialog.get_allocated_width(),
                    screen.get_height() - dialog.get_allocated_height())

    gui_test_hook(dialog, "gimp-strength", RESPONSE_KEEP, prepare=test_slider)
    try:
        while dialog.run() == RESPONSE_KEEP:
            if pending["id"] is not None:      # the value the user sees is the one kept
                GLib.source_remove(pending["id"])
                update()
            try:
                layer = preview.keep()
                _show_text(status, "Kept %s as a layer of the group." % layer.get_name())
            except Exception as e:
                _show_error(status, gimp_words(logic.error_text(e)))
            gui_test_hook(dialog, "gimp-strength-kept", Gtk.ResponseType.CLOSE)
    finally:
        if pending["id"] is not None:
            GLib.source_remove(pending["id"])
        preview.close()
        dialog.destroy()


def edited_face(image, drawable, result):
    """The edited face (its pixels from the unchanged layer) as a FaceChoice, or None; only
    a picture for the dialog, so a failure to read it is no failure of the run."""
    try:
        return result.face_choice(GimpLayerSource(image, drawable))
    except Exception:
        return None


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
        proc.set_attribution("libclipshape", "libclipshape authors", "CLIPShape %s, 2026" % logic.plugin_version())
        proc.add_choice_argument("model-set", "_Model set", "Model set of the model store, or "
                                 "'files' for the files under Advanced",
                                 _choice([("ffhq", "Faces (FFHQ)"), ("car", "Cars"),
                                          ("horse", "Horses"),
                                          (MODEL_FILES, "Files given under Advanced")]),
                                 "ffhq", RW)
        proc.add_string_argument("prompt", "_Prompt", "What the edit should look like, e.g. "
                                 "'face with big nose' (may stay empty with a saved edit)", "",
                                 RW)
        proc.add_string_argument("strengths", "Stren_gths", "Comma-separated strengths, one "
                                 "layer each (the strongest positive one shown); "
                                 + logic.STRENGTH_HELP, logic.DEFAULT_STRENGTHS, RW)
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
        proc.add_int_argument("face", "Which face (_1, 2…; 0 = auto)", "Which face to edit: 1 "
                              "is the most certain face found; 0 = the face in the selection, "
                              "else the largest", 0, 100, 0, RW)
        proc.add_boolean_argument("keep-rest", "Keep the rest as it is (λ_3)", "Learn the "
                                  "edit so that the picture around the face or selection "
                                  "changes as little as possible (the preservation term λ3)",
                                  False, RW)
        proc.add_string_argument("layer", "Generator la_yer", "Layer whose weight is shifted: "
                                 "e.g. convs.3; convs.3,convs.5 learns both together; auto "
                                 "picks by a short probe; empty = the model set's default", "",
                                 RW)
        proc.add_string_argument("also", "_Joint second prompt", "A second prompt learnt "
                                 "together with the first (each can later be applied alone); "
                                 "empty = none", "", RW)
        proc.add_string_argument("lambda2", "λ_2 (empty = the set's)", "Weight of the shift's "
                                 "norm, 0..10; empty = the model set's default", "", RW)
        proc.add_int_argument("seed", "See_d", "Seed of the optimisation", 0, 2 ** 31 - 1, 0, RW)
        proc.add_int_argument("optimize-size", "Learning side, px (_0 = auto)", "Side in pixels "
                              "of the picture the edit is learnt at (16..4096); 0 = the "
                              "library's choice", 0, 4096, 0, RW)
        proc.add_choice_argument("device", "R_un on", "Where the models run",
                                 _choice(DEVICES), "auto", RW)
        proc.add_file_argument("models-dir", "Model store (do_wnloads)", "Model store folder "
                               "(default $CLIPSHAPE_MODELS or ~/.local/share/clipshape/models)",
                               Gimp.FileChooserAction.SELECT_FOLDER, True, None, RW)
        # "(None)" on a file button reads as "no file": the label says what none means.
        proc.add_file_argument("generator-file", "e_4e / generator file (none: the set's)",
                               "Overrides the set's e4e checkpoint",
                               Gimp.FileChooserAction.OPEN, True, None, RW)
        proc.add_file_argument("clip-file", "CLIP chec_kpoint (none: the set's)",
                               "Overrides the set's CLIP model",
                               Gimp.FileChooserAction.OPEN, True, None, RW)
        proc.add_file_argument("vocab-file", "CLIP tokeni_zer vocab (none: the set's)",
                               "Overrides the set's BPE vocab",
                               Gimp.FileChooserAction.OPEN, True, None, RW)
        proc.add_file_argument("face-detector-dir", "_Face detector folder (none: the set's)",
                               "Folder with MTCNN's pnet.pt, rnet.pt, onet.pt (default: the "
                               "set's)", Gimp.FileChooserAction.SELECT_FOLDER, True, None, RW)
        return proc

    def create_models_procedure(self, name):
        proc = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run_models, None)
        proc.set_menu_label("CLIPShape Models…")
        proc.add_menu_path("<Image>/Filters/Generic")
        proc.set_documentation(
            "Download the model sets of CLIPShape",
            "Shows each model set's status (ready, or the size still to download), the store's "
            "folder and the licences; downloads a set with progress and cancel, or adds model "
            "files you already have. Non-interactively, downloads the set.", name)
        proc.set_attribution("libclipshape", "libclipshape authors", "CLIPShape %s, 2026" % logic.plugin_version())
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
                                               GLib.Error("CLIPShape: " + gimp_words(status.text)))
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        interactive = run_mode == Gimp.RunMode.INTERACTIVE
        try:
            if interactive:
                checked = show_dialog(procedure, config,
                                      lambda dialog: check_run(config, drawables, dialog),
                                      lambda: find_faces(config, image, drawables))
                if checked is None:
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
                model, request = checked
            else:
                model, request = check_run(config, drawables)
            Gimp.progress_init("CLIPShape")
            window = LearningWindow() if interactive else None

            def progress(fraction, text):
                Gimp.progress_set_text(text)
                Gimp.progress_update(min(1.0, max(0.0, fraction)))
                if window is not None:
                    window.progress(fraction, text)

            # No message box on success: the layers are the answer, the Strength dialog says
            # the rest.
            try:
                result, group = edit_image(image, drawables[0], model, request, progress,
                                           window)
            finally:
                if window is not None:
                    window.close()
            Gimp.progress_end()
            save_dialog_values(config)
        except Exception as e:  # every failure becomes GIMP's error message, no traceback
            Gimp.progress_end()
            if isinstance(e, logic.cs.CancelledError):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            return procedure.new_return_values(
                Gimp.PDBStatusType.EXECUTION_ERROR,
                GLib.Error("CLIPShape: " + gimp_words(logic.error_text(e))))
        span = result.strength_range()
        if interactive and span is not None and span[1] - span[0] >= 0.1:   # a slider to move
            try:
                strength_dialog(image, group, result, edited_face(image, drawables[0], result))
            except Exception as e:   # the edit is in the image; only the slider failed
                Gimp.message("CLIPShape: the strength slider failed: "
                             + gimp_words(logic.error_text(e)))
            keep_selected(image, drawables[0])   # Keep and the preview selected their layers
            Gimp.displays_flush()
        if result.transfer is not None:
            result.transfer.close()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


if __name__ == "__main__":
    Gimp.main(ClipShape.__gtype__, sys.argv)
