"""A mock ``krita`` module (after krita-ai-diffusion's tests) and, when PyQt5 is not importable,
a minimal fake of the PyQt5 pieces the plug-in's worker uses (QThread, pyqtSignal; widgets are
placeholders, enough to import the docker module but not to build it). CLIPSHAPE_FAKE_QT=1 uses
the fake even when PyQt5 is installed.

Documents hold BGRA8 paint layers; nodes keep Krita's order (childNodes() bottom to top;
addChildNode(child, above) puts child right above ``above``, at the bottom when None). As in
Krita, each addChildNode / remove is one undo step of the document that made the PARENT node
(``Document.undo_steps``), whether or not that node is in the document's tree."""

import os
import sys
import threading
import types


def have_real_pyqt5():
    if os.environ.get("CLIPSHAPE_FAKE_QT"):
        return False
    try:
        import PyQt5.QtCore  # noqa: F401
        import PyQt5.QtWidgets  # noqa: F401
        return True
    except Exception:
        return False


# ───────────────────────────── fake Qt ────────────────────────────

class _BoundSignal:
    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)

    def emit(self, *args):
        for slot in list(self.slots):
            slot(*args)


class pyqtSignal:
    """Direct delivery in the emitting thread (the real one queues to the receiver's)."""

    def __init__(self, *types_):
        self.name = None

    def __set_name__(self, owner, name):
        self.name = "_signal_" + name

    def __get__(self, obj, owner):
        if obj is None:
            return self
        sig = obj.__dict__.get(self.name)
        if sig is None:
            sig = obj.__dict__[self.name] = _BoundSignal()
        return sig


class QObject:
    def __init__(self, parent=None):
        self._parent = parent


class QThread(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()

    def run(self):
        pass

    def wait(self, msecs=None):
        if self._thread is not None:
            self._thread.join(None if msecs is None else msecs / 1000.0)
            return not self._thread.is_alive()
        return True

    def isRunning(self):
        return self._thread is not None and self._thread.is_alive()


class QCoreApplication:
    @staticmethod
    def processEvents():
        pass


class QTimer:
    @staticmethod
    def singleShot(msecs, fn):
        """Runs ``fn`` at once (the fake has no event loop to queue it to)."""
        fn()


class _Placeholder:
    def __init__(self, *a, **k):
        raise RuntimeError("fake PyQt5 widgets cannot be built; install PyQt5 for docker tests")


def fake_pyqt5_modules():
    core = types.ModuleType("PyQt5.QtCore")
    core.QObject, core.QThread, core.pyqtSignal = QObject, QThread, pyqtSignal
    core.QCoreApplication, core.QTimer = QCoreApplication, QTimer
    # The rest of QtCore (Qt, QSize, …) and QtGui: names to import, nothing to build.
    core.__getattr__ = lambda name: type(name, (_Placeholder,), {})
    gui = types.ModuleType("PyQt5.QtGui")
    gui.__getattr__ = lambda name: type(name, (_Placeholder,), {})
    widgets = types.ModuleType("PyQt5.QtWidgets")
    widgets.__getattr__ = lambda name: type(name, (_Placeholder,), {})
    pkg = types.ModuleType("PyQt5")
    pkg.QtCore, pkg.QtGui, pkg.QtWidgets = core, gui, widgets
    return {"PyQt5": pkg, "PyQt5.QtCore": core, "PyQt5.QtGui": gui, "PyQt5.QtWidgets": widgets}


# ───────────────────────────── fake Krita ─────────────────────────

class Rect:
    def __init__(self, x, y, w, h):
        self._r = (x, y, w, h)

    def x(self):
        return self._r[0]

    def y(self):
        return self._r[1]

    def width(self):
        return self._r[2]

    def height(self):
        return self._r[3]


class Node:
    def __init__(self, doc, name, kind):
        self.doc, self._name, self.kind = doc, name, kind
        self.children = []
        self.parent = None
        self.pixels = bytearray(doc._w * doc._h * 4) if kind == "paintlayer" else None
        self.written = None   # (x, y, w, h) of the last setPixelData
        self._visible = True

    def name(self):
        return self._name

    def setName(self, name):
        self._name = name

    def type(self):
        return self.kind

    def visible(self):
        return self._visible

    def setVisible(self, visible):
        self._visible = bool(visible)

    def remove(self):
        assert not self.doc.closed, "a node of a closed document"
        if self.parent is None:
            return False
        self.parent.children.remove(self)
        self.parent = None
        self.doc.undo_steps += 1
        return True

    def colorModel(self):
        return self.doc.color_model

    def colorDepth(self):
        return self.doc.color_depth

    def childNodes(self):
        return list(self.children)

    def parentNode(self):
        return self.parent

    def addChildNode(self, child, above):
        assert not self.doc.closed, "a node of a closed document"
        assert child.doc._w == self.doc._w and child.doc._h == self.doc._h
        i = 0 if above is None else self.children.index(above) + 1
        self.children.insert(i, child)
        child.parent = self
        self.doc.undo_steps += 1
        child._adopt(self.doc)
        return True

    def _adopt(self, doc):
        """A subtree added to another document's tree belongs to that document."""
        self.doc = doc
        for c in self.children:
            c._adopt(doc)

    def bounds(self):
        if self.written is None:
            return Rect(0, 0, self.doc._w, self.doc._h) if self.kind == "paintlayer" else \
                Rect(0, 0, 0, 0)
        return Rect(*self.written)

    def pixelData(self, x, y, w, h):
        assert threading.current_thread() is self.doc.gui_thread, "Krita call off the GUI thread"
        out = bytearray()
        for j in range(y, y + h):
            for i in range(x, x + w):
                if 0 <= i < self.doc._w and 0 <= j < self.doc._h:
                    k = (j * self.doc._w + i) * 4
                    out += self.pixels[k:k + 4]
                else:
                    out += b"\0\0\0\0"
        return bytes(out)

    def setPixelData(self, data, x, y, w, h):
        data = bytes(data)
        assert len(data) == w * h * 4, "setPixelData with %d bytes for %dx%d" % (len(data), w, h)
        for j in range(h):
            k = ((y + j) * self.doc._w + x) * 4
            self.pixels[k:k + w * 4] = data[j * w * 4:(j + 1) * w * 4]
        self.written = (x, y, w, h)
        return True


class Selection(Rect):
    def __init__(self):
        super().__init__(0, 0, 0, 0)

    def select(self, x, y, w, h, value):
        self._r = (x, y, w, h)


class Document:
    def __init__(self, w, h, gui_thread=None):
        self._w, self._h = w, h
        self.color_model, self.color_depth = "RGBA", "U8"
        self.root = Node(self, "root", "grouplayer")
        self._selection = None
        self._active = None
        self.refreshes = 0
        self.undo_steps = 0
        self.closed = False
        self.gui_thread = gui_thread or threading.current_thread()

    def close(self):
        self.closed = True
        app = Krita.instance()
        if self in app.documents:
            app.documents.remove(self)
        return True

    def width(self):
        return self._w

    def height(self):
        return self._h

    def rootNode(self):
        return self.root

    def createNode(self, name, kind):
        return Node(self, name, kind)

    def createGroupLayer(self, name):
        return Node(self, name, "grouplayer")

    def selection(self):
        return self._selection

    def setSelection(self, sel):
        self._selection = sel

    def activeNode(self):
        return self._active

    def setActiveNode(self, node):
        self._active = node

    def refreshProjection(self):
        self.refreshes += 1

    def waitForDone(self):
        pass


class Krita:
    _instance = None

    def __init__(self):
        self.settings = {}
        self.extensions = []
        self.docker_factories = []
        self.active_document = None
        self.documents = []     # what createDocument made and close() did not close

    @classmethod
    def instance(cls):
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def readSetting(self, group, key, default):
        return self.settings.get((group, key), default)

    def writeSetting(self, group, key, value):
        self.settings[(group, key)] = value

    def addExtension(self, ext):
        self.extensions.append(ext)

    def addDockWidgetFactory(self, factory):
        self.docker_factories.append(factory)

    def createDocument(self, w, h, name, model, depth, profile, resolution):
        doc = Document(w, h)
        self.documents.append(doc)
        return doc

    def activeDocument(self):
        return self.active_document

    def activeWindow(self):
        return None


class Extension:
    def __init__(self, parent=None):
        self.parent = parent


class DockWidgetFactoryBase:
    DockRight = 1


class DockWidgetFactory:
    def __init__(self, ident, area, cls):
        self.ident, self.area, self.cls = ident, area, cls


def krita_module(real_qt):
    m = types.ModuleType("krita")
    Krita._instance = None
    m.Krita, m.Extension, m.Selection = Krita, Extension, Selection
    m.DockWidgetFactory, m.DockWidgetFactoryBase = DockWidgetFactory, DockWidgetFactoryBase
    if real_qt:
        from PyQt5.QtWidgets import QDockWidget

        class DockWidget(QDockWidget):
            def canvasChanged(self, canvas):
                pass
    else:
        class DockWidget:
            pass
    m.DockWidget = DockWidget
    return m


def install(monkeypatch, pykrita_dir):
    """Installs the fakes and imports the installed ``clipshape`` package → the package."""
    real_qt = have_real_pyqt5()
    if not real_qt:
        for name, module in fake_pyqt5_modules().items():
            monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "krita", krita_module(real_qt))
    for name in [n for n in sys.modules if n == "clipshape" or n.startswith("clipshape.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(pykrita_dir))
    import clipshape
    return clipshape
