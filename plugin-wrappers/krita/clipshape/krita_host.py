"""The few Krita API calls the plug-in makes: settings, reading the layer, inserting results.

Krita calls must happen on the GUI thread; everything here is called from it.
"""

from krita import Krita

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
        align=s["align"])


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


def insert_result(doc, node, result):
    """A group "<prompt>" above ``node`` holding one paint layer per strength (the first
    strength on top) → the group node."""
    group = doc.createGroupLayer(result.group_name)
    node.parentNode().addChildNode(group, node)
    above = None
    for r in reversed(result.layers):
        layer = doc.createNode(r.name, "paintlayer")
        group.addChildNode(layer, above)
        layer.setPixelData(r.data, r.x, r.y, r.width, r.height)
        above = layer
    doc.refreshProjection()
    return group
