"""Start the stand-in the way Slicer starts, in a fresh interpreter: nothing imported beforehand.

Run as ``python Testing/slicer_standin/fresh_start.py [--slicer 5.8] [--block torch] [--open SynthFMTrain]``;
prints one JSON line: the registered effects, errors PythonQt would print, the opened module panels.

What Slicer does, in order (Base/QTCore/qSlicerScriptedUtils.cxx, qSlicerScriptedLoadableModule.cxx):
1. the qt-scripted-modules folder is on ``sys.path`` (every module folder here, and the core package beside them);
2. each module file ``<Name>.py`` is run as module ``<Name>`` (``loadSourceAsModule``: spec_from_file_location)
   and ``<Name>(parent)`` is instantiated;
3. ``slicer.app.startupCompleted`` fires;
4. a module panel is set up when the user opens it (``<Name>Widget(parent).setup()``).
``--block`` makes ``import <name>`` fail as it does before the package is installed.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SynthFMSegment", "SynthFMTrain")


class Blocker(importlib.abc.MetaPathFinder):
    """Pretend the named top-level packages are not installed."""

    def __init__(self, names) -> None:
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)
        return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slicer", default="5.12", help="Slicer version to play (loader differences)")
    parser.add_argument("--block", action="append", default=[], help="package that is not installed")
    parser.add_argument("--open", action="append", default=[], help="module panel the user opens")
    parser.add_argument("--preimport", action="append", default=[], help="module imported before startup")
    args = parser.parse_args(argv)
    sys.meta_path.insert(0, Blocker(args.block))
    sys.path[:0] = [str(ROOT / "Testing" / "slicer_standin"), *(str(ROOT / m) for m in MODULES), str(ROOT)]
    import slicer

    slicer.app.majorVersion, slicer.app.minorVersion = (int(v) for v in args.slicer.split("."))
    result = {"errors": [], "effects": [], "opened": [], "modules": []}
    for name in args.preimport:
        __import__(name)
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
    for name in args.open:  # step 4
        try:
            widget = getattr(sys.modules[name], f"{name}Widget")()
            widget.setup()
            result["opened"].append(name)
        except Exception:  # noqa: BLE001
            result["errors"].append(traceback.format_exc())
    result["messages"] = list(slicer.editor.messages)
    result["loaded"] = sorted(m for m in ("torch", "synthfm.models", "synthfm.train") if m in sys.modules)
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
