"""First-use installs: always asked first; torch through PyTorch Utils, the rest with pip; clear messages."""
import importlib.util

import pytest

import slicer
from slicer import editor
from SynthFMSegmentLib import dependencies


@pytest.fixture()
def absent(monkeypatch):
    """Pretend the named modules are not installed (until ``installed`` says otherwise)."""
    names, real = set(), importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))
    editor.messages.clear()
    return names


def test_nothing_missing_asks_nothing(absent):
    assert dependencies.ensure_dependencies() and editor.messages == []


def test_declined_install_says_how_to_retry(absent, monkeypatch):
    absent.add("segment_anything")
    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", installs.append)
    assert not dependencies.ensure_dependencies()
    assert "segment_anything" in editor.messages[0] and "Activate the effect again" in editor.messages[-1]
    assert installs == []  # never installs without asking


def test_accepted_install_uses_pip_for_packages_and_pytorch_utils_for_torch(absent, monkeypatch):
    absent.update({"torch", "torchvision", "segment_anything"})
    calls = []

    class Logic:
        """PyTorchUtils.PyTorchUtilsLogic.installTorch's signature (github.com/fepegar/SlicerPyTorch)."""

        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            calls.append(("torch", askConfirmation, torchVersionRequirement, torchvisionVersionRequirement))
            absent.difference_update({"torch", "torchvision"})
            return object()

    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: True)
    monkeypatch.setattr(slicer.util, "pip_install", lambda req: (calls.append(("pip", req)), absent.discard(
        req.replace("-", "_"))))
    monkeypatch.setattr(slicer.modules, "pytorchutils", object(), raising=False)
    monkeypatch.setitem(__import__("sys").modules, "PyTorchUtils", type("M", (), {"PyTorchUtilsLogic": Logic}))
    assert dependencies.ensure_dependencies()
    assert calls == [("torch", False, ">=2.1", ">=0.16"), ("pip", "segment-anything")]  # pyproject's requirements
    pyproject = (__import__("pathlib").Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"torch>=2.1"' in pyproject and '"torchvision>=0.16"' in pyproject


def test_torch_without_the_pytorch_extension_names_the_extension(absent, monkeypatch):
    absent.add("torch")
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: True)
    monkeypatch.delattr(slicer.modules, "pytorchutils", raising=False)
    assert not dependencies.ensure_dependencies()
    assert "'PyTorch' extension from the Extensions Manager" in editor.messages[-1]


def test_failed_pip_install_and_missing_core_are_explained(absent, monkeypatch):
    absent.add("tqdm")
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: True)
    assert not dependencies.ensure_dependencies()  # the stand-in's pip_install raises, like an offline Slicer
    assert "Installing tqdm failed" in editor.messages[-1] and "pip_install" in editor.messages[-1]
    absent.add("synthfm")
    assert not dependencies.ensure_dependencies()
    assert "Reinstall SynthFM from the Extensions Manager" in editor.messages[-1]
