"""First-use installation of Python packages inside Slicer, always after asking the user.

torch comes from the PyTorch Utils extension (``slicer.modules.pytorchutils`` /
``PyTorchUtils.PyTorchUtilsLogic().installTorch``), which picks the right CUDA build; the rest of the
core's dependencies with ``slicer.util.pip_install``.
"""
from __future__ import annotations

import importlib.util

import slicer

PIP_PACKAGES = {"numpy": "numpy", "scipy": "scipy", "SimpleITK": "SimpleITK", "tqdm": "tqdm",
                "segment_anything": "segment-anything", "synthfm": "synthfm"}


def missing_packages() -> list:
    return [name for name in ["torch", *PIP_PACKAGES] if importlib.util.find_spec(name) is None]


def ensure_dependencies() -> bool:
    """True when everything imports; otherwise ask, install, and report what to do on failure."""
    missing = missing_packages()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"SynthFM needs these Python packages: {', '.join(missing)}. Install them now (a few minutes)?"):
        slicer.util.errorDisplay("SynthFM cannot run without them. Activate the effect again to install.")
        return False
    try:
        if "torch" in missing:
            if not hasattr(slicer.modules, "pytorchutils"):
                slicer.util.errorDisplay("Install the 'PyTorch' extension from the Extensions Manager, restart "
                                         "Slicer and activate SynthFM again.")
                return False
            import PyTorchUtils

            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
                raise RuntimeError("PyTorch Utils could not install torch")
        for name in missing:
            if name != "torch":
                slicer.util.pip_install(PIP_PACKAGES[name])
    except Exception as exc:  # noqa: BLE001
        slicer.util.errorDisplay(f"Installing {', '.join(missing)} failed: {exc}\nCheck the internet connection "
                                 f"or install from the Python console: slicer.util.pip_install('<package>').")
        return False
    return not missing_packages()
