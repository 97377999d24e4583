"""SynthFMTrain: train a SynthFM decoder on synthetic images inside 3D Slicer.

Module, widget (code-built with qt/ctk) and self-test. The work is in SynthFMTrainLib.logic, which calls
synthfm.train; training runs in its own process (Slicer's Python) and a QTimer on the GUI thread reads what it
writes, so Slicer stays responsive.  The panel opens before torch is installed: nothing here imports torch
until the user presses Preview or Train, which first offer to install it.
"""
import qt
import ctk
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from SynthFMTrainLib.logic import SynthFMTrainLogic as _Logic

PRESETS = ("mixed", "ct", "mr", "us")
DEFAULT_MODEL = "synthfm-lite"


class SynthFMTrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "SynthFM Train"
        parent.categories = ["Segmentation"]
        parent.contributors = ["SynthFM contributors"]
        parent.helpText = ("Train a SynthFM prompt encoder + mask decoder on synthetic images for your modality; "
                           "the trained model appears in the SynthFM Segment Editor effect.")
        parent.acknowledgementText = "Based on Sengupta et al., SynthFM, ISBI 2025."


class SynthFMTrainLogic(ScriptedLoadableModuleLogic, _Logic):
    pass


class SynthFMTrainWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic, self.job, self.table, self._models_listed = SynthFMTrainLogic(), None, None, False
        self.timer = qt.QTimer()
        self.timer.setInterval(250)
        self.timer.connect("timeout()", self.onPoll)

        gen = ctk.ctkCollapsibleButton()
        gen.text = "Synthetic data"
        self.layout.addWidget(gen)
        form = qt.QFormLayout(gen)
        self.preset = qt.QComboBox()
        self.preset.addItems(list(PRESETS))
        self.samples = self._spin(10, 100000, 200)
        self.seed = self._spin(0, 2**31 - 1, 0)
        self.size = self._spin(64, 1024, 256)
        self.neighbourVolumes = self._spin(0, 100000, 0)
        self.neighbourVolumes.toolTip = ("Also train on neighbouring slices of this many synthetic 3D volumes (6 slices "
                                         "each): teaches propagation to follow a structure and to stop at its end")
        preview = qt.QPushButton("Preview")
        preview.connect("clicked()", self.onPreview)
        for label, w in (("Preset:", self.preset), ("Samples:", self.samples), ("Seed:", self.seed),
                         ("Image size:", self.size), ("3D volumes (propagation):", self.neighbourVolumes),
                         ("", preview)):
            form.addRow(label, w)

        tr = ctk.ctkCollapsibleButton()
        tr.text = "Train"
        self.layout.addWidget(tr)
        form = qt.QFormLayout(tr)
        self.model = qt.QComboBox()
        self.model.addItems([DEFAULT_MODEL])  # the full lists need torch: _fill_model_lists, once installed
        self.device = qt.QComboBox()
        self.device.addItems(["cpu", "cuda"])
        self.steps = self._spin(1, 10**7, 500)
        self.budget = qt.QDoubleSpinBox()
        self.budget.setRange(0, 10000)
        self.budget.setSuffix(" min (0 = none)")
        self.out = ctk.ctkPathLineEdit()
        self.out.filters = ctk.ctkPathLineEdit.Dirs
        self.name = qt.QLineEdit("my-decoder")
        self.startButton = qt.QPushButton("Train / Resume")
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.enabled = False
        self.progress = qt.QProgressBar()
        self.status = qt.QLabel("")
        self.startButton.connect("clicked()", self.onStart)
        self.cancelButton.connect("clicked()", self.onCancel)
        for label, w in (("Model:", self.model), ("Device:", self.device), ("Steps:", self.steps),
                         ("Time budget:", self.budget), ("Output folder:", self.out), ("Register as:", self.name),
                         ("", self.startButton), ("", self.cancelButton), ("", self.progress), ("", self.status)):
            form.addRow(label, w)

        fine = ctk.ctkCollapsibleButton()
        fine.text = "Fine-tune on my segmentations"
        fine.collapsed = True
        self.layout.addWidget(fine)
        form = qt.QFormLayout(fine)
        self.useMine = qt.QCheckBox("Mix my segmented slices into training")
        self.volumeSelector = self._nodeSelector("vtkMRMLScalarVolumeNode")
        self.segmentationSelector = self._nodeSelector("vtkMRMLSegmentationNode")
        self.segmentsTable = slicer.qMRMLSegmentsTableView()
        self.segmentsTable.setMRMLScene(slicer.mrmlScene)
        self.segmentsTable.selectionMode = qt.QAbstractItemView.ExtendedSelection
        self.segmentsTable.setToolTip("Segments to learn (none selected = all); each becomes a target structure")
        self.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.segmentsTable.setSegmentationNode)
        self.userFraction = qt.QDoubleSpinBox()
        self.userFraction.setRange(0.0, 1.0)
        self.userFraction.setSingleStep(0.05)
        self.userFraction.value = 0.5
        self.userFraction.setToolTip("Share of each training batch taken from your slices (the rest is synthetic)")
        self.startFrom = qt.QComboBox()
        self.startFrom.addItems(["scratch", DEFAULT_MODEL])
        self.startFrom.setToolTip("Decoder to start from (it must use the same encoder as Model); "
                                  "'scratch' = a fresh decoder")
        for label, w in (("", self.useMine), ("Volume:", self.volumeSelector),
                         ("Segmentation:", self.segmentationSelector), ("Segments:", self.segmentsTable),
                         ("Share of my slices:", self.userFraction), ("Start from:", self.startFrom)):
            form.addRow(label, w)
        self.layout.addStretch(1)
        from SynthFMSegmentLib.dependencies import missing_packages

        if not missing_packages():
            self._fill_model_lists()

    def _fill_model_lists(self):
        """Trainable decoders and every available model (``synthfm.models`` imports torch: call once installed)."""
        from synthfm.models import MODEL_REGISTRY, available_models

        for combo, names in ((self.model, [n for n in MODEL_REGISTRY if n.startswith("synthfm")]),
                             (self.startFrom, ["scratch"] + list(available_models()))):
            current = combo.currentText
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentText(current)
            combo.blockSignals(False)
        self._models_listed = True

    @staticmethod
    def _nodeSelector(node_type):
        combo = slicer.qMRMLNodeComboBox()
        combo.nodeTypes = [node_type]
        combo.selectNodeUponCreation = True
        combo.addEnabled = combo.removeEnabled = False
        combo.noneEnabled = True
        combo.setMRMLScene(slicer.mrmlScene)
        return combo

    def _fine_tune_settings(self):
        """TrainConfig extras for the fine-tune section (converted by the logic; empty when unused)."""
        extra = {}
        if self.startFrom.currentText != "scratch":
            extra["init"] = self.startFrom.currentText
        if self.useMine.checked:
            case = self.logic.user_case(self.volumeSelector.currentNode(), self.segmentationSelector.currentNode(),
                                        list(self.segmentsTable.selectedSegmentIDs()) or None)
            extra.update(user_data=[case], user_fraction=self.userFraction.value)
        return extra

    @staticmethod
    def _spin(lo, hi, value):
        s = qt.QSpinBox()
        s.setRange(lo, hi)
        s.value = value
        return s

    def _overrides(self):
        return {"size": self.size.value}

    def _ready(self):
        """torch and the core installed (asks the user first; shared with the SynthFM effect)."""
        from SynthFMSegmentLib.dependencies import ensure_dependencies

        if not ensure_dependencies():
            return False
        if not self._models_listed:
            self._fill_model_lists()
        return True

    def onPreview(self):
        if not self._ready():
            return
        with slicer.util.tryWithErrorDisplay("Preview failed.", waitCursor=True):
            vol, seg = self.logic.preview(self.preset.currentText, self.seed.value, overrides=self._overrides())
            slicer.util.setSliceViewerLayers(background=vol, fit=True)

    def onStart(self):
        if not self._ready():
            return
        with slicer.util.tryWithErrorDisplay("Cannot start training.", waitCursor=True):
            config = self.logic.train_config(
                self.out.currentPath, model=self.model.currentText, preset=self.preset.currentText,
                samples=self.samples.value, steps=self.steps.value, seed=self.seed.value,
                neighbour_volumes=self.neighbourVolumes.value,
                device=self.device.currentText, time_budget_min=self.budget.value or None,
                overrides=self._overrides(), **self._fine_tune_settings())
            if self.table is None:
                self.table, chart = self.logic.create_chart()
                slicer.modules.plots.logic().ShowChartInLayout(chart)
            self.job = self.logic.start(config)
            self.startButton.enabled, self.cancelButton.enabled = False, True
            self.timer.start()

    def onCancel(self):
        if self.job:
            self.job.cancel()
            self.status.text = "Cancelling (the last checkpoint is kept; Train / Resume continues)..."

    def onPoll(self):
        job = self.job
        job.poll()
        self.logic.update_chart(self.table, job.history)
        self.progress.maximum, self.progress.value = max(job.total, 1), job.step
        eta = job.eta_seconds()
        self.status.text = job.message + (f" - about {eta / 60:.1f} min left" if eta is not None else "")
        if job.running:
            return
        self.timer.stop()
        self.startButton.enabled, self.cancelButton.enabled = True, False
        if job.error is not None:
            slicer.util.errorDisplay(f"Training failed: {job.error}")
        elif job.cancelled:
            self.status.text = (f"Training {job.cancel_reason}; press Train / Resume to continue from the last "
                                "checkpoint.")
        elif job.checkpoint is not None:
            path = self.logic.register(job.checkpoint, self.name.text)
            if self.startFrom.findText(self.name.text) < 0:
                self.startFrom.addItem(self.name.text)  # the new decoder can be fine-tuned further
            self.status.text = f"Saved {path}; choose '{self.name.text}' in the SynthFM effect."

    def cleanup(self):
        """Slicer closes (or the module reloads): stop training, letting it save its checkpoint first."""
        self.timer.stop()
        if self.job:
            self.job.stop()


class SynthFMTrainTest(ScriptedLoadableModuleTest):
    """Reload and Test: preview a synthetic volume, run a short real training in its own process, and
    segment with the saved decoder through the SynthFM effect's logic."""

    def runTest(self):
        slicer.mrmlScene.Clear(0)
        self.test_preview()
        self.test_short_training_segments_in_the_effect()

    def test_preview(self):
        vol, seg = SynthFMTrainLogic().preview("ct", seed=1, overrides={"size": 64})
        self.assertEqual(slicer.util.arrayFromVolume(vol).shape[1:], (64, 64))

    def test_short_training_segments_in_the_effect(self):
        import tempfile
        import time

        import numpy as np
        from SynthFMSegmentLib.geometry import ijk_to_ras_matrix
        from SynthFMSegmentLib.logic import SynthFMSegmentLogic

        logic = SynthFMTrainLogic()
        with tempfile.TemporaryDirectory() as out:
            config = logic.train_config(out, model="synthfm-lite", samples=4, steps=2, batch_size=2, val_samples=2,
                                        val_every=2, ckpt_every=2, overrides={"size": 64})
            job = logic.start(config)
            deadline = time.monotonic() + 600
            while job.running and time.monotonic() < deadline:
                job.poll()
                slicer.app.processEvents()
                time.sleep(0.1)
            self.assertFalse(job.running, "training did not end in 10 minutes")
            self.assertIsNone(job.error)
            self.assertIsNotNone(job.checkpoint)
            vol, seg = logic.preview("ct", seed=2, overrides={"size": 64})
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, seg.GetSegmentation().GetNthSegmentID(0), vol)
            k = int(np.argmax(mask.sum(axis=(1, 2))))
            ijk_to_ras = ijk_to_ras_matrix(vol)
            ys, xs = np.nonzero(mask[k])
            box = [(ijk_to_ras @ [xs.min(), ys.min(), k, 1])[:3], (ijk_to_ras @ [xs.max(), ys.max(), k, 1])[:3]]
            pred, score = SynthFMSegmentLogic(model=str(job.checkpoint), device="cpu").predict(vol, box_ras=box)
            self.assertEqual(pred.shape, mask.shape)
            self.assertTrue(np.isfinite(score))
        self.delayDisplay("SynthFM Train self-test passed")
