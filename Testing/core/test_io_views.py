"""Slices turned as Slicer's preset views show them (synthfm.io.views): the command line's pictures look like the
effect's. Slicer's own screen geometry is checked against the stand-in's views in Testing/slicer (mask buttons)."""
import numpy as np
import pytest

from synthfm.io import Volume
from synthfm.io.views import preset_view, slice_view

SPACING = (0.8, 0.9, 3.0)  # i, j, k in mm


def numbered(shape):
    return np.arange(np.prod(shape)).reshape(shape)


def test_a_dicom_grid_is_shown_superior_up_and_patient_right_on_the_left():
    """LPS axes (as SimpleITK reads most DICOM and NIfTI): i runs to the patient's left, j to posterior, k up."""
    ijk_to_ras = Volume(np.zeros((4, 5, 6)), SPACING).ijk_to_ras_matrix()
    assert [preset_view(ijk_to_ras, a) for a in range(3)] == ["Axial", "Coronal", "Sagittal"]
    axial, coronal, sagittal = (slice_view(ijk_to_ras, a) for a in range(3))
    jk, ki, kj = numbered((5, 6)), numbered((4, 6)), numbered((4, 5))
    assert np.array_equal(axial.show(jk), jk)  # anterior (j = 0) at the top, the patient's right (i = 0) on the left
    assert np.array_equal(coronal.show(ki), ki[::-1])  # superior (the last k) at the top
    assert np.array_equal(sagittal.show(kj), kj[::-1])  # superior up, anterior (j = 0) on the left
    assert (axial.aspect, coronal.aspect, sagittal.aspect) == pytest.approx((0.9 / 0.8, 3.0 / 0.8, 3.0 / 0.9))


def test_a_ras_grid_is_turned_to_the_same_picture():
    """The same anatomy stored with i to the right and j to anterior (a RAS NIfTI): the same picture."""
    lps = Volume(np.zeros((4, 5, 6)), SPACING)
    ras = Volume(np.zeros((4, 5, 6)), SPACING, direction=np.diag([-1.0, -1.0, 1.0]))
    anatomy = numbered((4, 5, 6))  # in LPS order; the RAS file holds it with i and j reversed
    for axis in range(3):
        index = 2 if axis == 0 else anatomy.shape[axis] - 3  # the same anatomical slice in the reversed array
        seen_lps = slice_view(lps.ijk_to_ras_matrix(), axis).show(np.take(anatomy, 2, axis=axis))
        seen_ras = slice_view(ras.ijk_to_ras_matrix(), axis).show(np.take(anatomy[:, ::-1, ::-1], index, axis=axis))
        assert np.array_equal(seen_lps, seen_ras)


def test_a_sagittal_acquisition_is_named_and_turned_by_its_anatomy():
    """k along the patient's left-right, j down, i to posterior: array axis 0 is a sagittal view, 1 an axial one."""
    direction = np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]])  # columns: i -> P, j -> I (LPS), k -> L
    ijk_to_ras = Volume(np.zeros((4, 5, 6)), SPACING, direction=direction).ijk_to_ras_matrix()
    assert [preset_view(ijk_to_ras, a) for a in range(3)] == ["Sagittal", "Axial", "Coronal"]
    sagittal = slice_view(ijk_to_ras, 0)  # rows j (inferior downwards), columns i (posterior to the right)
    ji = numbered((5, 6))
    assert np.array_equal(sagittal.show(ji), ji)
    axial = slice_view(ijk_to_ras, 1)  # rows k (to the left), columns i (posterior): turned, k across, i down
    ki = numbered((4, 6))
    assert np.array_equal(axial.show(ki), ki.T)
    assert axial.aspect == pytest.approx(0.8 / 3.0)


def test_colour_pictures_turn_as_their_grey_slices():
    ijk_to_ras = Volume(np.zeros((4, 5, 6)), SPACING).ijk_to_ras_matrix()
    rgb = np.stack([numbered((4, 6))] * 3, axis=-1)
    assert np.array_equal(slice_view(ijk_to_ras, 1).show(rgb)[..., 0], slice_view(ijk_to_ras, 1).show(rgb[..., 0]))


def test_a_view_that_does_not_show_the_axis_is_refused():
    ijk_to_ras = Volume(np.zeros((4, 5, 6)), SPACING).ijk_to_ras_matrix()
    with pytest.raises(ValueError, match="does not show slices along array axis 0"):
        slice_view(ijk_to_ras, 0, screen_xy=np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))  # x and y both along S
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        slice_view(ijk_to_ras, 3)
