"""Emoji with their names and keywords as image-text pairs (CLIP on a laptop).

The corpus ships with the package (`assets/emoji/`, see PROVENANCE.md there): 1,911 Noto
Color Emoji images, 32x32 RGB on white, each with one to five real captions (CLDR's name and
keywords, the emoji-datasource names and short names), in 10 categories and 99 subcategories.

Whole subcategories (`holdout_subcategories`, default mammals, birds, marine animals, fruit
and vegetables: 144 emoji) are held out of training, so that evaluation sees concepts never
trained on. Eval splits:
  * `zeroshot`: the held-out emoji, each its own class named by its name (zero-shot
    classification with the emoji templates, "an emoji of {}.");
  * `retrieval`: the same images with all their captions (image-text retrieval);
  * with `fashion_mnist` (default true): `fashion_mnist`, the Fashion-MNIST test images
    with their 10 classes and CLIP-style templates ("a photo of a {}."), and
    `fashion_mnist_train`, its training images, for linear probes.
Training pairs are the other emoji (a caption drawn each time, put in an emoji template
with probability `template_probability`) and, with `fashion_mnist`, a stratified
`fashion_mnist_examples` of Fashion-MNIST's training images captioned with a template of
their class name. Grayscale images become RGB and every image is resized to `image_size`.
Images are not flipped unless `flip` is set: a mirrored arrow has another name.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import lzma
import pathlib

import ml_collections
import numpy as np
from PIL import Image

from jaxformer.data import caption_bpe, common, fashion_mnist, image_pipeline
from jaxformer.data import image_text_pipeline as pipeline
from jaxformer.data.image_pipeline import ArraySource
from jaxformer.data.image_text_pipeline import Concat, EvalSplit, ImageTextData, ImageTextSpec
from jaxformer.data.text_classification_pipeline import stratified_subset

ASSETS = pathlib.Path(__file__).parent / "assets" / "emoji"
SHEET_PATH = ASSETS / "emoji.png"
TABLE_PATH = ASSETS / "emoji.tsv.xz"
# sha256 of the decoded pixels (uint8 [rows * TILE, COLUMNS * TILE, 3]) and of the TSV.
PIXELS_SHA256 = "b4c30110f7ad0e31788b44cdaf02697d0d6c4149f562d12abaa45d18a97b412f"
TABLE_SHA256 = "5f786ff1c63cfc51d47e39cf04a45ab6ada6e0531912f3e24b986a2d7bce345a"
TILE, COLUMNS = 32, 64
HEADER = ("index", "codepoints", "category", "subcategory", "name", "captions")
SEPARATOR = " | "
IMAGE_SIZE, CHANNELS = 32, 3
VOCAB_SIZE = 2048
HOLDOUT = ("animal-mammal", "animal-bird", "animal-marine", "food-fruit", "food-vegetable")
FASHION_SOURCES = ("subset", "auto", "full")
DEFAULTS = {"holdout_subcategories": HOLDOUT, "fashion_mnist": True,
            "fashion_mnist_examples": 2000, "fashion_mnist_source": "subset", "data_dir": "",
            "read_threads": 0}

EMOJI_TEMPLATES = (
    "an emoji of {}.", "a {} emoji.", "an icon of {}.", "the {} emoji.", "a picture of {}.",
    "a small icon of {}.", "a drawing of {}.", "{}, as an emoji.")
# Fashion-MNIST's classes as prompts name them, in label order, and CLIP-style templates.
FASHION_CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                       "sneaker", "bag", "ankle boot")
FASHION_TEMPLATES = (
    "a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of the {}.",
    "a photo of the {}.", "a blurry photo of a {}.", "a close-up photo of a {}.",
    "a good photo of the {}.", "a photo of a small {}.", "a grayscale photo of a {}.")
FASHION_SPLITS = {"fashion_mnist": "test", "fashion_mnist_train": "train"}


@dataclasses.dataclass(frozen=True)
class Emoji:
    """One emoji of the corpus: `captions[0]` is its name."""

    index: int
    codepoints: str
    category: str
    subcategory: str
    captions: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.captions[0]


@functools.lru_cache(maxsize=1)
def read_table() -> tuple[Emoji, ...]:
    """Every emoji of the corpus, in its order, checked against the recorded sha256."""
    try:
        data = lzma.decompress(_read_bytes(TABLE_PATH))
    except lzma.LZMAError as e:
        raise ValueError(f"corrupt emoji corpus file {TABLE_PATH}: {e}") from e
    _check_sha256(TABLE_PATH, data, TABLE_SHA256)
    lines = data.decode("utf-8").splitlines()
    if tuple(lines[0].split("\t")) != HEADER:
        raise ValueError(f"{TABLE_PATH}: unexpected header {lines[0]!r}")
    table = []
    for line in lines[1:]:
        index, codepoints, category, subcategory, name, captions = line.split("\t")
        emoji = Emoji(int(index), codepoints, category, subcategory,
                      tuple(captions.split(SEPARATOR)))
        if emoji.name != name or emoji.index != len(table):
            raise ValueError(f"{TABLE_PATH}: malformed line {line!r}")
        table.append(emoji)
    return tuple(table)


@functools.lru_cache(maxsize=1)
def read_images() -> np.ndarray:
    """uint8 `[emoji, 32, 32, 3]`, in the table's order (read-only), checked against the
    recorded sha256 of the sprite sheet's pixels."""
    try:
        with Image.open(io.BytesIO(_read_bytes(SHEET_PATH))) as image:
            sheet = np.asarray(image.convert("RGB"))
    except OSError as e:
        raise ValueError(f"corrupt emoji corpus file {SHEET_PATH}: {e}") from e
    _check_sha256(SHEET_PATH, sheet.tobytes(), PIXELS_SHA256)
    rows = sheet.shape[0] // TILE
    tiles = sheet.reshape(rows, TILE, COLUMNS, TILE, CHANNELS).transpose(0, 2, 1, 3, 4)
    images = np.ascontiguousarray(tiles.reshape(-1, TILE, TILE, CHANNELS)[:len(read_table())])
    images.setflags(write=False)
    return images


def _read_bytes(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"the embedded emoji corpus file {path} is missing; reinstall "
                         "jaxformer") from None


def _check_sha256(path: pathlib.Path, data: bytes, sha256: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"corrupt emoji corpus file {path}: its content has sha256 {digest}, "
                         f"expected {sha256}")


def subcategories() -> tuple[str, ...]:
    """The corpus's subcategories, in order of first appearance."""
    return tuple(dict.fromkeys(emoji.subcategory for emoji in read_table()))


# --- Config ------------------------------------------------------------------------------

def _get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def holdout(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The held-out subcategories, checked to exist and to leave emoji on both sides."""
    names = _get(config, "holdout_subcategories")
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"data.holdout_subcategories must be a list of subcategory names, "
                         f"got {names!r}")
    known = subcategories()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown emoji subcategories {unknown} in data.holdout_subcategories;"
                         f" available: {', '.join(known)}")
    held = sum(emoji.subcategory in names for emoji in read_table())
    if held < 2 or held == len(read_table()):
        raise ValueError(f"data.holdout_subcategories hold out {held} of {len(read_table())} "
                         "emoji: at least 2 are needed, and some left for training")
    return tuple(names)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject (missing Fashion-MNIST files
    included), reading only the corpus's small table."""
    image_pipeline.check_image_config(config, channels=CHANNELS, image_size=IMAGE_SIZE)
    pipeline.text_settings(config, vocab_size=VOCAB_SIZE)
    holdout(config)
    use_fashion = _get(config, "fashion_mnist")
    if not isinstance(use_fashion, bool):
        raise ValueError(f"data.fashion_mnist must be true or false, got {use_fashion!r}")
    count = _get(config, "fashion_mnist_examples")
    if isinstance(count, bool) or not isinstance(count, int) or count == 0 or count < -1:
        raise ValueError(f"data.fashion_mnist_examples must be -1 (all) or positive, got "
                         f"{count!r}")
    if use_fashion:
        source = _get(config, "fashion_mnist_source")
        if source not in FASHION_SOURCES:
            raise ValueError(f"unknown data.fashion_mnist_source {source!r}; available: "
                             f"{', '.join(FASHION_SOURCES)}")
        fashion_mnist.resolve(source, _get(config, "data_dir"))


def preprocess(config: ml_collections.ConfigDict) -> image_pipeline.Preprocess:
    return image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                 image_size=IMAGE_SIZE)


def spec(config: ml_collections.ConfigDict) -> ImageTextSpec:
    """Token ids, context length and image shape, without reading images or training."""
    check_config(config)
    return pipeline.spec(config, preprocess(config), vocab_size=VOCAB_SIZE)


# --- Splits ------------------------------------------------------------------------------

def emoji_splits(held_out: tuple[str, ...]) -> tuple[ArraySource, dict[str, EvalSplit]]:
    """(training examples, {"zeroshot", "retrieval"}) of the corpus with the subcategories
    `held_out` kept out of training."""
    table, images = read_table(), read_images()
    is_held = np.array([emoji.subcategory in held_out for emoji in table])
    train = np.flatnonzero(~is_held)
    train_source = ArraySource({"image": images[train],
                                "captions": [table[i].captions for i in train],
                                "wrap": np.ones(len(train), bool)})
    test = np.flatnonzero(is_held)
    names = [table[i].name for i in test]
    test_source = ArraySource({"image": images[test], "caption": names,
                               "label": np.arange(len(test), dtype=np.int32)})
    captions = [table[i].captions for i in test]
    return train_source, {
        "zeroshot": EvalSplit.of(test_source, names, captions, EMOJI_TEMPLATES),
        "retrieval": EvalSplit.of(test_source, names, captions, EMOJI_TEMPLATES)}


def fashion_splits(config: ml_collections.ConfigDict) -> tuple[ArraySource, dict[str, EvalSplit]]:
    """(`fashion_mnist_examples` training images captioned with templates of their class,
    {"fashion_mnist": the test images, "fashion_mnist_train": the training images})."""
    kind, directory = fashion_mnist.resolve(_get(config, "fashion_mnist_source"),
                                            _get(config, "data_dir"))
    class_captions = [tuple(t.format(name) for t in FASHION_TEMPLATES)
                      for name in FASHION_CLASS_NAMES]
    evals = {}
    for name, split in FASHION_SPLITS.items():
        images, labels = fashion_mnist.load_split(directory, split,
                                                  sha256=fashion_mnist.SHA256[kind])
        source = ArraySource({"image": images, "label": labels,
                              "caption": [class_captions[y][0] for y in labels]})
        evals[name] = EvalSplit.of(source, FASHION_CLASS_NAMES,
                                   [class_captions[y] for y in labels], FASHION_TEMPLATES)
    count = _get(config, "fashion_mnist_examples")
    if count > len(labels):
        raise ValueError(f"data.fashion_mnist_examples is {count}, Fashion-MNIST ({kind}) has "
                         f"{len(labels)} training images")
    chosen = np.arange(len(labels)) if count == -1 else stratified_subset(labels, count, 0)
    train = ArraySource({"image": images[chosen],
                         "captions": [class_captions[labels[i]] for i in chosen],
                         "wrap": np.zeros(len(chosen), bool)})
    return train, evals


def tokenizer_texts(train_captions: list[tuple[str, ...]],
                    templates: tuple[str, ...]) -> list[str]:
    """What the tokenizer learns from: each training caption once, in order, then the
    templates' words."""
    texts = dict.fromkeys(c for group in train_captions for c in group)
    texts.update(dict.fromkeys(t.replace("{}", " ").strip() for t in templates))
    return list(texts)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> ImageTextData:
    """The emoji image-text pairs (and Fashion-MNIST's, with `fashion_mnist`).

    Args:
        config: the `data` part of the experiment config: `vocab_size` (default 2048),
            `context_length` (77), `template_probability` (0.5), `holdout_subcategories`,
            `fashion_mnist` (true), `fashion_mnist_examples` (2000; -1: all),
            `fashion_mnist_source` ("subset", "auto" or "full", as `fashion_mnist`'s
            `source`), `data_dir` (the full Fashion-MNIST's directory), `read_threads`, and
            the preprocessing keys of `image_pipeline.preprocess_from_config`
            (`image_size` default 32).
        workdir: where the tokenizer is kept (`<workdir>/assets`; None: in memory).
    """
    check_config(config)
    vocab_size, context_length, probability = pipeline.text_settings(
        config, vocab_size=VOCAB_SIZE)
    train, evals = emoji_splits(holdout(config))
    sources = [train]
    if _get(config, "fashion_mnist"):
        fashion_train, fashion_evals = fashion_splits(config)
        sources.append(fashion_train)
        evals.update(fashion_evals)
    captions = [c for source in sources for c in source.features["captions"]]
    templates = EMOJI_TEMPLATES + (FASHION_TEMPLATES if len(sources) > 1 else ())
    tokenizer = caption_bpe.tokenizer_for_workdir(
        common.assets_dir(workdir), lambda: tokenizer_texts(captions, templates),
        vocab_size)
    return ImageTextData(
        train_source=Concat(sources), eval_sources=evals, tokenizer=tokenizer,
        preprocess=preprocess(config), context_length=context_length,
        train_templates=EMOJI_TEMPLATES, template_probability=probability,
        read_threads=_get(config, "read_threads"))
