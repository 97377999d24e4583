"""Pictures of a slice's candidate masks side by side (synthfm.io.thumbnails): one region around all the masks, each
mask tinted and outlined, the slice's grey values under them."""
import numpy as np
import pytest

from synthfm.io.png import CYAN, GREEN, RED, YELLOW
from synthfm.io.thumbnails import BOX_MARK, MIN_CROP, choice_thumbnails, crop_around, prompt_marks


def disc(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2


def test_the_region_holds_every_mask_with_a_margin_and_stays_in_the_slice():
    shape = (200, 300)
    masks = [disc(shape, (50, 60), 10), disc(shape, (70, 90), 5)]
    rows, cols = crop_around(masks, shape)
    assert rows.stop - rows.start == cols.stop - cols.start  # square
    union = masks[0] | masks[1]
    assert union[rows, cols].sum() == union.sum()  # nothing of a mask is cut off
    assert rows.start < 40 and cols.start < 50  # a margin around them
    tiny = crop_around([disc(shape, (1, 298), 1)], shape)  # at a corner: at least MIN_CROP wide, inside the slice
    assert tiny[0] == slice(0, MIN_CROP) and tiny[1] == slice(300 - MIN_CROP, 300)
    assert crop_around([np.zeros(shape, bool)], shape) == (slice(0, 200), slice(0, 300))  # empty: the whole slice


def test_thumbnails_show_each_mask_over_the_same_grey_region():
    shape = (120, 160)
    image = np.linspace(0, 1000, shape[0] * shape[1]).reshape(shape)
    masks = [disc(shape, (60, 80), r) for r in (8, 4, 16)]
    pictures = choice_thumbnails(image, masks, size=48)
    assert pictures.shape == (3, 48, 48, 4) and pictures.dtype == np.uint8 and (pictures[..., 3] == 255).all()
    r, g, b = (pictures[..., c].astype(int) for c in range(3))
    marked = (r != g) | (g != b)  # grey pixels have equal red, green and blue; the masks' pixels do not
    areas = marked.sum(axis=(1, 2))
    assert areas[1] < areas[0] < areas[2]
    outlined = (pictures[..., :3] == YELLOW).all(axis=-1)
    assert outlined.any(axis=(1, 2)).all()
    unmarked = ~marked.any(axis=0)
    assert np.array_equal(pictures[0][unmarked], pictures[2][unmarked])  # the same region under every mask
    dark = choice_thumbnails(image, masks, size=48, window=(5000, 6000))  # a window above every value: black
    assert (dark[0][unmarked][:, :3] == 0).all()


@pytest.mark.parametrize("image, masks, size, message", [
    (np.zeros((4, 5, 6)), [np.zeros((4, 5), bool)], 32, "one 2D slice"),
    (np.zeros((4, 5)), [], 32, "at least one mask"),
    (np.zeros((4, 5)), [np.zeros((5, 4), bool)], 32, "the slice's shape"),
    (np.zeros((4, 5)), [np.zeros((4, 5), bool)], 4, "too small"),
])
def test_bad_input_is_named(image, masks, size, message):
    with pytest.raises(ValueError, match=message):
        choice_thumbnails(image, masks, size=size)


def test_prompt_points_are_drawn_as_dots_where_they_are():
    shape = (100, 100)
    image = np.full(shape, 0.5)
    masks = [disc(shape, (40, 60), 20)]
    marks = prompt_marks(shape, positive=[(60, 40)], negative=[(75, 20), (500, 3)])  # (x, y); one outside: dropped
    assert marks[40, 60] == 1 and marks[20, 75] == -1 and np.abs(marks).sum() == 2
    picture = choice_thumbnails(image, masks, size=64, window=(0, 1), marks=marks)[0]
    green = np.argwhere((picture[..., :3] == GREEN).all(-1)).mean(0)
    red = np.argwhere((picture[..., :3] == RED).all(-1)).mean(0)
    rows, cols = crop_around(masks, shape)
    scale = 64 / (rows.stop - rows.start)
    assert np.allclose(green, ((40 - rows.start + 0.5) * scale, (60 - cols.start + 0.5) * scale), atol=1.5)
    assert np.allclose(red, ((20 - rows.start + 0.5) * scale, (75 - cols.start + 0.5) * scale), atol=1.5)


def test_a_box_prompt_is_outlined_and_shown_whole():
    """The region holds the box even where the masks are smaller, and the box is drawn around its pixels."""
    shape = (200, 200)
    masks = [disc(shape, (100, 100), 5)]
    marks = prompt_marks(shape, box=(70, 80, 130, 120))  # x0, y0, x1, y1: wider than the masks
    assert (marks == BOX_MARK).sum() == 2
    picture = choice_thumbnails(np.zeros(shape), masks, size=64, window=(0, 1), marks=marks)[0]
    cyan = np.argwhere((picture[..., :3] == CYAN).all(-1))
    rows, cols = crop_around([masks[0], marks != 0], shape)
    assert rows.start <= 80 and rows.stop > 120 and cols.start <= 70 and cols.stop > 130
    scale = 64 / (rows.stop - rows.start)
    assert cyan[:, 0].min() == int((80 - rows.start) * scale) and cyan[:, 1].max() == int((131 - cols.start) * scale)


def test_tall_pixels_are_drawn_in_their_physical_shape():
    """A disc of radius 20 mm on 1 mm x 4 mm pixels (a coronal slice of 4 mm slices: an ellipse 4x flatter than wide
    in pixels) is round in the thumbnail with its aspect; the point at its centre and the box around it follow."""
    rows_, cols_ = np.mgrid[:40, :120]
    mask = (rows_ * 4.0 - 80) ** 2 + (cols_ - 60.0) ** 2 < 20 ** 2
    marks = prompt_marks(mask.shape, positive=[(60, 20)], box=(40, 15, 80, 25))
    flat, round_ = (choice_thumbnails(np.zeros(mask.shape), [mask], size=64, window=(0, 1), marks=marks,
                                      aspect=a)[0] for a in (1.0, 4.0))
    for picture, (low, high) in ((round_, (0.85, 1.15)), (flat, (0.1, 0.4))):
        ys, xs = np.nonzero((picture[..., :3] == YELLOW).all(-1))
        assert low < (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1) < high
    ys, xs = np.nonzero((round_[..., :3] == YELLOW).all(-1))
    green = np.argwhere((round_[..., :3] == GREEN).all(-1)).mean(0)
    assert abs(green[0] - (ys.min() + ys.max()) / 2) < 3 and abs(green[1] - (xs.min() + xs.max()) / 2) < 3
    cyan = np.argwhere((round_[..., :3] == CYAN).all(-1))  # the box: 40 mm tall (10 rows), 40 mm wide
    assert 0.8 < (np.ptp(cyan[:, 0]) + 1) / (np.ptp(cyan[:, 1]) + 1) < 1.25
    rows, cols = crop_around([mask, marks != 0], mask.shape, aspect=4.0)
    assert abs((rows.stop - rows.start) * 4.0 - (cols.stop - cols.start)) <= 4  # a square region in millimetres


def test_a_reference_is_outlined_in_green_and_each_mask_can_have_its_own_prompts():
    """The truth outlined on every picture (and inside the region), and one prompt per mask: a point on the first,
    a box on the second."""
    shape = (100, 100)
    truth, small = disc(shape, (50, 50), 30), disc(shape, (50, 50), 8)
    point = prompt_marks(shape, positive=[(50, 50)])
    box = prompt_marks(shape, box=(40, 40, 60, 60))
    pictures = choice_thumbnails(np.full(shape, 0.5), [small, small], size=64, window=(0, 1), marks=[point, box],
                                 reference=truth, fill=0.0)
    green = (pictures[..., :3] == GREEN).all(axis=-1)
    cyan = (pictures[..., :3] == CYAN).all(axis=-1)
    rows, cols = np.nonzero(green[1])
    assert rows.max() - rows.min() > 30 and cols.max() - cols.min() > 30  # the reference's outline, whole
    assert not cyan[0].any() and cyan[1].any()  # the box drawn only where it was given
    assert green[0].sum() > green[1].sum()  # the point's dot is green too
    with pytest.raises(ValueError, match="one per mask"):
        choice_thumbnails(np.zeros(shape), [small, small], marks=[point])
