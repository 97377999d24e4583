"""Stand-in for slicer.ScriptedLoadableModule (Slicer/Base/Python/slicer/ScriptedLoadableModule.py)."""
from __future__ import annotations

import unittest


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        import qt

        self.parent, self.layout = parent, qt.QFormLayout()

    def setup(self) -> None:
        pass


class ScriptedLoadableModuleLogic:
    pass


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, msec: int = 1000) -> None:
        print(message)
