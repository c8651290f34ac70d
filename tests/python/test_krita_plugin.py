"""The Krita plug-in, as installed by install/plugins.sh, with a mock ``krita`` module (and a
fake of the PyQt5 bits when PyQt5 is not installed; with PyQt5, Qt runs offscreen) on the real
library with the tiny models. The worker runs on its own thread as in Krita."""

import os
import sys
import time

import pytest

import fake_krita
from conftest import needs_models

pytestmark = needs_models
PROMPT = "a round face"
W, H = 160, 120
# Before any fixture puts the fake PyQt5 into sys.modules (then PyQt5 imports either way).
REAL_QT = fake_krita.have_real_pyqt5()


@pytest.fixture
def krita(monkeypatch, installed, tmp_path):
    if REAL_QT:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PyQt5.QtWidgets import QApplication
        app = QApplication.instance() or QApplication(["test"])  # noqa: F841
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    pkg = fake_krita.install(monkeypatch, installed / ".local" / "share" / "krita" / "pykrita")
    yield pkg
    for name in [n for n in sys.modules if n == "clipshape" or n.startswith("clipshape.")]:
        del sys.modules[name]


def make_document(selection=(30, 20, 60, 50)):
    doc = fake_krita.Document(W, H)
    node = doc.createNode("photo", "paintlayer")
    doc.rootNode().addChildNode(node, None)
    bgra = bytes(v for y in range(H) for x in range(W)
                 for v in (((x + y) * 2) % 256, (y * 5) % 256, (x * 3) % 256, 255))
    node.setPixelData(bgra, 0, 0, W, H)
    if selection:
        sel = fake_krita.Selection()
        sel.select(*selection, 255)
        doc.setSelection(sel)
    doc.setActiveNode(node)
    return doc, node


def models(pkg, model_files):
    return pkg.clipshape_logic.ModelChoice(set_name="files", device="cpu",
                                           **model_files).normalized()


def request(pkg, tmp_path, **kw):
    kw.setdefault("prompt", PROMPT)
    kw.setdefault("strengths", "-1.5,0,1.5")
    kw.setdefault("steps", 3)
    # The tiny e4e is a face model; the synthetic pattern has no face, so the box is used.
    kw.setdefault("align", "none")
    return pkg.clipshape_logic.EditRequest.from_values(library_dir=str(tmp_path / "edits"), **kw)


def wait(runner, timeout=60):
    from PyQt5.QtCore import QCoreApplication
    t0 = time.time()
    while runner.busy and time.time() - t0 < timeout:
        QCoreApplication.processEvents()
        time.sleep(0.005)
    assert not runner.busy, "worker still running after %d s" % timeout


def settle():
    """Runs what Qt queued (e.g. krita_host's deferred reactivations of the photo)."""
    from PyQt5.QtCore import QCoreApplication
    for _ in range(5):
        QCoreApplication.processEvents()
        time.sleep(0.01)


def start(pkg, doc, node, model, req):
    from clipshape.worker import Runner
    runner = Runner()
    out = {"progress": []}
    runner.start(doc, node, model, req, lambda f, t: out["progress"].append((f, t)),
                 lambda r: out.setdefault("done", r),
                 lambda m, c: out.setdefault("error", (m, c)))
    return runner, out


def groups(doc):
    return [n for n in doc.rootNode().childNodes() if n.type() == "grouplayer"]


def test_package_registers_extension_and_docker(krita):
    app = sys.modules["krita"].Krita.instance()
    assert [type(e).__name__ for e in app.extensions] == ["ClipShapeExtension"]
    (factory,) = app.docker_factories
    assert factory.ident == "clipshape_docker" and factory.cls.__name__ == "ClipShapeDocker"
    # the shared modules are the very files of plugin-wrappers/python
    from conftest import SHARED
    for name in ("clipshape_ctypes.py", "clipshape_logic.py"):
        with open(os.path.join(SHARED, name), "rb") as a, \
                open(os.path.join(os.path.dirname(krita.__file__), name), "rb") as b:
            assert a.read() == b.read()


def test_settings_round_trip(krita, tmp_path):
    from clipshape import krita_host
    s = krita_host.read_settings()
    assert s["set_name"] == "ffhq" and s["device"] == "auto" and s["steps"] == "100"
    krita_host.write_settings(dict(s, set_name="car", device="cpu", steps=7, bogus="x"))
    s = krita_host.read_settings()
    assert (s["set_name"], s["device"], s["steps"]) == ("car", "cpu", "7") and "bogus" not in s
    assert krita_host.model_from_settings(s).set_name == "car"
    r = krita_host.request_from_settings(dict(s, prompt="a long car", fit_to_frame="false"))
    assert r.steps == 7 and not r.fit_to_frame and r.prompt == "a long car"
    assert (r.face, r.also, r.optimize_size, r.keep_rest) == (None, None, None, False)
    r = krita_host.request_from_settings(dict(s, prompt="a car", face="2", also="red",
                                              optimize_size="128", layer="auto",
                                              keep_rest="true"))
    assert (r.face, r.also, r.optimize_size, r.layer, r.keep_rest) == (2, "red", 128, "auto",
                                                                         True)
    with pytest.raises(krita.clipshape_logic.RequestError, match="learning size"):
        krita_host.request_from_settings(dict(s, prompt="a car", optimize_size="8"))
    with pytest.raises(krita.clipshape_logic.RequestError, match="prompt is empty"):
        krita_host.request_from_settings(dict(s, prompt=""))


def test_read_source_is_bgra_with_selection(krita):
    from clipshape import krita_host
    doc, node = make_document()
    src, sel = krita_host.read_source(doc, node)
    assert src.fmt == "BGRA8" and src.bounds == krita.clipshape_logic.Box(0, 0, W, H)
    assert sel == krita.clipshape_logic.Box(30, 20, 60, 50)
    assert src.read(sel)[:4] == bytes([100, 100, 90, 255])   # B,G,R,A of pixel (30, 20)
    doc.color_depth = "U16"
    with pytest.raises(krita.clipshape_logic.RequestError, match="RGB/Alpha 8-bit"):
        krita_host.read_source(doc, node)


def test_active_target_errors(krita):
    from clipshape import krita_host
    app = sys.modules["krita"].Krita.instance()
    with pytest.raises(krita.clipshape_logic.RequestError, match="open an image"):
        krita_host.active_target()
    doc, node = make_document()
    app.active_document = doc
    doc.setActiveNode(doc.rootNode())
    with pytest.raises(krita.clipshape_logic.RequestError, match="paint layer"):
        krita_host.active_target()
    doc.setActiveNode(node)
    assert krita_host.active_target() == (doc, node)


def names_and_visibility(group):
    """[(name, visible)] of a group's layers, TOP first (childNodes() lists bottom to top)."""
    return [(n.name(), n.visible()) for n in reversed(group.childNodes())]


def test_worker_adds_group_off_the_gui_thread(krita, ctx, model_files, tmp_path):
    doc, node = make_document()
    app = sys.modules["krita"].Krita.instance()
    runner, out = start(krita, doc, node, models(krita, model_files), request(krita, tmp_path))
    wait(runner)
    assert "done" in out, out.get("error")
    result = out["done"]
    (group,) = groups(doc)
    assert doc.rootNode().childNodes() == [node, group]       # right above the photo
    assert group.name() == PROMPT and runner.group is group
    # Top first, strongest positive shown, the others hidden; no k=0 layer: in the warp paste
    # nothing moves at k=0, so it would be empty.
    assert names_and_visibility(group) == [("k=+1.5 " + PROMPT, True),
                                           ("k=-1.5 " + PROMPT, False)]
    top, bottom = reversed(group.childNodes())
    for n, r in ((top, result.layers[0]), (bottom, result.layers[1])):
        b = n.bounds()
        assert (b.x(), b.y(), b.width(), b.height()) == (r.x, r.y, r.width, r.height)
        assert bytes(n.pixelData(r.x, r.y, r.width, r.height)) == r.data
    assert (result.layers[0].x, result.layers[0].y) == (30, 15)
    assert result.layers[0].fmt == "BGRA8"
    # ONE undo step (the finished group added once), the scratch document it was built in
    # closed, and the photo still the active layer: a second Run edits it, not the result.
    assert doc.undo_steps == 2                       # the photo's own add, then the group
    settle()
    assert app.documents == [] and doc.activeNode() is node
    # the BGRA recon is the model's view of the BGRA box (same as RGBA, channels swapped)
    _, rgba_recon = ctx.encode(krita.clipshape_logic.swap_red_blue(
        bytes(node.pixelData(30, 15, 60, 60))), 60, 60, 0, "RGBA8")
    swapped = krita.clipshape_logic.swap_red_blue(rgba_recon.data)
    assert max(abs(a - b) for a, b in zip(swapped, result.recon.data)) <= 2
    fractions = [f for f, _ in out["progress"]]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(os.listdir(tmp_path / "edits")) == 1 and doc.refreshes == 1
    runner.close()


def test_a_second_run_edits_the_photo_again(krita, model_files, tmp_path):
    from clipshape import krita_host
    app = sys.modules["krita"].Krita.instance()
    doc, node = make_document()
    app.active_document = doc
    model = models(krita, model_files)
    for prompt in (PROMPT, "a long face"):
        target = krita_host.active_target()
        assert target == (doc, node)
        runner, out = start(krita, doc, target[1], model, request(krita, tmp_path,
                                                                  prompt=prompt))
        wait(runner)
        assert "done" in out, out.get("error")
        runner.close()
    # each group above the photo and the earlier results, the newest on top (else the strength
    # an earlier one shows would hide it); one undo step per run
    assert [n.name() for n in doc.rootNode().childNodes()] == ["photo", PROMPT, "a long face"]
    assert doc.undo_steps == 3 and doc.activeNode() is node


def test_other_paste_modes_keep_k0_and_show_one_layer(krita, model_files, tmp_path):
    doc, node = make_document()
    ext = krita.extension
    result = ext.apply_edit(doc, node, models(krita, model_files),
                            request(krita, tmp_path, strengths="-1,0", paste="region"))
    (group,) = groups(doc)
    # no positive strength: the one farthest from 0 is shown
    assert names_and_visibility(group) == [("k=0 " + PROMPT, False),
                                           ("k=-1 " + PROMPT, True)]
    assert [l.strength for l in result.layers] == [0.0, -1.0] and result.transfer is None
    ext.contexts.close()


def test_strength_preview_follows_the_slider_and_keeps(krita, model_files, tmp_path):
    """The docker's strength slider, host side: one preview layer on top of the group showing
    result.layer_at(k), the run's layers hidden meanwhile; keep() names it as a layer; done()
    removes an unkept preview and shows again what was shown."""
    from clipshape import krita_host
    doc, node = make_document()
    ext = krita.extension
    result = ext.apply_edit(doc, node, models(krita, model_files),
                            request(krita, tmp_path, strengths="-1,2"))
    (group,) = groups(doc)
    lo, hi = result.strength_range()
    assert lo <= -1 and hi >= 2
    preview = krita_host.StrengthPreview(doc, group, result)
    steps = doc.undo_steps
    r = preview.show(0.7)
    assert doc.activeNode() is node          # a Run after sliding edits the photo
    assert names_and_visibility(group) == [(krita_host.PREVIEW_NAME, True),
                                           ("k=+2 " + PROMPT, False), ("k=-1 " + PROMPT, False)]
    layer = group.childNodes()[-1]
    assert bytes(layer.pixelData(r.x, r.y, r.width, r.height)) == r.data
    r = preview.show(1.3)            # the same layer moves
    assert len(group.childNodes()) == 3
    assert bytes(layer.pixelData(r.x, r.y, r.width, r.height)) == result.layer_at(1.3).data
    assert r.data != result.layer_at(0.7).data
    assert preview.keep() == "k=+1.3 " + PROMPT
    preview.show(0.4)                # a new preview over the kept one
    assert [n for n, _ in names_and_visibility(group)] == [
        krita_host.PREVIEW_NAME, "k=+1.3 " + PROMPT, "k=+2 " + PROMPT, "k=-1 " + PROMPT]
    preview.done()
    assert names_and_visibility(group) == [("k=+1.3 " + PROMPT, True),
                                           ("k=+2 " + PROMPT, False), ("k=-1 " + PROMPT, False)]
    assert doc.undo_steps == steps + 3   # two previews added, the unkept one removed
    ext.contexts.close()


def test_missing_models_is_only_the_missing_files_error(krita, tmp_path):
    from clipshape import krita_host
    logic = krita.clipshape_logic
    model = logic.ModelChoice(set_name="ffhq", models_dir=str(tmp_path / "empty"),
                              device="cpu").normalized()
    with pytest.raises(logic.RequestError) as missing:
        model.open()
    assert krita_host.missing_models(missing.value, model)
    with pytest.raises(logic.RequestError) as empty:
        logic.EditRequest.from_values(prompt="")
    assert not krita_host.missing_models(empty.value, model)
    assert not krita_host.missing_models(missing.value, None)


def test_file_choosers_start_in_a_sensible_folder(krita, tmp_path):
    from clipshape.docker import start_folder
    home = os.path.expanduser("~")
    f = tmp_path / "e4e.pt"
    f.write_bytes(b"x")
    assert start_folder(str(f)) == str(tmp_path)            # the field's file's folder
    assert start_folder(str(tmp_path)) == str(tmp_path)     # the folder it names
    assert start_folder("", str(tmp_path)) == str(tmp_path)  # else the default
    assert start_folder("/no/such/file.pt") == home          # else home, never "/"
    assert start_folder("", "/no/such/dir") == home


def test_cancel_from_the_gui_thread_adds_nothing(krita, model_files, tmp_path):
    doc, node = make_document()
    from clipshape.worker import Runner
    runner = Runner()
    out = {}

    def progress(f, t):
        if f > 0.1:
            runner.cancel()

    t0 = time.time()
    runner.start(doc, node, models(krita, model_files), request(krita, tmp_path, steps=5000),
                 progress, lambda r: out.setdefault("done", r),
                 lambda m, c: out.setdefault("error", (m, c)))
    wait(runner)
    assert out == {"error": ("Cancelled.", True)} and time.time() - t0 < 30
    assert groups(doc) == [] and not (tmp_path / "edits").exists()
    runner.close()


def test_runner_refuses_a_second_run_and_reports_errors(krita, model_files, tmp_path):
    doc, node = make_document(selection=(500, 500, 5, 5))
    runner, out = start(krita, doc, node, models(krita, model_files), request(krita, tmp_path))
    wait(runner)
    assert out["error"] == ("the selection does not overlap the layer", False)
    assert groups(doc) == []
    doc, node = make_document()
    runner, out = start(krita, doc, node, models(krita, model_files),
                        request(krita, tmp_path, steps=5000))
    with pytest.raises(krita.clipshape_logic.RequestError, match="already running"):
        runner.start(doc, node, None, None, None, None, None)
    runner.close()


def test_extension_apply_edit_and_saved_edit(krita, model_files, tmp_path):
    doc, node = make_document(selection=None)
    ext = krita.extension
    model = models(krita, model_files)
    result = ext.apply_edit(doc, node, model, request(krita, tmp_path, strengths="1.5"))
    assert result.box == krita.clipshape_logic.Box(20, 0, 120, 120)   # whole layer, squared
    saved = str(tmp_path / "edits" / os.listdir(tmp_path / "edits")[0])
    again = ext.apply_edit(doc, node, model, request(krita, tmp_path, prompt="",
                                                     saved_edit=saved, strengths="1.5"))
    assert again.group_name == PROMPT and again.layers[0].data == result.layers[0].data
    assert [g.name() for g in groups(doc)] == [PROMPT, PROMPT]
    ext.contexts.close()


def test_download_worker_fetches_off_the_gui_thread_and_cancels(krita, tiny_mirror):
    """The docker's Download: the set's files through the real library from a local mirror,
    progress as signals, cancel from the GUI thread, then a resumed download that completes."""
    import threading
    from PyQt5.QtCore import QCoreApplication   # the real one, or fake_krita's
    from clipshape.worker import DownloadWorker
    logic = krita.clipshape_logic
    server, root = tiny_mirror
    assert not logic.model_sets()["ffhq"].complete

    def run(worker, on_progress=None):
        seen, ended, threads = [], [], set()

        def progressed(status):
            seen.append(status)
            threads.add(threading.get_ident())
            if on_progress:
                on_progress(status)
        worker.progressed.connect(progressed)
        worker.ended.connect(ended.append)
        worker.start()
        t0 = time.time()
        while not ended and time.time() - t0 < 60:
            QCoreApplication.processEvents()
            time.sleep(0.01)
        assert worker.wait(10000) and len(ended) == 1
        return seen, ended[0], threads

    server.delay = 0.01
    worker = DownloadWorker("ffhq")
    seen, end, threads = run(worker, lambda s: s.done > 500_000 and worker.cancel())
    assert end.state == "cancelled" and seen and all(s.state == "running" for s in seen)
    assert not logic.model_sets()["ffhq"].complete
    server.delay = 0
    seen, end, threads = run(DownloadWorker("ffhq"))
    assert end.state == "done" and end.done == end.total and end.text.startswith("Downloaded")
    assert len(seen) >= 10 and "MB/s" in seen[-1].text
    if REAL_QT:                        # queued back to the GUI thread, as in Krita
        assert threads == {threading.get_ident()}
    else:                              # the fake delivers on the downloading thread
        assert threading.get_ident() not in threads
    assert logic.model_sets()["ffhq"].complete


@pytest.mark.skipif(not REAL_QT, reason="the docker UI needs PyQt5")
def test_docker_ui(krita, model_files, tmp_path):
    from clipshape.docker import ClipShapeDocker
    app = sys.modules["krita"].Krita.instance()
    doc, node = make_document()
    app.active_document = doc
    d = ClipShapeDocker()
    # small enough for a laptop's screen beside Krita's default dockers; sections collapsed
    hint = d.minimumSizeHint()
    assert hint.width() <= 300 and hint.height() <= 400
    assert not d.settings_section.body.isVisibleTo(d)
    d.probe_devices()
    gpu = d.device.model().item(d.device.findData("cuda"))
    assert gpu.isEnabled() == (krita.clipshape_ctypes.cuda_device_count() > 0)
    d.model_set.setCurrentIndex(d.model_set.findData("files"))
    # choosing the model files opens Settings, where their fields are
    assert d.settings_section.expanded and d.generator.isVisibleTo(d)
    d.generator.setText(model_files["generator"])
    d.clip.setText(model_files["clip"])
    d.vocab.setText(model_files["vocab"])
    d.device.setCurrentIndex(d.device.findData("cpu"))
    d.library_dir.setText(str(tmp_path / "edits"))
    d.align.setCurrentIndex(d.align.findData("none"))   # the pattern has no face
    d.prompt.setText("")
    d.start()
    assert "prompt is empty" in d.error.text() and d.run_button.isEnabled()
    assert "Download" not in d.error.text()
    d.prompt.setText(PROMPT)
    d.steps.setValue(3)
    d.strengths.setText("0,2")
    # an earlier failed download's message, which a working run makes stale
    d.download_text.setText("Download failed: the download server cannot be reached")
    d._download_failed = True
    d.start()
    assert not d.run_button.isEnabled() and d.cancel_button.isEnabled()
    wait(d.runner)
    assert d.download_text.text() == ""
    # k=0 adds no layer in the warp paste
    assert d.error.text() == "" and "1 layer in" in d.status.text(), d.status.text()
    # the picture while it learnt: shown during the run (step 1's), hidden once it is done
    assert not d.learning.pixmap().isNull() and not d.learning.isVisibleTo(d)
    assert max(d.learning.pixmap().width(), d.learning.pixmap().height()) <= 160
    assert d.run_button.isEnabled() and d.progress.value() == 1000
    assert app.readSetting("clipshape", "prompt", "") == PROMPT
    # the strength slider: its range is the transfer's, in 0.1 steps; moving it previews
    assert d.slider_box.isVisibleTo(d) and not d.keep_button.isEnabled()
    lo, hi = d.preview.result.strength_range()
    assert (d.slider.minimum(), d.slider.maximum()) == (round(lo * 10), round(hi * 10))
    assert d.slider_strength() == 2.0
    d.slider.setValue(12)
    (group,) = groups(doc)
    assert group.childNodes()[-1].name().startswith("preview") and d.keep_button.isEnabled()
    d.keep_button.click()
    assert group.childNodes()[-1].name() == "k=+1.2 " + PROMPT
    d.slider.setValue(5)
    d.done_button.click()
    assert [n.name() for n in group.childNodes()] == ["k=+2 " + PROMPT, "k=+1.2 " + PROMPT]
    assert not d.slider_box.isVisibleTo(d) and d.preview is None
    # the new fields reach the request
    d.face.setValue(2)
    d.also.setText("smiling")
    d.optimize_size.setValue(64)
    v = d.values()
    assert (v["face"], v["also"], v["optimize_size"]) == ("2", "smiling", "64")
    d.runner.close()


def test_a_face_photo_is_edited_on_the_face(krita, astronaut, model_files, tmp_path):
    from conftest import golden, reference_face
    w, h, rgba = astronaut
    doc = fake_krita.Document(w, h)
    node = doc.createNode("photo", "paintlayer")
    doc.rootNode().addChildNode(node, None)
    node.setPixelData(krita.clipshape_logic.swap_red_blue(rgba), 0, 0, w, h)   # Krita is BGRA
    doc.setActiveNode(node)
    model = krita.clipshape_logic.ModelChoice(set_name="files", device="cpu",
                                              face_detector_dir=golden("face/mtcnn"),
                                              **model_files).normalized()
    runner, out = start(krita, doc, node, model, request(krita, tmp_path, align="auto"))
    wait(runner)
    assert "done" in out, out.get("error")
    (group,) = groups(doc)
    layers = group.childNodes()
    assert [n.visible() for n in layers] == [False, True]      # k=+1.5 on top, shown
    x1, y1, x2, y2 = reference_face()["box"]
    for n in layers:
        b = n.bounds()
        assert b.x() <= x1 and b.y() <= y1 and b.x() + b.width() >= x2 and b.y() + b.height() >= y2
        assert b.x() >= 0 and b.y() >= 0 and b.x() + b.width() <= w and b.y() + b.height() <= h
    top = layers[-1]
    b = top.bounds()
    assert max(bytes(top.pixelData(b.x(), b.y(), b.width(), b.height()))[3::4]) > 0
    assert out["done"].face is not None and out["done"].face_text().startswith("face 1 of 1")
    runner.close()


@pytest.mark.skipif(not REAL_QT, reason="the docker UI needs PyQt5")
def test_docker_finds_faces_to_choose_and_shows_the_face_used(krita, model_files, astronaut,
                                                               tmp_path):
    """Find… lists the layer's faces (thumbnail and box) in a menu; choosing one sets Face; the
    run then shows the face it edited beside the status."""
    from PyQt5.QtCore import QCoreApplication
    from clipshape.docker import ClipShapeDocker
    from conftest import golden
    w, h, rgba = astronaut
    doc = fake_krita.Document(w, h)
    node = doc.createNode("photo", "paintlayer")
    doc.rootNode().addChildNode(node, None)
    node.setPixelData(krita.clipshape_logic.swap_red_blue(rgba), 0, 0, w, h)
    doc.setActiveNode(node)
    sys.modules["krita"].Krita.instance().active_document = doc
    d = ClipShapeDocker()
    d.model_set.setCurrentIndex(d.model_set.findData("files"))
    d.generator.setText(model_files["generator"])
    d.clip.setText(model_files["clip"])
    d.vocab.setText(model_files["vocab"])
    d.face_detector_dir.setText(golden("face/mtcnn"))
    d.device.setCurrentIndex(d.device.findData("cpu"))
    d.library_dir.setText(str(tmp_path / "edits"))
    d.find_faces()
    t0 = time.time()
    while d.faces_worker is not None and time.time() - t0 < 60:
        QCoreApplication.processEvents()
        time.sleep(0.005)
    assert d.error.text() == "" and d.status.text() == "1 face found: choose one"
    (action,) = d.faces_menu.actions()
    assert action.text().startswith("1: ") and " at 18" in action.text()
    assert not action.icon().isNull()
    d.face.setValue(0)
    action.trigger()
    assert d.face.value() == 1
    d.prompt.setText(PROMPT)
    d.steps.setValue(1)
    d.strengths.setText("2")
    d.start()
    wait(d.runner)
    assert d.error.text() == "" and "edited face 1 of 1" in d.status.text(), d.status.text()
    assert d.used_face.isVisibleTo(d) and not d.used_face.pixmap().isNull()
    assert "face 1 of 1 at " in d.used_face.toolTip()
    d.end_preview()
