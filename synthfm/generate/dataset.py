"""On-disk synthetic datasets that training can stream from.

2D (``format: synthfm-2d``)::

    DIR/manifest.json          generator config + seed, number of samples, list of shards
    DIR/shard-00000.npz        images float16 (N, H, W) in [0, 1], labels int16 (N, H, W), target_labels (N,)

The target mask of sample i is ``labels[i] == target_labels[i]``; any other label can be a target.

3D (``format: synthfm-3d``)::

    DIR/manifest.json          config, seed, cases with their target label and spacing
    DIR/cases.csv              image,label,label_value,name  (readable by ``synthfm evaluate``)
    DIR/case-0000_image.nii.gz, DIR/case-0000_labels.nii.gz
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np

from synthfm.generate.config import GeneratorConfig
from synthfm.generate.sample import Sample2D, SyntheticGenerator
from synthfm.io.atomic import PathLike, atomic_path, atomic_write_text
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report

SHARD_SIZE = 256


def dataset_files(count: int, dim: int) -> List[str]:
    """Names of the files :func:`write_dataset` writes for ``count`` samples of dimension ``dim``."""
    if dim == 2:
        names = [f"shard-{i:05d}.npz" for i in range((count + SHARD_SIZE - 1) // SHARD_SIZE)]
    else:
        names = [f"case-{i:04d}_{kind}.nii.gz" for i in range(count) for kind in ("image", "labels")] + ["cases.csv"]
    return names + ["manifest.json"]


def check_dataset_out(out: PathLike, count: int, dim: int, overwrite: bool) -> Path:
    """Refuse (before generating anything) an ``out`` where any file of the dataset already exists, unless
    ``overwrite``; also the folder must be writable."""
    from synthfm.io.checks import check_output_files

    return check_output_files(out, dataset_files(count, dim), overwrite)


def write_dataset(out: PathLike, config: GeneratorConfig, count: int, seed: int = 0, dim: int = 2,
                  overwrite: bool = False, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None) -> Path:
    """Generate ``count`` samples and write them under ``out``; the manifest is written last."""
    if count <= 0:
        raise ValueError(f"count must be a positive number of samples, got {count}")
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    out = check_dataset_out(out, count, dim, overwrite)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    generator = SyntheticGenerator(config, seed)
    manifest = {"format": f"synthfm-{dim}d", "generator_version": config.version, "seed": seed,
                "count": count, "config": config.to_dict()}
    try:
        if dim == 2:
            manifest["shards"] = _write_2d(out, generator, count, progress, cancel)
        else:
            manifest["cases"] = _write_3d(out, generator, count, progress, cancel)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # leave no empty folder behind
        raise
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return out


def _write_2d(out: Path, generator: SyntheticGenerator, count: int, progress, cancel) -> List[dict]:
    shards = []
    for start in range(0, count, SHARD_SIZE):
        samples = []
        for i in range(start, min(count, start + SHARD_SIZE)):
            check_cancel(cancel)
            samples.append(generator.sample_2d(i))
            report(progress, i + 1, count, "generating")
        name = f"shard-{start // SHARD_SIZE:05d}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, images=np.stack([s.image for s in samples]).astype(np.float16),
                            labels=np.stack([s.labels for s in samples]),
                            target_labels=np.array([s.target_label for s in samples], np.int16))
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(buffer.getvalue())
        shards.append({"file": name, "start": start, "count": len(samples)})
    return shards


def _write_3d(out: Path, generator: SyntheticGenerator, count: int, progress, cancel) -> List[dict]:
    from synthfm.io import write_volume

    cases = []
    for i in range(count):
        check_cancel(cancel)
        s = generator.sample_3d(i)
        image, labels = f"case-{i:04d}_image.nii.gz", f"case-{i:04d}_labels.nii.gz"
        write_volume(out / image, s.to_volume())
        write_volume(out / labels, s.to_volume(s.labels))
        cases.append({"image": image, "label": labels, "target_label": s.target_label, "spacing": s.spacing,
                      "modality": s.meta["modality"], "target_slices": s.meta["target_slices"]})
        report(progress, i + 1, count, "generating")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["image", "label", "label_value", "name"])
    for i, case in enumerate(cases):
        writer.writerow([case["image"], case["label"], case["target_label"], f"synthetic-{i:04d}"])
    atomic_write_text(out / "cases.csv", text.getvalue())
    return cases


class SyntheticDataset:
    """Read a 2D dataset written by :func:`write_dataset` (shards are loaded lazily, one at a time)."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} has no manifest.json; create it with `synthfm generate`")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != "synthfm-2d":
            raise ValueError(f"{self.root} is a {self.manifest.get('format')} dataset, expected synthfm-2d")
        self.config = GeneratorConfig.from_dict(self.manifest["config"])
        self._cache: dict = {}

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def _shard(self, shard: dict):
        if shard["file"] not in self._cache:
            self._cache = {shard["file"]: dict(np.load(self.root / shard["file"]))}
        return self._cache[shard["file"]]

    def __getitem__(self, index: int) -> Sample2D:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        for shard in self.manifest["shards"]:
            if shard["start"] <= index < shard["start"] + shard["count"]:
                data, j = self._shard(shard), index - shard["start"]
                target = int(data["target_labels"][j])
                labels = data["labels"][j]
                return Sample2D(data["images"][j].astype(np.float32), labels == target, labels, target, {"index": index})
        raise IndexError(index)  # pragma: no cover - manifest inconsistent

    def __iter__(self) -> Iterator[Sample2D]:
        return (self[i] for i in range(len(self)))
