"""COCO 2017 detection through tfds, on mock data: the data set's metadata (written here, as a
prepared data dir holds it) and hand-written records, read through tfds: COCO category ids,
crowd regions flagged and out of the targets, boxes of no area dropped, tfds boxes as relative
cxcywh, config checks."""

import contextlib
import os
import types

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer import config as config_lib
from jaxformer import registry
from jaxformer.data import coco_detection
from jaxformer.data.coco_detection import CLASS_NAMES, COCO_IDS
from jaxformer.data.detection_pipeline import DetectionSpec
from jaxformer.errors import UserError
from jaxformer.train import trainer
from tests.helpers import ROOT, write_tfds_metadata

SPLITS = ("train", "validation", "test")
KEYS = ("image", "pixel_mask", "size", "boxes", "labels", "box_mask")


def write_metadata(data_dir) -> None:
    """The metadata of a prepared `coco/2017` (`tests.helpers.write_tfds_metadata`)."""
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "image/filename": tfds.features.Text(),
        "image/id": np.int64,
        "objects": tfds.features.Sequence({
            "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
            "label": tfds.features.ClassLabel(num_classes=80), "is_crowd": np.bool_}),
    })
    write_tfds_metadata(data_dir, "coco", "2017", "object_detection.coco", features, SPLITS,
                        examples=3)


def record(height, width, boxes, labels, crowd):
    """A record as tfds's data source decodes it: boxes relative (ymin, xmin, ymax, xmax)."""
    rng = np.random.default_rng(height * width)
    n = len(labels)
    return {"image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            "image/filename": "x.jpg", "image/id": np.int64(height),
            "objects": {"bbox": np.array(boxes, np.float32).reshape(n, 4),
                        "label": np.array(labels, np.int64), "is_crowd": np.array(crowd, bool),
                        "area": np.arange(100, 100 + n, dtype=np.int64),
                        "id": np.arange(n, dtype=np.int64)}}


RECORDS = [
    # 40 x 60: a person, a crowd of stop signs, a toothbrush, a box of no area.
    record(40, 60, [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1], [0.25, 0.5, 0.75, 1], [0.3, 0.3, 0.3, 0.6]],
           [0, 11, 79, 5], [False, True, False, False]),
    # 30 x 30: one stop sign over the whole image.
    record(30, 30, [[0, 0, 1, 1]], [11], [False]),
    # 20 x 40: no object.
    record(20, 40, [], [], []),
]
# Relative cxcywh and COCO ids of each record's boxes that are kept.
EXPECTED = [([[0.4, 0.3, 0.4, 0.4], [0.75, 0.5, 0.5, 0.5]], [1, 90]),
            ([[0.5, 0.5, 1, 1]], [13]),
            (np.zeros((0, 4)), [])]


@contextlib.contextmanager
def mocked_coco(data_dir):
    """`RECORDS` as every split of coco/2017 in `data_dir` (metadata written there)."""
    write_metadata(data_dir)

    def as_data_source(builder, split, **kwargs):
        del kwargs
        assert builder.name == "coco" and builder.info.features["objects"]["label"].num_classes
        return RECORDS

    with tfds.testing.mock_data(data_dir=str(data_dir), policy=tfds.testing.MockPolicy.USE_FILES,
                                as_data_source_fn=as_data_source):
        yield data_dir


@pytest.fixture
def mock_coco(tmp_path):
    with mocked_coco(tmp_path) as data_dir:
        yield data_dir


def config(data_dir, **overrides):
    return ml_collections.ConfigDict({"name": "coco_detection", "data_dir": str(data_dir),
                                      "scales": (24, 32), "max_size": 64, "crop_size": (16, 24),
                                      "max_boxes": 4, **overrides})


def test_category_ids_and_names():
    assert len(COCO_IDS) == 80 and len(CLASS_NAMES) == 91
    assert COCO_IDS[[0, 11, 79]].tolist() == [1, 13, 90]
    assert [CLASS_NAMES[i] for i in (1, 13, 90)] == ["person", "stop sign", "toothbrush"]
    assert [i for i, name in enumerate(CLASS_NAMES) if name == "N/A"] == [
        0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_examples_carry_coco_ids_pixel_boxes_and_crowd_flags():
    first = coco_detection.example(RECORDS[0], max_boxes=100)
    assert first["image"].shape == (40, 60, 3)
    np.testing.assert_allclose(first["boxes"], [[12, 4, 36, 20], [0, 0, 60, 40],
                                                [30, 10, 60, 30]], rtol=1e-6)
    assert first["labels"].tolist() == [1, 13, 90] and first["labels"].dtype == np.int32
    assert first["crowd"].tolist() == [False, True, False]
    assert first["area"].tolist() == [100, 101, 102] and first["area"].dtype == np.float32
    empty = coco_detection.example(RECORDS[2], max_boxes=100)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert empty["crowd"].shape == (0,)


def test_at_most_max_boxes_the_first_in_order():
    many = record(10, 10, [[0, 0, 0.5, 0.5], [0, 0, 1, 1], [0.5, 0.5, 1, 1]], [2, 3, 4],
                  [False] * 3)
    assert coco_detection.example(many, max_boxes=2)["labels"].tolist() == [3, 4]


def test_eval_batches_hold_relative_cxcywh(mock_coco):
    data = coco_detection.build(config(mock_coco), workdir=None)
    assert data.eval_splits == ("validation", "test") and data.num_classes == 91
    assert data.image_shape == (64, 64, 3) and data.max_boxes == 4
    batch = next(data.eval_iter(batch_size=4, num_batches=1, split="test"))
    np.testing.assert_array_equal(batch["size"], [[32, 48], [32, 32], [32, 64], [0, 0]])
    for row, (boxes, labels) in enumerate(EXPECTED):
        real = batch["box_mask"][row]
        np.testing.assert_allclose(batch["boxes"][row][real], boxes, atol=1e-6)
        assert batch["labels"][row][real].tolist() == labels
    assert batch["box_mask"].sum() == 3
    # The crowd of stop signs covers the first image, flagged and out of the targets.
    assert batch["crowd_mask"].tolist() == [[False, True, False, False]] + [[False] * 4] * 3
    np.testing.assert_allclose(batch["boxes"][0][1], [0.5, 0.5, 1, 1], atol=1e-6)
    assert batch["labels"][0][1] == 13
    # Segment areas scale with the image: 40 x 60 -> 32 x 48 is 0.64 of the pixels.
    np.testing.assert_allclose(batch["area"][0][:3], np.array([100, 101, 102]) * 0.64,
                               rtol=1e-5)


def test_train_batches(mock_coco):
    data = coco_detection.build(config(mock_coco, max_boxes=0), workdir=None)
    assert data.max_boxes == 100
    batch = next(data.train_iter(batch_size=4, seed=0))
    assert {key: batch[key].shape for key in KEYS} == {
        "image": (4, 64, 64, 3), "pixel_mask": (4, 64, 64), "size": (4, 2),
        "boxes": (4, 100, 4), "labels": (4, 100), "box_mask": (4, 100)}
    assert set(batch["labels"][batch["box_mask"]].tolist()) <= {1, 13, 90}


def test_runlocal_config_builds_on_it(mock_coco):
    config = config_lib.load_config(os.path.join(ROOT, "configs/detr/coco.py:runlocal"))
    config.unlock().data.data_dir = str(mock_coco)
    data, task = registry.build_data_and_task(config, None)
    assert task.num_classes == 91 and task.model.num_queries == 10
    batch = next(data.train_iter(batch_size=8, seed=0))
    assert batch["image"].shape == (8, 64, 64, 3) and batch["labels"].shape == (8, 100)
    assert batch.keys() == {*task.dummy_batch(8), "crowd_mask", "area"}


def test_spec_without_data(tmp_path):
    spec = coco_detection.spec(ml_collections.ConfigDict({"data_dir": str(tmp_path)}))
    assert isinstance(spec, DetectionSpec) and spec.class_names == CLASS_NAMES
    assert spec.image_shape == (1333, 1333, 3) and spec.max_boxes == 100
    assert not any(tmp_path.iterdir())


def test_paper_preprocessing_by_default(tmp_path):
    result = coco_detection.preprocess(ml_collections.ConfigDict({"data_dir": str(tmp_path)}))
    assert result.scales == tuple(range(480, 801, 32)) and result.max_size == 1333
    assert result.crop_size == (384, 600) and result.crop_probability == 0.5 and result.flip
    assert result.mean == (0.485, 0.456, 0.406) and result.std == (0.229, 0.224, 0.225)


def test_not_prepared(tmp_path):
    data = coco_detection.build(config(tmp_path), workdir=None)  # Opens nothing yet.
    assert data.num_classes == 91 and not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="cannot read coco/2017.*tfds build coco/2017"):
        data.train_iter(batch_size=1, seed=0)


def test_training_without_the_data_writes_nothing(tmp_path):
    """The trainer opens every split before it touches the workdir."""
    config = config_lib.load_config(os.path.join(ROOT, "configs/detr/coco.py:runlocal"))
    config.unlock().data.data_dir = str(tmp_path)
    workdir = tmp_path / "run"
    with pytest.raises(UserError, match="cannot read coco/2017.*tfds build coco/2017"):
        trainer.train(config, str(workdir))
    assert not workdir.exists()


def test_class_names_of_another_classifier(tmp_path):
    data = coco_detection.build(config(tmp_path, class_names=("a", "b")), workdir=None)
    assert data.class_names == ("a", "b")
    with pytest.raises(UserError, match="needs its 91 classes; data.class_names has 2"):
        data.eval_iter(batch_size=1, num_batches=1)


@pytest.mark.parametrize("overrides,message", [
    ({"data_dir": "/nonexistent/tfds"}, "data_dir '/nonexistent/tfds' does not exist"),
    ({"max_boxes": -1}, "data.max_boxes must be an integer >= 0, got -1"),
    ({"max_size": 16}, "bad detection preprocessing in data: scales .* pass max_size 16"),
    ({"crop_probability": 2.0}, "crop_probability must be in \\[0, 1\\]"),
    ({"eval_split": ""}, "data.eval_split must be a tfds split name, got ''"),
    ({"read_threads": "4"}, "data.read_threads must be an integer >= 0"),
])
def test_bad_settings(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        coco_detection.check_config(config(**{"data_dir": tmp_path, **overrides}))


def test_labels_of_another_data_set_are_refused():
    label = tfds.features.ClassLabel(names=["cat", "dog"])
    builder = types.SimpleNamespace(info=types.SimpleNamespace(features={"objects": {
        "label": label}}), data_dir="/d")
    with pytest.raises(ValueError, match="has 2 labels, expected 80"):
        coco_detection.check_labels(builder)
    builder.info.features["objects"]["label"] = tfds.features.ClassLabel(
        names=[f"c{i}" for i in range(80)])
    with pytest.raises(ValueError, match="names its labels"):
        coco_detection.check_labels(builder)
    builder.info.features["objects"]["label"] = tfds.features.ClassLabel(
        names=[CLASS_NAMES[i] for i in COCO_IDS])
    coco_detection.check_labels(builder)


def test_registered():
    assert "coco_detection" in registry.available("data")
