"""SynthFMTrain logic: synthetic previews into the scene, training in its own process, live plots, registration,
and the user's segmentations as fine-tuning data (volume + segmentation node -> synthfm.train.UserCase).

Training runs in a separate process (Slicer's Python running ``train_process.py``, started with ``qt.QProcess``
as the most used AI extensions start theirs): Slicer never enables PythonQt's thread support, so a Python thread
would barely run while the GUI idles.  :class:`TrainingProcess` reads what that process writes (one JSON object
per line) when the panel's QTimer polls it.  All training goes through :func:`synthfm.train.train`.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

import slicer
from SynthFMTrainLib.train_process import EVENTS, JOB, STOP
from synthfm.io.atomic import atomic_path, atomic_write_text

CURVES = ("loss", "dice")
RUNNER = Path(__file__).resolve().with_name("train_process.py")
JOB_FOLDER = "slicer-job"  # inside the run's output folder


def python_executable() -> str:
    """Slicer's own Python (``PythonSlicer``; inside Slicer ``sys.executable`` is Slicer itself)."""
    return shutil.which("PythonSlicer") or sys.executable


class TrainingProcess:
    """One training run in its own process; call :meth:`poll` from a QTimer on the GUI thread."""

    def __init__(self, folder: Path, process) -> None:
        self.folder, self.process = folder, process
        self.step, self.total, self.message = 0, 0, ""
        self.checkpoint: Optional[Path] = None
        self.error: Optional[str] = None
        self.cancelled, self.cancel_reason, self.finished = False, "", False
        self.history: Dict[str, List[float]] = {"step": [], **{k: [] for k in CURVES}}
        self.started = time.monotonic()
        self._offset, self._first_step = 0, None

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    @property
    def running(self) -> bool:
        """True until the process has ended and its last event was read."""
        return not self.finished

    def _read_events(self) -> List[dict]:
        """Complete lines appended to events.jsonl since the last call."""
        path = self.folder / EVENTS
        if not path.is_file():
            return []
        with open(path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        self._offset += end
        return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]

    def poll(self) -> List[dict]:
        """Apply what the process wrote since the last poll (GUI thread); returns those events."""
        exited = self.process.state() == self.process.NotRunning  # read before the events: none can follow
        events = self._read_events()
        for event in events:
            kind = event["kind"]
            if kind in ("progress", "data"):
                self.step, self.total, self.message = event["done"], event["total"], event["message"]
                if kind == "data":
                    self.message = f"{event['message']} {event['done']}/{event['total']}"
            elif kind == "metrics":
                self._first_step = self._first_step or (event["step"], time.monotonic())
                self.history["step"].append(event["step"])
                for k in CURVES:
                    self.history[k].append(float(event["metrics"][k]))
            elif kind == "done":
                self.checkpoint = Path(event["checkpoint"])
            elif kind == "cancelled":
                self.cancelled, self.cancel_reason = True, event["reason"]
            elif kind == "error":
                self.error = event["message"]
        if exited and not self.finished:
            self.finished = True
            if self.checkpoint is None and not self.cancelled and self.error is None:
                self.error = (f"the training process ended unexpectedly (exit code {self.process.exitCode()}); "
                              f"its output is in {self.log}:\n{self._log_tail()}")
        return events

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cancel(self) -> None:
        """Ask the process to stop after the current step; it saves its checkpoint first (resume continues)."""
        (self.folder / STOP).touch()

    def stop(self, wait_ms: int = 30000) -> None:
        """Cancel and wait for the checkpoint to be written; kill the process if it does not end in time."""
        if self.process.state() == self.process.NotRunning:
            return
        self.cancel()
        if not self.process.waitForFinished(wait_ms):
            self.process.kill()
            self.process.waitForFinished(2000)

    def eta_seconds(self) -> Optional[float]:
        """Remaining time from the pace of the steps trained by this process (None before two steps)."""
        if self._first_step is None or not self.total or self.step <= self._first_step[0]:
            return None
        pace = (time.monotonic() - self._first_step[1]) / (self.step - self._first_step[0])
        return pace * max(0, self.total - self.step)


class SynthFMTrainLogic:
    """Everything the SynthFMTrain panel does, usable from Slicer's Python console."""

    def preview(self, preset: str = "mixed", seed: int = 0, index: int = 0, overrides: Optional[dict] = None):
        """Generate one synthetic volume into the scene: (scalar volume node, segmentation node)."""
        from synthfm.generate import GeneratorConfig, SyntheticGenerator

        sample = SyntheticGenerator(GeneratorConfig.from_preset(preset, **(overrides or {})), seed).sample_3d(index)
        volume = sample.to_volume()
        name = f"SynthFM {preset} seed {seed} #{index}"
        volume_node = slicer.util.addVolumeFromArray(sample.image.astype(np.float32), volume.ijk_to_ras_matrix(), name)
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name + " target")
        seg.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segment_id = seg.GetSegmentation().AddEmptySegment("target")
        slicer.util.updateSegmentBinaryLabelmapFromArray(sample.mask.astype(np.uint8), seg, segment_id, volume_node)
        return volume_node, seg

    def train_config(self, out: str, model: str = "synthfm-lite", preset: str = "mixed", samples: int = 200,
                     steps: int = 500, seed: int = 0, device: str = "cpu", time_budget_min: Optional[float] = None,
                     overrides: Optional[dict] = None, **extra):
        """A validated :class:`synthfm.train.TrainConfig` (raises ValueError naming a bad setting)."""
        from synthfm.train import TrainConfig

        config = TrainConfig(model=model, preset=preset, samples=samples, steps=steps, seed=seed, device=device,
                             time_budget_min=time_budget_min, out=str(out), generator=dict(overrides or {}), **extra)
        config.validate()
        return config

    @staticmethod
    def segment_ids(segmentation_node) -> List[str]:
        """IDs of all segments of a segmentation node, in order."""
        segmentation = segmentation_node.GetSegmentation()
        return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]

    def user_case(self, volume_node, segmentation_node, segment_ids: Optional[List[str]] = None):
        """The volume and chosen segments (default: all) as a :class:`synthfm.train.UserCase` for fine-tuning:
        ``arrayFromVolume`` (grey for a colour volume) and each segment exported on the volume's grid
        (``arrayFromSegmentBinaryLabelmap``) into one labelmap, segment ``n`` (in the given order) -> label ``n``; a
        later segment wins where segments overlap. Pass the result in ``train_config(..., user_data=[case, ...])``."""
        from synthfm.train import UserCase

        if volume_node is None or segmentation_node is None:
            raise ValueError("choose a volume and a segmentation to fine-tune on")
        ids = list(segment_ids) if segment_ids else self.segment_ids(segmentation_node)
        if not ids:
            raise ValueError(f"segmentation '{segmentation_node.GetName()}' has no segments; draw the structures "
                             "to learn first (Segment Editor)")
        from SynthFMSegmentLib.geometry import voxels

        image = np.array(voxels(volume_node), np.float32)  # a copy the process is sent (a colour volume: its grey)
        label = np.zeros(image.shape, np.int16)
        for value, segment_id in enumerate(ids, start=1):
            if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
                raise ValueError(f"segment '{segment_id}' is not in segmentation '{segmentation_node.GetName()}'")
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)
            label[mask > 0] = value
        return UserCase(image, label, labels=list(range(1, len(ids) + 1)),
                        name=f"{volume_node.GetName()} / {segmentation_node.GetName()}")

    def start(self, config, resume: bool = True) -> TrainingProcess:
        """Start training ``config`` in its own process (Slicer's Python); poll the returned object."""
        import qt

        from synthfm.utils.run_lock import RunLock

        with RunLock(config.out, "SynthFM Train in 3D Slicer"):
            pass  # a run using this folder (another panel, `synthfm train`) is refused here, before its files go
        folder = Path(config.out) / JOB_FOLDER
        if folder.is_dir():
            shutil.rmtree(folder)  # the previous run's events and STOP request (the checkpoint is in config.out)
        folder.mkdir(parents=True)
        settings = {k: v for k, v in config.to_dict().items() if k != "user_data"}
        for n, case in enumerate(config.user_data):  # the process gets the voxels, not the scene
            np.savez(folder / f"user_case_{n}.npz", image=case.image, label=case.label,
                     labels=np.asarray(case.labels if case.labels is not None else [], int), name=case.name)
        atomic_write_text(folder / JOB, json.dumps({"config": settings, "resume": resume, "parent_pid": os.getpid()}))
        process = qt.QProcess()
        process.setProgram(python_executable())
        process.setArguments([str(RUNNER), str(folder)])
        environment = qt.QProcessEnvironment.systemEnvironment()
        core = str(Path(__import__("synthfm").__file__).resolve().parents[1])  # the folder holding the core package
        environment.insert("PYTHONPATH", os.pathsep.join(p for p in (core, environment.value("PYTHONPATH")) if p))
        process.setProcessEnvironment(environment)
        process.setStandardOutputFile(str(folder / "log.txt"))
        process.setStandardErrorFile(str(folder / "log.txt"))
        process.start()
        if not process.waitForStarted(30000):
            raise RuntimeError(f"could not start the training process ({python_executable()}); check that Slicer's "
                               "Python (PythonSlicer) is installed next to Slicer")
        return TrainingProcess(folder, process)

    def create_chart(self, name: str = "SynthFM training"):
        """A table (step, loss, dice) with one line series per curve and a chart showing them."""
        import vtk

        table_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name + " table")
        table = table_node.GetTable()
        for column in ("step",) + CURVES:
            array = vtk.vtkFloatArray()
            array.SetName(column)
            table.AddColumn(array)
        chart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.SetTitle(name)
        chart.SetXAxisTitle("step")
        for column in CURVES:
            series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            series.SetAndObserveTableNodeID(table_node.GetID())
            series.SetXColumnName("step")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeLine)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return table_node, chart

    def update_chart(self, table_node, history: Dict[str, List[float]]) -> None:
        """Append the rows of ``history`` not yet in the table."""
        table = table_node.GetTable()
        for row in range(table.GetNumberOfRows(), len(history["step"])):
            table.InsertNextBlankRow()
            for col, column in enumerate(("step",) + CURVES):
                table.SetValue(row, col, float(history[column][row]))
        table.Modified()
        table_node.Modified()

    def register(self, checkpoint: Path, name: str) -> Path:
        """Copy a trained decoder into the user models folder (``synthfm.models.user_models_dir``), with a
        model card ``<name>.md``; the SynthFM effect lists it by ``name`` at once."""
        from synthfm.models import user_models_dir
        from synthfm.models.checkpoint import load_decoder_checkpoint
        from synthfm.train.model_card import model_card

        if not name or any(c in name for c in "/\\:") or name.startswith("."):
            raise ValueError(f"model name '{name}' is not a plain file name; use letters, digits, '-' or '_'")
        _, meta = load_decoder_checkpoint(checkpoint)
        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.pt"
        with atomic_path(target) as tmp:
            shutil.copyfile(checkpoint, tmp)
        atomic_write_text(folder / f"{name}.md", model_card(name, meta))
        return target

