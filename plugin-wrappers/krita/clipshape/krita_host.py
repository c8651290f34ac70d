"""The few Krita API calls the plug-in makes: settings, reading the layer, inserting results.

Krita calls must happen on the GUI thread; everything here is called from it.
"""

from krita import Krita

from . import clipshape_ctypes as cs
from . import clipshape_logic as logic

SETTINGS_GROUP = "clipshape"
FMT = "BGRA8"  # pixelData / setPixelData byte order of an RGBA U8 document

# key: default (strings, as Krita stores them)
SETTINGS = {
    "set_name": logic.DEFAULT_SET,
    "models_dir": "",
    "device": "auto",
    "library_dir": "",
    "lib_path": "",
    "generator": "",
    "clip": "",
    "vocab": "",
    "layer": "",
    "steps": str(logic.DEFAULT_STEPS),
    "strengths": logic.DEFAULT_STRENGTHS,
    "prompt": "",
    "fit_to_frame": "true",
    "paste": "warp",
    "align": "auto",
    "face_detector_dir": "",
    "face": "0",
    "also": "",
    "optimize_size": "0",
    "keep_rest": "false",
}


def read_settings():
    app = Krita.instance()
    return {k: app.readSetting(SETTINGS_GROUP, k, v) for k, v in SETTINGS.items()}


def write_settings(values):
    app = Krita.instance()
    for k, v in values.items():
        if k in SETTINGS:
            app.writeSetting(SETTINGS_GROUP, k, str(v))


def model_from_settings(s):
    return logic.ModelChoice(set_name=s["set_name"], models_dir=s["models_dir"],
                             generator=s["generator"], clip=s["clip"], vocab=s["vocab"],
                             device=s["device"],
                             face_detector_dir=s["face_detector_dir"]).normalized()


def request_from_settings(s, saved_edit=""):
    return logic.EditRequest.from_values(
        prompt=s["prompt"], strengths=s["strengths"], steps=s["steps"], layer=s["layer"],
        saved_edit=saved_edit, library_dir=s["library_dir"],
        fit_to_frame=str(s["fit_to_frame"]).lower() == "true", paste=s["paste"],
        align=s["align"], face=s.get("face") or 0, also=s.get("also") or "",
        optimize_size=s.get("optimize_size") or 0,
        keep_rest=str(s.get("keep_rest") or "").lower() == "true")


def active_target():
    """(document, paint layer) the edit applies to; RequestError when there is none."""
    doc = Krita.instance().activeDocument()
    if doc is None:
        raise logic.RequestError("open an image first")
    node = doc.activeNode()
    if node is None or node.type() != "paintlayer":
        raise logic.RequestError("select a paint layer")
    return doc, node


def read_source(doc, node):
    """The layer's pixels on the canvas (read once, here on the GUI thread) and the selection's
    bounding box → (BufferSource, selection Box or None)."""
    if node.colorModel() != "RGBA" or node.colorDepth() != "U8":
        raise logic.RequestError("the layer is %s %s; CLIPShape needs RGB/Alpha 8-bit "
                                 "(Image › Convert Image Color Space)"
                                 % (node.colorModel(), node.colorDepth()))
    b = node.bounds()
    bounds = logic.Box(b.x(), b.y(), b.width(), b.height()).intersect(
        logic.Box(0, 0, doc.width(), doc.height()))
    if bounds.empty:
        raise logic.RequestError("the layer is empty")
    data = bytes(node.pixelData(bounds.x, bounds.y, bounds.width, bounds.height))
    source = logic.BufferSource(data, bounds, FMT)
    sel = doc.selection()
    selection = None
    if sel is not None and sel.width() > 0 and sel.height() > 0:
        selection = logic.Box(sel.x(), sel.y(), sel.width(), sel.height())
    return source, selection


def missing_models(exc, model=None):
    """Whether ``exc`` says that model files of a set are missing (the one kind of error a
    download fixes): the library's ModelsMissingError, or the RequestError that
    ModelChoice.open raises with the library's missing-files message."""
    if isinstance(exc, cs.ModelsMissingError):
        return True
    if isinstance(exc, logic.RequestError) and model is not None and model.set_name:
        try:
            return str(exc) == model.missing_files()
        except cs.ClipShapeError:
            return False
    return False


def _child_above(parent, node, name):
    """The wrapper of the child of ``parent`` named ``name`` right above ``node``, fetched from
    the document's tree (a wrapper made on another document would act on that one)."""
    children = parent.childNodes()
    for i, child in enumerate(children):
        if child == node and i + 1 < len(children) and children[i + 1].name() == name:
            return children[i + 1]
    return next(c for c in reversed(children) if c.name() == name)


def _top_result_above(parent, node):
    """``node``, or the topmost of the earlier results stacked right above it: a new result goes
    above them, else the strength they show would hide it."""
    children = parent.childNodes()        # bottom to top
    i = next(i for i, c in enumerate(children) if c == node)
    while i + 1 < len(children):
        above = children[i + 1]
        if above.type() != "grouplayer" or not logic.is_result_group(
                c.name() for c in above.childNodes()):
            break
        i += 1
    return children[i]


def insert_result(doc, node, result):
    """A group "<prompt>" above ``node`` (and the earlier results stacked on it) holding the
    result's layers (the first on top, only the one marked visible shown) → the group node, as
    ONE undo step of ``doc``.

    Krita records every addChildNode as an undo step of the document the parent node was made
    by, even for a group outside the tree; so the group is built in a scratch document that is
    closed afterwards, and only adding the finished group touches ``doc``'s undo history.
    ``node`` stays the active layer, so a second Run edits the photo again, not the result."""
    app = Krita.instance()
    scratch = app.createDocument(doc.width(), doc.height(), "clipshape-scratch", "RGBA", "U8",
                                 "", 72.0)
    try:
        group = scratch.createGroupLayer(result.group_name)
        above = None
        for r in reversed(result.layers):      # bottom first: each goes above the previous
            layer = scratch.createNode(r.name, "paintlayer")
            group.addChildNode(layer, above)
            layer.setPixelData(r.data, r.x, r.y, r.width, r.height)
            layer.setVisible(bool(r.visible))
            above = layer
        parent = node.parentNode()
        below = _top_result_above(parent, node)
        if not parent.addChildNode(group, below):
            raise logic.RequestError("Krita did not add the result group above the layer "
                                     "\"%s\"" % node.name())
    finally:
        # The group now belongs to ``doc``'s image (Krita re-homes an added subtree).
        scratch.close()
    group = _child_above(parent, below, result.group_name)
    keep_active(doc, node, [group] + group.childNodes())
    doc.refreshProjection()
    return group


def keep_active(doc, node, added=()):
    """Makes ``node`` the active layer again, now and a few times more while Krita's event loop
    runs: Krita activates a newly added layer from queued, compressed signals that come after
    this returns (tens to hundreds of ms). A later reassertion only replaces one of the
    ``added`` nodes, never a layer the user has clicked meanwhile."""
    doc.setActiveNode(node)
    from PyQt5.QtCore import QTimer

    def again():
        current = doc.activeNode()
        if current is None or current == node:
            return
        if added and not any(current == a for a in added):
            return
        doc.setActiveNode(node)

    for msecs in (0, 100, 400):
        QTimer.singleShot(msecs, again)


PREVIEW_NAME = "preview (strength slider)"


class StrengthPreview:
    """The strength slider's layer: one paint layer on top of the result group that shows the
    photo's own pixels moved to the slider's strength (``result.layer_at``), while the group's
    other layers are hidden. ``keep()`` turns it into a named layer of the group; ``done()``
    removes a preview that was not kept and shows the layer that was shown before."""

    def __init__(self, doc, group, result):
        self.doc, self.group, self.result = doc, group, result
        self.layer = None          # the preview layer while there is one
        self.rect = None           # (x, y, w, h) its pixels were last written to
        self.strength = None
        self.kept = []             # names of the layers keep() made
        self._shown = [c for c in group.childNodes() if c.visible()]

    def show(self, k):
        """Moves the preview to strength ``k`` (tens of ms: the transfer's warp, no model)."""
        r = self.result.layer_at(k)
        if self.layer is None:
            active = self.doc.activeNode()
            self.layer = self.doc.createNode(PREVIEW_NAME, "paintlayer")
            children = self.group.childNodes()
            self.group.addChildNode(self.layer, children[-1] if children else None)
            if active is not None:      # Run must still find the photo, not the preview
                keep_active(self.doc, active, [self.layer])
            for c in self.group.childNodes():
                if c != self.layer:
                    c.setVisible(False)
            self.layer.setVisible(True)
        elif self.rect is not None and self.rect != (r.x, r.y, r.width, r.height):
            x, y, w, h = self.rect     # a smaller box must not leave the old pixels around it
            self.layer.setPixelData(bytes(w * h * 4), x, y, w, h)
        self.layer.setPixelData(r.data, r.x, r.y, r.width, r.height)
        self.rect = (r.x, r.y, r.width, r.height)
        self.strength = float(k)
        self.doc.refreshProjection()
        return r

    def keep(self):
        """The previewed strength becomes a layer of the group (named like the run's layers,
        left visible) → its name, or None without a preview."""
        if self.layer is None:
            return None
        name = logic.layer_name(self.result.prompt, self.strength)
        self.layer.setName(name)
        self.kept.append(name)
        self._shown = [self.layer]
        self.layer = self.rect = None
        return name

    def done(self):
        """Removes a preview that was not kept and shows what was shown before it."""
        if self.layer is not None:
            self.layer.remove()
            self.layer = self.rect = None
            for c in self._shown:
                c.setVisible(True)
        self.doc.refreshProjection()
