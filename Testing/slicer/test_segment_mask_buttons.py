"""The effect's mask buttons: for prompts with three candidate masks, the panel shows each as a picture of the slice
(turned as the view shows it) on a button; a click shows that mask, as Other mask would reach it.

The worker is the real ``synthfm serve`` app with test_segment_other_mask's fake (three discs of radius 8 (the
pick), 4 and 12 around the first point). The pictures go numpy -> vtkImageData -> ``qMRMLUtils.vtkImageDataToQImage``
-> QPixmap -> QIcon, whose stand-in keeps CTK's rules (unsigned char, 1/3/4 components, padded scanlines, mirrored).
"""
import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

import qt
import slicer
from SynthFMSegmentLib.geometry import as_seen, matrix_to_numpy, seen_aspect, slice_axis
from SynthFMSegmentLib.thumbnails import THUMBNAIL_PX, icon_from_rgba
from synthfm.io.png import CYAN, GREEN
from synthfm.io.views import preset_view, slice_view
from test_segment_effect import click, display_xy, fake_worker, scene, settle  # noqa: F401  (fixtures)
from test_segment_logic import volume_node
from test_segment_other_mask import three_candidates
from test_segment_slice_list import layout  # noqa: F401  (fixture)
from test_segment_slices import keep, prompt



def yellowish(picture) -> np.ndarray:
    """Pixels of a picture that the mask tints or outlines (grey pixels have equal red, green and blue)."""
    r, g, b = (picture[..., c].astype(int) for c in range(3))
    return (r > b + 60) & (g > b + 30)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]),  # RAS and LPS (DICOM) grids
                                       [[0, 1.0, 0], [1.0, 0, 0], [0, 0, -1.0]]])  # i along A, j along R, k down
@pytest.mark.parametrize("orientation", ["Axial", "Coronal", "Sagittal"])
def test_a_slice_is_turned_as_its_view_shows_it(direction, orientation):
    """Every voxel of a slice lands in the picture where the view draws it: left of / above another voxel on the
    screen means left of / above it in the picture."""
    node, geometry = volume_node(np.zeros((6, 7, 8), np.float32), (1.0, 1.5, 2.0), origin=(3.0, -4.0, 5.0),
                                 direction=direction)
    view = slicer.SliceNode("view", orientation)
    axis = slice_axis(view, node)
    shape = [6, 7, 8]
    del shape[axis]
    labels = np.arange(np.prod(shape)).reshape(shape)  # each voxel of the slice named by its number
    seen = as_seen(view, node, axis, labels)
    assert preset_view(geometry.ijk_to_ras_matrix(), axis) == orientation  # the command line's pictures: the same
    assert np.array_equal(slice_view(geometry.ijk_to_ras_matrix(), axis).show(labels), seen)
    to_xy = np.linalg.inv(matrix_to_numpy(view.GetXYToRAS()))
    where = {}
    for a in range(shape[0]):
        for b in range(shape[1]):
            ijk, rest = [0, 0, 0], [d for d in range(3) if d != axis]  # array axis d is IJK axis 2 - d
            ijk[2 - rest[0]], ijk[2 - rest[1]], ijk[2 - axis] = a, b, 2
            xy = to_xy @ np.r_[geometry.index_to_ras(ijk), 1.0]
            row, col = [int(v[0]) for v in np.nonzero(seen == labels[a, b])]
            where[(a, b)] = (xy[0], xy[1], row, col)
    values = np.array(list(where.values()))
    for x, y, row, col in values:  # strictly ordered the same way on the screen and in the picture
        assert np.all((values[:, 0] > x + 1e-6) <= (values[:, 3] > col))
        assert np.all((values[:, 1] < y - 1e-6) <= (values[:, 2] > row))

    def ras(label):  # the RAS centre of the voxel a picture pixel shows
        a, b = np.argwhere(labels == label)[0]
        ijk, rest = [0, 0, 0], [d for d in range(3) if d != axis]
        ijk[2 - rest[0]], ijk[2 - rest[1]], ijk[2 - axis] = a, b, 2
        return geometry.index_to_ras(ijk)

    down = np.linalg.norm(ras(seen[1, 0]) - ras(seen[0, 0]))  # mm from one picture row to the next
    across = np.linalg.norm(ras(seen[0, 1]) - ras(seen[0, 0]))
    assert seen_aspect(view, node, axis) == pytest.approx(down / across)  # the pictures are drawn in square mm


def test_the_standin_converts_images_as_ctk_does():
    """A float image is refused (a null QImage, False); RGBA comes through mirrored back to rows from the top;
    three components in a row of 5 pixels (15 bytes, padded to 16 in a QImage) come out sheared, as in Slicer."""
    image = vtk.vtkImageData()
    image.SetDimensions(5, 2, 1)
    image.AllocateScalars(vtk.VTK_FLOAT, 4)
    qimage = qt.QImage()
    assert not slicer.qMRMLUtils().vtkImageDataToQImage(image, qimage) and qimage.isNull()
    rgba = np.zeros((2, 5, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # top left red
    icon = icon_from_rgba(rgba)
    assert icon.pixmap.width() == 5 and np.array_equal(icon.pixmap.image.pixels, rgba)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.arange(30).reshape(10, 3)
    assert slicer.qMRMLUtils().vtkImageDataToQImage(image, qimage)
    assert qimage.pixels[0, 0].tolist() == [16, 17, 18]  # the second VTK row starts one padding byte late


def test_mask_buttons_show_the_three_masks_and_a_click_shows_one(scene, fake_worker, monkeypatch, layout):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker, fake, _ = fake_worker
    asked = []
    monkeypatch.setattr(fake, "predict", three_candidates(fake, asked))
    red = layout("Red", "Axial")
    keep(effect)
    assert not effect.choiceFrame.visible  # nothing prompted: no masks to show
    prompt(effect, red, geometry, [24, 20, 5])
    settle(effect)
    assert effect.choiceFrame.visible and asked == [None, None, 1, 2]
    buttons = effect.choiceButtons
    pictures = [b.icon.pixmap.image.pixels for b in buttons]
    assert all(p.shape == (THUMBNAIL_PX, THUMBNAIL_PX, 4) for p in pictures)
    areas = [int(yellowish(p).sum()) for p in pictures]
    assert areas[1] < areas[0] < areas[2]  # radii 8, 4, 12 over one region: the pictures compare at a glance
    dots = [np.argwhere((p[..., :3] == GREEN).all(-1)).mean(0) for p in pictures]  # the point, at one place in all
    assert np.allclose(dots[0], dots[1]) and np.allclose(dots[0], dots[2])
    assert np.allclose(dots[0], np.argwhere(yellowish(pictures[1])).mean(0), atol=3)  # the small disc around it
    assert [b.text for b in buttons] == ["1 (pick)", "2", "3"] and [b.checked for b in buttons] == [True, False, False]
    assert "predicted quality (IoU) 0.80" in buttons[1].toolTip
    buttons[2].click()  # the largest: shown at once from the pictures' masks, before the worker answers
    assert effect._shown[5] == (2, 3) and np.array_equal(effect.sliceMasks[5][0], effect._choices[5][1][2])
    settle(effect)
    assert asked[-1] == 2 and effect._shown[5] == (2, 3) and [b.checked for b in buttons] == [False, False, True]
    assert effect.qualityLabel.text.endswith("Mask 3 of 3 (Other mask: the next).")
    assert np.array_equal(effect.sliceMasks[5][0], effect._choices[5][1][2])  # the preview is the picture's mask
    buttons[0].click()  # back to the model's pick: asked without a choice, its own answer
    settle(effect)
    assert asked[-1] is None and effect._shown[5] == (0, 3) and [b.checked for b in buttons] == [True, False, False]
    assert len(asked) == 6  # choosing asks for the shown mask only: the pictures belong to the prompts
    prompt(effect, red, geometry, [29, 22, 5])  # new prompts: new pictures (several points: the first round's)
    settle(effect)
    assert asked[-4:] == [None, None, 1, 2] and effect.choiceFrame.visible


def test_a_box_is_drawn_on_the_pictures(scene, fake_worker, monkeypatch, layout):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker, fake, _ = fake_worker
    monkeypatch.setattr(fake, "predict", three_candidates(fake, []))
    red = layout("Red", "Axial")
    a, b = geometry.index_to_ras([14, 12, 5]), geometry.index_to_ras([34, 28, 5])
    click(effect, red, display_xy(red.node, a), drag_to=display_xy(red.node, b, centre=False))
    settle(effect)
    assert effect.choiceFrame.visible
    for button in effect.choiceButtons:
        picture = button.icon.pixmap.image.pixels
        cyan = (picture[..., :3] == CYAN).all(-1)
        assert cyan.sum() > 100 and not (picture[..., :3] == GREEN).all(-1).any()  # the box, no points


def test_mask_buttons_hide_for_one_mask_and_after_clear(scene, layout):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    red = layout("Red", "Axial")
    prompt(effect, red, geometry, [24, 20, 5])  # the plain fake: one mask, nothing to choose
    settle(effect)
    assert 5 in effect.sliceMasks and not effect.choiceFrame.visible
    assert len(effect.logic.predictor.prompts) == 1  # the preview only: no masks of choices asked for


def test_pictures_that_fail_leave_the_preview_and_other_mask(scene, fake_worker, monkeypatch, layout):
    """A worker that cannot draw the three masks (here: refuses the request) costs the buttons only: the preview
    stays, the panel says so, the pictures are not asked for again for the same prompts, Other mask still works."""
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker, fake, _ = fake_worker
    asked = []
    monkeypatch.setattr(fake, "predict", three_candidates(fake, asked))
    original = worker.predict

    def no_pictures(*args, **kwargs):
        if kwargs.get("choice_masks") or (len(args) > 8 and args[8]):
            raise ValueError("pictures are broken here")
        return original(*args, **kwargs)

    monkeypatch.setattr(worker, "predict", no_pictures)
    red = layout("Red", "Axial")
    prompt(effect, red, geometry, [24, 20, 5])
    settle(effect)
    assert 5 in effect.sliceMasks and not effect.choiceFrame.visible
    assert "no pictures of the three masks (pictures are broken here)" in effect.workerLabel.text
    effect.otherMaskButton.click()
    settle(effect)
    assert effect._shown[5] == (1, 3) and asked[-1] == 1 and 5 in effect.sliceMasks


def test_mask_buttons_follow_the_current_slice(scene, fake_worker, monkeypatch, layout):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker, fake, _ = fake_worker
    monkeypatch.setattr(fake, "predict", three_candidates(fake, []))
    red = layout("Red", "Axial")
    keep(effect)
    prompt(effect, red, geometry, [24, 20, 4])
    prompt(effect, red, geometry, [24, 20, 6])
    settle(effect)
    assert effect.plane[2] == 6 and effect.choiceFrame.visible
    buttons = effect.choiceButtons
    buttons[1].click()  # slice 6 shows its small mask
    settle(effect)
    from test_segment_slice_list import pick

    assert [i for i in effect.sliceBox.items if i.startswith("slice 6:")][0].endswith("; mask 2 of 3")  # the list
    assert not [i for i in effect.sliceBox.items if i.startswith("slice 4:")][0].endswith("of 3")  # says the choice
    pick(effect, 4)  # the list: slice 4 becomes current, its own buttons (the pick pressed)
    assert [b.checked for b in buttons] == [True, False, False]
    pick(effect, 6)
    assert [b.checked for b in buttons] == [False, True, False]
    effect.clearPrompts()
    assert not effect.choiceFrame.visible
