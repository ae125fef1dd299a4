"""Detection batches as grain pipelines (DETR's data): images with boxes and class labels.

Sources are random-access sequences of feature dicts: `image` (uint8 `[H, W, C]` / `[H, W]`
or the bytes of an encoded file), `boxes` (float32 `[n, 4]`, absolute pixel
`(x0, y0, x1, y1)`) and `labels` (int32 `[n]`), `n` varying between examples. The steps of
`DetectionPreprocess` (from `box_transforms`) augment them and give every example the same
shapes. A batch of `B` examples:

    image      float32 [B, S, S, C]  normalised, zero-padded at the bottom and right
    pixel_mask bool    [B, S, S]     true for the image's own pixels
    size       int32   [B, 2]        (height, width) of the image before padding
    boxes      float32 [B, M, 4]     (cx, cy, w, h) relative to `size`, in [0, 1]
    labels     int32   [B, M]        class ids; 0 in padding slots
    box_mask   bool    [B, M]        true for real boxes (the training targets)
    crowd_mask bool    [B, M]        true for crowd regions (data with `crowd` flags: COCO)
    area       float32 [B, M]        the objects' areas in pixels of `size` (data with `area`)

with `S` the preprocessing's `max_size` and `M` its `max_boxes`. Training batches and their
random draws depend only on the seed and the step, as in `image_pipeline` (whose batch makers
this module uses), so iterators resume exactly and processes take blocks of the global batch.
Evaluation reads a split once in order; rows past its end are all zeros (no pixels, no
boxes, size 0).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import ClassVar

import ml_collections
import numpy as np

from jaxformer.data import common
from jaxformer.data.box_transforms import (
    BoxesToCxcywh,
    FitShorterSide,
    FlipWithBoxes,
    PadBoxes,
    RandomSelect,
    RandomShorterSide,
    RandomSizeCrop,
)
from jaxformer.data.common import DataSpec
from jaxformer.data.image_pipeline import ImageData
from jaxformer.data.transforms import Compose, Decode, Draws, Features, Normalize

FEATURES = ("image", "boxes", "labels")


@dataclasses.dataclass(frozen=True)
class DetectionPreprocess:
    """How an image and its boxes become model inputs (DETR's augmentation, sizes in pixels).

    Training: with probability `crop_probability`, a crop of random height and width in
    `crop_size` followed by a random shorter side of `scales`, else the random shorter side
    alone (the longer side at most `max_size`); then a left-right flip with probability 0.5
    if `flip`. Evaluation: the shorter side `max(scales)`, the longer at most
    `max_size`. Both end with `(pixel / 255 - mean) / std`, boxes in relative cxcywh, and
    the image padded to `max_size x max_size`, boxes to `max_boxes`.
    """

    scales: tuple[int, ...]
    max_size: int
    max_boxes: int
    crop_size: tuple[int, int]
    channels: int = 3
    flip: bool = False
    crop_probability: float = 0.0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self):
        _check_positive_ints("scales", self.scales)
        _check_positive_ints("crop_size", self.crop_size, length=2)
        if max(self.scales) > self.max_size:
            raise ValueError(f"scales {self.scales} pass max_size {self.max_size}")
        if self.crop_size[0] > self.crop_size[1]:
            raise ValueError(f"crop_size {self.crop_size} must be (min, max)")
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes must be positive, got {self.max_boxes}")
        if self.channels not in (1, 3):
            raise ValueError(f"images need 1 or 3 channels, got {self.channels}")
        if not 0 <= self.crop_probability <= 1:
            raise ValueError(f"crop_probability must be in [0, 1], got {self.crop_probability}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The padded images' `(height, width, channels)`."""
        return (self.max_size, self.max_size, self.channels)

    def train_transforms(self) -> Compose:
        """Decode, (crop and) multi-scale resize, flip, normalise, pad. The flip's draw is
        taken even without flips, so that a flipped example is the mirror image of the one
        made without them."""
        resize = RandomShorterSide(self.scales, self.max_size)
        crop = Compose((RandomSizeCrop(*self.crop_size), resize))
        return Compose((Decode(self.channels), RandomSelect(crop, resize, self.crop_probability),
                        FlipWithBoxes(0.5 if self.flip else 0.0), *self._finish()))

    def eval_transforms(self) -> Compose:
        """Decode, the largest scale, normalise, pad."""
        return Compose((Decode(self.channels), FitShorterSide(max(self.scales), self.max_size),
                        *self._finish()))

    def _finish(self) -> tuple:
        return (Normalize(self.mean, self.std), BoxesToCxcywh(),
                PadBoxes(self.max_size, self.max_size, self.max_boxes))


def _check_positive_ints(name: str, values, length: int | None = None) -> None:
    values = tuple(values)
    if (not values or (length is not None and len(values) != length)
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                       for v in values)):
        count = f"{length} " if length else ""
        raise ValueError(f"{name} must be {count}positive integers, got {values!r}")


def preprocess_from_config(config: ml_collections.ConfigDict, *, channels: int,
                           scales: tuple[int, ...], crop_size: tuple[int, int],
                           max_boxes: int) -> DetectionPreprocess:
    """A `DetectionPreprocess` from the `config.data` keys `scales`, `max_size` (0: the
    largest scale), `max_boxes`, `flip`, `crop_probability`, `crop_size`, `mean`, `std`,
    each optional (the keyword arguments are the data set's defaults)."""
    scales = tuple(config.get("scales", None) or scales)
    try:
        largest = max(scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be positive integers, got {scales!r}") from None
    return DetectionPreprocess(
        scales=scales, max_size=config.get("max_size", 0) or largest,
        max_boxes=config.get("max_boxes", 0) or max_boxes, channels=channels,
        flip=config.get("flip", False),
        crop_probability=config.get("crop_probability", 0.0),
        crop_size=tuple(config.get("crop_size", None) or crop_size),
        mean=tuple(config.get("mean", (0.5,))), std=tuple(config.get("std", (0.5,))))


def check_detection_config(config: ml_collections.ConfigDict, **defaults) -> DetectionPreprocess:
    """The preprocessing `preprocess_from_config(config, **defaults)` builds; ValueError for
    keys `build` would reject (`read_threads` included)."""
    for key in ("max_size", "max_boxes", "read_threads"):
        common.require_int(config, key, minimum=0, default=0)
    try:
        return preprocess_from_config(config, **defaults)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad detection preprocessing in data: {e}") from e


@dataclasses.dataclass(frozen=True)
class CheckLabels:
    """Checks that every label lies in `[0, num_classes)`."""

    num_classes: int
    num_draws: ClassVar[int] = 0

    def __call__(self, features: Features, draws: Draws) -> Features:
        labels = np.asarray(features["labels"], np.int32)
        if labels.size and not (labels.min() >= 0 and labels.max() < self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {labels}")
        return {**features, "labels": labels}


@dataclasses.dataclass(frozen=True)
class DetectionSpec(DataSpec):
    """What a detection task reads of `DetectionData`, from the config alone."""

    max_boxes: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class DetectionData(ImageData):
    """The train and eval splits of a detection data set, with their preprocessing: an
    `ImageData` whose examples hold `image`, `boxes` and `labels` and whose batches are those
    of the module docstring.

    Attributes:
        train_source: the training examples (`image`, `boxes`, `labels`).
        eval_sources: split name -> examples, the first split the default of `eval_iter`.
        class_names: the name of each label.
        preprocess: how images and boxes become model inputs (`DetectionPreprocess`).
        read_threads: threads preparing batches ahead of the training loop (0: on demand).
    """

    features: tuple[str, ...] = FEATURES

    @property
    def max_boxes(self) -> int:
        return self.preprocess.max_boxes

    def _transform(self, steps: Compose) -> Compose:
        """The labels' check, then the steps (which pad the labels)."""
        return Compose((CheckLabels(self.num_classes), *steps.steps))
