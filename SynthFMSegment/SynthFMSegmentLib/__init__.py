"""Slicer-side helpers of the SynthFM Segment Editor effect (no model logic: that lives in ``synthfm``)."""
