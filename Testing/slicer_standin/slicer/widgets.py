"""MRML widgets and slicer.util helpers the SynthFM module panels use (added for SynthFMTrain's panel).

Sources: Libs/MRML/Widgets/qMRMLNodeComboBox.h (nodeTypes, noneEnabled, currentNode, currentNodeChanged),
Modules/Loadable/Segmentations/Widgets/qMRMLSegmentsTableView.h (selectedSegmentIDs), Base/Python/slicer/util.py
(tryWithErrorDisplay shows the error and re-raises it), Modules/Loadable/Plots (ShowChartInLayout),
Libs/MRML/Widgets/qMRMLUtils.cxx with CTK's ctk::vtkImageDataToQImage (Libs/Visualization/VTK/Widgets/
ctkVTKWidgetsUtils.cpp).
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


class qMRMLUtils:
    """``slicer.qMRMLUtils().vtkImageDataToQImage(imageData, qimage)``: ``qimage = ctk::vtkImageDataToQImage(data);
    return !qimage.isNull()``. CTK takes unsigned char scalars of 1, 3 or 4 components only (a null image
    otherwise), memcpy's them into a QImage of Grayscale8 / RGB888 / RGBA8888 whose scanlines are padded to 4 bytes
    (so 1 or 3 components with a width that leaves a remainder come out sheared, as in Slicer) and mirrors it
    vertically (VTK's rows go up)."""

    def vtkImageDataToQImage(self, image_data, qimage) -> bool:
        import numpy as np
        import vtk
        from vtk.util import numpy_support

        scalars = image_data.GetPointData().GetScalars() if image_data is not None else None
        components = image_data.GetNumberOfScalarComponents() if scalars is not None else 0
        if scalars is None or image_data.GetScalarType() != vtk.VTK_UNSIGNED_CHAR or components not in (1, 3, 4):
            qimage.pixels = None
            return False
        width, height = image_data.GetDimensions()[:2]
        line = (width * components + 3) // 4 * 4  # QImage::bytesPerLine
        buffer = np.zeros(line * height, np.uint8)
        data = numpy_support.vtk_to_numpy(scalars).reshape(-1)[:width * height * components]
        buffer[:data.size] = data  # memcpy(image.bits(), scalars, components * width * height)
        rows = buffer.reshape(height, line)[:, :width * components].reshape(height, width, components)
        qimage.pixels = rows[::-1].copy()  # image.mirrored()
        return True


def install() -> None:
    import slicer

    slicer.qMRMLNodeComboBox, slicer.qMRMLSegmentsTableView = qMRMLNodeComboBox, qMRMLSegmentsTableView
    slicer.qMRMLUtils = qMRMLUtils
    slicer.modules.plots = _PlotsModule()
    slicer.util.tryWithErrorDisplay = tryWithErrorDisplay
