import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import translation_pairs, wmt14_ende
from jaxformer.data.tokenizers import load_tokenizer

NUM_EXAMPLES = 48


def make_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    config = {"name": "wmt14_ende", "source": "en", "target": "de", "vocab_size": 300,
              "max_source_length": 32, "max_target_length": 32, "tokenizer_sentences": 1000,
              "data_dir": str(data_dir)}
    return ml_collections.ConfigDict(config | overrides)


@pytest.fixture
def mocked_wmt():
    """tfds's random records for every split, read through the data source API."""
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        yield


def test_unprepared_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not prepared in .*tfds build wmt14_translate/de-en "
                                         "--data_dir=.* --file_format=array_record"):
        wmt14_ende.build(make_config(tmp_path), workdir=None)
    with pytest.raises(ValueError, match="does not exist"):
        wmt14_ende.build(make_config(tmp_path / "nowhere"), workdir=None)


def test_builds_from_the_data_source(mocked_wmt, tmp_path):
    data = wmt14_ende.build(make_config(tmp_path), workdir=str(tmp_path / "run"))
    _, sources = wmt14_ende.open_splits(str(tmp_path))
    for split in ("train", "validation", "test"):
        records = [sources[split][i] for i in range(NUM_EXAMPLES)]
        assert len(data.pairs[split]) == NUM_EXAMPLES
        assert list(data.pairs[split]) == [(r["en"], r["de"]) for r in records]
        assert data.references(split) == [r["de"] for r in records]
    assert data.pairs["train"][-1] == data.pairs["train"][NUM_EXAMPLES - 1]
    assert data.pairs["train"][2:4] == [data.pairs["train"][2], data.pairs["train"][3]]
    with pytest.raises(IndexError):
        data.pairs["train"][NUM_EXAMPLES]
    saved = load_tokenizer(tmp_path / "run")
    assert saved.model_proto == data.tokenizer.model_proto and saved.pad_id == 0


def test_batches_and_token_cache(mocked_wmt, tmp_path):
    data = wmt14_ende.build(make_config(tmp_path), workdir=None)
    train = set(data.pairs["train"])
    for batch in itertools.islice(data.train_iter(batch_size=8, seed=0), 6):
        assert batch["inputs"].shape[0] == batch["targets"].shape[0] == 8
        assert batch["inputs"].shape[1] <= 32 and batch["inputs"].dtype == np.int32
        for inputs, targets in zip(batch["inputs"], batch["targets"], strict=True):
            assert (data.detokenize(inputs), data.detokenize(targets)) in train
    batches = list(data.eval_iter(batch_size=10, num_batches=-1, split="test"))
    assert len(batches) == 5
    rows = [row for batch in batches for row in batch["inputs"]]
    assert [data.detokenize(row) for row in rows[:NUM_EXAMPLES]] == data.sources("test")
    assert not np.any(rows[NUM_EXAMPLES:])
    cache = tmp_path / "wmt14_translate" / "de-en" / "1.0.0" / "tokens"
    assert data.cache_dir.parent.parent == cache and data.cache_dir.name == "en-de"
    assert {p.name for p in data.cache_dir.iterdir()} == {"train.npz", "test.npz"}


def test_direction_is_configurable(mocked_wmt, tmp_path):
    en_de = wmt14_ende.build(make_config(tmp_path), workdir=None)
    de_en = wmt14_ende.build(make_config(tmp_path, source="de", target="en"), workdir=None)
    assert list(de_en.pairs["validation"]) == [(de, en) for en, de in en_de.pairs["validation"]]
    with pytest.raises(ValueError, match="between 'en' and 'de'"):
        wmt14_ende.build(make_config(tmp_path, source="fr"), workdir=None)


def test_prepared_records_hold_bytes():
    records = [{"de": "Grüß Gott.".encode(), "en": b"Hello."}, {"de": b"Ja.", "en": b"Yes."}]
    pairs = translation_pairs.lazy_pairs(records, "en", "de")
    assert list(pairs) == [("Hello.", "Grüß Gott."), ("Yes.", "Ja.")]
    assert len(pairs) == 2 and pairs[-2] == ("Hello.", "Grüß Gott.")
