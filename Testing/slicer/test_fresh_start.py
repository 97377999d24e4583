"""Slicer loads scripted code its own way: each check here starts a fresh interpreter (no test order, no earlier
import can help) and starts the stand-in exactly as Slicer starts (Testing/slicer_standin/fresh_start.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fresh_slicer(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "Testing" / "slicer_standin" / "fresh_start.py"), *args],
                         capture_output=True, text=True, timeout=300, cwd=str(ROOT / "Testing"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("version", ["5.8", "5.10", "5.12"])
def test_effect_registers_in_a_freshly_started_slicer(version):
    result = fresh_slicer("--slicer", version)
    assert result["errors"] == [] and result["effects"] == ["SynthFM"]
    assert result["modules"] == ["SynthFMSegment", "SynthFMTrain"]


def test_effect_file_registers_even_when_slicer_loads_it_as_a_plain_module():
    """What setPythonSource does when nothing imported the Lib package: the file runs as module
    'SynthFMSegmentLib' without a package path; its own imports must still resolve."""
    code = (
        "import sys; sys.path[:0] = [{standin!r}, {seg!r}, {root!r}]\n"
        "import slicer\n"
        "effect = slicer.qSlicerSegmentEditorScriptedEffect(None)\n"
        "ok = effect.setPythonSource({path!r})\n"
        "assert ok and not effect.errors, effect.errors\n"
        "effect.self().register()\n"
        "from SynthFMSegmentLib.dependencies import ensure_dependencies\n"  # what SynthFM Train imports next
        "print([e.name for e in slicer.qSlicerSegmentEditorEffectFactory.instance().effects])\n"
    ).format(standin=str(ROOT / "Testing" / "slicer_standin"), seg=str(ROOT / "SynthFMSegment"), root=str(ROOT),
             path=(ROOT / "SynthFMSegment" / "SynthFMSegmentLib" / "SegmentEditorEffect.py").as_posix())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['SynthFM']"


def test_train_panel_opens_without_torch_and_offers_to_install_it():
    """Before torch is installed (a fresh Slicer with the extension just added) both panels open, and the first
    press of Train asks to install what is missing; nothing imports torch on the way."""
    result = fresh_slicer("--hide", "torch", "--hide", "torchvision", "--hide", "segment_anything",
                          "--open", "SynthFMTrain", "--open", "SynthFMSegment", "--click", "SynthFMTrain.startButton")
    assert result["errors"] == [] and result["opened"] == ["SynthFMTrain", "SynthFMSegment"]
    assert result["effects"] == ["SynthFM"] and "torch" not in result["loaded"]
    assert result["messages"][0].startswith("SynthFM needs these Python packages: torch, torchvision, segment_anything")
    assert "cannot run without them" in result["messages"][-1]  # the user declined: told how to retry
