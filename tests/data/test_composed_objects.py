"""Composed objects: one object per canvas, labelled with its class, split as the detection
canvases; batches, spec and config checks."""

import ml_collections
import numpy as np
import pytest

from jaxformer import registry
from jaxformer.data import composed_detection, composed_objects
from jaxformer.data.composed_detection import CLASS_NAMES


def config(**overrides):
    return ml_collections.ConfigDict({"name": "composed_objects", "train_examples": 64,
                                      "eval_examples": 10, **overrides})


@pytest.fixture(scope="module")
def data():
    return composed_objects.build(config(), workdir=None)


def test_each_example_is_a_one_object_canvas_and_its_class(data):
    for split, source in {"train": data.train_source, **data.eval_sources}.items():
        for index in range(5):
            canvas = source.canvas(index)
            assert len(canvas.labels) == 1, split
            example = source[index]
            np.testing.assert_array_equal(example["image"], canvas.image)
            assert example["label"] == canvas.labels[0]
            assert example["label"].dtype == np.int32


def test_splits_are_those_of_the_detection_canvases(data):
    objects = composed_detection.load_objects()
    for split, source in {"train": data.train_source, **data.eval_sources}.items():
        assert source.objects.ids == objects[split].ids, split


def test_batches_and_labels_over_all_classes(data):
    batch = next(data.train_iter(batch_size=8, seed=0))
    assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.float32
    labels = [data.train_source[i]["label"] for i in range(64)]
    assert 0 <= min(labels) and max(labels) < len(CLASS_NAMES) == data.num_classes
    assert len(set(labels)) > 10
    eval_batch = next(data.eval_iter(batch_size=8, num_batches=1, split="test"))
    assert eval_batch["label"].tolist() == [data.eval_sources["test"][i]["label"]
                                            for i in range(8)]


def test_spec_matches_the_data(data):
    spec = registry.lookup("data", "composed_objects").spec(config())
    assert spec.class_names == CLASS_NAMES and spec.image_shape == data.image_shape


@pytest.mark.parametrize("values, message", [
    ({"max_object_size": 100}, "max_object_size"),
    ({"background": "noise"}, "background"),
    ({"train_examples": 0}, "train_examples"),
])
def test_bad_settings(values, message):
    with pytest.raises(ValueError, match=message):
        composed_objects.check_config(config(**values))
