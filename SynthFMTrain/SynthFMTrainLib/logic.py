"""SynthFMTrain logic: synthetic previews into the scene, background training, live plots, registration,
and the user's segmentations as fine-tuning data (volume + segmentation node -> synthfm.train.UserCase).

All training goes through :func:`synthfm.train.train`; this file only converts between the core and
MRML nodes and moves progress from the worker thread to the GUI thread.
"""
from __future__ import annotations

import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

import slicer
from synthfm.io.atomic import atomic_path, atomic_write_text
from synthfm.utils.progress import CancelToken, Cancelled

CURVES = ("loss", "dice")


@dataclass
class TrainingJob:
    """One training run in a worker thread; call :meth:`poll` from a QTimer on the GUI thread."""

    config: object
    resume: bool = True
    cancel: CancelToken = field(default_factory=CancelToken)
    events: "queue.Queue" = field(default_factory=queue.Queue)
    step: int = 0
    total: int = 0
    message: str = ""
    checkpoint: Optional[Path] = None
    error: Optional[BaseException] = None
    cancelled: bool = False
    history: Dict[str, List[float]] = field(default_factory=lambda: {"step": [], **{k: [] for k in CURVES}})
    started: float = field(default_factory=time.monotonic)

    def start(self) -> "TrainingJob":
        self.thread = threading.Thread(target=self._run, name="SynthFMTrain", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        from synthfm.train import train
        from synthfm.utils.run_lock import RunLock

        try:
            with RunLock(self.config.out, "SynthFM Train in 3D Slicer"):  # no second run into the same folder
                path = train(self.config, progress=lambda d, t, m: self.events.put(("progress", d, t, m)),
                             cancel=self.cancel, on_metrics=lambda s, m: self.events.put(("metrics", s, dict(m))),
                             resume=self.resume,
                             data_progress=lambda d, t, m: self.events.put(("data", d, t, m)))
            self.events.put(("done", path))
        except Cancelled:
            self.events.put(("cancelled",))
        except BaseException as exc:  # reported to the user by the widget
            self.events.put(("error", exc))

    @property
    def running(self) -> bool:
        return self.thread.is_alive() or not self.events.empty()

    def poll(self) -> List[tuple]:
        """Apply queued worker events (GUI thread only); returns them for the caller to display."""
        seen = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return seen
            seen.append(event)
            kind = event[0]
            if kind in ("progress", "data"):
                self.step, self.total, self.message = event[1], event[2], event[3]
                if kind == "data":
                    self.message = f"{event[3]} {event[1]}/{event[2]}"
            elif kind == "metrics":
                self.history["step"].append(event[1])
                for k in CURVES:
                    self.history[k].append(float(event[2][k]))
            elif kind == "done":
                self.checkpoint = Path(event[1])
            elif kind == "cancelled":
                self.cancelled = True
            elif kind == "error":
                self.error = event[1]

    def eta_seconds(self) -> Optional[float]:
        """Remaining time from the steps done since the start (None before the first step)."""
        steps = len(self.history["step"])
        if not steps or not self.total:
            return None
        return (time.monotonic() - self.started) / steps * max(0, self.total - self.step)


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
        ``arrayFromVolume`` and each segment exported on the volume's grid (``arrayFromSegmentBinaryLabelmap``)
        into one labelmap, segment ``n`` (in the given order) -> label ``n``; a later segment wins where
        segments overlap. Pass the result in ``train_config(..., user_data=[case, ...])``."""
        from synthfm.train import UserCase

        if volume_node is None or segmentation_node is None:
            raise ValueError("choose a volume and a segmentation to fine-tune on")
        ids = list(segment_ids) if segment_ids else self.segment_ids(segmentation_node)
        if not ids:
            raise ValueError(f"segmentation '{segmentation_node.GetName()}' has no segments; draw the structures "
                             "to learn first (Segment Editor)")
        image = np.array(slicer.util.arrayFromVolume(volume_node), np.float32)  # a copy: training runs in a thread
        label = np.zeros(image.shape, np.int16)
        for value, segment_id in enumerate(ids, start=1):
            if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
                raise ValueError(f"segment '{segment_id}' is not in segmentation '{segmentation_node.GetName()}'")
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)
            label[mask > 0] = value
        return UserCase(image, label, labels=list(range(1, len(ids) + 1)),
                        name=f"{volume_node.GetName()} / {segmentation_node.GetName()}")

    def start(self, config, resume: bool = True) -> TrainingJob:
        return TrainingJob(config, resume=resume).start()

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

