"""Volumes keep their geometry exactly through SimpleITK, and user files are written atomically."""
import numpy as np
import pytest

from synthfm.io import Volume, atomic_write_text, read_volume, write_volume


def _oblique_volume() -> Volume:
    rng = np.random.default_rng(0)
    theta = 0.3
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1.0]])
    return Volume(rng.normal(size=(5, 6, 7)).astype(np.float32), (0.7, 0.8, 2.5), (-10.0, 20.0, 5.0), direction)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_geometry_round_trip(tmp_path, ext):
    vol = _oblique_volume()
    path = write_volume(tmp_path / f"v{ext}", vol)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_index_ras_round_trip_and_matrix():
    vol = _oblique_volume()
    ijk = np.array([3.0, 2.0, 4.0])
    ras = vol.index_to_ras(ijk)
    np.testing.assert_allclose(vol.ras_to_index(ras), ijk, atol=1e-9)
    m = vol.ijk_to_ras_matrix()
    np.testing.assert_allclose((m @ np.r_[ijk, 1])[:3], ras, atol=1e-9)
    rebuilt = Volume.from_ijk_to_ras(vol.array, m)
    np.testing.assert_allclose(rebuilt.spacing, vol.spacing)
    np.testing.assert_allclose(rebuilt.direction, vol.direction, atol=1e-12)
    np.testing.assert_allclose(rebuilt.origin, vol.origin)


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image at"):
        read_volume(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="could not read"):
        read_volume(junk)
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))


def test_atomic_write_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "first")
    with pytest.raises(FileExistsError):
        atomic_write_text(target, "second", overwrite=False)
    assert target.read_text() == "first"
    atomic_write_text(target, "second")
    assert target.read_text() == "second"


def test_dicom_series_folder_is_read_with_geometry(tmp_path):
    import SimpleITK as sitk

    vol = Volume(np.arange(3 * 8 * 9, dtype=np.int16).reshape(3, 8, 9), (0.7, 0.8, 2.5), (-10.0, 20.0, 5.0))
    for k in range(3):  # one file per slice, as scanners write them
        image = sitk.GetImageFromArray(vol.array[k : k + 1])
        image.SetSpacing(vol.spacing)
        image.SetOrigin(tuple(vol.index_to_lps([0, 0, k])))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for key, value in (("0020|000e", "1.2.3.4"), ("0020|0013", str(k + 1)), ("0008|0060", "CT"),
                           ("0020|0032", "\\".join(f"{v:g}" for v in vol.index_to_lps([0, 0, k]))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", "2.5")):
            image.SetMetaData(key, value)
        writer.SetFileName(str(tmp_path / f"s{k}.dcm"))
        writer.Execute(image)
    back = read_volume(tmp_path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-4)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)


def test_colour_images_are_read_as_the_grey_a_viewer_shows(tmp_path):
    """A colour frame (e.g. an ultrasound screenshot with a colour Doppler region) is read as its luminance, not its
    red channel; a grey image or mask saved as RGB keeps its exact values."""
    from PIL import Image

    colour = np.zeros((6, 8, 3), np.uint8)
    colour[..., 1] = 200  # green: no red at all
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    grey = read_volume(tmp_path / "colour.png").array[0]
    assert grey.shape == (6, 8) and abs(float(grey[1, 1]) - 0.587 * 200) < 0.01  # not the red channel's 0
    assert abs(float(grey[0, 0]) - 0.299 * 255) < 0.01
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:6] = 255
    Image.fromarray(np.stack([mask] * 3, -1)).save(tmp_path / "mask_rgb.png")
    read = read_volume(tmp_path / "mask_rgb.png").array[0]
    assert read.dtype == np.uint8 and np.array_equal(read, mask)
    from synthfm.io.volume import as_grey

    vectors = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)  # a vector field, not a colour
    assert np.array_equal(as_grey(vectors), vectors[..., 0])


def test_a_4d_image_is_refused_with_what_to_do(tmp_path):
    import SimpleITK as sitk

    four = sitk.GetImageFromArray(np.zeros((3, 4, 5, 6), np.float32), isVector=False)
    sitk.WriteImage(four, str(tmp_path / "four.nii.gz"))
    with pytest.raises(ValueError, match="got a 4D image .*save the one 3D volume to segment on its own"):
        read_volume(tmp_path / "four.nii.gz")
