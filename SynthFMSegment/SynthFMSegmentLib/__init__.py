"""Slicer-side helpers of the SynthFM Segment Editor effect (no model logic: that lives in ``synthfm``).

Slicer's qSlicerSegmentEditorScriptedEffect::setPythonSource looks for the class ``SegmentEditorEffect`` in
the module named after this folder, so the package exports it (as Slicer's scripted-effect template does).
"""
from .SegmentEditorEffect import SegmentEditorEffect  # noqa: F401
