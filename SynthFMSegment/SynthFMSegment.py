"""SynthFMSegment: the scripted module that registers the "SynthFM" Segment Editor effect.

Registration follows Slicer's scripted segment editor effect template
(Extensions/Testing/ScriptedSegmentEditorEffectExtensionTemplate in Slicer's source): after
``slicer.app.startupCompleted`` a ``qSlicerSegmentEditorScriptedEffect`` gets the python source
``SynthFMSegmentLib/SegmentEditorEffect.py`` (class ``SegmentEditorEffect``, which the Lib package exports)
and ``effect.self().register()`` hands it to ``qSlicerSegmentEditorEffectFactory``.
"""
from __future__ import annotations

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

EFFECT_SOURCE = os.path.join(os.path.dirname(__file__), "SynthFMSegmentLib", "SegmentEditorEffect.py").replace("\\", "/")


def registerEffect():
    """Register the SynthFM effect with the Segment Editor (the factory ignores a second registration).

    setPythonSource takes the class from ``sys.modules["SynthFMSegmentLib"]`` when it is there; importing the
    package first makes that the real package (its modules import each other), not the effect file run alone.
    """
    import qSlicerSegmentationsEditorEffectsPythonQt as effects
    import SynthFMSegmentLib  # noqa: F401

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(EFFECT_SOURCE)
    instance.self().register()
    return instance


class SynthFMSegment(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "SynthFM Segment"
        parent.categories = ["Segmentation"]
        parent.dependencies = ["Segmentations"]
        parent.contributors = ["SynthFM developers"]
        parent.helpText = ("Adds the 'SynthFM' effect to the Segment Editor: point or box prompts, live preview, "
                           "propagation through slices. Model: a SAM-style decoder trained on synthetic images only.")
        parent.acknowledgementText = "Sengupta et al., SynthFM, ISBI 2025."
        slicer.app.connect("startupCompleted()", registerEffect)


class SynthFMSegmentWidget(ScriptedLoadableModuleWidget):
    """The module panel explains where the effect lives and opens it in the Segment Editor."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        label = qt.QLabel("SynthFM is an effect of the Segment Editor: click (a positive point; a negative one with "
                          "'Negative points' pressed) or drag a box on a slice, check the preview, Apply, or "
                          "Propagate through the volume.")
        label.wordWrap = True
        self.openButton = qt.QPushButton("Open the Segment Editor with SynthFM")
        self.openButton.toolTip = "Switches to the Segment Editor module and selects the SynthFM effect."
        self.openButton.clicked.connect(self.onOpenEditor)
        self.layout.addWidget(label)
        self.layout.addWidget(self.openButton)

    def onOpenEditor(self) -> None:
        """Select the Segment Editor module and activate the SynthFM effect there."""
        slicer.util.selectModule("SegmentEditor")
        slicer.modules.SegmentEditorWidget.editor.setActiveEffectByName("SynthFM")


class SynthFMSegmentTest(ScriptedLoadableModuleTest):
    """Runs inside real Slicer (Reload&Test): the same scenario as Testing/slicer/test_segment_effect.py."""

    def runTest(self) -> None:
        slicer.mrmlScene.Clear(0)
        self.test_logic_segments_and_propagates()

    def test_logic_segments_and_propagates(self) -> None:
        import numpy as np
        from SynthFMSegmentLib.logic import SynthFMSegmentLogic

        zz, yy, xx = np.mgrid[:12, :48, :56]
        truth = ((xx - 28) / 14.0) ** 2 + ((yy - 24) / 10.0) ** 2 + ((zz - 6) / 4.0) ** 2 < 1
        image = (100 + 80 * truth).astype(np.float32)
        ijk_to_ras = np.diag([-0.8, -0.9, 2.5, 1.0])
        volume = slicer.util.addVolumeFromArray(image, ijk_to_ras, name="SynthFM test")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segment_id = segmentation.GetSegmentation().AddEmptySegment("ellipsoid")
        ys, xs = np.nonzero(truth[6])
        box = [(ijk_to_ras @ [xs.min(), ys.min(), 6, 1])[:3], (ijk_to_ras @ [xs.max(), ys.max(), 6, 1])[:3]]
        logic = SynthFMSegmentLogic(device="cpu")
        mask = logic.segment(volume, segmentation, segment_id, box_ras=box)  # prompted slice + propagation
        written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)
        self.assertTrue(np.array_equal(written > 0, mask))
        self.assertTrue(mask[6].any() and mask.any(axis=(1, 2)).sum() > 1)  # propagated beyond the prompted slice
        dice = 2 * (mask[6] & truth[6]).sum() / (mask[6].sum() + truth[6].sum())
        self.assertGreater(dice, 0.7)  # the prompted slice (3D quality is measured by `synthfm evaluate --volume`)
        self.delayDisplay(f"SynthFM self-test passed (Dice {dice:.2f})")
