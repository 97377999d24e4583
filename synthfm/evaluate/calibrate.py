"""Fit the calibrated quality score (:class:`synthfm.segment.quality.QualityCalibrator`) on held-out synthetic data.

Rows are predictions with their quality signals and true IoU: on synthetic 2D images prompted with the
evaluation protocols (:mod:`synthfm.evaluate.protocols`), and on the slices of synthetic volumes that propagation
reaches when nothing stops it (so that slices past the structure's end, true IoU 0, are in the data: what a stop
rule must recognise). Real data never enters here.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import minimize
from scipy.stats import spearmanr

from synthfm.evaluate.protocols import make_prompts, next_click, point_and_box
from synthfm.segment.quality import KINDS, SIGNALS, LogisticQuality, QualityCalibrator, prompt_kind
from synthfm.utils.masks import iou

#: +1: higher is better (the score may only rise with it), -1: lower is better, 0: either way
SIGNS = {"iou_head": 1, "stability": 1, "confidence": 1, "points_agree": 1, "outside_box": -1, "box_fill": 0,
         "area": 0, "contrast": 1, "edge": 1, "consistency": 1, "mirror_agreement": 1,
         "split_agreement": 1, "cut": -1}
#: the signals each prompt kind's model uses (those that exist for that kind)
FEATURES = {"points": ("iou_head", "stability", "confidence", "points_agree", "area", "contrast", "edge",
                       "consistency", "mirror_agreement", "cut"),
            "box": ("iou_head", "stability", "confidence", "box_fill", "outside_box", "contrast", "edge", "consistency",
                    "mirror_agreement", "split_agreement"),
            "mask": ("iou_head", "stability", "confidence", "box_fill", "outside_box", "area", "contrast", "edge",
                     "consistency")}
FIT_PROTOCOLS = ("point1", "point3", "point1neg2", "box", "box-jitter", "clicks")


def image_rows(predictor, image: np.ndarray, truth: np.ndarray, key, rng: np.random.Generator,
               protocols: Sequence[str] = FIT_PROTOCOLS, clicks: int = 3,
               value_range: Optional[Tuple[float, float]] = None) -> List[dict]:
    """One row per prediction on a 2D ``image``: protocol, prompt kind, true IoU and the quality signals
    (``clicks``: the first point and each of ``clicks - 1`` correction clicks)."""
    rows = []
    for protocol in protocols:
        prompts = make_prompts(protocol, truth, rng)
        for _ in range(clicks if protocol == "clicks" else 1):
            pred = predictor.predict(image, prompts, key=key, value_range=value_range)
            rows.append({"protocol": protocol, "kind": prompt_kind(prompts), "iou": iou(pred.mask, truth),
                         "score": pred.score, **pred.signals})
            if protocol == "clicks":
                prompts = next_click(prompts, pred.mask, truth)
                if prompts is None:
                    break
    return rows


def cache_items(predictor, folder, count: int, start: int = 0) -> Iterator[tuple]:
    """``(item, image01, truth, key)`` for the first ``count`` filled items from position ``start`` of an embedding
    cache (``synthfm train``'s ``cache/train`` or ``cache/val``): each stored embedding is put in ``predictor``'s
    cache under ``key`` (no image is encoded) and the image, needed for the image signals, is drawn again from the
    cache's generator settings. Only use a cache whose images the decoder was not trained on."""
    from synthfm.generate.config import GeneratorConfig
    from synthfm.segment.preprocess import SliceTransform
    from synthfm.train.embed_cache import EmbeddingCache, SyntheticItems

    cache = EmbeddingCache(folder, mode="r")
    size = int(cache.manifest["size"])
    items = SyntheticItems(GeneratorConfig.from_dict(cache.manifest["generator"]), int(cache.manifest["seed"]),
                           int(cache.manifest["first"]))
    transform = SliceTransform(size, size, predictor.model.image_size)
    for i in np.flatnonzero(np.asarray(cache.filled)[start:])[:count] + start:
        emb, labels, targets = cache.get(np.array([i]), str(predictor.device))
        image01, item_labels, target = items(np.array([i]))[0]
        if not (np.array_equal(item_labels, labels[0]) and target == int(targets[0])):
            raise ValueError(f"{folder}: item {i} drawn again differs from the cached one (another generator version?)")
        key = ("embedding-cache", str(folder), int(i))
        predictor.put_embedding(key, emb[:1], transform)
        yield int(i), image01, np.asarray(labels[0]) == int(targets[0]), key


def cache_rows(predictor, folder, count: int, seed: int, protocols: Sequence[str] = FIT_PROTOCOLS,
               start: int = 0) -> List[dict]:
    """:func:`image_rows` for the items :func:`cache_items` gives (``count`` from position ``start``)."""
    rows: List[dict] = []
    for i, image01, truth, key in cache_items(predictor, folder, count, start):
        rng = np.random.default_rng([seed, i])
        rows += [{**r, "item": f"{folder}:{i}"}
                 for r in image_rows(predictor, image01, truth, key, rng, protocols, value_range=(0.0, 1.0))]
    return rows


def volume_rows(predictor, image: np.ndarray, truth: np.ndarray, volume_id, options) -> List[dict]:
    """Rows of the slices propagation reaches from the structure's largest slice (prompted with its interior
    point and tight box) with ``options`` whose stop rule should be off: the true IoU of a slice past the
    structure's end is 0."""
    from synthfm.segment import VolumeSegmenter

    seg = VolumeSegmenter(predictor, image, volume_id=volume_id)
    start = int(np.argmax(truth.sum(axis=(1, 2))))
    result = seg.propagate(start, point_and_box(truth[start], options.use_points), options=options)
    rows = []
    for r in result.records:
        if r.source != "propagated" or r.stop is not None:
            continue
        rows.append({"protocol": "propagation", "kind": "mask", "iou": iou(result.mask[r.index], truth[r.index]),
                     "score": r.score, "inside": bool(truth[r.index].any()), **r.signals})
    return rows


def _features(rows: Sequence[dict], features: Sequence[str]) -> np.ndarray:
    return np.array([[r.get(f, np.nan) for f in features] for r in rows], np.float64)


def fit_logistic(rows: Sequence[dict], features: Sequence[str], signs: Mapping[str, int] = SIGNS,
                 l2: float = 1e-3) -> LogisticQuality:
    """Logistic model of the true IoU (cross-entropy with the IoU as a soft target) on standardised signals; each
    coefficient keeps the sign of ``signs`` (monotone), a small L2 penalty keeps it tiny and stable."""
    x = _features(rows, features)
    y = np.clip(np.array([r["iou"] for r in rows], np.float64), 0.0, 1.0)
    fill = np.array([np.nanmedian(c) if np.isfinite(c).any() else 0.0 for c in x.T])
    x = np.where(np.isnan(x), fill, x)
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale

    def loss(theta):
        logit = theta[0] + z @ theta[1:]
        p = 1.0 / (1.0 + np.exp(-logit))
        value = np.mean(np.logaddexp(0, logit) - y * logit) + l2 * theta[1:] @ theta[1:]
        grad = np.concatenate([[np.mean(p - y)], z.T @ (p - y) / len(y) + 2 * l2 * theta[1:]])
        return value, grad

    bounds = [(None, None)] + [(0, None) if signs.get(f, 0) > 0 else (None, 0) if signs.get(f, 0) < 0
                               else (None, None) for f in features]
    theta = minimize(loss, np.zeros(len(features) + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    return LogisticQuality(list(features), [float(c) for c in theta[1:]], float(theta[0]), [float(m) for m in mean],
                           [float(s) for s in scale], [float(f) for f in fill])


def fit_calibrator(rows: Sequence[dict], features: Mapping[str, Sequence[str]] = FEATURES,
                   decoder_sha256: Optional[str] = None, info: Optional[dict] = None,
                   min_rows: int = 20) -> QualityCalibrator:
    """One logistic model per prompt kind with at least ``min_rows`` rows (other kinds keep the raw IoU head)."""
    models = {}
    for kind in KINDS:
        subset = [r for r in rows if r["kind"] == kind]
        if len(subset) >= min_rows:
            models[kind] = fit_logistic(subset, features[kind])
    return QualityCalibrator(models, decoder_sha256, dict(info or {}))


def rescore(rows: Iterable[dict], calibrator: QualityCalibrator) -> List[dict]:
    """``rows`` with ``calibrated`` set from their signals."""
    out = []
    for r in rows:
        signals = {k: np.array([r.get(k, np.nan)], np.float64) for k in SIGNALS}
        out.append({**r, "calibrated": float(calibrator(signals, r["kind"])[0])})
    return out


def spearman(rows: Sequence[dict], signal: str, target: str = "iou") -> float:
    """Spearman correlation of ``signal`` with ``target`` over ``rows`` (nan when either is constant)."""
    pairs = np.array([(r.get(signal, np.nan), r[target]) for r in rows], np.float64)
    pairs = pairs[np.isfinite(pairs).all(1)]
    if len(pairs) < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return float("nan")
    return float(spearmanr(pairs[:, 0], pairs[:, 1])[0])


def spearman_table(rows: Sequence[dict], signals: Sequence[str]) -> Dict[str, Dict[str, Tuple[int, float]]]:
    """``{protocol: {signal: (n, rho)}}`` plus ``"all"`` over every row."""
    groups: Dict[str, list] = {"all": list(rows)}
    for r in rows:
        groups.setdefault(r["protocol"], []).append(r)
    return {g: {s: (len(v), spearman(v, s)) for s in signals} for g, v in groups.items()}
