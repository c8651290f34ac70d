"""GUI test of the CLIPShape docker in the real Krita 5.2 window (Xvfb at 1366×768), installed
next to the plug-in only by install/host-tests.sh's GUI tier and enabled in its kritarc.

Once the main window is up (maximised, as a window manager would): opens the astronaut photo,
shows the CLIPShape docker, opens its Models section, chooses the `ffhq` set (which
host-tests.sh serves as the tiny models from a local mirror), clicks Download and waits for
"ready" (krita-models.png: the whole screen while it downloads), fills in tiny values, clicks
Run through Qt and waits for the result group. Then: the layers top first with only the
strongest positive one shown, the photo still the active layer, ONE undo step (Undo History's
rows; Edit › Undo removes the whole group, Redo brings it back), a second Run that edits the
photo again, krita-docker.png (the whole screen), the strength slider moved (its preview layer
follows; krita-strength.png). The window and the docker must fit the screen. Quits with
os._exit (0 = passed); lines starting with CLIPSHAPE-GUI-TEST are the summary. Every wait has a
deadline.
"""

import os
import sys
import time
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QPoint, QRect, QTimer
from PyQt5.QtWidgets import QAbstractItemView, QApplication, QDockWidget

MODELS = os.environ.get("CLIPSHAPE_TEST_MODELS", "")
SHOTS = os.environ.get("CLIPSHAPE_GUI_TEST_SHOT", "")
PROMPT = "a round face"
PROMPT2 = "a long face"
DEADLINE_S = 120


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
        # Xvfb has no window manager: fill the screen as a maximised window would (a window
        # whose minimum size is larger than the screen still overflows, and check_fit fails).
        self.window.qwindow().setGeometry(QApplication.primaryScreen().availableGeometry())
        self.doc = app.openDocument(os.path.join(MODELS, "astronaut.png"))
        if self.doc is None:
            raise AssertionError("Krita could not open astronaut.png")
        self.window.addView(self.doc)
        app.setActiveDocument(self.doc)
        self.later(self.fill_docker, 1000)

    def shoot(self, name):
        """The whole screen, as a person sees it."""
        pixmap = QApplication.primaryScreen().grabWindow(0)
        path = os.path.join(SHOTS, name + ".png")
        if not pixmap.save(path, "PNG"):
            raise AssertionError("could not save %s" % path)
        say("shot %s %dx%d" % (name, pixmap.width(), pixmap.height()))

    def check_fit(self, what, run_shown=True):
        """The main window within the screen, and the docker (its Run button shown) within
        the window: a docker that forces the window past a 1366×768 screen fails here."""
        screen = QApplication.primaryScreen().geometry()
        win = self.window.qwindow()
        frame = win.frameGeometry()
        if not screen.contains(frame):
            raise AssertionError("%s: the Krita window %s is not within the screen %s "
                                 "(minimum size %s)" % (what, _rect(frame), _rect(screen),
                                                        (win.minimumSizeHint().width(),
                                                         win.minimumSizeHint().height())))
        d = self.docker
        docked = QRect(d.mapToGlobal(QPoint(0, 0)), d.size())
        if not screen.contains(docked):
            raise AssertionError("%s: the docker %s is cut off by the screen %s"
                                 % (what, _rect(docked), _rect(screen)))
        run = d.run_button
        if run_shown and run.visibleRegion().isEmpty():
            raise AssertionError("%s: the Run button is not visible" % what)
        say("%s: window %s, docker %s within the screen %s" % (what, _rect(frame),
                                                             _rect(docked), _rect(screen)))

    def fill_docker(self):
        from clipshape.docker import ClipShapeDocker
        docks = [d for d in self.window.qwindow().findChildren(QDockWidget)
                 if isinstance(d, ClipShapeDocker)]
        if len(docks) != 1:
            raise AssertionError("%d CLIPShape dockers in the window" % len(docks))
        self.docker = d = docks[0]
        d.show()
        # In the tab of Brush Presets, as a person gives a docker room on a laptop's screen
        # (the other default dockers stay beside it).
        presets = [w for w in self.window.dockers() if w.objectName() == "PresetDocker"]
        if presets:
            self.window.qwindow().tabifyDockWidget(presets[0], d)
        d.raise_()
        d.models_section.set_expanded(True)
        d.model_set.setCurrentIndex(d.model_set.findData("ffhq"))
        d.refresh_models()
        if not d.download_button.isEnabled() or "MB" not in d.download_button.text():
            raise AssertionError("Download of the missing set not offered: %r, status %r"
                                 % (d.download_button.text(), d.models_status.text()))
        if "Model store: " not in d.store_path.text():
            raise AssertionError("the store's folder is not shown: %r" % d.store_path.text())
        say("models: %r; clicking %r" % (d.models_status.text(), d.download_button.text()))
        self.shot_during = False
        QApplication.processEvents()
        d.scroll.ensureWidgetVisible(d.download_button, 50, 150)
        d.download_button.click()
        self.later(self.wait_download, 50)

    def wait_download(self):
        d = self.docker
        if d.downloader is not None:
            if not self.shot_during and d.download_progress.value() > 0:
                self.shoot("krita-models")
                self.shot_during = True
            return self.later(self.wait_download, 20)
        if "Faces (FFHQ): ready" not in d.models_status.text():
            raise AssertionError("after the download: %r, %r" % (d.models_status.text(),
                                                                 d.download_text.text()))
        if not self.shot_during:     # too fast to catch midway: the finished section
            self.shoot("krita-models")
        say("download: %r; models: %r" % (d.download_text.text(), d.models_status.text()))
        self.run_edit()

    def history(self):
        """The Undo History docker (shown while the undo steps are counted)."""
        for dock in self.window.dockers():
            if dock.objectName() == "History":
                return dock
        raise AssertionError("no Undo History docker")

    def undo_rows(self):
        views = self.history().findChildren(QAbstractItemView)
        if not views or views[0].model() is None:
            raise AssertionError("the Undo History docker has no list")
        return views[0].model().rowCount()

    def photo(self):
        return [n for n in self.doc.topLevelNodes() if n.type() == "paintlayer"][-1]

    def groups(self):
        return [n for n in self.doc.topLevelNodes() if n.type() == "grouplayer"]

    def run_edit(self):
        d = self.docker
        d.models_section.set_expanded(False)
        d.prompt.setText(PROMPT)
        d.strengths.setText("-1,2")
        d.steps.setValue(3)
        d.settings_section.set_expanded(True)
        d.library_dir.setText(os.path.join(os.environ["HOME"], "edits-gui"))
        d.device.setCurrentIndex(d.device.findData("cpu"))
        d.settings_section.set_expanded(False)
        self.photo_name = self.photo().name()
        self.doc.setActiveNode(self.photo())
        # Choose the face from the list Find… shows (a menu of thumbnails).
        d.method_section.set_expanded(True)
        d.face.setValue(0)
        QApplication.processEvents()
        d.find_faces_button.click()
        self.later(self.wait_faces, 300)

    def wait_faces(self):
        d = self.docker
        if d.error.text():
            raise AssertionError("Find faces shows an error: %s" % d.error.text())
        menu = getattr(d, "faces_menu", None)
        if d.faces_worker is not None or menu is None or not menu.isVisible():
            return self.later(self.wait_faces, 200)
        actions = menu.actions()
        if len(actions) != 1 or not actions[0].text().startswith("1: "):
            raise AssertionError("faces listed: %r" % [a.text() for a in actions])
        self.check_fit("with the faces listed", run_shown=False)
        self.shoot("krita-faces")
        say("faces listed: %r" % [a.text() for a in actions])
        actions[0].trigger()
        menu.close()
        if d.face.value() != 1:
            raise AssertionError("choosing face 1 set Face to %d" % d.face.value())
        d.method_section.set_expanded(False)
        self.later(self.click_run, 200)

    def click_run(self):
        d = self.docker
        self.history().show()
        QApplication.processEvents()
        self.rows_before = self.undo_rows()
        if not d.isVisible() or not d.run_button.isVisible():
            raise AssertionError("the docker or its Run button is not visible")
        self.check_fit("before Run")
        say("docker visible; clicking Run (undo history: %d rows)" % self.rows_before)
        self.clicked = time.time()
        d.run_button.click()
        if d.error.text():
            raise AssertionError("the docker shows an error: %s" % d.error.text())
        self.later(self.wait_result, 300)

    def wait_result(self):
        d = self.docker
        if d.error.text():
            raise AssertionError("the docker shows an error: %s" % d.error.text())
        groups = [g for g in self.groups() if g.name() == PROMPT]
        if d.runner.busy or not groups:
            return self.later(self.wait_result, 300)
        self.doc.waitForDone()
        QApplication.processEvents()
        names = [(n.name(), n.visible()) for n in reversed(groups[0].childNodes())]
        expected = [("k=+2 " + PROMPT, True), ("k=-1 " + PROMPT, False)]   # top first
        if names != expected:
            raise AssertionError("layers %r != %r" % (names, expected))
        active = self.doc.activeNode()
        if active is None or active.name() != self.photo_name:
            raise AssertionError("the active layer after a run is %r, not the photo %r"
                                 % (active and active.name(), self.photo_name))
        rows = self.undo_rows()
        if rows != self.rows_before + 1:
            raise AssertionError("one run made %d undo steps" % (rows - self.rows_before))
        if d.learning.pixmap() is None or d.learning.pixmap().isNull():
            raise AssertionError("no picture was shown while the edit was learnt")
        if not d.used_face.isVisible() or d.used_face.pixmap().isNull():
            raise AssertionError("the face the run edited is not shown")
        say("result layers after %.1f s: %s; active %r; 1 undo step; status %r"
            % (time.time() - self.clicked, names, active.name(), d.status.text()))
        # Run again right away: it must edit the photo, not the result.
        d.prompt.setText(PROMPT2)
        self.rows_before = rows
        self.clicked = time.time()
        d.run_button.click()
        if d.error.text():
            raise AssertionError("the second Run shows an error: %s" % d.error.text())
        self.later(self.wait_second, 300)

    def wait_second(self):
        d = self.docker
        if d.error.text():
            raise AssertionError("the second Run shows an error: %s" % d.error.text())
        groups = [g for g in self.groups() if g.name() == PROMPT2]
        if d.runner.busy or not groups:
            return self.later(self.wait_second, 300)
        self.doc.waitForDone()
        QApplication.processEvents()
        order = [n.name() for n in self.doc.topLevelNodes()]
        # Edited the photo (a run on the result would have nested or failed), and the newest
        # result lies on top of the first, so the strength it shows is seen.
        if order != [self.photo_name, PROMPT, PROMPT2]:
            raise AssertionError("after the second run (bottom to top): %r" % order)
        rows = self.undo_rows()
        if rows != self.rows_before + 1:
            raise AssertionError("the second run made %d undo steps" % (rows - self.rows_before))
        say("second run after %.1f s on the photo, 1 undo step: %r"
            % (time.time() - self.clicked, order))
        Krita.instance().action("edit_undo").trigger()
        self.later(self.after_undo, 500)

    def after_undo(self):
        self.doc.waitForDone()
        names = [n.name() for n in self.doc.topLevelNodes()]
        if PROMPT2 in names or PROMPT not in names or self.photo_name not in names:
            raise AssertionError("after one Undo: %r" % names)
        say("one Undo removed the whole second group: %r" % names)
        Krita.instance().action("edit_redo").trigger()
        self.later(self.after_redo, 500)

    def after_redo(self):
        self.doc.waitForDone()
        if not [g for g in self.groups() if g.name() == PROMPT2]:
            raise AssertionError("Redo did not bring the group back: %r"
                                 % [n.name() for n in self.doc.topLevelNodes()])
        self.history().hide()
        d = self.docker
        say("Redo brought it back; status %r" % d.status.text())
        if not d.slider_box.isVisible():
            raise AssertionError("no strength slider after the run")
        self.doc.refreshProjection()
        self.later(self.shoot_docker, 1500)

    def shoot_docker(self):
        self.check_fit("with a result")
        self.shoot("krita-docker")
        d = self.docker
        # The second run's group lies above the first's, so its preview shows.
        names = [g.name() for g in self.groups()]     # bottom to top
        if names != [PROMPT, PROMPT2]:
            raise AssertionError("result groups (bottom to top) %r: the newest is not on top"
                                 % names)
        self.doc.setActiveNode(self.photo())
        d.scroll.ensureWidgetVisible(d.slider_box)
        # Halfway between the run's strengths (its start is the shown one, an end of the range).
        d.slider.setValue((d.slider.minimum() + d.slider.maximum()) // 2)
        group = self.docker.runner.group
        top = group.childNodes()[-1]
        if not top.name().startswith("preview") or not top.visible():
            raise AssertionError("moving the slider made no preview layer: %r" % top.name())
        QApplication.processEvents()
        active = self.doc.activeNode()
        if active is None or active.name() != self.photo_name:
            raise AssertionError("the preview layer took the photo's place as the active "
                                 "layer: %r" % (active and active.name()))
        say("slider at k=%s: %r" % (d.slider_strength(), d.slider_label.text()))
        self.doc.refreshProjection()
        self.later(self.shoot_strength, 1500)

    def shoot_strength(self):
        self.check_fit("with the slider", run_shown=False)   # scrolled to the slider
        active = self.doc.activeNode()
        if active is None or active.name() != self.photo_name:
            raise AssertionError("after the preview appeared the active layer is %r, not the "
                                 "photo" % (active and active.name()))
        self.shoot("krita-strength")
        d = self.docker
        d.keep_button.click()
        d.done_button.click()
        names = [n.name() for n in reversed(self.docker.runner.group.childNodes())]
        if not names[0].startswith("k=+") or any(n.startswith("preview") for n in names):
            raise AssertionError("after Keep and Done: %r" % names)
        say("Keep and Done: %r" % names)
        say("OK krita-gui in %.1f s" % (time.time() - self.t0))
        finish(0)


def _rect(r):
    return "%dx%d+%d+%d" % (r.width(), r.height(), r.x(), r.y())


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
