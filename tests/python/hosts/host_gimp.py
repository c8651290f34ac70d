# Real-host test of the GIMP 3 plug-in, run by install/host-tests.sh inside a trixie root:
#   gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval -b "exec(open(THIS).read())" --quit
# Makes an image with a pattern and an offset selection, runs plug-in-clipshape
# non-interactively with the tiny golden models, and checks the layer group it adds. GIMP reports
# success even when a procedure returns an error status, so every status is checked here, and
# any failure raises (batch rc 64). Lines starting with CLIPSHAPE-HOST-TEST are the summary.
import os
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

MODELS = os.environ["CLIPSHAPE_TEST_MODELS"]
LIBRARY = os.path.join(os.environ["HOME"], "edits")
FMT = "R'G'B'A u8"
W, H = 160, 120
PROMPT = "face with big nose"


def say(*parts):
    print("CLIPSHAPE-HOST-TEST", *parts, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def make_image():
    image = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "photo", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    pixels = bytes(v for y in range(H) for x in range(W)
                   for v in ((x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256, 255))
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, W, H), FMT, pixels)
    buf.flush()
    layer.update(0, 0, W, H)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 30, 20, 60, 50)
    return image, layer


def run_plugin(image, layer, **values):
    proc = Gimp.get_pdb().lookup_procedure("plug-in-clipshape")
    check(proc is not None, "plug-in-clipshape is not registered (plug-in not installed?)")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for key, value in values.items():
        if key.endswith("-file") or key in ("library-dir", "saved-edit", "face-detector-dir"):
            value = Gio.File.new_for_path(value)
        config.set_property(key, value)
    result = proc.run(config)
    status = result.index(0)
    message = result.index(1) if result.length() > 1 else None
    return status, message


def models():
    # Files of a face model on a synthetic pattern: the selection as it is (Align's default
    # would look for a face).
    return {
        "model-set": "files",
        "align": "none",
        "generator-file": os.path.join(MODELS, "e4e.pt"),
        "clip-file": os.path.join(MODELS, "clip_jit.pt"),
        "vocab-file": os.path.join(MODELS, "bpe_simple_vocab_16e6.txt.gz"),
        "device": "cpu",
        "library-dir": LIBRARY,
    }


def main():
    os.makedirs(LIBRARY, exist_ok=True)  # a SELECT_FOLDER argument must name an existing folder
    image, layer = make_image()
    say("image", W, H, "selection 30,20 60x50")

    t0 = time.time()
    status, message = run_plugin(image, layer, prompt=PROMPT, strengths="-1.5,0,1.5", steps=5,
                                 **models())
    say("run status", status, "in %.1f s" % (time.time() - t0))
    check(status == Gimp.PDBStatusType.SUCCESS, "plug-in failed: %s %s" % (status, message))

    top = image.get_layers()
    check(len(top) == 2, "expected the group and the photo, got %s" % [l.get_name() for l in top])
    group = top[0]
    check(group.get_name() == PROMPT, "group named %r" % group.get_name())
    check(group.is_group(), "the first layer is not a group")
    children = group.get_children()
    names = [c.get_name() for c in children]
    # Strongest on top, strength first in the name; the default paste moves the picture's own
    # pixels, which k=0 leaves where they are: no (empty) layer for it.
    expected = ["k=+1.5 " + PROMPT, "k=-1.5 " + PROMPT]
    check(names == expected, "layer names %r != %r" % (names, expected))
    shown = [c.get_name() for c in children if c.get_visible()]
    check(shown == ["k=+1.5 " + PROMPT], "visible layers %r (only k=+1.5 should be)" % shown)
    # Inside the 60×50 selection grown to the tiny model's square frame: (30, 15) 60×60.
    for c in children:
        _, x, y = c.get_offsets()
        check(x >= 30 and y >= 15 and x + c.get_width() <= 90 and y + c.get_height() <= 75,
              "%s at %d,%d %dx%d" % (c.get_name(), x, y, c.get_width(), c.get_height()))
    data = [bytes(c.get_buffer().get(Gegl.Rectangle.new(0, 0, c.get_width(), c.get_height()),
                                     1.0, FMT, Gegl.AbyssPolicy.CLAMP)) for c in children]
    check(data[0] != data[1], "k=-1.5 and k=+1.5 render the same pixels")
    check(max(data[0][3::4]) > 0 and max(data[1][3::4]) > 0, "the edited layers show nothing")
    saved = sorted(os.listdir(LIBRARY))
    check(len(saved) == 1 and saved[0].startswith("face-with-big-nose-"),
          "edit library holds %r" % saved)
    say("layers", names, "shown", shown, "; saved", saved[0])

    # The model's picture over the box: k=0 is a layer worth having, hidden; +3 shown on top.
    # (Strengths of their own: GIMP makes layer names unique in an image, adding " #1".)
    status, message = run_plugin(image, layer, prompt=PROMPT, strengths="0,-3,1,3", steps=3,
                                 paste="region", **dict(models(), **{"save-edit": False}))
    check(status == Gimp.PDBStatusType.SUCCESS, "region paste failed: %s %s" % (status, message))
    # A new group goes above the photo AND the earlier result on it: on top here.
    region = image.get_layers()[0]
    check(region.get_name() == PROMPT + " #1" and image.get_layers()[2].get_name() == "photo"
          and image.get_selected_layers() == [layer],
          "after a second run: layers %r, selected %r" % (
              [l.get_name() for l in image.get_layers()],
              [l.get_name() for l in image.get_selected_layers()]))
    names = [(c.get_name(), c.get_visible()) for c in region.get_children()]
    expected = [("k=%s %s" % (k, PROMPT), k == "+3") for k in ("+3", "+1", "0", "-3")]
    check(names == expected, "region layers %r != %r" % (names, expected))
    say("region paste layers (name, visible):", names)
    image.remove_layer(region)

    # Apply the saved edit: no optimisation, group named after the stored prompt.
    t0 = time.time()
    status, message = run_plugin(image, layer, strengths="2", prompt="",
                                 **{"saved-edit": os.path.join(LIBRARY, saved[0])}, **models())
    check(status == Gimp.PDBStatusType.SUCCESS, "applying the saved edit failed: %s" % message)
    top = image.get_layers()   # the new group goes above the photo and the earlier result
    check(len(top) == 3 and top[0].get_name().startswith(PROMPT)  # GIMP adds " #1"
          and top[2].get_name() == "photo",
          "top-level layers %r" % [l.get_name() for l in top])
    check([c.get_name() for c in top[0].get_children()] == ["k=+2 " + PROMPT],
          "saved-edit layers %r" % [c.get_name() for c in top[0].get_children()])
    check(len(os.listdir(LIBRARY)) == 1, "applying a saved edit wrote a new file")
    say("saved edit applied in %.1f s:" % (time.time() - t0), top[0].get_name(),
        [c.get_name() for c in top[0].get_children()])

    # Bad input: an error status with the reason, and nothing added.
    n_before = len(image.get_layers())
    status, message = run_plugin(image, layer, prompt="   ", steps=5, **models())
    check(status == Gimp.PDBStatusType.EXECUTION_ERROR, "empty prompt gave status %s" % status)
    text = str(message)
    check("prompt is empty" in text, "error message %r does not name the prompt" % text)
    check(len(image.get_layers()) == n_before, "a failed run added layers")
    say("empty prompt ->", text.strip()[:80])

    # A file that is not a model: the library's error names it.
    vocab = os.path.join(MODELS, "bpe_simple_vocab_16e6.txt.gz")
    bad = dict(models(), **{"generator-file": vocab})
    status, message = run_plugin(image, layer, prompt=PROMPT, steps=5, **bad)
    check(status == Gimp.PDBStatusType.EXECUTION_ERROR, "wrong model gave status %s" % status)
    check(vocab in str(message), "error %r does not name the file" % message)
    check(len(image.get_layers()) == n_before, "a failed run added layers")
    say("not a model ->", str(message).strip()[:100])
    # A missing file: GIMP itself refuses the argument (a calling error naming it).
    bad = dict(models(), **{"generator-file": os.path.join(MODELS, "missing.pt")})
    status, message = run_plugin(image, layer, prompt=PROMPT, steps=5, **bad)
    check(status != Gimp.PDBStatusType.SUCCESS, "missing model gave status %s" % status)
    check("generator-file" in str(message), "error %r does not name the argument" % message)
    say("missing model ->", status.value_nick, str(message).strip()[:100])
    image.delete()
    face_photo()
    say("OK gimp", Gimp.version() if hasattr(Gimp, "version") else "")


def face_photo():
    """A real photo, no selection, a face model given as files with its face detector and
    Align left at its default: the face is found and edited, the layers sit on it with alpha
    (not the photo replaced by the model's frame)."""
    photo = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(
        os.path.join(MODELS, "astronaut.png")))
    layer = photo.get_layers()[0]
    if not layer.has_alpha():
        layer.add_alpha()
    t0 = time.time()
    values = dict(models(), **{"face-detector-dir": os.path.join(MODELS, "mtcnn")})
    del values["align"]                       # the default: "auto"
    status, message = run_plugin(photo, layer, prompt=PROMPT, strengths="0,3", steps=3,
                                 **values)
    check(status == Gimp.PDBStatusType.SUCCESS, "face edit failed: %s %s" % (status, message))
    group = photo.get_layers()[0]
    children = group.get_children()
    check([c.get_name() for c in children] == ["k=+3 " + PROMPT],
          "face edit layers %r" % [c.get_name() for c in children])
    # facenet-pytorch finds the astronaut's face at (181, 62)-(268, 172): the moved pixels
    # overlap it and stay inside the 512×512 photo (the whole frame would be 0,0 512×512).
    for c in children:
        _, x, y = c.get_offsets()
        w, h = c.get_width(), c.get_height()
        check(x < 268 and y < 172 and x + w > 181 and y + h > 62 and x >= 0 and y >= 0
              and x + w <= 512 and y + h <= 512 and (w, h) != (512, 512),
              "%s at %d,%d %dx%d" % (c.get_name(), x, y, w, h))
    (k3,) = [bytes(c.get_buffer().get(Gegl.Rectangle.new(0, 0, c.get_width(), c.get_height()),
                                      1.0, FMT, Gegl.AbyssPolicy.CLAMP)) for c in children]
    check(max(k3[3::4]) > 0, "the k=3 layer of the face shows nothing")
    check(set(k3[3::4]) != {255}, "the k=3 layer is opaque everywhere: the frame, not the face")
    say("face edit in %.1f s: layers at" % (time.time() - t0),
        [c.get_offsets()[1:] for c in children])
    photo.delete()


main()
