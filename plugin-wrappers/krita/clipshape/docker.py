"""The CLIPShape docker: model set, prompt, strengths, steps, Run/Cancel, progress, last error;
the model sets' status with Download/Cancel, progress and licences; and settings (model store,
device, edit library, library path, model files), persisted with Krita's settings."""

from krita import DockWidget
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                             QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox,
                             QToolButton, QVBoxLayout, QWidget)

from . import clipshape_ctypes as cs
from . import clipshape_logic as logic
from . import krita_host
from .worker import DownloadWorker, Runner

DEVICE_ITEMS = (("auto", "Automatic"), ("cpu", "CPU"), ("cuda", "GPU (CUDA)"))
PASTE_ITEMS = (("warp", "Move the picture's own pixels"),
               ("changes", "The model's picture, where it changes"),
               ("region", "The whole face or selection"), ("frame", "The model's whole frame"))
ALIGN_ITEMS = (("auto", "Find the face for face models"), ("face", "Find and align a face"),
               ("none", "Use the selection as it is"))
SET_ITEMS = (("ffhq", "Faces (FFHQ)"), ("car", "Cars"), ("horse", "Horses"),
             ("files", "Model files below"))


def _job_controls(layout, action):
    """`action` and Cancel buttons, a progress bar (0–1000) and a wrapped status line, added to
    `layout`: what a run and a download both show. Returns (button, cancel, progress, label)."""
    row = QHBoxLayout()
    button = QPushButton(action)
    cancel = QPushButton("Cancel")
    cancel.setEnabled(False)
    row.addWidget(button)
    row.addWidget(cancel)
    layout.addLayout(row)
    progress = QProgressBar()
    progress.setRange(0, 1000)
    layout.addWidget(progress)
    label = QLabel("")
    label.setWordWrap(True)
    layout.addWidget(label)
    return button, cancel, progress, label


def _path_row(edit, folder, title):
    row = QWidget()
    box = QHBoxLayout(row)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(edit)
    button = QToolButton()
    button.setText("…")

    def pick():
        if folder:
            path = QFileDialog.getExistingDirectory(row, title, edit.text())
        else:
            path, _ = QFileDialog.getOpenFileName(row, title, edit.text())
        if path:
            edit.setText(path)

    button.clicked.connect(pick)
    box.addWidget(button)
    return row


class ClipShapeDocker(DockWidget):

    def __init__(self):
        super().__init__()
        self.setWindowTitle("CLIPShape")
        self.runner = Runner()
        self._probed = False
        s = krita_host.read_settings()
        if s["lib_path"]:
            cs.set_library_path(s["lib_path"])

        root = QWidget(self)
        layout = QVBoxLayout(root)
        form = QFormLayout()
        self.model_set = QComboBox()
        for key, label in SET_ITEMS:
            self.model_set.addItem(label, key)
        self._select(self.model_set, s["set_name"] or "files")
        self.prompt = QLineEdit(s["prompt"])
        self.prompt.setPlaceholderText("face with big nose")
        self.strengths = QLineEdit(s["strengths"])
        self.steps = QSpinBox()
        self.steps.setRange(1, logic.MAX_STEPS)
        self.steps.setValue(int(s["steps"] or logic.DEFAULT_STEPS))
        self.saved_edit = QLineEdit()
        self.saved_edit.setPlaceholderText("(learn a new edit)")
        form.addRow("Model set", self.model_set)
        form.addRow("Prompt", self.prompt)
        form.addRow("Strengths", self.strengths)
        form.addRow("Steps", self.steps)
        self.paste = QComboBox()
        for key, label in PASTE_ITEMS:
            self.paste.addItem(label, key)
        self._select(self.paste, s["paste"])
        form.addRow("Paste back", self.paste)
        form.addRow("Apply saved edit", _path_row(self.saved_edit, False, "Saved edit"))
        layout.addLayout(form)

        self.run_button, self.cancel_button, self.progress, self.status = _job_controls(layout, "Run")
        self.progress.setValue(0)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d33;")
        layout.addWidget(self.error)

        layout.addWidget(self._models_section())

        self.settings_box = QGroupBox("Settings")
        self.settings_box.setCheckable(True)
        self.settings_box.setChecked(False)
        sform = QFormLayout(self.settings_box)
        self.models_dir = QLineEdit(s["models_dir"])
        self.models_dir.setPlaceholderText("$CLIPSHAPE_MODELS or ~/.local/share/clipshape/models")
        self.device = QComboBox()
        for key, label in DEVICE_ITEMS:
            self.device.addItem(label, key)
        self._select(self.device, s["device"])
        self.library_dir = QLineEdit(s["library_dir"])
        self.library_dir.setPlaceholderText(logic.default_library_dir())
        self.lib_path = QLineEdit(s["lib_path"])
        self.lib_path.setPlaceholderText("libclipshape.so next to the plug-in")
        self.generator = QLineEdit(s["generator"])
        self.clip = QLineEdit(s["clip"])
        self.vocab = QLineEdit(s["vocab"])
        self.layer = QLineEdit(s["layer"])
        self.layer.setPlaceholderText("model set's default (convs.3)")
        self.layer.setToolTip("convs.3; convs.3,convs.5 learns both together; auto picks by a short probe")
        self.fit = QCheckBox("Grow the box to the model's frame")
        self.fit.setChecked(str(s["fit_to_frame"]).lower() == "true")
        self.align = QComboBox()
        for key, label in ALIGN_ITEMS:
            self.align.addItem(label, key)
        self._select(self.align, s["align"])
        self.face_detector_dir = QLineEdit(s["face_detector_dir"])
        self.face_detector_dir.setPlaceholderText("the model set's (MTCNN pnet/rnet/onet.pt)")
        sform.addRow("Model store", _path_row(self.models_dir, True, "Model store"))
        sform.addRow("Device", self.device)
        sform.addRow("Edit library", _path_row(self.library_dir, True, "Edit library"))
        sform.addRow("libclipshape.so", _path_row(self.lib_path, False, "libclipshape.so"))
        sform.addRow("Generator/e4e file", _path_row(self.generator, False, "e4e checkpoint"))
        sform.addRow("CLIP file", _path_row(self.clip, False, "CLIP model"))
        sform.addRow("CLIP vocab", _path_row(self.vocab, False, "BPE vocab"))
        sform.addRow("Generator layer", self.layer)
        sform.addRow("Align", self.align)
        sform.addRow("Face detector", _path_row(self.face_detector_dir, True, "Face detector folder"))
        sform.addRow(self.fit)
        layout.addWidget(self.settings_box)
        layout.addStretch(1)
        self.setWidget(root)

        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_set.currentIndexChanged.connect(lambda _: self.refresh_models())
        self.models_dir.editingFinished.connect(self.refresh_models)

    def _models_section(self):
        """Each model set's status, and the chosen set's download: licences, Download/Cancel,
        progress "MB done / total, MB/s" (clipshape_logic.ModelDownload on a QThread)."""
        self.models_box = QGroupBox("Models")
        box = QVBoxLayout(self.models_box)
        self.models_status = QLabel("")
        self.models_status.setWordWrap(True)
        box.addWidget(self.models_status)
        self.licences = QLabel("")
        self.licences.setWordWrap(True)
        self.licences.setStyleSheet("color: #888;")
        box.addWidget(self.licences)
        (self.download_button, self.download_cancel, self.download_progress,
         self.download_text) = _job_controls(box, "Download")
        self.download_button.clicked.connect(self.start_download)
        self.download_cancel.clicked.connect(self.cancel_download)
        self.downloader = None
        return self.models_box
    # — Krita —

    def canvasChanged(self, canvas):
        pass

    def showEvent(self, event):
        super().showEvent(event)
        self.probe_devices()
        self.refresh_models()

    # — state —

    @staticmethod
    def _select(combo, key):
        i = combo.findData(key)
        combo.setCurrentIndex(i if i >= 0 else 0)

    def probe_devices(self):
        """Greys out the GPU when the library finds none (loads the library once)."""
        if self._probed:
            return
        self._probed = True
        try:
            n = cs.cuda_device_count()
        except cs.ClipShapeError as e:
            self.show_error(logic.error_text(e))
            n = 0
        item = self.device.model().item(self.device.findData("cuda"))
        if item is not None:
            item.setEnabled(n > 0)
        if n == 0 and self.device.currentData() == "cuda":
            self._select(self.device, "auto")

    def values(self):
        return {
            "set_name": self.model_set.currentData(),
            "models_dir": self.models_dir.text(),
            "device": self.device.currentData(),
            "library_dir": self.library_dir.text(),
            "lib_path": self.lib_path.text(),
            "generator": self.generator.text(),
            "clip": self.clip.text(),
            "vocab": self.vocab.text(),
            "layer": self.layer.text(),
            "steps": str(self.steps.value()),
            "strengths": self.strengths.text(),
            "prompt": self.prompt.text(),
            "fit_to_frame": "true" if self.fit.isChecked() else "false",
            "paste": self.paste.currentData(),
            "align": self.align.currentData(),
            "face_detector_dir": self.face_detector_dir.text(),
        }

    def show_error(self, text):
        if text and self.model_set.currentData() != "files":
            self.refresh_models()
            if self.download_button.isEnabled():
                text += "\nOr download it here: Models › %s." % self.download_button.text()
        self.error.setText(text)

    def _set_running(self, running):
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def refresh_models(self):
        """The status lines of every set; Download enabled for a chosen set that is missing."""
        if self.downloader is not None:
            return
        chosen = self.model_set.currentData()
        try:
            sets = logic.model_sets(self.models_dir.text().strip())
        except Exception as e:
            self.models_status.setText(logic.error_text(e))
            self.download_button.setEnabled(False)
            return
        self.models_status.setText("\n".join(logic.set_status(m) for m in sets.values()))
        wanted = sets.get(chosen)
        missing = wanted is not None and not wanted.complete
        self.download_button.setEnabled(missing)
        self.download_button.setText("Download %s (%s)" % (
            logic.SET_LABELS.get(chosen, chosen), logic.format_mb(wanted.download_bytes))
            if missing else "Download")
        self.licences.setText("Licences: " + logic.licence_text(wanted) if missing else "")

    def start_download(self):
        chosen = self.model_set.currentData()
        if self.downloader is not None or chosen == "files":
            return
        worker = DownloadWorker(chosen, self.models_dir.text().strip() or None)
        worker.progressed.connect(self.on_download_progress)
        worker.ended.connect(self.on_download_ended)
        self.downloader = worker
        self.download_button.setEnabled(False)
        self.download_cancel.setEnabled(True)
        self.download_progress.setValue(0)
        self.download_text.setText("Starting the download…")
        worker.start()

    def cancel_download(self):
        if self.downloader is not None:
            self.download_text.setText("Cancelling…")
            self.downloader.cancel()

    def on_download_progress(self, status):
        self.download_progress.setValue(int(round(1000 * status.fraction)))
        self.download_text.setText(status.text)

    def on_download_ended(self, status):
        worker, self.downloader = self.downloader, None
        if worker is not None:
            worker.wait()
        self.download_cancel.setEnabled(False)
        self.download_progress.setValue(int(round(1000 * status.fraction)))
        self.download_text.setText(status.text)
        self.refresh_models()

    # — actions —

    def start(self):
        self.show_error("")
        self.status.setText("")
        try:
            values = self.values()
            krita_host.write_settings(values)
            if values["lib_path"]:
                cs.set_library_path(values["lib_path"])
            model = krita_host.model_from_settings(values)
            request = krita_host.request_from_settings(values, self.saved_edit.text())
            doc, node = krita_host.active_target()
            self.progress.setValue(0)
            self.runner.start(doc, node, model, request, self.on_progress, self.on_done,
                              self.on_error)
        except Exception as e:
            self.show_error(logic.error_text(e))
            return
        self._set_running(True)

    def cancel(self):
        self.status.setText("Cancelling…")
        self.runner.cancel()

    def on_progress(self, fraction, text):
        self.progress.setValue(int(round(1000 * max(0.0, min(1.0, fraction)))))
        self.status.setText(text)

    def on_done(self, result):
        self._set_running(False)
        self.progress.setValue(1000)
        self.status.setText(result.summary())

    def on_error(self, message, cancelled):
        self._set_running(False)
        self.progress.setValue(0)
        if cancelled:
            self.status.setText("Cancelled; nothing was added.")
        else:
            self.show_error(message)
            self.status.setText("")

