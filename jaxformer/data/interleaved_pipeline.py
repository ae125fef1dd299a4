"""Interleaved image-text sequences (the Flamingo-style model's data), as grain pipelines.

A sequence is a run of image-caption chunks, each `<image>` + caption + `<|endofchunk|>`,
with the chunks' images stacked in order:

    tokens  <image> an emoji of a cat . <|endofchunk|> <image> a dress . <|endofchunk|> ...
    images  [cat, dress, 0, 0]    (`max_images` slots; the unused ones zero and never seen)

Training rows hold `max_images` chunks (fewer when the text is cut at `seq_length`), so that
each row holds captions after 0, 1, ... `max_images - 1` earlier chunks: every shot count up
to that is trained, and no image slot is encoded for nothing. The images come from an
endless stream of seeded epochs of the training pairs, each with the training augmentation
and a caption drawn as for CLIP (`image_text_pipeline.ChooseCaption`). Everything a batch
holds comes from the seed and the step, so iterators resume exactly and rows do not depend
on how many processes share the batch. Eval splits give one chunk per example, its
canonical caption.

Batches: `images` float32 `[batch, max_images, H, W, C]`, `inputs` and `targets` int32
`[batch, seq_length]` (targets are the inputs shifted by one), `weights` float32: 1 where the
target is caption text or `<|endofchunk|>`, 0 at `<image>` targets (an image's arrival is
not predicted) and padding. Token ids come from the frozen language model's tokenizer,
whose vocabulary holds both special symbols.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import grain
import numpy as np

from jaxformer.data import common, image_pipeline
from jaxformer.data.common import Batch, DataSpec, EpochOrders, Shard
from jaxformer.data.image_pipeline import Preprocess
from jaxformer.data.image_text_pipeline import ChooseCaption, EvalSplit
from jaxformer.data.tokenizers import Tokenizer
from jaxformer.data.transforms import Compose, Draws, Features, no_draws

PAD_ID = 0  # Padding inputs; they carry no weight.


def chunk_ids(tokenizer: Tokenizer, caption: str, media_id: int, end_id: int) -> list[int]:
    """`<image>` + the caption's ids + `<|endofchunk|>`."""
    return [media_id, *tokenizer.encode(caption), end_id]


def sequence_row(ids: Sequence[int], seq_length: int, media_id: int
                 ) -> dict[str, np.ndarray]:
    """`inputs`, `targets` and `weights` `[seq_length]` of one sequence of token ids, cut or
    padded to `seq_length + 1` tokens."""
    ids = np.asarray(list(ids)[:seq_length + 1], np.int32)
    padded = np.full([seq_length + 1], PAD_ID, np.int32)
    padded[:len(ids)] = ids
    real = np.arange(1, seq_length + 1) < len(ids)  # Whether each target is a real token.
    targets = padded[1:]
    return {"inputs": padded[:-1], "targets": targets,
            "weights": (real & (targets != media_id)).astype(np.float32)}


@dataclasses.dataclass(frozen=True, eq=False)
class _TrainBatch:
    """Step -> this process's rows of the step's global batch of interleaved sequences."""

    read: Callable[[int], Features]
    orders: EpochOrders
    transform: Compose  # Image augmentation and caption choice, for one chunk.
    text: Callable[[Sequence[str]], dict[str, np.ndarray]]
    image_shape: tuple[int, ...]
    shard: Shard
    seed: int
    max_images: int

    def __call__(self, step: int) -> Batch:
        rows, global_batch = self.shard.rows, self.shard.global_batch
        uniforms = np.random.default_rng([self.seed, step]).random(
            (global_batch, self.max_images, self.transform.num_draws))
        batch = []
        for row in rows:
            first = (step * global_batch + row) * self.max_images  # In the stream of images.
            images = np.zeros((self.max_images, *self.image_shape), np.float32)
            captions = []
            for slot in range(self.max_images):
                chunk = self.transform(self.read(self.orders.example(first + slot)),
                                       Draws(uniforms[row, slot]))
                images[slot] = chunk["image"]
                captions.append(chunk["caption"])
            batch.append({"images": images, **self.text(captions)})
        return image_pipeline.stack(batch)


@dataclasses.dataclass(frozen=True)
class InterleavedSpec(DataSpec):
    """What the captioning task reads of `InterleavedData`, from the config alone."""

    seq_length: int = 64
    max_images: int = 4
    media_id: int = 0
    end_of_chunk_id: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class FewShotSplit:
    """Few-shot classification: each query image is classified after `shots` labelled
    examples drawn from `support` (Flamingo's in-context classification).

    Attributes:
        queries: examples to classify, feature dicts with `image` and `label`.
        support: where the shots come from (feature dicts with `image`, `label`); when it is
            `queries` itself, a query is never among its own shots.
        class_names: the name of each label.
        template: how a labelled example is captioned ("an emoji of {}."), "{}" the class.
    """

    queries: Sequence
    support: Sequence
    class_names: tuple[str, ...]
    template: str

    def shots(self, query: int, shots: int, seed: int) -> list[int]:
        """The support examples shown before query `query`: `shots` distinct ones drawn with
        `(seed, query)`, the same for every class candidate and every model."""
        rng = np.random.default_rng([seed, query])
        pool = np.arange(len(self.support))
        if self.support is self.queries:
            pool = pool[pool != query]
        if shots > len(pool):
            raise ValueError(f"{shots} shots but {len(pool)} support examples")
        return [int(i) for i in rng.choice(pool, shots, replace=False)]

    def caption(self, label: int) -> str:
        return self.template.format(self.class_names[label])


@dataclasses.dataclass(frozen=True, eq=False)
class InterleavedData:
    """Image-caption chunks as interleaved sequences for a frozen language model.

    Attributes:
        train_source: training pairs, feature dicts with `image`, `captions`, `wrap` (as
            `image_text_pipeline.ImageTextData`'s).
        eval_sources: split name -> `EvalSplit` (examples with `image`, `caption`, `label`;
            class names, every caption of each example, prompt templates).
        few_shot_splits: split name -> `FewShotSplit`, for few-shot classification.
        tokenizer: the language model's tokenizer.
        media_id, end_of_chunk_id: the ids of `<image>` and `<|endofchunk|>`.
        preprocess: how images become model inputs.
        seq_length: tokens per training sequence.
        max_images: image-caption chunks per training sequence.
        train_templates, template_probability: captions put in templates, as for CLIP.
        read_threads: threads preparing batches ahead of the training loop (0: on demand).
    """

    train_source: Sequence
    eval_sources: Mapping[str, EvalSplit]
    few_shot_splits: Mapping[str, FewShotSplit]
    tokenizer: Tokenizer
    media_id: int
    end_of_chunk_id: int
    preprocess: Preprocess
    seq_length: int = 64
    max_images: int = 4
    train_templates: tuple[str, ...] = ()
    template_probability: float = 0.5
    read_threads: int = 0

    pad_id: ClassVar[int] = PAD_ID

    def __post_init__(self):
        if self.seq_length < 2:
            raise ValueError(f"seq_length must be at least 2, got {self.seq_length}")
        if self.max_images < 1:
            raise ValueError(f"max_images must be positive, got {self.max_images}")
        if not self.eval_sources:
            raise ValueError("no eval split")
        for name, source in {"train": self.train_source,
                             **{k: v.source for k, v in self.eval_sources.items()}}.items():
            if len(source) == 0:
                raise ValueError(f"the {name} split is empty")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.preprocess.shape

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(self.eval_sources)

    def split(self, split: str | None = None) -> EvalSplit:
        """The eval split `split` (None: the first)."""
        return self.eval_sources[common.choose_split(split, self.eval_splits)]

    def few_shot(self, split: str) -> FewShotSplit:
        """The few-shot classification split `split`."""
        return self.few_shot_splits[common.choose_split(split, tuple(self.few_shot_splits))]

    def eval_image(self, example: Features) -> np.ndarray:
        """An example's image as the model sees it in evaluation (float32 `[H, W, C]`)."""
        return self.preprocess.eval_transforms()(dict(example), no_draws())["image"]

    def chunk_ids(self, caption: str) -> list[int]:
        """`<image>` + the caption's ids + `<|endofchunk|>`."""
        return chunk_ids(self.tokenizer, caption, self.media_id, self.end_of_chunk_id)

    def sequence(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        """`inputs`, `targets`, `weights` of the chunks of `captions`, in order."""
        ids = [i for caption in captions for i in self.chunk_ids(caption)]
        return sequence_row(ids, self.seq_length, self.media_id)

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's `batch_size` sequences per batch."""
        transform = Compose((*self.preprocess.train_transforms().steps,
                             ChooseCaption(self.train_templates, self.template_probability)))
        make = _TrainBatch(
            read=lambda index: dict(self.train_source[int(index)]),
            orders=EpochOrders(len(self.train_source), seed), transform=transform,
            text=self.sequence, image_shape=self.image_shape,
            shard=Shard(batch_size, process_index, process_count), seed=seed,
            max_images=self.max_images)
        dataset = grain.MapDataset.range(sys.maxsize).map(make)
        return iter(dataset.to_iter_dataset(common.read_options(self.read_threads)))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, split: str | None = None,
        process_index: int = 0, process_count: int = 1,
    ) -> grain.DatasetIterator:
        """The first `num_batches` batches of `split` in order (-1: all), each example one
        chunk with its canonical caption (`images` `[batch, 1, H, W, C]`); rows past the end
        have zero weight."""
        shard = Shard(batch_size, process_index, process_count)
        source = self.split(split).source
        count = common.in_order_batches(len(source), shard.global_batch, num_batches)
        transform = self.preprocess.eval_transforms()

        def read(index: int) -> Features:
            example = transform(dict(source[int(index)]), no_draws())
            return {"images": example["image"][None],
                    **self.sequence([str(example["caption"])])}

        make = image_pipeline.EvalBatch(read, len(source), Compose(()), shard)
        dataset = grain.MapDataset.range(count).map(make)
        return iter(dataset.to_iter_dataset(common.read_options(self.read_threads)))
