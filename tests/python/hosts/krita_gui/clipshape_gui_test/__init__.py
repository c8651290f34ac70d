"""GUI smoke test of the CLIPShape docker in the real Krita 5.2 window (Xvfb), installed next to
the plug-in only by install/host-tests.sh's GUI tier and enabled in its kritarc.

Once the main window is up: opens the astronaut photo, shows the CLIPShape docker, fills it
with the tiny golden models (CLIPSHAPE_TEST_MODELS) and tiny values, clicks Run through Qt,
waits until the result group appears in the document, saves the main window to
$CLIPSHAPE_GUI_TEST_SHOT/krita-docker.png and quits with os._exit (0 = passed). Lines starting
with CLIPSHAPE-GUI-TEST are the summary. Every wait has a deadline.
"""

import os
import sys
import time
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication, QDockWidget

MODELS = os.environ.get("CLIPSHAPE_TEST_MODELS", "")
SHOTS = os.environ.get("CLIPSHAPE_GUI_TEST_SHOT", "")
PROMPT = "a round face"
DEADLINE_S = 90


def say(*parts):
    print("CLIPSHAPE-GUI-TEST", *parts, flush=True)


def finish(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Steps:
    """The test as a chain of QTimer steps, so Krita's event loop keeps running between them."""

    def __init__(self):
        self.t0 = time.time()
        self.doc = self.docker = self.window = None

    def later(self, fn, ms=200):
        def guarded():
            try:
                if time.time() - self.t0 > DEADLINE_S:
                    raise AssertionError("deadline of %d s passed in %s" % (DEADLINE_S,
                                                                            fn.__name__))
                fn()
            except BaseException:
                traceback.print_exc()
                say("FAILED in", fn.__name__)
                finish(1)
        QTimer.singleShot(ms, guarded)

    def wait_window(self):
        app = Krita.instance()
        self.window = app.activeWindow()
        if self.window is None or not self.window.qwindow().isVisible():
            return self.later(self.wait_window, 500)
        say("main window up after %.1f s" % (time.time() - self.t0))
        self.doc = app.openDocument(os.path.join(MODELS, "astronaut.png"))
        if self.doc is None:
            raise AssertionError("Krita could not open astronaut.png")
        self.window.addView(self.doc)
        app.setActiveDocument(self.doc)
        self.later(self.fill_docker, 1000)

    def fill_docker(self):
        from clipshape.docker import ClipShapeDocker
        docks = [d for d in self.window.qwindow().findChildren(QDockWidget)
                 if isinstance(d, ClipShapeDocker)]
        if len(docks) != 1:
            raise AssertionError("%d CLIPShape dockers in the window" % len(docks))
        self.docker = d = docks[0]
        d.show()
        d.raise_()
        d.model_set.setCurrentIndex(d.model_set.findData("files"))
        d.prompt.setText(PROMPT)
        d.strengths.setText("0,3")
        d.steps.setValue(3)
        d.settings_box.setChecked(True)
        d.generator.setText(os.path.join(MODELS, "e4e.pt"))
        d.clip.setText(os.path.join(MODELS, "clip_jit.pt"))
        d.vocab.setText(os.path.join(MODELS, "bpe_simple_vocab_16e6.txt.gz"))
        d.face_detector_dir.setText(os.path.join(MODELS, "mtcnn"))
        d.library_dir.setText(os.path.join(os.environ["HOME"], "edits-gui"))
        d.device.setCurrentIndex(d.device.findData("cpu"))
        d.align.setCurrentIndex(d.align.findData("face"))
        node = [n for n in self.doc.topLevelNodes() if n.type() == "paintlayer"][0]
        self.doc.setActiveNode(node)
        QApplication.processEvents()
        if not d.isVisible() or not d.run_button.isVisible():
            raise AssertionError("the docker or its Run button is not visible")
        say("docker visible; clicking Run")
        self.clicked = time.time()
        d.run_button.click()
        if d.error.text():
            raise AssertionError("the docker shows an error: %s" % d.error.text())
        self.later(self.wait_result, 300)

    def wait_result(self):
        d = self.docker
        if d.error.text():
            raise AssertionError("the docker shows an error: %s" % d.error.text())
        groups = [n for n in self.doc.topLevelNodes()
                  if n.type() == "grouplayer" and n.name() == PROMPT]
        if d.runner.busy or not groups:
            return self.later(self.wait_result, 300)
        names = [n.name() for n in groups[0].childNodes()]
        expected = [PROMPT + " k=+3", PROMPT + " k=0"]   # bottom to top
        if names != expected:
            raise AssertionError("layers %r != %r" % (names, expected))
        say("result layers after %.1f s: %s; status %r" % (time.time() - self.clicked, names,
                                                             d.status.text()))
        self.doc.refreshProjection()
        self.later(self.shoot, 1500)

    def shoot(self):
        path = os.path.join(SHOTS, "krita-docker.png")
        pixmap = self.window.qwindow().grab()
        if not pixmap.save(path, "PNG"):
            raise AssertionError("could not save %s" % path)
        say("shot krita-docker %dx%d" % (pixmap.width(), pixmap.height()))
        self.shoot_models()
        say("OK krita-gui in %.1f s" % (time.time() - self.t0))
        finish(0)

    def shoot_models(self):
        """The docker's models section, when it has one, on its own."""
        box = getattr(self.docker, "models_box", None)
        if box is None:
            return
        path = os.path.join(SHOTS, "krita-models.png")
        if not box.grab().save(path, "PNG"):
            raise AssertionError("could not save %s" % path)
        say("shot krita-models")


class GuiTest(Extension):
    def setup(self):
        if not SHOTS:
            return
        say("extension loaded")
        self.steps = Steps()
        self.steps.later(self.steps.wait_window, 1000)

    def createActions(self, window):
        pass


Krita.instance().addExtension(GuiTest(Krita.instance()))
