"""Image classification batches as grain pipelines: decode, crop / flip, normalise, batch.

Sources are random-access sequences of `{"image", "label"}` examples (a tfds array_record
data source, or arrays in memory); an image is a uint8 `[H, W, C]` / `[H, W]` array or the
bytes of an encoded file (PNG, JPEG...).

Training is an endless stream of epochs, each in its own order: the permutation of epoch `e`
is drawn from a generator seeded with `(seed, e)`, and the random crop / flip of every row of
the global batch of step `k` from one seeded with `(seed, k)`. A batch thus depends only on
the seed and the step, and not on how many processes share it: process `p` takes rows
`[p * batch_size, (p + 1) * batch_size)` of the global batch. Iterators are grain
`DatasetIterator`s whose state (the next step) is saved in checkpoints, so a resumed run sees
exactly the batches it would have seen.

Evaluation reads the eval split once in order; the last global batch is padded with
all-zero images labelled -1, which the classification task leaves out of its metrics.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from PIL import Image

Batch = dict[str, np.ndarray]

PAD_LABEL = -1
TRAIN_CROPS = ("inception", "pad", "none")
INCEPTION_ATTEMPTS = 10


# ---------------------------------------------------------------------------------------
# Per-image operations on uint8 [H, W, C] arrays.

def decode(image: Any, channels: int) -> np.ndarray:
    """uint8 `[H, W, channels]` from an array (`[H, W]` or `[H, W, C]`) or encoded bytes."""
    if isinstance(image, (bytes, np.bytes_)):
        try:
            with Image.open(io.BytesIO(image)) as pil:
                image = np.asarray(pil.convert("L" if channels == 1 else "RGB"))
        except OSError as e:
            raise ValueError(f"cannot decode an image of {len(image)} bytes: {e}") from e
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"images must be [H, W] or [H, W, C], got shape {array.shape}")
    if array.shape[-1] == channels:
        return array
    if array.shape[-1] == 4:  # Drop the alpha channel.
        array = array[:, :, :3]
    if array.shape[-1] == 1 and channels == 3:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 3 and channels == 1:
        return np.asarray(Image.fromarray(array).convert("L"))[:, :, None]
    if array.shape[-1] == channels:
        return array
    raise ValueError(f"cannot make a {channels}-channel image from shape {array.shape}")


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (PIL, antialiased when shrinking) of a uint8 `[H, W, C]` image."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[-1]
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return out.reshape(height, width, channels)


def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so that the shorter side is `size`, keeping the aspect ratio."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    return resize(image, max(size, round(height * scale)), max(size, round(width * scale)))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from a {height}x{width} image")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


class Draws:
    """A row's fixed budget of uniform [0, 1) numbers, consumed in order.

    The whole global batch's numbers come from one generator per step, so that a row's
    augmentation does not depend on which process prepares it, at the cost of one generator
    per step instead of one per image.
    """

    def __init__(self, uniforms: np.ndarray):
        self.uniforms, self.next = uniforms, 0

    def random(self) -> float:
        if self.next >= len(self.uniforms):
            raise RuntimeError("the preprocessing drew more random numbers than it declared")
        value = float(self.uniforms[self.next])
        self.next += 1
        return value

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def integers(self, high: int) -> int:
        """Uniform in `[0, high)`."""
        return min(int(self.random() * high), high - 1)


def pad_and_random_crop(image: np.ndarray, size: int, padding: int, draws: Draws) -> np.ndarray:
    """Zero-pads `padding` pixels on every side, then crops `size x size` at random."""
    height, width, channels = image.shape
    top = draws.integers(height + 2 * padding - size + 1) - padding
    left = draws.integers(width + 2 * padding - size + 1) - padding
    out = np.zeros((size, size, channels), np.uint8)
    # Rows / columns of `out` that fall inside the image.
    y0, y1 = max(0, -top), min(size, height - top)
    x0, x1 = max(0, -left), min(size, width - left)
    if y0 < y1 and x0 < x1:
        out[y0:y1, x0:x1] = image[top + y0:top + y1, left + x0:left + x1]
    return out


def inception_crop(image: np.ndarray, size: int, draws: Draws, *, min_area: float = 0.05,
                   ratio: tuple[float, float] = (3 / 4, 4 / 3),
                   attempts: int = INCEPTION_ATTEMPTS) -> np.ndarray:
    """Random-area, random-aspect crop resized to `size x size` (Szegedy et al. 2015).

    The crop covers a uniform fraction in `[min_area, 1]` of the image with a log-uniform
    aspect ratio in `ratio`; after `attempts` draws that do not fit, the whole image.
    """
    height, width = image.shape[:2]
    for _ in range(attempts):
        area = height * width * draws.uniform(min_area, 1.0)
        aspect = math.exp(draws.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = draws.integers(height - crop_h + 1)
            left = draws.integers(width - crop_w + 1)
            return resize(image[top:top + crop_h, left:left + crop_w], size, size)
    return resize(image, size, size)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How images become model inputs, float32 `[image_size, image_size, channels]`.

    Training: `crop` "inception" (random-area crop resized to `image_size`), "pad" (resize to
    `image_size`, zero-pad by `crop_padding`, random crop back) or "none" (resize to
    `image_size`); then a random horizontal flip if `flip`. Evaluation: the shorter side
    resized to `resize_size` (0: to `image_size`), then the central `image_size` crop. Both
    end with `(pixel / 255 - mean) / std` per channel.
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

    def __post_init__(self):
        if self.crop not in TRAIN_CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; available: {', '.join(TRAIN_CROPS)}")
        if self.image_size < 1 or self.channels not in (1, 3):
            raise ValueError(f"need image_size >= 1 and 1 or 3 channels, got {self.image_size}, "
                             f"{self.channels}")
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

    @property
    def num_draws(self) -> int:
        """Uniform numbers one training image may use: crop, then flip."""
        crop = {"inception": 2 * INCEPTION_ATTEMPTS + 2, "pad": 2, "none": 0}[self.crop]
        return crop + 1

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 images `[..., H, W, C]` -> float32 `(pixel / 255 - mean) / std`."""
        scale = 1.0 / (255.0 * np.asarray(self.std, np.float32))
        shift = np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)
        return images.astype(np.float32) * scale - shift

    def eval_view(self, image: Any) -> np.ndarray:
        """The uint8 `[image_size, image_size, channels]` crop evaluation looks at."""
        image = decode(image, self.channels)
        return center_crop(resize_shorter(image, self.resize_size or self.image_size),
                           self.image_size)

    def train_view(self, image: Any, draws: Draws) -> np.ndarray:
        """A random uint8 `[image_size, image_size, channels]` training view."""
        image = decode(image, self.channels)
        size = self.image_size
        if self.crop == "inception":
            image = inception_crop(image, size, draws, min_area=self.min_area)
        else:
            image = resize(image, size, size)
            if self.crop == "pad":
                image = pad_and_random_crop(image, size, self.crop_padding, draws)
        if self.flip and draws.random() < 0.5:
            image = image[:, ::-1]
        return image

    def eval(self, image: Any) -> np.ndarray:
        """float32 model input of one evaluation image."""
        return self.normalize(self.eval_view(image))


def preprocess_from_config(config: ml_collections.ConfigDict, *, channels: int,
                           image_size: int) -> Preprocess:
    """A `Preprocess` from the `config.data` keys `image_size` (0: the dataset's default),
    `crop`, `crop_padding`, `min_area`, `flip`, `resize_size`, `mean`, `std` (each optional)."""
    return Preprocess(
        image_size=config.get("image_size", 0) or image_size, channels=channels,
        crop=config.get("crop", "none"), crop_padding=config.get("crop_padding", 0),
        min_area=config.get("min_area", 0.05), flip=config.get("flip", False),
        resize_size=config.get("resize_size", 0),
        mean=tuple(config.get("mean", (0.5,))), std=tuple(config.get("std", (0.5,))))


# ---------------------------------------------------------------------------------------
# Sources and batches.

class ArraySource:
    """Random access to images `uint8[N, H, W, C]` and labels `[N]` held in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": self.labels[index]}


def _read(source: Sequence, index: int) -> tuple[Any, int]:
    example = source[int(index)]
    return example["image"], int(example["label"])


def _check_rows(batch_size: int, process_index: int, process_count: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")


class _TrainBatch:
    """Step -> this process's rows of the step's global batch, augmented."""

    def __init__(self, source: Sequence, preprocess: Preprocess, num_classes: int,
                 batch_size: int, seed: int, process_index: int, process_count: int):
        self.source, self.preprocess, self.num_classes = source, preprocess, num_classes
        self.batch_size, self.seed = batch_size, seed
        self.global_batch = batch_size * process_count
        self.rows = process_index * batch_size + np.arange(batch_size)
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the examples that epoch `epoch` visits them in."""
        with self._lock:
            if epoch not in self._orders:
                if len(self._orders) >= 2:
                    self._orders.pop(min(self._orders))
                rng = np.random.default_rng([self.seed, epoch])
                self._orders[epoch] = rng.permutation(len(self.source))
            return self._orders[epoch]

    def __call__(self, step: int) -> Batch:
        size = len(self.source)
        positions = step * self.global_batch + self.rows  # In the endless stream of epochs.
        uniforms = np.random.default_rng([self.seed, step]).random(
            (self.global_batch, self.preprocess.num_draws))
        images, labels = [], []
        for row, position in zip(self.rows, positions):
            image, label = _read(self.source, self.order(position // size)[position % size])
            images.append(self.preprocess.train_view(image, Draws(uniforms[row])))
            labels.append(label)
        return _batch(self.preprocess, images, labels, self.num_classes)


class _EvalBatch:
    """Batch index -> this process's rows of that global batch; missing rows padded."""

    def __init__(self, source: Sequence, preprocess: Preprocess, num_classes: int,
                 batch_size: int, process_index: int, process_count: int):
        self.source, self.preprocess, self.num_classes = source, preprocess, num_classes
        self.global_batch = batch_size * process_count
        self.rows = process_index * batch_size + np.arange(batch_size)

    def __call__(self, index: int) -> Batch:
        images, labels = [], []
        for position in index * self.global_batch + self.rows:
            if position < len(self.source):
                image, label = _read(self.source, position)
                images.append(self.preprocess.eval_view(image))
                labels.append(label)
            else:
                images.append(None)
                labels.append(PAD_LABEL)
        return _batch(self.preprocess, images, labels, self.num_classes)


def _batch(preprocess: Preprocess, views: list[np.ndarray | None], labels: list[int],
           num_classes: int) -> Batch:
    """Normalised images of the uint8 views (`None`: a padding row, all zeros)."""
    labels = np.asarray(labels, np.int32)
    if labels.size and (labels.max() >= num_classes or labels.min() < PAD_LABEL):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}.."
                         f"{labels.max()}")
    pixels = np.zeros((len(views), *preprocess.shape), np.uint8)
    for i, view in enumerate(views):
        if view is not None:
            pixels[i] = view
    images = preprocess.normalize(pixels)
    images[labels == PAD_LABEL] = 0.0
    return {"image": images, "label": labels}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """Train and eval splits of an image classification data set, with their preprocessing.

    `read_threads` threads prepare batches ahead of the training loop (0: on demand).
    """

    train_source: Sequence
    eval_source: Sequence
    class_names: tuple[str, ...]
    preprocess: Preprocess
    read_threads: int = 0

    def __post_init__(self):
        for name in ("train_source", "eval_source"):
            if len(getattr(self, name)) == 0:
                raise ValueError(f"{name} is empty")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.preprocess.shape

    def _read_options(self) -> grain.ReadOptions:
        return grain.ReadOptions(num_threads=self.read_threads,
                                 prefetch_buffer_size=2 * self.read_threads)

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's `batch_size` training images per batch:
        `{"image": float32[batch_size, H, W, C], "label": int32[batch_size]}`."""
        _check_rows(batch_size, process_index, process_count)
        make = _TrainBatch(self.train_source, self.preprocess, self.num_classes, batch_size,
                           seed, process_index, process_count)
        dataset = grain.MapDataset.range(sys.maxsize).map(make)
        return iter(dataset.to_iter_dataset(self._read_options()))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, process_index: int = 0,
        process_count: int = 1,
    ) -> grain.DatasetIterator:
        """The first `num_batches` batches of the eval split in order (-1: the whole split,
        once; more batches than the split fills are not made). Rows past the end of the
        split are zero images labelled -1."""
        _check_rows(batch_size, process_index, process_count)
        if num_batches < -1:
            raise ValueError(f"num_batches must be -1 (all) or non-negative, got {num_batches}")
        total = math.ceil(len(self.eval_source) / (batch_size * process_count))
        count = total if num_batches == -1 else min(num_batches, total)
        make = _EvalBatch(self.eval_source, self.preprocess, self.num_classes, batch_size,
                          process_index, process_count)
        dataset = grain.MapDataset.range(count).map(make)
        return iter(dataset.to_iter_dataset(self._read_options()))


# ---------------------------------------------------------------------------------------
# Data sets prepared with tfds (array_record files).

def tfds_data_dir(data_dir: str) -> str:
    """`data_dir`, or $TFDS_DATA_DIR, or ~/tensorflow_datasets."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                              or "~/tensorflow_datasets")


def tfds_sources(name: str, *, data_dir: str, splits: Sequence[str]) -> tuple[Any, list]:
    """(builder, one random-access source per split) of a tfds data set prepared as
    array_record in `data_dir`. Splits may be sliced (`"train[:99%]"`)."""
    import tensorflow_datasets as tfds

    data_dir = tfds_data_dir(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        sources = [builder.as_data_source(split=split) for split in splits]
    except Exception as e:  # tfds raises many kinds of errors for absent or damaged data.
        raise ValueError(
            f"cannot read {name} ({', '.join(splits)}) from {data_dir}: "
            f"{type(e).__name__}: {e}. Prepare it as array_record first: `tfds build {name} "
            f"--data_dir={data_dir} --file_format=array_record` (data prepared as tfrecord: "
            f"`tfds convert_format`)") from e
    return builder, sources
