"""GUI smoke test of the CLIPShape docker in the real Krita 5.2 window (Xvfb), installed next to
the plug-in only by install/host-tests.sh's GUI tier and enabled in its kritarc.

Once the main window is up: opens the astronaut photo, shows the CLIPShape docker, chooses
the `ffhq` set (which host-tests.sh serves as the tiny models from a local mirror), clicks the
Models section's Download and waits for "ready" (krita-models.png of the section while it
downloads), fills in tiny values, clicks Run through Qt, waits until the result group appears
in the document, saves the main window to $CLIPSHAPE_GUI_TEST_SHOT/krita-docker.png and quits
with os._exit (0 = passed). Lines starting
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
        d.model_set.setCurrentIndex(d.model_set.findData("ffhq"))
        d.refresh_models()
        if not d.download_button.isEnabled() or "MB" not in d.download_button.text():
            raise AssertionError("Download of the missing set not offered: %r, status %r"
                                 % (d.download_button.text(), d.models_status.text()))
        say("models: %r; clicking %r" % (d.models_status.text(), d.download_button.text()))
        self.shot_during = False
        d.download_button.click()
        self.later(self.wait_download, 50)

    def wait_download(self):
        d = self.docker
        if d.downloader is not None:
            if not self.shot_during and d.download_progress.value() > 0:
                self.shot_during = d.models_box.grab().save(
                    os.path.join(SHOTS, "krita-models.png"), "PNG")
            return self.later(self.wait_download, 20)
        if "Faces (FFHQ): ready" not in d.models_status.text():
            raise AssertionError("after the download: %r, %r" % (d.models_status.text(),
                                                                 d.download_text.text()))
        if not self.shot_during:     # too fast to catch midway: the finished section
            d.models_box.grab().save(os.path.join(SHOTS, "krita-models.png"), "PNG")
        say("download: %r; models: %r" % (d.download_text.text(), d.models_status.text()))
        self.run_edit()

    def run_edit(self):
        d = self.docker
        d.prompt.setText(PROMPT)
        d.strengths.setText("0,3")
        d.steps.setValue(3)
        d.settings_box.setChecked(True)
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
        say("OK krita-gui in %.1f s" % (time.time() - self.t0))
        finish(0)


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
