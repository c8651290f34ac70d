"""A fake of the parts of GIMP 3's gi.repository (Gimp, GimpUi, Gegl, GLib, GObject, Gio) the
plug-in uses, recording what it does: arguments, layers, undo groups, progress, pixels.

``install(monkeypatch)`` puts the fake ``gi`` package into sys.modules."""

import enum
import html
import types


class Enum(enum.IntEnum):
    @property
    def value_nick(self):
        return self.name.lower().replace("_", "-")


class RunMode(Enum):
    INTERACTIVE = 0
    NONINTERACTIVE = 1
    WITH_LAST_VALS = 2


class PDBStatusType(Enum):
    EXECUTION_ERROR = 0
    CALLING_ERROR = 1
    PASS_THROUGH = 2
    SUCCESS = 3
    CANCEL = 4


class PDBProcType(Enum):
    PLUGIN = 1


class ImageType(Enum):
    RGB_IMAGE = 0
    RGBA_IMAGE = 1


class LayerMode(Enum):
    NORMAL = 28


class FileChooserAction(Enum):
    ANY = -1
    OPEN = 0
    SAVE = 1
    SELECT_FOLDER = 2
    CREATE_FOLDER = 3


class ProcedureSensitivityMask(Enum):
    DRAWABLE = 1


class AbyssPolicy(Enum):
    NONE = 0
    CLAMP = 1


class GError(Exception):
    def __init__(self, message="", domain=None, code=0):
        super().__init__(message)
        self.message = message


class Rectangle:
    def __init__(self, x, y, width, height):
        self.x, self.y, self.width, self.height = x, y, width, height

    @classmethod
    def new(cls, x, y, width, height):
        return cls(x, y, width, height)


class File:
    def __init__(self, path):
        self.path = path

    @classmethod
    def new_for_path(cls, path):
        return cls(path)

    def get_path(self):
        return self.path


class Choice:
    def __init__(self):
        self.items = []

    @classmethod
    def new(cls):
        return cls()

    def add(self, nick, id, label, help):
        self.items.append(nick)


class Config:
    """GimpProcedureConfig: the arguments' values; "notify::NAME" handlers run on a change."""

    def __init__(self, procedure):
        self.procedure = procedure
        self.values = {name: arg["default"] for name, arg in procedure.arguments.items()}
        self.handlers = {}

    def connect(self, signal, handler, *data):
        self.handlers.setdefault(signal, []).append(handler)

    def get_property(self, name):
        return self.values[name]

    def set_property(self, name, value):
        arg = self.procedure.arguments.get(name)
        if arg is None:
            raise TypeError("no property %r" % name)
        if arg["kind"] == "choice" and value not in arg["choice"].items:
            raise ValueError("%r is not a choice of %s" % (value, name))
        if arg["kind"] == "int" and not arg["min"] <= value <= arg["max"]:
            raise ValueError("%s out of range" % name)
        changed = self.values.get(name) != value
        self.values[name] = value
        if changed:
            for handler in self.handlers.get("notify::" + name, []):
                handler(self, None)


class Procedure:
    def __init__(self, plugin, name, proc_type, run_func, run_data):
        self.plugin, self.name, self.run_func = plugin, name, run_func
        self.arguments = {}
        self.menu_paths = []
        self.menu_label = None
        self.image_types = None

    @classmethod
    def new(cls, plugin, name, proc_type, run_func, run_data):
        return cls(plugin, name, proc_type, run_func, run_data)

    def _arg(self, kind, name, nick, blurb, default, **extra):
        assert name not in self.arguments, "argument %s twice" % name
        self.arguments[name] = dict(kind=kind, nick=nick, blurb=blurb, default=default, **extra)

    def add_string_argument(self, name, nick, blurb, value, flags):
        self._arg("string", name, nick, blurb, value)

    def add_int_argument(self, name, nick, blurb, mn, mx, value, flags):
        self._arg("int", name, nick, blurb, value, min=mn, max=mx)

    def add_double_argument(self, name, nick, blurb, mn, mx, value, flags):
        self._arg("double", name, nick, blurb, value, min=mn, max=mx)

    def add_boolean_argument(self, name, nick, blurb, value, flags):
        self._arg("boolean", name, nick, blurb, value)

    def add_choice_argument(self, name, nick, blurb, choice, value, flags):
        assert value in choice.items
        self._arg("choice", name, nick, blurb, value, choice=choice)

    def add_enum_argument(self, name, nick, blurb, enum_type, value, flags):
        self._arg("enum", name, nick, blurb, value, enum=enum_type)

    def add_file_argument(self, name, nick, blurb, action, none_ok, default_file, flags):
        self._arg("file", name, nick, blurb, default_file, action=action, none_ok=none_ok)

    def set_image_types(self, types_):
        self.image_types = types_

    def set_sensitivity_mask(self, mask):
        pass

    def set_menu_label(self, label):
        self.menu_label = label

    def add_menu_path(self, path):
        self.menu_paths.append(path)

    def set_documentation(self, blurb, help, help_id):
        self.blurb = blurb

    def set_attribution(self, authors, copyright, date):
        pass

    def create_config(self):
        return Config(self)

    def new_return_values(self, status, error):
        return (status, error)


class Buffer:
    """A drawable's pixels, R'G'B'A u8, drawable-local coordinates."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.data = bytearray(width * height * 4)
        self.flushed = 0

    def get(self, rect, scale, fmt, abyss):
        assert fmt == "R'G'B'A u8" and scale == 1.0
        out = bytearray()
        for y in range(rect.y, rect.y + rect.height):
            yy = min(max(y, 0), self.height - 1)
            for x in range(rect.x, rect.x + rect.width):
                xx = min(max(x, 0), self.width - 1)
                i = (yy * self.width + xx) * 4
                out += self.data[i:i + 4]
        return bytes(out)

    def set(self, rect, fmt, data):
        assert fmt == "R'G'B'A u8"
        assert len(data) == rect.width * rect.height * 4, "set() with %d bytes" % len(data)
        for j in range(rect.height):
            i = ((rect.y + j) * self.width + rect.x) * 4
            self.data[i:i + rect.width * 4] = data[j * rect.width * 4:(j + 1) * rect.width * 4]

    def flush(self):
        self.flushed += 1


class Item:
    def __init__(self, image, name):
        self.image, self.name, self.parent = image, name, None
        self.visible = True

    def get_name(self):
        return self.name

    def set_name(self, name):
        self.image.log("set_name", self)
        self.name = name

    def get_visible(self):
        return self.visible

    def set_visible(self, visible):
        self.image.log("set_visible", self)
        self.visible = bool(visible)

    def get_parent(self):
        return self.parent


class Layer(Item):
    def __init__(self, image, name, width, height, type_=ImageType.RGBA_IMAGE, opacity=100.0,
                 mode=LayerMode.NORMAL):
        super().__init__(image, name)
        self.width, self.height = width, height
        self.offsets = (0, 0)
        self.buffer = Buffer(width, height)
        self.updated = []

    @classmethod
    def new(cls, image, name, width, height, type_, opacity, mode):
        return cls(image, name, width, height, type_, opacity, mode)

    def is_group(self):
        return False

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_offsets(self):
        return (True,) + self.offsets

    def set_offsets(self, x, y):
        self.image.log("set_offsets", self)
        self.offsets = (x, y)

    def get_buffer(self):
        return self.buffer

    def update(self, x, y, w, h):
        self.updated.append((x, y, w, h))

    def mask_intersect(self):
        sel = self.image.selection
        ox, oy = self.offsets
        box = (ox, oy, self.width, self.height) if sel is None else sel
        x0, y0 = max(box[0], ox), max(box[1], oy)
        x1 = min(box[0] + box[2], ox + self.width)
        y1 = min(box[1] + box[3], oy + self.height)
        if x1 <= x0 or y1 <= y0:
            return (False, 0, 0, 0, 0)
        return (True, x0 - ox, y0 - oy, x1 - x0, y1 - y0)


class GroupLayer(Layer):
    def __init__(self, image, name):
        super().__init__(image, name, 0, 0)
        self.children = []

    @classmethod
    def new(cls, image, name=None):
        return cls(image, name)

    def is_group(self):
        return True

    def get_children(self):
        return list(self.children)


class Image:
    def __init__(self, width, height):
        self.width, self.height = width, height
        self.layers = []           # top to bottom
        self.selection = None      # (x, y, w, h) or None
        self.undo_depth = 0
        self.undo_groups = 0
        self.undo_frozen = 0
        self.ops = []              # (op, item name, undo_depth, undo frozen)
        self.selected = []         # the selected layers (GIMP selects what is inserted)

    def log(self, op, item):
        self.ops.append((op, item.name, self.undo_depth, self.undo_frozen))

    def undo_freeze(self):
        self.undo_frozen += 1
        return True

    def undo_thaw(self):
        assert self.undo_frozen > 0
        self.undo_frozen -= 1
        return True

    def undoable_ops(self):
        """The changes the undo history records: (op, name, undo depth) made while not frozen."""
        return [(op, name, depth) for op, name, depth, frozen in self.ops if not frozen]

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_layers(self):
        return list(self.layers)

    def undo_group_start(self):
        self.undo_depth += 1
        self.undo_groups += 1
        return True

    def undo_group_end(self):
        assert self.undo_depth > 0
        self.undo_depth -= 1
        return True

    def _siblings(self, parent):
        return self.layers if parent is None else parent.children

    def insert_layer(self, layer, parent, position):
        self.log("insert_layer", layer)
        siblings = self._siblings(parent)
        position = len(siblings) if position < 0 else position
        siblings.insert(position, layer)
        layer.parent = parent
        self.selected = [layer]
        return True

    def set_selected_layers(self, layers):
        self.selected = list(layers)
        return True

    def get_selected_layers(self):
        return list(self.selected)

    def get_item_position(self, item):
        return self._siblings(item.parent).index(item)

    def remove_layer(self, layer):
        self.log("remove_layer", layer)
        self._siblings(layer.parent).remove(layer)
        layer.parent = None
        return True

    def add_layer(self, layer, offsets=(0, 0)):
        layer.offsets = offsets
        self.insert_layer(layer, None, 0)
        self.ops.clear()


class Widget:
    """A GTK widget: ``set_x(v)`` stores property x, ``get_x()`` reads it, any other method is
    recorded in ``calls``; children, signal handlers and visibility as GTK has them."""

    def __init__(self, *args, **props):
        self.__dict__["props"] = dict(props)
        self.__dict__["children"] = []
        self.__dict__["handlers"] = {}
        self.__dict__["calls"] = []
        self.props.setdefault("visible", False)

    def __getattr__(self, name):
        if name.startswith("set_"):
            def setter(*args):
                # A label shows its latest text or markup, as GTK's does.
                other = {"set_text": "markup", "set_markup": "text"}.get(name)
                if other:
                    self.props.pop(other, None)
                self.props[name[4:]] = args[0] if len(args) == 1 else args
            return setter
        if name.startswith("get_"):
            return lambda *args: self.props.get(name[4:])

        def call(*args, **kwargs):
            self.calls.append((name, args))
        return call

    def connect(self, signal, handler, *data):
        self.handlers.setdefault(signal, []).append(handler)

    def emit(self, signal):
        for handler in self.handlers.get(signal, []):
            handler(self)

    def pack_start(self, child, *args):
        self.children.append(child)

    add = pack_start

    def get_children(self):
        return list(self.children)

    def show(self):
        self.props["visible"] = True

    def hide(self):
        self.props["visible"] = False

    def show_all(self):
        if not self.props.get("no_show_all"):
            self.props["visible"] = True
            for child in self.children:
                child.show_all()

    def text(self):
        """What a label shows (markup without its tags)."""
        import re
        markup = self.props.get("markup")
        if markup is not None and self.props.get("text") is None:
            return html.unescape(re.sub(r"<[^>]*>", "", markup))
        return self.props.get("text") or self.props.get("label") or ""


class Entry(Widget):
    pass


class Grid(Widget):
    """Gtk.Grid (GimpLabelSpin is one): attach() adds a child at a cell."""

    def attach(self, child, left, top, width, height):
        child.props["cell"] = (left, top)
        self.children.append(child)


class Button(Widget):
    def clicked(self):
        self.emit("clicked")


class FileChooser(Widget):
    """Gtk.FileChooser (and its button): the filters added, the one chosen."""

    def add_filter(self, file_filter):
        self.props.setdefault("filters", []).append(file_filter)


class FileFilter(Widget):
    def add_pattern(self, pattern):
        self.props.setdefault("patterns", []).append(pattern)


class Pixbuf:
    """GdkPixbuf.Pixbuf: its bytes and size (scaling keeps the bytes, changes the size)."""

    def __init__(self, data, width, height, stride):
        self.data, self.width, self.height, self.stride = data, width, height, stride

    @classmethod
    def new_from_bytes(cls, data, colorspace, has_alpha, bits, width, height, stride):
        assert has_alpha and bits == 8 and len(data) >= stride * height
        return cls(bytes(data), width, height, stride)

    def scale_simple(self, width, height, interp):
        return Pixbuf(self.data, width, height, self.stride)


class Scale(Widget):
    @classmethod
    def new_with_range(cls, orientation, lo, hi, step):
        return cls(orientation=orientation, range=(lo, hi), step=step, value=lo)

    def set_value(self, value):
        lo, hi = self.props["range"]
        value = min(hi, max(lo, value))
        changed = value != self.props.get("value")
        self.props["value"] = value
        if changed:
            self.emit("value-changed")

    def add_mark(self, value, position, markup):
        self.props.setdefault("marks", []).append((value, markup))


class FileChooserDialog(FileChooser):
    def run(self):
        path = state.chosen_files.pop(0) if state.chosen_files else None
        # A list: several files chosen at once (a chooser with select_multiple).
        paths = path if isinstance(path, list) else [path] if path else []
        if len(paths) > 1:
            assert self.props.get("select_multiple"), "the chooser takes one file only"
        self.props["filename"] = paths[0] if paths else None
        self.props["filenames"] = paths
        return ResponseType.ACCEPT if paths else ResponseType.CANCEL

    def add_buttons(self, *args):
        pass

    def destroy(self):
        pass


class ResponseType(Enum):
    NONE = -1
    ACCEPT = -3
    OK = -5
    CANCEL = -6
    CLOSE = -7


class Dialog(Widget):
    """GimpUi.Dialog: ``run()`` answers the next of ``state.answers[role]`` (default Close)."""

    def __init__(self, **props):
        super().__init__(**props)
        self.buttons = {}
        self.area = Widget()
        self.destroyed = False
        state.gimp_dialogs.append(self)

    def add_button(self, label, response):
        button = Widget(label=label)
        self.buttons[response] = button
        return button

    def get_content_area(self):
        return self.area

    def show_all(self):
        super().show_all()
        self.area.show_all()

    def run(self):
        """A response emitted by ``state.before_answer`` (a click) is what run() returns."""
        answers = state.answers.get(self.props.get("role"), [])
        self.__dict__["responded"] = None
        for before in state.before_answer.get(self.props.get("role"), []):
            before(self)
        if self.responded is not None:
            return self.responded
        return answers.pop(0) if answers else ResponseType.CLOSE

    def response(self, answer):
        self.calls.append(("response", (answer,)))
        self.__dict__["responded"] = answer
        for handler in self.handlers.get("response", []):
            handler(self, answer)

    def destroy(self):
        self.destroyed = True

    def labels(self):
        """Every label's text in the dialog's content, in order."""
        out, todo = [], list(self.area.children)
        while todo:
            w = todo.pop(0)
            todo[:0] = w.children
            if isinstance(w, Widget) and ("text" in w.props or "markup" in w.props):
                out.append(w)
        return out


class ProcedureDialog:
    """GimpUi.ProcedureDialog: records what the plug-in puts into it. ``run()`` puts
    ``state.typed`` into the config (the user's typing) and answers ``state.dialog_answer``
    (False = Cancel; a list: one answer per run, then Cancel)."""

    def __init__(self, procedure, config, title):
        self.procedure, self.config, self.title = procedure, config, title
        # The values the dialog's widgets would be built from.
        self.values_at_build = dict(config.values)
        self.labels = {}        # label id → (text, with_mnemonic)
        self.containers = {}    # container id → property names / ids
        self.widgets = {}       # property → the widget GIMP made for it
        self.container_widgets = {}
        self.filled = None
        self.destroyed = False
        self.runs = 0
        self.area = Widget()
        state.dialogs.append(self)

    @classmethod
    def new(cls, procedure, config, title):
        return cls(procedure, config, title)

    def get_widget(self, name, widget_type):
        assert self.filled is None, "get_widget after fill() gets a widget nobody shows"
        if name not in self.widgets:
            kind = self.procedure.arguments[name]["kind"]
            widget = Widget()
            if kind == "string":       # GimpLabelEntry: a label and an entry
                widget.children[:] = [Widget(), Entry()]
            elif kind == "file":       # GimpFileChooser: a label and a chooser button
                widget.children[:] = [Widget(), FileChooser()]
            elif kind == "int":        # GimpLabelSpin: a grid of a label and a spin button
                widget = Grid()
                widget.children[:] = [Widget(), Widget()]
            self.widgets[name] = widget
        return self.widgets[name]

    def get_content_area(self):
        return self.area

    def _container(self, container_id, contents):
        self.containers[container_id] = contents
        widget = self.container_widgets[container_id] = Widget()
        return widget

    def fill_box(self, container_id, properties):
        return self._container(container_id, list(properties))

    def get_label(self, label_id, text, is_markup, with_mnemonic):
        self.labels[label_id] = (text, with_mnemonic)
        return Widget(text=text)

    def fill_expander(self, container_id, title_id, invert_title, contents_id):
        return self._container(container_id, [title_id, contents_id])

    def fill(self, properties):
        self.filled = list(properties)

    def message(self):
        """The text of the labels the plug-in put into the dialog, shown ones only."""
        return " ".join(w.text() for w in self.area.children if w.props.get("visible"))

    def shown_properties(self):
        """Every property the dialog shows, through its containers."""
        out, todo = [], list(self.filled or [])
        while todo:
            item = todo.pop(0)
            if item in self.containers:
                todo[:0] = self.containers[item]
            elif item in self.procedure.arguments:
                out.append(item)
        return out

    def run(self):
        self.runs += 1
        for name, value in state.typed.items():     # what the user types before answering
            self.config.set_property(name, value)
        state.typed = {}
        for action in state.while_open:             # what else the user does in it
            action(self)
        state.while_open = []
        if isinstance(state.dialog_answer, list):
            return state.dialog_answer.pop(0) if state.dialog_answer else False
        return state.dialog_answer

    def destroy(self):
        self.destroyed = True


class State:
    """What the fake GIMP saw, reset by install()."""

    def __init__(self):
        self.progress = []
        self.progress_text = []
        self.messages = []
        self.flushes = 0
        self.dialogs = []          # ProcedureDialog objects, in order
        self.dialog_answer = False
        self.typed = {}            # property → value the user types into the next dialog
        self.while_open = []       # callable(ProcedureDialog): the user's clicks in the next one
        self.gimp_dialogs = []     # GimpUi.Dialog objects, in order
        self.answers = {}          # GimpUi.Dialog role → its run()s' answers
        self.before_answer = {}    # role → [callable(dialog)] run before each answer
        self.chosen_files = []     # what the next file chooser dialogs answer
        self.timeouts = []         # GLib.timeout_add's (ms, callable), not run by themselves
        self.directory = None      # Gimp.directory(): the user's GIMP profile folder


state = State()


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def build():
    global state
    state = State()

    class PlugIn:
        __gtype__ = object()

    class Selection:
        @staticmethod
        def is_empty(image):
            return image.selection is None

    Gimp = _module(
        "gi.repository.Gimp", PlugIn=PlugIn, ImageProcedure=Procedure, Procedure=Procedure,
        Choice=Choice, RunMode=RunMode, PDBStatusType=PDBStatusType, PDBProcType=PDBProcType,
        ImageType=ImageType, LayerMode=LayerMode, FileChooserAction=FileChooserAction,
        ProcedureSensitivityMask=ProcedureSensitivityMask, Layer=Layer, GroupLayer=GroupLayer,
        Image=Image, Selection=Selection,
        progress_init=lambda text: state.progress_text.append(text) or True,
        progress_update=lambda f: state.progress.append(f) or True,
        progress_set_text=lambda text: state.progress_text.append(text) or True,
        progress_end=lambda: True,
        displays_flush=lambda: setattr(state, "flushes", state.flushes + 1),
        message=lambda text: state.messages.append(text) or True,
        directory=lambda: state.directory,
        main=lambda gtype, argv: 0,
    )
    Gegl = _module("gi.repository.Gegl", Rectangle=Rectangle, AbyssPolicy=AbyssPolicy)

    def timeout_add(ms, callback, *data):
        state.timeouts.append((ms, callback))
        return len(state.timeouts)

    GLib = _module("gi.repository.GLib", Error=GError, timeout_add=timeout_add,
                   idle_add=lambda callback, *data: timeout_add(0, lambda: callback(*data)),
                   source_remove=lambda source: True,
                   Bytes=types.SimpleNamespace(new=bytes),
                   markup_escape_text=lambda text, length=-1: html.escape(text, quote=False))
    GObject = _module("gi.repository.GObject", TYPE_NONE=object(),
                      ParamFlags=types.SimpleNamespace(READWRITE=3))
    Gio = _module("gi.repository.Gio", File=File)
    GimpUi = _module("gi.repository.GimpUi", ProcedureDialog=ProcedureDialog, Dialog=Dialog,
                     init=lambda name: None)
    names = types.SimpleNamespace
    # A run pumps GTK's events itself (the learning window): none are ever pending here.
    GdkPixbuf = _module("gi.repository.GdkPixbuf", Pixbuf=Pixbuf,
                        Colorspace=types.SimpleNamespace(RGB=0),
                        InterpType=types.SimpleNamespace(BILINEAR=2))
    Gtk = _module("gi.repository.Gtk", Widget=Widget, Label=Widget, Box=Widget, Image=Widget,
                  Grid=Grid, Button=Button,
                  events_pending=lambda: False, main_iteration_do=lambda blocking: True,
                  ComboBoxText=Widget, ScrolledWindow=Widget, ProgressBar=Widget,
                  Entry=Entry, FileChooser=FileChooser, FileFilter=FileFilter, Scale=Scale,
                  FileChooserDialog=FileChooserDialog, ResponseType=ResponseType,
                  Orientation=names(HORIZONTAL=0, VERTICAL=1),
                  PolicyType=names(ALWAYS=0, AUTOMATIC=1, NEVER=2),
                  FileChooserAction=names(OPEN=0, SAVE=1, SELECT_FOLDER=2),
                  Align=names(FILL=0, START=1, END=2, CENTER=3),
                  PositionType=names(LEFT=0, RIGHT=1, TOP=2, BOTTOM=3))
    Pango = _module("gi.repository.Pango", WrapMode=names(WORD=0, CHAR=1, WORD_CHAR=2))
    repository = _module("gi.repository", Gimp=Gimp, Gegl=Gegl, GLib=GLib, GObject=GObject,
                         Gio=Gio, GimpUi=GimpUi, Gtk=Gtk, Pango=Pango, GdkPixbuf=GdkPixbuf)
    gi = _module("gi", repository=repository, require_version=lambda name, version: None)
    return {"gi": gi, "gi.repository": repository, "gi.repository.Gimp": Gimp,
            "gi.repository.Gegl": Gegl, "gi.repository.GLib": GLib,
            "gi.repository.GObject": GObject, "gi.repository.Gio": Gio,
            "gi.repository.GimpUi": GimpUi, "gi.repository.Gtk": Gtk,
            "gi.repository.Pango": Pango, "gi.repository.GdkPixbuf": GdkPixbuf}


def install(monkeypatch):
    modules = build()
    for name, module in modules.items():
        monkeypatch.setitem(__import__("sys").modules, name, module)
    return modules["gi.repository.Gimp"]
