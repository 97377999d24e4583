"""Start the stand-in the way Slicer starts, in a fresh interpreter: nothing imported beforehand.

Run as ``python Testing/slicer_standin/fresh_start.py [--slicer 5.8] [--hide torch] [--open SynthFMTrain]
[--click SynthFMTrain.startButton]``; prints one JSON line: the registered effects, errors PythonQt would print,
the opened module panels, the messages shown to the user.

What Slicer does, in order (Base/QTCore/qSlicerScriptedUtils.cxx, qSlicerScriptedLoadableModule.cxx):
1. the qt-scripted-modules folder is on ``sys.path`` (every module folder here, and the core package beside them);
2. each module file ``<Name>.py`` is run as module ``<Name>`` (``loadSourceAsModule``: spec_from_file_location)
   and ``<Name>(parent)`` is instantiated;
3. ``slicer.app.startupCompleted`` fires;
4. a module panel is set up when the user opens it (``<Name>Widget(parent).setup()``).
``--hide`` removes installed packages from view as if they had never been installed (site-packages is replaced
by a folder of links to everything else), so both ``import`` and ``importlib.util.find_spec`` miss them.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SynthFMSegment", "SynthFMTrain")


def hide_packages(names) -> None:
    """Replace every site-packages folder on sys.path by links to its entries, minus the packages ``names``
    (their import folders and their ``.dist-info``)."""
    pattern = re.compile(r"^(%s)([-_.].*)?$" % "|".join(re.escape(n) for n in names), re.I)
    farm = tempfile.mkdtemp(prefix="site-without-")
    for i, entry in enumerate(list(sys.path)):
        if os.path.basename(entry) == "site-packages" and os.path.isdir(entry):
            for item in os.listdir(entry):
                if not pattern.match(item) and not os.path.exists(os.path.join(farm, item)):
                    os.symlink(os.path.join(entry, item), os.path.join(farm, item))
            sys.path[i] = farm
    importlib.invalidate_caches()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slicer", default="5.12", help="Slicer version to play (loader differences)")
    parser.add_argument("--hide", action="append", default=[], help="package that is not installed")
    parser.add_argument("--open", action="append", default=[], help="module panel the user opens")
    parser.add_argument("--click", action="append", default=[], help="Module.button the user then clicks")
    args = parser.parse_args(argv)
    if args.hide:
        hide_packages(args.hide)
    sys.path[:0] = [str(ROOT / "Testing" / "slicer_standin"), *(str(ROOT / m) for m in MODULES), str(ROOT)]
    import slicer

    slicer.app.majorVersion, slicer.app.minorVersion = (int(v) for v in args.slicer.split("."))
    result = {"errors": [], "effects": [], "opened": [], "modules": []}
    for name in MODULES:  # step 2
        try:
            spec = importlib.util.spec_from_file_location(name, str(ROOT / name / f"{name}.py"))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            getattr(module, name)(type("Parent", (), {})())
            result["modules"].append(name)
        except Exception:  # noqa: BLE001  Slicer logs it and goes on with the other modules
            result["errors"].append(traceback.format_exc())
    for signal, slot in list(slicer.app.connections):  # step 3
        if signal == "startupCompleted()":
            try:
                slot()
            except Exception:  # noqa: BLE001
                result["errors"].append(traceback.format_exc())
    factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
    result["effects"] = [e.name for e in factory.effects]
    result["errors"] += [err for e in factory.effects for err in e.errors]
    widgets = {}
    for name in args.open:  # step 4
        try:
            widgets[name] = getattr(sys.modules[name], f"{name}Widget")()
            widgets[name].setup()
            result["opened"].append(name)
        except Exception:  # noqa: BLE001
            result["errors"].append(traceback.format_exc())
    for target in args.click:
        module, button = target.split(".")
        try:
            getattr(widgets[module], button).click()
        except Exception:  # noqa: BLE001  PythonQt prints what a slot raises
            result["errors"].append(traceback.format_exc())
    result["messages"] = list(slicer.editor.messages)
    result["loaded"] = sorted(m for m in ("torch", "synthfm.models", "synthfm.train") if m in sys.modules)
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
