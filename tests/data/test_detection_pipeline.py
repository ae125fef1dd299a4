"""Detection pipeline on hand-made examples: fixed shapes and masks, determinism, process
shards, eval padding, flips that leave the other draws alone, and config checks."""

import itertools

import ml_collections
import numpy as np
import pytest

from jaxformer.data import detection_pipeline
from jaxformer.data.detection_pipeline import DetectionData, DetectionPreprocess
from jaxformer.data.image_pipeline import ArraySource

KEYS = ("image", "pixel_mask", "size", "boxes", "labels", "box_mask")


@pytest.fixture(scope="module")
def source():
    """9 images of 20 x 30, example i with (i % 3) + 1 boxes of label i % 4."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(9, 20, 30, 3), dtype=np.uint8)
    boxes = [np.array([[2, 2, 10, 12], [12, 4, 28, 18], [5, 14, 15, 20]][:i % 3 + 1],
                      np.float32) for i in range(9)]
    labels = [np.full(i % 3 + 1, i % 4, np.int32) for i in range(9)]
    return ArraySource({"image": images, "boxes": boxes, "labels": labels})


def make_data(source, **kwargs):
    settings = {"scales": (16, 20), "max_size": 32, "max_boxes": 3, "crop_size": (10, 20),
                "crop_probability": 0.5, "flip": True, **kwargs}
    return DetectionData(train_source=source, eval_sources={"test": source},
                         class_names=tuple("abcd"), preprocess=DetectionPreprocess(**settings))


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def test_train_batches_have_fixed_shapes_and_consistent_masks(source):
    data = make_data(source)
    assert data.image_shape == (32, 32, 3) and data.max_boxes == 3 and data.num_classes == 4
    for batch in take(data.train_iter(batch_size=4, seed=0), 5):
        assert {key: (batch[key].shape, batch[key].dtype.name) for key in KEYS} == {
            "image": ((4, 32, 32, 3), "float32"), "pixel_mask": ((4, 32, 32), "bool"),
            "size": ((4, 2), "int32"), "boxes": ((4, 3, 4), "float32"),
            "labels": ((4, 3), "int32"), "box_mask": ((4, 3), "bool")}
        for row in range(4):
            height, width = batch["size"][row]
            assert batch["pixel_mask"][row].sum() == height * width
            assert batch["pixel_mask"][row, :height, :width].all()
            assert not batch["image"][row][~batch["pixel_mask"][row]].any()
            assert min(height, width) <= 20 and max(height, width) <= 32
        real = batch["boxes"][batch["box_mask"]]
        assert ((real >= 0) & (real <= 1)).all()
        assert not batch["boxes"][~batch["box_mask"]].any()


def test_same_seed_same_batches_and_processes_take_blocks(source):
    data = make_data(source)
    whole = take(data.train_iter(batch_size=4, seed=3), 3)
    again = take(data.train_iter(batch_size=4, seed=3), 3)
    halves = [take(data.train_iter(batch_size=2, seed=3, process_index=p, process_count=2), 3)
              for p in range(2)]
    for step in range(3):
        for key in KEYS:
            np.testing.assert_array_equal(whole[step][key], again[step][key])
            np.testing.assert_array_equal(whole[step][key], np.concatenate(
                [halves[0][step][key], halves[1][step][key]]))


def test_flips_leave_the_other_draws_alone(source):
    """With flips on, each row is the row without flips, or its mirror image."""
    plain = take(make_data(source, flip=False).train_iter(batch_size=9, seed=1), 2)
    flipped = take(make_data(source).train_iter(batch_size=9, seed=1), 2)
    mirrored = 0
    for a, b in zip(plain, flipped):
        np.testing.assert_array_equal(a["size"], b["size"])
        for row in range(9):
            width = a["size"][row, 1]
            same = np.array_equal(a["image"][row], b["image"][row])
            if not same:
                np.testing.assert_array_equal(a["image"][row, :, :width],
                                              b["image"][row, :, :width][:, ::-1])
                mirror = a["boxes"][row] * [-1, 1, 1, 1] + [1, 0, 0, 0]
                np.testing.assert_allclose(b["boxes"][row][a["box_mask"][row]],
                                           mirror[a["box_mask"][row]], atol=1e-6)
            mirrored += not same
    assert 0 < mirrored < 18


def test_eval_reads_in_order_at_the_largest_scale_and_pads_with_zeros(source):
    data = make_data(source)
    batches = list(data.eval_iter(batch_size=4, num_batches=-1))
    assert len(batches) == 3
    sizes = np.concatenate([b["size"] for b in batches])
    np.testing.assert_array_equal(sizes[:9], [[20, 30]] * 9)
    np.testing.assert_array_equal(sizes[9:], 0)
    masks = np.concatenate([b["box_mask"] for b in batches])
    np.testing.assert_array_equal(masks.sum(1), [i % 3 + 1 for i in range(9)] + [0] * 3)
    first = batches[0]
    np.testing.assert_allclose(first["boxes"][0, 0], [6 / 30, 7 / 20, 8 / 30, 10 / 20])
    expected = source[0]["image"].astype(np.float32) / 127.5 - 1  # mean = std = 0.5
    np.testing.assert_allclose(first["image"][0, :20, :30], expected, atol=1e-6)
    for key in KEYS:
        assert not batches[-1][key][1:].any()


def test_labels_out_of_range_are_an_error(source):
    data = DetectionData(train_source=source, eval_sources={"test": source},
                         class_names=("a", "b"), preprocess=DetectionPreprocess(
                             scales=(20,), max_size=32, max_boxes=3, crop_size=(10, 20)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        list(data.eval_iter(batch_size=9, num_batches=1))


@pytest.mark.parametrize("values,message", [
    ({"scales": (16, 40)}, r"scales \(16, 40\) pass max_size 32"),
    ({"scales": (16, 0)}, "scales must be positive integers"),
    ({"scales": "big"}, "scales must be positive integers"),
    ({"crop_size": (20, 10)}, r"crop_size \(20, 10\) must be \(min, max\)"),
    ({"crop_size": (10,)}, "crop_size must be 2 positive integers"),
    ({"crop_probability": 2.0}, r"crop_probability must be in \[0, 1\]"),
    ({"mean": (0.5, 0.5)}, "mean needs 1 or 3 values"),
    ({"std": (0.0,)}, "std must be positive"),
    ({"max_boxes": -1}, "data.max_boxes must be an integer >= 0"),
])
def test_bad_preprocessing(values, message):
    config = ml_collections.ConfigDict({"max_size": 32, **values})
    with pytest.raises(ValueError, match=message):
        detection_pipeline.check_detection_config(config, channels=3, scales=(16,),
                                                  crop_size=(8, 16), max_boxes=4)


def test_preprocessing_defaults_come_from_the_data_set():
    preprocess = detection_pipeline.check_detection_config(
        ml_collections.ConfigDict({"flip": True}), channels=3, scales=(48, 64),
        crop_size=(32, 64), max_boxes=5)
    assert preprocess == DetectionPreprocess(scales=(48, 64), max_size=64, max_boxes=5,
                                             crop_size=(32, 64), flip=True)
