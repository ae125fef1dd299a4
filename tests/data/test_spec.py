"""Each data module's `spec` gives what `build` gives the tasks, without reading the data."""

import pathlib

import ml_collections
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import (
    bible_enes,
    cifar10,
    ding_ende,
    fashion_mnist,
    imagenet2012,
    shakespeare,
    synthetic,
    wmt14_ende,
)
from jaxformer.data.tokenizers import SentencePieceTokenizer
from tests.data.test_ding_ende import ENTRIES, write_dictd

TRANSLATION = {"vocab_size": 320, "max_source_length": 32, "max_target_length": 32,
               "tokenizer_sentences": 1000}
IMAGES = {"crop": "inception", "flip": True, "mean": (0.5,) * 3, "std": (0.5,) * 3}


def spec_of(module, data_dir: pathlib.Path, values: dict, **kwargs):
    """`module.spec` of `values` with `data_dir`, a new folder, checked to train no tokenizer
    and to leave the folder empty."""
    def no_training(*_, **__):
        raise AssertionError("spec trained a tokenizer")

    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SentencePieceTokenizer, "train", no_training)
        spec = module.spec(ml_collections.ConfigDict({**values, "data_dir": str(data_dir)}),
                           **kwargs)
    assert not any(data_dir.iterdir())
    return spec


def build(module, data_dir: pathlib.Path, values: dict, **kwargs):
    """`module.build` of `values` with `data_dir`, in memory (no workdir)."""
    config = ml_collections.ConfigDict({**values, "data_dir": str(data_dir)})
    return module.build(config, workdir=None, **kwargs)


def tokenizer_fields(tokenizer) -> tuple:
    return tuple(getattr(tokenizer, name, None)
                 for name in ("vocab_size", "pad_id", "bos_id", "eos_id"))


def assert_same_tokens(spec, data):
    assert spec.vocab_size == data.vocab_size == data.tokenizer.vocab_size
    assert tokenizer_fields(spec.tokenizer) == tokenizer_fields(data.tokenizer)
    assert spec.class_names is spec.num_classes is spec.image_shape is None


def assert_same_images(spec, data):
    assert spec.class_names == tuple(data.class_names)
    assert spec.num_classes == data.num_classes
    assert spec.image_shape == data.image_shape
    assert spec.vocab_size is spec.tokenizer is None


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_shakespeare(tmp_path, tokenizer):
    values = {"tokenizer": tokenizer, "vocab_size": 400, "block_size": 32}
    spec = spec_of(shakespeare, tmp_path / "empty", values)
    data = build(shakespeare, tmp_path, values)
    assert_same_tokens(spec, data)
    if tokenizer == "char":
        assert spec.tokenizer.chars == data.tokenizer.chars


def test_synthetic(tmp_path):
    values = {"vocab_size": 1000, "block_size": 32}
    spec = spec_of(synthetic, tmp_path / "empty", values)
    assert_same_tokens(spec, build(synthetic, tmp_path, values))


@pytest.mark.slow
def test_bible_enes(tmp_path):
    values = {"source": "es", "target": "en", **TRANSLATION, "vocab_size": 500}
    spec = spec_of(bible_enes, tmp_path / "empty", values)
    assert_same_tokens(spec, build(bible_enes, tmp_path, values))


def test_ding_ende(tmp_path):
    entries = list(ENTRIES) + [
        ([f"sentence {i}"], f"This is example sentence {i}. /ðɪs/\nDas ist Beispielsatz {i}.\n")
        for i in range(60)]
    dictd_dir = write_dictd(tmp_path / "dictd", entries)
    values = {"source": "en", "target": "de", **TRANSLATION}
    spec = spec_of(ding_ende, tmp_path / "empty", values, dictd_dir=dictd_dir)
    assert_same_tokens(spec, build(ding_ende, tmp_path, values, dictd_dir=dictd_dir))


def test_wmt14_ende(tmp_path):
    values = {"source": "en", "target": "de", **TRANSLATION}
    spec = spec_of(wmt14_ende, tmp_path / "empty", values)
    with tfds.testing.mock_data(num_examples=48):
        data = build(wmt14_ende, tmp_path, values)
    assert_same_tokens(spec, data)


@pytest.mark.parametrize("values", [{}, {"image_size": 32, "crop": "pad", "crop_padding": 2}])
def test_fashion_mnist(tmp_path, values):
    values = {"source": "auto", **values}  # The subset: the empty data_dir has no full set.
    spec = spec_of(fashion_mnist, tmp_path / "empty", values)
    assert_same_images(spec, build(fashion_mnist, tmp_path, values))
    assert spec.image_shape == (values.get("image_size", 28),) * 2 + (1,)


@pytest.mark.parametrize("module", [cifar10, imagenet2012])
@pytest.mark.parametrize("image_size", [0, 64])
def test_tfds_images(tmp_path, module, image_size):
    values = {**IMAGES, "image_size": image_size}
    spec = spec_of(module, tmp_path / "empty", values)
    with tfds.testing.mock_data(num_examples=7):
        data = build(module, tmp_path, values)
    assert_same_images(spec, data)


def test_imagenet2012_without_data(tmp_path):
    spec = spec_of(imagenet2012, tmp_path / "empty", IMAGES)
    assert spec.num_classes == 1000 and spec.image_shape == (224, 224, 3)
    assert spec.class_names[:2] == ("n01440764", "n01443537")
    assert len(set(spec.class_names)) == 1000
