"""The SynthFM Segment Editor effect: prompts in slice views -> preview -> Apply / Propagate (undoable).

Follows Slicer's scripted effects (Modules/Loadable/Segmentations/EditorEffects/Python/
AbstractScriptedSegmentEditorEffect.py, SegmentEditorDrawEffect.py for processInteractionEvents,
SegmentEditorThresholdEffect.py for previews): the class is named ``SegmentEditorEffect`` and is wrapped
by a ``qSlicerSegmentEditorScriptedEffect`` whose ``pythonSource`` is this file.  No model logic here:
prompts go to ``SynthFMSegmentLogic``, masks come back and are written with
``modifySelectedSegmentByLabelmap(..., ModificationModeSet)`` after ``saveStateForUndo()``, so the
editor's masking settings and undo apply.
"""
from __future__ import annotations

import os

import numpy as np
import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from SynthFMSegmentLib.geometry import slice_axis
from SynthFMSegmentLib.logic import SynthFMSegmentLogic, labelmap_from_mask
from SynthFMSegmentLib.settings import Settings

DRAG_PX = 5  # a press-release farther apart than this is a box, not a click
ENCODE_CHUNK = 2  # slices encoded per timer tick: ~0.2-1 s on a laptop CPU, the GUI stays responsive


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """SynthFM: click/drag prompts, live preview on the current slice, Apply, Propagate."""

    def __init__(self, scriptedEffect) -> None:
        scriptedEffect.name = "SynthFM"
        scriptedEffect.perSegment = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.settings = Settings()
        self.logic = SynthFMSegmentLogic(self.settings.model, self.settings.device)
        self.points = None  # markups fiducial node; description "+" / "-" per control point
        self.box = None  # two RAS corners
        self.axis = None
        self.preview = None  # (k, j, i) bool mask waiting for Apply
        self._press = None
        self._encode_queue: list = []
        self._encode_timer = qt.QTimer()
        self._encode_timer.setInterval(0)
        self._encode_timer.timeout.connect(self._encode_chunk)

    def clone(self):
        effect = slicer.qSlicerSegmentEditorScriptedEffect(None)
        effect.setPythonSource(__file__.replace("\\", "/"))
        return effect

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SynthFMEffect.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self) -> str:
        return ("<html>Segment with SynthFM (promptable foundation model trained on synthetic images).<p>"
                "Left click: positive point. Shift/Ctrl-click or right click: negative point. Drag: box.<br>"
                "Points can be moved or deleted; the preview updates. <b>Apply</b> writes the preview into the "
                "selected segment (undoable); <b>Propagate</b> follows the structure through the slices.</html>")

    # ---- options panel -------------------------------------------------------------------------
    def setupOptionsFrame(self) -> None:
        from synthfm.models import available_models

        self.modelBox = qt.QComboBox()
        self.modelBox.addItems(list(available_models()))
        self.modelBox.setCurrentText(self.settings.model)
        self.deviceBox = qt.QComboBox()
        self.deviceBox.addItems(["auto", "cpu", "cuda"])
        self.deviceBox.setCurrentText(self.settings.device)
        self.directionBox = qt.QComboBox()
        self.directionBox.addItems(["both", "up", "down"])
        self.qualityLabel = qt.QLabel("Click in a slice view to add prompts.")
        self.applyButton = qt.QPushButton("Apply")
        self.cancelButton = qt.QPushButton("Cancel")
        self.clearButton = qt.QPushButton("Clear prompts")
        self.propagateButton = qt.QPushButton("Propagate")
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelBox)
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceBox)
        self.scriptedEffect.addLabeledOptionsWidget("Propagate:", self.directionBox)
        for widget in (self.qualityLabel, self.propagateButton, self.clearButton, self.applyButton,
                       self.cancelButton):
            self.scriptedEffect.addOptionsWidget(widget)
        self.modelBox.currentTextChanged.connect(self.onModelChanged)
        self.deviceBox.currentTextChanged.connect(self.onModelChanged)
        self.applyButton.clicked.connect(self.onApply)
        self.cancelButton.clicked.connect(self.onCancel)
        self.clearButton.clicked.connect(self.clearPrompts)
        self.propagateButton.clicked.connect(self.onPropagate)

    def onModelChanged(self, _text=None) -> None:
        self.settings.model, self.settings.device = self.modelBox.currentText, self.deviceBox.currentText
        self.logic = SynthFMSegmentLogic(self.settings.model, self.settings.device)
        self.updatePreview()

    def activate(self) -> None:
        if self._ensure_ready():
            self._start_encoding()

    def deactivate(self) -> None:
        self._encode_timer.stop()
        self.onCancel()

    # ---- prompts -------------------------------------------------------------------------------
    def _volume(self):
        return self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()

    def _point_node(self):
        if self.points is None or slicer.mrmlScene.GetNodeByID(self.points.GetID()) is None:
            self.points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "SynthFM prompts")
            self.points.AddObserver(slicer.vtkMRMLMarkupsNode.PointModifiedEvent, lambda *a: self.updatePreview())
            self.points.AddObserver(slicer.vtkMRMLMarkupsNode.PointRemovedEvent, lambda *a: self.updatePreview())
        return self.points

    def prompts(self):
        """Positive and negative RAS points (from the markups) and the box."""
        pos, neg = [], []
        node = self.points
        for n in range(node.GetNumberOfControlPoints() if node is not None else 0):
            (neg if node.GetNthControlPointDescription(n) == "-" else pos).append(
                list(node.GetNthControlPointPositionWorld(n)))
        return pos, neg, self.box

    def addPoint(self, ras, positive: bool) -> None:
        node = self._point_node()
        n = node.AddControlPointWorld(vtk.vtkVector3d(*ras))
        node.SetNthControlPointDescription(n, "+" if positive else "-")
        node.SetNthControlPointLabel(n, "+" if positive else "-")
        self.updatePreview()

    def setBox(self, corner0, corner1) -> None:
        self.box = [list(corner0), list(corner1)]
        self.updatePreview()

    def clearPrompts(self) -> None:
        if self.points is not None:
            self.points.RemoveAllControlPoints()
        self.box, self.preview = None, None
        self._show_preview(None)

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget) -> bool:
        """Clicks and drags in slice views become prompts (SegmentEditorDrawEffect pattern)."""
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        xy = callerInteractor.GetEventPosition()
        if eventId in (vtk.vtkCommand.LeftButtonPressEvent, vtk.vtkCommand.RightButtonPressEvent):
            self._press = (xy, eventId)
            return True
        if eventId in (vtk.vtkCommand.LeftButtonReleaseEvent, vtk.vtkCommand.RightButtonReleaseEvent) and self._press:
            (start, pressed), self._press = self._press, None
            slice_node = viewWidget.sliceLogic().GetSliceNode()
            try:
                axis = slice_axis(slice_node, self._volume())
            except ValueError as exc:
                slicer.util.errorDisplay(str(exc))
                return True
            if self.axis is not None and axis != self.axis:
                self.clearPrompts()
            self.axis = axis
            if np.hypot(xy[0] - start[0], xy[1] - start[1]) > DRAG_PX and pressed == vtk.vtkCommand.LeftButtonPressEvent:
                self.setBox(self.xyToRas(start, viewWidget), self.xyToRas(xy, viewWidget))
            else:
                negative = (pressed == vtk.vtkCommand.RightButtonPressEvent or callerInteractor.GetShiftKey()
                            or callerInteractor.GetControlKey())
                self.addPoint(self.xyToRas(xy, viewWidget), not negative)
            return True
        return False

    # ---- preview / apply / propagate --------------------------------------------------------------
    def updatePreview(self) -> None:
        pos, neg, box = self.prompts()
        if not (pos or neg or box) or self.axis is None:
            self._show_preview(None)
            return
        try:
            self.preview, score = self.logic.predict(self._volume(), pos, neg, box, self.axis)
        except Exception as exc:  # noqa: BLE001  every failure ends in a message
            self._fail("could not predict a mask", exc)
            return
        self._show_preview(self.preview, f"Predicted quality (IoU): {score:.2f}")

    def _show_preview(self, mask, text: str = "") -> None:
        """A translucent overlay: a separate segmentation node (removed on Apply/Cancel)."""
        node = getattr(self, "_preview_node", None)
        if mask is None:
            if node is not None:
                slicer.mrmlScene.RemoveNode(node)
                self._preview_node = None
            return
        if node is None:
            node = self._preview_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "SynthFM preview")
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetOpacity2DFill(0.4)
            node.GetSegmentation().AddEmptySegment("preview", "preview", [1.0, 0.9, 0.1])
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, "preview", self._volume())
        if hasattr(self, "qualityLabel") and text:
            self.qualityLabel.text = text

    def onApply(self) -> None:
        """Write the preview into the selected segment as one undoable step (masking settings apply)."""
        if self.preview is None:
            return
        self.scriptedEffect.saveStateForUndo()
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            labelmap_from_mask(self.preview, self._volume()),
            slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)
        self.clearPrompts()

    def onCancel(self) -> None:
        self.clearPrompts()

    def onPropagate(self) -> None:
        """Propagate through the volume with a cancellable progress dialog; the result is previewed."""
        from synthfm.utils.progress import CancelToken, Cancelled

        pos, neg, box = self.prompts()
        if self.axis is None or not (pos or neg or box):
            slicer.util.errorDisplay("Add prompts on a slice first, then Propagate.")
            return
        dialog = slicer.util.createProgressDialog(labelText="SynthFM: propagating", maximum=100)
        cancel = CancelToken()

        def progress(done, total, message=""):
            dialog.setValue(int(100 * done / max(total, 1)))
            slicer.app.processEvents()
            if dialog.wasCanceled:
                cancel.cancel()

        try:
            result = self.logic.propagate(self._volume(), pos, neg, box, self.axis,
                                          self.directionBox.currentText if hasattr(self, "directionBox") else "both",
                                          progress, cancel)
        except Cancelled:
            return
        except Exception as exc:  # noqa: BLE001
            self._fail("propagation failed", exc)
            return
        finally:
            dialog.close()
        self.preview = result.mask
        self._show_preview(result.mask, f"Propagated over {len(result.slices)} slices; Apply to keep.")

    # ---- background encoding, readiness, errors ------------------------------------------------------
    def _start_encoding(self) -> None:
        volume = self._volume()
        if volume is None:
            return
        n = slicer.util.arrayFromVolume(volume).shape[0]
        mid = n // 2
        self._encode_queue = sorted(range(n), key=lambda i: abs(i - mid))
        self._encode_timer.start()

    def _encode_chunk(self) -> None:
        """One timer tick: encode ENCODE_CHUNK axial slices, then give the event loop back."""
        chunk, self._encode_queue = self._encode_queue[:ENCODE_CHUNK], self._encode_queue[ENCODE_CHUNK:]
        if not chunk:
            self._encode_timer.stop()
            return
        try:
            self.logic.encode_slices(self._volume(), 0, chunk)
        except Exception as exc:  # noqa: BLE001
            self._encode_timer.stop()
            self._fail("pre-encoding stopped", exc)

    def _ensure_ready(self) -> bool:
        from SynthFMSegmentLib.dependencies import ensure_dependencies

        return ensure_dependencies()

    def _fail(self, what: str, exc: Exception) -> None:
        slicer.util.errorDisplay(f"SynthFM: {what}: {exc}\n\nCheck the model and device in the SynthFM options "
                                 "(try device 'cpu'), or see the Python console for details.")
