"""Volumes as numpy arrays plus geometry, read and written with SimpleITK.

Inside the core every array is indexed ``(z, y, x) = (k, j, i)``.  Geometry follows ITK/DICOM
conventions: ``spacing`` and ``origin`` are given in ``(x, y, z)`` order, physical coordinates are
LPS millimetres, and ``direction`` is the 3x3 matrix whose columns are the i, j, k axes.
Every conversion between voxel indices, LPS and RAS lives here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np

from synthfm.io.atomic import PathLike, atomic_path

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D (or single-slice) image: ``array[z, y, x]`` plus its physical geometry."""

    array: np.ndarray
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 2:
            self.array = self.array[None]
        if self.array.ndim != 3:
            raise ValueError(f"a Volume needs a 2D or 3D array, got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers (x, y, z), got {self.spacing}")

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume with the same geometry and new voxels (e.g. a label map)."""
        if np.asarray(array).shape != self.array.shape:
            raise ValueError(f"array shape {np.asarray(array).shape} != volume shape {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy())

    def index_to_lps(self, ijk: Sequence[float]) -> np.ndarray:
        """Voxel index ``(i, j, k)`` (x, y, z order) -> LPS millimetres."""
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T

    def lps_to_index(self, lps: Sequence[float]) -> np.ndarray:
        """LPS millimetres -> continuous voxel index ``(i, j, k)``."""
        d = np.asarray(lps, dtype=float) - np.asarray(self.origin)
        return (d @ np.linalg.inv(self.direction).T) / np.asarray(self.spacing)

    def index_to_ras(self, ijk: Sequence[float]) -> np.ndarray:
        return self.index_to_lps(ijk) @ LPS_TO_RAS

    def ras_to_index(self, ras: Sequence[float]) -> np.ndarray:
        return self.lps_to_index(np.asarray(ras, dtype=float) @ LPS_TO_RAS)

    def ijk_to_ras_matrix(self) -> np.ndarray:
        """The 4x4 IJK-to-RAS matrix, as Slicer's ``vtkMRMLVolumeNode.GetIJKToRASMatrix`` gives it."""
        m = np.eye(4)
        m[:3, :3] = LPS_TO_RAS @ self.direction @ np.diag(self.spacing)
        m[:3, 3] = LPS_TO_RAS @ np.asarray(self.origin)
        return m

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, ijk_to_ras: np.ndarray) -> "Volume":
        """Build a volume from voxels and a 4x4 IJK-to-RAS matrix (Slicer's convention)."""
        m = np.asarray(ijk_to_ras, dtype=float)
        lin = LPS_TO_RAS @ m[:3, :3]
        spacing = np.linalg.norm(lin, axis=0)
        return cls(array, tuple(spacing), tuple(LPS_TO_RAS @ m[:3, 3]), lin / spacing)


def _to_sitk(volume: Volume):
    import SimpleITK as sitk

    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.ravel()))
    return image


def as_grey(array: np.ndarray) -> np.ndarray:
    """Colour voxels ``(..., C)`` (RGB or RGBA of 8 or 16 bits, as image files and Slicer's colour volumes hold an
    ultrasound frame or a screenshot) as one grey channel: the first when every voxel is grey (exact: masks saved as
    RGB keep their values), else the luminance 0.299 R + 0.587 G + 0.114 B a viewer shows in grey (float32). Other
    multi-component voxels (a float vector field, several echoes) keep their first component."""
    if array.shape[-1] not in (3, 4) or array.dtype not in (np.uint8, np.uint16):
        return array[..., 0]
    rgb = array[..., :3]
    if (rgb == rgb[..., :1]).all():
        return array[..., 0]
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _as_grey(image):
    """:func:`as_grey` of a multi-component ``SimpleITK.Image``, with its geometry."""
    import SimpleITK as sitk

    grey = sitk.GetImageFromArray(np.ascontiguousarray(as_grey(sitk.GetArrayViewFromImage(image))))
    grey.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
    return grey


def from_sitk(image) -> Volume:
    """Convert a 2D or 3D scalar ``SimpleITK.Image`` to a :class:`Volume`."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() > 1:
        image = _as_grey(image)
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise ValueError(f"only 2D and 3D images are supported, got a {image.GetDimension()}D image (a time series "
                         "or several channels?): save the one 3D volume to segment on its own (e.g. Slicer's "
                         "Sequences module, or SimpleITK's Extract) and give that")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return Volume(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), direction)


def _sitk_reason(exc: RuntimeError) -> str:
    """The informative line of a SimpleITK error (its last line is often a generic OS reason)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    best = next((line for line in lines if "ERROR" in line or "not read completely" in line), lines[0] if lines else "")
    return best.split("sitk::ERROR:")[-1].strip()


def read_volume(path: PathLike) -> Volume:
    """Read NIfTI, NRRD, MHA, PNG, ... or a DICOM series folder into a :class:`Volume`.

    Damaged files are an error (:func:`synthfm.io.checks.verify_image_file`: a cut-off ``.gz`` stream or a
    NIfTI file shorter than its header says, which SimpleITK would read with zeros for the missing part).  NaN and
    infinite NIfTI voxels, which SimpleITK reads as 0, are kept as they are in the file (callers check them)."""
    import SimpleITK as sitk

    from synthfm.io.checks import verify_image_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no image at {path}: check the path")
    nonfinite = verify_image_file(path) if path.is_file() else {}
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise ValueError(f"{path} is a folder without a DICOM series; give an image file or a DICOM folder")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK reports unreadable files as RuntimeError
        raise ValueError(f"could not read {path} as an image: it is damaged or not an image file ({_sitk_reason(exc)})"
                         ) from exc
    volume = from_sitk(image)
    if nonfinite and volume.array.size >= max(nonfinite) + 1 and volume.array.dtype.kind == "f":
        volume.array.flat[list(nonfinite)] = list(nonfinite.values())  # ITK read them as 0
    return volume


def write_volume(path: PathLike, volume: Volume, overwrite: bool = True, compress: bool = True) -> Path:
    """Write ``volume`` atomically with its geometry; the format follows the file extension."""
    import SimpleITK as sitk

    with atomic_path(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(_to_sitk(volume), str(tmp), compress)
    return Path(path)


PathOrVolume = Union[PathLike, Volume]
