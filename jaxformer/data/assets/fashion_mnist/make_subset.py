"""Rebuilds the embedded Fashion-MNIST subset from the Debian package's full data set.

The subset is class-balanced and keeps the original order: the first 1,000 training images
of each class (10,000 in all) and the first 200 test images of each class (2,000), written
in the original idx format (gzip-compressed, header timestamps zeroed).

    apt-get install dataset-fashion-mnist
    python make_subset.py [/usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import pathlib
import struct
import sys

import numpy as np

# sha256 of the decompressed idx files of dataset-fashion-mnist 0.0~git20200523.55506a9-1.
FULL_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
PER_CLASS = {"train": 1000, "t10k": 200}
NUM_CLASSES = 10


def read(path: pathlib.Path) -> bytes:
    data = gzip.decompress(path.read_bytes())
    expected = FULL_SHA256[path.name.removesuffix(".gz")]
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        sys.exit(f"{path}: decompressed sha256 {digest}, expected {expected}")
    return data


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices, in file order, of the first `per_class` examples of every class."""
    chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class]
                             for c in range(NUM_CLASSES)])
    return np.sort(chosen)


def write(path: pathlib.Path, data: bytes) -> None:
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f,
                                               compresslevel=9, mtime=0) as gz:
        gz.write(data)
    print(f"{path.name}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"{path.stat().st_size:,} compressed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path, nargs="?",
                        default=pathlib.Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    args = parser.parse_args(argv)
    for split, per_class in PER_CLASS.items():
        images = read(args.source / f"{split}-images-idx3-ubyte.gz")
        labels = read(args.source / f"{split}-labels-idx1-ubyte.gz")
        label_array = np.frombuffer(labels, np.uint8, offset=8)
        rows, height, width = struct.unpack(">III", images[4:16])
        image_array = np.frombuffer(images, np.uint8, offset=16).reshape(rows, height, width)
        chosen = first_per_class(label_array, per_class)
        write(args.output / f"{split}-images-idx3-ubyte.gz",
              images[:4] + struct.pack(">III", len(chosen), height, width)
              + image_array[chosen].tobytes())
        write(args.output / f"{split}-labels-idx1-ubyte.gz",
              labels[:4] + struct.pack(">I", len(chosen)) + label_array[chosen].tobytes())


if __name__ == "__main__":
    main()
