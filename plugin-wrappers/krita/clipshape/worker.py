"""Runs an edit off Krita's GUI thread: a QThread around clipshape_logic.EditJob.

The GUI thread reads the pixels (Krita's API is not thread-safe), the worker loads the models
and runs encode → optimise → render, and the results come back through Qt signals (queued to
the GUI thread), where the layers are inserted. ``cancel()`` is safe from the GUI thread.
"""

from PyQt5.QtCore import QThread, pyqtSignal

from . import clipshape_logic as logic


class EditWorker(QThread):
    progressed = pyqtSignal(float, str)
    previewed = pyqtSignal(object)      # cs.Picture: the picture while it learns (RGBA8)
    succeeded = pyqtSignal(object)      # logic.EditResult
    failed = pyqtSignal(str, bool)      # message, cancelled

    def __init__(self, job, parent=None):
        super().__init__(parent)
        self.job = job
        self.error = None               # the exception of a failed run (its kind matters)

    def run(self):
        try:
            result = self.job.run(self._progress, self.previewed.emit)
        except Exception as e:  # shown in the docker, never as a traceback
            self.error = e
            self.failed.emit(logic.error_text(e), self.job.cancelled)
            return
        self.succeeded.emit(result)

    def _progress(self, fraction, text):
        self.progressed.emit(float(fraction), text)

    def cancel(self):
        self.job.cancel()


class Runner:
    """One edit at a time for a window: start() wires a worker to callbacks that run on the GUI
    thread and inserts the layers when it succeeds."""

    def __init__(self, contexts=None):
        self.contexts = contexts or logic.ContextCache()
        self.worker = None
        self.source = None

    @property
    def busy(self):
        return self.worker is not None

    def start(self, doc, node, model, request, on_progress, on_done, on_error,
              on_preview=None):
        from . import krita_host
        if self.busy:
            raise logic.RequestError("an edit is already running")
        source, selection = krita_host.read_source(doc, node)
        self.source = source    # what the run reads (a host's thumbnail of the face it edits)
        job = logic.EditJob(model, request, source, selection, self.contexts)
        worker = EditWorker(job)
        self.group = self.error = None

        def succeeded(result):
            try:
                try:
                    self.group = krita_host.insert_result(doc, node, result)
                except Exception as e:
                    self.error = e
                    on_error(logic.error_text(e), False)
                    return
                on_done(result)
            finally:
                self.worker = None

        def failed(message, cancelled):
            self.error = worker.error
            try:
                on_error(message, cancelled)
            finally:
                self.worker = None

        worker.progressed.connect(on_progress)
        if on_preview is not None:
            worker.previewed.connect(on_preview)
        worker.succeeded.connect(succeeded)
        worker.failed.connect(failed)
        self.worker = worker
        worker.start()
        return worker

    def cancel(self):
        if self.worker is not None:
            self.worker.cancel()

    def wait(self, msecs=None):
        w = self.worker
        if w is not None:
            return w.wait() if msecs is None else w.wait(msecs)
        return True

    def close(self):
        self.cancel()
        self.wait()
        self.contexts.close()


class DownloadWorker(QThread):
    """Downloads a model set off the GUI thread (clipshape_logic.ModelDownload.run): each
    progress report and the final status come back as a ``logic.DownloadStatus`` through
    ``progressed`` (queued to the GUI thread); ``cancel()`` is safe from the GUI thread."""

    progressed = pyqtSignal(object)     # logic.DownloadStatus, while running
    ended = pyqtSignal(object)          # logic.DownloadStatus: done, cancelled or failed

    def __init__(self, set_name, models_dir=None, parent=None):
        super().__init__(parent)
        self.download = logic.ModelDownload(set_name, models_dir, self._report)

    def _report(self, status):
        if status.state == "running":
            self.progressed.emit(status)

    def run(self):
        self.ended.emit(self.download.run())

    def cancel(self):
        self.download.cancel()


class AddFileWorker(QThread):
    """Registers a model file the user already has (clipshape_logic.add_model_file) off the GUI
    thread: the library copies and hashes it, which takes seconds for a generator of a GB.
    ``ended`` carries (the stored path, "") or ("", the user's message)."""

    ended = pyqtSignal(str, str)

    def __init__(self, set_name, path, models_dir=None, parent=None):
        super().__init__(parent)
        self.set_name, self.path, self.models_dir = set_name, path, models_dir

    def run(self):
        try:
            stored = logic.add_model_file(self.set_name, self.path, self.models_dir)
        except Exception as e:  # shown in the docker, never as a traceback
            self.ended.emit("", logic.error_text(e))
            return
        self.ended.emit(str(stored), "")


class FacesWorker(QThread):
    """Finds the faces of a layer off the GUI thread (clipshape_logic.find_faces: the models may
    load first, seconds for full-size files). ``ended`` carries ([FaceChoice], "") or
    ([], the user's message)."""

    ended = pyqtSignal(object, str)

    def __init__(self, model, source, contexts, parent=None):
        super().__init__(parent)
        self.model, self.source, self.contexts = model, source, contexts

    def run(self):
        try:
            faces = logic.find_faces(self.model, self.source, self.contexts)
        except Exception as e:  # shown in the docker, never as a traceback
            self.ended.emit([], logic.error_text(e))
            return
        self.ended.emit(faces, "")
