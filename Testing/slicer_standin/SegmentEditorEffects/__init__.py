"""Stand-in for Slicer's ``SegmentEditorEffects`` package: AbstractScriptedSegmentEditorEffect.

Source: Slicer/Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/
AbstractScriptedSegmentEditorEffect.py: ``register`` hands the scripted effect to
``qSlicerSegmentEditorEffectFactory.instance().registerEffect``; ``xyToRas`` wraps the event position in a
``qt.QPoint`` (integers) and returns a list; ``rasToXy`` returns ``[x, y]``; ``cleanup`` does nothing.
"""
import qt

import slicer


class AbstractScriptedSegmentEditorEffect:
    def __init__(self, scriptedEffect) -> None:
        self.scriptedEffect = scriptedEffect

    def register(self) -> None:
        effectFactorySingleton = slicer.qSlicerSegmentEditorEffectFactory.instance()
        effectFactorySingleton.registerEffect(self.scriptedEffect)

    def cleanup(self) -> None:
        pass

    def rasToXy(self, ras, viewWidget):
        xyPoint = self.scriptedEffect.rasToXy(qt.QVector3D(ras[0], ras[1], ras[2]), viewWidget)
        return [xyPoint.x(), xyPoint.y()]

    def xyToRas(self, xy, viewWidget):
        rasVector = self.scriptedEffect.xyToRas(qt.QPoint(xy[0], xy[1]), viewWidget)
        return [rasVector.x(), rasVector.y(), rasVector.z()]
