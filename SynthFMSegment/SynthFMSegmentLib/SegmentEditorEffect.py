"""The SynthFM Segment Editor effect: prompts in slice views -> preview -> Apply / Propagate (undoable).

Follows Slicer's scripted effects (Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/:
AbstractScriptedSegmentEditorEffect.py, SegmentEditorDrawEffect.py for processInteractionEvents,
SegmentEditorThresholdEffect.py for preview + Apply) and Slicer's scripted-effect extension template: the file
is ``<Module>Lib/SegmentEditorEffect.py`` and the class ``SegmentEditorEffect``, because
qSlicerSegmentEditorScriptedEffect::setPythonSource derives the class name from the file name.
No model logic and no model work here: Slicer never enables PythonQt's thread support, so the model runs in a
worker process (``synthfm serve``, started on localhost or reached on a server: ``worker_client.WorkerLink``).
The GUI thread only sends prompts (voxel ijk) and applies answers, polled by a ``qt.QTimer``; background encoding
and propagation are jobs of the worker.  Masks are resampled into ``defaultModifierLabelmap()`` and written with
``modifySelectedSegmentByLabelmap(..., ModificationModeSet)`` after ``saveStateForUndo()``, so the editor's masking,
overwrite settings and undo apply, and only from answers that arrived: a failed request changes no segment.
"""
from __future__ import annotations

import contextlib
import os

import ctk
import numpy as np
import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

if __name__ == "SynthFMSegmentLib":
    # Slicer's setPythonSource ran this file as a plain module named after its folder (nothing had imported the
    # package yet): give that module the package's search path so the imports below find the sibling files.
    __path__ = [os.path.dirname(os.path.abspath(__file__))]

from SynthFMSegmentLib.geometry import (box_from_roi, box_outline, box_roi, distance_to_outline, matrix_to_numpy,
                                        numpy_to_matrix, on_slice, ras_to_ijk, slice_axis, volume_shape,
                                        voxel_spacing, voxels)
from SynthFMSegmentLib.logic import DISPLAY_WINDOW, SynthFMSegmentLogic, display_range, labelmap_from_mask
from SynthFMSegmentLib.settings import BETWEEN_FILLS, Settings, default_embedding_cache
from SynthFMSegmentLib.thumbnails import THUMBNAIL_PX, choice_icons

DRAG_PX = 5  # a press-release farther apart than this (display pixels) is a box, not a click
GRAB_PX = 6  # a press this close to a prompt point or the box outline is left to the markups widgets
POLL_MS = 20  # the worker's answers are looked for this often while requests are in flight (each look: < 1 ms)
CACHE_APPLY_MS = 1000  # a changed embedding cache setting restarts the local worker once the edits paused this long
MAX_CACHE_GB = 1000.0  # the size limit box's maximum (about 470,000 TinyViT slice embeddings in bf16)
NEXT_START = (" Used from the local worker's next start: at once while the effect is active (the worker restarts, "
              "your prompts are kept).")
PROMPT_NODES = {True: ("SynthFM positive prompts", (0.1, 0.9, 0.1)), False: ("SynthFM negative prompts", (0.95, 0.1, 0.1))}
BOX_NODE = ("SynthFM box prompt", (0.95, 0.75, 0.1))
LEFT_PRESS, LEFT_RELEASE = vtk.vtkCommand.LeftButtonPressEvent, vtk.vtkCommand.LeftButtonReleaseEvent


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """SynthFM: click/drag prompts, live preview on the prompted slice, Apply, Propagate."""

    def __init__(self, scriptedEffect) -> None:
        scriptedEffect.name = "SynthFM"  # not translated: modules find effects by name
        scriptedEffect.perSegment = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.settings = Settings()
        self.logic = self._new_logic()
        self.promptNodes = {True: None, False: None}  # positive / negative markups fiducial nodes (every slice's)
        self.boxNodes = {}  # slice index -> markups ROI showing that slice's box prompt (the user drags its handles)
        self.box = None  # two RAS corners: the current slice's box (from its ROI) that its preview used
        self.plane = None  # (volume ID, axis, slice index) of the slice prompted last (the current slice)
        self.sliceMasks = {}  # slice index -> (2D mask, predicted IoU): each prompted slice's preview
        self.preview = None  # (k, j, i) bool mask waiting for Apply: every prompted slice's, or a propagation's
        self.previewNode = None
        self._sent = {}  # slice index -> the prompts (voxel ijk) last sent for it: only changed slices are sent
        self._slice_generation = {}  # slice index -> generation of its last request (older answers are not shown)
        self._candidate = {}  # slice index -> the decoder's candidate the user chose there ("Other mask"; else the pick)
        self._sent_candidate = {}  # slice index -> the candidate its last request asked for (None: the model's pick)
        self._shown = {}  # slice index -> (candidate shown, how many the decoder gave) of its last answer
        self._pick = {}  # slice index -> the candidate the model picked there (its answer without a choice)
        self._choices = {}  # slice index -> (its prompts, the mask and score each of the three choices gives)
        self._drawn = None  # the _choices entry whose pictures are on the mask buttons (drawn once per entry)
        self._active, self._volume_id, self._press, self._quiet, self._box_drag = False, None, None, False, False
        self._busy = False  # a propagation is running: clicks, prompt edits and buttons wait for its end
        self._encode_axis = 0
        self._generation = 0  # counts prompt requests: an answer to older prompts is not shown
        self._progress = None  # the propagation's progress dialog
        self.workerTimer = qt.QTimer()
        self.workerTimer.setInterval(POLL_MS)
        self.workerTimer.timeout.connect(self._on_worker_tick)
        self.cacheTimer = qt.QTimer()  # one shot after the last edit of the cache settings (typing a path: many)
        self.cacheTimer.setSingleShot(True)
        self.cacheTimer.setInterval(CACHE_APPLY_MS)
        self.cacheTimer.timeout.connect(self._apply_cache_settings)

    def _new_logic(self) -> SynthFMSegmentLogic:
        return SynthFMSegmentLogic(self.settings.model, self.settings.device, self.settings.window)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def cleanup(self) -> None:
        """Disconnect the timers so the effect can be garbage collected (Slicer issue #7392)."""
        self.workerTimer.stop()
        self.workerTimer.timeout.disconnect(self._on_worker_tick)
        self.cacheTimer.stop()
        self.cacheTimer.timeout.disconnect(self._apply_cache_settings)

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SynthFMEffect.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self) -> str:
        return ("<html>Segment with SynthFM (promptable foundation model trained on synthetic images).<p>"
                "<b>Left click:</b> positive point (green); with <b>Negative points</b> pressed, a negative point "
                "(red). <b>Left drag:</b> box (drag its edges or corners to adjust it). Drag a point to move it, "
                "right-click it to delete it: the preview updates. <b>Other mask</b> shows the model's next proposal "
                "for one point or a box (it proposes three, e.g. a part or the whole; with a box and points, the "
                "box's three, corrected by the points; with several points, the first point's three, grown by the "
                "others); the <b>Masks</b> row shows all three as pictures of "
                "the slice: click one to show it. Slicer's view gestures keep "
                "working (right drag zooms, Shift + left drag pans). Prompts on another slice or view start a new "
                "prompt set, unless "
                "<b>Keep prompts on other slices</b> is ticked: then prompts on several slices of one view add up, "
                "each slice keeps its preview (choose one in <b>Prompted slice</b> to go to it), and Propagate fills "
                "the slices between them (model-driven); correct each prompted slice's preview with a click first, "
                "the slices between follow those masks. A box on the largest slice and one near each end is a good "
                "start; more prompted slices, where the shape changes, bring the result closer still.<br>"
                "<b>Apply</b> writes the preview into the selected segment (undoable, masking settings apply); "
                "<b>Propagate</b> follows the structure through the slices (Apply to keep); <b>Cancel</b> discards."
                "<br>A box is the safer prompt where a slice is a thin strip (a coronal or sagittal view of a volume "
                "with few slices): one point there can take a whole band of tissue.</html>")

    # ---- options panel -------------------------------------------------------------------------
    def setupOptionsFrame(self) -> None:
        """Called when any Segment Editor is set up: no synthfm import here (it may not be installed yet)."""
        self.modelBox = qt.QComboBox()
        self.modelBox.addItems([self.settings.model])
        self.modelBox.setToolTip("Decoder/model used for prediction (user models from SynthFM Train are listed too).")
        self.deviceBox = qt.QComboBox()
        self.deviceBox.addItems(["auto", "cpu", "cuda"])
        self.deviceBox.setCurrentText(self.settings.device)
        self.windowBox = qt.QComboBox()
        self.windowBox.addItems(list(dict.fromkeys([DISPLAY_WINDOW, "auto", self.settings.window])))
        self.windowBox.setCurrentText(self.settings.window)
        self.windowBox.setToolTip("Intensities the model sees: 'display' = the volume's window/level as shown "
                                  "(adjust it to what you want segmented); 'auto' = a robust range of the volume.")
        self.directionBox = qt.QComboBox()
        self.directionBox.addItems(["both", "up", "down"])
        self.directionBox.setToolTip("Propagate from the prompted slice to both ends, or towards higher/lower slices.")
        self.negativeButton = qt.QPushButton("Negative points")
        self.negativeButton.checkable = True
        self.negativeButton.setToolTip("While pressed, clicks add negative points (red): where the structure is not.")
        # Remembered between sessions; prompts already placed stay until a prompt on another slice (unticked: it
        # starts a new set, as Slicer's effects replace their input)
        self.keepSlicesBox = self._setting_box(
            "Keep prompts on other slices", "keep_slices",
            "Ticked: prompts on another slice of the same view are added to the set (mark the structure near both ends "
            "and in the middle); Propagate fills the slices between them and follows the structure beyond "
            "(synthfm-lite: past an end slice whose mask is smaller than the next prompted one, by at most 30% of the "
            "prompted span). Unticked: prompts on another slice start a new set.")
        self.slicesLabel = qt.QLabel("")
        self.slicesLabel.setToolTip("The slices that have prompts (index along the view's axis, as in the Data Probe's "
                                    "IJK) and each one's predicted quality.")
        self.sliceBox = qt.QComboBox()
        self.sliceBox.setToolTip("The prompted slices. Choose one to show it: the views of the prompted orientation "
                                 "move to it (pan and zoom stay) and it becomes the current slice; 'Remove slice' "
                                 "deletes its prompts and its preview.")
        self.otherMaskButton = qt.QPushButton("Other mask")
        self.otherMaskButton.setToolTip("For one point or a box the model proposes three masks (e.g. a part or the "
                                        "whole; with a box and points, from the box's three; with several points, "
                                        "from the first point's three) and shows the "
                                        "one it rates best; this shows the next one for the current slice, and "
                                        "Propagate starts from the one shown. New prompts on the slice go back to "
                                        "the model's choice.")
        self.choiceFrame = qt.QFrame()  # the three masks side by side: click one to show it
        row = qt.QHBoxLayout(self.choiceFrame)
        self.choiceButtons = []
        for k in range(3):
            button = qt.QToolButton()
            button.checkable = True
            button.setToolButtonStyle(qt.Qt.ToolButtonTextUnderIcon)
            button.setIconSize(qt.QSize(THUMBNAIL_PX, THUMBNAIL_PX))
            button.connect("clicked()", lambda k=k: self.onChooseMask(k))  # as SampleData binds its buttons
            row.addWidget(button)
            self.choiceButtons.append(button)
        row.addStretch(1)
        self.choiceFrame.visible = False
        self.removeSliceButton = qt.QPushButton("Remove slice")
        self.removeSliceButton.setToolTip("Delete the prompts and the preview of the prompted slice chosen above.")
        self.qualityLabel = qt.QLabel("Click in a slice view to add prompts.")
        self.qualityLabel.wordWrap = True  # the notes under a preview run to two or three lines
        self.workerLabel = qt.QLabel("")
        self.workerLabel.setToolTip("The SynthFM worker process that runs the model (local, or the server set in "
                                    "SynthFM/server). Problems with it are shown here.")
        self.propagateButton = qt.QPushButton("Propagate")
        self.clearButton = qt.QPushButton("Clear prompts")
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.setToolTip("Write the preview into the selected segment (undoable).")
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.setToolTip("Discard the prompts and the preview.")
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelBox)
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceBox)
        self.scriptedEffect.addLabeledOptionsWidget("Intensity window:", self.windowBox)
        self.scriptedEffect.addLabeledOptionsWidget("Propagate:", self.directionBox)
        for widget in (self.negativeButton, self.keepSlicesBox, self.slicesLabel):
            self.scriptedEffect.addOptionsWidget(widget)
        self.scriptedEffect.addLabeledOptionsWidget("Prompted slice:", self.sliceBox)
        for widget in (self.removeSliceButton, self.qualityLabel, self.otherMaskButton):
            self.scriptedEffect.addOptionsWidget(widget)
        self.scriptedEffect.addLabeledOptionsWidget("Masks:", self.choiceFrame)
        for widget in (self.workerLabel, self.propagateButton, self.clearButton, self.applyButton, self.cancelButton):
            self.scriptedEffect.addOptionsWidget(widget)
        self.removeSliceButton.clicked.connect(self.onRemoveSlice)
        self.otherMaskButton.clicked.connect(self.onOtherMask)
        # activated(int): the user chose an item (even the current one); never emitted when _list_slices refills the
        # list, as SegmentEditorThresholdEffect connects its method combo boxes
        self.sliceBox.connect("activated(int)", self.onSlicePicked)
        self._list_slices()
        self.modelBox.currentTextChanged.connect(self.onModelChanged)
        self.deviceBox.currentTextChanged.connect(self.onModelChanged)
        self.windowBox.currentTextChanged.connect(self.onModelChanged)
        self.applyButton.clicked.connect(self.onApply)
        self.cancelButton.clicked.connect(self.onCancel)
        self.clearButton.clicked.connect(self.onCancel)
        self.propagateButton.clicked.connect(self.onPropagate)
        self._setup_advanced()

    def _setup_advanced(self) -> None:
        """The collapsed 'Advanced' section: every slice encoded when propagating (setting
        SynthFM/encode_every_slice), the decoder adapted to the volume first (SynthFM/adapt_decoder), how the
        slices between prompted slices are filled (SynthFM/between_fill), and the local
        worker's disk cache of slice embeddings (settings SynthFM/embedding_cache and SynthFM/embedding_cache_gb),
        what it holds and a button to clear it."""
        self.advancedButton = ctk.ctkCollapsibleButton()
        self.advancedButton.text = "Advanced"
        self.advancedButton.collapsed = True
        self.advancedButton.setToolTip("Settings of the worker this effect starts on this computer (a SynthFM server "
                                       "keeps its own), remembered between sessions.")
        form = qt.QFormLayout(self.advancedButton)
        # used by the next Propagate (the worker is not restarted)
        self.everySliceBox = self._setting_box(
            "Encode every slice when propagating", "encode_every_slice",
            "Ticked: Propagate encodes every slice it segments (on a CPU about twice as long). Unticked: the model's "
            "setting; synthfm-lite encodes every other slice and segments the ones between on a mix of their "
            "neighbours' encodings, which fits less well where slices are thick (5 mm and more) and the structure "
            "spans only a few of them.")
        self.adaptBox = self._setting_box(
            "Adapt the model to this volume before propagating", "adapt_decoder",
            "Ticked: the model's setting; synthfm-lite first fine-tunes a copy of its decoder for a few steps on the "
            "slices you prompted (your accepted masks, nothing else) and segments the other slices with it, which "
            "follows the structure better (3D Dice 0.587 -> 0.609 on the README's real volumes with a box). It takes "
            "about 1.5 s per Propagate on a CPU with native bf16 and about 3 s on other CPUs (up to 4 s and 10 s for "
            "a structure that fills most of the slice). Unticked: the decoder as shipped, on every slice.")
        self.betweenBox = qt.QComboBox()
        self.betweenBox.addItems(list(BETWEEN_FILLS))
        self.betweenBox.setCurrentText(self.settings.between_fill)
        self.betweenBox.setToolTip(
            "How Propagate fills the slices between two prompted slices. 'model': the model segments each of them, "
            "from both sides, with a box moving from one prompted mask to the other (the default). 'registration': "
            "each prompted mask is carried from slice to slice by a deformable registration of the two slices' "
            "images and the two are mixed by distance; the model neither encodes nor segments those slices, so it "
            "is faster where most slices lie between prompted slices. 'half-way': both, each slice's outline half-way "
            "between theirs (a little slower than 'model'). With three prompted boxes on the README's real volumes "
            "(fp32) the 3D Dice went from 0.712 to 0.744 (registration) and 0.731 (half-way); on the second real set "
            "from 0.660 to 0.677 and 0.676; on synthetic volumes both are level, so neither is the default. Beyond "
            "the outermost prompted slices the model always propagates.")
        self.betweenBox.currentTextChanged.connect(lambda text: setattr(self.settings, "between_fill", text))
        self.cacheBox = qt.QCheckBox("Keep slice embeddings on disk")
        self.cacheBox.setToolTip("Ticked: the worker keeps each encoded slice's embedding in the folder below, so a "
                                 "volume opened again (also after restarting Slicer) is read, not encoded again. "
                                 "Unticked: embeddings are kept in memory only." + NEXT_START)
        self.cachePathEdit = ctk.ctkPathLineEdit()
        self.cachePathEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.cachePathEdit.setToolTip("Folder of the slice embeddings (empty: the default, SynthFM/embeddings in "
                                      "Slicer's per-user cache folder); one subfolder per encoder, deleting it is "
                                      "always safe. A folder the worker cannot write in is named below and in the "
                                      "worker's message." + NEXT_START)
        self.cacheLimitBox = qt.QDoubleSpinBox()
        self.cacheLimitBox.setDecimals(1)
        self.cacheLimitBox.setRange(0.1, MAX_CACHE_GB)
        self.cacheLimitBox.setSingleStep(0.5)
        self.cacheLimitBox.keyboardTracking = False  # a typed number counts when Enter is pressed or focus leaves
        self.cacheLimitBox.setToolTip("Most disk space the slice embeddings may take (about 2.1 MB a slice in bf16, "
                                      "4.2 MB in fp32); past it the least recently used are deleted." + NEXT_START)
        self.cacheUsageLabel = qt.QLabel("")
        self.cacheUsageLabel.wordWrap = True
        self.cacheUsageLabel.setToolTip("What the folder holds now (the embeddings of every encoder), counted when "
                                        "this section is opened, after a change and after 'Clear cache'.")
        self.clearCacheButton = qt.QPushButton("Clear cache")
        self.clearCacheButton.setToolTip("Delete the slice embeddings in the folder, after asking: only SynthFM's "
                                         "embedding files, nothing else. Volumes are encoded again when next used.")
        form.addRow(self.everySliceBox)
        form.addRow(self.adaptBox)
        form.addRow("Slices between prompted slices:", self.betweenBox)
        form.addRow(self.cacheBox)
        form.addRow("Embedding cache:", self.cachePathEdit)
        form.addRow("Cache size limit (GB):", self.cacheLimitBox)
        form.addRow(self.cacheUsageLabel)
        form.addRow(self.clearCacheButton)
        self.scriptedEffect.addOptionsWidget(self.advancedButton)
        self._show_cache_settings()
        self.advancedButton.connect("contentsCollapsed(bool)", self.onAdvancedCollapsed)
        self.cacheBox.clicked.connect(self.onCacheToggled)
        self.cachePathEdit.connect("currentPathChanged(QString)", self.onCachePathChanged)
        self.cacheLimitBox.connect("valueChanged(double)", self.onCacheLimitChanged)
        self.clearCacheButton.clicked.connect(self.onClearCache)

    def _fill_models(self) -> None:
        """Model and window lists from the core (it imports torch: only once the dependencies are installed)."""
        if self.settings.server:  # the server has its model; this Slicer may not even have torch
            return
        from synthfm.models import available_models
        from synthfm.segment.preprocess import WINDOWS

        if not hasattr(self, "modelBox"):
            return
        for box, names, current in ((self.modelBox, list(available_models()), self.settings.model),
                                    (self.windowBox, [DISPLAY_WINDOW, *WINDOWS], self.settings.window)):
            box.blockSignals(True)
            box.clear()
            box.addItems(names)
            box.setCurrentText(current)
            box.blockSignals(False)

    def onModelChanged(self, _text=None) -> None:
        """Another model or device: a local worker is started with it (one model in memory); prompts are kept."""
        self.settings.model, self.settings.device = self.modelBox.currentText, self.deviceBox.currentText
        self.settings.window = self.windowBox.currentText
        self.logic = self._new_logic()
        self._restart_worker()

    def _restart_worker(self) -> None:
        """The worker for the current settings (a local one with another model, device or cache is started
        instead of the running one); the volume is encoded again in the background, the prompts sent again."""
        if self._active:
            self._link()
            self._start_encoding(self._encode_axis)
            self.updatePreview(every_slice=True)

    def _show_cache_settings(self) -> None:
        """The Advanced section shows the settings (no signal: nothing is written back); usage once opened."""
        folder = self.settings.embedding_cache.strip()
        self.cacheBox.checked = bool(folder)
        self._show_cache_folder(folder or default_embedding_cache())
        self.cachePathEdit.setEnabled(bool(folder))
        try:
            limit = float(self.settings.embedding_cache_gb)
        except ValueError:  # set by hand to something else: the worker says what is wrong; shown as the default
            limit = float(Settings.defaults["embedding_cache_gb"])
        self.cacheLimitBox.blockSignals(True)
        self.cacheLimitBox.value = limit
        self.cacheLimitBox.blockSignals(False)

    def _show_cache_folder(self, folder: str) -> None:
        self.cachePathEdit.blockSignals(True)  # setting currentPath emits currentPathChanged, as typing does
        self.cachePathEdit.currentPath = folder
        self.cachePathEdit.blockSignals(False)

    def onAdvancedCollapsed(self, collapsed: bool) -> None:
        if not collapsed:
            self._show_cache_usage()

    def _setting_box(self, text: str, setting: str, tip: str) -> "qt.QCheckBox":
        """A check box showing the "true"/"false" setting ``setting`` and writing it back when the user clicks it."""
        box = qt.QCheckBox(text)
        box.checked = getattr(self.settings, setting) == "true"
        box.setToolTip(tip)
        box.clicked.connect(lambda _checked=None: setattr(self.settings, setting,
                                                          "true" if box.checked else "false"))
        return box

    def _propagation_options(self) -> dict:
        """PropagationOptions overrides sent with Propagate: every slice encoded when that box is ticked, no
        adaptation when that box is unticked, the fill between prompted slices chosen in its list unless 'model';
        otherwise the model's settings (nothing sent)."""
        options = {}
        if hasattr(self, "everySliceBox") and bool(self.everySliceBox.checked):
            options["encode_every"] = 1
        if hasattr(self, "adaptBox") and not bool(self.adaptBox.checked):
            options["adapt_steps"] = 0
        between = BETWEEN_FILLS.get(self.betweenBox.currentText) if hasattr(self, "betweenBox") else None
        if between:
            options["between"] = between
        return options

    def onCacheToggled(self, _checked=None) -> None:
        """On: the folder in the box (the default unless the user chose another); off: none (setting "")."""
        on = bool(self.cacheBox.checked)
        self.cachePathEdit.setEnabled(on)
        folder = self.cachePathEdit.currentPath.strip() or default_embedding_cache()
        self._show_cache_folder(folder)
        self.settings.embedding_cache = folder if on else ""
        self.cacheTimer.start()

    def onCachePathChanged(self, path: str) -> None:
        """Each edit of the folder (typing: each key) is written; the worker restarts once the edits paused."""
        if self.cacheBox.checked:
            self.settings.embedding_cache = path.strip() or default_embedding_cache()
            self.cacheTimer.start()

    def onCacheLimitChanged(self, value: float) -> None:
        self.settings.embedding_cache_gb = f"{value:g}"
        self.cacheTimer.start()

    def _apply_cache_settings(self) -> None:
        """The cache settings changed (the edits paused): the panel counts the folder again, and a running local
        worker started with other options is started again with the new ones, as for another model."""
        self._show_cache_usage()
        if not self._active or self._busy or self.settings.server:
            return
        from SynthFMSegmentLib.worker_client import current_link

        link = current_link()
        if link is not None and link.extra_args != self.settings.worker_arguments():
            self._restart_worker()

    def _show_cache_usage(self) -> None:
        """How much the cache folder holds (a listing: no file is read), or why the worker cannot use it; only when
        the section is opened, after a change and after a clear, never polled."""
        from synthfm.io.checks import InputError, check_writable_folder
        from synthfm.io.embedding_files import cache_usage

        folder, files = self.settings.embedding_cache.strip(), 0
        if not folder:
            text = "Off: the worker keeps slice embeddings in memory only."
        else:
            try:
                check_writable_folder(folder, "")
                files, size = cache_usage(folder)
                text = (f"Holds {size / 1e6:.1f} MB: {files} slice embedding file{'s' * (files != 1)}." if files
                        else "Empty: no slice embedding stored yet.")
            except InputError as exc:
                text = f"Cannot be used: {exc}."
        self.cacheUsageLabel.text = text
        self.clearCacheButton.setEnabled(files > 0)

    def onClearCache(self) -> None:
        """Delete the cache folder's embedding files (every encoder's, nothing else) once the user confirms; a
        running worker encodes what it misses again."""
        from synthfm.io.embedding_files import cache_usage, clear_cache

        folder = self.settings.embedding_cache.strip()
        files, size = cache_usage(folder) if folder else (0, 0)
        if files and slicer.util.confirmOkCancelDisplay(
                f"Delete the {files} slice embedding file{'s' * (files != 1)} ({size / 1e6:.1f} MB) in {folder}? "
                "Only SynthFM's embedding files are deleted; volumes are encoded again when next used.",
                windowTitle="SynthFM: clear the embedding cache"):
            _, _, problems = clear_cache(folder)
            if problems:
                slicer.util.errorDisplay(f"SynthFM: {len(problems)} embedding file(s) could not be deleted: "
                                         + "; ".join(problems[:3]))
        self._show_cache_usage()

    def _keep_slices(self) -> bool:
        return hasattr(self, "keepSlicesBox") and bool(self.keepSlicesBox.checked)

    def activate(self) -> None:
        self._active = True
        if not self.settings.server:  # local worker: Slicer's Python runs it, so it needs torch & co.
            from SynthFMSegmentLib.dependencies import ensure_dependencies

            if not ensure_dependencies():
                return
        self._fill_models()
        volume = self._source_volume()
        self._volume_id = volume.GetID() if volume is not None else None
        self._link()
        self._start_encoding(0)

    def _link(self):
        """The worker for the current settings (one per Slicer, shared by the effect's clones); this effect
        receives its answers."""
        from SynthFMSegmentLib.worker_client import shared_link

        server = self.settings.server  # a server keeps its own options: a change of the local ones does not reconnect
        link = shared_link(server, self.settings.token, self.settings.model, self.settings.device,
                           env=_startup_environment(), extra_args=() if server else self.settings.worker_arguments())
        link.on_status, link.on_preview, link.on_failed = self._on_worker_status, self._on_preview, self._on_failed
        link.on_progress, link.on_propagated, link.on_ready = self._on_progress, self._on_propagated, None
        link.start()
        self.workerTimer.start()
        return link

    def deactivate(self) -> None:
        """Leave nothing behind: prompt and preview nodes leave the scene; the worker keeps its model for next time."""
        self._active = False
        self.workerTimer.stop()
        self._stop_propagation()
        self.clearPrompts()
        for positive, node in self.promptNodes.items():
            self.promptNodes[positive] = _remove(node)

    def sourceVolumeNodeChanged(self) -> None:
        """Called on every registered effect (active or not) when the editor's source volume changes."""
        volume = self._source_volume()
        volume_id = volume.GetID() if volume is not None else None
        if volume_id == self._volume_id:
            return  # the deprecated masterVolumeNodeChanged follows sourceVolumeNodeChanged in Slicer >= 5.4
        self._volume_id = volume_id
        self._stop_propagation()
        self.clearPrompts()
        if self._active:
            self._start_encoding(0)

    masterVolumeNodeChanged = sourceVolumeNodeChanged  # Slicer < 5.4 only calls this one

    # ---- prompts -------------------------------------------------------------------------------
    def _source_volume(self):
        node = self.scriptedEffect.parameterSetNode()
        if node is None:
            return None
        if hasattr(node, "GetSourceVolumeNode"):  # Slicer >= 5.4
            return node.GetSourceVolumeNode()
        return node.GetMasterVolumeNode()

    def _problem(self) -> str:
        """Why the effect cannot segment now ('' when it can): shown to the user instead of a traceback."""
        node = self.scriptedEffect.parameterSetNode()
        if node is None or node.GetSegmentationNode() is None:
            return "Select a segmentation in the Segment Editor first."
        volume = self._source_volume()
        if volume is None:
            return "Select a source volume in the Segment Editor first."
        if not node.GetSelectedSegmentID():
            return "Select a segment (or click 'Add') in the Segment Editor first: SynthFM writes into it."
        if volume.GetParentTransformNode() is not None or node.GetSegmentationNode().GetParentTransformNode() is not None:
            return ("SynthFM works on untransformed nodes: harden the transform of the source volume and the "
                    "segmentation (Data module, right-click > Harden transform).")
        return ""

    def _prompt_node(self, positive: bool):
        node = self.promptNodes[positive]
        if not _in_scene(node):
            node = _temporary_markups("vtkMRMLMarkupsFiducialNode", *PROMPT_NODES[positive])
            self.promptNodes[positive] = node
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, slicer.vtkMRMLMarkupsNode.PointRemovedEvent):
                node.AddObserver(event, self._on_prompt_edited)
        return node

    def _box_node(self, index: int):
        """The ROI showing slice ``index``'s box (one per prompted slice: an ROI one voxel thick is drawn only in
        views through its slice). ModifiedEvent fires once per change (handle drags batch theirs with a
        MRMLNodeModifyBlocker); a drag is bracketed by Point{Start,End}InteractionEvent: predict at its end."""
        node = self.boxNodes.get(index)
        if not _in_scene(node):
            node = self.boxNodes[index] = _temporary_markups("vtkMRMLMarkupsROINode", *BOX_NODE)
            node.SetROIType(slicer.vtkMRMLMarkupsROINode.ROITypeBox)
            node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._on_box_edited)
            node.AddObserver(slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent, self._on_box_drag_start)
            node.AddObserver(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self._on_box_drag_end)
        return node

    @property
    def boxNode(self):
        """The current slice's box ROI (None without one)."""
        node = self.boxNodes.get(self.plane[2]) if self.plane is not None else None
        return node if _in_scene(node) else None

    def _on_box_drag_start(self, caller=None, event=None) -> None:
        self._box_drag = True

    def _on_box_drag_end(self, caller=None, event=None) -> None:
        self._box_drag = False
        self._on_box_edited()

    def _on_box_edited(self, caller=None, event=None) -> None:
        """The user changed an ROI (handles, Markups module): one prediction per change of the box it gives."""
        if not (self._quiet or self._box_drag):
            self.updatePreview()

    def _roi_box(self, index: int):
        """Two opposite RAS corners on slice ``index``, from its ROI: what the model sees."""
        node = self.boxNodes.get(index)
        if not _in_scene(node) or self.plane is None:
            return None
        return box_from_roi(self._source_volume(), node.GetObjectToWorldMatrix(), node.GetSize(), self.plane[1], index)

    @contextlib.contextmanager
    def _muted(self):
        """The effect's own markups edits fire markups events: no prediction from those (the caller predicts once)."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _on_prompt_edited(self, caller=None, event=None) -> None:
        """The user moved or deleted a prompt point with the markups tools."""
        if not self._quiet:
            self.updatePreview()

    def _points(self):
        """Every positive and negative RAS point (from the markups nodes), of every prompted slice."""
        points = {}
        for positive, node in self.promptNodes.items():
            count = node.GetNumberOfControlPoints() if _in_scene(node) else 0
            points[positive] = [list(node.GetNthControlPointPositionWorld(n)) for n in range(count)]
        return points[True], points[False]

    def _slice_of(self, ras) -> int:
        """The slice (along the prompted axis) a RAS point lies on; points outside the volume keep their index (the
        worker refuses them with a message)."""
        return int(np.round(ras_to_ijk(self._source_volume(), ras)[2 - self.plane[1]]))

    def promptedSlices(self):
        """``{slice index: (positive, negative, box)}`` (RAS; box None or two corners) of every prompted slice along
        the current axis, sorted by index; points belong to the slice they lie on."""
        if self.plane is None or self._source_volume() is None:
            return {}
        pos, neg = self._points()
        slices = {}
        for positive, points in ((True, pos), (False, neg)):
            for ras in points:
                slices.setdefault(self._slice_of(ras), ([], [], None))[0 if positive else 1].append(ras)
        for index in list(self.boxNodes):
            box = self._roi_box(index)
            if box is None:
                del self.boxNodes[index]
            else:
                entry = slices.get(index, ([], [], None))
                slices[index] = (entry[0], entry[1], box)
        return dict(sorted(slices.items()))

    def prompts(self):
        """Positive and negative RAS points and the box of the current slice (the one prompted last)."""
        if self.plane is None:
            pos, neg = self._points()
            return pos, neg, None
        return self.promptedSlices().get(self.plane[2], ([], [], None))

    def addPoint(self, ras, positive: bool) -> None:
        node = self._prompt_node(positive)
        with self._muted():  # AddControlPointWorld fires PointModifiedEvent: predict once, below
            node.AddControlPointWorld(vtk.vtkVector3d(*ras))
        self.updatePreview()

    def setBox(self, corner0, corner1) -> None:
        """Show the box (two RAS corners on the current slice) as an ROI along the volume's axes, then predict; a new
        box on a slice replaces that slice's box."""
        object_to_node, size = box_roi(self._source_volume(), corner0, corner1, *self.plane[1:])
        node = self._box_node(self.plane[2])
        with self._muted():
            node.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(object_to_node))
            node.SetSize(*size)
        self.updatePreview()

    def clearPrompts(self) -> None:
        """Every slice's prompts and previews go (the prompt nodes stay in the scene, empty, until deactivate)."""
        with self._muted():
            for node in self.promptNodes.values():
                if _in_scene(node):
                    node.RemoveAllControlPoints()
            for index in list(self.boxNodes):
                _remove(self.boxNodes.pop(index))
        self._forget_slices(list(self._sent))
        self.box, self.preview, self.plane = None, None, None
        self.sliceMasks, self._sent, self._slice_generation = {}, {}, {}
        self._candidate, self._sent_candidate, self._shown, self._pick, self._choices = {}, {}, {}, {}, {}
        self._show_preview(None)
        self._show_choices()
        self._list_slices()
        if hasattr(self, "qualityLabel"):
            self.qualityLabel.text = "Click in a slice view to add prompts."

    def removeSlice(self, index: int) -> None:
        """Delete the prompts and the preview of one prompted slice; the other slices keep theirs."""
        if self.plane is None:
            return
        with self._muted():
            for node in self.promptNodes.values():
                if _in_scene(node):
                    for n in reversed(range(node.GetNumberOfControlPoints())):
                        if self._slice_of(list(node.GetNthControlPointPositionWorld(n))) == index:
                            node.RemoveNthControlPoint(n)
            if index in self.boxNodes:
                _remove(self.boxNodes.pop(index))
        left = list(self.promptedSlices())
        if not left:
            return self.clearPrompts()
        if self.plane[2] == index:  # the current slice becomes the nearest prompted one
            self.plane = (*self.plane[:2], min(left, key=lambda i: abs(i - index)))
        self.updatePreview()

    def onSlicePicked(self, row: int) -> None:
        """The user chose a prompted slice in the list: it becomes the current slice (its prompts are the ones a new
        box replaces, Remove slice and the panel refer to) and the views showing the prompted orientation move to
        it, so its prompts and preview are in sight.  Nothing is sent to the worker: its preview is there already."""
        indices = list(getattr(self, "_slice_items", {}).values())
        if self._busy or self.plane is None or not 0 <= row < len(indices):
            return  # a propagation runs: its result belongs to the current prompt set (the panel waits for it)
        slices = self.promptedSlices()
        index = indices[row]
        if index not in slices:
            return
        self.plane, self.box = (*self.plane[:2], index), slices[index][2]
        self._show_slice_in_views(self._slice_centre(index, *slices[index]))
        self._show_choices()

    def _slice_centre(self, index: int, pos, neg, box):
        """Where a prompted slice's prompts are (RAS, on the slice): the box centre, else the mean of its positive
        points, else of its negative ones."""
        points = box if box is not None else (pos or neg)
        return on_slice(self._source_volume(), np.mean(points, axis=0), self.plane[1], index)

    def _show_slice_in_views(self, ras) -> None:
        """Move the slice views whose normal is the prompted axis to the slice through ``ras``
        (vtkMRMLSliceNode::JumpSliceByOffsetting: along the normal only, keeping pan and zoom, as Markups does for
        the view a control point is picked in).  Views of other orientations and oblique views stay where the user
        left them: they do not show the prompted slice."""
        for slice_node in self._views_along(self.plane[1]):
            slice_node.JumpSliceByOffsetting(*(float(v) for v in ras))

    def _views_along(self, axis: int):
        """The slice nodes of the views that show slices along array ``axis`` of the source volume (none in a
        Slicer without a main window; oblique views never)."""
        layout = slicer.app.layoutManager()
        volume = self._source_volume()
        for name in layout.sliceViewNames() if layout is not None and volume is not None else ():
            widget = layout.sliceWidget(name)
            slice_node = widget.sliceLogic().GetSliceNode() if widget is not None else None
            try:
                if slice_node is not None and slice_axis(slice_node, volume) == axis:
                    yield slice_node
            except ValueError:  # an oblique view
                continue

    def onOtherMask(self) -> None:
        """Show the decoder's next candidate for the current slice's prompts (one point, or a box: three
        candidates), cycling back to the first after the third."""
        index = self.plane[2] if self.plane is not None else None
        shown, count = self._shown.get(index, (None, 0))
        if self._busy or index is None or index not in self.sliceMasks:
            self.qualityLabel.text = "Add prompts on a slice first: Other mask then shows the model's other masks."
            return
        if shown is None or count < 3:
            self.qualityLabel.text = ("These prompts give one mask only (a model that decodes several points at once, "
                                      "or a worker without candidates): add or move prompts instead.")
            return
        self._choose(index, (shown + 1) % count)

    def onChooseMask(self, k: int) -> None:
        """One of the mask buttons: show the current slice's mask ``k`` (as Other mask would reach it)."""
        index = self.plane[2] if self.plane is not None else None
        if self._busy or index is None or self._shown.get(index, (None, 0))[1] < 3:
            self._show_choices()  # the buttons' checked state back to what is shown
            return
        self._choose(index, k)

    def _choose(self, index: int, k: int) -> None:
        """Show candidate ``k`` on slice ``index``; the model's pick is asked without a choice (its own answer,
        exactly as first shown). With the mask pictures in hand it is shown at once: the worker's answer, which
        still comes (the prompt set's state stays the worker's), is that same mask."""
        if k == self._pick.get(index):
            self._candidate.pop(index, None)
        else:
            self._candidate[index] = k
        known = self._choices.get(index)
        if known is not None and len(known[1]) == 3 and _same_request(known[0], self._sent.get(index)):
            self.sliceMasks[index], self._shown[index] = (known[1][k], float(known[2][k])), (k, 3)
            self._show_slices(index)
        self.updatePreview()
        self._show_choices()

    def onRemoveSlice(self) -> None:
        index = self._slice_items.get(self.sliceBox.currentText) if hasattr(self, "sliceBox") else None
        if index is not None and not self._busy:
            self.removeSlice(index)

    def _near_prompt(self, xy, viewWidget) -> bool:
        """True when the press is on a prompt point or on a box's outline (its edge and corner handles) shown
        in this view: the markups widgets then drag it.  A click inside a box (its centre too) adds a point."""
        slice_node = viewWidget.sliceLogic().GetSliceNode()
        to_xy = np.linalg.inv(matrix_to_numpy(slice_node.GetXYToRAS()))
        pos, neg = self._points()
        for index in list(self.boxNodes):
            box = self._roi_box(index)
            if box is None:
                continue
            outline = np.array([to_xy @ np.r_[ras, 1.0] for ras in box_outline(self._source_volume(), box,
                                                                                self.plane[1])])
            if np.all(np.abs(outline[:, 2]) < 0.5) and distance_to_outline(xy, outline[:, :2]) <= GRAB_PX:
                return True
        shown = [to_xy @ np.r_[ras, 1.0] for ras in pos + neg]
        return any(abs(z) < 0.5 and np.hypot(x - xy[0], y - xy[1]) <= GRAB_PX for x, y, z, _ in shown)

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget) -> bool:
        """Unmodified left clicks and drags in slice views become prompts; returns True to abort (consume) the event.

        Everything else stays Slicer's (vtkMRMLSliceIntersectionWidget): Shift/Ctrl/Alt + left drag pan, blend,
        rotate and translate; right drag zooms and right click opens the view menu (or a markups point's menu).
        Slicer's Draw effect likewise consumes only unmodified presses.  Negative points: the point-type toggle.
        """
        if viewWidget.className() != "qMRMLSliceWidget" or self._busy:
            return False
        xy = tuple(callerInteractor.GetEventPosition())
        if eventId == LEFT_PRESS:
            modified = callerInteractor.GetShiftKey() or callerInteractor.GetControlKey() or callerInteractor.GetAltKey()
            if modified or self._near_prompt(xy, viewWidget):
                return False
            self._press = xy
            return True
        if eventId == LEFT_RELEASE and self._press is not None:
            start, self._press = self._press, None
            drag = np.hypot(xy[0] - start[0], xy[1] - start[1]) > DRAG_PX
            positive = not (hasattr(self, "negativeButton") and self.negativeButton.checked)
            self.promptFromView(viewWidget, start if drag else None, xy, positive)
            return True
        return False

    def promptFromView(self, viewWidget, start_xy, xy, positive: bool = True) -> None:
        """A click (``start_xy`` None) or a box drag in a slice view -> prompts, with a message on any problem."""
        problem = self._problem()
        volume = self._source_volume()
        ras = self.xyToRas(xy, viewWidget)
        try:
            if problem:
                raise ValueError(problem)
            axis = slice_axis(viewWidget.sliceLogic().GetSliceNode(), volume)
            plane = (volume.GetID(), axis, self.logic.slice_index(volume, ras, axis))
        except ValueError as exc:
            slicer.util.errorDisplay(f"SynthFM: {exc}")
            return
        if plane != self.plane:
            kept = self.promptedSlices() if self._keep_slices() and self.plane and self.plane[0] == plane[0] else {}
            if kept and plane[1] != self.plane[1]:
                view = ("axial", "coronal", "sagittal")
                slicer.util.errorDisplay(
                    f"SynthFM: prompts on several slices must all be in one view: yours are on {view[self.plane[1]]} "
                    f"slices {', '.join(map(str, kept))}. Prompt in the {view[self.plane[1]]} view, or press 'Clear "
                    f"prompts' (or untick 'Keep prompts on other slices') to start over in the {view[axis]} view.")
                return
            if not kept:  # another view, slice or volume: a new prompt set
                self.clearPrompts()
            self.plane = plane
            if axis != self._encode_axis:
                self._start_encoding(axis, around=plane[2])
        if start_xy is None:
            self.addPoint(ras, positive)
        else:
            self.setBox(self.xyToRas(start_xy, viewWidget), ras)

    # ---- preview / apply / propagate --------------------------------------------------------------
    def _request(self, volume, pos, neg, box):
        """One slice's prompts as the worker takes them (voxel ijk)."""
        to_ijk = lambda points: [ras_to_ijk(volume, p).tolist() for p in points]  # noqa: E731
        return to_ijk(pos), to_ijk(neg), (to_ijk(box) if box is not None else None)

    def updatePreview(self, every_slice: bool = False) -> None:
        """Send the prompts of each slice whose prompts changed (``every_slice``: of all, e.g. for a new model) to
        the worker; a slice's preview is shown when its answer arrives (``_on_preview``)."""
        if self._busy:  # a markups edit while a propagation runs: ignored (the propagation result is shown)
            return
        slices = self.promptedSlices()
        self.box = slices.get(self.plane[2], ([], [], None))[2] if self.plane is not None else None
        volume = self._source_volume()
        requests = {i: self._request(volume, *prompts) for i, prompts in slices.items()}
        gone = [i for i in set(self._sent) | set(self.sliceMasks) if i not in requests]
        self._forget_slices(gone)
        for index in gone:
            for per_slice in (self._sent, self.sliceMasks, self._slice_generation, self._candidate, self._shown,
                              self._sent_candidate, self._pick, self._choices):
                per_slice.pop(index, None)
        new_prompts = [i for i, r in requests.items() if not _same_request(r, self._sent.get(i))]
        for index in new_prompts:  # new prompts on a slice: the model's own choice again
            self._candidate.pop(index, None)
        changed = [i for i in requests if every_slice or i in new_prompts
                   or self._candidate.get(i) != self._sent_candidate.get(i)]
        if changed:
            link = self._link()
            self._send_volume(link, volume)
            for index in changed:
                self._generation += 1
                self._sent[index], self._slice_generation[index] = requests[index], self._generation
                self._sent_candidate[index] = self._candidate.get(index)
                plane = (*self.plane[:2], index)
                link.predict(self.plane[1], *requests[index], tag=(self._generation, plane), slot=plane,
                             candidate=self._candidate.get(index))
        if gone or not requests:
            self._show_slices()
        else:
            self._list_slices()

    def _forget_slices(self, indices) -> None:
        """Prompts of these slices were removed: the worker link forgets them (not sent again after a restart)."""
        from SynthFMSegmentLib.worker_client import current_link

        link = current_link() if indices and self.plane is not None else None
        for index in indices if link is not None else ():
            link.forget((*self.plane[:2], index))
            link.forget(("choices", *self.plane[:2], index))

    def _on_preview(self, answer, tag) -> None:
        """The worker's answer to one slice's prompts: shown if they are still that slice's current ones."""
        from synthfm.serve.protocol import decode_mask

        generation, plane, *kind = tag
        if kind:  # the masks of the three choices (the follow-up below)
            request = kind[1]
            if self.plane is not None and plane[:2] == self.plane[:2] and _same_request(request,
                                                                                       self._sent.get(plane[2])):
                self._choices[plane[2]] = (request, [decode_mask(m) for m in answer.get("choice_masks", ())],
                                           answer.get("choice_scores", []))
                self._show_choices()
            return
        if self.plane is None or plane[:2] != self.plane[:2] or self._slice_generation.get(plane[2]) != generation:
            return  # the user changed the prompts meanwhile: their own answer follows
        self.sliceMasks[plane[2]] = (decode_mask(answer["mask"]), float(answer["score"]))
        self._shown[plane[2]] = (answer.get("candidate"), answer.get("choices", len(answer.get("scores", ()))))
        if self._sent_candidate.get(plane[2]) is None:
            self._pick[plane[2]] = answer.get("candidate")
        self._ask_choices(plane)
        self._show_slices(plane[2])

    def _ask_choices(self, plane) -> None:
        """After a slice's preview with three choices: ask the worker once per prompt set for the mask each choice
        gives (the pictures on the mask buttons), behind the preview so that the preview is never slower."""
        from SynthFMSegmentLib.worker_client import current_link

        index, request = plane[2], self._sent.get(plane[2])
        known = self._choices.get(index)
        link = current_link()
        if self._shown[index][1] < 3 or link is None or (known is not None and _same_request(known[0], request)):
            return
        link.predict(plane[1], *request, tag=(self._slice_generation[index], plane, "choices", request),
                     slot=("choices", *plane), choice_masks=True)

    def _show_choices(self) -> None:
        """The mask buttons: the current slice's three masks as the view shows them, the one shown pressed; hidden
        while there are none (prompts with one mask, or the worker has not answered yet)."""
        if not hasattr(self, "choiceFrame"):
            return
        index = self.plane[2] if self.plane is not None else None
        known = self._choices.get(index)
        count = self._shown.get(index, (None, 0))[1]
        wanted = self._candidate.get(index, self._pick.get(index))  # asked for; its preview may still be on its way
        volume = self._source_volume()
        view = next(self._views_along(self.plane[1]), None) if known is not None else None
        if (view is None or count < 3 or len(known[1]) != 3 or not _same_request(known[0], self._sent.get(index))):
            self.choiceFrame.visible = False
            return
        if known is not self._drawn:  # new pictures (or another slice's): drawn once, then only the pressed one moves
            image = np.take(voxels(volume), index, axis=self.plane[1])
            positive, negative, box = known[0]  # the prompts' voxel ijk, as sent
            for button, icon in zip(self.choiceButtons, choice_icons(view, volume, self.plane[1], image, known[1],
                                                                     positive, negative, box,
                                                                     window=display_range(volume))):
                button.setIcon(icon)
            self._drawn = known
        for k, button in enumerate(self.choiceButtons):
            pick = k == self._pick.get(index)
            whose = ", the model's pick" if pick else ""
            button.setText(f"{k + 1}{' (pick)' if pick else ''}")
            button.setToolTip(f"Mask {k + 1} of 3{whose}: predicted quality (IoU) {known[2][k]:.2f}. Click to show "
                              "it; Propagate starts from the one shown.")
            button.checked = k == wanted
        self.choiceFrame.visible = True

    def _slices_mask(self):
        """Every prompted slice's preview in one ``(k, j, i)`` mask (None without any)."""
        volume = self._source_volume()
        if not self.sliceMasks or volume is None or self.plane is None:
            return None
        mask = np.zeros(volume_shape(volume), bool)
        for index, (slice_mask, _) in self.sliceMasks.items():
            np.moveaxis(mask, self.plane[1], 0)[index] = slice_mask
        return mask

    def _show_slices(self, answered=None) -> None:
        """Show the prompted slices' previews together (each stays visible in views through its slice); the panel
        lists the prompted slices and says the quality of the slice just answered."""
        self.preview = self._slices_mask()
        text = ""
        if answered is not None and answered in self.sliceMasks:
            score = self.sliceMasks[answered][1]
            if len(self.sliceMasks) == 1:
                text = f"Predicted quality (IoU): {score:.2f}. Apply to keep."
            else:
                text = (f"Predicted quality (IoU) on slice {answered}: {score:.2f} ({len(self.sliceMasks)} prompted "
                        "slices: Propagate fills the slices between them). Apply keeps the prompted slices only.")
            shown, count = self._shown.get(answered, (None, 0))
            if shown is not None and count == 3:
                whose = ", the model's pick" if self._candidate.get(answered) is None else ""
                text += f" Mask {shown + 1} of {count}{whose} (Other mask: the next)."
            text += self._strip_note(answered)
        self._show_preview(self.preview, text)
        self._list_slices()
        self._show_choices()

    def _strip_note(self, index: int) -> str:
        """" Slice N is a 40 x 500 mm strip: ..." when points without a box prompt a thin strip (a coronal or
        sagittal slice of a short volume, where one point can take a whole band of tissue), else ""."""
        from synthfm.segment.preprocess import slice_spacing
        from synthfm.segment.prompts import thin_strip_note

        pos, neg, box = self.promptedSlices().get(index, ([], [], None))
        volume = self._source_volume()
        if box is not None or not (pos or neg) or volume is None:
            return ""
        shape = np.delete(volume_shape(volume), self.plane[1])
        note = thin_strip_note(tuple(shape), slice_spacing(voxel_spacing(volume), self.plane[1]))
        return f" Slice {index} is {note}." if note else ""

    def _list_slices(self) -> None:
        """The panel's list of prompted slices (with each one's predicted quality) and the slice chooser."""
        if not hasattr(self, "slicesLabel"):
            return
        slices = self.promptedSlices()
        self._slice_items = {}
        for index, (pos, neg, box) in slices.items():
            what = (["box"] if box is not None else []) + ([f"{len(pos)} positive"] if pos else []) + (
                [f"{len(neg)} negative"] if neg else [])
            score = self.sliceMasks.get(index)
            chosen = self._candidate.get(index)  # a mask the user chose there (Masks row / Other mask), not the pick
            label = (f"slice {index}: {', '.join(what)}" + (f"; IoU {score[1]:.2f}" if score else "")
                     + (f"; mask {chosen + 1} of 3" if chosen is not None else ""))
            self._slice_items[label] = index
        view = ("axial", "coronal", "sagittal")[self.plane[1]] if self.plane is not None else ""
        self.slicesLabel.text = (f"Prompted {view} slice{'s' * (len(slices) > 1)}: {', '.join(map(str, slices))}"
                                 if slices else "No prompted slice yet.")
        self.sliceBox.blockSignals(True)
        self.sliceBox.clear()
        self.sliceBox.addItems(list(self._slice_items))
        current = [label for label, i in self._slice_items.items() if self.plane is not None and i == self.plane[2]]
        if current:
            self.sliceBox.setCurrentText(current[0])
        self.sliceBox.blockSignals(False)
        self.removeSliceButton.setEnabled(bool(slices))

    def _show_preview(self, mask, text: str = "") -> None:
        """A translucent overlay: a temporary segmentation node, hidden from node selectors, never saved."""
        node = self.previewNode = self.previewNode if _in_scene(self.previewNode) else None  # None: scene closed
        if mask is None:
            self.previewNode = _remove(node)
            return
        volume = self._source_volume()
        if node is None:
            node = self.previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "SynthFM preview")
            node.SetHideFromEditors(True)
            node.SetSaveWithScene(False)
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetOpacity2DFill(0.4)
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
            node.GetSegmentation().AddEmptySegment("preview", "SynthFM preview", [1.0, 0.9, 0.1])
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, "preview", volume)
        if hasattr(self, "qualityLabel") and text:
            self.qualityLabel.text = text

    def onApply(self) -> None:
        """Write exactly the preview into the selected segment as one undoable step (masking settings apply)."""
        if self._busy:
            return
        if self.preview is None:
            slicer.util.errorDisplay("SynthFM: nothing to apply yet: add prompts in a slice view first (the preview "
                                     "appears when the worker answers).")
            return
        problem = self._problem()
        if problem:
            slicer.util.errorDisplay(f"SynthFM: {problem}")
            return
        if self.scriptedEffect.confirmCurrentSegmentVisible() == slicer.qSlicerSegmentEditorAbstractEffect.NotConfirmed:
            return
        # The segmentation's geometry may differ from the volume's (another reference volume, oversampling): the
        # edit starts from defaultModifierLabelmap() as Slicer's effects do, the preview resampled into it, so
        # masking, "editable intensity range" and overwrite settings see the geometry they expect.
        modifier = self.scriptedEffect.defaultModifierLabelmap()
        labelmap = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap_from_mask(self.preview, self._source_volume()), modifier, labelmap, False, False)
        self.scriptedEffect.saveStateForUndo()
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            labelmap, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)
        self.clearPrompts()

    def onCancel(self) -> None:
        if not self._busy:
            self.clearPrompts()

    def onPropagate(self) -> None:
        """Propagate through the volume as a job of the worker; progress and Cancel in a window-modal dialog (Qt
        blocks clicks in the views and panel meanwhile; any that arrive are ignored until it ends), polled by the
        timer: the GUI thread never waits for the model.  With several prompted slices the worker fills the slices
        between them (``VolumeSegmenter.propagate_slices``) and follows the structure beyond."""
        if self._busy:
            return
        slices = self.promptedSlices()
        problem = self._problem() or ("" if slices else "add prompts on a slice first, then Propagate.")
        if problem:
            slicer.util.errorDisplay(f"SynthFM: {problem}")
            return
        volume = self._source_volume()
        requests = [self._request(volume, *prompts) for prompts in slices.values()]
        direction = self.directionBox.currentText if hasattr(self, "directionBox") else "both"
        link = self._link()
        self._send_volume(link, volume)
        pos, neg = [p for r in requests for p in r[0]], [p for r in requests for p in r[1]]
        options = self._propagation_options()
        chosen = {i: k for i, k in self._candidate.items() if i in slices}  # "Other mask": start from what is shown
        if len(requests) == 1:  # as any worker version takes it
            link.propagate(self.plane[1], pos, neg, requests[0][2], direction, options=options, candidates=chosen)
            text = "SynthFM: propagating"
        else:
            link.propagate(self.plane[1], pos, neg, None, direction, boxes=[r[2] for r in requests if r[2]],
                           options=options, candidates=chosen)
            text = f"SynthFM: filling between slices {', '.join(map(str, slices))} and propagating"
        self._progress = slicer.util.createProgressDialog(labelText=text, maximum=100,
                                                          windowModality=qt.Qt.WindowModal)
        self._progress_tag, self._busy = (self._generation, self.plane), True

    def _on_progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.setValue(int(100 * done / max(total, 1)))

    def _on_propagated(self, result) -> None:
        """The propagation's result becomes the preview (Apply keeps it as one undo step); the core's notes (e.g.
        prompted slices whose masks do not overlap) are shown with it."""
        from synthfm.serve.protocol import decode_mask

        self._end_propagation()
        if self._progress_tag != (self._generation, self.plane):
            return
        self.preview = decode_mask(result["mask"])
        notes = " ".join(f"Note: {note}." for note in result.get("notes", ()))
        self._show_preview(self.preview, f"Propagated over {result['describe']}. Apply to keep." + (
            f" {notes}" if notes else ""))

    def _stop_propagation(self) -> None:
        """Cancel a running propagation (Cancel pressed, the effect left, another volume); the preview stays."""
        if self._progress is not None:
            from SynthFMSegmentLib.worker_client import current_link

            link = current_link()
            if link is not None:
                link.cancel_propagation()
        self._end_propagation()

    def _end_propagation(self) -> None:
        dialog, self._progress, self._busy = self._progress, None, False
        if dialog is not None:
            dialog.close()

    # ---- the worker: volume, background encoding, answers, errors ------------------------------------------
    def _send_volume(self, link, volume) -> None:
        """Tell the worker which volume the prompts are on (uploaded once per change of its voxels or window)."""
        image = volume.GetImageData()
        link.set_volume((volume.GetID(), image.GetMTime() if image is not None else 0),
                        lambda: voxels(volume), self.logic.intensity_window(volume),
                        voxel_spacing(volume))

    def _start_encoding(self, axis: int, around=None) -> None:
        """Ask the worker to encode every slice along ``axis``, nearest to ``around`` (default the middle) first."""
        volume = self._source_volume()
        self._encode_axis = axis
        if volume is None or volume.GetImageData() is None:
            return
        link = self._link()
        self._send_volume(link, volume)
        link.encode(axis, around)

    def _on_worker_tick(self) -> None:
        """The timer: advance the worker's requests (no waiting) and stop once nothing is in flight."""
        from SynthFMSegmentLib.worker_client import current_link

        link = current_link()
        if self._progress is not None and self._progress.wasCanceled:
            self._stop_propagation()
        if link is None:
            self.workerTimer.stop()
            return
        link.tick()
        if not link.busy and self._progress is None:
            self.workerTimer.stop()

    def _on_worker_status(self, text: str) -> None:
        if hasattr(self, "workerLabel"):
            self.workerLabel.text = text

    def _on_failed(self, what: str, message: str, tag=None) -> None:
        """A request failed: the panel says what and why (a propagation the user waited for also in a message box);
        the preview of older prompts is dropped (only that slice's when the worker says which), no segment
        changes."""
        import logging

        logging.warning(f"SynthFM: {what}: {message}")
        if tag is not None and len(tag) > 2:  # the mask buttons' pictures: the preview stays, not asked again
            self._choices[tag[1][2]] = (tag[3], [], [])
            self._show_choices()
            if hasattr(self, "workerLabel"):
                self.workerLabel.text = f"SynthFM: no pictures of the three masks ({message}); Other mask still works."
            return
        if "predict" in what:
            if tag is None:
                self.sliceMasks = {}
            elif self.plane is not None and tag[1][:2] == self.plane[:2] and (
                    self._slice_generation.get(tag[1][2]) == tag[0]):  # that slice's current prompts failed
                self.sliceMasks.pop(tag[1][2], None)
            self._show_slices()
        if "propagat" in what:
            if self._progress is not None:
                slicer.util.errorDisplay(f"SynthFM: {what}: {message}")
            self._end_propagation()
        if hasattr(self, "workerLabel"):
            self.workerLabel.text = f"SynthFM: {what}: {message}"
        if hasattr(self, "qualityLabel"):
            self.qualityLabel.text = f"No preview: {what}. See the message below."


def _startup_environment():
    """The environment Slicer was started in (without the launcher's settings), for Slicer's ``PythonSlicer``
    launcher, as slicer.util.launchConsoleProcess gives it; None outside Slicer."""
    startup = getattr(slicer.util, "startupEnvironment", None)
    try:
        return startup() if startup is not None else None
    except Exception:  # noqa: BLE001  no application (tests): the current environment
        return None


def _same_request(a, b) -> bool:
    """Whether two slices' prompts (voxel ijk: positive, negative, box) are the same, to 1e-6 voxel."""
    if a is None or b is None:
        return a is b
    for x, y in zip(a, b):
        if (x is None) != (y is None) or (x is not None and np.shape(x) != np.shape(y)):
            return False
        if x is not None and len(x) and not np.allclose(x, y, atol=1e-6):
            return False
    return True


# ---- temporary nodes: never saved with the scene, hidden from node selectors, removed when done ------------------
def _in_scene(node) -> bool:
    return node is not None and slicer.mrmlScene.GetNodeByID(node.GetID()) is not None


def _remove(node) -> None:
    """Remove ``node`` from the scene if it is still there; returns None (to clear the attribute holding it).
    A markups node that was the active place list (the user picked it in the toolbar) leaves no stale ID."""
    if _in_scene(node):
        selection = slicer.app.applicationLogic().GetSelectionNode()
        if selection is not None and selection.GetActivePlaceNodeID() == node.GetID():
            selection.SetReferenceActivePlaceNodeID(None)
        slicer.mrmlScene.RemoveNode(node)
    return None


def _temporary_markups(class_name: str, name: str, color):
    """A markups node for prompts (shown and draggable in the views: the markups displayable manager ignores
    HideFromEditors), in ``color``, without labels.  vtkSlicerMarkupsLogic makes every markups node added the
    active place list (the toolbar's place tool would then add to this hidden list): the user's one is restored."""
    selection = slicer.app.applicationLogic().GetSelectionNode()
    active = (selection.GetActivePlaceNodeClassName(), selection.GetActivePlaceNodeID()) if selection else None
    node = slicer.mrmlScene.AddNewNodeByClass(class_name, name)
    if active is not None:
        if active[0]:
            selection.SetReferenceActivePlaceNodeClassName(active[0])
        selection.SetReferenceActivePlaceNodeID(active[1] if active[1] and slicer.mrmlScene.GetNodeByID(active[1])
                                                else None)
    node.SetHideFromEditors(True)
    node.SetSaveWithScene(False)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetSelectedColor(*color)
    display.SetColor(*color)
    display.SetPointLabelsVisibility(False)
    display.SetPropertiesLabelVisibility(False)
    return node
