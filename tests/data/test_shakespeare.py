import collections
import itertools
import json
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import lm_pipeline, shakespeare
from jaxformer.data.tokenizers import SentencePieceTokenizer, load_tokenizer

BLOCK_SIZE = 32
BPE_VOCAB = 400


def make_config(data_dir, tokenizer="char", vocab_size=BPE_VOCAB) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "name": "shakespeare", "tokenizer": tokenizer, "vocab_size": vocab_size,
        "block_size": BLOCK_SIZE, "data_dir": str(data_dir)})


@pytest.fixture(scope="module")
def corpus() -> str:
    return shakespeare.read_corpus()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    shakespeare.prepare(str(path))
    return path


@pytest.fixture(scope="module")
def char_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("char_run")


@pytest.fixture(scope="module")
def char_data(data_dir, char_workdir):
    return shakespeare.build(make_config(data_dir), workdir=str(char_workdir))


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def assert_same_batches(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["targets"], b["targets"])


def windows(batch):
    """The `block_size + 1` tokens each row of a batch was cut from."""
    return np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)


# The corpus.

def test_corpus_has_the_tiny_shakespeare_layout(corpus):
    assert corpus.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    assert corpus.endswith("\n") and not corpus.endswith("\n\n")
    speeches = corpus[:-1].split("\n\n")
    assert len(speeches) == 31_354
    for speech in speeches:
        name, *lines = speech.split("\n")
        assert name.endswith(":") and lines and all(lines), speech
    assert not set("_*#\\") & set(corpus)  # No markdown left.


def test_split_is_nanogpt_90_percent(corpus):
    split = shakespeare.split_index(corpus)
    assert split == int(len(corpus) * 0.9) == 4_303_133


def test_chunks_end_at_newlines_and_join_back(corpus):
    chunks = list(shakespeare.chunk_text(corpus, size=1000))
    assert "".join(chunks) == corpus
    assert all(len(c) <= 1000 and c.endswith("\n") for c in chunks)


# The tfds builder.

def test_builder_stores_both_splits_exactly(data_dir, corpus):
    builder = shakespeare.Shakespeare(data_dir=str(data_dir), file_format="array_record")
    assert builder.is_prepared()
    assert sorted(p.name for p in builder.data_path.glob("*.array_record*")) == [
        "shakespeare-train.array_record-00000-of-00001",
        "shakespeare-validation.array_record-00000-of-00001",
    ]
    splits = shakespeare.read_splits(builder)
    split = shakespeare.split_index(corpus)
    assert "".join(splits["train"]) == corpus[:split]
    assert "".join(splits["validation"]) == corpus[split:]
    assert max(len(c) for c in splits["train"]) <= shakespeare.CHUNK_CHARS
    assert builder.info.splits["train"].num_examples == len(splits["train"])


def test_tfds_data_source_reads_the_prepared_data(data_dir, corpus):
    sources = tfds.data_source("shakespeare", data_dir=str(data_dir), download=False)
    records = [sources["validation"][i] for i in range(len(sources["validation"]))]
    assert [int(r["index"]) for r in records] == list(range(len(records)))
    text = b"".join(r["text"] for r in records).decode("utf-8")
    assert text == corpus[shakespeare.split_index(corpus):]


PREPARE = "import sys; from jaxformer.data import shakespeare; shakespeare.prepare(sys.argv[1])"


def test_processes_started_together_prepare_the_data_once(tmp_path, corpus):
    """Two runs on a fresh data dir: one prepares, the other waits for it, both read it."""
    runs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(tmp_path)],
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    builder = shakespeare.prepare(str(tmp_path))
    assert builder.info.splits["train"].num_examples > 0
    assert [p.name for p in (tmp_path / "shakespeare").iterdir()] == ["1.0.0"]


def test_missing_data_dir_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        shakespeare.build(make_config(tmp_path / "nowhere"), workdir=None)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        shakespeare.build(make_config(tmp_path / "file"), workdir=None)


def test_damaged_records_are_a_value_error(data_dir, tmp_path):
    shutil.copytree(data_dir / "shakespeare", tmp_path / "shakespeare")
    records = tmp_path / "shakespeare" / "1.0.0" / "shakespeare-train.array_record-00000-of-00001"
    data = records.read_bytes()
    records.write_bytes(data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:])
    with pytest.raises(ValueError, match="malformed shakespeare data"):
        shakespeare.build(make_config(tmp_path), workdir=None)


def test_damaged_dataset_info_is_a_value_error(data_dir, tmp_path):
    shutil.copytree(data_dir / "shakespeare", tmp_path / "shakespeare")
    (tmp_path / "shakespeare" / "1.0.0" / "dataset_info.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot prepare shakespeare"):
        shakespeare.build(make_config(tmp_path), workdir=None)


# Tokenizers and tokens.

def test_char_build_tokenizes_the_splits(char_data, char_workdir, corpus):
    split = shakespeare.split_index(corpus)
    assert char_data.vocab_size == 73
    assert char_data.train_tokens.dtype == np.int32
    assert char_data.tokenizer.decode(char_data.train_tokens) == corpus[:split]
    assert char_data.tokenizer.decode(char_data.eval_tokens) == corpus[split:]
    saved = load_tokenizer(char_workdir)
    assert saved.chars == sorted(set(corpus))
    assert [p.name for p in char_workdir.iterdir()] == ["assets"]  # Nothing else written.


def test_tokens_are_cached(data_dir, char_workdir, char_data, monkeypatch):
    def fail(*args):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(lm_pipeline, "tokenize", fail)
    again = shakespeare.build(make_config(data_dir), workdir=str(char_workdir))
    np.testing.assert_array_equal(again.train_tokens, char_data.train_tokens)
    np.testing.assert_array_equal(again.eval_tokens, char_data.eval_tokens)


def test_damaged_token_cache_is_a_value_error(data_dir, char_data, tmp_path):
    shutil.copytree(data_dir / "shakespeare", tmp_path / "shakespeare")
    for cache in (tmp_path / "shakespeare" / "1.0.0" / "tokens").glob("*/train.npy"):
        cache.write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="unreadable cache file .*delete it to rebuild"):
        shakespeare.build(make_config(tmp_path), workdir=None)


@pytest.mark.slow
def test_bpe_is_trained_on_train_split_and_reused(data_dir, tmp_path, corpus, monkeypatch):
    config = make_config(data_dir, tokenizer="bpe")
    data = shakespeare.build(config, workdir=str(tmp_path))
    model = tmp_path / "assets" / "tokenizer.model"
    assert model.read_bytes() == data.tokenizer.model_proto
    train_text = corpus[: shakespeare.split_index(corpus)]
    expected = SentencePieceTokenizer.train(train_text, BPE_VOCAB)
    assert expected.model_proto == data.tokenizer.model_proto
    # Tokenized record by record, the ids are those of the whole split.
    assert data.train_tokens.tolist() == expected.encode(train_text)
    assert data.tokenizer.decode(data.eval_tokens) == corpus[len(train_text):]

    def fail(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(SentencePieceTokenizer, "train", fail)
    resumed = shakespeare.build(config, workdir=str(tmp_path))
    sample = corpus[:2000]
    assert resumed.tokenizer.pieces(sample) == data.tokenizer.pieces(sample)
    np.testing.assert_array_equal(resumed.train_tokens, data.train_tokens)
    with pytest.raises(ValueError, match="has 400 pieces"):
        shakespeare.build(make_config(data_dir, "bpe", vocab_size=500), workdir=str(tmp_path))
    with pytest.raises(ValueError, match="not the char tokenizer"):
        shakespeare.build(make_config(data_dir, "char"), workdir=str(tmp_path))


# Batches.

def test_windows_are_shifted_corpus_substrings(char_data, corpus):
    train_text = corpus[: shakespeare.split_index(corpus)]
    batch = next(char_data.train_iter(batch_size=8, seed=0))
    assert set(batch) == {"inputs", "targets"}
    for key in batch:
        assert batch[key].shape == (8, BLOCK_SIZE) and batch[key].dtype == np.int32
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    for row in windows(batch):
        assert char_data.tokenizer.decode(row) in train_text


def test_train_iter_is_deterministic_for_a_seed(char_data):
    first = take(char_data.train_iter(batch_size=4, seed=3), 5)
    assert_same_batches(first, take(char_data.train_iter(batch_size=4, seed=3), 5))
    other = take(char_data.train_iter(batch_size=4, seed=4), 5)
    assert not np.array_equal(first[0]["inputs"], other[0]["inputs"])


def test_restored_iterator_continues_exactly(char_data):
    iterator = char_data.train_iter(batch_size=4, seed=7)
    take(iterator, 3)
    state = json.loads(json.dumps(iterator.get_state()))  # As a checkpoint stores it.
    expected = take(iterator, 4)
    fresh = char_data.train_iter(batch_size=4, seed=7)
    fresh.set_state(state)
    assert_same_batches(take(fresh, 4), expected)


def test_processes_split_the_global_batch(char_data):
    global_batches = take(char_data.train_iter(batch_size=8, seed=5), 3)
    shards = [take(char_data.train_iter(batch_size=4, seed=5, process_index=p, process_count=2),
                   3) for p in range(2)]
    for step, global_batch in enumerate(global_batches):
        a, b = (windows(shard[step]) for shard in shards)
        assert a.shape == b.shape == (4, BLOCK_SIZE + 1)
        assert not {r.tobytes() for r in a} & {r.tobytes() for r in b}
        union = collections.Counter(r.tobytes() for r in np.concatenate([a, b]))
        assert union == collections.Counter(r.tobytes() for r in windows(global_batch))


def test_eval_iter_gives_the_same_batches_every_call(char_data, corpus):
    first = list(char_data.eval_iter(batch_size=4, num_batches=3))
    assert len(first) == 3
    assert_same_batches(first, list(char_data.eval_iter(batch_size=4, num_batches=3)))
    assert char_data.eval_splits == ("validation",)
    assert_same_batches(first, list(char_data.eval_iter(batch_size=4, num_batches=3,
                                                        split="validation")))
    validation = corpus[shakespeare.split_index(corpus):]
    assert all(char_data.tokenizer.decode(row) in validation for row in windows(first[0]))
    shards = [list(char_data.eval_iter(batch_size=2, num_batches=3, process_index=p,
                                       process_count=2)) for p in range(2)]
    assert [b["inputs"].shape for b in shards[1]] == [(2, BLOCK_SIZE)] * 3
    assert not np.array_equal(shards[0][0]["inputs"], shards[1][0]["inputs"])


def test_pipeline_rejects_bad_arguments(char_data):
    with pytest.raises(ValueError, match="process_index"):
        char_data.train_iter(batch_size=4, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        char_data.eval_iter(batch_size=0, num_batches=1)
    with pytest.raises(ValueError, match="num_batches"):
        char_data.eval_iter(batch_size=4, num_batches=-1)
    with pytest.raises(ValueError, match="unknown split 'train'; available: validation"):
        char_data.eval_iter(batch_size=4, num_batches=1, split="train")
