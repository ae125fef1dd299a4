"""COCO Captions (Chen et al., 2015) through tfds: images with five captions each, in
Karpathy and Li's splits (train 82,783, restval 30,504, val 5,000, test 5,000 images).

Reads the tfds `coco_captions` data set (config 2014, version 1.1.0) prepared as array_record
in `data_dir` (`tfds build coco_captions --file_format=array_record`; see
`image_pipeline.tfds_sources`). It is opened from its files, so reading it needs no
TensorFlow (tfds's code for COCO does). Training draws one of an image's captions per step
(`train_split`, default "train"; "train+restval" for the 113k images of the CLIP and ALIGN
papers); evaluation reads `eval_split` (default "val"; "test" for the 5k test results), where
each image is its own class, named by its first caption, with all its captions for
retrieval. The byte-level BPE is trained on the captions of the first `tokenizer_examples`
training images.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from jaxformer.data import caption_bpe, common, image_pipeline
from jaxformer.data import image_text_pipeline as pipeline
from jaxformer.data.image_text_pipeline import EvalSplit, ImageTextData, ImageTextSpec, MappedSource

NAME = "coco_captions/2014:1.1.0"
IMAGE_SIZE = 224
CHANNELS = 3
VOCAB_SIZE = 8192
TEMPLATES = ("{}",)  # Class names are captions already.
DEFAULTS = {"train_split": "train", "eval_split": "val", "tokenizer_examples": 10_000,
            "data_dir": "", "read_threads": 0}


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    return config.get(key, DEFAULTS[key])


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, without reading any data."""
    image_pipeline.check_image_config(config, channels=CHANNELS, image_size=IMAGE_SIZE)
    pipeline.text_settings(config, vocab_size=VOCAB_SIZE)
    common.require_int(config, "tokenizer_examples", minimum=1,
                       default=DEFAULTS["tokenizer_examples"])
    for key in ("train_split", "eval_split"):
        if not isinstance(_get(config, key), str) or not _get(config, key):
            raise ValueError(f"data.{key} must be a tfds split name, got {_get(config, key)!r}")
    common.check_data_dir(_get(config, "data_dir"), default_must_exist=False)


def _preprocess(config: ml_collections.ConfigDict) -> image_pipeline.Preprocess:
    return image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                 image_size=IMAGE_SIZE)


def spec(config: ml_collections.ConfigDict) -> ImageTextSpec:
    """Token ids, context length and image shape, without reading any data."""
    check_config(config)
    return pipeline.spec(config, _preprocess(config), vocab_size=VOCAB_SIZE)


def captions_of(record: dict) -> tuple[str, ...]:
    """The caption texts of a tfds record (str or UTF-8 bytes), whitespace-trimmed."""
    texts = record["captions"]["text"]
    return tuple(t.decode("utf-8").strip() if isinstance(t, bytes) else str(t).strip()
                 for t in np.asarray(texts).tolist())


def train_example(record: dict, index: int) -> dict:
    del index
    return {"image": record["image"], "captions": captions_of(record), "wrap": False}


def eval_example(record: dict, index: int) -> dict:
    return {"image": record["image"], "caption": captions_of(record)[0],
            "label": np.int32(index)}


def describe(source) -> tuple[tuple[str, ...], list[list[str]]]:
    """(the first caption of each image, all its captions): every record is read."""
    captions = [list(captions_of(source[i])) for i in range(len(source))]
    return tuple(group[0] for group in captions), captions


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> ImageTextData:
    """COCO Captions as image-text pairs.

    Args:
        config: the `data` part of the experiment config: `data_dir` (a tfds data dir; "":
            $TFDS_DATA_DIR or ~/tensorflow_datasets), `train_split`, `eval_split`,
            `vocab_size` (default 8192), `context_length` (77), `tokenizer_examples`,
            `read_threads`, and the preprocessing keys of
            `image_pipeline.preprocess_from_config` (`image_size` default 224).
        workdir: where the tokenizer is kept (`<workdir>/assets`; None: in memory).
    """
    check_config(config)
    vocab_size, context_length, _ = pipeline.text_settings(config, vocab_size=VOCAB_SIZE)
    train_split, eval_split = _get(config, "train_split"), _get(config, "eval_split")
    _, (train, evaluation) = image_pipeline.tfds_sources(
        NAME, data_dir=_get(config, "data_dir"), splits=(train_split, eval_split))

    def tokenizer_texts() -> list[str]:
        count = min(len(train), _get(config, "tokenizer_examples"))
        return [c for i in range(count) for c in captions_of(train[i])]

    tokenizer = caption_bpe.tokenizer_for_workdir(common.assets_dir(workdir), tokenizer_texts,
                                               vocab_size)
    eval_source = MappedSource(evaluation, eval_example)
    return ImageTextData(
        train_source=MappedSource(train, train_example),
        eval_sources={eval_split: EvalSplit(eval_source, TEMPLATES,
                                            lambda: describe(evaluation))},
        tokenizer=tokenizer, preprocess=_preprocess(config), context_length=context_length,
        read_threads=_get(config, "read_threads"))
