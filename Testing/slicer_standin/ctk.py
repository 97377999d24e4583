"""Stand-in for CTK's Python module: the ctk widgets the SynthFM module panels build (CTK/Libs/Widgets)."""
import qt


class ctkCollapsibleButton(qt.QWidget):
    """``collapsed`` (expanded at first); a change emits ``contentsCollapsed(bool)`` (ctkCollapsibleButton::collapse)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.contentsCollapsed = qt.Signal()
        self._collapsed = False

    @property
    def collapsed(self) -> bool:
        return self._collapsed

    @collapsed.setter
    def collapsed(self, collapsed: bool) -> None:
        if bool(collapsed) != self._collapsed:
            self._collapsed = bool(collapsed)
            if not self.signalsBlocked():
                self.contentsCollapsed.emit(self._collapsed)


class ctkPathLineEdit(qt.QWidget):
    """``currentPath`` is its line edit's text: a change (set in code, or each key the user types) emits
    ``currentPathChanged(QString)`` (textChanged -> updateHasValidInput; without nameFilters every text is valid)."""

    Dirs, Files = 0x1, 0x2

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.currentPathChanged = qt.Signal()
        self._path, self.filters = "", self.Files

    @property
    def currentPath(self) -> str:
        return self._path

    @currentPath.setter
    def currentPath(self, path: str) -> None:
        if path != self._path:
            self._path = path
            if not self.signalsBlocked():
                self.currentPathChanged.emit(path)

    def setCurrentPath(self, path: str) -> None:
        self.currentPath = path
