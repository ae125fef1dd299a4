"""`check_config` of every data module: good settings pass without writing anything, bad
ones are a ValueError that says what is wrong, and `build` checks before it writes."""

import os

import ml_collections
import pytest

from jaxformer.data import (
    bible_enes,
    books,
    cifar10,
    conll2003,
    ding_ende,
    fashion_mnist,
    glue,
    imagenet2012,
    shakespeare,
    squad,
    synthetic,
    tweet_sentiment,
    wmt14_ende,
)

MODULES = {module.__name__.rsplit(".", 1)[1]: module for module in (
    shakespeare, synthetic, bible_enes, ding_ende, wmt14_ende, fashion_mnist, cifar10,
    imagenet2012, books, tweet_sentiment, glue, conll2003, squad)}
MISSING = "/nonexistent/tfds"


def make_config(name: str, data_dir: str, overrides=None) -> ml_collections.ConfigDict:
    """Good settings for data set `name`, but for `overrides`."""
    translation = {"vocab_size": 500, "max_source_length": 64, "max_target_length": 64,
                   "tokenizer_sentences": 2000, "data_dir": data_dir}
    image = {"data_dir": data_dir, "crop": "inception", "flip": True, "resize_size": 0,
             "mean": (0.5,) * 3, "std": (0.5,) * 3, "read_threads": 2}
    config = {
        "shakespeare": {"tokenizer": "bpe", "vocab_size": 400, "block_size": 32,
                        "data_dir": data_dir},
        "synthetic": {"tokenizer": "ids", "vocab_size": 512, "block_size": 32, "data_dir": ""},
        "bible_enes": {"source": "es", "target": "en", **translation},
        "ding_ende": {"source": "en", "target": "de", **translation},
        "wmt14_ende": {"source": "de", "target": "en", **translation},
        "fashion_mnist": {"source": "subset", "data_dir": "", "image_size": 28, "crop": "pad",
                          "crop_padding": 2, "flip": True, "mean": (0.3,), "std": (0.35,)},
        "cifar10": {**image, "image_size": 32},
        "imagenet2012": {**image, "image_size": 64, "resize_size": 72, "min_area": 0.08},
        "books": {"vocab_size": 1000, "seq_length": 64, "max_predictions": 10,
                  "next_sentence": False, "whole_word_masking": True, "data_dir": ""},
        "tweet_sentiment": {"vocab_size": 1000, "seq_length": 64, "train_examples": 500},
        "glue": {"task": "mnli", "vocab_size": 1000, "seq_length": 128, "data_dir": data_dir},
        "conll2003": {"vocab_size": 1000, "seq_length": 128, "data_dir": data_dir},
        "squad": {"vocab_size": 1000, "seq_length": 384, "data_dir": data_dir},
    }[name]
    return ml_collections.ConfigDict({"name": name, **config, **(overrides or {})})


BAD = [
    ("shakespeare", {"block_size": 0}, "data.block_size must be an integer >= 1, got 0"),
    ("shakespeare", {"tokenizer": "word"}, "unknown data.tokenizer 'word'; available: char, bpe"),
    ("shakespeare", {"vocab_size": 100}, "data.vocab_size must be an integer >= 259, got 100"),
    ("shakespeare", {"data_dir": MISSING}, "data_dir '/nonexistent/tfds' does not exist"),
    ("synthetic", {"vocab_size": 1}, "data.vocab_size must be an integer >= 2"),
    ("synthetic", {"block_size": "32"}, "data.block_size must be an integer >= 1, got '32'"),
    ("synthetic", {"block_size": 1 << 18}, "data.block_size must be at most 262143"),
    ("synthetic", {"tokenizer": "char"}, "unknown data.tokenizer 'char'; available: ids"),
    ("bible_enes", {"target": "de"}, "this dataset translates between 'en' and 'es'"),
    ("bible_enes", {"vocab_size": 0}, "data.vocab_size must be an integer >= 262"),
    ("bible_enes", {"max_source_length": 1}, "data.max_source_length must be an integer >= 2"),
    ("bible_enes", {"max_target_length": 1}, "data.max_target_length must be an integer >= 2"),
    ("bible_enes", {"tokenizer_sentences": 1}, "data.tokenizer_sentences must be"),
    ("bible_enes", {"data_dir": MISSING}, "does not exist"),
    ("ding_ende", {"source": "es"}, "this dataset translates between 'en' and 'de'"),
    ("ding_ende", {"max_target_length": None}, "data.max_target_length must be an integer"),
    ("wmt14_ende", {"vocab_size": 261}, "data.vocab_size must be an integer >= 262"),
    ("wmt14_ende", {"data_dir": ""}, "data_dir '.*default' does not exist"),
    ("fashion_mnist", {"source": "all"}, "unknown Fashion-MNIST source 'all'"),
    ("fashion_mnist", {"source": "full", "data_dir": MISSING}, "full Fashion-MNIST is not in"),
    ("fashion_mnist", {"image_size": -1}, "data.image_size must be an integer >= 0"),
    ("fashion_mnist", {"crop": "random"}, "unknown crop 'random'"),
    ("fashion_mnist", {"read_threads": -1}, "data.read_threads must be an integer >= 0"),
    ("cifar10", {"std": (0.0, 1.0, 1.0)}, "std must be positive"),
    ("cifar10", {"mean": 0.5}, "bad image preprocessing"),
    ("cifar10", {"resize_size": 16}, "resize_size 16 is smaller than image_size 32"),
    ("cifar10", {"data_dir": MISSING}, "does not exist"),
    ("imagenet2012", {"min_area": 0.0}, r"min_area must be in \(0, 1\]"),
    ("imagenet2012", {"crop_padding": -2}, "data.crop_padding must be an integer >= 0"),
    ("books", {"seq_length": 1024}, "data.seq_length must be at most 512, got 1024"),
    ("books", {"next_sentence": "yes"}, "data.next_sentence must be true or false, got 'yes'"),
    ("books", {"tokenizer_workdir": "/nonexistent/run"}, "has no saved vocabulary"),
    ("books", {"vocab_size": 5}, "data.vocab_size must be an integer >= 6"),
    ("books", {"source": "wikipedia", "data_dir": MISSING}, "does not exist"),
    ("tweet_sentiment", {"seq_length": 2}, "data.seq_length must be an integer >= 4, got 2"),
    ("tweet_sentiment", {"train_examples": 0}, "data.train_examples must be -1"),
    ("tweet_sentiment", {"tokenizer_workdir": "/nonexistent/run"}, "has no saved vocabulary"),
    ("glue", {"task": "stsb"}, "glue/stsb is a regression task"),
    ("glue", {"task": "sst3"}, "unknown data.task 'sst3'; available: cola, sst2"),
    ("glue", {"data_dir": MISSING}, "does not exist"),
    ("conll2003", {"data_dir": MISSING}, "does not exist"),
    ("conll2003", {"path": "/nonexistent/conll"}, "the train file /nonexistent/conll/train.txt"),
    ("conll2003", {"tags": ("O", "B-PER", "B-PER")}, "repeated tags"),
    ("squad", {"data_dir": MISSING}, "does not exist"),
    ("squad", {"version": "1.0"}, "unknown data.version '1.0'"),
    ("squad", {"doc_stride": 400}, "data.doc_stride 400 is more than the 317 context pieces"),
]


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty folders where a data module could write (a data dir, the working directory, a
    workdir; the default data dir does not exist), and an installed dictionary."""
    folders = {name: tmp_path / name for name in ("tfds", "cwd", "run", "dictd")}
    for folder in folders.values():
        folder.mkdir()
    for name in ("freedict-eng-deu.index", "freedict-eng-deu.dict.dz"):
        (folders["dictd"] / name).write_bytes(b"")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    monkeypatch.chdir(folders["cwd"])
    return folders


def everything(tmp_path) -> set[str]:
    """Every file and folder under `tmp_path`."""
    return {os.path.relpath(os.path.join(root, name), tmp_path)
            for root, folders, files in os.walk(tmp_path) for name in folders + files}


def check(name: str, config: ml_collections.ConfigDict, places) -> None:
    if name == "ding_ende":
        ding_ende.check_config(config, dictd_dir=str(places["dictd"]))
    else:
        MODULES[name].check_config(config)


@pytest.mark.parametrize("name", MODULES)
def test_good_settings_pass_and_write_nothing(name, places, tmp_path):
    before = everything(tmp_path)
    check(name, make_config(name, str(places["tfds"])), places)
    if name not in ("wmt14_ende", "glue", "conll2003", "squad"):  # Data in an existing dir.
        check(name, make_config(name, ""), places)  # The default data dir, not made.
    assert everything(tmp_path) == before


@pytest.mark.parametrize("name,overrides,message", BAD)
def test_bad_settings_are_clear_errors(name, overrides, message, places, tmp_path):
    before = everything(tmp_path)
    with pytest.raises(ValueError, match=message):
        check(name, make_config(name, str(places["tfds"]), overrides), places)
    assert everything(tmp_path) == before


@pytest.mark.parametrize("name,overrides,message", [
    next(case for case in BAD if case[0] == name) for name in MODULES])
def test_build_checks_before_it_writes(name, overrides, message, places, tmp_path):
    before = everything(tmp_path)
    kwargs = {"dictd_dir": str(places["dictd"])} if name == "ding_ende" else {}
    with pytest.raises(ValueError, match=message):
        MODULES[name].build(make_config(name, str(places["tfds"]), overrides),
                            workdir=str(places["run"]), **kwargs)
    assert everything(tmp_path) == before
