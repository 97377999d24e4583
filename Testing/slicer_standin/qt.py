"""Minimal ``qt`` (PythonQt) stand-in: the widgets, QTimer, QSettings, QStandardPaths, QPoint and QVector3D the SynthFM
modules touch.

Signals are plain callback lists, also reachable PythonQt's way (``widget.connect("clicked()", slot)``);
``QTimer`` does not run by itself: tests call ``fire()`` as the event loop would.  QSettings is one in-memory
store shared by all instances, like Slicer's settings file.  QComboBox emits ``currentTextChanged`` from
``addItems`` (the first item becomes current) and ``clear`` (current text becomes ""), as Qt does; its
``activated(int)`` is emitted only when the user chooses an item (Qt: even the current one), never by a change
made in code, so tests emit it themselves after ``setCurrentText``, in Qt's order.
``QProcess`` runs a real process (subprocess), its state read when asked, as after the event loop ran.
"""
from __future__ import annotations

import os
import subprocess
import tempfile


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

    def connect(self, signature: str, slot) -> None:
        """PythonQt's string form: ``obj.connect("clicked()", slot)`` connects the signal named before '('."""
        signal = getattr(self, signature.split("(")[0], None)
        if not isinstance(signal, Signal):
            raise AttributeError(f"{type(self).__name__} has no signal {signature}")
        signal.connect(slot)

    def blockSignals(self, block: bool) -> bool:
        was, self._blocked = getattr(self, "_blocked", False), bool(block)
        return was

    def signalsBlocked(self) -> bool:
        return getattr(self, "_blocked", False)


class Qt:
    NonModal, WindowModal, ApplicationModal = 0, 1, 2
    WaitCursor = 16
    ToolButtonIconOnly, ToolButtonTextOnly, ToolButtonTextBesideIcon, ToolButtonTextUnderIcon = 0, 1, 2, 3


class QTimer(QObject):
    """A single-shot timer (``setSingleShot(True)``) stops before it emits ``timeout``, as QTimer::timerEvent."""

    def __init__(self, *args) -> None:
        self.timeout, self.active, self.interval, self.single = Signal(), False, 0, False

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def setSingleShot(self, single: bool) -> None:
        self.single = bool(single)

    def isSingleShot(self) -> bool:
        return self.single

    def start(self, *args) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    def fire(self) -> None:
        """What Qt's event loop does when the interval has passed."""
        if self.active:
            if self.single:
                self.active = False
            self.timeout.emit()


class QSettings(QObject):
    store: dict = {}

    def value(self, key: str, default=None):
        return QSettings.store.get(key, default)

    def setValue(self, key: str, value) -> None:
        QSettings.store[key] = value


class QStandardPaths:
    """``QStandardPaths.writableLocation`` (static) as Qt gives it in Slicer on Linux (organization and application
    names "slicer.org" and "Slicer": qSlicerCoreApplication), under ``home``: a folder of the stand-in's, not the
    user's home. Qt's enum value; only the location SynthFM uses (another raises); like Qt, nothing is created."""

    CacheLocation = 10
    home = os.path.join(tempfile.gettempdir(), "synthfm-slicer-standin-home")

    @staticmethod
    def writableLocation(location: int) -> str:
        folders = {QStandardPaths.CacheLocation: os.path.join(".cache", "slicer.org", "Slicer")}
        return os.path.join(QStandardPaths.home, folders[location])


class QWidget(QObject):
    def __init__(self, *args) -> None:
        self.text = args[0] if args and isinstance(args[0], str) else ""
        self.children: list = []
        self.enabled, self.visible = True, True

    def addWidget(self, widget) -> None:
        self.children.append(widget)

    def addStretch(self, stretch: int = 0) -> None:
        pass

    def setToolTip(self, text: str) -> None:
        self.toolTip = text

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)


class QLabel(QWidget):
    pass


class QPushButton(QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.clicked = Signal()
        self.checkable, self.checked = False, False

    def click(self) -> None:
        """What a user's click does: nothing on a disabled button."""
        if self.enabled:
            if self.checkable:
                self.checked = not self.checked
            self.clicked.emit()


class QToolButton(QPushButton):
    """QToolButton: an icon (``setIcon`` / ``setIconSize``) and text placed by ``setToolButtonStyle``."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.icon, self.iconSize, self.toolButtonStyle = QIcon(), QSize(16, 16), Qt.ToolButtonIconOnly

    def setIcon(self, icon: "QIcon") -> None:
        if not isinstance(icon, QIcon):
            raise TypeError(f"setIcon takes a QIcon, not {type(icon).__name__}")
        self.icon = icon

    def setIconSize(self, size: "QSize") -> None:
        if not isinstance(size, QSize):
            raise TypeError(f"setIconSize takes a QSize, not {type(size).__name__}")
        self.iconSize = size

    def setToolButtonStyle(self, style: int) -> None:
        self.toolButtonStyle = style

    def setText(self, text: str) -> None:
        self.text = text


class QFrame(QWidget):
    pass


class QHBoxLayout(QObject):
    """A row of widgets; ``QHBoxLayout(parent)`` lays out ``parent`` (it becomes the parent's children)."""

    def __init__(self, parent=None) -> None:
        self.widgets: list = []
        if parent is not None:
            parent.layout = self

    def addWidget(self, widget) -> None:
        self.widgets.append(widget)

    def addStretch(self, stretch: int = 0) -> None:
        pass


class QCheckBox(QPushButton):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.checkable = True
        self.toggled = Signal()


class QLineEdit(QWidget):
    pass


class QProgressBar(QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.minimum, self.maximum, self.value = 0, 100, 0


class QSpinBox(QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.minimum, self.maximum, self.value = 0, 99, 0

    def setRange(self, lo, hi) -> None:
        self.minimum, self.maximum = lo, hi

    def setSingleStep(self, step) -> None:
        self.singleStep = step

    def setSuffix(self, suffix: str) -> None:
        self.suffix = suffix


class QDoubleSpinBox(QSpinBox):
    """Qt's defaults (range 0 to 99.99, 2 decimals, keyboardTracking); a value set (``value = x``, ``setValue``,
    ``setRange``, ``setDecimals``) is rounded to ``decimals`` and bounded to the range, and ``valueChanged(double)``
    is emitted when it changed (QAbstractSpinBoxPrivate::setValue with EmitIfChanged)."""

    def __init__(self, *args) -> None:
        QWidget.__init__(self, *args)
        self.valueChanged = Signal()
        self.minimum, self.maximum, self.decimals, self._value = 0.0, 99.99, 2, 0.0
        self.singleStep, self.keyboardTracking = 1.0, True

    @property
    def value(self) -> float:
        return self._value

    @value.setter
    def value(self, value: float) -> None:
        value = min(max(round(float(value), self.decimals), self.minimum), self.maximum)
        if value != self._value:
            self._value = value
            if not self.signalsBlocked():
                self.valueChanged.emit(value)

    def setValue(self, value: float) -> None:
        self.value = value

    def setRange(self, lo, hi) -> None:
        self.minimum = round(float(lo), self.decimals)
        self.maximum = max(self.minimum, round(float(hi), self.decimals))
        self.value = self._value

    def setDecimals(self, decimals: int) -> None:
        self.decimals = int(decimals)
        self.setRange(self.minimum, self.maximum)


class QAbstractItemView(QWidget):
    SingleSelection, MultiSelection, ExtendedSelection = 1, 2, 3


class QComboBox(QWidget):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.items: list = []
        self.currentText = ""
        self.currentTextChanged = Signal()
        self.activated = Signal()  # activated(int): only a user's choice emits it (even of the current item)

    def _set_current(self, text: str) -> None:
        if text != self.currentText:
            self.currentText = text
            if not self.signalsBlocked():
                self.currentTextChanged.emit(text)

    def clear(self) -> None:
        self.items = []
        self._set_current("")

    def addItems(self, items) -> None:
        self.items.extend(items)
        if not self.currentText and self.items:
            self._set_current(self.items[0])

    def addItem(self, item: str) -> None:
        self.addItems([item])

    def findText(self, text: str) -> int:
        return self.items.index(text) if text in self.items else -1

    def setCurrentText(self, text: str) -> None:
        if text in self.items:
            self._set_current(text)


class QProcessEnvironment:
    def __init__(self, env=None) -> None:
        self.env = dict(env or {})

    @staticmethod
    def systemEnvironment() -> "QProcessEnvironment":
        return QProcessEnvironment(os.environ)

    def insert(self, name: str, value: str) -> None:
        self.env[name] = value

    def value(self, name: str, default: str = "") -> str:
        return self.env.get(name, default)


class QProcess(QObject):
    """A real child process (subprocess.Popen); ``state()`` is what Qt knows once its event loop ran."""

    NotRunning, Starting, Running = 0, 1, 2
    NormalExit, CrashExit = 0, 1

    def __init__(self, *args) -> None:
        self.program, self.arguments, self.environment, self.popen = "", [], None, None
        self.stdout_file = self.stderr_file = None

    def setProgram(self, program: str) -> None:
        self.program = program

    def setArguments(self, arguments) -> None:
        self.arguments = [str(a) for a in arguments]

    def setProcessEnvironment(self, environment: QProcessEnvironment) -> None:
        self.environment = environment

    def setStandardOutputFile(self, path: str) -> None:
        self.stdout_file = path

    def setStandardErrorFile(self, path: str) -> None:
        self.stderr_file = path

    def start(self) -> None:
        out = open(self.stdout_file, "ab") if self.stdout_file else subprocess.DEVNULL
        err = open(self.stderr_file, "ab") if self.stderr_file else subprocess.DEVNULL
        try:
            self.popen = subprocess.Popen([self.program, *self.arguments], stdout=out, stderr=err,
                                          env=self.environment.env if self.environment else None)
        except OSError:
            self.popen = None
        finally:
            for f in (out, err):
                if f is not subprocess.DEVNULL:
                    f.close()

    def waitForStarted(self, msecs: int = 30000) -> bool:
        return self.popen is not None

    def waitForFinished(self, msecs: int = 30000) -> bool:
        if self.popen is None:
            return False
        try:
            self.popen.wait(msecs / 1000)
        except subprocess.TimeoutExpired:
            return False
        return True

    def state(self) -> int:
        return self.Running if self.popen is not None and self.popen.poll() is None else self.NotRunning

    def processId(self) -> int:
        return self.popen.pid if self.popen is not None else 0

    def exitCode(self) -> int:
        return self.popen.returncode if self.popen is not None and self.popen.returncode is not None else 0

    def terminate(self) -> None:
        if self.state() == self.Running:
            self.popen.terminate()

    def kill(self) -> None:
        if self.state() == self.Running:
            self.popen.kill()


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


class QSize:
    def __init__(self, width: int = -1, height: int = -1) -> None:
        if not all(isinstance(v, int) for v in (width, height)):
            raise TypeError(f"QSize({width!r}, {height!r}): arguments must be int")
        self._w, self._h = width, height

    def width(self) -> int:
        return self._w

    def height(self) -> int:
        return self._h


class QImage:
    """A QImage: null when made without arguments (what ``qMRMLUtils.vtkImageDataToQImage`` fills in place).
    ``pixels`` (H, W, C) uint8, rows from the top down, is the stand-in's own view for tests (not Qt API)."""

    def __init__(self) -> None:
        self.pixels = None

    def isNull(self) -> bool:
        return self.pixels is None

    def width(self) -> int:
        return 0 if self.pixels is None else int(self.pixels.shape[1])

    def height(self) -> int:
        return 0 if self.pixels is None else int(self.pixels.shape[0])


class QPixmap:
    def __init__(self) -> None:
        self.image = QImage()

    @staticmethod
    def fromImage(image: QImage) -> "QPixmap":
        if not isinstance(image, QImage):
            raise TypeError(f"QPixmap.fromImage takes a QImage, not {type(image).__name__}")
        pixmap = QPixmap()
        pixmap.image = image
        return pixmap

    def isNull(self) -> bool:
        return self.image.isNull()

    def width(self) -> int:
        return self.image.width()

    def height(self) -> int:
        return self.image.height()


class QIcon:
    """QIcon(fileName) or QIcon(pixmap)."""

    def __init__(self, source="") -> None:
        if not isinstance(source, (str, QPixmap)):
            raise TypeError(f"QIcon takes a file name or a QPixmap, not {type(source).__name__}")
        self.path = source if isinstance(source, str) else ""
        self.pixmap = source if isinstance(source, QPixmap) else None

    def isNull(self) -> bool:
        return self.pixmap.isNull() if self.pixmap is not None else not self.path


class QFormLayout(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__()
        self.rows: list = []

    def addRow(self, label, widget=None) -> None:
        self.rows.append((label, widget))
