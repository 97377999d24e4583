"""The modules' own ScriptedLoadableModuleTests (what Reload and Test runs in Slicer), run in the stand-in."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "SynthFMTrain"))


def test_segment_module_self_test_passes_with_the_shipped_model(capsys):
    import SynthFMSegment

    SynthFMSegment.SynthFMSegmentTest().runTest()  # segments an ellipsoid from a box, Dice > 0.7
    assert "SynthFM self-test passed" in capsys.readouterr().out


def test_train_module_self_test_passes():
    import SynthFMTrain

    SynthFMTrain.SynthFMTrainTest().runTest()
