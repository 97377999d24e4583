"""A small, faithful stand-in for the part of 3D Slicer's Python API that SynthFM's modules use.

Nodes hold real VTK objects (``vtkImageData``, ``vtkMatrix4x4``) and follow Slicer's conventions:
``arrayFromVolume`` is a (k, j, i) view, IJK-to-RAS matrices include spacing, direction and origin,
and slice nodes compute ``XYToRAS = SliceToRAS * XYToSlice`` (vtkMRMLSliceNode::UpdateMatrices).
Sources: Slicer/Base/Python/slicer/util.py, Libs/MRML/Core/vtkMRMLSliceNode.cxx, vtkMRMLVolumeNode.cxx.
"""
from slicer import util  # noqa: F401
from slicer.nodes import SegmentationNode, ScalarVolumeNode, SliceNode  # noqa: F401
from slicer.scene import addVolumeFromArray, mrmlScene  # noqa: F401,E402  (scene/plot nodes, added for SynthFMTrain)

util.addVolumeFromArray = addVolumeFromArray
from slicer import editor  # noqa: E402  (Segment Editor effect API, added for SynthFMSegment)

editor.install()
from slicer import widgets  # noqa: E402  (module-panel widgets, added for SynthFMTrain)

widgets.install()
