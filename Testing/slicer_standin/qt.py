"""Minimal ``qt`` (PythonQt) stand-in: the widgets, QTimer and QSettings the SynthFM modules touch.

Signals are plain callback lists; ``QTimer`` does not run by itself: tests call ``fire()`` as the event
loop would.  QSettings is one in-memory store shared by all instances, like Slicer's settings file.
"""
from __future__ import annotations


class Signal:
    def __init__(self) -> None:
        self._slots: list = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)


class QObject:
    def __init__(self, *args) -> None:
        pass


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

    def addItems(self, items) -> None:
        self.items.extend(items)
        self.currentText = self.currentText or (self.items[0] if self.items else "")

    def setCurrentText(self, text: str) -> None:
        if text in self.items:
            self.currentText = text
            self.currentTextChanged.emit(text)


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path


class QFormLayout(QWidget):
    pass
