"""Image transforms: small functions on uint8 `[H, W, C]` images, and the same as steps on
feature dicts, which a pipeline composes.

A feature dict maps names to one example's values (`image`, `label`, later boxes or token
ids...). Each step changes the features it knows and passes the others through, so data of
any features can ride the same pipeline. Random steps take their numbers from the row's
`Draws`, a fixed budget of uniforms drawn for the whole global batch at once; a step declares
how many it may use (`num_draws`), and the steps of a pipeline use them in order.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
from PIL import Image

Features = dict[str, Any]

INCEPTION_ATTEMPTS = 10
# PIL's filters by name; the numbers transformers' image processors write as `resample`.
RESAMPLING = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
              "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
              "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


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


def no_draws() -> Draws:
    """An empty budget, for deterministic pipelines (a random step fails loudly)."""
    return Draws(np.zeros([0]))


# ---------------------------------------------------------------------------------------
# Functions on images.

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
    if array.shape[-1] == 4:  # Drop the alpha channel.
        array = array[:, :, :3]
    if array.shape[-1] == channels:
        return array
    if array.shape[-1] == 1 and channels == 3:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 3 and channels == 1:
        return np.asarray(Image.fromarray(array).convert("L"))[:, :, None]
    raise ValueError(f"cannot make a {channels}-channel image from shape {array.shape}")


def resize(image: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """Resize of a uint8 `[H, W, C]` image with PIL's filter `method` (one of `RESAMPLING`;
    antialiased when shrinking, as PIL and transformers' image processors do)."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[-1]
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    out = np.asarray(pil.resize((width, height), resampling(method)))
    return out.reshape(height, width, channels)


def resampling(method: str) -> Image.Resampling:
    """PIL's filter named `method`."""
    if method not in RESAMPLING:
        raise ValueError(f"unknown resampling {method!r}; available: {', '.join(RESAMPLING)}")
    return RESAMPLING[method]


def resize_shorter(image: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """Resizes so that the shorter side is `size`, keeping the aspect ratio."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    return resize(image, max(size, round(height * scale)), max(size, round(width * scale)),
                  method)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central `size x size` square."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from a {height}x{width} image")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def pad_and_random_crop(image: np.ndarray, size: int, padding: int, draws: Draws) -> np.ndarray:
    """Zero-pads `padding` pixels on every side, then crops `size x size` at random (2 draws)."""
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
                   attempts: int = INCEPTION_ATTEMPTS, method: str = "bilinear"
                   ) -> np.ndarray:
    """Random-area, random-aspect crop resized to `size x size` (Szegedy et al. 2015).

    The crop covers a uniform fraction in `[min_area, 1]` of the image with a log-uniform
    aspect ratio in `ratio`; after `attempts` draws that do not fit, the whole image. Uses
    at most `2 * attempts + 2` draws.
    """
    height, width = image.shape[:2]
    for _ in range(attempts):
        area = height * width * draws.uniform(min_area, 1.0)
        aspect = math.exp(draws.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = draws.integers(height - crop_h + 1)
            left = draws.integers(width - crop_w + 1)
            return resize(image[top:top + crop_h, left:left + crop_w], size, size, method)
    return resize(image, size, size, method)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 images `[..., H, W, C]` -> float32 `(pixel / 255 - mean) / std` per channel."""
    scale = 1.0 / (255.0 * np.asarray(std, np.float32))
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    return images.astype(np.float32) * scale - shift


# ---------------------------------------------------------------------------------------
# Steps on feature dicts.

class Transform(Protocol):
    """One step of a pipeline: features in, features out, using at most `num_draws` draws."""

    num_draws: int

    def __call__(self, features: Features, draws: Draws) -> Features: ...


class ImageStep:
    """A step that changes the `image` feature alone."""

    num_draws: ClassVar[int] = 0

    def __call__(self, features: Features, draws: Draws) -> Features:
        return {**features, "image": self.apply(features["image"], draws)}

    def apply(self, image: Any, draws: Draws) -> np.ndarray:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Decode(ImageStep):
    channels: int

    def apply(self, image: Any, draws: Draws) -> np.ndarray:
        return decode(image, self.channels)


@dataclasses.dataclass(frozen=True)
class Resize(ImageStep):
    height: int
    width: int
    method: str = "bilinear"

    def apply(self, image: np.ndarray, draws: Draws) -> np.ndarray:
        return resize(image, self.height, self.width, self.method)


@dataclasses.dataclass(frozen=True)
class ResizeShorter(ImageStep):
    size: int
    method: str = "bilinear"

    def apply(self, image: np.ndarray, draws: Draws) -> np.ndarray:
        return resize_shorter(image, self.size, self.method)


@dataclasses.dataclass(frozen=True)
class CenterCrop(ImageStep):
    size: int

    def apply(self, image: np.ndarray, draws: Draws) -> np.ndarray:
        return center_crop(image, self.size)


@dataclasses.dataclass(frozen=True)
class PadAndRandomCrop(ImageStep):
    size: int
    padding: int
    num_draws: ClassVar[int] = 2

    def apply(self, image: np.ndarray, draws: Draws) -> np.ndarray:
        return pad_and_random_crop(image, self.size, self.padding, draws)


@dataclasses.dataclass(frozen=True)
class InceptionCrop(ImageStep):
    size: int
    min_area: float = 0.05
    method: str = "bilinear"
    num_draws: ClassVar[int] = 2 * INCEPTION_ATTEMPTS + 2

    def apply(self, image: np.ndarray, draws: Draws) -> np.ndarray:
        return inception_crop(image, self.size, draws, min_area=self.min_area,
                              method=self.method)


@dataclasses.dataclass(frozen=True)
class Flip(ImageStep):
    """Mirrors the image left-right with `probability`. Its draw is taken even at 0, so that
    turning flips on or off leaves the draws of the other steps as they were."""

    probability: float = 0.5
    num_draws: ClassVar[int] = 1

    def apply(self, image: np.ndarray, draws: Draws) -> np.ndarray:
        return image[:, ::-1] if draws.random() < self.probability else image


@dataclasses.dataclass(frozen=True)
class Normalize(ImageStep):
    """uint8 -> float32 `(pixel / 255 - mean) / std`, per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, image: np.ndarray, draws: Draws) -> np.ndarray:
        return normalize(image, self.mean, self.std)


@dataclasses.dataclass(frozen=True)
class ClassLabel:
    """The `label` feature as an int32 in `[0, num_classes)`."""

    num_classes: int
    num_draws: ClassVar[int] = 0

    def __call__(self, features: Features, draws: Draws) -> Features:
        label = int(features["label"])
        if not 0 <= label < self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {label}")
        return {**features, "label": np.int32(label)}


@dataclasses.dataclass(frozen=True)
class Compose:
    """The steps one after another; their draws come from one budget, in order."""

    steps: tuple[Transform, ...]

    @property
    def num_draws(self) -> int:
        return sum(step.num_draws for step in self.steps)

    def __call__(self, features: Features, draws: Draws) -> Features:
        for step in self.steps:
            features = step(features, draws)
        return features
