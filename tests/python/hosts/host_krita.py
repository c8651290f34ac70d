"""Real-host test of the Krita plug-in, run by install/host-tests.sh inside a trixie root:

    QT_QPA_PLATFORM=offscreen PYTHONPATH=<this dir>:<pykrita> kritarunner -s host_krita -f main

Imports the installed package (its __init__ registers the extension and the docker factory),
makes a document with a pattern and an offset selection, and runs the tiny golden models
through (1) the extension's blocking API, (2) the docker's worker thread with Qt signals, with
a cancellation, and (3) the docker widget itself. kritarunner always exits 0, so the result is
the os._exit code. Lines starting with CLIPSHAPE-HOST-TEST are the summary.
"""

import os
import sys
import time
import traceback

W, H = 160, 120
PROMPT = "a round face"


def say(*parts):
    print("CLIPSHAPE-HOST-TEST", *parts, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def make_document():
    from krita import Krita, Selection
    app = Krita.instance()
    doc = app.createDocument(W, H, "clipshape-test", "RGBA", "U8", "", 300.0)
    node = doc.createNode("photo", "paintlayer")
    doc.rootNode().addChildNode(node, None)
    bgra = bytes(v for y in range(H) for x in range(W)
                 for v in (((x + y) * 2) % 256, (y * 5) % 256, (x * 3) % 256, 255))
    node.setPixelData(bgra, 0, 0, W, H)
    sel = Selection()
    sel.select(30, 20, 60, 50, 255)
    doc.setSelection(sel)
    doc.waitForDone()
    return doc, node


def groups(doc):
    return [n for n in doc.rootNode().childNodes() if n.type() == "grouplayer"]


def wait_for(runner, timeout_s=120):
    from PyQt5.QtCore import QCoreApplication
    t0 = time.time()
    while runner.busy and time.time() - t0 < timeout_s:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    check(not runner.busy, "the worker did not finish in %d s" % timeout_s)


def run():
    models = os.environ["CLIPSHAPE_TEST_MODELS"]
    library = os.path.join(os.environ["HOME"], "edits-krita")
    import clipshape  # the installed package: registers the extension and the docker
    from clipshape import clipshape_ctypes as cs
    from clipshape import clipshape_logic as logic
    from clipshape.worker import Runner
    say("library", cs.version(), "python", sys.version.split()[0])

    doc, node = make_document()
    model = logic.ModelChoice(set_name="files", generator=os.path.join(models, "e4e.pt"),
                              clip=os.path.join(models, "clip_jit.pt"),
                              vocab=os.path.join(models, "bpe_simple_vocab_16e6.txt.gz"),
                              device="cpu").normalized()
    request = logic.EditRequest.from_values(prompt=PROMPT, strengths="-1.5,0,1.5", steps=5,
                                            library_dir=library)

    # 1. The extension's blocking API.
    t0 = time.time()
    result = clipshape.extension.apply_edit(doc, node, model, request)
    doc.waitForDone()
    say("extension run in %.1f s:" % (time.time() - t0), result.summary())
    gs = groups(doc)
    check(len(gs) == 1 and gs[0].name() == PROMPT, "groups %r" % [g.name() for g in gs])
    names = [n.name() for n in gs[0].childNodes()]
    # childNodes() lists bottom to top.
    expected = [PROMPT + " k=+1.5", PROMPT + " k=0", PROMPT + " k=-1.5"]
    check(names == expected, "layers %r != %r" % (names, expected))
    for n, r in zip(gs[0].childNodes(), reversed(result.layers)):
        check((r.x, r.y, r.width, r.height) == (30, 15, 60, 60),
              "%s rendered at %s" % (n.name(), (r.x, r.y, r.width, r.height)))
        # Krita's bounds() are those of the visible pixels: empty for the transparent k=0.
        b = n.bounds()
        inside = (b.width() == 0 or (b.x() >= 30 and b.y() >= 15 and b.x() + b.width() <= 90
                                     and b.y() + b.height() <= 75))
        check(inside, "%s bounds %s" % (n.name(), (b.x(), b.y(), b.width(), b.height())))
        px = bytes(n.pixelData(30, 15, 60, 60))
        # Alpha as rendered, and the colour wherever something shows (a fully transparent
        # pixel's colour is Krita's business).
        check(px[3::4] == r.data[3::4], "%s alpha differs from the rendered layer" % n.name())
        shown = [i for i in range(0, len(px), 4) if px[i + 3] > 0]
        check(all(px[i:i + 3] == r.data[i:i + 3] for i in shown),
              "%s pixels differ from the rendered BGRA" % n.name())
    k0 = bytes(gs[0].childNodes()[1].pixelData(30, 15, 60, 60))
    check(set(k0[3::4]) == {0}, "the k=0 layer shows (nothing changes at k=0)")
    check(len(os.listdir(library)) == 1, "edit library %r" % os.listdir(library))
    say("layers", names, "(bottom→top) at 30,15 60x60; k=0 transparent")

    face_photo(clipshape, logic, models, library + "-face")

    # 2. The docker's worker: off the GUI thread, progress through signals.
    runner = Runner(clipshape.extension.contexts)
    seen = []
    outcome = {}
    runner.start(doc, node, model, request, lambda f, t: seen.append(f),
                 lambda r: outcome.setdefault("done", r),
                 lambda m, c: outcome.setdefault("error", (m, c)))
    wait_for(runner)
    check("done" in outcome, "worker failed: %r" % (outcome.get("error"),))
    check(len(groups(doc)) == 2, "worker did not add a group")
    check(len(seen) >= 5 and seen[-1] == 1.0, "progress signals %r" % seen[:10])
    say("worker run:", len(seen), "progress signals;", outcome["done"].summary())

    # 3. Cancel from the GUI thread while the worker optimises: nothing added.
    long_request = logic.EditRequest.from_values(prompt=PROMPT, steps=5000, library_dir=library)
    outcome.clear()

    def on_progress(f, t):
        if f > 0.1:
            runner.cancel()

    t0 = time.time()
    runner.start(doc, node, model, long_request, on_progress,
                 lambda r: outcome.setdefault("done", r),
                 lambda m, c: outcome.setdefault("error", (m, c)))
    wait_for(runner)
    check(outcome.get("error", (None, False))[1] is True, "not cancelled: %r" % outcome)
    check(len(groups(doc)) == 2, "a cancelled run added layers")
    check(len(os.listdir(library)) == 2, "a cancelled run saved an edit")
    say("cancel: %r after %.1f s, nothing added" % (outcome["error"][0], time.time() - t0))

    # 4. The docker widget: builds offscreen, GPU greyed out without CUDA, bad input shown.
    from clipshape.docker import ClipShapeDocker
    docker = ClipShapeDocker()
    docker.probe_devices()
    gpu = docker.device.model().item(docker.device.findData("cuda"))
    check(gpu.isEnabled() == (cs.cuda_device_count() > 0), "GPU item enabled state")
    docker.prompt.setText("")
    docker.model_set.setCurrentIndex(docker.model_set.findData("files"))
    docker.generator.setText(os.path.join(models, "e4e.pt"))
    docker.start()
    check("prompt is empty" in docker.error.text(), "docker error label %r" % docker.error.text())
    check(docker.run_button.isEnabled(), "Run disabled after an error")
    say("docker: GPU enabled=%s; empty prompt -> %r" % (gpu.isEnabled(), docker.error.text()))
    runner.close()
    say("OK krita")


def face_photo(clipshape, logic, models, library):
    """A real photo, no selection: the face is found and the layers sit on it with alpha."""
    from krita import Krita
    doc = Krita.instance().openDocument(os.path.join(models, "astronaut.png"))
    check(doc is not None, "Krita could not open astronaut.png")
    doc.waitForDone()
    node = [n for n in doc.topLevelNodes() if n.type() == "paintlayer"][0]
    doc.setActiveNode(node)
    model = logic.ModelChoice(set_name="files", generator=os.path.join(models, "e4e.pt"),
                              clip=os.path.join(models, "clip_jit.pt"),
                              vocab=os.path.join(models, "bpe_simple_vocab_16e6.txt.gz"),
                              face_detector_dir=os.path.join(models, "mtcnn"),
                              device="cpu").normalized()
    request = logic.EditRequest.from_values(prompt=PROMPT, strengths="0,3", steps=3,
                                            library_dir=library, align="face")
    t0 = time.time()
    result = clipshape.extension.apply_edit(doc, node, model, request)
    doc.waitForDone()
    check(result.face is not None, "no face was used")
    (group,) = [g for g in groups(doc) if g.name() == PROMPT]
    layers = group.childNodes()   # bottom to top: k=3, k=0
    k0_result, k3_result = result.layers
    for r in result.layers:
        check(r.x <= 181 and r.y <= 62 and r.x + r.width >= 268 and r.y + r.height >= 172,
              "%s rendered at %s" % (r.name, (r.x, r.y, r.width, r.height)))
    k0 = bytes(layers[1].pixelData(k0_result.x, k0_result.y, k0_result.width, k0_result.height))
    check(set(k0[3::4]) == {0}, "the k=0 layer of the face shows")
    k3 = bytes(layers[0].pixelData(k3_result.x, k3_result.y, k3_result.width, k3_result.height))
    check(max(k3[3::4]) > 0, "the k=3 layer of the face shows nothing")
    b = layers[0].bounds()
    check(b.x() >= k3_result.x and b.y() >= k3_result.y, "k=3 drawn outside its layer: %s" % b)
    say("face edit in %.1f s: layers at" % (time.time() - t0), [(r.x, r.y) for r in result.layers])
    doc.close()


def main(*args):
    code = 1
    try:
        run()
        code = 0
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
