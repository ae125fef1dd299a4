"""Composed detection canvases: determinism, exact boxes, the overlap limit, disjoint source
objects per split, batches and their resume, spec and config checks."""

import itertools

import ml_collections
import numpy as np
import pytest

from jaxformer import registry
from jaxformer.data import composed_detection as composed
from jaxformer.data.composed_detection import CLASS_NAMES, SPLITS, ComposedSource, Layout
from jaxformer.data.detection_pipeline import DetectionSpec

KEYS = ("image", "pixel_mask", "size", "boxes", "labels", "box_mask")


def config(**overrides):
    return ml_collections.ConfigDict({"name": "composed_detection", "train_examples": 64,
                                      "eval_examples": 10, **overrides})


@pytest.fixture(scope="module")
def objects():
    return composed.load_objects()


@pytest.fixture(scope="module")
def data():
    return composed.build(config(), workdir=None)


def source(objects, split="train", seed=0, **layout):
    return ComposedSource(objects[split], Layout(**layout), split=split, size=1000, seed=seed)


def canvases(source, count, start=0):
    return [source.canvas(i) for i in range(start, start + count)]


def assert_same_canvas(a, b):
    for key in ("image", "boxes", "labels", "masks"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.objects == b.objects


def test_a_canvas_depends_on_seed_split_and_index_only(objects):
    train = source(objects)
    later = train.canvas(7)
    assert_same_canvas(train.canvas(5), source(objects).canvas(5))  # Read in another order.
    assert_same_canvas(later, source(objects).canvas(7))
    assert not np.array_equal(train.canvas(5).image, source(objects, seed=1).canvas(5).image)
    assert not np.array_equal(train.canvas(5).image, train.canvas(6).image)
    validation = source(objects, "validation")
    assert not np.array_equal(validation.canvas(5).image, train.canvas(5).image)
    example = train[5]
    assert set(example) == {"image", "boxes", "labels"}
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert example["boxes"].dtype == np.float32 and example["labels"].dtype == np.int32


def test_boxes_are_the_tight_extent_of_the_drawn_pixels(objects):
    """On a plain background with boxes that do not overlap, the pixels that differ from the
    background are the objects', and each box is exactly their extent."""
    for canvas in canvases(source(objects, "test", max_iou=0.0, textured=False,
                                  max_objects=6), 30):
        outside = ~canvas.masks.any(0)
        colour = canvas.image[outside][0]
        assert (canvas.image[outside] == colour).all()
        changed = (canvas.image != colour).any(-1)
        for box, mask in zip(canvas.boxes, canvas.masks):
            rows, columns = np.nonzero(mask)
            assert [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1] == list(box)
            rows, columns = np.nonzero(changed & mask)
            assert [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1] == list(box)


def test_overlap_limit_and_object_counts(objects):
    counts = []
    for max_iou in (0.0, 0.2):
        for canvas in canvases(source(objects, max_iou=max_iou, max_objects=8), 40):
            counts.append(len(canvas.labels))
            for a, b in itertools.combinations(canvas.boxes, 2):
                assert composed.box_iou(a, b[None])[0] <= max_iou
            sizes = (canvas.boxes[:, 2:] - canvas.boxes[:, :2]).max(-1)
            assert ((sizes >= 6) & (sizes <= 32)).all()
    assert min(counts) >= 1 and max(counts) <= 8 and len(set(counts)) > 3


def test_splits_place_disjoint_source_objects(objects):
    ids = {split: {name for group in objects[split].ids for name in group}
           for split in SPLITS}
    for first, second in itertools.combinations(SPLITS, 2):
        assert not ids[first] & ids[second]
    assert all(name.startswith(("fashion_mnist/test/", "emoji/")) for name in ids["test"])
    emojis = [{name for name in ids[split] if name.startswith("emoji/")} for split in SPLITS]
    assert [len(names) for names in emojis] == [373, 122, 120]  # 615 emoji in 10 classes.
    assert all(int(name.split("/")[-1]) % 10 == 9
               for name in ids["validation"] if name.startswith("fashion_mnist"))
    for split in SPLITS:
        assert len(objects[split].tiles) == len(CLASS_NAMES) == 20
        assert all(len(tiles) > 0 for tiles in objects[split].tiles)
        for canvas in canvases(source(objects, split), 10):
            assert set(canvas.objects) <= ids[split]


def test_labels_cover_every_class_in_range(objects):
    labels = np.concatenate([c.labels for c in canvases(source(objects), 250)])
    assert labels.min() >= 0 and labels.max() < len(CLASS_NAMES)
    assert len(np.unique(labels)) == len(CLASS_NAMES)


def test_batches_have_the_expected_shapes_and_dtypes(data):
    assert data.class_names == CLASS_NAMES and data.eval_splits == ("validation", "test")
    expected = {"image": ((4, 64, 64, 3), "float32"), "pixel_mask": ((4, 64, 64), "bool"),
                "size": ((4, 2), "int32"), "boxes": ((4, 4, 4), "float32"),
                "labels": ((4, 4), "int32"), "box_mask": ((4, 4), "bool")}
    train = next(data.train_iter(batch_size=4, seed=0))
    last = list(data.eval_iter(batch_size=4, num_batches=-1, split="test"))[-1]
    for batch in (train, last):
        assert {key: (batch[key].shape, batch[key].dtype.name) for key in KEYS} == expected
    assert train["pixel_mask"].all() and (train["size"] == 64).all()
    assert train["box_mask"].any(1).all()
    assert train["image"].min() >= -1 and train["image"].max() <= 1
    real = train["boxes"][train["box_mask"]]
    assert ((real > 0) & (real <= 1)).all()
    assert last["box_mask"][:2].any(1).all() and not last["pixel_mask"][2:].any()
    # Evaluation sees the canvas as composed, normalised like the other image data sets.
    first = next(data.eval_iter(batch_size=1, num_batches=1, split="validation"))
    example = data.eval_sources["validation"][0]
    np.testing.assert_allclose(first["image"][0], example["image"] / 127.5 - 1, atol=1e-6)
    count = len(example["labels"])
    np.testing.assert_array_equal(first["labels"][0, :count], example["labels"])
    x0, y0, x1, y1 = example["boxes"].T / 64
    np.testing.assert_allclose(first["boxes"][0, :count],
                               np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1))


def test_resume_gives_the_same_next_batch(data):
    iterator = data.train_iter(batch_size=4, seed=2)
    list(itertools.islice(iterator, 2))
    state = iterator.get_state()
    expected = next(iterator)
    resumed = data.train_iter(batch_size=4, seed=2)
    resumed.set_state(state)
    batch = next(resumed)
    for key in KEYS:
        np.testing.assert_array_equal(batch[key], expected[key])


def test_multi_scale_augmentation_keeps_shapes_fixed():
    data = composed.build(config(scales=(40, 48, 64), crop_probability=0.5, flip=True,
                                 max_boxes=6), workdir=None)
    batches = list(itertools.islice(data.train_iter(batch_size=8, seed=0), 3))
    sizes = np.concatenate([b["size"] for b in batches])
    assert {tuple(size) for size in sizes} > {(40, 40), (64, 64)}
    for batch in batches:
        assert batch["image"].shape == (8, 64, 64, 3) and batch["boxes"].shape == (8, 6, 4)
        for row in range(8):
            height, width = batch["size"][row]
            assert batch["pixel_mask"][row].sum() == height * width


@pytest.mark.parametrize("values", [{}, {"canvas_size": 96, "max_object_size": 48,
                                         "scales": (64, 96), "max_boxes": 10}])
def test_spec_matches_the_data(tmp_path, values):
    spec = composed.spec(config(**values, data_dir=str(tmp_path)))
    assert isinstance(spec, DetectionSpec) and not any(tmp_path.iterdir())
    data = composed.build(config(**values), workdir=None)
    assert spec.class_names == data.class_names and spec.num_classes == data.num_classes == 20
    assert spec.image_shape == data.image_shape and spec.max_boxes == data.max_boxes


def test_registered():
    assert "composed_detection" in registry.available("data")
    assert registry.lookup("data", "composed_detection") is composed


@pytest.mark.parametrize("values,message", [
    ({"min_objects": 3, "max_objects": 2}, "min_objects <= max_objects"),
    ({"max_object_size": 80}, "max_object_size <= canvas_size"),
    ({"min_object_size": 2}, "4 <= min_object_size"),
    ({"max_iou": 1.5}, r"max_iou must be in \[0, 1\]"),
    ({"max_iou": "none"}, "data.max_iou must be a number"),
    ({"background": "noise"}, "unknown data.background 'noise'; available: textured, plain"),
    ({"max_boxes": 3}, "data.max_boxes 3 is below max_objects 4"),
    ({"train_examples": 0}, "data.train_examples must be an integer >= 1"),
    ({"canvas_seed": -1}, "data.canvas_seed must be an integer >= 0"),
    ({"fashion_mnist_source": "web"}, "unknown data.fashion_mnist_source 'web'"),
    ({"fashion_mnist_source": "full", "data_dir": "/nonexistent"},
     "full Fashion-MNIST is not in /nonexistent"),
    ({"scales": (48, 96), "max_size": 64}, "bad detection preprocessing.*pass max_size 64"),
])
def test_bad_settings(values, message):
    with pytest.raises(ValueError, match=message):
        composed.check_config(config(**values))
