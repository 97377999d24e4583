"""Minimal ``qt`` (PythonQt) stand-in: the widgets, QTimer, QSettings, QPoint and QVector3D the SynthFM modules touch.

Signals are plain callback lists; ``QTimer`` does not run by itself: tests call ``fire()`` as the event
loop would.  QSettings is one in-memory store shared by all instances, like Slicer's settings file.
"""
from __future__ import annotations


class Signal:
    def __init__(self) -> None:
        self._slots: list = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def disconnect(self, slot) -> None:
        self._slots.remove(slot)

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)


class QObject:
    def __init__(self, *args) -> None:
        pass

    def blockSignals(self, block: bool) -> bool:
        was, self._blocked = getattr(self, "_blocked", False), bool(block)
        return was

    def signalsBlocked(self) -> bool:
        return getattr(self, "_blocked", False)


class QTimer(QObject):
    def __init__(self, *args) -> None:
        self.timeout, self.active, self.interval = Signal(), False, 0

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def start(self, *args) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    def fire(self) -> None:
        """What Qt's event loop does when the interval has passed."""
        if self.active:
            self.timeout.emit()


class QSettings(QObject):
    store: dict = {}

    def value(self, key: str, default=None):
        return QSettings.store.get(key, default)

    def setValue(self, key: str, value) -> None:
        QSettings.store[key] = value


class QWidget(QObject):
    def __init__(self, *args) -> None:
        self.text = args[0] if args and isinstance(args[0], str) else ""
        self.children: list = []

    def addWidget(self, widget) -> None:
        self.children.append(widget)

    def setToolTip(self, text: str) -> None:
        self.toolTip = text


class QLabel(QWidget):
    pass


class QPushButton(QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.clicked = Signal()


class QComboBox(QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.items: list = []
        self.currentText = ""
        self.currentTextChanged = Signal()

    def clear(self) -> None:
        self.items, self.currentText = [], ""

    def addItems(self, items) -> None:
        self.items.extend(items)
        self.currentText = self.currentText or (self.items[0] if self.items else "")

    def setCurrentText(self, text: str) -> None:
        if text in self.items and text != self.currentText:
            self.currentText = text
            if not self.signalsBlocked():
                self.currentTextChanged.emit(text)


class QPoint:
    """PythonQt QPoint: integer coordinates only (VTK event positions are ints)."""

    def __init__(self, x: int = 0, y: int = 0) -> None:
        if not all(isinstance(v, int) for v in (x, y)):
            raise TypeError(f"QPoint({x!r}, {y!r}): arguments must be int")
        self._x, self._y = x, y

    def x(self) -> int:
        return self._x

    def y(self) -> int:
        return self._y


class QVector3D:
    def __init__(self, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> None:
        self._v = (float(x), float(y), float(z))

    def x(self) -> float:
        return self._v[0]

    def y(self) -> float:
        return self._v[1]

    def z(self) -> float:
        return self._v[2]


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path


class QFormLayout(QWidget):
    pass
