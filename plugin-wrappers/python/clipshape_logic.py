"""Host-independent logic of the CLIPShape plug-ins (GIMP 3 and Krita).

Everything a plug-in does between "the user pressed Run" and "insert these layers" that does not
touch the host: parsing the dialog's values into requests, choosing the picture box (selection
or layer, optionally grown to the model's frame aspect), cropping host pixels, running
encode → optimise (or load a saved edit) → render, naming layers, saving the learnt edit into the
edit library. The host glue only reads pixels, reports progress and inserts ``LayerResult``s.

Coordinates are the host image's (canvas) pixels; a ``Box`` is (x, y, width, height).
"""

import datetime
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import List, Optional

try:  # inside a package (Krita) or next to the plug-in (GIMP)
    from . import clipshape_ctypes as cs
except ImportError:  # pragma: no cover - exercised by the GIMP layout
    import clipshape_ctypes as cs

# The domain sets a dialog offers before the library is loaded (registering a GIMP procedure
# happens without it); cs.models_list_sets() lists what the manifest holds.
def plugin_version():
    """The release this plug-in came with: the VERSION file beside it (a release's install.sh
    and install/plugins.sh write it from Cargo.toml's one version), else "development"."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION"), encoding="utf-8") as f:
            return f.read().strip() or "development"
    except OSError:
        return "development"


KNOWN_SETS = ("ffhq", "car", "horse")
DEFAULT_SET = "ffhq"
DEFAULT_STRENGTHS = "-3,-1.5,0,1.5,3"
DEFAULT_STEPS = 100
MAX_STEPS = 10000
MAX_STRENGTHS = 16
MAX_SIDE = 8192
DEVICES = ("auto", "cpu", "cuda")


class RequestError(ValueError):
    """A value the user typed or chose is not usable; the message says which and why."""


# ───────────────────────────── strengths and names ─────────────────

def parse_strengths(text):
    """"-3,-1.5,0,1.5,3" → [-3.0, -1.5, 0.0, 1.5, 3.0]; commas, semicolons or spaces separate."""
    if isinstance(text, (list, tuple)):
        items = [str(t) for t in text]
    else:
        items = [t for t in re.split(r"[,;\s]+", (text or "").strip()) if t]
    if not items:
        raise RequestError("strengths: give at least one number, e.g. %s" % DEFAULT_STRENGTHS)
    out = []
    for item in items:
        try:
            k = float(item.replace("\u2212", "-"))  # a typographic minus from a copy-paste
        except ValueError:
            raise RequestError("strengths: %r is not a number (expected e.g. %s)"
                               % (item, DEFAULT_STRENGTHS)) from None
        if math.isnan(k) or math.isinf(k):
            raise RequestError("strengths: %r is not a finite number" % item)
        if abs(k) > 100:
            raise RequestError("strengths: %s is too large (|k| ≤ 100; ±3 is already strong)" % item)
        if any(format_strength(k) == format_strength(o) for o in out):
            raise RequestError("strengths: %s is given twice" % format_strength(k))
        out.append(k)
    if len(out) > MAX_STRENGTHS:
        raise RequestError("strengths: %d values; at most %d" % (len(out), MAX_STRENGTHS))
    return out


def format_strength(k):
    """1.5 → "+1.5", -3 → "-3", 0 → "0", 0.25 → "+0.25" (at most 3 decimals, zeros trimmed)."""
    text = "%+.3f" % float(k)
    text = text.rstrip("0").rstrip(".")
    if text in ("+0", "-0"):
        return "0"
    return text


def format_strengths(ks):
    return ",".join(format_strength(k).lstrip("+") for k in ks)


def clean_prompt(prompt):
    """The prompt with whitespace collapsed; raises RequestError when empty."""
    text = " ".join((prompt or "").split())
    if not text:
        raise RequestError("prompt is empty: describe the edit, e.g. \"face with big nose\"")
    return text


def group_name(prompt):
    return " ".join((prompt or "").split())


def layer_name(prompt, k):
    """The layer of strength ``k``: "k=+1.5 <prompt>" (the strength first, so a narrow Layers
    panel that cuts the name still shows which strength the layer holds)."""
    return "k=%s %s" % (format_strength(k), group_name(prompt))


# What a user reads next to the strengths (dialog blurb, docker tooltip, status line).
STRENGTH_HELP = ("k is the edit's strength: 0 is the picture as it is, +1 the learnt edit, +3 three "
                 "times as strong; negative values go the opposite way")


def shown_strength(strengths):
    """The one strength whose layer is visible after a run: the strongest positive one (what the
    prompt asked for), else the strength farthest from 0."""
    ks = list(strengths)
    positive = [k for k in ks if k > 0]
    if positive:
        return max(positive)
    return max(ks, key=abs) if ks else None


def is_result_group(child_names):
    """Whether a group holding layers named ``child_names`` is a result of ours ("k=…" layers,
    perhaps the slider's preview): a new result goes above those that sit on the photo, else
    it would lie under them, hidden by the strength they show."""
    names = list(child_names)
    return bool(names) and all(n.startswith("k=") or n.startswith("preview ") for n in names)


def format_duration(seconds):
    """0.3 → "under 1 s", 45 → "45 s", 125 → "2 min 5 s", 3725 → "1 h 2 min" (for "about …
    left")."""
    if seconds < 1:
        return "under 1 s"
    s = int(round(seconds))
    if s < 60:
        return "%d s" % s
    if s < 3600:
        return "%d min %d s" % (s // 60, s % 60) if s % 60 else "%d min" % (s // 60)
    return "%d h %d min" % (s // 3600, (s % 3600) // 60)


class Eta:
    """Time left of a loop from the pace of its steps so far (the first step, which warms caches
    and loads kernels, is left out of the pace)."""

    def __init__(self, clock=None):
        import time
        self._clock = clock or time.monotonic
        self._first = None      # (step, time) of the first step seen

    def left(self, step, total):
        """Seconds left after ``step`` of ``total``, or None while unknown."""
        now = self._clock()
        if self._first is None:
            self._first = (step, now)
            return None
        s0, t0 = self._first
        if step <= s0:
            return None
        return (now - t0) / (step - s0) * max(0, total - step)


def edit_file_name(prompt, when=None):
    """A file name for a learnt edit: "face-with-big-nose-20250101-120000.safetensors"."""
    slug = re.sub(r"[^a-z0-9]+", "-", (prompt or "edit").lower()).strip("-")[:60] or "edit"
    when = when or datetime.datetime.now()
    return "%s-%s.safetensors" % (slug, when.strftime("%Y%m%d-%H%M%S"))


def unique_path(directory, name):
    """``directory/name``, with -2, -3 … before the extension when the name is taken."""
    base, ext = os.path.splitext(name)
    path = os.path.join(directory, name)
    n = 2
    while os.path.exists(path):
        path = os.path.join(directory, "%s-%d%s" % (base, n, ext))
        n += 1
    return path


def default_library_dir():
    """Where learnt edits are kept, shared by both hosts: $XDG_DATA_HOME/clipshape/edits."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "share")
    return os.path.join(data, "clipshape", "edits")


# ───────────────────────────── boxes ──────────────────────────────

@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self):
        return self.x + self.width

    @property
    def bottom(self):
        return self.y + self.height

    @property
    def empty(self):
        return self.width <= 0 or self.height <= 0

    def intersect(self, other):
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.right, other.right), min(self.bottom, other.bottom)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def contains(self, other):
        return (other.x >= self.x and other.y >= self.y and other.right <= self.right
                and other.bottom <= self.bottom)

    def translated(self, dx, dy):
        return Box(self.x + dx, self.y + dy, self.width, self.height)

    @classmethod
    def of(cls, value):
        if value is None or isinstance(value, Box):
            return value
        x, y, w, h = value
        return cls(int(x), int(y), int(w), int(h))


def fit_box_to_aspect(box, aspect, bounds):
    """Grows ``box`` around its centre to the aspect ``aspect`` (width / height) and keeps it
    inside ``bounds``. When ``bounds`` is too small in the growing direction, the other side is
    cut instead (around the centre), so the result always has the aspect (up to rounding)."""
    box, bounds = Box.of(box), Box.of(bounds)
    if box.empty:
        return box
    if aspect <= 0 or math.isnan(aspect):
        raise ValueError("aspect must be positive")
    w, h = box.width, box.height
    if w / h < aspect:             # too narrow: widen
        w = int(round(h * aspect))
        if w > bounds.width:
            w = bounds.width
            h = max(1, min(h, int(round(w / aspect))))
    elif w / h > aspect:           # too wide: heighten
        h = int(round(w / aspect))
        if h > bounds.height:
            h = bounds.height
            w = max(1, min(w, int(round(h * aspect))))
    cx2, cy2 = 2 * box.x + box.width, 2 * box.y + box.height   # doubled centre, integer
    x = (cx2 - w) // 2
    y = (cy2 - h) // 2
    x = min(max(x, bounds.x), bounds.right - w)
    y = min(max(y, bounds.y), bounds.bottom - h)
    return Box(x, y, w, h)


def edit_box(bounds, selection=None, frame=None, fit_to_frame=True):
    """The box the model sees: the selection's bounding box within ``bounds`` (the layer on
    the canvas), else ``bounds``; grown to the model frame's aspect when ``fit_to_frame``
    (``frame`` = (width, height) from ``Context.frame_size()``)."""
    bounds = Box.of(bounds)
    if bounds is None or bounds.empty:
        raise RequestError("the layer has no pixels on the canvas")
    box = bounds
    if selection is not None:
        box = Box.of(selection).intersect(bounds)
        if box.empty:
            raise RequestError("the selection does not overlap the layer")
    if fit_to_frame and frame:
        box = fit_box_to_aspect(box, frame[0] / frame[1], bounds)
    if box.width > MAX_SIDE or box.height > MAX_SIDE:
        raise RequestError("the picture is %d×%d px; select at most %d px per side"
                           % (box.width, box.height, MAX_SIDE))
    return box


# ───────────────────────────── pixels ─────────────────────────────

def crop_pixels(data, width, height, bpp, box, stride=0):
    """Rows of ``box`` (within (0, 0, width, height)) from packed pixels → tightly packed bytes."""
    box = Box.of(box)
    stride = stride or width * bpp
    if not Box(0, 0, width, height).contains(box):
        raise ValueError("crop box %r is outside %d×%d" % (box, width, height))
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    if box.x == 0 and box.width == width and stride == width * bpp:
        return bytes(view[box.y * stride:(box.y + box.height) * stride])
    row = box.width * bpp
    out = bytearray(row * box.height)
    for j in range(box.height):
        start = (box.y + j) * stride + box.x * bpp
        out[j * row:(j + 1) * row] = view[start:start + row]
    return bytes(out)


def swap_red_blue(data):
    """RGBA ⇄ BGRA of packed 4-byte pixels."""
    out = bytearray(data)
    out[0::4], out[2::4] = out[2::4], out[0::4]
    return bytes(out)


class PixelSource:
    """A host layer's pixels as the logic needs them: ``bounds`` (canvas coordinates of what
    may be read), ``fmt`` ("RGBA8" for GIMP's R'G'B'A u8, "BGRA8" for Krita) and ``read(box)``
    → packed bytes of that box."""

    fmt = "RGBA8"
    bounds = None

    def read(self, box):
        raise NotImplementedError


class BufferSource(PixelSource):
    """Pixels read up front (e.g. by Krita's GUI thread) covering ``bounds``."""

    def __init__(self, data, bounds, fmt):
        self.data = data
        self.bounds = Box.of(bounds)
        self.fmt = fmt
        self.bpp = cs.BYTES_PER_PIXEL[fmt]
        need = self.bounds.width * self.bounds.height * self.bpp
        if len(data) < need:
            raise ValueError("pixel buffer holds %d bytes, %r needs %d" % (len(data), self.bounds,
                                                                           need))

    def read(self, box):
        local = Box.of(box).translated(-self.bounds.x, -self.bounds.y)
        return crop_pixels(self.data, self.bounds.width, self.bounds.height, self.bpp, local)


# ───────────────────────────── requests ───────────────────────────

@dataclass
class ModelChoice:
    """Which models to load: a manifest set from a store directory, and/or explicit files
    (explicit files override the set's)."""
    set_name: Optional[str] = DEFAULT_SET
    models_dir: Optional[str] = None
    generator: Optional[str] = None
    encoder: Optional[str] = None
    clip: Optional[str] = None
    vocab: Optional[str] = None
    device: str = "auto"
    n_threads: int = 0
    face_detector_dir: Optional[str] = None  # MTCNN's pnet/rnet/onet.pt; None = the set's

    def normalized(self):
        def opt(v):
            v = (v or "").strip() if isinstance(v, str) else v
            return os.path.expanduser(v) if v else None
        set_name = opt(self.set_name)
        if set_name in ("custom", "none", "files"):
            set_name = None
        device = (self.device or "auto").strip().lower()
        try:
            cs.parse_device(device)
        except cs.InvalidArgumentError as e:
            raise RequestError(str(e)) from None
        m = ModelChoice(set_name, opt(self.models_dir), opt(self.generator), opt(self.encoder),
                        opt(self.clip), opt(self.vocab), device, int(self.n_threads or 0),
                        opt(self.face_detector_dir))
        if not m.set_name and not m.generator:
            raise RequestError("model: choose a model set (%s) or give a generator/e4e file"
                               % ", ".join(KNOWN_SETS))
        for what, path in (("generator", m.generator), ("encoder", m.encoder),
                           ("CLIP model", m.clip), ("vocab", m.vocab)):
            if path and not os.path.isfile(path):
                raise RequestError("%s file not found: %s" % (what, path))
        if m.face_detector_dir and not os.path.isdir(m.face_detector_dir):
            raise RequestError("face detector folder not found: %s" % m.face_detector_dir)
        return m

    def key(self):
        return (self.set_name, self.models_dir, self.generator, self.encoder, self.clip,
                self.vocab, self.device, self.n_threads, self.face_detector_dir)

    def describe(self):
        return self.set_name or os.path.basename(self.generator or "?")

    def missing_files(self):
        """What is missing of the set and what to do in a plug-in (missing_set_text), or None."""
        if not self.set_name:
            return None
        return missing_set_text(self.set_name, self.models_dir)

    def open(self):
        """Loads a Context; a missing model set becomes a RequestError saying what to fetch."""
        missing = None
        if self.set_name and not (self.generator and self.clip and self.vocab):
            missing = self.missing_files()
        if missing:
            raise RequestError(missing)  # names the set, the missing files and their URLs
        return cs.Context(generator=self.generator, encoder=self.encoder, clip=self.clip,
                          vocab=self.vocab, set_name=self.set_name, models_dir=self.models_dir,
                          device=self.device, n_threads=self.n_threads,
                          face_detector_dir=self.face_detector_dir)


@dataclass
class EditRequest:
    """What to do: learn an edit from ``prompt`` (or apply ``saved_edit``) and render it at
    ``strengths``."""
    prompt: str = ""
    strengths: List[float] = field(default_factory=lambda: parse_strengths(DEFAULT_STRENGTHS))
    steps: int = DEFAULT_STEPS
    layer: Optional[str] = None       # None = the model set's default
    lambda2: Optional[float] = None   # None = the model set's default
    seed: int = 0
    saved_edit: Optional[str] = None  # a shift file to apply instead of learning one
    library_dir: Optional[str] = None
    save_edit: bool = True
    fit_to_frame: bool = True
    # How results go back onto the picture: "warp" (the picture's own pixels moved by the
    # edit), "changes" (the render, only where the edit changes it), "region" (the render over
    # the whole face / selection, feathered), "frame" (the model's whole frame).
    paste: str = "warp"
    # "auto": find and align the face for face models; "face"; "none" (the selection as is).
    align: str = "auto"
    face: Optional[int] = None        # which face (1 = the most certain); None: the selection's
    also: Optional[str] = None        # a second prompt learnt jointly with the first
    optimize_size: Optional[int] = None   # learn at this side (px); None: the library's choice
    keep_rest: bool = False           # keep the picture around the face / selection (λ3)

    @classmethod
    def from_values(cls, prompt="", strengths=DEFAULT_STRENGTHS, steps=DEFAULT_STEPS, layer="",
                    lambda2=-1.0, seed=0, saved_edit="", library_dir="", save_edit=True,
                    fit_to_frame=True, paste="warp", align="auto", face=0, also="",
                    optimize_size=0, keep_rest=False):
        """From a dialog's raw values (strings, sentinels: empty = default, λ2 < 0 = default)."""
        saved = (saved_edit or "").strip() or None
        if saved:
            saved = os.path.expanduser(saved)
            if not os.path.isfile(saved):
                raise RequestError("saved edit not found: %s" % saved)
            prompt = " ".join((prompt or "").split())
        else:
            prompt = clean_prompt(prompt)
        try:
            steps = int(steps)
        except (TypeError, ValueError):
            raise RequestError("steps: %r is not a whole number" % (steps,)) from None
        if not 1 <= steps <= MAX_STEPS:
            raise RequestError("steps: %d is not within 1..%d" % (steps, MAX_STEPS))
        lam = None if lambda2 is None or float(lambda2) < 0 else float(lambda2)
        lib_dir = os.path.expanduser((library_dir or "").strip()) or default_library_dir()
        paste = (paste or "warp").strip().lower()
        if paste not in cs.PASTE_MODES:
            raise RequestError("paste: %r is not one of %s" % (paste, ", ".join(cs.PASTE_MODES)))
        align = (align or "auto").strip().lower()
        if align not in ("auto", "face", "none"):
            raise RequestError("align: %r is not auto, face or none" % align)
        try:
            face = int(face or 0)
        except (TypeError, ValueError):
            raise RequestError("face: %r is not a whole number (0 = the selection's or the "
                               "largest)" % (face,)) from None
        if face < 0:
            raise RequestError("face: %d; give 1 for the first face found, 0 for the "
                               "selection's or the largest" % face)
        also = " ".join((also or "").split()) or None
        if also and saved:
            raise RequestError("second prompt: a saved edit is applied as it is; leave the "
                               "second prompt empty")
        try:
            optimize_size = int(optimize_size or 0)
        except (TypeError, ValueError):
            raise RequestError("learning size: %r is not a whole number of pixels"
                               % (optimize_size,)) from None
        if optimize_size and not 16 <= optimize_size <= 4096:
            raise RequestError("learning size: %d px; give 0 (automatic) or 16..4096"
                               % optimize_size)
        return cls(prompt=prompt, strengths=parse_strengths(strengths), steps=steps,
                   layer=(layer or "").strip() or None, lambda2=lam, seed=int(seed or 0),
                   saved_edit=saved, library_dir=lib_dir, save_edit=bool(save_edit),
                   fit_to_frame=bool(fit_to_frame), paste=paste, align=align,
                   face=face or None, also=also, optimize_size=optimize_size or None,
                   keep_rest=bool(keep_rest) and not saved)


@dataclass
class LayerResult:
    name: str
    strength: float
    x: int
    y: int
    width: int
    height: int
    data: bytes
    fmt: str
    visible: bool = True   # one layer of a run is shown (shown_strength), the others hidden


@dataclass
class EditResult:
    group_name: str
    prompt: str
    box: Box
    layers: List[LayerResult]
    recon: Optional[object] = None     # cs.Picture: what the model made of the box
    shift_path: Optional[str] = None   # where the learnt edit was saved
    clip_sim_before: Optional[float] = None
    clip_sim_after: Optional[float] = None
    face: Optional[object] = None      # cs.Face: the face edited, when one was found
    # cs.Transfer (warp paste): the picture at any strength between the rendered ones.
    transfer: Optional[object] = None
    origin: tuple = (0, 0)             # canvas position of the transfer's photo pixels
    faces: Optional[list] = None       # every face found (cs.Face), ``face`` among them

    def strength_range(self):
        """(lowest, highest) strength a live preview can show, or None without a transfer."""
        return self.transfer.range() if self.transfer is not None else None

    def layer_at(self, strength):
        """The picture's own pixels moved to any ``strength`` within strength_range() → a
        LayerResult on the canvas (the strength slider's preview; "Keep" inserts it)."""
        if self.transfer is None:
            raise RequestError("this result has no strength slider (paste mode is not \"warp\")")
        pic = self.transfer.layer(strength)
        return LayerResult(layer_name(self.prompt, strength), float(strength),
                           self.origin[0] + pic.x, self.origin[1] + pic.y, pic.width,
                           pic.height, _packed(pic), pic.format)

    def face_choice(self, source):
        """The edited face as a FaceChoice (its pixels for a thumbnail), or None."""
        if self.face is None:
            return None
        choice = face_choices([self.face], source, self.origin)[0]
        choice.number = self._face_number()[0]
        return choice

    def _face_number(self):
        """(the edited face's number as EditRequest.face takes it, how many faces were found)."""
        faces = self.faces or [self.face]
        return next((i for i, f in enumerate(faces) if f is self.face), 0) + 1, len(faces)

    def face_text(self):
        """"face 1 of 2 at 181,62 87×110" of the edited face, or "" without one."""
        if self.face is None:
            return ""
        n, count = self._face_number()
        x1, y1, x2, y2 = (int(round(v)) for v in self.face.box)
        return "face %d of %d at %d,%d %d×%d" % (n, count, self.origin[0] + x1,
                                                self.origin[1] + y1, x2 - x1, y2 - y1)

    def summary(self):
        n = len(self.layers)
        parts = ["%d layer%s in group \"%s\"" % (n, "" if n == 1 else "s", self.group_name)]
        shown = [l for l in self.layers if l.visible]
        if shown and len(self.layers) > 1:
            parts.append("showing k=%s (%s)" % (format_strength(shown[0].strength),
                                                "k = the edit's strength"))
        if self.face is not None:
            parts.append("edited " + self.face_text())
        if self.clip_sim_before is not None and self.clip_sim_after is not None:
            parts.append("CLIP similarity %.3f → %.3f" % (self.clip_sim_before,
                                                         self.clip_sim_after))
        if self.shift_path:
            parts.append("edit saved to %s" % self.shift_path)
        return "; ".join(parts)


# ───────────────────────────── faces ────────────────────────────

@dataclass
class FaceChoice:
    """A face found in the picture, for a host's list: ``number`` as EditRequest.face takes it
    (1 = the most certain), ``box`` on the canvas, and its pixels (``crop``, the source's
    format) for a thumbnail."""
    number: int
    box: Box
    score: float
    crop: bytes
    fmt: str

    def label(self):
        return "%d: %d×%d at %d,%d" % (self.number, self.box.width, self.box.height, self.box.x,
                                       self.box.y)


def face_box(face, origin=(0, 0), bounds=None):
    """A cs.Face's box (x1, y1, x2, y2 in the read pixels) on the canvas, within ``bounds``."""
    x1, y1, x2, y2 = face.box
    box = Box(origin[0] + int(math.floor(x1)), origin[1] + int(math.floor(y1)),
              int(math.ceil(x2 - x1)), int(math.ceil(y2 - y1)))
    return box.intersect(Box.of(bounds)) if bounds is not None else box


def face_choices(faces, source, origin):
    """FaceChoice of each face (as find_face listed them) with the pixels of its box."""
    out = []
    for i, f in enumerate(faces):
        box = face_box(f, origin, source.bounds)
        crop = source.read(box) if not box.empty else b""
        out.append(FaceChoice(i + 1, box, float(f.score), crop, source.fmt))
    return out


def find_faces(model, source, contexts=None):
    """Every face in the layer → [FaceChoice] (a host's "Find faces"; detection only, no
    learning). RequestError when the models cannot find faces."""
    contexts = contexts or ContextCache()
    ctx = contexts.get(model)
    bounds = Box.of(source.bounds)
    pixels = source.read(bounds)
    with ctx.job():
        faces, _ = _detect(ctx, pixels, bounds, source.fmt, pick=False)
    return face_choices(faces, source, (bounds.x, bounds.y))


def _detect(ctx, pixels, bounds, fmt, selection=None, pick=True):
    """ctx.find_face on the pixels of ``bounds``; a context without a face detector is a
    RequestError naming the field that gives one."""
    try:
        return ctx.find_face(pixels, bounds.width, bounds.height, 0, fmt, selection, pick)
    except cs.InvalidArgumentError as e:
        if "no face detector" in e.message:
            raise RequestError("no face detector: choose the Face detector folder (MTCNN's "
                               "pnet.pt, rnet.pt, onet.pt), or use the Faces (FFHQ) model set"
                               ) from None
        raise


# ───────────────────────────── running ────────────────────────────

# Share of the progress bar per stage.
_ENCODE, _OPTIMIZE, _RENDER = (0.0, 0.1), (0.1, 0.9), (0.9, 1.0)


def _float_meta(shift, key):
    try:
        v = shift.meta(key)
        return float(v) if v is not None else None
    except ValueError:
        return None


def _monotonic(progress):
    """``progress`` fed fractions rounded to 1e-4 that never go back."""
    last = [0.0]

    def report(fraction, text):
        last[0] = max(last[0], min(1.0, round(float(fraction), 4)))
        if progress is not None:
            progress(last[0], text)

    return report


def aligns_faces(ctx, request):
    """Whether this run finds and aligns a face (face models, unless asked otherwise)."""
    if request.align == "auto":
        return ctx.domain().name == "face"
    return request.align == "face"


# λ3 of "keep the rest": on the tiny test models it more than halves the change outside the
# region and keeps more than half the CLIP gain (README, "Keeping the rest of the picture").
KEEP_REST_LAMBDA3 = 1.0
# Steps between two pictures while learning: one every few seconds on a CPU.
PREVIEW_EVERY = 10


def run_edit(ctx, request, source, box, progress=None, selection=None, preview=None):
    """find the face or take ``box`` → encode → optimise (or load the saved edit) → render, and
    map the renders back onto the picture as layers with alpha (``request.paste``).

    For a face, the whole of ``source.bounds`` is read and the face inside ``selection`` (or
    ``request.face``, or the largest) is edited; otherwise ``box`` of ``source``.
    ``progress(fraction, text)`` is called from this thread, and ``preview(picture)`` with the
    picture as it is (a cs.Picture of the model's frame, RGBA8) every PREVIEW_EVERY steps. Raises cs.CancelledError after
    ``ctx.cancel()`` (from any thread), RequestError/cs.ClipShapeError on bad input. Writes
    nothing but the learnt edit (atomically, by the library) into ``request.library_dir``.

    The layers come top first: descending strength, the shown_strength() one visible. A
    strength of 0 adds no layer where it would be empty (warp and changes pastes: nothing moves
    at k = 0).
    """
    report = _monotonic(progress)
    fmt = source.fmt
    box = Box.of(box)
    with ctx.job():
        face, faces = None, None
        bounds = Box.of(source.bounds)
        if aligns_faces(ctx, request):
            report(_ENCODE[0], "Finding the face")
            pixels = source.read(bounds)
            faces, face = _find_face(ctx, request, pixels, bounds, selection, fmt)
            box = bounds
            report(_ENCODE[0], "Inverting the face (e4e)")
            latent, recon = ctx.encode_face(pixels, bounds.width, bounds.height, face, 0, fmt), None
        else:
            report(_ENCODE[0], "Reading the picture")
            pixels = source.read(box)
            report(_ENCODE[0], "Inverting the picture (e4e)")
            latent, recon = ctx.encode(pixels, box.width, box.height, 0, fmt)
        with latent:
            ctx.check_cancelled()
            region = _keep_region(ctx, request, face, bounds, box, selection)
            shifts = _learn(ctx, request, latent, report, preview, region)
            try:
                prompt = _shift_prompt(request, shifts[0])
                weighted = [(sh, 1.0) for sh in shifts]
                strengths = [k for k in request.strengths
                             if not (k == 0 and request.paste in ("warp", "changes")
                                     and len(request.strengths) > 1)]
                strengths.sort(reverse=True)
                report(_RENDER[0], "Rendering %d strengths" % len(strengths))
                transfer = None
                # The read pixels: the bounds for a face, else the box.
                photo = (bounds.width, bounds.height) if face is not None else (box.width, box.height)
                origin = (bounds.x, bounds.y) if face is not None else (box.x, box.y)
                if request.paste == "warp":
                    report(_RENDER[0], "Moving the picture's own pixels (%d strengths)"
                           % len(strengths))
                    transfer = ctx.transfer(latent, weighted, strengths, pixels, photo,
                                            face=face, box=None, fmt=fmt)
                    pictures = [transfer.layer(k) for k in strengths]
                elif face is None and request.paste == "frame":
                    # The model's frame resized into the box, as it is.
                    pictures = ctx.render_pictures(latent, weighted, strengths, fmt,
                                                   target=(box.width, box.height))
                else:
                    # Layers in the coordinates of the read pixels, placed back on the canvas.
                    pictures = ctx.render_layers(latent, weighted, strengths, photo, face=face,
                                                 box=None, mode=request.paste, fmt=fmt)
                shown = shown_strength(strengths)
                layers = [LayerResult(layer_name(prompt, k), k, origin[0] + pic.x,
                                      origin[1] + pic.y, pic.width, pic.height,
                                      _packed(pic), fmt, visible=(k == shown))
                          for k, pic in zip(strengths, pictures)]
                result = EditResult(group_name(prompt), prompt, box, layers, recon,
                                    clip_sim_before=_float_meta(shifts[0], "clip_sim_before"),
                                    clip_sim_after=_float_meta(shifts[0], "clip_sim_after"),
                                    face=face, transfer=transfer, origin=origin, faces=faces)
                ctx.check_cancelled()
                if not request.saved_edit and request.save_edit and request.library_dir:
                    os.makedirs(request.library_dir, exist_ok=True)
                    path = unique_path(request.library_dir, edit_file_name(prompt))
                    shifts[0].save(path)
                    result.shift_path = path
            finally:
                for sh in shifts:
                    sh.close()
    report(1.0, "Done")
    return result


def _find_face(ctx, request, pixels, bounds, selection, fmt):
    """(every face, the one to edit): ``request.face`` (1 = the most certain), else the one
    the selection overlaps most, else the largest."""
    sel = None
    if selection is not None:
        s = Box.of(selection).translated(-bounds.x, -bounds.y)
        sel = (s.x, s.y, s.right, s.bottom)
    faces, index = _detect(ctx, pixels, bounds, fmt, sel)
    if request.face is not None:
        if request.face > len(faces):
            raise RequestError("face %d: the picture has %d face%s; choose 1..%d"
                               % (request.face, len(faces), "" if len(faces) == 1 else "s",
                                  len(faces)))
        index = request.face - 1
    return faces, faces[index]


def _keep_region(ctx, request, face, bounds, box, selection):
    """The region "keep the rest" keeps the picture around (generator pixels), or None."""
    if not request.keep_rest or request.saved_edit:
        return None
    if face is not None:
        return ctx.subject_region((bounds.width, bounds.height), face=face)
    inner = Box.of(selection).intersect(box) if selection is not None else None
    if inner is None or inner.empty or inner == box:
        raise RequestError("keep the rest: select the part to edit (with nothing selected "
                           "around it, there is no rest to keep)")
    # The box is what the model's frame holds, stretched: the selection inside it lands in
    # the same share of the frame.
    left, top, fw, fh = ctx.domain().frame
    sx, sy = fw / box.width, fh / box.height
    return (left + (inner.x - box.x) * sx, top + (inner.y - box.y) * sy,
            left + (inner.right - box.x) * sx, top + (inner.bottom - box.y) * sy)


def _learn(ctx, request, latent, report, preview=None, region=None):
    """The shifts of the edit: the saved one, or one learnt (two with a second prompt, learnt
    jointly so that each can also be applied alone)."""
    if request.saved_edit:
        report(_OPTIMIZE[0], "Loading %s" % os.path.basename(request.saved_edit))
        return [ctx.load_shift(request.saved_edit)]
    lo, hi = _OPTIMIZE
    eta = Eta()
    what = request.prompt + (" + " + request.also if request.also else "")

    def on_step(p):
        left = eta.left(p.step, p.total)
        text = "Learning \"%s\": step %d/%d, CLIP similarity %.3f" % (what, p.step, p.total,
                                                                     p.clip_sim)
        if left is not None:
            text += ", %s left" % (format_duration(left) if left < 1
                                    else "about " + format_duration(left))
        report(lo + (hi - lo) * p.step / max(1, p.total), text)

    options = dict(layer=request.layer, steps=request.steps, lambda2=request.lambda2,
                   seed=request.seed, for_warp=request.paste == "warp", progress=on_step)
    if request.optimize_size:
        options["optimize_size"] = request.optimize_size
    if preview is not None:
        options.update(preview=lambda step, picture: preview(picture),
                       preview_every=PREVIEW_EVERY)
    if region is not None:
        options.update(lambda3=KEEP_REST_LAMBDA3, region=region)
    if request.also:
        return ctx.optimize_batch([latent], [request.prompt, request.also],
                                  lambda4="default", **options)
    return [ctx.optimize(latent, request.prompt, **options)]


def _shift_prompt(request, shift):
    if not request.saved_edit:
        return request.prompt + (" + " + request.also if request.also else "")
    return (request.prompt or shift.meta("prompt")
            or os.path.splitext(os.path.basename(request.saved_edit))[0])


def _packed(pic):
    """A picture's rows without padding."""
    bpp = cs.BYTES_PER_PIXEL[pic.format]
    if pic.stride == pic.width * bpp:
        return pic.data
    return crop_pixels(pic.data, pic.width, pic.height, bpp, Box(0, 0, pic.width, pic.height),
                       pic.stride)


class ContextCache:
    """Keeps one loaded Context for the last ModelChoice (loading full models takes seconds)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._ctx = None

    def get(self, model):
        with self._lock:
            if self._ctx is not None and self._key == model.key() and not self._ctx.closed:
                return self._ctx
            self._close_locked()
            self._ctx = model.open()
            self._key = model.key()
            return self._ctx

    def current(self):
        return self._ctx

    def _close_locked(self):
        ctx, self._ctx, self._key = self._ctx, None, None
        if ctx is not None:
            ctx.close()

    def close(self):
        with self._lock:
            self._close_locked()


class EditJob:
    """One run of the plug-in, from model choice to layer results; usable on a worker thread.
    ``cancel()`` may be called from any thread at any time (also before the models are
    loaded)."""

    def __init__(self, model, request, source, selection=None, contexts=None):
        self.model = model
        self.request = request
        self.source = source
        self.selection = Box.of(selection)
        self.contexts = contexts or ContextCache()
        self._cancelled = threading.Event()
        self._ctx = None

    def cancel(self):
        self._cancelled.set()
        ctx = self._ctx
        if ctx is not None:
            ctx.cancel()

    @property
    def cancelled(self):
        return self._cancelled.is_set()

    def run(self, progress=None, preview=None):
        report = progress or (lambda fraction, text: None)
        report(0.0, "Loading models (%s)" % self.model.describe())
        ctx = self.contexts.get(self.model)
        self._ctx = ctx
        try:
            with ctx.job():
                if self.cancelled:
                    raise cs.CancelledError("cancelled")
                frame = ctx.frame_size() if self.request.fit_to_frame else None
                box = edit_box(self.source.bounds, self.selection, frame,
                               self.request.fit_to_frame)
                if self.cancelled:
                    raise cs.CancelledError("cancelled")
                return run_edit(ctx, self.request, self.source, box, progress,
                                selection=self.selection, preview=preview)
        finally:
            self._ctx = None


# ───────────────────────────── model downloads ───────────────────────

SET_LABELS = {"ffhq": "Faces (FFHQ)", "car": "Cars", "horse": "Horses"}


# Where the library's message turns to the command line (`clipshape models fetch`/`add`): a
# plug-in says what its own Models section offers instead.
_CLI_GUIDANCE = ("\nFetch them with `clipshape", "\nDownload the URLs on a machine")
PLUGIN_GUIDANCE = ("Download the set under Models (its Download button), or choose files you "
                   "already have there (Use a file I already have…).")


def missing_set_text(set_name, models_dir=None):
    """The files ``set_name`` still lacks (names, sizes, URLs, the store folder) and what to do
    about it in a plug-in, or None when the set is complete."""
    message = cs.models_missing(set_name, models_dir or None)
    if not message:
        return None
    for marker in _CLI_GUIDANCE:
        message = message.split(marker)[0]
    return message.rstrip() + "\n" + PLUGIN_GUIDANCE


def format_mb(n_bytes):
    """1234567 → "1.2 MB"; 1.56e9 → "1,559.0 MB" (decimal megabytes, as download sizes go)."""
    return "{:,.1f} MB".format(n_bytes / 1e6)


def format_progress(done, total, rate=None):
    """"12.3 / 345.6 MB, 4.5 MB/s" (the rate left out while unknown)."""
    text = "{:,.1f} / {:,.1f} MB".format(done / 1e6, total / 1e6)
    if rate is not None:
        text += ", {:,.1f} MB/s".format(rate / 1e6)
    return text


def set_status(model_set):
    """One line for a ``cs.ModelSet``: "Faces (FFHQ): ready" or "Cars: missing, 1,432.8 MB to
    download"."""
    label = SET_LABELS.get(model_set.name, model_set.name)
    if model_set.complete:
        return "%s: ready" % label
    return "%s: missing, %s to download" % (label, format_mb(model_set.download_bytes))


def model_sets(models_dir=None):
    """The store's editing sets (``cs.models_list_sets``) by name."""
    return {m.name: m for m in cs.models_list_sets(models_dir or None)}


def licence_text(model_set):
    """What the user agrees to by downloading: the licences of the files still missing."""
    lines = [line for line in (model_set.licences or "").splitlines() if line.strip()]
    return "\n".join(lines)


@dataclass
class DownloadStatus:
    """A snapshot of a ModelDownload, for the host's progress bar and label."""
    state: str                 # "idle", "running", "done", "cancelled", "failed"
    done: int                  # bytes of the set fetched so far (this run)
    total: int                 # bytes the set needed when the run started
    rate: Optional[float]      # bytes/s since the first byte, None before
    file: str                  # the file being fetched
    error: str = ""            # the user's message when failed

    @property
    def fraction(self):
        return min(1.0, self.done / self.total) if self.total else (1.0 if self.state == "done"
                                                                     else 0.0)

    @property
    def text(self):
        if self.state == "failed":
            return self.error
        if self.state == "cancelled":
            return "Download cancelled; it resumes where it stopped."
        if self.state == "done":
            return "Downloaded %s." % format_mb(self.done) if self.done else "Ready."
        if self.state == "idle":
            return ""
        text = format_progress(self.done, self.total, self.rate)
        return "%s (%s)" % (text, self.file) if self.file else text


class ModelDownload:
    """Fetches the missing files of one model set through the library (resumed, verified).

    ``run()`` blocks (a host's own worker thread, e.g. Krita's QThread, calls it); ``start()``
    runs it on a Python thread (GIMP polls ``status()`` from a GLib timeout). ``cancel()`` is
    safe from any thread: the next progress callback answers False, the library stops and
    keeps the partial file, and a later download resumes it. ``on_progress(status)`` is called
    on the downloading thread."""

    def __init__(self, set_name, models_dir=None, on_progress=None, clock=None):
        import time
        self.set_name = set_name
        self.models_dir = models_dir or None
        self.on_progress = on_progress
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread = None
        self._state = "idle"
        self._error = ""
        self._total = 0
        self._finished = 0          # bytes of files completed in this run
        self._file = ""
        self._file_done = 0
        self._file_start = None     # the first ``done`` seen of the current file (a resume)
        self._received = 0          # bytes that came over the wire in this run
        self._t_first = None

    # — state —

    def status(self):
        with self._lock:
            done = self._finished + self._file_done
            rate = None
            if self._t_first is not None:
                elapsed = self._clock() - self._t_first
                if elapsed > 0:
                    rate = self._received / elapsed
            return DownloadStatus(self._state, done, max(self._total, done), rate, self._file,
                                  self._error)

    @property
    def running(self):
        return self._state == "running"

    def cancel(self):
        self._cancel.set()

    # — work —

    def _progress(self, file, done, total):
        with self._lock:
            if file != self._file:
                if self._file:
                    self._finished += self._file_done
                self._file, self._file_done, self._file_start = file, 0, done
            if self._t_first is None:
                self._t_first = self._clock()
            self._received += max(0, done - max(self._file_done, self._file_start or 0))
            self._file_done = done
        if self.on_progress is not None:
            self.on_progress(self.status())
        return not self._cancel.is_set()

    def run(self):
        """Downloads; returns the final DownloadStatus (never raises for a failed download)."""
        with self._lock:
            self._state, self._error = "running", ""
            self._finished = self._file_done = self._received = 0
            self._file, self._file_start, self._t_first = "", None, None
        try:
            sets = model_sets(self.models_dir)
            if self.set_name not in sets:
                raise RequestError("unknown model set %r (the store has %s)"
                                   % (self.set_name, ", ".join(sorted(sets)) or "none"))
            self._total = sets[self.set_name].download_bytes
            if self._cancel.is_set():
                raise cs.CancelledError("cancelled")
            cs.models_fetch(self.set_name, self.models_dir, self._progress)
            with self._lock:
                self._finished += self._file_done
                self._file_done = 0
                self._state = "done"
        except cs.CancelledError:
            with self._lock:
                self._state = "cancelled"
        except Exception as e:  # shown to the user, never a traceback
            with self._lock:
                self._state, self._error = "failed", error_text(e)
        final = self.status()
        if self.on_progress is not None:
            self.on_progress(final)
        return final

    def start(self):
        if self.running:
            raise RequestError("a download is already running")
        self._cancel.clear()
        self._state = "running"
        self._thread = threading.Thread(target=self.run, name="clipshape-download",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout=None):
        """Waits for ``start()``'s thread; True when it has ended."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True


def add_model_file(set_name, path, models_dir=None):
    """A model file the user already has, registered as a file of ``set_name`` (copied into the
    store; theirs is left alone) → the stored path. RequestError says what was wrong."""
    path = os.path.expanduser((path or "").strip())
    if not path or not os.path.isfile(path):
        raise RequestError("model file not found: %s" % (path or "(none chosen)"))
    try:
        return cs.models_add(set_name, path, models_dir or None)
    except cs.ClipShapeError as e:
        raise RequestError("%s is not a file of %s: %s" % (
            os.path.basename(path), SET_LABELS.get(set_name, set_name), e.message)) from None


def store_dir(models_dir=None):
    """The model store's folder as the user should read it, or "" when the library cannot say."""
    try:
        return cs.models_dir(models_dir or None)
    except cs.ClipShapeError:
        return ""


# What the network layer says when the server cannot be reached at all (offline, blocked, no
# DNS): the user needs that sentence first, the socket's words only as details.
_UNREACHABLE = ("connection refused", "dns error", "failed to lookup", "name or service not known",
                "temporary failure in name resolution", "network is unreachable", "timed out",
                "no route to host")


def error_text(exc):
    """A one-paragraph message for the user (no traceback) for any exception of a run."""
    if isinstance(exc, cs.CancelledError):
        return "Cancelled."
    if isinstance(exc, RequestError):
        return str(exc)
    if isinstance(exc, cs.LibraryNotFoundError):
        return str(exc)
    if isinstance(exc, cs.ClipShapeError):
        kind = {
            cs.InvalidArgumentError: "Invalid input",
            cs.FileIOError: "File error",
            cs.ModelFormatError: "Model file not usable",
            cs.ModelMismatchError: "Files do not belong together",
            cs.OutOfMemoryError: "Out of memory",
            cs.DeviceError: "Device not available",
            cs.InternalError: "Internal error",
            cs.IntegrityError: "Model file damaged",
            cs.DownloadError: "Download failed",
            cs.ModelsMissingError: "Model files missing",
            cs.DivergedError: "The optimisation diverged",
        }.get(type(exc), "Error")
        if isinstance(exc, cs.DownloadError) and any(
                u in exc.message.lower() for u in _UNREACHABLE):
            return ("Download failed: the download server cannot be reached (no network, or "
                    "it is blocked here). Details: %s" % exc.message)
        return "%s: %s" % (kind, exc.message)
    return "Unexpected error: %s: %s" % (type(exc).__name__, exc)
