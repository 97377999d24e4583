"""Scene, table and plot node stand-ins (added for SynthFMTrain).

Follows vtkMRMLScene::AddNewNodeByClass, vtkMRMLTableNode (a real vtkTable), vtkMRMLPlotSeriesNode
(SetAndObserveTableNodeID, SetXColumnName, SetYColumnName) and vtkMRMLPlotChartNode
(AddAndObservePlotSeriesNodeID), and slicer.util.addVolumeFromArray.
"""
from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

from slicer.nodes import Node, ScalarVolumeNode, SegmentationNode, _vtk_matrix


class TableNode(Node):
    """vtkMRMLTableNode: a vtkTable of columns."""

    def __init__(self, name: str = "Table") -> None:
        super().__init__(name)
        self._table = vtk.vtkTable()

    def GetTable(self) -> vtk.vtkTable:
        return self._table


class PlotSeriesNode(Node):
    def __init__(self, name: str = "PlotSeries") -> None:
        super().__init__(name)
        self.table_id = self.x = self.y = None

    def SetAndObserveTableNodeID(self, node_id: str) -> None:
        self.table_id = node_id

    def SetXColumnName(self, name: str) -> None:
        self.x = name

    def SetYColumnName(self, name: str) -> None:
        self.y = name

    def SetPlotType(self, kind) -> None:
        self.kind = kind


class PlotChartNode(Node):
    def __init__(self, name: str = "PlotChart") -> None:
        super().__init__(name)
        self.series_ids: list = []

    def AddAndObservePlotSeriesNodeID(self, node_id: str) -> None:
        self.series_ids.append(node_id)

    def SetTitle(self, title: str) -> None:
        self.title = title

    def SetXAxisTitle(self, title: str) -> None:
        self.x_title = title


PlotSeriesNode.PlotTypeLine = 1
CLASSES = {"vtkMRMLScalarVolumeNode": ScalarVolumeNode, "vtkMRMLLabelMapVolumeNode": ScalarVolumeNode,
           "vtkMRMLVectorVolumeNode": ScalarVolumeNode, "vtkMRMLSegmentationNode": SegmentationNode,
           "vtkMRMLTableNode": TableNode, "vtkMRMLPlotSeriesNode": PlotSeriesNode,
           "vtkMRMLPlotChartNode": PlotChartNode}


class MRMLScene:
    """vtkMRMLScene: nodes by ID; ``node_added`` plays the logics observing NodeAddedEvent (the markups logic)."""

    def __init__(self) -> None:
        self.nodes: dict = {}
        self.node_added: list = []
        self.node_removed: list = []  # e.g. node references to the removed node are dropped (RemoveNodeReferences)
        self.added_classes: list = []  # every node ever added, temporary ones included

    def AddNewNodeByClass(self, class_name: str, name: str = ""):
        node = CLASSES[class_name](name or class_name[7:])
        node.class_name = class_name
        node.scene = self
        self.nodes[node.GetID()] = node
        self.added_classes.append(class_name)
        for observer in self.node_added:
            observer(node)
        return node

    def GetNodeByID(self, node_id: str):
        return self.nodes.get(node_id)

    def GetNodesByClass(self, class_name: str) -> list:
        return [n for n in self.nodes.values() if n.class_name == class_name]

    def RemoveNode(self, node) -> None:
        if self.nodes.pop(node.GetID(), None) is not None:
            for observer in self.node_removed:
                observer(node)

    def Clear(self, close: int = 0) -> None:
        self.nodes.clear()


mrmlScene = MRMLScene()


def addVolumeFromArray(narray: np.ndarray, ijkToRAS=None, name: str = "", nodeClassName: str = "vtkMRMLScalarVolumeNode"):
    """slicer.util.addVolumeFromArray: a (k, j, i) array into a new volume node."""
    node = mrmlScene.AddNewNodeByClass(nodeClassName, name)
    image = vtk.vtkImageData()
    image.SetDimensions(narray.shape[2], narray.shape[1], narray.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(narray).ravel(), deep=True))
    node.SetAndObserveImageData(image)
    if ijkToRAS is not None:
        node.SetIJKToRASMatrix(_vtk_matrix(np.asarray(ijkToRAS)))
    node.CreateDefaultDisplayNodes()
    return node
