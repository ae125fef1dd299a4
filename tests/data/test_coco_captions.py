"""COCO Captions through tfds, on tfds' mock examples: the data set's metadata (written here,
as a prepared data dir holds it) and random records."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer import registry
from jaxformer.data import coco_captions
from jaxformer.data.image_text_pipeline import ImageTextSpec
from tests.helpers import write_tfds_metadata

SPLITS = ("train", "restval", "val", "test")


def write_metadata(data_dir) -> None:
    """The metadata of a prepared `coco_captions/2014` (`tests.helpers.write_tfds_metadata`)."""
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "image/filename": tfds.features.Text(),
        "image/id": np.int64,
        "objects": tfds.features.Sequence({
            "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
            "label": tfds.features.ClassLabel(num_classes=80), "is_crowd": np.bool_}),
        "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64}),
    })
    write_tfds_metadata(data_dir, "coco_captions", "2014", "object_detection.coco_captions",
                        features, SPLITS, examples=7)


@pytest.fixture
def mock_coco(tmp_path):
    write_metadata(tmp_path)
    with tfds.testing.mock_data(num_examples=7, num_sub_examples=3, data_dir=str(tmp_path),
                                policy=tfds.testing.MockPolicy.USE_FILES):
        yield tmp_path


def config(data_dir, **overrides):
    return ml_collections.ConfigDict({"name": "coco_captions", "data_dir": str(data_dir),
                                      "image_size": 32, "vocab_size": 260, **overrides})


def test_mock_batches(mock_coco, tmp_path):
    data = coco_captions.build(config(mock_coco), workdir=str(tmp_path / "run"))
    assert (tmp_path / "run" / "assets" / "caption_bpe.json").exists()
    batch = next(data.train_iter(batch_size=4, seed=0))
    assert batch.keys() == {"image", "text"}
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["text"].shape == (4, 77) and batch["text"].dtype == np.int32
    assert (batch["text"][:, 0] == data.bos_id).all()
    assert ((batch["text"] == data.eot_id).sum(axis=1) == 1).all()
    assert data.eval_splits == ("val",)
    evaluation = list(data.eval_iter(batch_size=4, num_batches=-1))
    labels = np.concatenate([b["label"] for b in evaluation])
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, 5, 6, -1])
    captions = data.captions("val")
    assert len(captions) == 7 and all(len(group) >= 1 for group in captions)
    assert data.class_names("val") == tuple(group[0] for group in captions)
    assert data.templates("val") == ("{}",)
    decoded = data.tokenizer.decode(evaluation[0]["text"][0])
    assert decoded == captions[0][0].strip().lower()


def test_configured_splits(mock_coco):
    data = coco_captions.build(config(mock_coco, train_split="train+restval",
                                      eval_split="test[:3]"), workdir=None)
    assert data.eval_splits == ("test[:3]",)  # (The mock gives every split 7 examples.)
    assert next(data.eval_iter(batch_size=2, num_batches=1))["label"].tolist() == [0, 1]


def test_spec_without_data(tmp_path):
    spec = coco_captions.spec(ml_collections.ConfigDict({"data_dir": str(tmp_path)}))
    assert isinstance(spec, ImageTextSpec)
    assert spec.image_shape == (224, 224, 3) and spec.vocab_size == 8192
    assert spec.context_length == 77 and spec.eot_id == 2
    assert not any(tmp_path.iterdir())


def test_not_prepared(tmp_path):
    with pytest.raises(ValueError, match="cannot read coco_captions.*tfds build"):
        coco_captions.build(config(tmp_path), workdir=None)


def test_registered():
    assert "coco_captions" in registry.available("data")
