"""SynthFMSegmentLogic: segment a volume node from prompts in RAS, usable from Slicer's Python console.

    from SynthFMSegmentLib.logic import SynthFMSegmentLogic
    logic = SynthFMSegmentLogic()                       # default model synthfm-lite, CPU or GPU
    mask = logic.segment(volumeNode, segmentationNode, segmentId, positive_ras=[[12.5, -30.0, 41.0]])
    mask = logic.segment(volumeNode, segmentationNode, segmentId, boxes_ras=[box_on_slice_a, box_on_slice_b])

All model work goes through the ``synthfm`` core; this class only converts between MRML nodes and
the core's arrays (``geometry``) and keeps one predictor per volume so embeddings are reused.

The model sees what the user sees: by default (``window="display"``) intensities are mapped with the volume's
current display window/level; ``"auto"`` (or any window of ``synthfm.segment.preprocess.WINDOWS``) ignores it.

It runs the model in Slicer's own process, for scripts; the interactive effect uses a worker process instead
(``worker_client``, docs/serve.md) so that the GUI never waits for the model.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from SynthFMSegmentLib.geometry import ras_to_ijk, volume_shape, voxel_spacing, voxels


DISPLAY_WINDOW = "display"  # the volume's display window/level


def display_range(volume_node) -> Optional[Tuple[float, float]]:
    """The (low, high) intensities of the volume's current display window/level; None without a display node, and
    for a colour (vector) volume, which views show in colour, not through a window (the model's grey then gets a
    robust range of its own, ``auto``)."""
    display = volume_node.GetDisplayNode()
    image = volume_node.GetImageData()
    if display is None or (image is not None and image.GetNumberOfScalarComponents() > 1):
        return None
    width, level = float(display.GetWindow()), float(display.GetLevel())
    return (level - width / 2, level + width / 2) if width > 0 else None


class SynthFMSegmentLogic:
    """Non-GUI work of the SynthFM effect: prompts in RAS -> masks written into a segment."""

    def __init__(self, model: str = "synthfm-lite", device: str = "auto", window: str = DISPLAY_WINDOW) -> None:
        self.model_name, self.device, self.window = model, device, window
        self._predictor = None
        self._segmenters: Dict[tuple, object] = {}

    @property
    def predictor(self):
        """The core's SlicePredictor, created (and the model loaded) on first use."""
        if self._predictor is None:
            from synthfm.models import load_model
            from synthfm.segment import SlicePredictor

            window = "auto" if self.window == DISPLAY_WINDOW else self.window  # "auto" when a volume has no display
            self._predictor = SlicePredictor(load_model(self.model_name), self.device, window)
        return self._predictor

    def segmenter(self, volume_node, axis: int = 0):
        """A VolumeSegmenter over the node's voxels, cached per node, axis, voxel content and intensity window.

        The voxels' version is the image data's modification time (``arrayFromVolumeModified`` bumps it), not the
        node's: renaming the volume or changing its display or storage nodes must not re-encode every slice.
        """
        from synthfm.segment import VolumeSegmenter

        window = display_range(volume_node) if self.window == DISPLAY_WINDOW else None
        key = (volume_node.GetID(), axis, volume_node.GetImageData().GetMTime(), window)
        if key not in self._segmenters:
            self._segmenters = {k: v for k, v in self._segmenters.items() if k[:2] != key[:2]}  # older versions go
            array = voxels(volume_node)  # (k, j, i) == the core's (z, y, x)
            self._segmenters[key] = VolumeSegmenter(self.predictor, array, axis, volume_id=key, value_range=window,
                                                    spacing=voxel_spacing(volume_node))
        return self._segmenters[key]

    def intensity_window(self, volume_node):
        """What the model maps to [0, 1]: the display window/level as (low, high) for ``display`` (``auto`` when the
        volume has no display node yet), else the window name; for the worker (``synthfm serve``)."""
        if self.window == DISPLAY_WINDOW:
            return display_range(volume_node) or "auto"
        return self.window

    def slice_index(self, volume_node, ras: Sequence[float], axis: int) -> int:
        """The slice (along array ``axis``) through a RAS point; ValueError when the point is outside the volume."""
        ijk = np.round(ras_to_ijk(volume_node, ras)).astype(int)
        shape = volume_shape(volume_node)  # (k, j, i)
        if np.any(ijk < 0) or np.any(ijk >= np.array(shape[::-1])):
            raise ValueError(f"the prompt at RAS {np.round(ras, 1).tolist()} is outside the volume "
                             f"'{volume_node.GetName()}': click inside it")
        return int(ijk[2 - axis])

    def slice_prompts(self, volume_node, positive_ras: Sequence = (), negative_ras: Sequence = (),
                      box_ras: Optional[Sequence] = None, axis: int = 0):
        """RAS prompts (a box as two opposite corners) -> ``(slice index, Prompts)`` on ``axis``."""
        from synthfm.segment.volume_prompts import slice_prompts

        to_ijk = lambda pts: [ras_to_ijk(volume_node, p) for p in pts]  # noqa: E731
        return slice_prompts(to_ijk(positive_ras), to_ijk(negative_ras),
                             to_ijk(box_ras) if box_ras is not None else None, axis)

    def predict(self, volume_node, positive_ras: Sequence = (), negative_ras: Sequence = (),
                box_ras: Optional[Sequence] = None, axis: int = 0) -> Tuple[np.ndarray, float]:
        """The prompted slice's mask as a ``(k, j, i)`` volume mask, and its predicted quality (IoU)."""
        index, prompts = self.slice_prompts(volume_node, positive_ras, negative_ras, box_ras, axis)
        seg = self.segmenter(volume_node, axis)
        pred = seg.segment_slice(index, prompts)
        mask = np.zeros(seg.volume.shape, bool)
        np.moveaxis(mask, axis, 0)[index] = pred.mask
        return mask, float(pred.score)

    def propagate(self, volume_node, positive_ras: Sequence = (), negative_ras: Sequence = (),
                  box_ras: Optional[Sequence] = None, axis: int = 0, direction: str = "both",
                  progress=None, cancel=None, boxes_ras: Sequence = ()):
        """Segment the prompted slice(s) and follow the structure; the core's PropagationResult.

        Points may lie on several slices, and ``boxes_ras`` holds one box per slice: the slices between prompted
        slices are filled (``VolumeSegmenter.propagate_slices``), propagation runs beyond the outermost ones."""
        from synthfm.segment import PropagationOptions
        from synthfm.segment.volume_prompts import prompts_by_slice

        to_ijk = lambda pts: [ras_to_ijk(volume_node, p) for p in pts]  # noqa: E731
        boxes = [to_ijk(b) for b in boxes_ras] + ([to_ijk(box_ras)] if box_ras is not None else [])
        prompted = prompts_by_slice(to_ijk(positive_ras), to_ijk(negative_ras), boxes, axis)
        seg = self.segmenter(volume_node, axis)
        options = PropagationOptions.for_model(getattr(self.predictor, "model", None))
        return seg.propagate_slices(prompted, direction, progress, cancel, options)

    def segment(self, volume_node, segmentation_node, segment_id: str, positive_ras: Sequence = (),
                negative_ras: Sequence = (), box_ras: Optional[Sequence] = None, axis: int = 0,
                propagate: bool = True, direction: str = "both", progress=None, cancel=None,
                boxes_ras: Sequence = ()) -> np.ndarray:
        """Segment from prompts (RAS mm; a box as two opposite corners; ``boxes_ras``: boxes on several slices) and
        write the mask into the segment.

        Returns the mask ``(k, j, i)``.  ``axis`` is the array axis normal to the prompted slices.
        """
        import slicer

        if propagate:
            mask = self.propagate(volume_node, positive_ras, negative_ras, box_ras, axis, direction,
                                  progress, cancel, boxes_ras).mask
        elif len(boxes_ras):
            raise ValueError("boxes on several slices are filled between by propagation: use propagate=True")
        else:
            mask = self.predict(volume_node, positive_ras, negative_ras, box_ras, axis)[0]
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation_node, segment_id,
                                                         volume_node)
        return mask


def labelmap_from_mask(mask: np.ndarray, volume_node):
    """A ``(k, j, i)`` mask as a vtkOrientedImageData on the volume's grid (for modifySelectedSegmentByLabelmap).

    Built as Slicer's own effects build modifier labelmaps (SegmentEditorIslandsEffect.py):
    ``slicer.vtkOrientedImageData()`` + ``SetImageToWorldMatrix`` (here the volume's IJK-to-RAS matrix).
    """
    import slicer
    import vtk
    from vtk.util import numpy_support

    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    labelmap.SetImageToWorldMatrix(ijk_to_ras)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(mask.shape)
    voxels[:] = mask
    labelmap.Modified()
    return labelmap
