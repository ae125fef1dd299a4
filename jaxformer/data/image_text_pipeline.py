"""Image-text pairs as grain pipelines over feature dicts (CLIP's data).

Training examples are feature dicts with `image`, `captions` (every caption of the image) and
`wrap` (whether a prompt template may be put around them). Each step draws, per row of the
global batch, one of the image's captions and, with probability `template_probability` when
`wrap`, one of the training templates ("an emoji of {}.") to put it in; the image gets the
training augmentation of `image_pipeline.Preprocess`. The numbers come from the same seeded
per-step `Draws` as the image's crops, so a batch depends only on the seed and the step, not
on how many processes share it, and an iterator's state (the next step) resumes it exactly.

Eval splits are read once in order: examples with `image`, `caption` (the canonical one) and
`label` (the image's class in `class_names(split)`); rows past the end are padding, zeroed and
labelled -1. Each split also has every caption of each example (`captions`, for retrieval)
and prompt templates (`templates`, for zero-shot classification).

Texts become token rows with `caption_bpe` (byte-level BPE trained on the training captions
and templates, or a pretrained CLIP's, kept in the workdir's assets).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import grain
import ml_collections
import numpy as np

from jaxformer.data import common, image_pipeline
from jaxformer.data.caption_bpe import (
    BOS_ID,
    EOT_ID,
    MIN_VOCAB_SIZE,
    PAD_ID,
    CaptionTokenizer,
    token_rows,
)
from jaxformer.data.common import DataSpec, Shard, TokenizerSpec
from jaxformer.data.image_pipeline import Preprocess
from jaxformer.data.transforms import Compose, Draws, Features

MIN_CONTEXT_LENGTH = 3
DEFAULTS = {"context_length": 77, "template_probability": 0.5}


# --- Steps on feature dicts --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChooseCaption:
    """`captions` -> `caption`: one of them, drawn; put in one of `templates` (another draw)
    with `probability` when the example's `wrap` is true. Three draws, always taken."""

    templates: tuple[str, ...]
    probability: float
    num_draws: ClassVar[int] = 3

    def __call__(self, features: Features, draws: Draws) -> Features:
        features = dict(features)
        captions, wrap = features.pop("captions"), bool(features.pop("wrap"))
        caption = str(captions[draws.integers(len(captions))])
        wrapped = draws.random() < self.probability
        template = draws.integers(len(self.templates)) if self.templates else 0
        if wrap and wrapped and self.templates:
            caption = self.templates[template].format(caption)
        return {**features, "caption": caption}


@dataclasses.dataclass(frozen=True)
class Tokenize:
    """`caption` -> `text`, int32 `[context_length]` (see `token_rows`)."""

    tokenizer: CaptionTokenizer
    context_length: int
    num_draws: ClassVar[int] = 0

    def __call__(self, features: Features, draws: Draws) -> Features:
        features = dict(features)
        text = token_rows(self.tokenizer, [features.pop("caption")], self.context_length)[0]
        return {**features, "text": text}


class Concat:
    """The examples of each of `sources`, one after another."""

    def __init__(self, sources: Sequence[Sequence]):
        self.sources = [source for source in sources if len(source)]
        self.ends = np.cumsum([len(source) for source in self.sources])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, index: int) -> Features:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        part = int(np.searchsorted(self.ends, index, side="right"))
        return self.sources[part][index - (int(self.ends[part - 1]) if part else 0)]


class MappedSource:
    """`fn(source[i], i)` for each example of `source`: records of a data set as the
    pipeline's feature dicts."""

    def __init__(self, source: Sequence, fn: Callable[[Any, int], Features]):
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Features:
        return self.fn(self.source[int(index)], int(index))


# --- The data object ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class EvalSplit:
    """An eval split: `source` of feature dicts (`image`, `caption`, `label`), its prompt
    `templates`, and `describe()` -> (class names, every caption of each example), read once
    when first asked for (a large split's captions only when an evaluator needs them)."""

    source: Sequence
    templates: tuple[str, ...]
    describe: Callable[[], tuple[tuple[str, ...], list[list[str]]]]

    @classmethod
    def of(cls, source: Sequence, class_names: Sequence[str], captions: Sequence[Sequence[str]],
           templates: Sequence[str]) -> EvalSplit:
        if len(captions) != len(source):
            raise ValueError(f"{len(source)} examples but captions of {len(captions)}")
        names, groups = tuple(class_names), [list(group) for group in captions]
        return cls(source, tuple(templates), lambda: (names, groups))

    @functools.cached_property
    def _described(self) -> tuple[tuple[str, ...], list[list[str]]]:
        return self.describe()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._described[0]

    @property
    def captions(self) -> list[list[str]]:
        return self._described[1]


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTextData:
    """Image-caption pairs for contrastive training, and eval splits for zero-shot
    classification, retrieval and linear probes.

    Attributes:
        train_source: training examples, feature dicts with `image`, `captions`, `wrap`.
        eval_sources: split name -> `EvalSplit`, the first split the default.
        tokenizer: the captions' BPE (padding `pad_id`, start `bos_id`, end of text
            `eot_id`).
        preprocess: how images become model inputs.
        context_length: tokens per text row.
        train_templates: prompt templates ("{}" for the caption) put around training
            captions of examples with `wrap`.
        template_probability: how often they are.
        read_threads: threads preparing batches ahead of the training loop (0: on demand).
    """

    train_source: Sequence
    eval_sources: Mapping[str, EvalSplit]
    tokenizer: CaptionTokenizer
    preprocess: Preprocess
    context_length: int = DEFAULTS["context_length"]
    train_templates: tuple[str, ...] = ()
    template_probability: float = DEFAULTS["template_probability"]
    read_threads: int = 0

    def __post_init__(self):
        if not self.eval_sources:
            raise ValueError("no eval split")
        for name, source in {"train": self.train_source,
                             **{k: v.source for k, v in self.eval_sources.items()}}.items():
            if len(source) == 0:
                raise ValueError(f"the {name} split is empty")
        if self.context_length < MIN_CONTEXT_LENGTH:
            raise ValueError(f"context_length must be at least {MIN_CONTEXT_LENGTH}, got "
                             f"{self.context_length}")
        if not 0 <= self.template_probability <= 1:
            raise ValueError(f"template_probability must be in [0, 1], got "
                             f"{self.template_probability}")
        for template in self.train_templates:
            if "{}" not in template:
                raise ValueError(f"template {template!r} has no {{}} for the caption")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def bos_id(self) -> int:
        return self.tokenizer.bos_id

    @property
    def eot_id(self) -> int:
        return self.tokenizer.eot_id

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.preprocess.shape

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(self.eval_sources)

    def class_names(self, split: str | None = None) -> tuple[str, ...]:
        """The name of each label of `split` (None: the default split)."""
        return self._split(split).class_names

    def captions(self, split: str | None = None) -> list[list[str]]:
        """Every caption of each example of `split`, in the split's order."""
        return self._split(split).captions

    def templates(self, split: str | None = None) -> tuple[str, ...]:
        """Prompt templates of `split`, "{}" standing for a class name."""
        return self._split(split).templates

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """int32 `[len(texts), context_length]`: `[start] ids [end]`, then padding."""
        return token_rows(self.tokenizer, list(texts), self.context_length)

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's `batch_size` pairs per batch:
        `{"image": float32[batch_size, H, W, C], "text": int32[batch_size, context]}`."""
        shard = Shard(batch_size, process_index, process_count)
        transform = Compose((*self.preprocess.train_transforms().steps,
                             ChooseCaption(self.train_templates, self.template_probability),
                             Tokenize(self.tokenizer, self.context_length)))
        make = image_pipeline.TrainBatch(self._reader(self.train_source),
                                          len(self.train_source), transform, shard, seed)
        dataset = grain.MapDataset.range(sys.maxsize).map(make)
        return iter(dataset.to_iter_dataset(common.read_options(self.read_threads)))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, split: str | None = None,
        process_index: int = 0, process_count: int = 1,
    ) -> grain.DatasetIterator:
        """The first `num_batches` batches of `split` (None: the first of `eval_splits`) in
        order (-1: the whole split, once): `{"image", "text"` (the canonical caption),
        `"label"}`. Rows past the end of the split are zeros labelled -1."""
        shard = Shard(batch_size, process_index, process_count)
        source = self._split(split).source
        count = common.in_order_batches(len(source), shard.global_batch, num_batches)
        transform = Compose((*self.preprocess.eval_transforms().steps,
                             Tokenize(self.tokenizer, self.context_length)))
        make = image_pipeline.EvalBatch(self._reader(source), len(source), transform, shard)
        dataset = grain.MapDataset.range(count).map(make)
        return iter(dataset.to_iter_dataset(common.read_options(self.read_threads)))

    def _split(self, split: str | None) -> EvalSplit:
        return self.eval_sources[common.choose_split(split, self.eval_splits)]

    @staticmethod
    def _reader(source: Sequence) -> Callable[[int], Features]:
        return lambda index: dict(source[int(index)])


# --- Config ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ImageTextSpec(DataSpec):
    """What a contrastive task reads of `ImageTextData`, from the config alone: the special
    ids are a trained vocabulary's (a workdir's tokenizer, such as an imported CLIP's, may
    have others; they do not change the parameters' shapes)."""

    context_length: int = DEFAULTS["context_length"]
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eot_id: int = EOT_ID


def text_settings(config: ml_collections.ConfigDict, *, vocab_size: int
                  ) -> tuple[int, int, float]:
    """(`vocab_size`, `context_length`, `template_probability`) of `config`, each defaulted
    (`vocab_size` to the data set's) and checked; ValueError for values `build` would
    reject."""
    size = common.require_int(config, "vocab_size", minimum=MIN_VOCAB_SIZE,
                              default=vocab_size)
    context = common.require_int(config, "context_length", minimum=MIN_CONTEXT_LENGTH,
                                 default=DEFAULTS["context_length"])
    probability = config.get("template_probability", DEFAULTS["template_probability"])
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not (
            0 <= probability <= 1):
        raise ValueError(f"data.template_probability must be in [0, 1], got {probability!r}")
    return size, context, float(probability)


def spec(config: ml_collections.ConfigDict, preprocess: Preprocess, *,
         vocab_size: int) -> ImageTextSpec:
    """The token ids and image shape of the data `config` builds (`vocab_size`: the data
    set's default), without training or reading anything."""
    size, context_length, _ = text_settings(config, vocab_size=vocab_size)
    return ImageTextSpec(
        vocab_size=size, image_shape=preprocess.shape, context_length=context_length,
        tokenizer=TokenizerSpec(size, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOT_ID))
