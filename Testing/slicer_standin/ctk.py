"""Stand-in for CTK's Python module: the ctk widgets the SynthFM module panels build (CTK/Libs/Widgets)."""
import qt


class ctkCollapsibleButton(qt.QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.collapsed = False


class ctkPathLineEdit(qt.QWidget):
    Dirs, Files = 0x1, 0x2

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.currentPath, self.filters = "", self.Files
