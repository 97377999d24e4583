"""The worker: one model in memory, volumes keyed by client-chosen ids, prompts, encoding and propagation jobs.

No web code here (``synthfm.serve.app`` maps HTTP onto these methods), so tests and benchmarks can drive it
directly.  Prompts are voxel indices ``(i, j, k)`` of the volume (``synthfm.segment.volume_prompts``); the
prompts of a prediction lie on one slice along ``axis`` (0 axial k, 1 coronal j, 2 sagittal i), those of a
propagation on one or several slices (grouped by the slice they lie on; the slices between are filled).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, Optional, Sequence, Tuple

import numpy as np

from synthfm import __version__
from synthfm.segment.preprocess import Window, intensity_range
from synthfm.serve.gate import ENCODE, PROMPT, PROPAGATE, GatedPredictor, PriorityGate
from synthfm.serve.jobs import Job, JobTable
from synthfm.serve.protocol import API_VERSION, encode_mask

PredictorFactory = Callable[[str, str], Any]  # (model name, device) -> SlicePredictor


def default_predictor(model: str, device: str, cache_slices: int = 512):
    """The core's SlicePredictor on a loaded model."""
    from synthfm.models import load_model
    from synthfm.segment import SlicePredictor
    from synthfm.segment.predictor import pick_device

    torch_device = pick_device(device)
    return SlicePredictor(load_model(model, device=torch_device), torch_device, cache_size=cache_slices)


@dataclass
class VolumeSession:
    """A volume uploaded by a client; embeddings are cached under ``(id, generation, value range)``."""

    id: str
    array: np.ndarray
    window: Window
    spacing: Tuple[float, float, float]
    generation: int
    value_range: Tuple[float, float]
    segmenters: Dict[Hashable, Any] = field(default_factory=dict)

    @property
    def cache_id(self) -> Hashable:
        return (self.id, self.generation, self.value_range)

    def describe(self) -> Dict[str, Any]:
        return {"volume_id": self.id, "shape": list(self.array.shape), "dtype": self.array.dtype.name,
                "window": list(self.window) if isinstance(self.window, tuple) else self.window,
                "value_range": list(self.value_range), "spacing": list(self.spacing)}


class Worker:
    """Holds the model and the embedding cache; many clients share it, one model call at a time."""

    def __init__(self, model: str = "synthfm-lite", device: str = "auto", max_volumes: int = 4,
                 cache_slices: int = 512, predictor_factory: Optional[PredictorFactory] = None,
                 quiet_s: float = 0.5, embedding_cache: Optional[str] = None,
                 embedding_cache_bytes: Optional[int] = None) -> None:
        self.model_name, self.device, self.max_volumes = model, device, max_volumes
        self._factory = predictor_factory or (lambda m, d: default_predictor(m, d, cache_slices))
        #: slice embeddings are also kept in this folder (``SlicePredictor.use_store``), at most this many bytes of
        #: them (the least recently used go first): a volume opened again, even after a restart, is not encoded again
        self.embedding_cache, self.embedding_cache_bytes = embedding_cache, embedding_cache_bytes
        self.gate = PriorityGate(quiet_s=quiet_s)
        self.jobs = JobTable()
        self._predictor = None
        self._volumes: "OrderedDict[str, VolumeSession]" = OrderedDict()
        self._lock = threading.RLock()  # volumes and the predictor swap
        self._generation = 0

    # ---- model -------------------------------------------------------------------------------------------
    @property
    def predictor(self):
        """The loaded SlicePredictor (loads the model on first use)."""
        with self._lock:
            if self._predictor is None:
                self._predictor = self._load(self.model_name)
            return self._predictor

    def _load(self, name: str):
        """A predictor for model ``name``, with the embedding store when the worker has one."""
        predictor = self._factory(name, self.device)
        if self.embedding_cache is not None:
            predictor.use_store(self.embedding_cache, max_bytes=self.embedding_cache_bytes)
        return predictor

    @property
    def model_loaded(self) -> bool:
        return self._predictor is not None

    def use_model(self, name: str) -> None:
        """Switch the one model in memory to ``name`` (clears every cached embedding)."""
        with self._lock:
            if name == self.model_name and self._predictor is not None:
                return
            with self.gate.hold(PROMPT):
                predictor = self._load(name)
                self._predictor, self.model_name = predictor, name
                for session in self._volumes.values():
                    session.segmenters.clear()

    def info(self) -> Dict[str, Any]:
        try:
            from synthfm.models import available_models

            models = sorted(available_models())
        except ImportError:
            models = []
        predictor = self._predictor
        store = getattr(predictor, "store", None)
        return {"api": API_VERSION, "version": __version__, "model": self.model_name,
                "model_loaded": self.model_loaded,
                "device": str(getattr(predictor, "device", self.device)), "models": models,
                "volumes": list(self._volumes), "queue": self.gate.waiting(),
                "cached_slices": len(getattr(predictor, "_cache", ())),
                "embedding_cache": store.describe() if store is not None else None}

    # ---- volumes -----------------------------------------------------------------------------------------
    def add_volume(self, volume_id: str, array: np.ndarray, window: Window = "auto",
                   spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Dict[str, Any]:
        """Store a ``(Z, Y, X)`` volume under ``volume_id`` (replacing an older one of that id)."""
        array = np.asarray(array)
        if array.ndim != 3 or min(array.shape) < 1:
            raise ValueError(f"a volume must be 3D (Z, Y, X); got shape {array.shape}")
        if not volume_id or len(volume_id) > 200:
            raise ValueError("volume_id must be 1-200 characters")
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive sizes in mm (x, y, z); got {spacing}")
        value_range = intensity_range(array, window)  # also rejects an unknown window name
        self.jobs.cancel_matching(volume_id, "encode", "propagate")
        with self._lock:
            self._generation += 1
            session = VolumeSession(volume_id, array, window, spacing, self._generation, value_range)
            self._volumes[volume_id] = session
            self._volumes.move_to_end(volume_id)
            while len(self._volumes) > self.max_volumes:
                self._volumes.popitem(last=False)
        return session.describe()

    def volume(self, volume_id: str) -> VolumeSession:
        with self._lock:
            session = self._volumes.get(volume_id)
            if session is None:
                raise LookupError(f"volume '{volume_id}' is not on this worker (never uploaded, removed, or the "
                                  "worker restarted): upload it again")
            self._volumes.move_to_end(volume_id)
            return session

    def remove_volume(self, volume_id: str) -> None:
        self.volume(volume_id)
        self.jobs.cancel_matching(volume_id, "encode", "propagate")
        with self._lock:
            self._volumes.pop(volume_id, None)

    def volume_status(self, volume_id: str) -> Dict[str, Any]:
        session = self.volume(volume_id)
        predictor = self._predictor
        encoded = {}
        for axis in range(3):
            keys = [(session.cache_id, axis, i) for i in range(session.array.shape[axis])]
            encoded[str(axis)] = sum(predictor.is_cached(k) for k in keys) if predictor is not None else 0
        return {**session.describe(), "encoded": encoded}

    def segmenter(self, session: VolumeSession, axis: int, priority: int):
        """A VolumeSegmenter over the session's volume whose model calls hold the gate at ``priority``."""
        from synthfm.segment import VolumeSegmenter

        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0 (axial), 1 (coronal) or 2 (sagittal), got {axis}")
        predictor = self.predictor
        key = (axis, priority, id(predictor))
        if key not in session.segmenters:
            seg = VolumeSegmenter(GatedPredictor(predictor, self.gate, priority), session.array, axis,
                                  volume_id=session.cache_id, value_range=session.value_range,
                                  spacing=session.spacing)
            session.segmenters[key] = seg
        return session.segmenters[key]

    # ---- prompts -----------------------------------------------------------------------------------------
    def predict(self, volume_id: str, axis: int, positive: Sequence = (), negative: Sequence = (),
                box: Optional[Sequence] = None, multimask: Any = "auto", candidates: bool = False,
                candidate: Optional[int] = None, choice_masks: bool = False) -> Dict[str, Any]:
        """Prompts (voxel i, j, k; one slice) -> that slice's mask, its predicted IoU and every candidate's;
        ``candidate``: the user's choice among the decoder's candidates instead of the model's pick. The answer's
        ``choices`` says how many candidates ``candidate`` can choose among (3, or 1 when the prompts give one mask)
        and ``candidate`` which one the mask comes from (with several points in rounds: the first round's).
        ``candidates``: also the decoder's raw candidate masks; ``choice_masks``: also the mask each choice gives
        (``choice_masks[k]`` is the mask ``candidate=k`` answers, point cut and rounds included; thumbnails)."""
        from synthfm.segment.volume_prompts import slice_prompts

        session = self.volume(volume_id)
        index, prompts = slice_prompts(positive, negative, box, axis)
        seg = self.segmenter(session, axis, PROMPT)
        prompts.validate(*seg.slice(index).shape)
        start = time.perf_counter()
        key = seg.key(index)  # encoded before: every view this prompt is decoded on (the mirror image too)
        encoded_before = seg.predictor.is_cached(key) and (not getattr(seg.predictor, "mirrors", False)
                                                           or seg.predictor.is_cached((key, "mirror")))
        pred = seg.segment_slice(index, prompts, multimask, candidate=candidate)
        choice = pred.choice  # with several points in rounds: the first round's candidate
        answer = {"volume_id": volume_id, "axis": axis, "index": index, "score": pred.score,
                  "candidate": pred.index if choice is None else choice, "choices": 1 if choice is None else 3,
                  "scores": [float(s) for s in pred.all_scores], "mask": encode_mask(pred.mask),
                  "encoded_before": bool(encoded_before)}
        if candidates and pred.candidates is not None:
            answer["candidates"] = [encode_mask(c) for c in pred.candidates]
        if choice_masks and choice is not None:
            chosen = [pred if k == choice else seg.segment_slice(index, prompts, multimask, candidate=k)
                      for k in range(3)]
            answer["choice_masks"] = [encode_mask(p.mask) for p in chosen]
            answer["choice_scores"] = [float(p.score) for p in chosen]
        answer["seconds"] = round(time.perf_counter() - start, 4)
        return answer

    # ---- jobs --------------------------------------------------------------------------------------------
    def start_encoding(self, volume_id: str, axis: int, around: Optional[int] = None) -> Job:
        """Encode every slice along ``axis``, nearest to ``around`` (default: the middle) first, in the
        background; an earlier encoding job of this volume is cancelled (the user moved to another axis). With the
        model's ``encode_every`` > 1 the slices that propagation encodes come before the ones it interpolates
        (those are encoded last, for prompts placed on them)."""
        from synthfm.segment import PropagationOptions

        session = self.volume(volume_id)
        seg = self.segmenter(session, axis, ENCODE)
        n = seg.n_slices
        centre = n // 2 if around is None else min(max(int(around), 0), n - 1)
        every = PropagationOptions.for_model(getattr(seg.predictor, "model", None)).encode_every
        order = sorted(range(n), key=lambda i: (i != centre, seg.interpolated(i, every), abs(i - centre)))
        self.jobs.cancel_matching(volume_id, "encode")
        job = Job("encode", volume_id, {"axis": axis})
        job.total = n

        def work(job: Job) -> Dict[str, Any]:
            seg.encode_all(job.progress, job.cancel_token, order)
            return {"encoded": n}

        return self.jobs.start(job, work)

    def start_propagation(self, volume_id: str, axis: int, positive: Sequence = (), negative: Sequence = (),
                          box: Optional[Sequence] = None, direction: str = "both",
                          options: Optional[Dict[str, Any]] = None, boxes: Sequence = (),
                          candidates: Optional[Dict[int, int]] = None) -> Job:
        """Segment the prompted slices and follow the structure through the volume, as a job.

        Points and boxes (``box`` and ``boxes``, one per slice) are grouped by the slice they lie on: with several
        prompted slices the slices between them are filled (``VolumeSegmenter.propagate_slices``). ``candidates``:
        prompted slice -> the candidate the user chose there (as :meth:`predict`'s ``candidate``)."""
        from synthfm.segment import PropagationOptions
        from synthfm.segment.propagate import DIRECTIONS, chosen_candidates
        from synthfm.segment.volume_prompts import prompts_by_slice

        session = self.volume(volume_id)
        prompted = prompts_by_slice(positive, negative, list(boxes) + ([box] if box is not None else []), axis)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got '{direction}'")
        seg = self.segmenter(session, axis, PROPAGATE)
        for index, prompts in prompted.items():
            try:
                prompts.validate(*seg.slice(index).shape)
            except ValueError as exc:
                raise ValueError(f"slice {index}: {exc}" if len(prompted) > 1 else str(exc)) from None
        picked = chosen_candidates(candidates, prompted)  # a bad choice is refused now, not when the job runs
        overrides = PropagationOptions.parse_overrides([f"{k}={v}" for k, v in (options or {}).items()])
        chosen = PropagationOptions.for_model(getattr(seg.predictor, "model", None), **overrides)
        order = sorted(prompted)
        job = Job("propagate", volume_id, {"axis": axis, "index": order[0], "prompted": order,
                                           "direction": direction})

        def work(job: Job) -> Dict[str, Any]:
            result = seg.propagate_slices(prompted, direction, job.progress, job.cancel_token, chosen, picked)
            voxel_ml = float(np.prod(session.spacing)) / 1000.0
            return {"volume_id": volume_id, "axis": axis, "index": order[0], "prompted": order,
                    "mask": encode_mask(result.mask, crop=True), "slices": result.slices,
                    "describe": result.describe(), "notes": list(result.notes),
                    "records": [{"index": r.index, "area": r.area, "score": float(r.score), "stop": r.stop,
                                 "source": r.source} for r in result.records],
                    "volume_ml": round(float(result.mask.sum()) * voxel_ml, 3)}

        return self.jobs.start(job, work)

    def shutdown(self) -> None:
        self.jobs.cancel_all()

