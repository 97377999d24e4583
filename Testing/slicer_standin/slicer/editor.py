"""Segment Editor stand-ins: scripted effect wrapper, effect factory, parameter set node, undo, markups.

Sources (Slicer 5.x): Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorScriptedEffect.cxx
(setPythonSource instantiates the file's ``SegmentEditorEffect`` class with the C++ wrapper; ``self()``
returns it), qSlicerSegmentEditorAbstractEffect.cxx (``modifySelectedSegmentByLabelmap`` with
ModificationModeSet replaces the selected segment inside the editable area; masking is handled there),
qMRMLSegmentEditorWidget.cxx (``saveStateForUndo`` snapshots the segmentation; ``undo`` restores it),
vtkMRMLSegmentEditorNode (GetSourceVolumeNode, GetSegmentationNode, GetSelectedSegmentID),
vtkSlicerSegmentationsModuleLogic::CreateOrientedImageDataFromVolumeNode, vtkMRMLMarkupsFiducialNode.
Masking in this stand-in: the editable area can be limited by ``parameter_node.mask`` (a (k, j, i) bool array).
"""
from __future__ import annotations

import importlib.util
from typing import List, Optional

import numpy as np
import vtk
from vtk.util import numpy_support

import slicer
from slicer.nodes import Node
from slicer.util import arrayFromVolume


class vtkOrientedImageData(vtk.vtkImageData):
    """vtkImageData plus an image-to-world (IJK-to-RAS) matrix."""

    def __init__(self) -> None:
        self.image_to_world = vtk.vtkMatrix4x4()

    def SetImageToWorldMatrix(self, m) -> None:
        self.image_to_world.DeepCopy(m)

    def GetImageToWorldMatrix(self, m) -> None:
        m.DeepCopy(self.image_to_world)


class vtkSlicerSegmentationsModuleLogic:
    @staticmethod
    def CreateOrientedImageDataFromVolumeNode(volumeNode) -> vtkOrientedImageData:
        image = vtkOrientedImageData()
        image.DeepCopy(volumeNode.GetImageData())
        m = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(m)
        image.SetImageToWorldMatrix(m)
        return image


class qSlicerSegmentEditorAbstractEffect:
    ModificationModeSet, ModificationModeAdd, ModificationModeRemove = 0, 1, 2


class SegmentEditorNode(Node):
    """vtkMRMLSegmentEditorNode: what the editor has selected."""

    def __init__(self, volume=None, segmentation=None, segment_id: Optional[str] = None) -> None:
        super().__init__("SegmentEditor")
        self.volume, self.segmentation, self.segment_id, self.mask = volume, segmentation, segment_id, None

    def GetSourceVolumeNode(self):
        return self.volume

    def GetSegmentationNode(self):
        return self.segmentation

    def GetSelectedSegmentID(self) -> Optional[str]:
        return self.segment_id


class qSlicerSegmentEditorScriptedEffect:
    """The C++ wrapper of a python effect; also plays qMRMLSegmentEditorWidget's undo stack."""

    def __init__(self, parent=None) -> None:
        self.name, self.perSegment, self._self = "", False, None
        self.parameter_node: Optional[SegmentEditorNode] = None
        self.undo_stack: List[dict] = []
        self.options: list = []

    def setPythonSource(self, path: str) -> None:
        spec = importlib.util.spec_from_file_location(f"_effect_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._self = module.SegmentEditorEffect(self)

    def self(self):
        return self._self

    def parameterSetNode(self) -> SegmentEditorNode:
        return self.parameter_node

    def addOptionsWidget(self, widget) -> None:
        self.options.append(widget)

    def addLabeledOptionsWidget(self, label: str, widget) -> None:
        self.options.append((label, widget))

    def saveStateForUndo(self) -> None:
        seg = self.parameter_node.GetSegmentationNode()
        self.undo_stack.append({k: None if v is None else v.copy() for k, v in seg.segments.items()})

    def undo(self) -> None:
        seg = self.parameter_node.GetSegmentationNode()
        seg.segments = self.undo_stack.pop()
        seg.Modified()

    def modifySelectedSegmentByLabelmap(self, labelmap: vtkOrientedImageData, mode: int) -> None:
        p = self.parameter_node
        volume, seg, sid = p.GetSourceVolumeNode(), p.GetSegmentationNode(), p.GetSelectedSegmentID()
        dims = labelmap.GetDimensions()
        new = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0]) > 0
        old = seg.segments[sid]
        old = np.zeros(arrayFromVolume(volume).shape, bool) if old is None else old > 0
        editable = np.ones_like(new) if p.mask is None else p.mask
        if mode == qSlicerSegmentEditorAbstractEffect.ModificationModeSet:
            result = np.where(editable, new, old)
        elif mode == qSlicerSegmentEditorAbstractEffect.ModificationModeAdd:
            result = old | (new & editable)
        else:
            result = old & ~(new & editable)
        seg.segments[sid] = result.astype(np.uint8)
        seg.Modified()


class qSlicerSegmentEditorEffectFactory:
    _instance = None

    def __init__(self) -> None:
        self.effects: list = []

    @classmethod
    def instance(cls) -> "qSlicerSegmentEditorEffectFactory":
        cls._instance = cls._instance or cls()
        return cls._instance

    def registerEffect(self, effect) -> bool:
        if any(e.name == effect.name for e in self.effects):
            return False
        self.effects.append(effect)
        return True


class vtkMRMLMarkupsNode:
    PointModifiedEvent, PointRemovedEvent, PointAddedEvent = 19001, 19002, 19003


class MarkupsFiducialNode(Node):
    """vtkMRMLMarkupsFiducialNode: control points with position, label and description; observers fire."""

    def __init__(self, name: str = "F") -> None:
        super().__init__(name)
        self.points: list = []
        self.observers: list = []

    def AddObserver(self, event, callback) -> int:
        self.observers.append((event, callback))
        return len(self.observers)

    def _invoke(self, event) -> None:
        for e, cb in self.observers:
            if e == event:
                cb(self, event)

    def AddControlPointWorld(self, position) -> int:
        self.points.append({"pos": [position[0], position[1], position[2]], "label": "", "desc": ""})
        return len(self.points) - 1

    def GetNumberOfControlPoints(self) -> int:
        return len(self.points)

    def GetNthControlPointPositionWorld(self, n: int):
        return tuple(self.points[n]["pos"])

    def SetNthControlPointPositionWorld(self, n: int, r: float, a: float, s: float) -> None:
        self.points[n]["pos"] = [r, a, s]
        self._invoke(vtkMRMLMarkupsNode.PointModifiedEvent)

    def SetNthControlPointLabel(self, n: int, label: str) -> None:
        self.points[n]["label"] = label

    def SetNthControlPointDescription(self, n: int, desc: str) -> None:
        self.points[n]["desc"] = desc

    def GetNthControlPointDescription(self, n: int) -> str:
        return self.points[n]["desc"]

    def RemoveNthControlPoint(self, n: int) -> None:
        del self.points[n]
        self._invoke(vtkMRMLMarkupsNode.PointRemovedEvent)

    def RemoveAllControlPoints(self) -> None:
        self.points = []


class _App:
    """slicer.app: signal connections are recorded; processEvents does nothing without an event loop."""

    def __init__(self) -> None:
        self.connections: list = []

    def connect(self, signal: str, slot) -> None:
        self.connections.append((signal, slot))

    def processEvents(self) -> None:
        pass


class _ProgressDialog:
    def __init__(self, maximum: int = 100, cancel_at: Optional[int] = None) -> None:
        self.values: list = []
        self.wasCanceled, self.cancel_at, self.closed = False, cancel_at, False

    def setValue(self, value: int) -> None:
        self.values.append(value)
        if self.cancel_at is not None and value >= self.cancel_at:
            self.wasCanceled = True

    def close(self) -> None:
        self.closed = True


class _Modules:
    pass


app, modules, messages = _App(), _Modules(), []
progress_dialog_cancel_at: list = [None]  # tests set [percent] to press Cancel at that point


def errorDisplay(text: str, **kwargs) -> None:
    messages.append(text)


def confirmOkCancelDisplay(text: str, **kwargs) -> bool:
    messages.append(text)
    return False


def createProgressDialog(parent=None, value: int = 0, maximum: int = 100, labelText: str = "", **kwargs):
    return _ProgressDialog(maximum, progress_dialog_cancel_at[0])


def pip_install(requirements: str) -> None:
    raise RuntimeError("pip_install is not available in the stand-in")


def install() -> None:
    """Put these names where Slicer has them: ``slicer.X`` and ``slicer.util.X``."""
    from slicer import scene

    for name in ("vtkOrientedImageData", "vtkSlicerSegmentationsModuleLogic", "qSlicerSegmentEditorAbstractEffect",
                 "qSlicerSegmentEditorScriptedEffect", "qSlicerSegmentEditorEffectFactory", "vtkMRMLMarkupsNode",
                 "app", "modules"):
        setattr(slicer, name, globals()[name])
    for name in ("errorDisplay", "confirmOkCancelDisplay", "createProgressDialog", "pip_install"):
        setattr(slicer.util, name, globals()[name])
    scene.CLASSES["vtkMRMLMarkupsFiducialNode"] = MarkupsFiducialNode
    scene.CLASSES["vtkMRMLSegmentEditorNode"] = SegmentEditorNode
