"""Logic of the SynthFMTrain module: drives synthfm.generate and synthfm.train (training in its own process)."""
from SynthFMTrainLib.logic import SynthFMTrainLogic, TrainingProcess  # noqa: F401
