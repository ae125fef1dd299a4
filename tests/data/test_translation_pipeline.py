import collections
import dataclasses
import itertools
import json
import logging

import ml_collections
import numpy as np
import pytest

from jaxformer.data import bible_enes, translation_pairs, translation_pipeline
from jaxformer.data.tokenizers import SentencePieceTokenizer, load_tokenizer
from jaxformer.data.translation_batches import default_bucket_lengths, padding_fraction
from jaxformer.data.translation_pairs import EncodedPairs
from jaxformer.data.translation_pipeline import TranslationData

# The English -> Spanish recipe's data settings.
VOCAB = 8000
MAX_LENGTH = 128
BATCH = 64


def make_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    config = {"name": "bible_enes", "source": "en", "target": "es", "vocab_size": VOCAB,
              "max_source_length": MAX_LENGTH, "max_target_length": MAX_LENGTH,
              "tokenizer_sentences": 100_000, "data_dir": str(data_dir)}
    return ml_collections.ConfigDict(config | overrides)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    bible_enes.prepare(str(path))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def data(data_dir, workdir) -> TranslationData:
    return bible_enes.build(make_config(data_dir), workdir=str(workdir))


@pytest.fixture(scope="module")
def train_pairs(data) -> set:
    return set(data.pairs["train"])


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys() == {"inputs", "targets"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def row_lengths(array, eos_id):
    """Tokens up to and including EOS, checking that only padding follows it."""
    lengths = []
    for row in array:
        if not row.any():
            lengths.append(0)
            continue
        end = int(np.flatnonzero(row == eos_id)[0]) + 1
        assert not row[end:].any(), row
        assert (row[:end - 1] > 2).all()  # No special token inside a sequence.
        lengths.append(end)
    return np.array(lengths)


# The tokenizer.

def test_tokenizer_has_special_ids_and_round_trips(data):
    assert (data.pad_id, data.eos_id, data.bos_id) == (0, 1, 2)
    assert data.vocab_size == VOCAB
    for text in data.sources("test")[:300] + data.references("test")[:300]:
        ids = data.tokenizer.encode(text)
        assert min(ids) > 3 and max(ids) < VOCAB
        assert data.tokenizer.decode(ids) == text
    verse = data.references("validation")[0]  # Acts 1:1.
    ids = data.tokenizer.encode(verse)
    assert data.detokenize([*ids, data.eos_id, 0, 0, *ids]) == verse
    assert data.detokenize(ids) == verse
    odd = "¿Qué? naïve ☃ 🙂  two  spaces"
    assert data.tokenizer.decode(data.tokenizer.encode(odd)) == odd


def test_tokenizer_is_trained_on_train_split_and_saved(data, workdir):
    saved = workdir / "assets" / "tokenizer.model"
    assert saved.read_bytes() == data.tokenizer.model_proto
    assert [p.name for p in workdir.iterdir()] == ["assets"]  # Nothing else written.
    loaded = load_tokenizer(workdir)
    assert isinstance(loaded, SentencePieceTokenizer)
    assert (loaded.pad_id, loaded.eos_id, loaded.bos_id) == (0, 1, 2)
    expected = translation_pairs.train_tokenizer(
        data.pairs["train"], vocab_size=VOCAB, max_sentences=100_000)
    assert expected.model_proto == data.tokenizer.model_proto


def test_incompatible_saved_tokenizers_are_errors(data, workdir, tmp_path):
    def tokenizer_for(assets_dir, vocab_size=VOCAB):
        return translation_pairs.tokenizer_for(
            assets_dir, data.pairs["validation"], vocab_size=vocab_size, max_sentences=1000)

    assert tokenizer_for(workdir / "assets").model_proto == data.tokenizer.model_proto
    with pytest.raises(ValueError, match="has 8000 pieces, the config asks for 500"):
        tokenizer_for(workdir / "assets", vocab_size=500)
    lm = SentencePieceTokenizer.train("\n".join(data.sources("validation")), 400)
    (tmp_path / "lm").mkdir()
    lm.save(tmp_path / "lm" / "tokenizer.model")
    with pytest.raises(ValueError, match="not a translation tokenizer"):
        tokenizer_for(tmp_path / "lm")
    (tmp_path / "char").mkdir()
    (tmp_path / "char" / "tokenizer.json").write_text('{"type": "char"}')
    with pytest.raises(ValueError, match="holds tokenizer.json"):
        tokenizer_for(tmp_path / "char")


def test_tokenizer_subsample_draws_whole_pairs():
    pairs = [(f"source sentence {i}", f"frase destino {i}") for i in range(100)]
    small = translation_pairs.train_tokenizer(pairs, vocab_size=300, max_sentences=20)
    again = translation_pairs.train_tokenizer(pairs, vocab_size=300, max_sentences=20)
    whole = translation_pairs.train_tokenizer(pairs, vocab_size=300, max_sentences=200)
    assert small.model_proto == again.model_proto != whole.model_proto
    with pytest.raises(ValueError, match="tokenizer_sentences"):
        translation_pairs.train_tokenizer(pairs, vocab_size=300, max_sentences=1)


# Token ids.

@pytest.mark.slow
def test_rebuild_reuses_tokenizer_and_token_ids(data_dir, workdir, data, monkeypatch):
    for split in ("train", "validation"):
        data.encoded(split)
        assert (data.cache_dir / f"{split}.npz").exists()
    assert not (data.cache_dir / "test.npz").exists()  # Tokenized when first asked for.
    assert data.cache_dir.parent.parent == data_dir / "bible_enes" / "1.0.0" / "tokens"
    assert data.cache_dir.name == "en-es"

    def fail(*args, **kwargs):
        raise AssertionError("trained or tokenized again")

    monkeypatch.setattr(SentencePieceTokenizer, "train", fail)
    monkeypatch.setattr(EncodedPairs, "encode", fail)
    # Another tokenizer_sentences would train another model: the saved one is kept.
    again = bible_enes.build(make_config(data_dir, tokenizer_sentences=1000),
                             workdir=str(workdir))
    assert again.tokenizer.model_proto == data.tokenizer.model_proto
    assert again.cache_dir == data.cache_dir
    for split in ("train", "validation"):
        for field in dataclasses.fields(EncodedPairs):
            np.testing.assert_array_equal(getattr(again.encoded(split), field.name),
                                          getattr(data.encoded(split), field.name))
    first = data.encoded("validation")
    assert first.source(0).tolist() == data.tokenizer.encode(data.sources("validation")[0])
    assert first.target(5).tolist() == data.tokenizer.encode(data.references("validation")[5])


def test_damaged_token_cache_is_a_value_error(data, tmp_path):
    damaged = dataclasses.replace(data, cache_dir=tmp_path)
    (tmp_path / "validation.npz").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="unreadable cache file"):
        damaged.encoded("validation")
    encoded = data.encoded("test")
    wrong = EncodedPairs(encoded.source_ids + VOCAB, encoded.source_offsets,
                         encoded.target_ids, encoded.target_offsets)
    with (tmp_path / "test.npz").open("wb") as f:
        np.savez(f, **dataclasses.asdict(wrong))
    with pytest.raises(ValueError, match="malformed token cache"):
        damaged.encoded("test")


# Training batches.

def test_train_batches_are_padded_pairs_with_eos(data, train_pairs):
    for batch in take(data.train_iter(batch_size=BATCH, seed=0), 20):
        assert batch.keys() == {"inputs", "targets"}
        assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
        assert batch["inputs"].shape[0] == batch["targets"].shape[0] == BATCH
        row_lengths(batch["inputs"], data.eos_id)
        row_lengths(batch["targets"], data.eos_id)
        for inputs, targets in zip(batch["inputs"], batch["targets"], strict=True):
            assert (data.detokenize(inputs), data.detokenize(targets)) in train_pairs


def test_batches_come_from_one_bucket(data):
    buckets = data.train_buckets(BATCH)
    lengths = [length for length, _ in buckets]
    assert data.bucket_lengths == default_bucket_lengths(MAX_LENGTH) == (
        16, 24, 32, 40, 48, 64, 80, 96, 128)
    assert lengths == [16, 24, 32, 40, 48, 64, 80, 128]  # 96 had fewer pairs than a batch.
    assert all(len(ids) >= BATCH for _, ids in buckets)
    shapes = collections.Counter()
    for batch in take(data.train_iter(batch_size=BATCH, seed=1), 100):
        width = batch["inputs"].shape[1]
        assert batch["targets"].shape[1] == width
        shapes[width] += 1
        longest = np.maximum(row_lengths(batch["inputs"], data.eos_id),
                             row_lengths(batch["targets"], data.eos_id))
        below = lengths[lengths.index(width) - 1] if width != lengths[0] else 0
        assert (longest <= width).all() and (longest > below).all()
    assert set(shapes) <= set(lengths) and len(shapes) >= 6


def test_bucketing_cuts_padding(data):
    """Padding share of the tokens in batches: 15.5% bucketed, 54% or 74% without."""
    per_epoch = sum(len(ids) // BATCH for _, ids in data.train_buckets(BATCH))
    assert per_epoch == 425
    bucketed = padding_fraction(take(data.train_iter(batch_size=BATCH, seed=0), per_epoch))
    encoded = data.encoded("train")
    kept = np.flatnonzero((encoded.source_lengths < MAX_LENGTH)
                          & (encoded.target_lengths < MAX_LENGTH))
    sources, targets = encoded.source_lengths[kept] + 1, encoded.target_lengths[kept] + 1
    tokens = sources.sum() + targets.sum()
    to_max_length = 1 - tokens / (len(kept) * 2 * MAX_LENGTH)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(kept))[:len(kept) // BATCH * BATCH].reshape(-1, BATCH)
    to_longest = 1 - (sources[shuffled].sum() + targets[shuffled].sum()) / sum(
        BATCH * (sources[rows].max() + targets[rows].max()) for rows in shuffled)
    assert bucketed == pytest.approx(0.155, abs=0.005)
    assert to_longest == pytest.approx(0.54, abs=0.01)
    assert to_max_length == pytest.approx(0.74, abs=0.01)


def test_an_epoch_sees_each_pair_at_most_once(data):
    buckets = data.train_buckets(BATCH)
    per_epoch = sum(len(ids) // BATCH for _, ids in buckets)
    encoded = data.encoded("train")
    kept = np.concatenate([ids for _, ids in buckets])
    available = collections.Counter(
        (tuple(encoded.source(i)), tuple(encoded.target(i))) for i in kept)
    iterator = data.train_iter(batch_size=BATCH, seed=2)
    seen = collections.Counter()
    for batch in take(iterator, per_epoch):
        lengths = [row_lengths(batch[key], data.eos_id) - 1 for key in ("inputs", "targets")]
        for row in range(BATCH):
            seen[tuple(batch["inputs"][row, :lengths[0][row]]),
                 tuple(batch["targets"][row, :lengths[1][row]])] += 1
    assert sum(seen.values()) == per_epoch * BATCH
    assert not seen - available  # No pair more often than it is in the train split.
    left_out = len(kept) - per_epoch * BATCH
    assert 0 <= left_out < BATCH * len(buckets)
    next_epoch = take(iterator, 3)  # Reshuffled.
    first = take(data.train_iter(batch_size=BATCH, seed=2), 3)
    assert not all(np.array_equal(a["inputs"], b["inputs"])
                   for a, b in zip(first, next_epoch, strict=True))


def test_train_iter_is_deterministic_for_a_seed(data):
    first = take(data.train_iter(batch_size=16, seed=3), 5)
    assert_same_batches(first, take(data.train_iter(batch_size=16, seed=3), 5))
    other = take(data.train_iter(batch_size=16, seed=4), 5)
    assert any(a["inputs"].shape != b["inputs"].shape
               or not np.array_equal(a["inputs"], b["inputs"])
               for a, b in zip(first, other, strict=True))


def test_restored_iterator_continues_exactly(data):
    per_epoch = sum(len(ids) // 16 for _, ids in data.train_buckets(16))
    for position in (3, per_epoch - 2):  # Within an epoch, then across its end.
        iterator = data.train_iter(batch_size=16, seed=7)
        take(iterator, position)
        state = json.loads(json.dumps(iterator.get_state()))  # As a checkpoint stores it.
        expected = take(iterator, 4)
        fresh = data.train_iter(batch_size=16, seed=7)
        fresh.set_state(state)
        assert_same_batches(take(fresh, 4), expected)


def test_processes_split_the_global_batch(data):
    global_batches = take(data.train_iter(batch_size=8, seed=5), 6)
    shards = [take(data.train_iter(batch_size=4, seed=5, process_index=p, process_count=2), 6)
              for p in range(2)]
    for step, global_batch in enumerate(global_batches):
        for key in ("inputs", "targets"):
            a, b = shards[0][step][key], shards[1][step][key]
            assert a.shape == b.shape == (4, global_batch[key].shape[1])
            np.testing.assert_array_equal(np.concatenate([a, b]), global_batch[key])


def test_long_train_pairs_are_left_out_and_counted(data, caplog):
    short = dataclasses.replace(data, max_source_length=40, max_target_length=48,
                                bucket_lengths=())
    encoded = data.encoded("train")
    too_long = int(np.sum((encoded.source_lengths >= 40) | (encoded.target_lengths >= 48)))
    assert too_long == 7_849
    with caplog.at_level(logging.INFO, logger=translation_pipeline.__name__):
        iterator = short.train_iter(batch_size=32, seed=0)
        batches = take(iterator, 50) + take(short.train_iter(batch_size=32, seed=1), 5)
    reports = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert reports == [(f"train split: {too_long} of 27521 pairs are longer than "
                        "max_source_length=40 or max_target_length=48 (EOS included) and are "
                        "left out")]
    assert short.bucket_lengths == (16, 24, 32, 40, 48)
    for batch in batches:
        assert batch["inputs"].shape[1] <= 40 and batch["targets"].shape[1] <= 48
        assert row_lengths(batch["inputs"], data.eos_id).max() <= 40


# Evaluation batches.

def test_eval_covers_the_split_once_in_order(data):
    split = data.pairs["validation"]
    batches = list(data.eval_iter(batch_size=BATCH, num_batches=-1))
    assert len(batches) == -(-len(split) // BATCH) == 21
    rows = {key: [row for batch in batches for row in batch[key]]
            for key in ("inputs", "targets")}
    real, padding = len(split), 21 * BATCH - len(split)
    assert padding == 8
    assert not np.any(rows["inputs"][real:]) and not np.any(rows["targets"][real:])
    sources = [data.detokenize(row) for row in rows["inputs"][:real]]
    references = [data.detokenize(row) for row in rows["targets"][:real]]
    assert sources == data.sources("validation") == [en for en, _ in split]
    assert references == data.references("validation")
    for batch in batches:
        for key in ("inputs", "targets"):
            assert batch[key].shape == (BATCH, batch[key].shape[1])
            assert batch[key].shape[1] in data.bucket_lengths and batch[key].dtype == np.int32
            longest = row_lengths(batch[key], data.eos_id).max()
            assert longest <= batch[key].shape[1]
            # The smallest bucket that holds the longest row.
            assert not [n for n in data.bucket_lengths if longest <= n < batch[key].shape[1]]
    first_two = list(data.eval_iter(batch_size=BATCH, num_batches=2))
    assert_same_batches(first_two, batches[:2])
    assert_same_batches(list(data.eval_iter(batch_size=BATCH, num_batches=50)), batches)
    assert data.eval_splits == ("validation", "test")
    assert_same_batches(list(data.eval_iter(batch_size=BATCH, num_batches=-1,
                                            split="validation")), batches)
    test = list(data.eval_iter(batch_size=BATCH, num_batches=-1, split="test"))
    assert sum(int(batch["inputs"].any(axis=1).sum()) for batch in test) == 2227


def test_eval_processes_take_blocks_of_each_global_batch(data):
    whole = list(data.eval_iter(batch_size=6, num_batches=-1))
    shards = [list(data.eval_iter(batch_size=3, num_batches=-1, process_index=p,
                                  process_count=2)) for p in range(2)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == 223  # 1,336 pairs, 2 pad rows.
    for k, batch in enumerate(whole):
        for key in batch:
            np.testing.assert_array_equal(
                np.concatenate([shards[0][k][key], shards[1][k][key]]), batch[key])
    assert not whole[-1]["inputs"][4:].any() and whole[-1]["inputs"][:4].any(axis=1).all()


def test_long_eval_sources_are_truncated_not_dropped(data):
    short = dataclasses.replace(data, max_source_length=20, max_target_length=24)
    batches = list(short.eval_iter(batch_size=BATCH, num_batches=-1))
    assert {b["inputs"].shape[1] for b in batches} <= {16, 20}
    assert {b["targets"].shape[1] for b in batches} <= {16, 24}
    inputs = np.concatenate([np.pad(b["inputs"], [(0, 0), (0, 20 - b["inputs"].shape[1])])
                             for b in batches])
    targets = np.concatenate([np.pad(b["targets"], [(0, 0), (0, 24 - b["targets"].shape[1])])
                              for b in batches])
    lengths = row_lengths(inputs, data.eos_id)
    assert (lengths[:1336] > 0).all() and not lengths[1336:].any()
    encoded = data.encoded("validation")
    truncated = 0
    for i in range(1336):
        source = encoded.source(i).tolist()
        expected = source[:19] + [data.eos_id]
        assert inputs[i, :len(expected)].tolist() == expected
        truncated += len(source) >= 20
    assert truncated == int(np.sum(encoded.source_lengths >= 20)) > 500
    assert row_lengths(targets, data.eos_id).max() == 24


def test_pipeline_rejects_bad_arguments(data):
    with pytest.raises(ValueError, match="process_index"):
        data.train_iter(batch_size=4, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.eval_iter(batch_size=0, num_batches=1)
    with pytest.raises(ValueError, match="num_batches"):
        data.eval_iter(batch_size=4, num_batches=-2)
    for split in ("dev", "train"):
        with pytest.raises(ValueError, match=f"unknown split '{split}'; available: validation, "
                                             "test"):
            data.eval_iter(batch_size=4, num_batches=1, split=split)
    with pytest.raises(ValueError, match="fewer than a global batch"):
        data.train_iter(batch_size=20_000, seed=0, process_count=2)
    with pytest.raises(ValueError, match="at least 2"):
        dataclasses.replace(data, max_target_length=1)
    with pytest.raises(ValueError, match="bucket_lengths"):
        dataclasses.replace(data, bucket_lengths=(16, 64))
    with pytest.raises(ValueError, match="pad id 0"):
        lm = SentencePieceTokenizer.train("\n".join(data.sources("validation")), 400)
        dataclasses.replace(data, tokenizer=lm)
    with pytest.raises(ValueError, match="no test split"):
        TranslationData(data.tokenizer, {"train": [], "validation": []}, 8, 8)


def test_direction_is_checked(data_dir):
    with pytest.raises(ValueError, match="between 'en' and 'es'"):
        bible_enes.build(make_config(data_dir, target="de"), workdir=None)
    with pytest.raises(ValueError, match="between 'en' and 'es'"):
        bible_enes.build(make_config(data_dir, target="en"), workdir=None)


def test_default_bucket_lengths():
    assert default_bucket_lengths(10) == (10,)
    assert default_bucket_lengths(32) == (16, 24, 32)
    assert default_bucket_lengths(256) == (16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
    assert default_bucket_lengths(100) == (16, 24, 32, 40, 48, 64, 80, 96, 100)
