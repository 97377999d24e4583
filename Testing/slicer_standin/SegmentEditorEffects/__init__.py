"""Stand-in for Slicer's ``SegmentEditorEffects`` package: AbstractScriptedSegmentEditorEffect.

Source: Slicer/Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/
AbstractScriptedSegmentEditorEffect.py (``register`` hands the scripted effect to
``qSlicerSegmentEditorEffectFactory.instance().registerEffect``; ``xyToRas`` maps view pixels through
the slice node's XYToRAS matrix).
"""
from __future__ import annotations

import numpy as np

import slicer


class AbstractScriptedSegmentEditorEffect:
    def __init__(self, scriptedEffect) -> None:
        self.scriptedEffect = scriptedEffect

    def register(self) -> None:
        slicer.qSlicerSegmentEditorEffectFactory.instance().registerEffect(self.scriptedEffect)

    def xyToRas(self, xy, viewWidget) -> np.ndarray:
        """qSlicerSegmentEditorAbstractEffect::xyToRas: XYToRAS * (x, y, 0, 1)."""
        m = viewWidget.sliceLogic().GetSliceNode().GetXYToRAS()
        return np.array([sum(m.GetElement(r, c) * v for c, v in enumerate((xy[0], xy[1], 0.0, 1.0)))
                         for r in range(3)])
