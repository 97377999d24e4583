"""MRML node stand-ins backed by VTK objects."""
from __future__ import annotations

import itertools

import numpy as np
import vtk

_ids = itertools.count(1)

#: vtkMRMLSliceNode::SetOrientationToAxial/Sagittal/Coronal: columns are the view's x, y and normal in RAS.
ORIENTATIONS = {
    "Axial": [[-1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "Sagittal": [[0, 0, -1], [-1, 0, 0], [0, 1, 0]],
    "Coronal": [[-1, 0, 0], [0, 0, 1], [0, 1, 0]],
}


def _vtk_matrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


_mtime = itertools.count(1)  # VTK's global modification time: every Modified() takes the next value


class Node:
    """vtkMRMLNode: GetMTime changes on every modification of the node (its name, attributes, node references such
    as display and storage nodes), not only when the data it holds changes."""

    class_name = "vtkMRMLNode"

    def __init__(self, name: str) -> None:
        self._name, self._id = name, f"vtkMRMLNode{next(_ids)}"
        self._mtime = next(_mtime)
        self.hide_from_editors, self.save_with_scene = False, True
        self.attributes: dict = {}

    def SetName(self, name: str) -> None:
        if name != self._name:
            self._name = name
            self.Modified()

    def SetAttribute(self, name: str, value: str) -> None:
        self.attributes[name] = value
        self.Modified()

    def GetClassName(self) -> str:
        return self.class_name

    def SetHideFromEditors(self, hide: bool) -> None:
        self.hide_from_editors = bool(hide)

    def GetHideFromEditors(self) -> bool:
        return self.hide_from_editors

    def SetSaveWithScene(self, save: bool) -> None:
        self.save_with_scene = bool(save)

    def GetParentTransformNode(self):
        """vtkMRMLTransformableNode: no transforms in the stand-in."""
        return None

    def GetName(self) -> str:
        return self._name

    def GetID(self) -> str:
        return self._id

    def GetMTime(self) -> int:
        return self._mtime

    def Modified(self) -> None:
        self._mtime = next(_mtime)


class ScalarVolumeNode(Node):
    """vtkMRMLScalarVolumeNode: voxels in a vtkImageData (origin 0, spacing 1) + an IJK-to-RAS matrix."""

    class_name = "vtkMRMLScalarVolumeNode"

    def __init__(self, name: str = "Volume") -> None:
        super().__init__(name)
        self._image = vtk.vtkImageData()
        self._ijk_to_ras = vtk.vtkMatrix4x4()

    def SetAndObserveImageData(self, image: vtk.vtkImageData) -> None:
        self._image = image
        self.Modified()

    def GetImageData(self) -> vtk.vtkImageData:
        return self._image

    def SetIJKToRASMatrix(self, m: vtk.vtkMatrix4x4) -> None:
        self._ijk_to_ras.DeepCopy(m)
        self.Modified()

    def GetIJKToRASMatrix(self, m: vtk.vtkMatrix4x4) -> None:
        m.DeepCopy(self._ijk_to_ras)

    def CreateDefaultDisplayNodes(self) -> None:
        """A scalar display node with automatic window/level (the stand-in: the voxels' full range); the display
        node reference modifies the volume node."""
        if getattr(self, "_display", None) is None:
            from vtk.util import numpy_support

            voxels = numpy_support.vtk_to_numpy(self._image.GetPointData().GetScalars())
            self._display = ScalarVolumeDisplayNode(float(voxels.min()), float(voxels.max()))
            self.Modified()

    def GetDisplayNode(self):
        return getattr(self, "_display", None)


class ScalarVolumeDisplayNode(Node):
    """vtkMRMLScalarVolumeDisplayNode: window/level (a change modifies the display node, not the volume)."""

    class_name = "vtkMRMLScalarVolumeDisplayNode"

    def __init__(self, low: float, high: float) -> None:
        super().__init__("Display")
        self.window, self.level = max(high - low, 1e-6), (high + low) / 2

    def GetWindow(self) -> float:
        return self.window

    def GetLevel(self) -> float:
        return self.level

    def SetWindowLevel(self, window: float, level: float) -> None:
        self.window, self.level = float(window), float(level)
        self.Modified()


class SegmentationNode(Node):
    """vtkMRMLSegmentationNode reduced to binary labelmaps per segment on a reference volume's grid.

    Segments are added through ``GetSegmentation().AddEmptySegment`` (vtkSegmentation), as in Slicer:
    vtkMRMLSegmentationNode itself has no AddEmptySegment.
    """

    class_name = "vtkMRMLSegmentationNode"

    def __init__(self, name: str = "Segmentation") -> None:
        super().__init__(name)
        self.segments: dict = {}  # segment ID -> (k, j, i) uint8 array on ``geometry`` (None: empty)
        self.geometry = None  # (IJK-to-RAS 4x4, (k, j, i) shape): the reference image geometry


class SliceNode(Node):
    """vtkMRMLSliceNode: SliceToRAS (orientation + offset) and XYToRAS for a view of ``dims`` pixels."""

    def __init__(self, name: str, orientation: str, fov=(250.0, 250.0), dims=(500, 500)) -> None:
        super().__init__(name)
        self.fov, self.dims = np.asarray(fov, float), np.asarray(dims, float)
        self.slice_to_ras = np.eye(4)
        self.slice_to_ras[:3, :3] = ORIENTATIONS[orientation]

    def SetSliceToRAS(self, m: np.ndarray) -> None:
        self.slice_to_ras = np.asarray(m, float)

    def JumpSliceByCentering(self, r: float, a: float, s: float) -> None:
        """Centre the view on a RAS point (the slice plane passes through it)."""
        self.slice_to_ras[:3, 3] = [r, a, s]

    def JumpSliceByOffsetting(self, r: float, a: float, s: float) -> None:
        """vtkMRMLSliceNode::JumpSliceByOffsetting(r, a, s): move the slice plane along its normal until it holds the
        RAS point; the view's position in the plane (pan) stays.  Slicer subtracts ActiveSlice * spacing, which is
        0 outside lightbox layouts (the stand-in has none; the (k, r, a, s) overload for lightbox is not modelled)."""
        normal, origin = self.slice_to_ras[:3, 2], self.slice_to_ras[:3, 3]
        d = float(np.dot(np.array([r, a, s], float) - origin, normal))
        self.slice_to_ras[:3, 3] = origin + d * normal

    def GetSliceToRAS(self) -> vtk.vtkMatrix4x4:
        return _vtk_matrix(self.slice_to_ras)

    def GetXYToRAS(self) -> vtk.vtkMatrix4x4:
        # vtkMRMLSliceNode::UpdateMatrices: XYToSlice scales pixels to mm and centres the view
        spacing = self.fov / self.dims
        xy_to_slice = np.eye(4)
        xy_to_slice[0, 0], xy_to_slice[1, 1] = spacing
        xy_to_slice[0, 3], xy_to_slice[1, 3] = -self.fov / 2
        return _vtk_matrix(self.slice_to_ras @ xy_to_slice)


class _Segmentation:
    """vtkSegmentation: AddEmptySegment(segmentId, name, color) -> id."""

    def __init__(self, node: SegmentationNode) -> None:
        self.node = node

    def AddEmptySegment(self, segment_id: str = "", name: str = "", color=None) -> str:
        segment_id = segment_id or name or f"Segment_{len(self.node.segments) + 1}"
        self.node.segments[segment_id] = None
        self.node.Modified()
        return segment_id

    def GetSegment(self, segment_id: str):
        return object() if segment_id in self.node.segments else None

    def GetNumberOfSegments(self) -> int:
        return len(self.node.segments)

    def GetNthSegmentID(self, index: int) -> str:
        """vtkSegmentation::GetNthSegmentID: "" when there is no segment at ``index`` (added for SynthFMTrain)."""
        ids = list(self.node.segments)
        return ids[index] if 0 <= index < len(ids) else ""


class _SegmentationDisplayNode:
    def SetOpacity2DFill(self, opacity: float) -> None:
        self.opacity2d_fill = opacity


def _segmentation(self) -> _Segmentation:
    return _Segmentation(self)


def _create_display_nodes(self) -> None:
    self._display = _SegmentationDisplayNode()


SegmentationNode.GetSegmentation = _segmentation
SegmentationNode.CreateDefaultDisplayNodes = _create_display_nodes
SegmentationNode.GetDisplayNode = lambda self: getattr(self, "_display", None)
def _set_reference_geometry(self, volume) -> None:
    """The segmentation's labelmaps live on ``volume``'s grid from now on (existing segments are resampled)."""
    from slicer.util import _grid_shape, ijk_to_ras, resample_nearest

    geometry = (ijk_to_ras(volume), _grid_shape(volume))
    if self.geometry is not None:
        self.segments = {k: None if v is None else resample_nearest(v, self.geometry[0], *geometry)
                         for k, v in self.segments.items()}
    self.geometry, self.reference_volume = geometry, volume
    self.Modified()


SegmentationNode.SetReferenceImageGeometryParameterFromVolumeNode = _set_reference_geometry
