"""Fashion-MNIST (Xiao et al., 2017): 28x28 grayscale images of 10 kinds of clothing.

Two copies, read from the original idx files (gzip-compressed):
  * `subset`: 10,000 training and 2,000 test images embedded in the package
    (`assets/fashion_mnist/`, the first 1,000 / 200 of each class; see PROVENANCE.md);
  * `full`: the 60,000 + 10,000 images of the Debian package `dataset-fashion-mnist`
    (`/usr/share/datasets/fashion-mnist/`, or `data_dir`).
`auto` takes the full set when its files are there, else the subset. Every file is checked
against its recorded sha256, so a damaged or different file is an error, not a silent
change of data set. The images are small enough to hold in memory as arrays, which is how
they are served (no tfds preparation step).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pathlib
import struct
import zlib

import ml_collections
import numpy as np

from jaxformer.data import image_pipeline
from jaxformer.data.common import DataSpec, LazySource
from jaxformer.data.image_pipeline import ImageData

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
FULL_DIR = "/usr/share/datasets/fashion-mnist"
SUBSET_DIR = pathlib.Path(__file__).parent / "assets" / "fashion_mnist"
SOURCES = ("auto", "full", "subset")
SPLITS = {"train": "train", "test": "t10k"}  # Split name -> file prefix.
IMAGE_SIZE = 28
CHANNELS = 1

# sha256 of the decompressed idx files.
SHA256 = {
    "full": {
        "train-images-idx3-ubyte":
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte":
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte":
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte":
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "subset": {
        "train-images-idx3-ubyte":
            "d33512cfdc636a0d8972818e6659995be209a88891df7fa2109d7895922c8985",
        "train-labels-idx1-ubyte":
            "620cb8e3b9348037c5ff9a07b02d773ab165330e072dfd19e0d21c59f8042dcf",
        "t10k-images-idx3-ubyte":
            "15a92dd1e9b16ea361928086e77df4dfa890c255c00b5a8c8162c1040ce8eef1",
        "t10k-labels-idx1-ubyte":
            "234596aeb6eb48133ec99a62541f90bc0728c9559a681f1e0638037462458f2c",
    },
}

# Pixel statistics of the full training set, in [0, 1] (computed from its 60,000 images).
MEAN, STD = 0.2860, 0.3530

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned bytes, 1 or 3 dimensions


def parse_idx(data: bytes, ndim: int, name: str = "idx data") -> np.ndarray:
    """A uint8 array from the bytes of an idx file of `ndim` dimensions (LeCun's format:
    big-endian magic 0x0000080<ndim>, the `ndim` sizes as big-endian int32, the values)."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: {len(data)} bytes, too short for an idx header")
    magic, *shape = struct.unpack(f">{1 + ndim}I", data[:header])
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(f"{name}: magic number {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x} "
                         f"(uint8 data of {ndim} dimensions)")
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{name}: header says {shape}, but {len(data) - header} values follow")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx_file(path: pathlib.Path, sha256: str | None = None) -> bytes:
    """The decompressed bytes of `path` (a gzip file), checked against `sha256` if given."""
    try:
        data = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"missing Fashion-MNIST file {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"corrupt Fashion-MNIST file {path}: {e}") from e
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ValueError(f"corrupt Fashion-MNIST file {path}: decompressed sha256 {digest}, "
                             f"expected {sha256}")
    return data


def load_split(directory: str | os.PathLike, split: str, *,
               sha256: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 `[N, 28, 28, 1]`, labels int32 `[N]`) of `split` ("train" / "test")."""
    prefix = SPLITS[split]
    directory = pathlib.Path(directory)
    arrays = {}
    for kind, ndim in (("images", 3), ("labels", 1)):
        name = f"{prefix}-{kind}-idx{ndim}-ubyte"
        data = read_idx_file(directory / f"{name}.gz", (sha256 or {}).get(name))
        arrays[kind] = parse_idx(data, ndim, str(directory / f"{name}.gz"))
    images, labels = arrays["images"], arrays["labels"]
    if len(images) != len(labels) or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{directory}: {split} has images {images.shape} and labels "
                         f"{labels.shape}; expected [N, 28, 28] and [N]")
    if labels.max(initial=0) >= len(CLASS_NAMES):
        raise ValueError(f"{directory}: {split} labels go up to {labels.max()}, expected < 10")
    return images[:, :, :, None], labels.astype(np.int32)


def resolve(source: str, data_dir: str = "") -> tuple[str, pathlib.Path]:
    """("full" | "subset", directory) for the config's `source` and `data_dir`."""
    if source not in SOURCES:
        raise ValueError(f"unknown Fashion-MNIST source {source!r}; available: "
                         f"{', '.join(SOURCES)}")
    full_dir = _full_dir(data_dir)
    if source == "subset":
        return "subset", SUBSET_DIR
    present = all((full_dir / f"{name}.gz").is_file() for name in SHA256["full"])
    if source == "full" and not present:
        raise ValueError(f"the full Fashion-MNIST is not in {full_dir}: install it with "
                         "`apt-get install dataset-fashion-mnist`, set data.data_dir to a "
                         "directory holding its four idx .gz files, or use "
                         "data.source=subset")
    return ("full", full_dir) if present else ("subset", SUBSET_DIR)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject (a missing full set included),
    without reading the images."""
    image_pipeline.check_image_config(config, channels=CHANNELS, image_size=IMAGE_SIZE)
    resolve(config.get("source", "auto"), config.get("data_dir", ""))


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The class names and the shape preprocessing gives images, without reading any."""
    check_config(config)
    preprocess = image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                       image_size=IMAGE_SIZE)
    return DataSpec(class_names=CLASS_NAMES, image_shape=preprocess.shape)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> ImageData:
    """Fashion-MNIST as image classification data; evaluation reads the test split.

    Args:
        config: the `data` part of the experiment config: `source` ("auto", "full" or
            "subset"), `data_dir` (the full set's directory; "" means the Debian package's),
            `read_threads`, and the preprocessing keys of
            `image_pipeline.preprocess_from_config`.
        workdir: unused (nothing is derived from the data).

    The splits are read on first use, so commands that only run a trained model read none.
    """
    del workdir
    check_config(config)
    source = config.get("source", "auto")
    kind, directory = resolve(source, config.get("data_dir", ""))
    warned = []

    def opener(split: str):
        def open_split() -> image_pipeline.ArraySource:
            if source == "auto" and kind == "subset" and not warned:
                warned.append(True)
                logging.getLogger(__name__).warning(
                    "full Fashion-MNIST not found in %s; using the embedded subset (10,000 "
                    "train / 2,000 test images)", _full_dir(config.get("data_dir", "")))
            images, labels = load_split(directory, split, sha256=SHA256[kind])
            return image_pipeline.ArraySource({"image": images, "label": labels})
        return open_split

    train = LazySource(opener("train"), "train")
    test = LazySource(opener("test"), "test")
    preprocess = image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                       image_size=IMAGE_SIZE)
    return ImageData(train_source=train, eval_sources={"test": test}, class_names=CLASS_NAMES,
                     preprocess=preprocess, read_threads=config.get("read_threads", 0))


def _full_dir(data_dir: str) -> pathlib.Path:
    return pathlib.Path(os.path.expanduser(data_dir or FULL_DIR))
