"""Every module of the core and of the Slicer modules imports in a fresh interpreter of this Python, or fails only
because torch (or a package that needs it) is not installed: catches syntax and library calls newer than the
Python that Slicer ships (5.8: Python 3.9; 5.10-5.12: 3.12).  CI also runs this file on Python 3.9 without torch."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDS_TORCH = {"torch", "torchvision", "segment_anything", "monai"}  # installed with torch, never without it

SCRIPT = r"""
import importlib, json, pkgutil, sys, traceback
root = sys.argv[1]
sys.path[:0] = [root + "/Testing/slicer_standin", root + "/SynthFMSegment", root + "/SynthFMTrain", root]
import slicer  # the stand-in: the Slicer modules' Lib packages import slicer/qt/vtk
import synthfm, SynthFMSegmentLib, SynthFMTrainLib
names = [m.name for pkg in (synthfm, SynthFMSegmentLib, SynthFMTrainLib)
         for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
result = {"ok": [], "missing": {}, "failed": {}}
for name in ["SynthFMSegment", "SynthFMTrain"] + names:
    try:
        importlib.import_module(name)
        result["ok"].append(name)
    except ModuleNotFoundError as exc:
        result["missing"][name] = exc.name
    except Exception:
        result["failed"][name] = traceback.format_exc()
print(json.dumps(result))
"""


def test_every_module_imports_on_this_python():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}, "\n".join(result["failed"].values())
    assert {m.split(".")[0] for m in result["missing"].values()} <= NEEDS_TORCH, result["missing"]
    has_torch = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0
    assert not result["missing"] if has_torch else len(result["ok"]) > 20
    for name in ("synthfm.generate", "synthfm.io", "SynthFMSegment", "SynthFMTrain", "SynthFMSegmentLib.logic",
                 "SynthFMTrainLib.train_process"):  # the parts that must work before torch is installed
        assert name in result["ok"]
