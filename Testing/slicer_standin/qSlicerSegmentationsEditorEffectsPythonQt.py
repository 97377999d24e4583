"""Stand-in for Slicer's ``qSlicerSegmentationsEditorEffectsPythonQt`` (the PythonQt wrappers of the Segment
Editor effect classes; Slicer's own effects import qSlicerSegmentEditorScriptedEffect from here)."""
from slicer.editor import (qSlicerSegmentEditorAbstractEffect, qSlicerSegmentEditorEffectFactory,  # noqa: F401
                           qSlicerSegmentEditorScriptedEffect)
