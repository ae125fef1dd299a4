"""Image batches as grain pipelines: examples are feature dicts, transformed, then stacked.

Sources are random-access sequences of feature dicts (a tfds array_record data source, or
arrays in memory). `ImageData` reads the features it is told to (`image` and `label` for
classification) and runs them through the steps of `transforms` that `Preprocess` composes
from the config: the image, a uint8 `[H, W, C]` / `[H, W]` array or the bytes of an encoded
file, becomes float32 `[size, size, C]`, the label an int32, and features the steps do not
know pass through. A batch stacks every feature.

Training is an endless stream of epochs, each in its own order: the permutation of epoch `e`
is drawn from a generator seeded with `(seed, e)`, and the random numbers (`Draws`) of every
row of the global batch of step `k` from one seeded with `(seed, k)`. A batch thus depends
only on the seed and the step, and not on how many processes share it (see `common.Shard`).
Iterators are grain `DatasetIterator`s whose state (the next step) is saved in checkpoints,
so a resumed run sees exactly the batches it would have seen.

Evaluation reads an eval split once in order; rows past its end are padding, the features
of its first example zeroed with label -1, which the classification task leaves out.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from jaxformer.data import common
from jaxformer.data.common import Batch, EpochOrders, LazySource, Shard
from jaxformer.data.transforms import (
    CenterCrop,
    ClassLabel,
    Compose,
    Decode,
    Draws,
    Features,
    Flip,
    InceptionCrop,
    Normalize,
    PadAndRandomCrop,
    Resize,
    ResizeShorter,
    no_draws,
    normalize,
    resampling,
)
from jaxformer.errors import UserError

PAD_LABEL = -1
TRAIN_CROPS = ("inception", "pad", "none")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How images become model inputs, float32 `[image_size, image_size, channels]`.

    Training: `crop` "inception" (random-area crop resized to `image_size`), "pad" (resize to
    `image_size`, zero-pad by `crop_padding`, random crop back) or "none" (resize to
    `image_size`); then a random horizontal flip if `flip`. Evaluation: the shorter side
    resized to `resize_size` (0: to `image_size`), then the central `image_size` crop. Both
    end with `(pixel / 255 - mean) / std` per channel. Every resize uses PIL's filter
    `resample` ("bilinear"; "bicubic" for CLIP's processors).
    """

    image_size: int
    channels: int
    crop: str = "none"
    crop_padding: int = 0
    min_area: float = 0.05
    flip: bool = False
    resize_size: int = 0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    resample: str = "bilinear"

    def __post_init__(self):
        resampling(self.resample)
        if self.crop not in TRAIN_CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; available: {', '.join(TRAIN_CROPS)}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"images need 1 or 3 channels, got {self.channels}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must not be negative, got {self.crop_padding}")
        if self.resize_size and self.resize_size < self.image_size:
            raise ValueError(f"resize_size {self.resize_size} is smaller than image_size "
                             f"{self.image_size}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if not 0 < self.min_area <= 1:
            raise ValueError(f"min_area must be in (0, 1], got {self.min_area}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    def train_transforms(self) -> Compose:
        """Decode, random crop, flip, normalise. The flip's draw is there even without flips,
        so that the crops do not depend on `flip`."""
        size = self.image_size
        if self.crop == "inception":
            crop = (InceptionCrop(size, self.min_area, self.resample),)
        elif self.crop == "pad":
            crop = (Resize(size, size, self.resample), PadAndRandomCrop(size, self.crop_padding))
        else:
            crop = (Resize(size, size, self.resample),)
        return Compose((Decode(self.channels), *crop, Flip(0.5 if self.flip else 0.0),
                        Normalize(self.mean, self.std)))

    def eval_transforms(self) -> Compose:
        """The central view, normalised."""
        return Compose((*self._eval_view().steps, Normalize(self.mean, self.std)))

    def eval_view(self, image: Any) -> np.ndarray:
        """The uint8 `[image_size, image_size, channels]` crop evaluation looks at."""
        return self._eval_view()({"image": image}, no_draws())["image"]

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 images `[..., H, W, C]` -> float32 `(pixel / 255 - mean) / std`."""
        return normalize(images, self.mean, self.std)

    def _eval_view(self) -> Compose:
        return Compose((Decode(self.channels),
                        ResizeShorter(self.resize_size or self.image_size, self.resample),
                        CenterCrop(self.image_size)))


def preprocess_from_config(config: ml_collections.ConfigDict, *, channels: int,
                           image_size: int) -> Preprocess:
    """A `Preprocess` from the `config.data` keys `image_size` (0: the dataset's default),
    `crop`, `crop_padding`, `min_area`, `flip`, `resize_size`, `mean`, `std`, `resample`
    (each optional)."""
    return Preprocess(
        image_size=config.get("image_size", 0) or image_size, channels=channels,
        crop=config.get("crop", "none"), crop_padding=config.get("crop_padding", 0),
        min_area=config.get("min_area", 0.05), flip=config.get("flip", False),
        resize_size=config.get("resize_size", 0),
        mean=tuple(config.get("mean", (0.5,))), std=tuple(config.get("std", (0.5,))),
        resample=config.get("resample", "bilinear"))


def check_image_config(config: ml_collections.ConfigDict, *, channels: int,
                       image_size: int) -> None:
    """Raises ValueError for preprocessing keys or `read_threads` that `build` would reject."""
    for key in ("image_size", "crop_padding", "resize_size"):
        common.require_int(config, key, minimum=0, default=0)
    common.require_int(config, "read_threads", minimum=0, default=0)
    try:
        preprocess_from_config(config, channels=channels, image_size=image_size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad image preprocessing in data: {e}") from e


class ArraySource:
    """Random access to examples held in memory: one array per feature, first axis examples."""

    def __init__(self, features: Mapping[str, np.ndarray]):
        lengths = {key: len(values) for key, values in features.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"features of different lengths: {lengths}")
        self.features = dict(features)
        self._length = next(iter(lengths.values()), 0)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Features:
        return {key: values[index] for key, values in self.features.items()}


def stack(rows: Sequence[Features]) -> Batch:
    """One batch of the rows: every feature stacked along a new first axis."""
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def padding_row(features: Features) -> Features:
    """A row that stands for no example: `features` zeroed, its label (if any) -1."""
    row = {key: np.zeros_like(value) for key, value in features.items()}
    if "label" in row:
        row["label"] = np.full_like(row["label"], PAD_LABEL)
    return row


class TrainBatch:
    """Step -> this process's rows of the step's global batch, transformed with their draws."""

    def __init__(self, read: Callable[[int], Features], size: int, transform: Compose,
                 shard: Shard, seed: int):
        self.read, self.transform = read, transform
        self.shard, self.seed = shard, seed
        self.orders = EpochOrders(size, seed)

    def __call__(self, step: int) -> Batch:
        global_batch = self.shard.global_batch
        positions = step * global_batch + self.shard.rows  # In the endless stream of epochs.
        uniforms = np.random.default_rng([self.seed, step]).random(
            (global_batch, self.transform.num_draws))
        return stack([
            self.transform(self.read(self.orders.example(position)),
                           Draws(uniforms[row]))
            for row, position in zip(self.shard.rows, positions, strict=True)])


class EvalBatch:
    """Batch index -> this process's rows of that global batch; rows past the end padded."""

    def __init__(self, read: Callable[[int], Features], size: int, transform: Compose,
                 shard: Shard):
        self.read, self.size, self.transform, self.shard = read, size, transform, shard
        self.padding = padding_row(transform(read(0), no_draws()))

    def __call__(self, index: int) -> Batch:
        positions = index * self.shard.global_batch + self.shard.rows
        return stack([self.transform(self.read(position), no_draws())
                      if position < self.size else self.padding for position in positions])


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """The train and eval splits of an image data set, with their preprocessing.

    Attributes:
        train_source: the training examples.
        eval_sources: split name -> examples, the first split the default of `eval_iter`.
        class_names: the name of each label.
        preprocess: how images become model inputs.
        features: the features read from each example (tfds adds others, like file names).
        read_threads: threads preparing batches ahead of the training loop (0: on demand).
    """

    train_source: Sequence
    eval_sources: Mapping[str, Sequence]
    class_names: tuple[str, ...]
    preprocess: Preprocess
    features: tuple[str, ...] = ("image", "label")
    read_threads: int = 0

    def __post_init__(self):
        if not self.eval_sources:
            raise ValueError("no eval split")
        for name, source in {"train": self.train_source, **self.eval_sources}.items():
            if not (isinstance(source, LazySource) and not source.opened) and not len(source):
                raise ValueError(f"the {name} split is empty")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.preprocess.shape

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(self.eval_sources)

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's `batch_size` training examples per batch:
        `{"image": float32[batch_size, H, W, C], "label": int32[batch_size]}`."""
        shard = Shard(batch_size, process_index, process_count)
        make = TrainBatch(self._reader(self.train_source), len(self.train_source),
                           self._transform(self.preprocess.train_transforms()), shard, seed)
        dataset = grain.MapDataset.range(sys.maxsize).map(make)
        return iter(dataset.to_iter_dataset(common.read_options(self.read_threads)))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, process_index: int = 0,
        process_count: int = 1, split: str | None = None,
    ) -> grain.DatasetIterator:
        """The first `num_batches` batches of `split` (None: the first of `eval_splits`) in
        order (-1: the whole split, once; more batches than the split fills are not made).
        Rows past the end of the split are zero images labelled -1."""
        shard = Shard(batch_size, process_index, process_count)
        source = self.eval_sources[common.choose_split(split, self.eval_splits)]
        count = common.in_order_batches(len(source), shard.global_batch, num_batches)
        make = EvalBatch(self._reader(source), len(source),
                          self._transform(self.preprocess.eval_transforms()), shard)
        dataset = grain.MapDataset.range(count).map(make)
        return iter(dataset.to_iter_dataset(common.read_options(self.read_threads)))

    def _reader(self, source: Sequence) -> Callable[[int], Features]:
        def read(index: int) -> Features:
            example = source[int(index)]
            return {key: example[key] for key in self.features}
        return read

    def _transform(self, image_steps: Compose) -> Compose:
        """The image steps, then the label's check (when labels are read)."""
        if "label" not in self.features:
            return image_steps
        return Compose((*image_steps.steps, ClassLabel(self.num_classes)))


def tfds_sources(name: str, *, data_dir: str, splits: Sequence[str]) -> tuple[Any, list]:
    """(builder, one random-access source per split) of a tfds data set prepared as
    array_record in `data_dir` (see `common.default_data_dir`). Splits may be sliced
    (`"train[:99%]"`)."""
    import tensorflow_datasets as tfds

    data_dir = common.default_data_dir(data_dir)
    try:
        with common.tfds_scratch():
            builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
            sources = [builder.as_data_source(split=split) for split in splits]
    except Exception as e:  # tfds raises many kinds of errors for absent or damaged data.
        raise ValueError(
            f"cannot read {name} ({', '.join(splits)}) from {data_dir}: "
            f"{type(e).__name__}: {e}. Prepare it as array_record first: `tfds build {name} "
            f"--data_dir={data_dir} --file_format=array_record` (data prepared as tfrecord: "
            f"`tfds convert_format`)") from e
    return builder, sources


def lazy_tfds_sources(name: str, *, data_dir: str, splits: Sequence[str],
                      prepare: Callable[[Any, Sequence], Sequence] | None = None,
                      readable: Callable[[], None] | None = None) -> list[LazySource]:
    """One `LazySource` per split of `tfds_sources`, opened when first read, so that a model
    runs on single inputs without the data set. `readable()` raises where the config can
    never read the data set (checked first); `prepare(builder, source)` checks the data set
    and may wrap the source. An absent or damaged data set is one line (`UserError`)."""
    def opener(split: str) -> Callable[[], Sequence]:
        def open_split() -> Sequence:
            try:
                if readable:
                    readable()
                builder, (source,) = tfds_sources(name, data_dir=data_dir, splits=(split,))
                return prepare(builder, source) if prepare else source
            except ValueError as e:
                raise UserError(" ".join(str(e).split())) from e
        return open_split

    return [LazySource(opener(split), split) for split in splits]
