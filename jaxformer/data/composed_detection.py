"""Composed detection: real objects (Fashion-MNIST items and Noto emoji) placed on canvases,
with their exact boxes; the embedded default data of DETR.

No boxed data set is available offline, so each example is composed: a square RGB canvas of
`canvas_size` pixels (a light colour, plain or with a faint smooth texture: `background`)
holding `min_objects` to `max_objects` objects, each of a class drawn uniformly from 20:

  * 0-9, Fashion-MNIST's classes (T-shirt/top ... Ankle boot): the grayscale item as a stamp
    of a random dark tint, shaded by the item's intensity;
  * 10-19, emoji classes, each one or more subcategories of the embedded emoji corpus
    (`EMOJI_CLASSES`: face, heart, mammal, bird, marine animal, fruit, vegetable, ground
    transport, sport, flag; 615 emoji), the emoji in its own colours.

An object is scaled so that its longer side is `min_object_size` to `max_object_size`
pixels and put at a random place where its box has an IoU of at most `max_iou` with every
box already placed (an object with no such place in `PLACEMENT_ATTEMPTS` tries is left out;
the first always fits). Its pixels are those of opacity at least `MIN_OPACITY` after scaling
(fainter ones are not drawn), its box their tight extent, `(x0, y0, x1, y1)` in pixels.
Later objects are drawn over earlier ones: with `max_iou > 0` a box may hold hidden parts of
its object.

Splits never share a source object. Fashion-MNIST: `train` places the training images but
every tenth, `validation` every tenth (indices 9, 19, ...), `test` the test images. Emoji:
each class's emoji, in corpus order, go 3 of every 5 to `train`, the 4th to `validation`,
the 5th to `test`. Example `i` of a split is a function of (`canvas_seed`, split, `i`) alone,
composed when it is read (about a millisecond), so that the `train_examples`
training canvases are visited in a new order each epoch, as any data set's, and an eval
split (`eval_examples` canvases) is the same in every run.
"""

from __future__ import annotations

import dataclasses
import numbers

import ml_collections
import numpy as np
from PIL import Image

from jaxformer.data import common, emoji, fashion_mnist
from jaxformer.data import detection_pipeline as pipeline
from jaxformer.data.detection_pipeline import DetectionData, DetectionSpec
from jaxformer.data.transforms import Features, resize

FACE = ("face-smiling", "face-affection", "face-tongue", "face-hand", "face-neutral-skeptical",
        "face-sleepy", "face-unwell", "face-hat", "face-glasses", "face-concerned",
        "face-negative")
# Class name -> the emoji subcategories it holds.
EMOJI_CLASSES = {
    "face": FACE, "heart": ("heart",), "mammal": ("animal-mammal",),
    "bird": ("animal-bird",), "marine animal": ("animal-marine",), "fruit": ("food-fruit",),
    "vegetable": ("food-vegetable",), "ground transport": ("transport-ground",),
    "sport": ("sport",), "flag": ("country-flag",),
}
CLASS_NAMES = fashion_mnist.CLASS_NAMES + tuple(EMOJI_CLASSES)
SPLITS = ("train", "validation", "test")
CHANNELS = 3
FASHION_SOURCES = ("subset", "auto", "full")
BACKGROUNDS = ("textured", "plain")
DEFAULTS = {"canvas_size": 64, "min_objects": 1, "max_objects": 4, "min_object_size": 12,
            "max_object_size": 32, "max_iou": 0.1, "background": "textured",
            "canvas_seed": 0, "train_examples": 100_000, "eval_examples": 1_000,
            "fashion_mnist_source": "subset", "data_dir": "", "read_threads": 0}

MIN_OPACITY = 0.25
PLACEMENT_ATTEMPTS = 20
BACKGROUND_RANGE = (176, 255)  # Per channel.
TEXTURE_AMPLITUDE, TEXTURE_CELLS = 16, 4  # Offsets in [-16, 16] on a smooth 4x4 grid.
TINT_MAX, SHADING = 200, 0.6  # Fashion-MNIST colour: tint * (1 - SHADING * intensity).
FASHION_SOFTNESS = 32  # Opacity intensity / 32.
EMOJI_WHITE, EMOJI_SOFTNESS = 250, 48  # Opacity (250 - the smallest channel) / 48.


# --- Source objects ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Objects:
    """The source images a split places, by class.

    Attributes:
        tiles: per class, uint8 `[n, h, w, channels]`: 1 channel for Fashion-MNIST items
            (light on black), 3 for emoji (on white).
        ids: per class, the name of each tile's source image (`"fashion_mnist/train/17"`,
            `"emoji/564"`).
    """

    tiles: tuple[np.ndarray, ...]
    ids: tuple[tuple[str, ...], ...]


def fashion_objects(source: str, data_dir: str) -> dict[str, list]:
    """Split -> per Fashion-MNIST class, (tiles `[n, 28, 28, 1]`, ids)."""
    kind, directory = fashion_mnist.resolve(source, data_dir)
    sha256 = fashion_mnist.SHA256[kind]
    train_images, train_labels = fashion_mnist.load_split(directory, "train", sha256=sha256)
    test_images, test_labels = fashion_mnist.load_split(directory, "test", sha256=sha256)
    held = np.arange(len(train_labels)) % 10 == 9
    parts = {"train": ("train", train_images, train_labels, ~held),
             "validation": ("train", train_images, train_labels, held),
             "test": ("test", test_images, test_labels, np.ones(len(test_labels), bool))}
    splits = {}
    for split, (name, images, labels, chosen) in parts.items():
        splits[split] = []
        for label in range(len(fashion_mnist.CLASS_NAMES)):
            indices = np.flatnonzero(chosen & (labels == label))
            splits[split].append((images[indices],
                                  tuple(f"fashion_mnist/{name}/{i}" for i in indices)))
    return splits


def emoji_objects() -> dict[str, list]:
    """Split -> per emoji class, (tiles `[n, 32, 32, 3]`, ids)."""
    table, images = emoji.read_table(), emoji.read_images()
    splits = {split: [] for split in SPLITS}
    for subcategories in EMOJI_CLASSES.values():
        indices = np.array([e.index for e in table if e.subcategory in subcategories])
        position = np.arange(len(indices)) % 5
        for split, chosen in (("train", position < 3), ("validation", position == 3),
                              ("test", position == 4)):
            splits[split].append((images[indices[chosen]],
                                  tuple(f"emoji/{i}" for i in indices[chosen])))
    return splits


def load_objects(fashion_source: str = "subset", data_dir: str = "") -> dict[str, Objects]:
    """Split -> its `Objects`, classes in `CLASS_NAMES` order."""
    fashion, emojis = fashion_objects(fashion_source, data_dir), emoji_objects()
    return {split: Objects(tuple(t for t, _ in fashion[split] + emojis[split]),
                           tuple(i for _, i in fashion[split] + emojis[split]))
            for split in SPLITS}


def cutout(tile: np.ndarray, size: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """(colour float32 `[h, w, 3]`, opacity float32 `[h, w]`) of the object of `tile`,
    scaled so that its longer side is `size`, its opacity set to 0 below `MIN_OPACITY`, and
    cropped to the pixels left. A grayscale tile draws its tint from `rng`."""
    if tile.shape[-1] == 1:
        intensity = tile.astype(np.float32) / 255  # [h, w, 1]
        opacity = np.clip(tile[..., 0] / FASHION_SOFTNESS, 0, 1)
        colour = rng.uniform(0, TINT_MAX, 3) * (1 - SHADING * intensity)
    else:
        colour = tile.astype(np.float32)
        opacity = np.clip((EMOJI_WHITE - tile.min(-1).astype(np.float32)) / EMOJI_SOFTNESS, 0, 1)
    rgba = _crop_to(np.dstack([colour, opacity * 255]), opacity > 0)
    height, width = rgba.shape[:2]
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    pil = Image.fromarray(np.round(rgba).astype(np.uint8), "RGBA")
    scaled = np.asarray(pil.resize(shape, Image.Resampling.BILINEAR), np.float32)
    opacity = scaled[..., 3] / 255
    opacity[opacity < MIN_OPACITY] = 0
    return _crop_to(scaled[..., :3], opacity > 0), _crop_to(opacity, opacity > 0)


def _crop_to(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`array` `[H, W, ...]` cropped to the rows and columns where `mask` `[H, W]` is set."""
    rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return array[:0, :0]
    return array[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]


# --- Canvases ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layout:
    """How canvases are composed (see the module docstring)."""

    canvas_size: int = DEFAULTS["canvas_size"]
    min_objects: int = DEFAULTS["min_objects"]
    max_objects: int = DEFAULTS["max_objects"]
    min_object_size: int = DEFAULTS["min_object_size"]
    max_object_size: int = DEFAULTS["max_object_size"]
    max_iou: float = DEFAULTS["max_iou"]
    textured: bool = True

    def __post_init__(self):
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects} "
                             f"and {self.max_objects}")
        if not 4 <= self.min_object_size <= self.max_object_size <= self.canvas_size:
            raise ValueError(f"need 4 <= min_object_size <= max_object_size <= canvas_size, "
                             f"got {self.min_object_size}, {self.max_object_size} and "
                             f"{self.canvas_size}")
        if not 0 <= self.max_iou <= 1:
            raise ValueError(f"max_iou must be in [0, 1], got {self.max_iou}")


@dataclasses.dataclass(frozen=True)
class Canvas:
    """One composed example: `image` uint8 `[S, S, 3]`, `boxes` float32 `[n, 4]` (pixel
    xyxy), `labels` int32 `[n]`, each object's pixels `masks` bool `[n, S, S]` and source
    image `objects` (n names)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    objects: tuple[str, ...]


def background(rng: np.random.Generator, size: int, textured: bool) -> np.ndarray:
    """float32 `[size, size, 3]`: a light colour, with a smooth texture if `textured` (the
    texture is drawn either way, so that both kinds of canvas hold the same objects)."""
    colour = rng.uniform(*BACKGROUND_RANGE, 3)
    offsets = rng.uniform(-TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE,
                          (TEXTURE_CELLS, TEXTURE_CELLS, 3))
    texture = resize(np.round(offsets + 128).astype(np.uint8), size, size).astype(np.float32)
    return np.clip(colour + (texture - 128) * textured, 0, 255).astype(np.float32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU `[n]` of one xyxy box `[4]` with each of `boxes` `[n, 4]`."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    overlap = np.prod(np.clip(high - low, 0, None), axis=-1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    return overlap / (np.prod(box[2:] - box[:2]) + areas - overlap)


def compose(objects: Objects, layout: Layout, rng: np.random.Generator) -> Canvas:
    """A canvas of objects of `objects`, every choice drawn from `rng`."""
    size = layout.canvas_size
    image = background(rng, size, layout.textured)
    boxes, labels, masks, names = [], [], [], []
    for _ in range(rng.integers(layout.min_objects, layout.max_objects + 1)):
        label = int(rng.integers(len(objects.tiles)))
        which = int(rng.integers(len(objects.tiles[label])))
        scale = int(rng.integers(layout.min_object_size, layout.max_object_size + 1))
        colour, opacity = cutout(objects.tiles[label][which], scale, rng)
        height, width = opacity.shape
        if not opacity.size:
            continue
        for _ in range(PLACEMENT_ATTEMPTS):
            top, left = int(rng.integers(size - height + 1)), int(rng.integers(size - width + 1))
            box = np.array([left, top, left + width, top + height], np.float32)
            if not boxes or box_iou(box, np.stack(boxes)).max() <= layout.max_iou:
                break
        else:
            continue
        region = image[top:top + height, left:left + width]
        region += opacity[..., None] * (colour - region)
        mask = np.zeros((size, size), bool)
        mask[top:top + height, left:left + width] = opacity > 0
        boxes.append(box)
        labels.append(label)
        masks.append(mask)
        names.append(objects.ids[label][which])
    return Canvas(image=np.round(image).astype(np.uint8),
                  boxes=np.array(boxes, np.float32).reshape(-1, 4),
                  labels=np.array(labels, np.int32),
                  masks=np.array(masks, bool).reshape(-1, size, size), objects=tuple(names))


class ComposedSource:
    """The `size` canvases of one split: example `i` composed from `(seed, split, i)`."""

    def __init__(self, objects: Objects, layout: Layout, *, split: str, size: int, seed: int):
        self.objects, self.layout, self.size = objects, layout, size
        self.key = (seed, SPLITS.index(split))

    def __len__(self) -> int:
        return self.size

    def canvas(self, index: int) -> Canvas:
        if not 0 <= index < self.size:
            raise IndexError(f"example {index} of {self.size}")
        return compose(self.objects, self.layout, np.random.default_rng([*self.key, index]))

    def __getitem__(self, index: int) -> Features:
        """`{"image": uint8 [S, S, 3], "boxes": float32 [n, 4], "labels": int32 [n]}`."""
        canvas = self.canvas(int(index))
        return {"image": canvas.image, "boxes": canvas.boxes, "labels": canvas.labels}


# --- Config ------------------------------------------------------------------------------

def _get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def layout_from_config(config: ml_collections.ConfigDict) -> Layout:
    """The `Layout` of the `config.data` keys, each checked (ValueError)."""
    sizes = {key: common.require_int(config, key, minimum=1, default=DEFAULTS[key])
             for key in ("canvas_size", "min_objects", "max_objects", "min_object_size",
                         "max_object_size")}
    max_iou = _get(config, "max_iou")
    if isinstance(max_iou, bool) or not isinstance(max_iou, numbers.Real):
        raise ValueError(f"data.max_iou must be a number in [0, 1], got {max_iou!r}")
    textured = common.require_choice(config, "background", BACKGROUNDS,
                                     default=DEFAULTS["background"]) == "textured"
    try:
        return Layout(**sizes, max_iou=float(max_iou), textured=textured)
    except ValueError as e:
        raise ValueError(f"bad canvas layout in data: {e}") from e


def preprocess(config: ml_collections.ConfigDict) -> pipeline.DetectionPreprocess:
    """The checked preprocessing of `config`: by default the canvas as it is (scales
    `(canvas_size,)`), crops of half to all of it, and `max_objects` boxes."""
    layout = layout_from_config(config)
    result = pipeline.check_detection_config(
        config, channels=CHANNELS, scales=(layout.canvas_size,),
        crop_size=(layout.canvas_size // 2, layout.canvas_size), max_boxes=layout.max_objects)
    if result.max_boxes < layout.max_objects:
        raise ValueError(f"data.max_boxes {result.max_boxes} is below max_objects "
                         f"{layout.max_objects}")
    return result


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject (a missing full Fashion-MNIST
    included), without reading any image."""
    preprocess(config)
    for key in ("canvas_seed", "train_examples", "eval_examples"):
        common.require_int(config, key, minimum=0 if key == "canvas_seed" else 1,
                           default=DEFAULTS[key])
    common.require_choice(config, "fashion_mnist_source", FASHION_SOURCES,
                          default=DEFAULTS["fashion_mnist_source"])
    fashion_mnist.resolve(_get(config, "fashion_mnist_source"), _get(config, "data_dir"))


def spec(config: ml_collections.ConfigDict) -> DetectionSpec:
    """Class names, padded image shape and box slots, without reading any image."""
    check_config(config)
    result = preprocess(config)
    return DetectionSpec(class_names=CLASS_NAMES, image_shape=result.shape,
                         max_boxes=result.max_boxes)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> DetectionData:
    """The composed canvases as detection data; evaluation reads `validation` by default.

    Args:
        config: the `data` part of the experiment config: the layout keys `canvas_size`
            (default 64), `min_objects` (1), `max_objects` (4), `min_object_size` (12),
            `max_object_size` (32), `max_iou` (0.1), `background` ("textured" or "plain");
            `canvas_seed` (0), `train_examples` (100,000), `eval_examples` (1,000, per eval
            split); `fashion_mnist_source` ("subset", "auto" or "full", as
            `fashion_mnist`'s `source`), `data_dir` (the full Fashion-MNIST's directory);
            `read_threads`; and the preprocessing keys of
            `detection_pipeline.preprocess_from_config`.
        workdir: unused (nothing is derived from the data).
    """
    del workdir
    check_config(config)
    train, evaluation = split_sources(config, layout_from_config(config), ComposedSource)
    return DetectionData(train_source=train, eval_sources=evaluation, class_names=CLASS_NAMES,
                         preprocess=preprocess(config),
                         read_threads=_get(config, "read_threads"))


def split_sources(config: ml_collections.ConfigDict, layout: Layout,
                  source_type: type[ComposedSource] = ComposedSource
                  ) -> tuple[ComposedSource, dict[str, ComposedSource]]:
    """The training source and the eval sources by split, of `source_type`, with the objects,
    sizes and seed that `config` names."""
    objects = load_objects(_get(config, "fashion_mnist_source"), _get(config, "data_dir"))

    def source(split: str, key: str) -> ComposedSource:
        return source_type(objects[split], layout, split=split, size=_get(config, key),
                           seed=_get(config, "canvas_seed"))

    return (source("train", "train_examples"),
            {split: source(split, "eval_examples") for split in SPLITS[1:]})
