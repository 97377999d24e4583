"""Stage 3, segment: prompts -> masks on slices, and slice-by-slice propagation through volumes."""
from synthfm.segment.predictor import Prediction, SlicePredictor, pick_device
from synthfm.segment.prompts import Prompts
from synthfm.segment.propagate import PropagationOptions, PropagationResult, VolumeSegmenter

__all__ = ["Prompts", "Prediction", "SlicePredictor", "VolumeSegmenter", "PropagationOptions",
           "PropagationResult", "pick_device"]
