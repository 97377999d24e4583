"""MRML widgets and slicer.util helpers the SynthFM module panels use (added for SynthFMTrain's panel).

Sources: Libs/MRML/Widgets/qMRMLNodeComboBox.h (nodeTypes, noneEnabled, currentNode, currentNodeChanged),
Modules/Loadable/Segmentations/Widgets/qMRMLSegmentsTableView.h (selectedSegmentIDs), Base/Python/slicer/util.py
(tryWithErrorDisplay shows the error and re-raises it), Modules/Loadable/Plots (ShowChartInLayout).
"""
from __future__ import annotations

from contextlib import contextmanager

import qt


class qMRMLNodeComboBox(qt.QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.nodeTypes, self.node = [], None
        self.currentNodeChanged = qt.Signal()

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def currentNode(self):
        return self.node

    def setCurrentNode(self, node) -> None:
        if node is not self.node:
            self.node = node
            self.currentNodeChanged.emit(node)


class qMRMLSegmentsTableView(qt.QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.segmentation, self.selected = None, []

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def setSegmentationNode(self, node) -> None:
        self.segmentation = node

    def selectedSegmentIDs(self) -> list:
        return list(self.selected)


class _PlotsLogic:
    def __init__(self) -> None:
        self.shown: list = []

    def ShowChartInLayout(self, chart) -> None:
        self.shown.append(chart)


class _PlotsModule:
    def __init__(self) -> None:
        self._logic = _PlotsLogic()

    def logic(self) -> _PlotsLogic:
        return self._logic


@contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    """slicer.util.tryWithErrorDisplay: an exception is shown (message + exception text) and re-raised."""
    import slicer

    try:
        yield
    except Exception as exc:
        if show:
            slicer.util.errorDisplay(f"{message}\n\n{exc}" if message is not None else str(exc))
        raise


def install() -> None:
    import slicer

    slicer.qMRMLNodeComboBox, slicer.qMRMLSegmentsTableView = qMRMLNodeComboBox, qMRMLSegmentsTableView
    slicer.modules.plots = _PlotsModule()
    slicer.util.tryWithErrorDisplay = tryWithErrorDisplay
