"""The CLIPShape docker: model set, prompt, strengths, steps, Run/Cancel, progress, last error,
a strength slider after a run; collapsible sections for the model sets (status, Download,
"Use a file I already have…"), the settings (model store, device, edit library, model files)
and the method's options. Everything sits in a scroll area, so the docker fits a 1366×768
screen next to Krita's default dockers. Values persist with Krita's settings."""

import os

from krita import DockWidget
from PyQt5.QtCore import QSize, Qt
from PyQt5.QtGui import QPalette
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QFrame,
                             QHBoxLayout, QLabel, QLineEdit, QMenu, QProgressBar, QPushButton,
                             QScrollArea, QSizePolicy, QSlider, QSpinBox, QToolButton,
                             QVBoxLayout, QWidget)

from . import clipshape_ctypes as cs
from . import clipshape_logic as logic
from . import krita_host
from .worker import AddFileWorker, DownloadWorker, FacesWorker, Runner

DEVICE_ITEMS = (("auto", "Automatic"), ("cpu", "CPU"), ("cuda", "GPU (CUDA)"))
PASTE_ITEMS = (("warp", "Move the picture's own pixels"),
               ("changes", "The model's picture, where it changes"),
               ("region", "The whole face or selection"), ("frame", "The model's whole frame"))
ALIGN_ITEMS = (("auto", "Find the face for face models"), ("face", "Find and align a face"),
               ("none", "Use the selection as it is"))
SET_ITEMS = (("ffhq", "Faces (FFHQ)"), ("car", "Cars"), ("horse", "Horses"),
             ("files", "Model files (under Settings)"))

# What each file chooser offers (the rest stays reachable through "All files").
SAVED_EDIT_FILTER = "CLIPShape edits (*.safetensors)"
CHECKPOINT_FILTER = "Model checkpoints (*.pt *.pth *.safetensors)"
CLIP_FILTER = "CLIP models (*.pt)"
VOCAB_FILTER = "CLIP vocabularies (*.txt.gz)"
LIBRARY_FILTER = "Libraries (*.so *.dylib *.dll)"
MODEL_FILE_FILTER = "Model files (*.pt *.pth *.safetensors *.txt.gz)"

# Side of a face's thumbnail (the Find faces list, the face a run edited).
FACE_ICON = 48

# Slider positions per unit of strength: 0.1 steps.
SLIDER_SCALE = 10


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


def start_folder(text, default=""):
    """Where a file chooser opens: the field's file's folder (or the folder it names) when it
    exists, else ``default`` when it exists, else the home folder (never "/")."""
    path = os.path.expanduser((text or "").strip())
    for candidate in (path, os.path.dirname(path), default):
        if candidate and os.path.isdir(candidate):
            return candidate
    return os.path.expanduser("~")


def _path_row(edit, folder, title, name_filter="", default=""):
    """``edit`` with a "…" button that opens a chooser at start_folder(edit's text,
    ``default``); ``name_filter`` limits a file chooser to the files the field takes."""
    row = QWidget()
    box = QHBoxLayout(row)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(edit)
    button = QToolButton()
    button.setText("…")
    button.setToolTip("Choose the %s" % title.lower() if folder else "Choose the %s file"
                      % title)

    def pick():
        start = start_folder(edit.text(), default() if callable(default) else default)
        if folder:
            path = QFileDialog.getExistingDirectory(row, title, start)
        else:
            filters = ";;".join(f for f in (name_filter, "All files (*)") if f)
            path, _ = QFileDialog.getOpenFileName(row, title, start, filters)
        if path:
            edit.setText(path)
            edit.editingFinished.emit()

    button.clicked.connect(pick)
    box.addWidget(button)
    row.button = button
    return row


def _grey_placeholder(edit):
    """Placeholders in a dimmed colour: in Krita's themes they otherwise read like typed text."""
    palette = edit.palette()
    colour = palette.color(QPalette.Disabled, QPalette.Text)
    colour.setAlpha(160)
    palette.setColor(QPalette.PlaceholderText, colour)
    edit.setPalette(palette)
    return edit


def _line(text="", placeholder=""):
    edit = QLineEdit(text)
    if placeholder:
        edit.setPlaceholderText(placeholder)
        _grey_placeholder(edit)
    # Long paths must not widen the docker: the field scrolls instead.
    edit.setMinimumWidth(60)
    edit.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
    return edit


def _combo(items, current):
    combo = QComboBox()
    for key, label in items:
        combo.addItem(label, key)
    # A long item must not set the docker's width; the open list still shows it whole.
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(10)
    i = combo.findData(current)
    combo.setCurrentIndex(i if i >= 0 else 0)
    return combo


def _form():
    form = QFormLayout()
    form.setContentsMargins(4, 4, 4, 4)
    # Labels above the fields when the docker is narrow, beside them when there is room.
    form.setRowWrapPolicy(QFormLayout.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
    return form


class Section(QWidget):
    """A titled part of the docker that really collapses: the arrow button hides or shows its
    contents (the space they took goes to the others)."""

    def __init__(self, title, expanded=False, parent=None):
        super().__init__(parent)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setAutoRaise(True)
        self.toggle.setStyleSheet("QToolButton { font-weight: bold; border: none; }")
        box.addWidget(self.toggle)
        self.body = QFrame()
        self.body.setFrameShape(QFrame.StyledPanel)
        box.addWidget(self.body)
        self.toggle.toggled.connect(self._toggled)
        self.toggle.setChecked(expanded)
        self._toggled(expanded)

    def _toggled(self, expanded):
        self.toggle.setArrowType(Qt.DownArrow if expanded else Qt.RightArrow)
        self.body.setVisible(expanded)

    @property
    def expanded(self):
        return self.toggle.isChecked()

    def set_expanded(self, expanded):
        self.toggle.setChecked(expanded)


class _Scroll(QScrollArea):
    """The docker's scroll area: it asks for a docker-sized width and height, whatever the
    contents would like (they scroll), so Krita's dock area is never forced wider or taller."""

    def sizeHint(self):
        inner = self.widget().sizeHint() if self.widget() else QSize(280, 400)
        return QSize(min(inner.width() + 20, 320), min(inner.height(), 560))

    def minimumSizeHint(self):
        return QSize(200, 160)


# Side of the picture shown while it learns: small enough for a docker at 1366×768.
LEARNING_SIDE = 160


class ClipShapeDocker(DockWidget):

    def __init__(self):
        super().__init__()
        self.setWindowTitle("CLIPShape")
        self.setToolTip("CLIPShape %s: text-driven shape editing" % logic.plugin_version())
        self.runner = Runner()
        self.preview = None         # krita_host.StrengthPreview after a warp run
        self._probed = False
        self._run_model = None      # the ModelChoice of the run in flight (its errors' kind)
        self._run_source = None     # the pixels it read (the thumbnail of the face it edits)
        self._adding = None         # "Use a file I already have…": the files still to add
        self._missing_error = False  # the error shown is about missing model files
        s = krita_host.read_settings()
        if s["lib_path"]:
            cs.set_library_path(s["lib_path"])

        root = QWidget()
        layout = QVBoxLayout(root)
        layout.setContentsMargins(4, 4, 4, 4)
        form = _form()
        self.model_set = _combo(SET_ITEMS, s["set_name"] or "files")
        self.prompt = _line(s["prompt"], "e.g. face with big nose")
        self.strengths = _line(s["strengths"], "e.g. " + logic.DEFAULT_STRENGTHS)
        self.strengths.setToolTip(logic.STRENGTH_HELP + ". One layer per strength; the "
                                  "strongest positive one is shown.")
        self.steps = QSpinBox()
        self.steps.setRange(1, logic.MAX_STEPS)
        self.steps.setValue(int(s["steps"] or logic.DEFAULT_STEPS))
        self.steps.setToolTip("Optimisation steps of the learning (more: closer to the prompt, "
                              "slower)")
        self.paste = _combo(PASTE_ITEMS, s["paste"])
        self.saved_edit = _line("", "(learn a new edit)")
        form.addRow("Model set", self.model_set)
        form.addRow("Prompt", self.prompt)
        form.addRow("Strengths", self.strengths)
        form.addRow("Steps", self.steps)
        form.addRow("Paste back", self.paste)
        self.saved_edit_row = _path_row(self.saved_edit, False, "Saved edit", SAVED_EDIT_FILTER,
                                        lambda: self.library_dir.text()
                                        or logic.default_library_dir())
        form.addRow("Apply saved edit", self.saved_edit_row)
        layout.addLayout(form)

        (self.run_button, self.cancel_button, self.progress,
         self.status) = _job_controls(layout, "Run")
        self.progress.setValue(0)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d33;")
        self.error.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.error)
        # The face a run edited, beside its description in the status line.
        self.used_face = QLabel()
        self.used_face.setToolTip("The face the last run edited")
        self.used_face.hide()
        layout.addWidget(self.used_face)
        # The picture while it learns (a CPU edit takes minutes): the model's frame every few
        # steps, hidden between runs.
        self.learning = QLabel()
        self.learning.setAlignment(Qt.AlignCenter)
        self.learning.setToolTip("The picture as the edit is being learnt (the model's view)")
        self.learning.hide()
        layout.addWidget(self.learning)
        layout.addWidget(self._slider_box())

        self.models_section = Section("Models")
        self.models_section.body.setLayout(self._models_box())
        layout.addWidget(self.models_section)
        self.settings_section = Section("Settings")
        self.settings_section.body.setLayout(self._settings_form(s))
        layout.addWidget(self.settings_section)
        self.method_section = Section("Method options")
        self.method_section.body.setLayout(self._method_form(s))
        layout.addWidget(self.method_section)
        layout.addStretch(1)

        self.scroll = _Scroll()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.scroll.setWidget(root)
        self.setWidget(self.scroll)

        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_set.currentIndexChanged.connect(lambda _: self.set_changed())
        self.models_dir.editingFinished.connect(self.refresh_models)
        self.set_changed(initial=True)

    # — building —

    def _slider_box(self):
        """After a "Move the picture's own pixels" run: a slider that moves the photo to any
        strength live (one preview layer), Keep (the previewed strength as a layer) and Done."""
        self.slider_box = QFrame()
        self.slider_box.setFrameShape(QFrame.StyledPanel)
        box = QVBoxLayout(self.slider_box)
        self.slider_label = QLabel("")
        self.slider_label.setWordWrap(True)
        self.slider_label.setToolTip(logic.STRENGTH_HELP)
        box.addWidget(self.slider_label)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setToolTip(logic.STRENGTH_HELP)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setTickInterval(SLIDER_SCALE)          # a mark per unit of strength
        box.addWidget(self.slider)
        ends = QHBoxLayout()
        self.slider_lo, self.slider_hi = QLabel(""), QLabel("")
        ends.addWidget(self.slider_lo)
        ends.addStretch(1)
        ends.addWidget(self.slider_hi)
        box.addLayout(ends)
        row = QHBoxLayout()
        self.keep_button = QPushButton("Keep")
        self.keep_button.setToolTip("Add the previewed strength to the group as a layer")
        self.keep_button.setEnabled(False)
        self.done_button = QPushButton("Done")
        self.done_button.setToolTip("Remove the preview and hide the slider")
        row.addWidget(self.keep_button)
        row.addWidget(self.done_button)
        box.addLayout(row)
        self.slider.valueChanged.connect(self.on_slider)
        self.keep_button.clicked.connect(self.keep_strength)
        self.done_button.clicked.connect(self.end_preview)
        self.slider_box.hide()
        return self.slider_box

    def _models_box(self):
        """Each model set's status, the store's folder, and for the chosen set: licences,
        Download/Cancel with progress (clipshape_logic.ModelDownload on a QThread), and "Use a
        file I already have…" (the file registered into the store, as `clipshape models add`)."""
        box = QVBoxLayout()
        box.setContentsMargins(2, 4, 2, 4)
        self.models_status = QLabel("")
        self.models_status.setWordWrap(True)
        box.addWidget(self.models_status)
        self.store_path = QLabel("")
        self.store_path.setWordWrap(True)
        self.store_path.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.store_path.setStyleSheet("color: #888;")
        box.addWidget(self.store_path)
        self.licences = QLabel("")
        self.licences.setWordWrap(True)
        self.licences.setStyleSheet("color: #888;")
        box.addWidget(self.licences)
        (self.download_button, self.download_cancel, self.download_progress,
         self.download_text) = _job_controls(box, "Download")
        self.add_file_button = QPushButton("Use a file I already have…")
        self.add_file_button.setToolTip("Copy a model file you downloaded before into the "
                                        "store, as a file of the chosen set (no download)")
        box.addWidget(self.add_file_button)
        self.download_button.clicked.connect(self.start_download)
        self.download_cancel.clicked.connect(self.cancel_download)
        self.add_file_button.clicked.connect(lambda: self.add_model_file())
        self.downloader = None
        self._download_failed = False
        return box

    def _settings_form(self, s):
        sform = _form()
        self.models_dir = _line(s["models_dir"], "$CLIPSHAPE_MODELS or "
                                "~/.local/share/clipshape/models")
        self.device = _combo(DEVICE_ITEMS, s["device"])
        self.library_dir = _line(s["library_dir"], logic.default_library_dir())
        self.lib_path = _line(s["lib_path"], "libclipshape.so next to the plug-in")
        self.generator = _line(s["generator"], "e.g. e4e_ffhq_encode.pt")
        self.clip = _line(s["clip"], "e.g. ViT-B-32.pt")
        self.vocab = _line(s["vocab"], "e.g. bpe_simple_vocab_16e6.txt.gz")
        self.face_detector_dir = _line(s["face_detector_dir"],
                                       "the model set's (MTCNN pnet/rnet/onet.pt)")
        self.generator_row = _path_row(self.generator, False, "Generator/e4e", CHECKPOINT_FILTER)
        sform.addRow("Model store", _path_row(self.models_dir, True, "Model store",
                                              default=self._store_folder))
        sform.addRow("Device", self.device)
        sform.addRow("Edit library", _path_row(self.library_dir, True, "Edit library",
                                               default=logic.default_library_dir()))
        sform.addRow("libclipshape.so", _path_row(self.lib_path, False, "libclipshape.so",
                                                  LIBRARY_FILTER))
        sform.addRow("Generator/e4e file", self.generator_row)
        sform.addRow("CLIP file", _path_row(self.clip, False, "CLIP", CLIP_FILTER))
        sform.addRow("CLIP vocab", _path_row(self.vocab, False, "CLIP vocab", VOCAB_FILTER))
        sform.addRow("Face detector folder", _path_row(self.face_detector_dir, True,
                                                       "Face detector folder"))
        return sform

    def _method_form(self, s):
        mform = _form()
        self.face = QSpinBox()
        self.face.setRange(0, 99)
        self.face.setSpecialValueText("auto")
        self.face.setValue(_int(s["face"]))
        self.face.setToolTip("Which face to edit: 1 = the first face found; 0 (auto) = the "
                             "one the selection covers, else the largest")
        self.find_faces_button = QToolButton()
        self.find_faces_button.setText("Find…")
        self.find_faces_button.setToolTip("Find the faces of the layer and choose one from a "
                                          "list")
        self.find_faces_button.clicked.connect(self.find_faces)
        self.faces_worker = None
        face_row = QWidget()
        face_box = QHBoxLayout(face_row)
        face_box.setContentsMargins(0, 0, 0, 0)
        face_box.addWidget(self.face, 1)
        face_box.addWidget(self.find_faces_button)
        self.also = _line(s["also"], "e.g. smiling (learnt jointly)")
        self.also.setToolTip("A second prompt learnt together with the first")
        self.optimize_size = QSpinBox()
        self.optimize_size.setRange(0, 4096)
        self.optimize_size.setSingleStep(16)
        self.optimize_size.setSuffix(" px")
        self.optimize_size.setSpecialValueText("automatic")
        self.optimize_size.setValue(_int(s["optimize_size"]))
        self.optimize_size.setToolTip("The side the edit is learnt at (16–4096 px); 0 = "
                                      "automatic")
        self.layer = _line(s["layer"], "set's default, e.g. convs.3, or auto")
        self.layer.setToolTip("convs.3; convs.3,convs.5 learns both together; auto picks by a "
                              "short probe")
        self.keep_rest = QCheckBox("Keep the rest as it is")
        self.keep_rest.setToolTip("Learn the edit so that the picture around the face or the "
                                  "selection changes as little as possible (λ3)")
        self.keep_rest.setChecked(str(s["keep_rest"]).lower() == "true")
        self.align = _combo(ALIGN_ITEMS, s["align"])
        self.fit = QCheckBox("Grow to the model's frame")
        self.fit.setToolTip("Grow the selection's box to the aspect of the model's frame "
                            "(the model sees more of the picture around it)")
        self.fit.setChecked(str(s["fit_to_frame"]).lower() == "true")
        mform.addRow("Face", face_row)
        mform.addRow("Second prompt", self.also)
        mform.addRow("Learning size", self.optimize_size)
        mform.addRow(self.keep_rest)
        mform.addRow("Generator layer", self.layer)
        mform.addRow("Align", self.align)
        mform.addRow(self.fit)
        return mform

    # — Krita —

    def canvasChanged(self, canvas):
        pass

    def showEvent(self, event):
        super().showEvent(event)
        first = not self._probed
        self.probe_devices()
        self.refresh_models()
        if first and self.download_button.isEnabled():
            # The chosen set still has to be fetched: where to do it is the first thing to see.
            self.models_section.set_expanded(True)

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
            "face": str(self.face.value()),
            "also": self.also.text(),
            "optimize_size": str(self.optimize_size.value()),
            "keep_rest": "true" if self.keep_rest.isChecked() else "false",
        }

    def show_error(self, text, missing_models=False):
        """``text`` in the error line; for an error about missing model files (the one kind a
        download fixes) with a downloadable set chosen, the Models section opens and the text
        says what it offers."""
        self._missing_error = bool(text) and missing_models
        if self._missing_error and self.model_set.currentData() != "files":
            self.refresh_models()
            self.models_section.set_expanded(True)
            if logic.PLUGIN_GUIDANCE not in text:
                text += "\n" + logic.PLUGIN_GUIDANCE
        self.error.setText(text)

    def _set_running(self, running):
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def set_changed(self, initial=False):
        """The model set chosen: "Model files" opens Settings, where their fields are."""
        files = self.model_set.currentData() == "files"
        self.add_file_button.setEnabled(not files)
        if initial:     # the library loads when the docker is first shown, not at Krita's start
            return
        if files:
            self.settings_section.set_expanded(True)
            self.scroll.ensureWidgetVisible(self.generator_row)
            self.generator.setFocus()
        self.refresh_models()

    def _store_folder(self):
        try:
            return cs.models_dir(self.models_dir.text().strip() or None)
        except Exception:  # an older library without cs_models_dir: the home folder
            return ""

    def refresh_models(self):
        """The status lines of every set and the store's folder; Download enabled for a chosen
        set that is missing."""
        if self.downloader is not None:
            return
        chosen = self.model_set.currentData()
        store = self._store_folder()
        self.store_path.setText("Model store: %s" % store if store else "")
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
        # The set's name is in the status lines above; the button stays narrow.
        self.download_button.setText("Download (%s)" % logic.format_mb(wanted.download_bytes)
                                     if missing else "Download")
        self.download_button.setToolTip("Download %s" % logic.SET_LABELS.get(chosen, chosen)
                                        if missing else "The chosen set is ready")
        self.licences.setText("Licences: " + logic.licence_text(wanted) if missing else "")

    def _models_fixed(self):
        """A download or an added file completed the set: its "missing" error is stale."""
        if self._missing_error:
            self.show_error("")
        self.refresh_models()

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
        self._download_failed = status.state == "failed"
        if status.state == "done":
            self._models_fixed()
        else:
            self.refresh_models()

    def add_model_file(self, path=None):
        """"Use a file I already have…": a file chooser (home folder, model files; several at
        once, a set has up to nine), then each file is registered as a file of the chosen set
        in the store (logic.add_model_file on a QThread: the library copies and hashes it), one
        after the other; one that is none of the set's does not stop the others. The user's
        files are left as they are. ``path``: a path or a list of them, instead of asking."""
        chosen = self.model_set.currentData()
        if chosen == "files" or self.downloader is not None:
            return
        if not path:
            filters = MODEL_FILE_FILTER + ";;All files (*)"
            path, _ = QFileDialog.getOpenFileNames(self, "Use model files I already have",
                                                   os.path.expanduser("~"), filters)
        paths = [path] if isinstance(path, str) else list(path or [])
        if not paths:
            return
        self._adding = {"set": chosen, "todo": paths, "added": [], "failed": []}
        self.download_button.setEnabled(False)
        self.add_file_button.setEnabled(False)
        self._add_next()

    def _add_next(self):
        job = self._adding
        path = job["todo"].pop(0)
        worker = AddFileWorker(job["set"], path, self.models_dir.text().strip() or None)
        worker.ended.connect(lambda stored, error: self.on_file_added(path, stored, error))
        self.downloader = worker     # one store operation at a time
        self.download_text.setText("Copying and checking %s…" % os.path.basename(path))
        worker.start()

    def on_file_added(self, path, stored, error):
        worker, self.downloader = self.downloader, None
        if worker is not None:
            worker.wait()
        job = self._adding
        label = logic.SET_LABELS.get(job["set"], job["set"])
        if error:
            job["failed"].append(error)
        else:
            job["added"].append("Added %s to %s: %s" % (os.path.basename(path), label, stored))
        if job["todo"]:
            return self._add_next()
        self._adding = None
        self.add_file_button.setEnabled(self.model_set.currentData() != "files")
        self._download_failed = bool(job["failed"])
        self.download_text.setText("\n".join(job["failed"] + job["added"]))
        if job["failed"]:
            self.refresh_models()
        else:
            self._models_fixed()

    # — actions —

    def start(self):
        self.end_preview()
        self.used_face.hide()
        self.show_error("")
        self.status.setText("")
        model = None
        try:
            values = self.values()
            krita_host.write_settings(values)
            if values["lib_path"]:
                cs.set_library_path(values["lib_path"])
            model = krita_host.model_from_settings(values)
            request = krita_host.request_from_settings(values, self.saved_edit.text())
            doc, node = krita_host.active_target()
            self.progress.setValue(0)
            self._run_model = model
            self._run_doc = doc
            self.runner.start(doc, node, model, request, self.on_progress, self.on_done,
                              self.on_error, self.on_learning_picture)
            self._run_source = self.runner.source
        except Exception as e:
            self.show_error(logic.error_text(e), krita_host.missing_models(e, model))
            return
        self._set_running(True)

    def cancel(self):
        self.status.setText("Cancelling…")
        self.runner.cancel()

    def on_progress(self, fraction, text):
        self.progress.setValue(int(round(1000 * max(0.0, min(1.0, fraction)))))
        self.status.setText(text)

    # — faces —

    def find_faces(self):
        """Lists the layer's faces (off the GUI thread) in a menu under the button; choosing
        one sets Face."""
        if self.faces_worker is not None or self.runner.busy:
            return
        self.show_error("")
        try:
            values = self.values()
            model = krita_host.model_from_settings(values)
            doc, node = krita_host.active_target()
            source, _ = krita_host.read_source(doc, node)
        except Exception as e:
            self.show_error(logic.error_text(e), krita_host.missing_models(e, None))
            return
        worker = FacesWorker(model, source, self.runner.contexts)
        worker.ended.connect(self.on_faces_found)
        self.faces_worker = worker
        self.find_faces_button.setEnabled(False)
        self.status.setText("Finding faces…")
        worker.start()

    def on_faces_found(self, faces, error):
        worker, self.faces_worker = self.faces_worker, None
        if worker is not None:
            worker.wait()
        self.find_faces_button.setEnabled(True)
        self.status.setText("")
        if error:
            self.show_error(error)
            return
        self.faces_menu = menu = QMenu(self)
        for choice in faces:
            menu.addAction(self._face_action(menu, choice))
        self.scroll.ensureWidgetVisible(self.find_faces_button)
        self.status.setText("%d face%s found: choose one" % (len(faces),
                                                             "" if len(faces) == 1 else "s"))
        menu.popup(self.find_faces_button.mapToGlobal(
            self.find_faces_button.rect().bottomLeft()))

    def _face_action(self, menu, choice):
        """A row of the faces menu: the face at FACE_ICON px (Krita's style draws menu icons at
        16 px, too small to tell faces apart) and its label; choosing it sets Face."""
        from PyQt5.QtWidgets import QWidgetAction
        action = QWidgetAction(menu)
        action.setText(choice.label())
        action.setIcon(_face_icon(choice))
        row = QToolButton()
        row.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        row.setAutoRaise(True)
        row.setIcon(action.icon())
        row.setIconSize(QSize(FACE_ICON, FACE_ICON))
        row.setText(choice.label())
        row.clicked.connect(action.trigger)
        action.setDefaultWidget(row)
        action.triggered.connect(lambda _=False, n=choice.number: self.face.setValue(n))
        action.triggered.connect(menu.close)
        return action

    def show_used_face(self, result):
        choice = result.face_choice(self._run_source) if self._run_source is not None else None
        if choice is None:
            self.used_face.hide()
            return
        self.used_face.setPixmap(_face_icon(choice).pixmap(FACE_ICON, FACE_ICON))
        self.used_face.setToolTip("The face the last run edited: " + result.face_text())
        self.used_face.show()

    def on_learning_picture(self, picture):
        """Shows the picture while it learns, at most LEARNING_SIDE px."""
        from PyQt5.QtGui import QImage, QPixmap
        image = QImage(picture.data, picture.width, picture.height, picture.stride,
                       QImage.Format_RGBA8888).copy()   # own the bytes: `picture` goes away
        pixmap = QPixmap.fromImage(image)
        if max(pixmap.width(), pixmap.height()) > LEARNING_SIDE:
            pixmap = pixmap.scaled(LEARNING_SIDE, LEARNING_SIDE, Qt.KeepAspectRatio,
                                   Qt.SmoothTransformation)
        self.learning.setPixmap(pixmap)
        self.learning.show()

    def on_done(self, result):
        self.learning.hide()
        self._set_running(False)
        self.progress.setValue(1000)
        if self._download_failed:     # the models work now: an old download error misleads
            self.download_text.setText("")
            self._download_failed = False
        # The summary says which k is shown and what k is; the Strengths field's and the
        # slider's tooltips say more (logic.STRENGTH_HELP).
        self.status.setText(result.summary())
        self.show_used_face(result)
        if result.transfer is not None and self.runner.group is not None:
            self.begin_preview(self._run_doc, self.runner.group, result)

    def on_error(self, message, cancelled):
        self.learning.hide()
        self._set_running(False)
        self.progress.setValue(0)
        if cancelled:
            self.status.setText("Cancelled; nothing was added.")
        else:
            self.show_error(message, krita_host.missing_models(self.runner.error,
                                                               self._run_model))
            self.status.setText("")

    # — the strength slider —

    def begin_preview(self, doc, group, result):
        """Shows the slider over the result's strength range, at the shown layer's strength
        (nothing is previewed until it moves)."""
        span = result.strength_range()
        if not span:
            return
        lo, hi = span
        self.preview = krita_host.StrengthPreview(doc, group, result)
        shown = [l.strength for l in result.layers if l.visible]
        start = shown[0] if shown else 0.0
        self.slider.blockSignals(True)
        self.slider.setRange(int(round(lo * SLIDER_SCALE)), int(round(hi * SLIDER_SCALE)))
        self.slider.setValue(int(round(start * SLIDER_SCALE)))
        self.slider.blockSignals(False)
        self.slider_lo.setText(logic.format_strength(lo))
        self.slider_hi.setText(logic.format_strength(hi))
        self.keep_button.setEnabled(False)
        self._slider_text(start, previewing=False)
        self.slider_box.show()

    def _slider_text(self, k, previewing=True):
        self.slider_label.setText("Strength k=%s%s: 0 is the photo as it is, +1 the learnt "
                                  "edit" % (logic.format_strength(k),
                                            " (preview)" if previewing else ""))

    def slider_strength(self):
        return self.slider.value() / SLIDER_SCALE

    def on_slider(self, value):
        if self.preview is None:
            return
        k = value / SLIDER_SCALE
        try:
            self.preview.show(k)
        except Exception as e:
            self.show_error(logic.error_text(e))
            return
        self.keep_button.setEnabled(True)
        self._slider_text(k)

    def keep_strength(self):
        if self.preview is None:
            return
        name = self.preview.keep()
        if name:
            self.keep_button.setEnabled(False)
            self.status.setText("Kept \"%s\" as a layer of the group." % name)

    def end_preview(self):
        """Done (or a new run): the preview layer goes, the slider hides."""
        preview, self.preview = self.preview, None
        self.slider_box.hide()
        if preview is None:
            return
        try:
            preview.done()
        except Exception as e:     # e.g. the user deleted the group or closed the image
            self.status.setText("The preview could not be removed: %s" % logic.error_text(e))
        transfer = preview.result.transfer
        if transfer is not None:
            transfer.close()


def _face_icon(choice):
    """A FaceChoice's pixels (Krita's BGRA) as an icon of FACE_ICON px."""
    from PyQt5.QtGui import QIcon, QImage, QPixmap
    box = choice.box
    image = QImage(choice.crop, box.width, box.height, box.width * 4,
                   QImage.Format_ARGB32).copy()    # BGRA bytes = ARGB32 on little-endian
    pixmap = QPixmap.fromImage(image).scaled(FACE_ICON, FACE_ICON, Qt.KeepAspectRatio,
                                             Qt.SmoothTransformation)
    return QIcon(pixmap)


def _int(text):
    try:
        return int(text or 0)
    except (TypeError, ValueError):
        return 0
