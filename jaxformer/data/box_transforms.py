"""Box-aware transforms for detection: functions on feature dicts holding an image and its
boxes, and the same as pipeline steps (see `transforms` for `Draws` and step budgets).

Before `BoxesToCxcywh`, an example holds `image` uint8 `[H, W, C]`, `boxes` float32 `[n, 4]`
in absolute pixel `(x0, y0, x1, y1)` (pixel column `j` spans `[j, j + 1)`, so a box of the
whole image is `(0, 0, W, H)`), `labels` int32 `[n]`, and optionally `crowd` bool `[n]`
(COCO's crowd regions: kept for evaluation, where detections on them are ignored, but not
trained on) and `area` float32 `[n]` (the objects' own areas in pixels, COCO's segment
areas, for the area ranges of the AP evaluator). Geometric steps move the boxes with the
pixels (a resize scales the areas, a crop shrinks those of the boxes it cuts); a crop drops
the boxes it empties, with their labels, flags and areas. `BoxesToCxcywh` makes the boxes
`(cx, cy, w, h)` relative to the image, in [0, 1], as DETR predicts them; `PadBoxes` gives
every example the same shapes, with masks of the real pixels and boxes (`box_mask` leaves
crowd regions out; `crowd_mask` marks them).
The multi-scale recipe follows DETR's (Carion et al., 2020): a random shorter side with a cap
on the longer one, and a random choice between that and resize-crop-resize.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from jaxformer.data.transforms import Draws, Features, Transform, resize

# Features with one entry per box, and their dtypes.
PER_BOX = {"labels": np.int32, "crowd": bool, "area": np.float32}


def _boxes(features: Features) -> np.ndarray:
    return np.asarray(features["boxes"], np.float32).reshape(-1, 4)


def _per_box(features: Features) -> dict[str, np.ndarray]:
    """The example's per-box features (`PER_BOX`) as arrays of their dtypes."""
    return {key: np.asarray(features[key], dtype) for key, dtype in PER_BOX.items()
            if key in features}


def shorter_side_shape(height: int, width: int, size: int,
                       max_size: int | None = None) -> tuple[int, int]:
    """`(height, width)` with the shorter side `size`, keeping the aspect ratio, but the
    shorter side made smaller where the longer one would pass `max_size` (DETR's
    `get_size_with_aspect_ratio`, the longer side rounded down). The longer side is at most
    `max_size` in every case: rounding the shorter side (to one pixel for a sliver, or back
    to its own size) may not pull it past."""
    short, long = min(height, width), max(height, width)
    if max_size is not None and long / short * size > max_size:
        size = max(int(round(max_size * short / long)), 1)
    if short == size:
        shape = (height, width)
    else:
        shape = (int(size * height / width), size) if width < height else (
            size, int(size * width / height))
    if max_size is not None:
        shape = (min(shape[0], max_size), min(shape[1], max_size))
    return shape


def resize_with_boxes(features: Features, height: int, width: int) -> Features:
    """The image resized (bilinear) to `height x width`, its boxes (and areas) scaled with
    it."""
    image = features["image"]
    scale = np.array([width / image.shape[1], height / image.shape[0]] * 2, np.float32)
    resized = {**features, "image": resize(image, height, width),
               "boxes": _boxes(features) * scale}
    if "area" in features:
        resized["area"] = np.asarray(features["area"], np.float32) * scale[0] * scale[1]
    return resized


def crop_with_boxes(features: Features, top: int, left: int, height: int,
                    width: int) -> Features:
    """The `height x width` window at `(top, left)` of the image. Boxes are moved into it and
    clipped to it; those left with no area are dropped, and their per-box features with
    them. A clipped object's area shrinks with its box (the share of the box kept; the
    segment itself is not known here)."""
    image = features["image"]
    if top < 0 or left < 0 or top + height > image.shape[0] or left + width > image.shape[1]:
        raise ValueError(f"the crop ({top}, {left}, {height}, {width}) leaves the "
                         f"{image.shape[0]}x{image.shape[1]} image")
    moved = _boxes(features) - np.array([left, top, left, top], np.float32)
    boxes = np.clip(moved, 0, np.array([width, height, width, height], np.float32))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    per_box = _per_box(features)
    if "area" in per_box:
        before, after = _box_area(moved), _box_area(boxes)
        per_box["area"] = per_box["area"] * np.divide(
            after, before, out=np.ones_like(after), where=before > 0)
    return {**features, "image": image[top:top + height, left:left + width],
            "boxes": boxes[keep], **{k: v[keep] for k, v in per_box.items()}}


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def flip_with_boxes(features: Features) -> Features:
    """The image mirrored left-right, its boxes with it."""
    image = features["image"]
    x0, y0, x1, y1 = _boxes(features).T
    boxes = np.stack([image.shape[1] - x1, y0, image.shape[1] - x0, y1], axis=-1)
    return {**features, "image": image[:, ::-1], "boxes": boxes}


def xyxy_to_cxcywh(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel `(x0, y0, x1, y1)` `[n, 4]` -> `(cx, cy, w, h)` `[n, 4]` relative to a
    `height x width` image, the boxes first clipped to it."""
    scale = np.array([width, height, width, height], np.float32)
    boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, scale) / scale
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]],
                          axis=-1)


def cxcywh_to_xyxy(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """`(cx, cy, w, h)` `[..., 4]` relative to a `height x width` image -> pixel
    `(x0, y0, x1, y1)` `[..., 4]` (the inverse of `xyxy_to_cxcywh`, without clipping)."""
    boxes = np.asarray(boxes, np.float32)
    centre, size = boxes[..., :2], boxes[..., 2:]
    scale = np.array([width, height, width, height], np.float32)
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1) * scale


def pad_example(features: Features, height: int, width: int, max_boxes: int) -> Features:
    """Fixed shapes: the image zero-padded at the bottom and right to `[height, width, C]`,
    and boxes and per-box features zero-padded to `max_boxes` rows. Adds `pixel_mask` bool
    `[height, width]`, `box_mask` bool `[max_boxes]` (true for the real ones) and `size`
    int32 `[2]`, the image's `(height, width)` before padding. Where the example has `crowd`
    flags, they become `crowd_mask` `[max_boxes]`, and `box_mask` leaves those boxes out."""
    image, boxes = features["image"], _boxes(features)
    real_height, real_width = image.shape[:2]
    if real_height > height or real_width > width:
        raise ValueError(f"cannot pad a {real_height}x{real_width} image to {height}x{width}")
    if len(boxes) > max_boxes:
        raise ValueError(f"an example has {len(boxes)} boxes, more than max_boxes "
                         f"{max_boxes}")
    padded = np.zeros((height, width, *image.shape[2:]), image.dtype)
    padded[:real_height, :real_width] = image
    pixel_mask = np.zeros((height, width), bool)
    pixel_mask[:real_height, :real_width] = True
    n = len(boxes)
    padded_boxes = np.zeros((max_boxes, 4), np.float32)
    padded_boxes[:n] = boxes
    per_box = {}
    for key, values in _per_box(features).items():
        per_box[key] = np.zeros(max_boxes, values.dtype)
        per_box[key][:n] = values
    box_mask = np.arange(max_boxes) < n
    if "crowd" in per_box:
        crowd = per_box.pop("crowd")
        box_mask, per_box["crowd_mask"] = box_mask & ~crowd, crowd
    padded_features = {key: value for key, value in features.items() if key != "crowd"}
    return {**padded_features, "image": padded, "pixel_mask": pixel_mask,
            "boxes": padded_boxes, **per_box, "box_mask": box_mask,
            "size": np.array([real_height, real_width], np.int32)}


# ---------------------------------------------------------------------------------------
# Steps on feature dicts.

@dataclasses.dataclass(frozen=True)
class FitShorterSide:
    """Resizes to shorter side `size` (the longer at most `max_size`; 0: no limit)."""

    size: int
    max_size: int = 0
    num_draws: ClassVar[int] = 0

    def __call__(self, features: Features, draws: Draws) -> Features:
        height, width = features["image"].shape[:2]
        shape = shorter_side_shape(height, width, self.size, self.max_size or None)
        return resize_with_boxes(features, *shape)


@dataclasses.dataclass(frozen=True)
class RandomShorterSide:
    """`FitShorterSide` to one of `sizes`, drawn (1 draw): DETR's multi-scale training."""

    sizes: tuple[int, ...]
    max_size: int = 0
    num_draws: ClassVar[int] = 1

    def __call__(self, features: Features, draws: Draws) -> Features:
        size = self.sizes[draws.integers(len(self.sizes))]
        return FitShorterSide(size, self.max_size)(features, draws)


@dataclasses.dataclass(frozen=True)
class RandomSizeCrop:
    """A crop of random height and width in `[min_size, max_size]` (at most the image's),
    at a random place (4 draws; DETR's `RandomSizeCrop`)."""

    min_size: int
    max_size: int
    num_draws: ClassVar[int] = 4

    def __call__(self, features: Features, draws: Draws) -> Features:
        image_height, image_width = features["image"].shape[:2]
        height = _integer_between(draws, self.min_size, self.max_size, image_height)
        width = _integer_between(draws, self.min_size, self.max_size, image_width)
        top = draws.integers(image_height - height + 1)
        left = draws.integers(image_width - width + 1)
        return crop_with_boxes(features, top, left, height, width)


def _integer_between(draws: Draws, low: int, high: int, limit: int) -> int:
    """Uniform in `[min(low, limit), min(high, limit)]` (1 draw)."""
    low, high = min(low, limit), min(high, limit)
    return low + draws.integers(high - low + 1)


@dataclasses.dataclass(frozen=True)
class FlipWithBoxes:
    """Mirrors image and boxes with `probability`; the draw is taken even at 0 (1 draw)."""

    probability: float = 0.5
    num_draws: ClassVar[int] = 1

    def __call__(self, features: Features, draws: Draws) -> Features:
        return flip_with_boxes(features) if draws.random() < self.probability else features


@dataclasses.dataclass(frozen=True)
class RandomSelect:
    """`first` with `probability`, else `second` (DETR's `RandomSelect`). One draw for the
    choice, then at most the larger budget of the two."""

    first: Transform
    second: Transform
    probability: float = 0.5

    @property
    def num_draws(self) -> int:
        return 1 + max(self.first.num_draws, self.second.num_draws)

    def __call__(self, features: Features, draws: Draws) -> Features:
        step = self.first if draws.random() < self.probability else self.second
        return step(features, draws)


@dataclasses.dataclass(frozen=True)
class BoxesToCxcywh:
    """`boxes` -> `(cx, cy, w, h)` relative to the image, in [0, 1]."""

    num_draws: ClassVar[int] = 0

    def __call__(self, features: Features, draws: Draws) -> Features:
        height, width = features["image"].shape[:2]
        return {**features, "boxes": xyxy_to_cxcywh(features["boxes"], height, width)}


@dataclasses.dataclass(frozen=True)
class PadBoxes:
    """`pad_example`: the image to `height x width`, boxes and labels to `max_boxes`."""

    height: int
    width: int
    max_boxes: int
    num_draws: ClassVar[int] = 0

    def __call__(self, features: Features, draws: Draws) -> Features:
        return pad_example(features, self.height, self.width, self.max_boxes)

