"""Segment Editor stand-ins: scripted effect wrapper, effect factory, parameter set node, undo, markups.

Sources (Slicer 5.x, github.com/Slicer/Slicer):
- Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorScriptedEffect.cxx: ``setPythonSource``
  takes the module name from the file's parent folder and the class name from the file name (``+ "Effect"``
  unless it already ends so), looks the class up in ``sys.modules[module]`` and otherwise loads the file as
  that module (qSlicerScriptedUtils::loadSourceAsModule); ``processInteractionEvents`` must return a bool.
- qSlicerSegmentEditorAbstractEffect.h/.cxx: ``xyToRas(QPoint, sliceWidget)`` (XYToRAS * (x, y, 0, 1)),
  ``rasToXy``, ``modifySelectedSegmentByLabelmap(labelmap, mode, bypassMasking=False)`` resamples the
  modifier labelmap (a vtkOrientedImageData, geometry from its image-to-world matrix) and applies masking,
  ``confirmCurrentSegmentVisible``, ``saveStateForUndo`` (qMRMLSegmentEditorWidget keeps the undo stack).
- vtkMRMLSegmentEditorNode.h: GetSourceVolumeNode (Slicer >= 5.4; GetMasterVolumeNode before, kept deprecated),
  GetSegmentationNode, GetSelectedSegmentID.
- Libs/vtkSegmentationCore/vtkOrientedImageData.h: vtkImageData + directions; SetImageToWorldMatrix sets
  origin, spacing and directions.
- Libs/MRML/Core/vtkMRMLMarkupsNode.h/.cxx: AddControlPointWorld(vtkVector3d | double[3] | x, y, z [, label]) fires
  PointAddedEvent + PointModifiedEvent; SetNthControlPointLabel/Description fire PointModifiedEvent when the
  value changes; RemoveAllControlPoints fires PointRemovedEvent once (if there were points);
  GetNthControlPointPositionWorld(n) returns a vtkVector3d. Event ids: the enum from LockModifiedEvent = 19000.
  vtkMRMLNode.h: StartModify/EndModify hold ModifiedEvent and InvokeCustomModifiedEvent events back and fire
  each once at EndModify (InvokePendingModifiedEvent).  VTK's Python observers get (caller, event name), and
  custom event ids arrive as "NoEvent" (vtkCommand::GetStringFromEventId).
- Libs/MRML/Core/vtkMRMLMarkupsROINode.h/.cxx (Modules/Loadable/Markups/MRML/ in Slicer 5.0-5.2): see MarkupsROINode;
  Modules/Loadable/Markups/VTKWidgets/vtkSlicerMarkupsInteractionWidget.cxx (ScaleWidgetROI, Point{Start,End}
  InteractionEvent) for what a handle drag does to the node.
- qSlicerSegmentEditorAbstractEffect::defaultModifierLabelmap: an empty labelmap on the segmentation's reference
  geometry; modifySegmentByLabelmap (5.8; vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap later): with masking
  or "editable intensity range" the modifier must have that geometry (else qCritical and the edit is dropped);
  OverwriteMode (vtkMRMLSegmentEditorNode: all segments by default, visible ones, none) erases the new voxels from
  the other segments.
Masking in this stand-in: the editable area can be limited by ``parameter_node.mask`` (a (k, j, i) bool array on
the segmentation's geometry) and ``parameter_node.intensity_range`` (source volume intensities, low..high).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import traceback
import types
from typing import List, Optional

import numpy as np
import vtk
from vtk.util import numpy_support

import qt
import slicer
from slicer.nodes import Node, _vtk_matrix
from slicer.util import arrayFromVolume, ijk_to_ras, resample_nearest


class vtkOrientedImageData(vtk.vtkImageData):
    """vtkImageData (origin, spacing, extent) plus axis directions: image-to-world = D * diag(spacing) + origin."""

    def __init__(self) -> None:
        self.directions = np.eye(3)

    def SetImageToWorldMatrix(self, m) -> None:
        a = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
        spacing = np.linalg.norm(a[:3, :3], axis=0)
        self.directions = a[:3, :3] / spacing
        self.SetSpacing(*spacing)
        self.SetOrigin(*a[:3, 3])

    def GetImageToWorldMatrix(self, m) -> None:
        a = np.eye(4)
        a[:3, :3] = self.directions * np.array(self.GetSpacing())
        a[:3, 3] = self.GetOrigin()
        m.DeepCopy(_vtk_matrix(a))


class qSlicerSegmentEditorAbstractEffect:
    ModificationModeSet, ModificationModeAdd, ModificationModeRemove, ModificationModeRemoveAll = 0, 1, 2, 3
    NotConfirmed, ConfirmedWithoutDialog, ConfirmedWithDialog = 0, 1, 2


class SegmentEditorNode(Node):
    """vtkMRMLSegmentEditorNode: what the editor has selected."""

    class_name = "vtkMRMLSegmentEditorNode"

    OverwriteAllSegments, OverwriteVisibleSegments, OverwriteNone = 0, 1, 2

    def __init__(self, volume=None, segmentation=None, segment_id: Optional[str] = None) -> None:
        super().__init__("SegmentEditor")
        self.volume, self.segmentation, self.segment_id, self.mask = volume, segmentation, segment_id, None
        self.intensity_range, self.overwrite = None, self.OverwriteAllSegments

    def GetOverwriteMode(self) -> int:
        return self.overwrite

    def GetSourceVolumeIntensityMask(self) -> bool:
        return self.intensity_range is not None

    def GetSourceVolumeNode(self):
        return self.volume

    def GetMasterVolumeNode(self):
        """Deprecated alias kept by Slicer >= 5.4; the only name before 5.4."""
        return self.volume

    def GetSegmentationNode(self):
        return self.segmentation

    def GetSelectedSegmentID(self) -> Optional[str]:
        return self.segment_id


def _image_to_numpy(image) -> np.ndarray:
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])


class qSlicerSegmentEditorScriptedEffect(qSlicerSegmentEditorAbstractEffect):
    """The C++ wrapper of a python effect; also plays qMRMLSegmentEditorWidget's undo stack."""

    def __init__(self, parent=None) -> None:
        self.name, self.perSegment, self._self = "", True, None
        self.parameter_node: Optional[SegmentEditorNode] = None
        self.undo_stack: List[dict] = []
        self.options: list = []
        self.warnings: list = []
        self.errors: list = []  # what PythonQt would print
        self.confirm = self.ConfirmedWithoutDialog

    def setPythonSource(self, path: str) -> bool:
        """qSlicerSegmentEditorScriptedEffect::setPythonSource, step by step (5.10+; 5.8 where it differs).

        Module name = the file's parent folder, class name = the file name (+ "Effect").  If that module is in
        ``sys.modules`` and has the class, it is used; otherwise the file is run as a plain module of that name
        (qSlicerScriptedUtils::loadSourceAsModule: ``spec_from_file_location(moduleName, path)``, no package
        search path; Slicer 5.8: ``PyImport_AddModule`` first creates an empty module of that name, then
        ``imp.load_source`` runs the file in it).  Errors are printed by PythonQt (``handleError``), not raised:
        the method returns False and ``self()`` stays None.
        """
        if not path.endswith((".py", ".pyc")):
            return False
        module_name = os.path.basename(os.path.dirname(path))
        class_name = os.path.splitext(os.path.basename(path))[0]
        class_name = class_name if class_name.endswith("Effect") else class_name + "Effect"
        if slicer.app.version() < (5, 10):
            module = sys.modules.setdefault(module_name, types.ModuleType(module_name))  # PyImport_AddModule
        else:
            module = sys.modules.get(module_name)
        if module is None or not hasattr(module, class_name):
            try:
                spec = importlib.util.spec_from_file_location(module_name, path)
                if slicer.app.version() < (5, 10) and module is not None:
                    module.__file__, module.__spec__ = path, spec  # imp.load_source: run in the existing module
                else:
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except Exception:  # noqa: BLE001  PythonQt::handleError prints; loadSourceAsModule returns false
                self.errors.append(traceback.format_exc())
                print(f"loadSourceAsModule - Failed to load file {path} as module {module_name} !", file=sys.stderr)
                return False
            module = sys.modules.get(module_name)
        if module is None or not hasattr(module, class_name):
            self.errors.append(f"qSlicerSegmentEditorScriptedEffect::setPythonSource - Failed to load segment editor "
                               f"scripted effect: class {class_name} was not found in {path}")
            print(self.errors[-1], file=sys.stderr)
            return False
        self._self = getattr(module, class_name)(self)
        setattr(slicer, module_name, self._self)  # qSlicerScriptedUtils::setModuleAttribute("slicer", moduleName)
        return True

    def self(self):
        return self._self

    def cleanup(self) -> None:
        """qSlicerSegmentEditorScriptedEffect::cleanup (Slicer >= 5.10) calls the python ``cleanup``; Slicer 5.8
        has neither, so an effect must not rely on it to stop its work."""
        if slicer.app.version() >= (5, 10):
            self._self.cleanup()

    def parameterSetNode(self) -> SegmentEditorNode:
        return self.parameter_node

    def addOptionsWidget(self, widget) -> None:
        self.options.append(widget)

    def addLabeledOptionsWidget(self, label: str, widget):
        self.options.append((label, widget))
        return widget

    def processInteractionEvents(self, callerInteractor, eid: int, viewWidget) -> bool:
        """What the editor calls: the python method's result must be a bool (else a warning and False)."""
        result = self._self.processInteractionEvents(callerInteractor, eid, viewWidget)
        if not isinstance(result, bool):
            self.warnings.append("function 'processInteractionEvents' is expected to return a boolean")
            return False
        return result

    @staticmethod
    def xyToRas(xy: "qt.QPoint", sliceWidget) -> "qt.QVector3D":
        if not isinstance(xy, qt.QPoint):
            raise TypeError("xyToRas(QPoint, qMRMLSliceWidget)")
        m = sliceWidget.sliceLogic().GetSliceNode().GetXYToRAS()
        ras = [sum(m.GetElement(r, c) * v for c, v in enumerate((xy.x(), xy.y(), 0.0, 1.0))) for r in range(3)]
        return qt.QVector3D(*ras)

    @staticmethod
    def rasToXy(ras: "qt.QVector3D", sliceWidget) -> "qt.QPoint":
        m = vtk.vtkMatrix4x4()
        m.DeepCopy(sliceWidget.sliceLogic().GetSliceNode().GetXYToRAS())
        m.Invert()
        xy = m.MultiplyPoint((ras.x(), ras.y(), ras.z(), 1.0))
        return qt.QPoint(int(round(xy[0])), int(round(xy[1])))

    def confirmCurrentSegmentVisible(self) -> int:
        """Slicer asks when the selected segment is hidden; ``confirm`` is the user's answer (tests set it)."""
        return self.confirm

    def saveStateForUndo(self) -> None:  # noqa: D102
        seg = self.parameter_node.GetSegmentationNode()
        self.undo_stack.append({k: None if v is None else v.copy() for k, v in seg.segments.items()})

    def undo(self) -> None:
        seg = self.parameter_node.GetSegmentationNode()
        seg.segments = self.undo_stack.pop()
        seg.Modified()

    def defaultModifierLabelmap(self) -> "vtkOrientedImageData":
        """An empty (zero) labelmap on the segmentation's reference geometry."""
        seg = self.parameter_node.GetSegmentationNode()
        matrix, shape = seg.geometry
        labelmap = vtkOrientedImageData()
        labelmap.SetDimensions(shape[2], shape[1], shape[0])
        labelmap.SetImageToWorldMatrix(_vtk_matrix(matrix))
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        labelmap.GetPointData().GetScalars().Fill(0)
        return labelmap

    def modifySelectedSegmentByLabelmap(self, labelmap, mode: int, bypassMasking: bool = False) -> None:
        """Write the modifier labelmap into the selected segment (Set/Add/Remove) inside the editable area, and
        erase what it adds from the other segments (OverwriteMode)."""
        if not isinstance(labelmap, vtkOrientedImageData):
            raise TypeError("modifySelectedSegmentByLabelmap expects a vtkOrientedImageData")
        p = self.parameter_node
        seg, sid = p.GetSegmentationNode(), p.GetSelectedSegmentID()
        matrix, shape = seg.geometry
        source = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(source)
        source = np.array([[source.GetElement(r, c) for c in range(4)] for r in range(4)])
        x0, _, y0, _, z0, _ = labelmap.GetExtent()
        source = source @ _translation(x0, y0, z0)
        same_geometry = _image_shape(labelmap) == tuple(shape) and np.allclose(source, matrix, atol=1e-6)
        masked = (p.mask is not None and not bypassMasking) or p.intensity_range is not None
        if masked and not same_geometry:  # the mask images are on the reference geometry: no edit
            self.errors.append("modifySegmentByLabelmap: Modifier labelmap should have the same geometry as the "
                               "source volume")
            print(self.errors[-1], file=sys.stderr)
            return
        new = resample_nearest(_image_to_numpy(labelmap), source, matrix, shape) > 0
        old = seg.segments[sid]
        old = np.zeros(shape, bool) if old is None else old > 0
        editable = np.ones(shape, bool)
        if p.mask is not None and not bypassMasking:
            editable &= p.mask
        if p.intensity_range is not None:
            source = arrayFromVolume(p.GetSourceVolumeNode())
            source = source[..., 0] if source.ndim == 4 else source  # a colour volume: its first component, as Slicer
            voxels = resample_nearest(source, ijk_to_ras(p.GetSourceVolumeNode()), matrix, shape)
            editable &= (voxels >= p.intensity_range[0]) & (voxels <= p.intensity_range[1])
        if mode == qSlicerSegmentEditorAbstractEffect.ModificationModeSet:
            result = np.where(editable, new, old)
        elif mode == qSlicerSegmentEditorAbstractEffect.ModificationModeAdd:
            result = old | (new & editable)
        else:
            result = old & ~(new & editable)
        if mode != qSlicerSegmentEditorAbstractEffect.ModificationModeRemove and p.overwrite != p.OverwriteNone:
            for other, voxels in seg.segments.items():  # every segment is visible in the stand-in
                if other != sid and voxels is not None:
                    seg.segments[other] = (voxels.astype(bool) & ~(result & ~old)).astype(np.uint8)
        seg.segments[sid] = result.astype(np.uint8)
        seg.Modified()


def _translation(i: int, j: int, k: int) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = [i, j, k]
    return m


def _image_shape(image) -> tuple:
    dims = image.GetDimensions()
    return (dims[2], dims[1], dims[0])


class vtkOrientedImageDataResample:
    """Libs/vtkSegmentationCore/vtkOrientedImageDataResample: nearest-neighbour resampling onto a reference's
    geometry and extent (``padImage`` is not modelled: the output has exactly the reference's extent)."""

    @staticmethod
    def ResampleOrientedImageToReferenceOrientedImage(inputImage, referenceImage, outputImage,
                                                      linearInterpolation=False, padImage=False) -> bool:
        if linearInterpolation or padImage:
            raise NotImplementedError("stand-in: nearest neighbour without padding only")
        matrices = []
        for image in (inputImage, referenceImage):
            m = vtk.vtkMatrix4x4()
            image.GetImageToWorldMatrix(m)
            x0, _, y0, _, z0, _ = image.GetExtent()
            matrices.append(np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)]) @ _translation(x0, y0, z0))
        shape = _image_shape(referenceImage)
        voxels = resample_nearest(_image_to_numpy(inputImage), matrices[0], matrices[1], shape)
        m = vtk.vtkMatrix4x4()
        referenceImage.GetImageToWorldMatrix(m)
        outputImage.SetExtent(referenceImage.GetExtent())
        outputImage.SetImageToWorldMatrix(m)
        outputImage.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(outputImage.GetPointData().GetScalars())[:] = voxels.ravel()
        return True


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
    """Event ids as in Libs/MRML/Core/vtkMRMLMarkupsNode.h (enum starting at LockModifiedEvent = 19000)."""

    (LockModifiedEvent, LabelFormatModifiedEvent, PointAddedEvent, PointRemovedEvent, PointPositionDefinedEvent,
     PointPositionUndefinedEvent, PointPositionMissingEvent, PointPositionNonMissingEvent, PointModifiedEvent,
     PointStartInteractionEvent, PointEndInteractionEvent) = range(19000, 19011)


class _MarkupsDisplayNode:
    def __init__(self) -> None:
        self.color = self.selected_color = (1.0, 0.5, 0.5)
        self.point_labels_visible = self.properties_label_visible = True

    def SetColor(self, r: float, g: float, b: float) -> None:
        self.color = (r, g, b)

    def SetSelectedColor(self, r: float, g: float, b: float) -> None:
        self.selected_color = (r, g, b)

    def SetPointLabelsVisibility(self, visible: bool) -> None:
        self.point_labels_visible = bool(visible)

    def SetPropertiesLabelVisibility(self, visible: bool) -> None:
        self.properties_label_visible = bool(visible)


class _MarkupsNode(Node, vtk.vtkObject):
    """vtkMRMLMarkupsNode's event plumbing on a real vtkObject, so observers are called as in Slicer's Python:
    ``callback(node, eventName)`` where custom MRML events arrive as "NoEvent" (vtkCommand::GetStringFromEventId).

    vtkMRMLNode::StartModify/EndModify: while modified events are disabled, Modified() and
    InvokeCustomModifiedEvent() are remembered and fired once each at EndModify (ModifiedEvent first, then the
    custom events: vtkMRMLNode::InvokePendingModifiedEvent).
    """

    def __init__(self, name: str) -> None:
        Node.__init__(self, name)
        self._display, self._disabled, self._pending_modified, self._pending_custom = None, 0, 0, {}

    def CreateDefaultDisplayNodes(self) -> None:
        self._display = self._display or _MarkupsDisplayNode()

    def GetDisplayNode(self):
        return self._display

    def StartModify(self) -> int:
        previous, self._disabled = self._disabled, 1
        return previous

    def EndModify(self, previous: int) -> int:
        self._disabled = previous
        if previous:
            return self._pending_modified
        pending, self._pending_modified = self._pending_modified, 0
        custom, self._pending_custom = list(self._pending_custom), {}
        if pending:
            self.Modified()
        for event in custom:
            self.InvokeEvent(event)
        return pending

    def Modified(self) -> None:
        if self._disabled:
            self._pending_modified += 1
            return
        Node.Modified(self)
        vtk.vtkObject.Modified(self)

    def InvokeCustomModifiedEvent(self, event: int) -> None:
        if self._disabled:
            self._pending_custom[event] = self._pending_custom.get(event, 0) + 1
        else:
            self.InvokeEvent(event)

    def _invoke(self, event) -> None:
        self.InvokeCustomModifiedEvent(event)


class MarkupsFiducialNode(_MarkupsNode):
    """vtkMRMLMarkupsFiducialNode: control points with position, label and description; events as in Slicer."""

    class_name = "vtkMRMLMarkupsFiducialNode"

    def __init__(self, name: str = "F") -> None:
        super().__init__(name)
        self.points: list = []

    def AddControlPointWorld(self, *args) -> int:
        if len(args) in (1, 2) and (isinstance(args[0], vtk.vtkVector3d) or len(args[0]) == 3):  # vtkVector3d, double[3]
            position, label = [float(v) for v in args[0]], (args[1] if len(args) == 2 else "")
        elif len(args) in (3, 4) and all(isinstance(v, (int, float)) for v in args[:3]):
            position, label = [float(v) for v in args[:3]], (args[3] if len(args) == 4 else "")
        else:
            raise TypeError("AddControlPointWorld(vtkVector3d | double[3] [, label]) or (x, y, z[, label])")
        self.points.append({"pos": position, "label": label or f"{self.GetName()}-{len(self.points) + 1}",
                            "desc": ""})
        self._invoke(vtkMRMLMarkupsNode.PointAddedEvent)
        self._invoke(vtkMRMLMarkupsNode.PointModifiedEvent)
        return len(self.points) - 1

    def GetNumberOfControlPoints(self) -> int:
        return len(self.points)

    def GetNthControlPointPositionWorld(self, n: int) -> vtk.vtkVector3d:
        return vtk.vtkVector3d(*self.points[n]["pos"])

    def SetNthControlPointPositionWorld(self, n: int, r: float, a: float, s: float) -> None:
        self.points[n]["pos"] = [r, a, s]
        self._invoke(vtkMRMLMarkupsNode.PointModifiedEvent)

    def _set(self, n: int, key: str, value: str) -> None:
        if self.points[n][key] != value:
            self.points[n][key] = value
            self._invoke(vtkMRMLMarkupsNode.PointModifiedEvent)

    def SetNthControlPointLabel(self, n: int, label: str) -> None:
        self._set(n, "label", label)

    def GetNthControlPointLabel(self, n: int) -> str:
        return self.points[n]["label"]

    def SetNthControlPointDescription(self, n: int, desc: str) -> None:
        self._set(n, "desc", desc)

    def GetNthControlPointDescription(self, n: int) -> str:
        return self.points[n]["desc"]

    def RemoveNthControlPoint(self, n: int) -> None:
        del self.points[n]
        self._invoke(vtkMRMLMarkupsNode.PointRemovedEvent)

    def RemoveAllControlPoints(self) -> None:
        if self.points:
            self.points = []
            self._invoke(vtkMRMLMarkupsNode.PointRemovedEvent)


def _orthogonal(object_to_node: vtk.vtkMatrix4x4) -> vtk.vtkMatrix4x4:
    """vtkMRMLMarkupsROINode::GenerateOrthogonalMatrix without a transform: z = x cross y, y = z cross x,
    x = y cross z (normalised), each scaled back to its input length; the origin is kept."""
    a = np.array([[object_to_node.GetElement(r, c) for c in range(4)] for r in range(4)])
    x, y, scale = a[:3, 0], a[:3, 1], np.linalg.norm(a[:3, :3], axis=0)
    z = np.cross(x, y)
    z /= np.linalg.norm(z)
    y = np.cross(z, x)
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    x /= np.linalg.norm(x)
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = np.column_stack([x, y, z]) * scale, a[:3, 3]
    return _vtk_matrix(out)


class MarkupsROINode(_MarkupsNode):
    """vtkMRMLMarkupsROINode (Libs/MRML/Core/vtkMRMLMarkupsROINode.h/.cxx, Slicer >= 5.0), box type, no parent
    transform: an ObjectToNode matrix (axes + centre, a real vtkMatrix4x4 that the node observes) and a Size in
    the object frame; ObjectToWorld is its orthogonalised copy.

    Events as in Slicer: SetSize/SetCenter(World) fire one ModifiedEvent (the box's single control point, kept at
    the centre by UpdateControlPointsFromBoxROI, adds PointAdded/PointModifiedEvent once, after it); a change
    of the ObjectToNode matrix (SetAndObserveObjectToNodeMatrix, or DeepCopy into GetObjectToNodeMatrix())
    runs ProcessMRMLEvents: UpdateObjectToWorldMatrix (ModifiedEvent) and UpdateControlPointsFromROI.
    Dragging a handle (vtkSlicerMarkupsInteractionWidget::ScaleWidgetROI) is PointStartInteractionEvent, then
    per mouse move a MRMLNodeModifyBlocker around SetCenterWorld + SetSize, then PointEndInteractionEvent.
    """

    class_name = "vtkMRMLMarkupsROINode"
    ROITypeBox, ROITypeBoundingBox = 0, 1

    def __init__(self, name: str = "R") -> None:
        super().__init__(name)
        self.roi_type, self.size, self.center_point = self.ROITypeBox, (0.0, 0.0, 0.0), None
        self._object_to_world, self._object_to_node, self._tag = vtk.vtkMatrix4x4(), None, None
        self.SetAndObserveObjectToNodeMatrix(vtk.vtkMatrix4x4())

    def SetROIType(self, roi_type: int) -> None:
        if roi_type != self.roi_type:
            self.roi_type = roi_type
            self.Modified()

    def GetROIType(self) -> int:
        return self.roi_type

    def GetObjectToNodeMatrix(self) -> vtk.vtkMatrix4x4:
        return self._object_to_node

    def GetObjectToWorldMatrix(self) -> vtk.vtkMatrix4x4:
        return self._object_to_world

    def SetAndObserveObjectToNodeMatrix(self, matrix) -> None:
        if matrix is self._object_to_node:
            return
        if self._object_to_node is not None:
            self._object_to_node.RemoveObserver(self._tag)
        self._object_to_node = matrix if matrix is not None else vtk.vtkMatrix4x4()
        self._tag = self._object_to_node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._matrix_modified)
        self._object_to_node.Modified()

    def _matrix_modified(self, caller=None, event=None) -> None:
        """ProcessMRMLEvents for the ObjectToNode matrix."""
        self._object_to_world.DeepCopy(_orthogonal(self._object_to_node))
        self.Modified()
        self._update_control_point()

    def GetSize(self, out=None):
        """vtkGetVector3Macro: a tuple, or fills ``out``."""
        if out is None:
            return tuple(self.size)
        out[:] = self.size

    def SetSize(self, *size) -> None:
        size = tuple(float(v) for v in (size[0] if len(size) == 1 else size))
        if size == self.size:
            return
        previous = self.StartModify()
        self.size = size
        self._update_control_point()
        self.Modified()
        self.EndModify(previous)

    def GetCenterWorld(self) -> vtk.vtkVector3d:
        return vtk.vtkVector3d(*(self._object_to_world.GetElement(r, 3) for r in range(3)))

    def SetCenterWorld(self, *center) -> None:
        """No parent transform: the same as SetCenter (node coordinates)."""
        center = [float(v) for v in (center[0] if len(center) == 1 else center)]
        if all(self._object_to_node.GetElement(r, 3) == center[r] for r in range(3)):
            return
        moved = vtk.vtkMatrix4x4()
        moved.DeepCopy(self._object_to_node)
        for r in range(3):
            moved.SetElement(r, 3, center[r])
        previous = self.StartModify()
        self._object_to_node.DeepCopy(moved)
        self._update_control_point()
        self.Modified()
        self.EndModify(previous)

    SetCenter = SetCenterWorld

    def _update_control_point(self) -> None:
        """UpdateControlPointsFromBoxROI: one control point at the centre once the box has a size."""
        if not any(self.size):
            return
        previous = self.StartModify()
        centre = list(self.GetCenterWorld())
        if self.center_point is None:
            self.InvokeCustomModifiedEvent(vtkMRMLMarkupsNode.PointAddedEvent)
        if centre != self.center_point:
            self.center_point = centre
            self.InvokeCustomModifiedEvent(vtkMRMLMarkupsNode.PointModifiedEvent)
        self.EndModify(previous)

    def GetNumberOfControlPoints(self) -> int:
        return 0 if self.center_point is None else 1


class SelectionNode:
    """vtkMRMLSelectionNode (the singleton the application logic holds): the active place node class and ID."""

    def __init__(self) -> None:
        self.place_class, self.place_id = None, None

    def GetActivePlaceNodeClassName(self):
        return self.place_class

    def GetActivePlaceNodeID(self):
        return self.place_id

    def SetReferenceActivePlaceNodeClassName(self, class_name) -> None:
        self.place_class = class_name

    def SetReferenceActivePlaceNodeID(self, node_id) -> None:
        self.place_id = node_id


class _ApplicationLogic:
    def __init__(self) -> None:
        self.selection = SelectionNode()

    def GetSelectionNode(self) -> SelectionNode:
        return self.selection


def _markups_logic_node_added(node) -> None:
    """vtkSlicerMarkupsLogic::OnMRMLSceneNodeAdded: every markups node added becomes the active place list
    (SetActiveList: active place node class and ID of the selection node)."""
    if node.GetClassName().startswith("vtkMRMLMarkups"):
        selection = app.applicationLogic().GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName(node.GetClassName())
        selection.SetReferenceActivePlaceNodeID(node.GetID())


def _drop_selection_reference(node) -> None:
    """vtkMRMLScene::RemoveNode drops node references to the removed node (the selection node's active place ID)."""
    selection = app.applicationLogic().GetSelectionNode()
    if selection.GetActivePlaceNodeID() == node.GetID():
        selection.SetReferenceActivePlaceNodeID(None)


class _LayoutManager:
    """qSlicerLayoutManager (Base/QTGUI/qSlicerLayoutManager.h, qMRMLLayoutManager.h): ``sliceViewNames()`` lists
    the slice views of the layout, ``sliceWidget(name)`` gives one (a qMRMLSliceWidget: ``sliceLogic()
    .GetSliceNode()``) or None for a name the layout has not.  The layout starts empty: tests put the views they
    show in ``slice_widgets`` (name -> widget) and take them out afterwards."""

    def __init__(self) -> None:
        self.slice_widgets: dict = {}

    def sliceViewNames(self) -> list:
        return list(self.slice_widgets)

    def sliceWidget(self, name: str):
        return self.slice_widgets.get(name)


class _App:
    """slicer.app: signal connections are recorded; processEvents does nothing without an event loop.

    ``majorVersion``/``minorVersion`` as qSlicerCoreApplication has them (tests set them to play Slicer 5.8).
    ``layoutManager()``: qSlicerApplication's (None in Slicer without a main window; tests may set ``layout`` None).
    """

    def __init__(self) -> None:
        self.connections: list = []
        self.user_input: list = []  # no event loop: nothing happens unless a test queues input and one runs
        self.majorVersion, self.minorVersion = 5, 12
        self._logic = _ApplicationLogic()
        self.layout = _LayoutManager()

    def applicationLogic(self) -> _ApplicationLogic:
        return self._logic

    def layoutManager(self):
        return self.layout

    def version(self) -> tuple:
        return (self.majorVersion, self.minorVersion)

    def connect(self, signal: str, slot) -> None:
        self.connections.append((signal, slot))

    def processEvents(self) -> None:
        """Deliver the user input a test queued in ``user_input`` (callables), as Qt's event loop would; while a
        window-modal or application-modal dialog is open, input to the main window is blocked (dropped)."""
        pending, self.user_input = self.user_input, []
        if any(d.windowModality != qt.Qt.NonModal and not d.closed for d in open_dialogs):
            return
        for event in pending:
            event()


class _ProgressDialog:
    """QProgressDialog as slicer.util.createProgressDialog returns it (``wasCanceled`` is a property); like any
    QDialog it is not modal unless ``windowModality`` says so (createProgressDialog sets keyword arguments that
    name a property)."""

    def __init__(self, maximum: int = 100, cancel_at: Optional[int] = None) -> None:
        self.values: list = []
        self.wasCanceled, self.cancel_at, self.closed = False, cancel_at, False
        self.windowModality = qt.Qt.NonModal

    def setValue(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("QProgressDialog.setValue(int)")
        self.values.append(value)
        if self.cancel_at is not None and value >= self.cancel_at:
            self.wasCanceled = True

    def close(self) -> None:
        self.closed = True


class _Modules:
    pass


app, modules, messages = _App(), _Modules(), []
progress_dialog_cancel_at: list = [None]  # tests set [percent] to press Cancel at that point
open_dialogs: list = []


def errorDisplay(text: str, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    messages.append(text)


def warningDisplay(text: str, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    messages.append(text)


def confirmOkCancelDisplay(text: str, windowTitle=None, parent=None, **kwargs) -> bool:
    messages.append(text)
    return False


def createProgressDialog(parent=None, value: int = 0, maximum: int = 100, labelText: str = "",
                         windowTitle: str = "Processing...", **kwargs):
    dialog = _ProgressDialog(maximum, progress_dialog_cancel_at[0])
    dialog.labelText, dialog.windowTitle = labelText, windowTitle
    for key, argument in kwargs.items():
        if hasattr(dialog, key):
            setattr(dialog, key, argument)
    open_dialogs.append(dialog)
    return dialog


class _SegmentEditorModuleWidget:
    """``slicer.modules.SegmentEditorWidget``: the Segment Editor module's widget; ``editor`` is its
    qMRMLSegmentEditorWidget, whose ``setActiveEffectByName`` slot the stand-in records."""

    def __init__(self) -> None:
        self.editor = self
        self.activeEffectName = ""

    def setActiveEffectByName(self, name: str) -> None:
        self.activeEffectName = name


def selectModule(module) -> None:
    """``slicer.util.selectModule``: shows the module; its widget is created (``slicer.modules.<Name>Widget``)."""
    app.selectedModule = module
    if module == "SegmentEditor" and not hasattr(modules, "SegmentEditorWidget"):
        modules.SegmentEditorWidget = _SegmentEditorModuleWidget()


def pip_install(requirements: str, **kwargs) -> None:
    raise RuntimeError("pip_install is not available in the stand-in")


def install() -> None:
    """Put these names where Slicer has them: ``slicer.X`` and ``slicer.util.X``."""
    from slicer import scene

    for name in ("vtkOrientedImageData", "vtkOrientedImageDataResample", "qSlicerSegmentEditorAbstractEffect", "qSlicerSegmentEditorScriptedEffect",
                 "qSlicerSegmentEditorEffectFactory", "vtkMRMLMarkupsNode", "app", "modules"):
        setattr(slicer, name, globals()[name])
    for name in ("errorDisplay", "warningDisplay", "confirmOkCancelDisplay", "createProgressDialog", "pip_install",
                 "selectModule"):
        setattr(slicer.util, name, globals()[name])
    scene.CLASSES["vtkMRMLMarkupsFiducialNode"] = MarkupsFiducialNode
    scene.CLASSES["vtkMRMLMarkupsROINode"] = slicer.vtkMRMLMarkupsROINode = MarkupsROINode
    scene.CLASSES["vtkMRMLSegmentEditorNode"] = SegmentEditorNode
    if _markups_logic_node_added not in slicer.mrmlScene.node_added:
        slicer.mrmlScene.node_added.append(_markups_logic_node_added)
        slicer.mrmlScene.node_removed.append(_drop_selection_reference)
