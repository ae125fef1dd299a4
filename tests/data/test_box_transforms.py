"""Box-aware transforms on hand-made boxes: exact results of resize, crop, flip, cxcywh and
padding, and the steps' draws."""

import numpy as np
import pytest

from jaxformer.data import box_transforms
from jaxformer.data.box_transforms import (
    BoxesToCxcywh,
    FitShorterSide,
    FlipWithBoxes,
    PadBoxes,
    RandomSelect,
    RandomShorterSide,
    RandomSizeCrop,
)
from jaxformer.data.transforms import Compose, Draws, no_draws


def example(height, width, boxes, labels=None, channels=1):
    """An image whose pixels inside each box hold 10 * (box number + 1)."""
    image = np.zeros((height, width, channels), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        image[y0:y1, x0:x1] = 10 * (i + 1)
    labels = np.arange(len(boxes), dtype=np.int32) if labels is None else labels
    return {"image": image, "boxes": np.array(boxes, np.float32).reshape(-1, 4),
            "labels": np.array(labels, np.int32), "id": "kept"}


def pixel_box(image, value):
    """The xyxy extent of the pixels holding `value`."""
    rows, columns = np.nonzero(image[..., 0] == value)
    return [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]


def draw(index, count):
    """The uniform that `Draws.integers(count)` maps to `index`."""
    return (index + 0.5) / count


def test_flip_mirrors_a_known_box_with_its_pixels():
    features = example(4, 6, [[1, 0, 3, 2]])
    flipped = box_transforms.flip_with_boxes(features)
    np.testing.assert_array_equal(flipped["boxes"], [[3, 0, 5, 2]])
    assert pixel_box(flipped["image"], 10) == [3, 0, 5, 2]
    np.testing.assert_array_equal(box_transforms.flip_with_boxes(flipped)["boxes"],
                                  features["boxes"])
    assert flipped["id"] == "kept"


def test_crop_clips_one_box_and_drops_another():
    features = example(10, 10, [[2, 2, 6, 6], [8, 8, 10, 10], [0, 0, 3, 3]], [5, 7, 9])
    cropped = box_transforms.crop_with_boxes(features, top=1, left=1, height=6, width=6)
    assert cropped["image"].shape == (6, 6, 1)
    np.testing.assert_array_equal(cropped["boxes"], [[1, 1, 5, 5], [0, 0, 2, 2]])
    np.testing.assert_array_equal(cropped["labels"], [5, 9])
    assert cropped["boxes"].dtype == np.float32 and cropped["labels"].dtype == np.int32
    assert pixel_box(cropped["image"], 10) == [1, 1, 5, 5]
    empty = box_transforms.crop_with_boxes(features, top=0, left=6, height=4, width=2)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    with pytest.raises(ValueError, match="leaves the 10x10 image"):
        box_transforms.crop_with_boxes(features, top=5, left=0, height=6, width=6)


def test_crowd_flags_and_areas_follow_their_boxes():
    features = {**example(10, 10, [[2, 2, 6, 6], [8, 8, 10, 10], [0, 0, 3, 3]], [5, 7, 9]),
                "crowd": np.array([False, True, True]), "area": np.array([12.0, 3.0, 6.0])}
    cropped = box_transforms.crop_with_boxes(features, top=1, left=1, height=6, width=6)
    assert cropped["crowd"].tolist() == [False, True]  # The box of label 7 left the crop.
    # The third box keeps 2 x 2 of its 3 x 3 pixels: its area shrinks by 4/9.
    np.testing.assert_allclose(cropped["area"], [12.0, 6.0 * 4 / 9], rtol=1e-6)
    resized = box_transforms.resize_with_boxes(cropped, height=12, width=3)
    np.testing.assert_allclose(resized["area"], [12.0, 8 / 3], rtol=1e-6)  # 2 x 0.5: the same.
    resized = box_transforms.resize_with_boxes(cropped, height=12, width=12)
    np.testing.assert_allclose(resized["area"], [48.0, 32 / 3], rtol=1e-6)
    padded = PadBoxes(height=12, width=12, max_boxes=4)(resized, no_draws())
    assert "crowd" not in padded
    np.testing.assert_array_equal(padded["box_mask"], [True, False, False, False])
    np.testing.assert_array_equal(padded["crowd_mask"], [False, True, False, False])
    np.testing.assert_array_equal(padded["labels"], [5, 9, 0, 0])
    np.testing.assert_allclose(padded["area"], [48.0, 32 / 3, 0, 0], rtol=1e-6)
    assert padded["area"].dtype == np.float32


def test_resize_scales_boxes_with_the_image():
    features = example(20, 40, [[4, 2, 20, 10]])
    resized = FitShorterSide(10)(features, no_draws())
    assert resized["image"].shape == (10, 20, 1)
    np.testing.assert_array_equal(resized["boxes"], [[2, 1, 10, 5]])
    # The longer side is capped by max_size: 30 on the short side would make it 60 > 48.
    capped = FitShorterSide(30, max_size=48)(features, no_draws())
    assert capped["image"].shape == (24, 48, 1)
    np.testing.assert_allclose(capped["boxes"], [[4.8, 2.4, 24, 12]])


@pytest.mark.parametrize("shape,size,max_size,expected", [
    ((20, 40), 20, None, (20, 40)),       # Already there.
    ((30, 45), 20, None, (20, 30)),
    ((7, 10), 5, None, (5, 7)),           # The longer side rounded down, as DETR does.
    ((10, 7), 5, None, (7, 5)),
    ((20, 40), 30, 40, (20, 40)),         # Capped: the shorter side becomes 20.
    ((480, 640), 800, 1333, (800, 1066)),
    ((480, 1280), 800, 1333, (500, 1333)),
    ((3, 500), 64, 64, (1, 64)),          # A sliver keeps one pixel (not 0) across.
    # The capped shorter side rounds back to its own size; the longer is still capped.
    ((600, 1334), 800, 1333, (600, 1333)),
    ((10, 66), 64, 64, (10, 64)),
    ((100, 1), 64, 64, (64, 1)),
])
def test_shorter_side_shape(shape, size, max_size, expected):
    assert box_transforms.shorter_side_shape(*shape, size, max_size) == expected


def test_cxcywh_is_relative_to_the_image_and_clipped():
    boxes = np.array([[2, 4, 8, 10], [-2, 0, 4, 12]], np.float32)
    np.testing.assert_allclose(box_transforms.xyxy_to_cxcywh(boxes, height=10, width=20),
                               [[0.25, 0.7, 0.3, 0.6], [0.1, 0.5, 0.2, 1.0]])
    features = example(10, 20, [[2, 4, 8, 10]])
    np.testing.assert_allclose(BoxesToCxcywh()(features, no_draws())["boxes"],
                               [[0.25, 0.7, 0.3, 0.6]])
    assert box_transforms.xyxy_to_cxcywh(np.zeros((0, 4)), 10, 20).shape == (0, 4)


def test_padding_masks_pixels_and_boxes():
    features = example(3, 5, [[0, 0, 2, 2], [3, 1, 5, 3]], [4, 6], channels=3)
    padded = PadBoxes(height=4, width=6, max_boxes=4)(features, no_draws())
    assert padded["image"].shape == (4, 6, 3) and padded["image"].dtype == np.uint8
    np.testing.assert_array_equal(padded["image"][:3, :5], features["image"])
    assert not padded["image"][3:].any() and not padded["image"][:, 5:].any()
    expected_mask = np.zeros((4, 6), bool)
    expected_mask[:3, :5] = True
    np.testing.assert_array_equal(padded["pixel_mask"], expected_mask)
    np.testing.assert_array_equal(padded["size"], [3, 5])
    np.testing.assert_array_equal(padded["box_mask"], [True, True, False, False])
    np.testing.assert_array_equal(padded["labels"], [4, 6, 0, 0])
    np.testing.assert_array_equal(padded["boxes"][2:], 0)
    np.testing.assert_array_equal(padded["boxes"][:2], features["boxes"])
    assert padded["size"].dtype == np.int32 and padded["boxes"].dtype == np.float32
    with pytest.raises(ValueError, match="3 boxes, more than max_boxes 2"):
        box_transforms.pad_example(example(3, 5, [[0, 0, 1, 1]] * 3), 4, 6, 2)
    with pytest.raises(ValueError, match="cannot pad a 3x5 image to 4x4"):
        box_transforms.pad_example(features, 4, 4, 4)
    normalised = {**features, "image": features["image"].astype(np.float32) - 1}
    assert box_transforms.pad_example(normalised, 4, 6, 2)["image"][3, 5, 0] == 0.0


def test_random_shorter_side_picks_the_drawn_size():
    features = example(20, 40, [[4, 2, 20, 10]])
    step = RandomShorterSide((5, 10, 20), max_size=80)
    assert step.num_draws == 1
    for index, size in enumerate((5, 10, 20)):
        out = step(features, Draws(np.array([draw(index, 3)])))
        assert out["image"].shape == (size, 2 * size, 1)
        np.testing.assert_allclose(out["boxes"], features["boxes"] * size / 20)


def test_random_size_crop_uses_its_four_draws():
    features = example(10, 12, [[2, 2, 6, 6], [8, 8, 12, 10]])
    step = RandomSizeCrop(4, 8)
    assert step.num_draws == 4
    # Height 4 + 2 = 6 of [4, 8], width 4 + 4 = 8, top 3 of [0, 4], left 1 of [0, 4].
    uniforms = np.array([draw(2, 5), draw(4, 5), draw(3, 5), draw(1, 5)])
    out = step(features, Draws(uniforms))
    expected = box_transforms.crop_with_boxes(features, top=3, left=1, height=6, width=8)
    np.testing.assert_array_equal(out["image"], expected["image"])
    np.testing.assert_array_equal(out["boxes"], [[1, 0, 5, 3], [7, 5, 8, 6]])
    # A crop size larger than the image is bounded by it.
    small = example(3, 3, [[0, 0, 3, 3]])
    whole = step(small, Draws(np.array([0.99, 0.99, 0.0, 0.0])))
    np.testing.assert_array_equal(whole["image"], small["image"])


def test_flip_step_takes_its_draw_even_when_off():
    features = example(4, 6, [[1, 0, 3, 2]])
    assert FlipWithBoxes(0.0).num_draws == 1
    draws = Draws(np.array([0.3]))
    assert FlipWithBoxes(0.0)(features, draws) is features and draws.next == 1
    flipped = FlipWithBoxes(0.5)(features, Draws(np.array([0.3])))
    np.testing.assert_array_equal(flipped["boxes"], [[3, 0, 5, 2]])
    assert FlipWithBoxes(0.5)(features, Draws(np.array([0.7]))) is features


def test_random_select_chooses_one_branch_with_one_draw():
    features = example(10, 10, [[2, 2, 6, 6]])
    crop_then_resize = Compose((RandomSizeCrop(4, 4), FitShorterSide(8)))
    select = RandomSelect(crop_then_resize, FitShorterSide(5), probability=0.25)
    assert select.num_draws == 5
    assert select(features, Draws(np.array([0.5])))["image"].shape == (5, 5, 1)
    first = select(features, Draws(np.array([0.1, 0.0, 0.0, 0.0, 0.0])))
    assert first["image"].shape == (8, 8, 1)
    np.testing.assert_array_equal(first["boxes"], [[4, 4, 8, 8]])


def test_steps_are_deterministic_for_their_draws_and_pass_other_features():
    rng = np.random.default_rng(0)
    features = example(30, 40, [[2, 3, 20, 25], [25, 5, 39, 29], [10, 20, 30, 30]])
    steps = Compose((FlipWithBoxes(), RandomSelect(
        Compose((RandomSizeCrop(12, 30), RandomShorterSide((16, 24), 32))),
        RandomShorterSide((16, 24), 32)), BoxesToCxcywh(), PadBoxes(32, 32, 3)))
    for _ in range(20):
        uniforms = rng.random(steps.num_draws)
        first, second = steps(features, Draws(uniforms)), steps(features, Draws(uniforms))
        for key in ("image", "boxes", "labels", "pixel_mask", "box_mask", "size"):
            np.testing.assert_array_equal(first[key], second[key])
        assert first["id"] == "kept" and first["image"].shape == (32, 32, 1)
        real = first["boxes"][first["box_mask"]]
        assert ((real >= 0) & (real <= 1)).all() and (real[:, 2:] > 0).all()
