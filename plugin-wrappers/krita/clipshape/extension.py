"""The CLIPShape extension: a Tools › Scripts action to apply a saved edit, and a blocking
scripting API (``apply_edit``) for the Python console, batch scripts and tests."""

from krita import Extension, Krita

from . import clipshape_logic as logic
from . import krita_host


class ClipShapeExtension(Extension):

    def __init__(self, parent):
        super().__init__(parent)
        self.contexts = logic.ContextCache()
        self.runner = None

    def setup(self):
        pass

    def createActions(self, window):
        action = window.createAction("clipshape_apply_saved", "Apply Saved CLIPShape Edit…",
                                     "tools/scripts")
        action.triggered.connect(self.apply_saved_interactive)

    def apply_edit(self, doc, node, model, request, progress=None):
        """Runs an edit on ``node`` of ``doc`` on the calling (GUI) thread and inserts the
        layer group → EditResult. Raises what the run raises (RequestError, cs.*Error)."""
        source, selection = krita_host.read_source(doc, node)
        job = logic.EditJob(model, request, source, selection, self.contexts)
        result = job.run(progress)
        krita_host.insert_result(doc, node, result)
        return result

    def apply_saved_interactive(self):
        from PyQt5.QtWidgets import QFileDialog, QMessageBox, QProgressDialog
        from .worker import Runner
        window = Krita.instance().activeWindow()
        parent = window.qwindow() if window is not None else None
        s = krita_host.read_settings()
        start_dir = s["library_dir"] or logic.default_library_dir()
        path, _ = QFileDialog.getOpenFileName(parent, "Apply saved CLIPShape edit", start_dir,
                                              "CLIPShape edits (*.safetensors)")
        if not path:
            return
        try:
            doc, node = krita_host.active_target()
            model = krita_host.model_from_settings(s)
            request = krita_host.request_from_settings(dict(s, prompt="", also=""),
                                                       saved_edit=path)
        except Exception as e:
            QMessageBox.warning(parent, "CLIPShape", logic.error_text(e))
            return
        dialog = QProgressDialog("Applying the edit…", "Cancel", 0, 1000, parent)
        dialog.setMinimumDuration(0)
        self.runner = self.runner or Runner(self.contexts)

        def progress(fraction, text):
            dialog.setLabelText(text)
            dialog.setValue(int(1000 * fraction))

        def done(result):
            dialog.reset()

        def error(message, cancelled):
            dialog.reset()
            if not cancelled:
                QMessageBox.warning(parent, "CLIPShape", message)

        dialog.canceled.connect(self.runner.cancel)
        try:
            self.runner.start(doc, node, model, request, progress, done, error)
        except Exception as e:
            dialog.reset()
            QMessageBox.warning(parent, "CLIPShape", logic.error_text(e))
