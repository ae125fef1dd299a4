"""GLUE through tfds, on tfds' mock examples: single-sentence and sentence-pair tasks, their
eval splits, and the settings that are rejected."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import glue


def config(data_dir, **values) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": "glue", "task": "sst2", "vocab_size": 300,
                                      "seq_length": 24, "data_dir": str(data_dir), **values})


def build(data_dir, **values):
    with tfds.testing.mock_data(num_examples=9):
        return glue.build(config(data_dir, **values), workdir=None)


def check_rows(data, batch, *, pair):
    tok = data.tokenizer
    for ids, segments in zip(batch["input_ids"], batch["segment_ids"], strict=True):
        length = int((ids != tok.pad_id).sum())
        assert ids[0] == tok.cls_id and ids[length - 1] == tok.sep_id
        seps = np.flatnonzero(ids == tok.sep_id).tolist()
        if pair:
            assert len(seps) == 2
            # Segment 0 up to the first [SEP], 1 from there to the last, 0 on padding.
            expected = np.zeros_like(segments)
            expected[seps[0] + 1:seps[1] + 1] = 1
            np.testing.assert_array_equal(segments, expected)
        else:
            assert seps == [length - 1] and np.all(segments == 0)


def test_single_sentence_task(tmp_path):
    data = build(tmp_path)
    assert data.class_names == ("negative", "positive") and data.eval_splits == ("validation",)
    batch = next(data.train_iter(batch_size=4, seed=0))
    assert batch["input_ids"].shape == (4, 24) and batch["input_ids"].dtype == np.int32
    assert np.all((batch["label"] >= 0) & (batch["label"] < 2))
    check_rows(data, batch, pair=False)
    evaluation = list(data.eval_iter(batch_size=4, num_batches=-1))
    assert [len(b["label"]) for b in evaluation] == [4, 4, 4]
    np.testing.assert_array_equal(evaluation[-1]["label"][1:], [-1, -1, -1])


@pytest.mark.parametrize("task,classes,splits", [
    ("mnli", 3, ("validation_matched", "validation_mismatched")),
    ("rte", 2, ("validation",)),
    ("qqp", 2, ("validation",)),
])
def test_sentence_pair_tasks(tmp_path, task, classes, splits):
    data = build(tmp_path, task=task)
    assert data.num_classes == classes and data.eval_splits == splits
    check_rows(data, next(data.train_iter(batch_size=4, seed=0)), pair=True)
    for split in splits:
        batch = next(data.eval_iter(batch_size=9, num_batches=1, split=split))
        assert np.all(batch["label"] >= 0)
        check_rows(data, batch, pair=True)


def test_training_subset_and_spec(tmp_path):
    data = build(tmp_path, task="qnli", train_examples=4)
    assert len(data.train) == 4
    spec = glue.spec(config(tmp_path, task="mnli"))
    assert spec.vocab_size == 300
    assert spec.class_names == ("entailment", "neutral", "contradiction")


@pytest.mark.parametrize("values,message", [
    ({"task": "stsb"}, "glue/stsb is a regression task"),
    ({"task": "squad"}, "unknown data.task 'squad'; available: cola, sst2, mrpc"),
    ({"seq_length": 2}, "data.seq_length must be an integer >= 4"),
])
def test_check_config_rejects_bad_values(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        glue.check_config(config(tmp_path, **values))


def test_missing_data_dir(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        glue.check_config(config(tmp_path / "missing"))
