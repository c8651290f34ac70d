"""ctypes binding of libclipshape's C ABI (include/clipshape.h, CS_ABI_VERSION 2).

Shared by the GIMP 3 and Krita plug-ins; it imports nothing from either host and runs on
Python 3.9+ (GIMP 3 uses the system Python, Krita its bundled one).

Two layers:

* ``lib()`` returns the loaded library with ``argtypes``/``restype`` set for every function
  of the header; the ``cs_*`` structs are ``ctypes.Structure`` classes of the same names.
* The Python API: ``Context`` (models on a device), ``Latent``, ``Shift``, ``Picture`` and the
  module functions ``version()``, ``cuda_device_count()``, ``models_check()``,
  ``models_fetch()``. Every failing call raises the ``ClipShapeError`` subclass of its
  ``cs_status`` with the library's ``cs_last_error()`` message.

Finding the library, first match wins: the ``path`` given to ``load_library()`` /
``set_library_path()`` (a plug-in setting), ``$CLIPSHAPE_LIB``, ``libclipshape.so`` next to
this file, then the system loader (``LD_LIBRARY_PATH``, ldconfig).

    ctx = Context(generator="e4e.pt", clip="clip_jit.pt", vocab="bpe_simple_vocab_16e6.txt.gz",
                  device="cpu")
    latent, recon = ctx.encode(rgba, width, height, width * 4, "RGBA8")
    shift = ctx.optimize(latent, "face with big nose", steps=100,
                         progress=lambda p: print(p.step, p.total, p.clip_sim))
    images = ctx.render(latent, [(shift, 1.0)], [-3, 0, 3], "RGBA8", target=(width, height))
    shift.save("big-nose.safetensors")
    ctx.close()
"""

import contextlib
import ctypes
import math
import numbers
import os
import sys
import threading
from collections import namedtuple
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_float, c_int32, c_int64,
                    c_size_t, c_uint8, c_uint32, c_uint64, c_void_p)

ABI_VERSION = 2
LIBRARY_NAME = "libclipshape.so"
ENV_LIBRARY = "CLIPSHAPE_LIB"

# ───────────────────────────── enums ─────────────────────────────

STATUS_OK = 0
STATUS_INVALID_ARGUMENT = 1
STATUS_IO = 2
STATUS_MODEL_FORMAT = 3
STATUS_MODEL_MISMATCH = 4
STATUS_OUT_OF_MEMORY = 5
STATUS_DEVICE = 6
STATUS_CANCELLED = 7
STATUS_INTERNAL = 8
STATUS_INTEGRITY = 9
STATUS_DOWNLOAD = 10
STATUS_DIVERGED = 11
STATUS_MODELS_MISSING = 12

PIXEL_FORMATS = {"RGBA8": 0, "BGRA8": 1, "RGB8": 2}
BYTES_PER_PIXEL = {"RGBA8": 4, "BGRA8": 4, "RGB8": 3}

DEVICE_AUTO = 0
DEVICE_CPU = 1
DEVICE_CUDA = 2

# cs_method (include/clipshape.h).
METHODS = {"shift": 0, "latent": 1}
# cs_paste_mode: how layers go back onto the photo ("warp", the default, moves its own pixels).
PASTE_MODES = {"warp": 3, "changes": 0, "region": 1, "frame": 2}


# ───────────────────────────── errors ────────────────────────────

class ClipShapeError(Exception):
    """A libclipshape call failed; ``status`` is the cs_status, ``message`` cs_last_error()."""

    status = None

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidArgumentError(ClipShapeError, ValueError):
    status = STATUS_INVALID_ARGUMENT


class FileIOError(ClipShapeError, OSError):
    """CS_STATUS_IO: a file could not be read or written (also: model files missing)."""
    status = STATUS_IO

    def __str__(self):  # OSError would format "[Errno …]"; keep the library's message
        return self.message


class ModelFormatError(ClipShapeError):
    status = STATUS_MODEL_FORMAT


class ModelMismatchError(ClipShapeError):
    status = STATUS_MODEL_MISMATCH


class OutOfMemoryError(ClipShapeError):
    status = STATUS_OUT_OF_MEMORY


class DeviceError(ClipShapeError):
    status = STATUS_DEVICE


class CancelledError(ClipShapeError):
    status = STATUS_CANCELLED

    def __init__(self, message="cancelled", status=None):
        super().__init__(message, status)


class InternalError(ClipShapeError):
    status = STATUS_INTERNAL


# The store's failures are file errors too (callers written against CS_STATUS_IO keep working),
# told apart so a host can offer the right remedy.
class IntegrityError(FileIOError):
    """CS_STATUS_INTEGRITY: a model file has the wrong size or SHA-256 (moved aside)."""
    status = STATUS_INTEGRITY


class DownloadError(FileIOError):
    """CS_STATUS_DOWNLOAD: an HTTP error or network failure; the partial file is kept."""
    status = STATUS_DOWNLOAD


class ModelsMissingError(FileIOError):
    """CS_STATUS_MODELS_MISSING: model files are absent; the message names them and their URLs."""
    status = STATUS_MODELS_MISSING


class DivergedError(ClipShapeError):
    """CS_STATUS_DIVERGED: the optimisation's loss became NaN or infinite."""
    status = STATUS_DIVERGED


class LibraryNotFoundError(ClipShapeError, ImportError):
    """libclipshape.so could not be found or loaded (not a cs_status)."""

    def __init__(self, message):
        ClipShapeError.__init__(self, message)


ERRORS = {cls.status: cls for cls in (InvalidArgumentError, FileIOError, ModelFormatError,
                                       ModelMismatchError, OutOfMemoryError, DeviceError,
                                       CancelledError, InternalError, IntegrityError,
                                       DownloadError, ModelsMissingError, DivergedError)}


def error_for_status(status, message):
    """The exception for a cs_status (an unknown code becomes InternalError)."""
    cls = ERRORS.get(status)
    if cls is None:
        return InternalError("status %d: %s" % (status, message), status)
    return cls(message or "failed (%s)" % cls.__name__, status)


# ───────────────────────────── structs ───────────────────────────

class cs_ctx(Structure):
    """Opaque."""


class cs_latent(Structure):
    """Opaque."""


class cs_shift(Structure):
    """Opaque."""


class cs_images(Structure):
    """Opaque."""


class cs_model_sets(Structure):
    """Opaque."""


class cs_context_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("generator_path", c_char_p),
        ("encoder_path", c_char_p),
        ("clip_path", c_char_p),
        ("vocab_path", c_char_p),
        ("set_name", c_char_p),
        ("models_dir", c_char_p),
        ("device", c_int32),
        ("device_index", c_int32),
        ("n_threads", c_int32),
        ("clip_text_heads", c_int32),
        ("face_detector_dir", c_char_p),
    ]


class cs_face(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("bbox", c_float * 4),
        ("score", c_float),
        ("landmarks", c_float * 10),
        ("quad", c_float * 8),
    ]


class cs_faces(Structure):
    """Opaque."""


class cs_paste_params(Structure):
    """Its fields are set below cs_image, which it points to."""


class cs_transfer(Structure):
    """Opaque."""


class cs_generator_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("resolution", c_uint32),
        ("n_latent", c_uint32),
        ("style_dim", c_uint32),
        ("n_layers", c_uint32),
    ]


class cs_domain_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("name", c_char * 32),
        ("frame_left", c_uint32),
        ("frame_top", c_uint32),
        ("frame_width", c_uint32),
        ("frame_height", c_uint32),
        ("has_encoder", c_int32),
        ("has_clip", c_int32),
        ("default_layer", c_char * 32),
        ("default_lambda2", c_float),
    ]


class cs_model_set_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("name", c_char_p),
        ("description", c_char_p),
        ("complete", c_int32),
        ("download_bytes", c_uint64),
        ("licences", c_char_p),
        ("n_prompts", c_size_t),
        ("prompts", POINTER(c_char_p)),
    ]


class cs_layer_info(Structure):
    _fields_ = [
        ("name", c_char * 32),
        ("resolution", c_uint32),
        ("wplus_index", c_uint32),
        ("weight_shape", c_int64 * 5),
        ("weight_numel", c_uint64),
    ]


class cs_shift_ref(Structure):
    _fields_ = [("shift", POINTER(cs_shift)), ("strength", c_float)]


class cs_render_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("shifts", POINTER(cs_shift_ref)),
        ("n_shifts", c_size_t),
        ("strengths", POINTER(c_float)),
        ("n_strengths", c_size_t),
        ("format", c_int32),
        ("max_batch", c_uint32),
        ("target_width", c_uint32),
        ("target_height", c_uint32),
    ]


class cs_image(Structure):
    _fields_ = [
        ("data", POINTER(c_uint8)),
        ("width", c_uint32),
        ("height", c_uint32),
        ("stride", c_uint32),
        ("format", c_int32),
    ]


cs_paste_params._fields_ = [
    ("struct_size", c_uint32),
    ("mode", c_int32),
    ("face", POINTER(cs_face)),
    ("bbox", c_float * 4),
    ("photo_width", c_uint32),
    ("photo_height", c_uint32),
    ("photo", POINTER(cs_image)),
]


def _nullable(fn_type):
    """A callback type that also takes None (NULL), as the header allows for every callback."""
    class Nullable(fn_type):
        _flags_ = fn_type._flags_
        _restype_ = fn_type._restype_
        _argtypes_ = fn_type._argtypes_

        @classmethod
        def from_param(cls, obj):
            if obj is None:
                return c_void_p(None)
            return fn_type.from_param(obj)
    Nullable.__name__ = fn_type.__name__
    return Nullable


cs_progress_fn = _nullable(CFUNCTYPE(c_int32, c_void_p, c_int32, c_int32, c_float, c_float))
cs_fetch_progress_fn = _nullable(CFUNCTYPE(c_int32, c_void_p, c_char_p, c_uint64, c_uint64))
cs_log_fn = _nullable(CFUNCTYPE(None, c_void_p, c_int32, c_char_p))
cs_preview_fn = _nullable(CFUNCTYPE(c_int32, c_void_p, c_int32, POINTER(cs_image)))


class cs_optimize_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("prompt", c_char_p),
        ("neutral", c_char_p),
        ("layer", c_char_p),
        ("method", c_int32),
        ("lambda1", c_float),
        ("lambda2", c_float),
        ("latent_l2", c_float),
        ("steps", c_int32),
        ("lr", c_float),
        ("strength", c_float),
        ("seed", c_uint64),
        ("truncate_prompt", c_int32),
        ("progress_every", c_int32),
        ("progress", cs_progress_fn),
        ("progress_user", c_void_p),
        ("init_scale", c_float),
        ("optimize_size", c_uint32),
        ("bf16", c_int32),
        ("lambda3", c_float),
        ("region", c_float * 4),
        ("lambda4", c_float),
        ("auto_layers", c_int32),
        ("for_warp", c_int32),
        ("preview_every", c_int32),
        ("preview", cs_preview_fn),
    ]


# name: (restype, argtypes); cs_status returns are c_int32 and checked by _call().
_S = c_int32
_SIGNATURES = {
    "cs_abi_version": (c_uint32, []),
    "cs_version": (c_char_p, []),
    "cs_last_error": (c_char_p, []),
    "cs_cuda_device_count": (c_int32, []),
    "cs_context_params_init": (_S, [POINTER(cs_context_params)]),
    "cs_context_create": (_S, [POINTER(cs_context_params), POINTER(POINTER(cs_ctx))]),
    "cs_context_free": (None, [POINTER(cs_ctx)]),
    "cs_cancel": (_S, [POINTER(cs_ctx)]),
    "cs_cancel_clear": (_S, [POINTER(cs_ctx)]),
    "cs_set_log": (_S, [c_int32, cs_log_fn, c_void_p]),
    "cs_context_get_domain": (_S, [POINTER(cs_ctx), POINTER(cs_domain_info)]),
    "cs_generator_get_info": (_S, [POINTER(cs_ctx), POINTER(cs_generator_info)]),
    "cs_generator_get_layer": (_S, [POINTER(cs_ctx), c_uint32, POINTER(cs_layer_info)]),
    "cs_latent_from_seed": (_S, [POINTER(cs_ctx), c_uint64, c_float, POINTER(POINTER(cs_latent))]),
    "cs_latent_from_floats": (_S, [POINTER(cs_ctx), POINTER(c_float), c_size_t,
                                   POINTER(POINTER(cs_latent))]),
    "cs_latent_len": (c_size_t, [POINTER(cs_latent)]),
    "cs_latent_to_floats": (_S, [POINTER(cs_latent), POINTER(c_float), c_size_t]),
    "cs_latent_load": (_S, [POINTER(cs_ctx), c_char_p, POINTER(POINTER(cs_latent))]),
    "cs_latent_save": (_S, [POINTER(cs_latent), c_char_p]),
    "cs_latent_free": (None, [POINTER(cs_latent)]),
    "cs_shift_from_floats": (_S, [POINTER(cs_ctx), c_char_p, POINTER(c_float), c_size_t,
                                  POINTER(POINTER(cs_shift))]),
    "cs_shift_get_meta": (c_char_p, [POINTER(cs_shift), c_char_p]),
    "cs_shift_len": (c_size_t, [POINTER(cs_shift)]),
    "cs_shift_layer": (c_char_p, [POINTER(cs_shift)]),
    "cs_shift_to_floats": (_S, [POINTER(cs_shift), POINTER(c_float), c_size_t]),
    "cs_shift_load": (_S, [POINTER(cs_ctx), c_char_p, POINTER(POINTER(cs_shift))]),
    "cs_shift_save": (_S, [POINTER(cs_shift), c_char_p]),
    "cs_shift_free": (None, [POINTER(cs_shift)]),
    "cs_render_params_init": (_S, [POINTER(cs_render_params)]),
    "cs_render": (_S, [POINTER(cs_ctx), POINTER(cs_latent), POINTER(cs_render_params),
                       POINTER(POINTER(cs_images))]),
    "cs_images_count": (c_size_t, [POINTER(cs_images)]),
    "cs_images_get": (_S, [POINTER(cs_images), c_size_t, POINTER(cs_image)]),
    "cs_images_free": (None, [POINTER(cs_images)]),
    "cs_encode": (_S, [POINTER(cs_ctx), POINTER(cs_image), POINTER(POINTER(cs_latent)),
                       POINTER(POINTER(cs_images))]),
    "cs_optimize_params_init": (_S, [POINTER(cs_optimize_params)]),
    "cs_optimize": (_S, [POINTER(cs_ctx), POINTER(cs_latent), POINTER(cs_optimize_params),
                         POINTER(POINTER(cs_shift))]),
    "cs_optimize_batch": (_S, [POINTER(cs_ctx), POINTER(POINTER(cs_latent)), c_size_t,
                               POINTER(c_char_p), c_size_t, POINTER(cs_optimize_params),
                               POINTER(POINTER(cs_shift))]),
    "cs_clip_score": (_S, [POINTER(cs_ctx), POINTER(cs_image), c_char_p, POINTER(c_float)]),
    "cs_models_check": (_S, [c_char_p, c_char_p]),
    "cs_models_list_sets": (_S, [c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    "cs_models_fetch": (_S, [c_char_p, c_char_p, cs_fetch_progress_fn, c_void_p]),
    "cs_subject_region": (_S, [POINTER(cs_ctx), POINTER(cs_paste_params), POINTER(c_float * 4)]),
    "cs_models_dir": (_S, [c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    "cs_models_add": (_S, [c_char_p, c_char_p, c_char_p, c_char_p, c_size_t,
                           POINTER(c_size_t)]),
    "cs_faces_detect": (_S, [POINTER(cs_ctx), POINTER(cs_image), POINTER(POINTER(cs_faces))]),
    "cs_faces_count": (c_size_t, [POINTER(cs_faces)]),
    "cs_faces_get": (_S, [POINTER(cs_faces), c_size_t, POINTER(cs_face)]),
    "cs_faces_pick": (_S, [POINTER(cs_faces), POINTER(c_float), POINTER(c_size_t)]),
    "cs_faces_free": (None, [POINTER(cs_faces)]),
    "cs_encode_face": (_S, [POINTER(cs_ctx), POINTER(cs_image), POINTER(cs_face),
                            POINTER(POINTER(cs_latent))]),
    "cs_paste_params_init": (_S, [POINTER(cs_paste_params)]),
    "cs_render_layers": (_S, [POINTER(cs_ctx), POINTER(cs_latent), POINTER(cs_render_params),
                              POINTER(cs_paste_params), POINTER(POINTER(cs_images))]),
    "cs_images_get_origin": (_S, [POINTER(cs_images), POINTER(c_int32), POINTER(c_int32)]),
    "cs_transfer_create": (_S, [POINTER(cs_ctx), POINTER(cs_latent), POINTER(cs_render_params),
                                POINTER(cs_paste_params), POINTER(POINTER(cs_transfer))]),
    "cs_transfer_layer": (_S, [POINTER(cs_transfer), c_float, c_int32, POINTER(POINTER(cs_images))]),
    "cs_transfer_get_range": (_S, [POINTER(cs_transfer), POINTER(c_float), POINTER(c_float)]),
    "cs_transfer_get_blended": (_S, [POINTER(cs_transfer), c_float, POINTER(c_float)]),
    "cs_transfer_free": (None, [POINTER(cs_transfer)]),
    "cs_models_list": (_S, [c_char_p, POINTER(POINTER(cs_model_sets))]),
    "cs_model_sets_count": (c_size_t, [POINTER(cs_model_sets)]),
    "cs_model_sets_get": (_S, [POINTER(cs_model_sets), c_size_t, POINTER(cs_model_set_info)]),
    "cs_model_sets_free": (None, [POINTER(cs_model_sets)]),
}


# ───────────────────────────── loading ───────────────────────────

_lock = threading.Lock()
_lib = None
_configured_path = None


def set_library_path(path):
    """Use this libclipshape.so (a plug-in setting); takes effect before the first load."""
    global _configured_path
    _configured_path = os.fspath(path) if path else None


# Written by a release's install.sh beside this module: the installed engine's library.
ENGINE_FILE = "libclipshape.path"


def library_candidates(path=None):
    """Where the library is looked for, in order: (description, path) pairs."""
    out = []
    if path or _configured_path:
        out.append(("setting", os.fspath(path or _configured_path)))
    env = os.environ.get(ENV_LIBRARY)
    if env:
        out.append(("$" + ENV_LIBRARY, env))
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        # Bytes: a home folder's name need not be UTF-8.
        with open(os.path.join(here, ENGINE_FILE), "rb") as f:
            out.append(("the installed engine (%s)" % ENGINE_FILE, os.fsdecode(f.read().strip())))
    except OSError:
        pass
    out.append(("next to " + os.path.basename(__file__), os.path.join(here, LIBRARY_NAME)))
    out.append(("system loader", LIBRARY_NAME))
    return out


def _load_failure(error):
    """A loader error in plain words: a system older than the build is the one a person can
    act on (the library names the glibc version it needs)."""
    text = str(error)
    if "GLIBC_" in text:
        needed = text.split("GLIBC_", 1)[1].split("'", 1)[0].split(" ", 1)[0]
        try:
            have = os.confstr("CS_GNU_LIBC_VERSION") or "an older one"
        except (ValueError, OSError):
            have = "an older one"
        return ("this CLIPShape needs a newer system: GNU C library %s or later (this system has %s). "
                "Install a newer Linux, or build CLIPShape from source on this one (%s)"
                % (needed, have.replace("glibc ", ""), text))
    return text


def load_library(path=None):
    """Loads libclipshape (once per process) and returns it with every signature declared."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for origin, candidate in library_candidates(path):
            if origin != "system loader" and not os.path.exists(candidate):
                tried.append("%s: %s (no such file)" % (origin, candidate))
                continue
            try:
                handle = ctypes.CDLL(candidate)
            except OSError as e:
                tried.append("%s: %s (%s)" % (origin, candidate, _load_failure(e)))
                continue
            _lib = _declare(handle, candidate)
            return _lib
        raise LibraryNotFoundError(
            "libclipshape.so was not found or could not be loaded. Tried:\n  " + "\n  ".join(tried)
            + "\nInstall CLIPShape with the release's install.sh (or, from the source, "
            "install/plugins.sh), or set %s to the library's path." % ENV_LIBRARY)


lib = load_library


def _declare(handle, path):
    missing = [name for name in _SIGNATURES if not hasattr(handle, name)]
    if missing:
        raise LibraryNotFoundError("%s lacks %s: it is not a libclipshape of ABI %d"
                                   % (path, ", ".join(missing), ABI_VERSION))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.restype = restype
        fn.argtypes = argtypes
    have = handle.cs_abi_version()
    if have != ABI_VERSION:
        raise LibraryNotFoundError("%s has ABI version %d; this binding needs %d"
                                   % (path, have, ABI_VERSION))
    handle.clipshape_path = path
    return handle


def last_error():
    """cs_last_error() of this thread, decoded."""
    msg = load_library().cs_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def _call(fn, *args):
    status = fn(*args)
    if status != STATUS_OK:
        raise error_for_status(status, last_error())


def _cstr(value, what):
    if value is None:
        return None
    if isinstance(value, bytes):
        raw = value
    else:
        raw = os.fspath(value) if hasattr(value, "__fspath__") else value
        if isinstance(raw, bytes):
            pass
        elif isinstance(raw, str):
            try:
                raw = raw.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidArgumentError("%s is not valid text (%s)" % (what, e.reason)) from None
        else:
            raise InvalidArgumentError("%s must be a string, not %s" % (what, type(value).__name__))
    if b"\0" in raw:
        raise InvalidArgumentError("%s contains a NUL character" % what)
    return raw


INT32 = (-2**31, 2**31 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)


def _int(value, what, lo, hi):
    """An integer in [lo, hi]; ctypes would wrap anything else silently (2**32 + 3 steps = 3)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidArgumentError("%s must be an integer, not %r" % (what, value))
    value = int(value)
    if not lo <= value <= hi:
        raise InvalidArgumentError("%s = %d is outside %d..%d" % (what, value, lo, hi))
    return value


def _format_code(fmt):
    if isinstance(fmt, int):
        if fmt in PIXEL_FORMATS.values():
            return fmt
    elif str(fmt).upper() in PIXEL_FORMATS:
        return PIXEL_FORMATS[str(fmt).upper()]
    raise InvalidArgumentError("pixel format %r is not one of %s" % (fmt, ", ".join(PIXEL_FORMATS)))


def _format_name(code):
    for name, value in PIXEL_FORMATS.items():
        if value == code:
            return name
    return str(code)


def _init(init_fn, struct_type):
    p = struct_type()
    _call(init_fn, ctypes.byref(p))
    if p.struct_size != ctypes.sizeof(struct_type):
        raise LibraryNotFoundError(
            "%s is %d bytes in the library and %d in this binding: library and plug-in versions "
            "differ" % (struct_type.__name__, p.struct_size, ctypes.sizeof(struct_type)))
    return p


# ───────────────────────────── module functions ──────────────────

def version():
    return load_library().cs_version().decode()


def abi_version():
    return load_library().cs_abi_version()


def cuda_device_count():
    return load_library().cs_cuda_device_count()


DomainInfo = namedtuple(
    "DomainInfo", "name frame has_encoder has_clip default_layer default_lambda2")
ModelSet = namedtuple("ModelSet", "name complete prompts description download_bytes licences")


def models_list_sets(models_dir=None):
    """The model sets that edit pictures: whether their files are present, how many bytes a
    download still needs, the licences of those files, and example prompts."""
    lib = load_library()
    handle = POINTER(cs_model_sets)()
    d = _cstr(models_dir, "models_dir") if models_dir else None
    _call(lib.cs_models_list, d, ctypes.byref(handle))
    try:
        out = []
        for i in range(lib.cs_model_sets_count(handle)):
            info = cs_model_set_info()
            _call(lib.cs_model_sets_get, handle, i, ctypes.byref(info))
            text = lambda b: (b or b"").decode("utf-8", "replace")  # noqa: E731
            out.append(ModelSet(text(info.name), bool(info.complete),
                                [text(info.prompts[j]) for j in range(info.n_prompts)],
                                text(info.description), int(info.download_bytes),
                                text(info.licences)))
        return out
    finally:
        lib.cs_model_sets_free(handle)


def models_check(set_name, models_dir=None):
    """Returns None when every file of ``set_name`` is present; raises ModelsMissingError (a
    FileIOError) naming the missing files, their URLs and where to put them otherwise."""
    L = load_library()
    _call(L.cs_models_check, _cstr(models_dir, "models_dir"), _cstr(set_name, "set_name"))


def models_missing(set_name, models_dir=None):
    """The library's message about missing files of ``set_name``, or None when complete."""
    try:
        models_check(set_name, models_dir)
    except FileIOError as e:
        return e.message
    return None


def _text_out(fn, *args):
    """A library call that writes text into a caller's buffer (buf, cap, needed): asks once
    with a guess and again with the size the text needs."""
    cap = 1024
    while True:
        buf = ctypes.create_string_buffer(cap)
        needed = c_size_t(0)
        _call(fn, *args, buf, cap, ctypes.byref(needed))
        if needed.value <= cap:
            return buf.value.decode("utf-8", "replace")
        cap = needed.value


def models_dir(models_dir=None):
    """The model store's folder (None = the default: $CLIPSHAPE_MODELS, else the user's data
    folder)."""
    L = load_library()
    return _text_out(L.cs_models_dir, _cstr(models_dir, "models_dir") if models_dir else None)


def models_add(set_name, path, models_dir=None):
    """Registers a model file the user already has as a file of ``set_name`` (its name or size
    says which; its size and SHA-256 are checked) by copying it into the store; the user's file
    is left as it is → the stored file's path."""
    L = load_library()
    d = _cstr(models_dir, "models_dir") if models_dir else None
    # One call (it copies and hashes gigabytes): a buffer no path exceeds (PATH_MAX + NUL).
    cap = 4097
    buf = ctypes.create_string_buffer(cap)
    needed = c_size_t(0)
    _call(L.cs_models_add, d, _cstr(set_name, "set_name"), _cstr(path, "path"), buf, cap,
          ctypes.byref(needed))
    return buf.value.decode("utf-8", "replace")


def models_fetch(set_name, models_dir=None, progress=None):
    """Downloads the missing files of a set. ``progress(file, done, total)``; returning False
    (or raising) stops the download (the partial file is kept and resumed later)."""
    L = load_library()
    box = _CallbackBox(progress)

    def trampoline(_user, file, done, total):
        name = file.decode("utf-8", "replace") if file else ""
        return box.invoke(name, done, total)

    cb = cs_fetch_progress_fn(trampoline) if progress is not None else cs_fetch_progress_fn()
    try:
        _call(L.cs_models_fetch, _cstr(models_dir, "models_dir"), _cstr(set_name, "set_name"),
              cb, None)
    except CancelledError:
        box.reraise()
        raise
    box.reraise()


class _CallbackBox:
    """Runs a Python callback for C; an exception stops the C loop and is re-raised after."""

    def __init__(self, fn, cancelled=None):
        self.fn = fn
        self.cancelled = cancelled
        self.error = None

    def invoke(self, *args):
        if self.cancelled is not None and self.cancelled():
            return 1
        if self.fn is None:
            return 0
        try:
            result = self.fn(*args)
        except BaseException as e:  # noqa: B902 — must not unwind through C
            self.error = e
            return 1
        return 1 if result is False else 0

    def reraise(self):
        if self.error is not None:
            e, self.error = self.error, None
            raise e


# ───────────────────────────── pictures ──────────────────────────

class Picture(namedtuple("Picture", "data width height stride format x y", defaults=(0, 0))):
    """8-bit pixels: ``data`` bytes, ``stride`` bytes per row, ``format`` a PIXEL_FORMATS name;
    ``x``, ``y``: where a layer goes in the photo (0, 0 for other pictures)."""

    __slots__ = ()


class Face(namedtuple("Face", "box score landmarks quad")):
    """A face in a photo, photo pixels: ``box`` (x1, y1, x2, y2), ``landmarks`` 5 × (x, y) (eyes,
    nose, mouth corners), ``quad`` 4 × (x, y) (the FFHQ crop's corners)."""

    __slots__ = ()

    def _struct(self):
        f = cs_face()
        f.struct_size = ctypes.sizeof(cs_face)
        f.bbox[:] = [float(v) for v in self.box]
        f.score = float(self.score)
        f.landmarks[:] = [float(v) for p in self.landmarks for v in p]
        f.quad[:] = [float(v) for p in self.quad for v in p]
        return f

    @classmethod
    def _of(cls, f):
        pairs = lambda a: [(a[i], a[i + 1]) for i in range(0, len(a), 2)]  # noqa: E731
        return cls(tuple(f.bbox), f.score, pairs(list(f.landmarks)), pairs(list(f.quad)))


def _image_view(pixels, width, height, stride, fmt):
    """A cs_image over ``pixels`` (bytes, bytearray, memoryview) and what keeps it alive."""
    code = _format_code(fmt)
    bpp = BYTES_PER_PIXEL[_format_name(code)]
    width, height = _int(width, "width", 0, UINT32[1]), _int(height, "height", 0, UINT32[1])
    stride = _int(stride, "stride", 0, UINT32[1]) if stride else width * bpp
    if width <= 0 or height <= 0:
        raise InvalidArgumentError("image %d×%d has no pixels" % (width, height))
    if stride < width * bpp:
        raise InvalidArgumentError("stride %d is less than width %d × %d bytes per pixel"
                                   % (stride, width, bpp))
    if not isinstance(pixels, bytes):
        raw = memoryview(pixels)
        if raw.itemsize != 1:
            raise InvalidArgumentError("pixels are %d-byte %r items: give 8-bit values (bytes, "
                                       "bytearray, a uint8 array)" % (raw.itemsize, raw.format))
    view = memoryview(pixels).cast("B") if not isinstance(pixels, bytes) else None
    size = len(pixels) if view is None else view.nbytes
    need = stride * (height - 1) + width * bpp
    if size < need:
        raise InvalidArgumentError("image data holds %d bytes; %d×%d with stride %d needs %d"
                                   % (size, width, height, stride, need))
    if view is None:
        keep = pixels
        ptr = ctypes.cast(c_char_p(pixels), POINTER(c_uint8))
    elif view.readonly:
        keep = (c_uint8 * size).from_buffer_copy(view)
        ptr = ctypes.cast(keep, POINTER(c_uint8))
    else:
        keep = (c_uint8 * size).from_buffer(view)
        ptr = ctypes.cast(keep, POINTER(c_uint8))
    img = cs_image(ptr, width, height, stride, code)
    return img, keep


def _pictures(images_ptr):
    """Copies every image of a cs_images into Pictures and frees it."""
    L = load_library()
    try:
        out = []
        for i in range(L.cs_images_count(images_ptr)):
            v = cs_image()
            _call(L.cs_images_get, images_ptr, i, ctypes.byref(v))
            n = v.stride * v.height
            data = ctypes.string_at(v.data, n)
            x, y = c_int32(0), c_int32(0)
            _call(L.cs_images_get_origin, images_ptr, ctypes.byref(x), ctypes.byref(y))
            out.append(Picture(data, v.width, v.height, v.stride, _format_name(v.format),
                               x.value, y.value))
        return out
    finally:
        L.cs_images_free(images_ptr)


# ───────────────────────────── handles ───────────────────────────

class _Handle:
    """Owns one library object; close() (or the with-block, or garbage collection) frees it.

    Latents, shifts and transfers are read-only once made, so several threads may use one at
    once (a strength slider's thread and the UI's); ``close`` waits until no call of this
    module is using it (its lock), so a Close button never frees what a slider reads."""

    _free_name = None

    def __init__(self, ptr):
        self._ptr = ptr
        self._lib = load_library()
        self._lock = threading.RLock()

    @property
    def ptr(self):
        if not self._ptr:
            raise InvalidArgumentError("%s is closed" % type(self).__name__)
        return self._ptr

    @property
    def closed(self):
        return not self._ptr

    def close(self):
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ never ran
            return
        with lock:
            ptr, self._ptr = getattr(self, "_ptr", None), None
            if ptr:
                getattr(self._lib, self._free_name)(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


@contextlib.contextmanager
def _holding(*handles):
    """Holds the locks of ``handles`` (in one order, so two threads cannot deadlock) while a
    call uses their pointers: none of them is freed meanwhile."""
    with contextlib.ExitStack() as stack:
        for h in sorted({id(h): h for h in handles}.values(), key=id):
            stack.enter_context(h._lock)
        yield


class _Floats(_Handle):
    """A handle over floats with `<prefix>_len`, `_to_floats`, `_save` and `_free` in the ABI."""

    _prefix = None

    def __len__(self):
        with self._lock:
            return getattr(self._lib, self._prefix + "_len")(self.ptr)

    def to_floats(self):
        with self._lock:
            n = len(self)
            buf = (c_float * n)()
            _call(getattr(self._lib, self._prefix + "_to_floats"), self.ptr, buf, n)
            return list(buf)

    def save(self, path):
        """Writes safetensors atomically (a temporary file renamed)."""
        with self._lock:
            _call(getattr(self._lib, self._prefix + "_save"), self.ptr, _cstr(path, "path"))


class Latent(_Floats):
    """A W+ latent (n_latent × style_dim floats); saved as safetensors `wplus`."""

    _prefix = "cs_latent"
    _free_name = "cs_latent_free"

    @classmethod
    def load(cls, ctx, path):
        return ctx.load_latent(path)


class Shift(_Floats):
    """A learnt edit with its metadata: a weight shift of one generator layer (saved as
    safetensors `shift` + metadata), of several learnt together (``layer`` lists them,
    "convs.3,convs.5"; saved as `shift.<layer>` each), or a W+ direction ("wplus")."""

    _prefix = "cs_shift"
    _free_name = "cs_shift_free"

    @property
    def layer(self):
        with self._lock:
            raw = self._lib.cs_shift_layer(self.ptr)
            return raw.decode("utf-8", "replace") if raw else None

    def meta(self, key, default=None):
        """A metadata value (`prompt`, `layer`, `clip_sim_before`, `clip_sim_after`, `lambda2`,
        `model`, …) as a string, or ``default`` when absent."""
        with self._lock:
            raw = self._lib.cs_shift_get_meta(self.ptr, _cstr(key, "key"))
            return raw.decode("utf-8", "replace") if raw is not None else default

    @classmethod
    def load(cls, ctx, path):
        """Loads a shift file, refusing one that does not fit ``ctx``'s generator."""
        return ctx.load_shift(path)


GeneratorInfo = namedtuple("GeneratorInfo", "resolution n_latent style_dim n_layers")
LayerInfo = namedtuple("LayerInfo", "name resolution wplus_index weight_shape weight_numel")
Progress = namedtuple("Progress", "step total loss clip_sim")


def parse_device(device):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' (or 'gpu') → (cs_device_kind, index)."""
    d = (device or "auto").strip().lower()
    if d == "auto":
        return DEVICE_AUTO, 0
    if d == "cpu":
        return DEVICE_CPU, 0
    if d in ("cuda", "gpu"):
        return DEVICE_CUDA, 0
    for prefix in ("cuda:", "gpu:"):
        if d.startswith(prefix) and d[len(prefix):].isdigit():
            return DEVICE_CUDA, int(d[len(prefix):])
    raise InvalidArgumentError("device %r is not auto, cpu, cuda or cuda:N" % device)


class Context(_Handle):
    """Models on a device: the generator, the e4e encoder and CLIP.

    Either a model set of the manifest (``set_name`` = ffhq, car, horse; files from
    ``models_dir``) or explicit files; explicit files override the set's. One thread uses a
    context at a time (calls are serialised by a lock); ``cancel()`` may come from any thread.
    """

    _free_name = "cs_context_free"

    def __init__(self, generator=None, encoder=None, clip=None, vocab=None, set_name=None,
                 models_dir=None, device="cpu", n_threads=0, clip_text_heads=0,
                 face_detector_dir=None):
        self._ptr = None
        self._lib = load_library()
        L = self._lib
        if not generator and not set_name:
            raise InvalidArgumentError("no model: give a model set (ffhq, car, horse) or a "
                                       "generator file")
        kind, index = parse_device(device)
        p = _init(L.cs_context_params_init, cs_context_params)
        keep = []

        def s(value, what):
            raw = _cstr(value or None, what)
            keep.append(raw)
            return raw

        p.generator_path = s(generator, "generator")
        p.encoder_path = s(encoder, "encoder")
        p.clip_path = s(clip, "clip")
        p.vocab_path = s(vocab, "vocab")
        p.set_name = s(set_name, "set_name")
        p.models_dir = s(models_dir, "models_dir")
        p.face_detector_dir = s(face_detector_dir, "face_detector_dir")
        p.device, p.device_index = kind, index
        p.n_threads = _int(n_threads, "n_threads", 0, INT32[1])
        p.clip_text_heads = _int(clip_text_heads, "clip_text_heads", 0, INT32[1])
        out = POINTER(cs_ctx)()
        _call(L.cs_context_create, ctypes.byref(p), ctypes.byref(out))
        self._ptr = out
        self._op_lock = threading.RLock()   # one operation at a time
        self._ptr_lock = threading.Lock()   # cancel() vs close()
        self._cancel_requested = False
        self._close_when_done = False
        self._in_job = 0
        self._frame = None
        self.device = device

    # — life cycle —

    def close(self):
        """Frees the models. A running operation is cancelled and waited for first; called
        from inside one (a progress or preview callback), the models are freed once it has
        returned (it raises CancelledError)."""
        if not getattr(self, "_ptr", None):
            return
        if getattr(self._op_lock, "_is_owned", lambda: False)():
            self._close_when_done = True
            self.cancel()
            return
        self.cancel()
        with self._op_lock:
            with self._ptr_lock:
                ptr, self._ptr = self._ptr, None
            if ptr:
                self._lib.cs_context_free(ptr)

    def _close_if_asked(self):
        """Frees the models when close() was called from inside the operation that just ended."""
        if self._close_when_done and not getattr(self._op_lock, "_is_owned", lambda: False)():
            self._close_when_done = False
            self.close()

    def cancel(self):
        """Asks the running (or the next) step of the current job to stop; thread-safe.
        The interrupted call raises CancelledError."""
        self._cancel_requested = True
        with self._ptr_lock:
            if self._ptr:
                self._lib.cs_cancel(self._ptr)

    @property
    def cancel_requested(self):
        return self._cancel_requested

    def check_cancelled(self):
        if self._cancel_requested:
            raise CancelledError("cancelled")

    def job(self):
        """``with ctx.job():`` groups calls into one cancellable job: a cancel() during any of
        them (even between calls) stops the job. Outside a job each optimize() starts fresh."""
        return _Job(self)

    # — facts —

    def generator_info(self):
        info = cs_generator_info()
        with self._op_lock:
            _call(self._lib.cs_generator_get_info, self.ptr, ctypes.byref(info))
        return GeneratorInfo(info.resolution, info.n_latent, info.style_dim, info.n_layers)

    def layers(self):
        """Every layer a shift can be learnt for, in forward order."""
        out = []
        with self._op_lock:
            n = self.generator_info().n_layers
            for i in range(n):
                li = cs_layer_info()
                _call(self._lib.cs_generator_get_layer, self.ptr, i, ctypes.byref(li))
                out.append(LayerInfo(li.name.decode("utf-8", "replace"), li.resolution,
                                     li.wplus_index, tuple(li.weight_shape), li.weight_numel))
        return out

    def domain(self):
        """The picture domain: frame inside the generator output and editing defaults."""
        d = cs_domain_info()
        with self._op_lock:
            _call(self._lib.cs_context_get_domain, self.ptr, ctypes.byref(d))
        return DomainInfo(d.name.decode("utf-8", "replace"),
                          (d.frame_left, d.frame_top, d.frame_width, d.frame_height),
                          bool(d.has_encoder), bool(d.has_clip),
                          d.default_layer.decode("utf-8", "replace"), d.default_lambda2)

    def frame_size(self):
        """(width, height) of the domain's frame (the picture part of the generator output)."""
        if self._frame is None:
            frame = self.domain().frame
            self._frame = (frame[2], frame[3])
        return self._frame

    # — latents and shifts —

    def latent_from_seed(self, seed, truncation=0.7):
        out = POINTER(cs_latent)()
        with self._op_lock:
            _call(self._lib.cs_latent_from_seed, self.ptr, _int(seed, "seed", *UINT64), float(truncation),
                  ctypes.byref(out))
        return Latent(out)

    def latent_from_floats(self, values):
        values = list(values)
        buf = (c_float * len(values))(*values)
        out = POINTER(cs_latent)()
        with self._op_lock:
            _call(self._lib.cs_latent_from_floats, self.ptr, buf, len(values), ctypes.byref(out))
        return Latent(out)

    def load_latent(self, path):
        out = POINTER(cs_latent)()
        with self._op_lock:
            _call(self._lib.cs_latent_load, self.ptr, _cstr(path, "path"), ctypes.byref(out))
        return Latent(out)

    def shift_from_floats(self, layer, values):
        values = list(values)
        buf = (c_float * len(values))(*values)
        out = POINTER(cs_shift)()
        with self._op_lock:
            _call(self._lib.cs_shift_from_floats, self.ptr, _cstr(layer, "layer"), buf,
                  len(values), ctypes.byref(out))
        return Shift(out)

    def load_shift(self, path):
        out = POINTER(cs_shift)()
        with self._op_lock:
            _call(self._lib.cs_shift_load, self.ptr, _cstr(path, "path"), ctypes.byref(out))
        return Shift(out)

    # — the method —

    def encode(self, pixels, width, height, stride=0, fmt="RGBA8", recon=True):
        """Inverts a picture (the whole view) with e4e → (Latent, recon Picture or None).
        ``recon`` is the latent rendered back at the picture's size and format."""
        img, keep = _image_view(pixels, width, height, stride, fmt)
        out = POINTER(cs_latent)()
        rec = POINTER(cs_images)()
        with self._op_lock:
            self._begin_op()
            _call(self._lib.cs_encode, self.ptr, ctypes.byref(img), ctypes.byref(out),
                  ctypes.byref(rec) if recon else None)
        del keep
        latent = Latent(out)
        pictures = _pictures(rec) if recon and rec else []
        return latent, (pictures[0] if pictures else None)

    # optimize()'s keywords and their defaults (None: the library's, i.e. the model set's).
    _OPTIMIZE_KEYWORDS = dict(layer=None, steps=100, lambda1=None, lambda2=None, lr=None,
                              strength=None, seed=0, neutral=None, method="shift",
                              latent_l2=None, truncate_prompt=False, progress_every=1,
                              optimize_size=0, bf16=False, lambda3=0.0, region=None, lambda4=0.0,
                              auto_layers=1, for_warp=False)

    def _optimize_params(self, keep, **request):
        """cs_optimize_params from optimize()'s keywords (an unknown one is a TypeError)."""
        unknown = set(request) - set(self._OPTIMIZE_KEYWORDS)
        if unknown:
            raise TypeError("unexpected arguments: %s" % ", ".join(sorted(unknown)))
        r = dict(self._OPTIMIZE_KEYWORDS, **request)
        layer, neutral, method = r["layer"], r["neutral"], r["method"]
        lambda1, lambda2, lr, strength, latent_l2 = (r["lambda1"], r["lambda2"], r["lr"],
                                                     r["strength"], r["latent_l2"])
        steps, seed, truncate_prompt, progress_every = (r["steps"], r["seed"],
                                                        r["truncate_prompt"], r["progress_every"])
        optimize_size, bf16, lambda3, region = (r["optimize_size"], r["bf16"], r["lambda3"],
                                                r["region"])
        lambda4, auto_layers = r["lambda4"], r["auto_layers"]
        p = _init(self._lib.cs_optimize_params_init, cs_optimize_params)

        def s(value, what):
            raw = _cstr(value, what)
            keep.append(raw)
            return raw

        if layer is not None and not isinstance(layer, str):
            # Several layers, learnt jointly into one shift.
            names = list(layer)
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                raise InvalidArgumentError("layer: give layer names such as [\"convs.3\", "
                                           "\"convs.5\"], got %r" % (layer,))
            layer = ",".join(names)
        if layer:
            p.layer = s(layer, "layer")
        if neutral:
            p.neutral = s(neutral, "neutral")
        if method not in METHODS:
            raise InvalidArgumentError("method %r is not one of %s" % (method, ", ".join(METHODS)))
        p.method = METHODS[method]
        for name, value in (("lambda1", lambda1), ("lambda2", lambda2), ("lr", lr),
                            ("strength", strength), ("latent_l2", latent_l2)):
            if value is not None:
                value = float(value)
                if math.isnan(value):
                    raise InvalidArgumentError("%s is NaN" % name)
                setattr(p, name, value)
        if steps is not None:
            p.steps = _int(steps, "steps", 1, INT32[1])
        p.seed = _int(seed, "seed", *UINT64)
        p.truncate_prompt = 1 if truncate_prompt else 0
        p.progress_every = _int(progress_every, "progress_every", 1, INT32[1])
        p.optimize_size = _int(optimize_size or 0, "optimize_size", 0, 2 ** 31 - 1)
        p.bf16 = 1 if bf16 else 0
        p.lambda3 = float(lambda3 or 0.0)
        if math.isnan(p.lambda3):
            raise InvalidArgumentError("lambda3 is NaN")
        if region is not None:
            box = [float(v) for v in region]
            if len(box) != 4:
                raise InvalidArgumentError("region must be (x1, y1, x2, y2), got %r" % (region,))
            p.region = (c_float * 4)(*box)
        # "default": the library's λ4 for prompts learnt jointly (sent as a negative value).
        p.lambda4 = -1.0 if lambda4 == "default" else float(lambda4 or 0.0)
        if math.isnan(p.lambda4):
            raise InvalidArgumentError("lambda4 is NaN")
        p.auto_layers = _int(auto_layers, "auto_layers", 1, INT32[1])
        p.for_warp = 1 if r["for_warp"] else 0
        return p

    def _progress_box(self, progress):
        def user(step, total, loss, clip_sim):
            return progress(Progress(step, total, loss, clip_sim))
        return _CallbackBox(user if progress is not None else None,
                            cancelled=lambda: self._cancel_requested)

    def _callbacks(self, p, progress, preview, preview_every):
        """Puts the progress (and preview) trampolines into ``p`` → the boxes to re-raise from.
        ``preview(step, Picture)`` gets the picture as it is (the frame, RGBA8) at step 1 and
        every ``preview_every`` steps (default 10)."""
        box = self._progress_box(progress)
        p.progress = cs_progress_fn(lambda _u, step, total, loss, sim:
                                    box.invoke(step, total, loss, sim))
        boxes = [box]
        if preview is not None:
            def picture(step, image):
                im = image.contents
                data = ctypes.string_at(im.data, im.stride * im.height)
                return preview(step, Picture(data, im.width, im.height, im.stride,
                                             _format_name(im.format)))
            pbox = _CallbackBox(picture, cancelled=lambda: self._cancel_requested)
            p.preview = cs_preview_fn(lambda _u, step, image: pbox.invoke(step, image))
            p.preview_every = _int(preview_every or 10, "preview_every", 1, INT32[1])
            boxes.append(pbox)
        return boxes

    @staticmethod
    def _reraise(boxes):
        for b in boxes:
            b.reraise()

    def optimize(self, latent, prompt, progress=None, **request):
        """Learns a shift moving ``latent``'s picture toward ``prompt`` → Shift.

        None keeps the library's default (layer: the model set's; lambda2: the set's).
        ``layer`` may list several layers ("convs.3,convs.5" or a list), learnt jointly into
        one shift; "auto" probes the shape layers and keeps the ``auto_layers`` best.
        ``optimize_size`` (e.g. 256) optimises on the generator's output stopped at that side
        (faster on a CPU; the results are still full size); ``bf16`` runs the generator's wide
        layers in bfloat16 while optimising. ``lambda3`` > 0 adds the preservation term: the
        mean squared change of the picture outside ``region`` ((x1, y1, x2, y2) in generator
        pixels; None = everywhere). ``for_warp`` says the picture will be moved by a warp
        transfer (Context.transfer): the loop then stops at the flow's side unless
        ``optimize_size`` says otherwise. Other keywords: ``steps``, ``lambda1``, ``lambda2``,
        ``lr``, ``strength``, ``seed``, ``neutral``, ``method``, ``latent_l2``,
        ``truncate_prompt``, ``progress_every`` (see cs_optimize_params).
        ``progress(Progress(step, total, loss, clip_sim))``: return False or raise to stop
        (a raised exception is re-raised here; False raises CancelledError).
        ``preview(step, Picture)`` (with ``preview_every``, default 10): the picture as it is
        now (the domain's frame at the loop's side, RGBA8) at step 1 and every that many
        steps, from what the step rendered anyway; returning False stops as progress's.
        """
        if prompt is None or not str(prompt).strip():
            raise InvalidArgumentError("prompt is empty: describe the edit, e.g. "
                                       "\"face with big nose\"")
        if "lambda4" in request:
            raise TypeError("lambda4 separates several prompts: use optimize_batch")
        preview, preview_every = request.pop("preview", None), request.pop("preview_every", 0)
        keep = []
        p = self._optimize_params(keep, **request)
        p.prompt = _cstr(prompt, "prompt")
        keep.append(p.prompt)
        boxes = self._callbacks(p, progress, preview, preview_every)
        out = POINTER(cs_shift)()
        try:
            with self._op_lock, _holding(latent):
                self._begin_op()
                try:
                    _call(self._lib.cs_optimize, self.ptr, latent.ptr, ctypes.byref(p),
                          ctypes.byref(out))
                except CancelledError:
                    self._reraise(boxes)
                    raise
        finally:
            self._close_if_asked()
        self._reraise(boxes)  # `p` (and the callbacks it holds) stayed alive through the call
        return Shift(out)

    def optimize_batch(self, latents, prompts, **kw):
        """Several edits in one batch: N prompts × 1 latent, 1 × N, or N × N → [Shift].

        Takes ``optimize``'s keywords, and ``lambda4`` > 0 for N prompts on ONE latent: the
        prompts are learnt jointly with a term keeping their image changes apart, so each
        shift can be applied alone or with the others."""
        latents, prompts = list(latents), list(prompts)
        if not latents or not prompts:
            raise InvalidArgumentError("optimize_batch needs at least one latent and one prompt")
        for t in prompts:
            if t is None or not str(t).strip():
                raise InvalidArgumentError("a prompt is empty")
        progress = kw.pop("progress", None)
        preview, preview_every = kw.pop("preview", None), kw.pop("preview_every", 0)
        keep = []
        p = self._optimize_params(keep, **kw)
        boxes = self._callbacks(p, progress, preview, preview_every)
        raw = [_cstr(t, "prompt") for t in prompts]
        txt = (c_char_p * len(raw))(*raw)
        n_out = max(len(latents), len(prompts))
        out = (POINTER(cs_shift) * n_out)()
        try:
            with self._op_lock, _holding(*latents):
                lat = (POINTER(cs_latent) * len(latents))(*[l.ptr for l in latents])
                self._begin_op()
                try:
                    _call(self._lib.cs_optimize_batch, self.ptr, lat, len(latents), txt, len(raw),
                          ctypes.byref(p), out)
                except CancelledError:
                    self._reraise(boxes)
                    raise
        finally:
            self._close_if_asked()
        self._reraise(boxes)
        return [Shift(out[i]) for i in range(n_out) if out[i]]

    def render_pictures(self, latent, shifts, strengths, fmt="RGBA8", target=None, max_batch=0):
        """Renders ``latent`` once per strength with ``shifts`` [(Shift, weight)] → [Picture].
        ``target`` (w, h) resizes the domain's frame there; None = the frame itself."""
        shifts = list(shifts)
        out = POINTER(cs_images)()
        with self._op_lock, _holding(latent, *[s for s, _ in shifts]):
            p, keep = self._render_params(shifts, strengths, fmt, max_batch)
            if target is not None:
                p.target_width = _int(target[0], "target width", 0, UINT32[1])
                p.target_height = _int(target[1], "target height", 0, UINT32[1])
                if p.target_width <= 0 or p.target_height <= 0:
                    raise InvalidArgumentError("target size %r has no pixels" % (tuple(target),))
            self._begin_op()
            _call(self._lib.cs_render, self.ptr, latent.ptr, ctypes.byref(p), ctypes.byref(out))
        del keep
        return _pictures(out)

    def _render_params(self, shifts, strengths, fmt, max_batch):
        """cs_render_params for ``shifts`` [(Shift, weight)] at ``strengths``, and the arrays it
        points into (keep them alive for the call)."""
        strengths = [float(k) for k in strengths]
        if not strengths:
            raise InvalidArgumentError("no strengths to render")
        if any(math.isnan(k) or math.isinf(k) for k in strengths):
            raise InvalidArgumentError("strengths must be finite numbers")
        shifts = list(shifts)
        p = _init(self._lib.cs_render_params_init, cs_render_params)
        refs = (cs_shift_ref * max(1, len(shifts)))()
        for i, (shift, weight) in enumerate(shifts):
            refs[i] = cs_shift_ref(shift.ptr, float(weight))
        ks = (c_float * len(strengths))(*strengths)
        p.shifts = ctypes.cast(refs, POINTER(cs_shift_ref)) if shifts else None
        p.n_shifts = len(shifts)
        p.strengths = ctypes.cast(ks, POINTER(c_float))
        p.n_strengths = len(strengths)
        p.format = _format_code(fmt)
        p.max_batch = _int(max_batch, "max_batch", 0, UINT32[1])
        return p, (refs, ks, shifts)

    # — photos —

    def detect_faces(self, pixels, width, height, stride=0, fmt="RGBA8"):
        """Every face in a photo (MTCNN), most probable first → [Face]."""
        return self.find_face(pixels, width, height, stride, fmt, pick=False)[0]

    def find_face(self, pixels, width, height, stride=0, fmt="RGBA8", selection=None, pick=True):
        """The faces of a photo and the index of the one to edit → ([Face], index): the face
        ``selection`` (x1, y1, x2, y2) overlaps most, else the largest. Raises
        InvalidArgumentError when there is none (the library says why)."""
        img, keep = _image_view(pixels, width, height, stride, fmt)
        out = POINTER(cs_faces)()
        with self._op_lock:
            self._begin_op()
            _call(self._lib.cs_faces_detect, self.ptr, ctypes.byref(img), ctypes.byref(out))
        del keep
        try:
            faces = []
            for i in range(self._lib.cs_faces_count(out)):
                f = cs_face()
                _call(self._lib.cs_faces_get, out, i, ctypes.byref(f))
                faces.append(Face._of(f))
            if not pick:
                return faces, None
            sel = (c_float * 4)(*[float(v) for v in selection]) if selection is not None else None
            index = c_size_t(0)
            _call(self._lib.cs_faces_pick, out, sel, ctypes.byref(index))
            return faces, index.value
        finally:
            self._lib.cs_faces_free(out)

    def encode_face(self, pixels, width, height, face, stride=0, fmt="RGBA8"):
        """Aligns ``face`` of the photo as FFHQ was and inverts it → Latent."""
        img, keep = _image_view(pixels, width, height, stride, fmt)
        f = face._struct()
        out = POINTER(cs_latent)()
        with self._op_lock:
            self._begin_op()
            _call(self._lib.cs_encode_face, self.ptr, ctypes.byref(img), ctypes.byref(f),
                  ctypes.byref(out))
        del keep
        return Latent(out)

    def _paste_params(self, mode, photo_size, face, box, photo, fmt, stride):
        """cs_paste_params, and what it points into (keep it alive for the call)."""
        if mode not in PASTE_MODES:
            raise InvalidArgumentError("paste mode %r is not one of %s" % (mode, ", ".join(PASTE_MODES)))
        p = _init(self._lib.cs_paste_params_init, cs_paste_params)
        p.mode = PASTE_MODES[mode]
        p.photo_width = _int(photo_size[0], "photo width", 1, UINT32[1])
        p.photo_height = _int(photo_size[1], "photo height", 1, UINT32[1])
        f = face._struct() if face is not None else None
        if f is not None:
            p.face = ctypes.pointer(f)
        elif box is not None:
            p.bbox[:] = [float(v) for v in box]
        img = keep = None
        if photo is not None:
            img, keep = _image_view(photo, p.photo_width, p.photo_height, stride, fmt)
            p.photo = ctypes.pointer(img)
        elif mode == "warp":
            raise InvalidArgumentError("the warp paste moves the photo's own pixels: give photo=")
        return p, (f, img, keep)

    def subject_region(self, photo_size, face=None, box=None):
        """The region of a photo's ``face`` (or ``box`` x1, y1, x2, y2; neither = the whole
        photo) in pixels of the generator's output → (x1, y1, x2, y2): the ``region`` that
        optimize's ``lambda3`` keeps the rest of the picture around."""
        p, keep = self._paste_params("changes", photo_size, face, box, None, "RGBA8", 0)
        out = (c_float * 4)()
        with self._op_lock:
            _call(self._lib.cs_subject_region, self.ptr, ctypes.byref(p), ctypes.byref(out))
        del keep
        return tuple(out)

    def render_layers(self, latent, shifts, strengths, photo_size, face=None, box=None,
                      mode="warp", fmt="RGBA8", max_batch=0, photo=None, stride=0):
        """Renders ``latent`` at each strength and puts the edit onto the photo → [Picture] with
        alpha, placed at (x, y) of the photo. ``face`` (what encode_face got) or ``box`` (x1, y1,
        x2, y2: what was encoded; None = the whole photo) says where the picture sits. The
        default ``mode`` "warp" moves the photo's own pixels: ``photo`` holds them (``fmt``,
        ``stride`` as for encode; ``photo_size`` its width and height)."""
        shifts = list(shifts)
        p, keep_p = self._paste_params(mode, photo_size, face, box, photo, fmt, stride)
        out = POINTER(cs_images)()
        with self._op_lock, _holding(latent, *[s for s, _ in shifts]):
            r, keep = self._render_params(shifts, strengths, fmt, max_batch)
            self._begin_op()
            _call(self._lib.cs_render_layers, self.ptr, latent.ptr, ctypes.byref(r),
                  ctypes.byref(p), ctypes.byref(out))
        del keep, keep_p
        return _pictures(out)

    def transfer(self, latent, shifts, strengths, photo, photo_size, face=None, box=None,
                 fmt="RGBA8", stride=0):
        """The edit's displacement on the photo → Transfer, whose ``layer(k)`` gives the photo's
        own pixels moved to any strength between the rendered ones (a strength slider).
        Arguments as render_layers'."""
        shifts = list(shifts)
        p, keep_p = self._paste_params("warp", photo_size, face, box, photo, fmt, stride)
        out = POINTER(cs_transfer)()
        with self._op_lock, _holding(latent, *[s for s, _ in shifts]):
            r, keep = self._render_params(shifts, strengths, fmt, 0)
            self._begin_op()
            _call(self._lib.cs_transfer_create, self.ptr, latent.ptr, ctypes.byref(r),
                  ctypes.byref(p), ctypes.byref(out))
        del keep, keep_p
        return Transfer(out, fmt)

    def render(self, latent, shifts, strengths, fmt="RGBA8", target=None, max_batch=0):
        """Like render_pictures, but only the pixel bytes (tightly packed rows)."""
        return [pic.data for pic in self.render_pictures(latent, shifts, strengths, fmt, target,
                                                         max_batch)]

    def clip_score(self, pixels, width, height, stride, fmt, text):
        """Cosine similarity between a picture and a text (CLIP's preprocessing)."""
        img, keep = _image_view(pixels, width, height, stride, fmt)
        out = c_float()
        with self._op_lock:
            _call(self._lib.cs_clip_score, self.ptr, ctypes.byref(img), _cstr(text, "text"),
                  ctypes.byref(out))
        del keep
        return out.value

    # — cancellation bookkeeping —

    def _begin_op(self):
        """Before a long call: in a job, a cancel so far stops it; outside one, the call starts
        fresh (an old cancel, here or pending in the library, is dropped)."""
        if self._in_job:
            self._check_job_cancel()
        else:
            self._cancel_requested = False
            self._clear_library_cancel()

    def _clear_library_cancel(self):
        with self._ptr_lock:
            if self._ptr:
                self._lib.cs_cancel_clear(self._ptr)

    def _check_job_cancel(self):
        if self._in_job and self._cancel_requested:
            raise CancelledError("cancelled")


class Transfer(_Handle):
    """An edit's displacement on one photo (Context.transfer): layers at any strength."""

    _free_name = "cs_transfer_free"

    def __init__(self, ptr, fmt="RGBA8"):
        super().__init__(ptr)
        self.fmt = fmt

    def range(self):
        """(lowest, highest) strength ``layer`` takes; 0 lies between."""
        lo, hi = c_float(), c_float()
        with self._lock:
            _call(self._lib.cs_transfer_get_range, self.ptr, ctypes.byref(lo), ctypes.byref(hi))
        return lo.value, hi.value

    def layer(self, strength, fmt=None):
        """The photo's own pixels moved to ``strength`` → Picture (alpha: where they changed),
        placed at (x, y) of the photo."""
        k = float(strength)
        if math.isnan(k) or math.isinf(k):
            raise InvalidArgumentError("strength must be a finite number")
        out = POINTER(cs_images)()
        with self._lock:
            _call(self._lib.cs_transfer_layer, self.ptr, k, _format_code(fmt or self.fmt), ctypes.byref(out))
        return _pictures(out)[0]

    def blended(self, strength):
        """The fraction of the region where the render had to be blended in at ``strength``."""
        out = c_float()
        with self._lock:
            _call(self._lib.cs_transfer_get_blended, self.ptr, float(strength), ctypes.byref(out))
        return out.value


class _Job:
    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        if not self.ctx._in_job:
            self.ctx._cancel_requested = False
            self.ctx._clear_library_cancel()
        self.ctx._in_job += 1
        return self.ctx

    def __exit__(self, *exc):
        self.ctx._in_job -= 1
        if not self.ctx._in_job:
            self.ctx._cancel_requested = False
            self.ctx._clear_library_cancel()


__all__ = [
    "ABI_VERSION", "PIXEL_FORMATS", "BYTES_PER_PIXEL", "METHODS", "PASTE_MODES", "Face",
    "ClipShapeError",
    "InvalidArgumentError", "FileIOError", "ModelFormatError", "ModelMismatchError",
    "OutOfMemoryError", "DeviceError", "CancelledError", "InternalError", "IntegrityError",
    "DownloadError", "ModelsMissingError", "DivergedError", "LibraryNotFoundError",
    "ERRORS", "error_for_status", "load_library", "lib", "set_library_path", "library_candidates",
    "last_error", "version", "abi_version", "cuda_device_count", "models_check", "models_missing",
    "models_fetch", "models_dir", "models_add", "Picture", "Latent", "Shift", "Context", "Transfer", "GeneratorInfo", "LayerInfo",
    "Progress", "parse_device",
]

if sys.version_info < (3, 9):  # pragma: no cover
    raise ImportError("clipshape_ctypes needs Python 3.9 or newer")
