"""Tweet sentiment: the embedded corpus and its fixed split, the vocabulary (a pretraining
run's or trained here), the batch format, the stratified training subset and resuming."""

import collections
import itertools

import ml_collections
import numpy as np
import pytest

from jaxformer.data import text_classification_pipeline as pipeline
from jaxformer.data import tweet_sentiment, wordpiece
from jaxformer.data.text_classification_pipeline import truncate_pair

COUNTS = {  # split -> (negative, neutral, positive), as in PROVENANCE.md
    "train": (12764, 11540, 5445),
    "validation": (1595, 1442, 681),
    "test": (1595, 1442, 681),
}
SMALL = {"vocab_size": 400, "seq_length": 32, "train_examples": 600}


def config(**values) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": "tweet_sentiment", **SMALL, **values})


@pytest.fixture(scope="module")
def corpus():
    return tweet_sentiment.read_corpus()


@pytest.fixture(scope="module")
def data():
    return tweet_sentiment.build(config(), workdir=None)


def test_corpus_counts_and_split_are_fixed(corpus):
    for name, counts in COUNTS.items():
        assert tuple(np.bincount(corpus[name].labels, minlength=3)) == counts
        assert corpus[name].second is None
    assert sum(len(corpus[name].labels) for name in COUNTS) == 37185
    # Stratified: each class's held-out splits are round(10%) of it.
    for c in range(3):
        total = sum(counts[c] for counts in COUNTS.values())
        assert COUNTS["validation"][c] == COUNTS["test"][c] == round(total * 0.1)
    assert corpus["train"].first[0] == ("We were passed by the #google self driving car last "
                                        "week on a trip to store.")
    # Each split in random order, not the source's (sorted by label): a prefix is a sample.
    assert len(set(corpus["validation"].labels[:50])) == 3


def test_no_tweet_is_in_two_splits_or_twice_in_one(corpus):
    texts = [t for name in COUNTS for t in corpus[name].first]
    assert len(set(texts)) == len(texts)
    assert all(t == t.strip() and t and "\n" not in t and "\t" not in t for t in texts)


def test_batches_are_cls_text_sep_then_padding(data, corpus):
    batch = next(data.train_iter(batch_size=8, seed=0))
    assert batch.keys() == {"input_ids", "segment_ids", "label"}
    assert batch["input_ids"].shape == batch["segment_ids"].shape == (8, 32)
    assert {batch[key].dtype for key in batch} == {np.dtype(np.int32)}
    assert np.all(batch["segment_ids"] == 0)  # Single texts.
    assert np.all((batch["label"] >= 0) & (batch["label"] < 3))
    tok = data.tokenizer
    for ids in batch["input_ids"]:
        length = int((ids != tok.pad_id).sum())
        assert np.all(ids[length:] == tok.pad_id)
        assert ids[0] == tok.cls_id and ids[length - 1] == tok.sep_id
        assert tok.sep_id not in ids[1:length - 1] and tok.cls_id not in ids[1:]
    # A text longer than seq_length keeps its first 30 tokens.
    long = next(t for t in corpus["validation"].first if len(tok.encode(t)) > 30)
    row = corpus["validation"].first.index(long)
    first = list(data.eval_iter(batch_size=row + 1, num_batches=1))[0]["input_ids"][row]
    assert first.tolist() == [tok.cls_id, *tok.encode(long)[:30], tok.sep_id]


def test_eval_reads_each_split_whole_with_padding_rows(data, corpus):
    assert data.eval_splits == ("validation", "test")
    assert data.class_names == ("negative", "neutral", "positive") and data.num_classes == 3
    assert data.vocab_size == 400 and data.seq_length == 32
    batches = list(data.eval_iter(batch_size=500, num_batches=-1, split="test"))
    assert len(batches) == 8  # 3,718 rows: 7 full batches and 218 rows of padding.
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels[:3718], corpus["test"].labels)
    assert np.all(labels[3718:] == -1)
    padding = batches[-1]["input_ids"][218:]
    assert np.all(padding[:, :2] == [data.tokenizer.cls_id, data.tokenizer.sep_id])
    assert np.all(padding[:, 2:] == 0)
    again = list(data.eval_iter(batch_size=500, num_batches=-1, split="test"))
    for a, b in zip(batches, again, strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert len(list(data.eval_iter(batch_size=500, num_batches=2))) == 2
    with pytest.raises(ValueError, match="unknown split 'train'"):
        data.eval_iter(batch_size=4, num_batches=1, split="train")


def test_processes_share_global_eval_batches(data):
    whole = next(data.eval_iter(batch_size=8, num_batches=1))
    halves = [next(data.eval_iter(batch_size=4, num_batches=1, process_index=p,
                                  process_count=2)) for p in range(2)]
    for key in whole:
        np.testing.assert_array_equal(whole[key], np.concatenate([h[key] for h in halves]))


def test_subset_is_stratified_fixed_and_seeded(data, corpus):
    counts = np.bincount(data.train.labels, minlength=3)
    assert counts.sum() == 600
    expected = np.array(COUNTS["train"]) * 600 / sum(COUNTS["train"])
    assert np.all(np.abs(counts - expected) < 1)
    labels = np.asarray(corpus["train"].labels)
    indices = pipeline.train_indices(config(), labels)
    np.testing.assert_array_equal(indices, pipeline.train_indices(config(), labels))
    np.testing.assert_array_equal(labels[indices], data.train.labels)
    other = pipeline.train_indices(config(subset_seed=1), labels)
    assert len(set(indices) & set(other)) < 100
    assert len(pipeline.train_indices(config(train_examples=-1), labels)) == 29749


def test_stratified_subset_keeps_shares_to_the_nearest_example():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    for count in (1, 7, 10, 33, 100):
        chosen = pipeline.stratified_subset(labels, count, seed=3)
        assert len(chosen) == len(set(chosen)) == count and np.all(np.diff(chosen) > 0)
        shares = np.bincount(labels[chosen], minlength=3)
        assert np.all(np.abs(shares - np.array([50, 30, 20]) * count / 100) < 1)


def test_train_iterator_covers_each_epoch_and_resumes_exactly(data):
    # 600 examples in batches of 50: the first 12 batches are one epoch, each example once.
    iterator = data.train_iter(batch_size=50, seed=7)
    epoch = list(itertools.islice(iterator, 12))
    rows = collections.Counter(tuple(r) for b in epoch for r in b["input_ids"])
    examples = collections.Counter(
        tuple(np.pad(data.train.ids(i), (0, 32 - len(data.train.ids(i)))))
        for i in range(len(data.train)))
    assert rows == examples
    state = iterator.get_state()
    expected = list(itertools.islice(iterator, 3))
    resumed = data.train_iter(batch_size=50, seed=7)
    resumed.set_state(state)
    for a, b in zip(itertools.islice(resumed, 3), expected, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = next(data.train_iter(batch_size=50, seed=8))
    assert not np.array_equal(other["label"], epoch[0]["label"])


def test_vocabulary_is_trained_here_and_kept_in_the_workdir(tmp_path, monkeypatch):
    data = tweet_sentiment.build(config(), workdir=str(tmp_path))
    saved = tmp_path / "assets" / wordpiece.ASSET_NAME
    assert saved.exists() and data.tokenizer.vocab_size <= 400

    def no_training(*_, **__):
        raise AssertionError("trained a vocabulary again")

    monkeypatch.setattr(wordpiece, "train", no_training)
    again = tweet_sentiment.build(config(), workdir=str(tmp_path))
    assert again.tokenizer.vocab_size == data.tokenizer.vocab_size
    np.testing.assert_array_equal(again.train.tokens, data.train.tokens)


def test_vocabulary_of_a_pretraining_workdir(tmp_path, monkeypatch):
    pretraining = tmp_path / "pretrain"
    (pretraining / "assets").mkdir(parents=True)
    vocabulary = wordpiece.train(["the quick brown fox jumps over the lazy dog"] * 3 +
                                 ["self driving cars are great", "i hate traffic"], 60)
    vocabulary.save(pretraining / "assets" / wordpiece.ASSET_NAME)

    def no_training(*_, **__):
        raise AssertionError("trained a vocabulary")

    monkeypatch.setattr(wordpiece, "train", no_training)
    run = tmp_path / "finetune"
    values = {"tokenizer_workdir": str(pretraining), "vocab_size": 64}
    data = tweet_sentiment.build(config(**values), workdir=str(run))
    assert data.tokenizer.vocab_size == vocabulary.vocab_size
    assert data.vocab_size == 64
    assert data.train.tokens.max() < vocabulary.vocab_size
    ids = next(data.train_iter(batch_size=4, seed=0))["input_ids"]
    assert np.all(ids[:, 0] == wordpiece.WordPiece.cls_id)
    copy = run / "assets" / wordpiece.ASSET_NAME
    assert copy.read_bytes() == (pretraining / "assets" / wordpiece.ASSET_NAME).read_bytes()
    # The copy must stay the pretraining run's vocabulary.
    copy.write_text("{}")
    with pytest.raises(ValueError, match="is not the vocabulary of data.tokenizer_workdir"):
        tweet_sentiment.build(config(**values), workdir=str(run))
    with pytest.raises(ValueError, match="more than data.vocab_size 50"):
        tweet_sentiment.build(config(tokenizer_workdir=str(pretraining), vocab_size=50),
                              workdir=None)
    with pytest.raises(ValueError, match="has no saved vocabulary"):
        tweet_sentiment.check_config(config(tokenizer_workdir=str(tmp_path / "none")))


def test_spec_reads_nothing(monkeypatch):
    def no_reading():
        raise AssertionError("read the corpus")

    monkeypatch.setattr(tweet_sentiment, "read_corpus", no_reading)
    spec = tweet_sentiment.spec(config(tokenizer_workdir="/not/yet/pretrained"))
    assert spec.vocab_size == 400 and spec.tokenizer.pad_id == 0
    assert spec.class_names == ("negative", "neutral", "positive") and spec.num_classes == 3


@pytest.mark.parametrize("values,message", [
    ({"seq_length": 3}, "data.seq_length must be an integer >= 4, got 3"),
    ({"seq_length": 1024}, "data.seq_length must be at most 512, got 1024"),
    ({"vocab_size": 5}, "data.vocab_size must be an integer >= 6, got 5"),
    ({"train_examples": 0}, "data.train_examples must be -1 .all. or positive, got 0"),
    ({"train_examples": -2}, "data.train_examples must be an integer >= -1, got -2"),
    ({"subset_seed": -1}, "data.subset_seed must be an integer >= 0"),
    ({"tokenizer_workdir": None}, "data.tokenizer_workdir must be a workdir path"),
])
def test_check_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        tweet_sentiment.check_config(config(**values))


def test_more_training_examples_than_the_split_has():
    with pytest.raises(ValueError, match="data.train_examples is 30000, the training set has "
                                         "only 29749"):
        tweet_sentiment.build(config(train_examples=30000), workdir=None)


def test_truncate_pair_shortens_the_longer_text_first():
    assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([1, 2, 3], [6, 7])
    assert truncate_pair([1, 2], [3, 4, 5, 6], 4) == ([1, 2], [3, 4])
    assert truncate_pair([1, 2, 3], [4, 5, 6], 3) == ([1, 2], [4])
    assert truncate_pair([1], [2], 5) == ([1], [2])
