"""Logic of the SynthFMTrain module (no Qt; drives synthfm.generate and synthfm.train)."""
from SynthFMTrainLib.logic import SynthFMTrainLogic, TrainingJob  # noqa: F401
