"""Fashion-MNIST: the idx reader, the embedded subset, the full Debian copy, clear errors."""

import gzip
import hashlib
import logging
import pathlib
import shutil
import struct

import ml_collections
import numpy as np
import pytest

from jaxformer.data import fashion_mnist
from jaxformer.data.fashion_mnist import SHA256, SUBSET_DIR

FULL = pathlib.Path(fashion_mnist.FULL_DIR)
needs_full = pytest.mark.skipif(
    not (FULL / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="apt package dataset-fashion-mnist not installed")


def test_subset_files_match_their_recorded_sha256():
    for name, digest in SHA256["subset"].items():
        data = gzip.decompress((SUBSET_DIR / f"{name}.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest


def test_subset_is_class_balanced():
    images, labels = fashion_mnist.load_split(SUBSET_DIR, "train", sha256=SHA256["subset"])
    assert images.shape == (10_000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
    images, labels = fashion_mnist.load_split(SUBSET_DIR, "test", sha256=SHA256["subset"])
    assert images.shape == (2_000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(labels), [200] * 10)
    # The first examples of the original files are kept, in order.
    np.testing.assert_array_equal(labels[:8], [9, 2, 1, 1, 6, 1, 4, 6])


@needs_full
def test_full_set_counts_and_first_labels():
    images, labels = fashion_mnist.load_split(FULL, "train", sha256=SHA256["full"])
    assert images.shape == (60_000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
    np.testing.assert_array_equal(labels[:8], [9, 0, 0, 3, 0, 2, 7, 2])
    pixels = images / 255.0
    assert abs(pixels.mean() - fashion_mnist.MEAN) < 1e-4
    assert abs(pixels.std() - fashion_mnist.STD) < 1e-4
    test_images, test_labels = fashion_mnist.load_split(FULL, "test", sha256=SHA256["full"])
    assert test_images.shape == (10_000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
    np.testing.assert_array_equal(test_labels[:8], [9, 2, 1, 1, 6, 1, 4, 6])


@needs_full
def test_subset_is_the_first_examples_of_each_class_of_the_full_set():
    for split, per_class in (("train", 1000), ("test", 200)):
        full_images, full_labels = fashion_mnist.load_split(FULL, split)
        chosen = np.sort(np.concatenate([np.flatnonzero(full_labels == c)[:per_class]
                                         for c in range(10)]))
        images, labels = fashion_mnist.load_split(SUBSET_DIR, split)
        np.testing.assert_array_equal(images, full_images[chosen])
        np.testing.assert_array_equal(labels, full_labels[chosen])


def test_source_selection(tmp_path):
    assert fashion_mnist.resolve("subset", str(FULL)) == ("subset", SUBSET_DIR)
    assert fashion_mnist.resolve("auto", str(tmp_path)) == ("subset", SUBSET_DIR)
    with pytest.raises(ValueError, match="full Fashion-MNIST is not in .*apt-get install"):
        fashion_mnist.resolve("full", str(tmp_path))
    with pytest.raises(ValueError, match="unknown Fashion-MNIST source 'all'"):
        fashion_mnist.resolve("all")
    for name in SHA256["full"]:  # A directory holding the four files counts as the full set.
        shutil.copy(SUBSET_DIR / f"{name}.gz", tmp_path / f"{name}.gz")
    assert fashion_mnist.resolve("auto", str(tmp_path)) == ("full", tmp_path)


@needs_full
def test_auto_picks_the_installed_full_set():
    assert fashion_mnist.resolve("auto") == ("full", FULL)
    config = ml_collections.ConfigDict({"source": "auto", "data_dir": ""})
    data = fashion_mnist.build(config, workdir=None)
    assert (len(data.train_source), len(data.eval_sources["test"])) == (60_000, 10_000)
    assert data.class_names[9] == "Ankle boot" and data.image_shape == (28, 28, 1)


def write_gz(path, data):
    path.write_bytes(gzip.compress(data))


def test_corrupt_and_missing_files_are_clear_errors(tmp_path):
    for name in SHA256["subset"]:
        shutil.copy(SUBSET_DIR / f"{name}.gz", tmp_path / f"{name}.gz")
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    original = gzip.decompress(labels.read_bytes())

    write_gz(labels, original[:-1] + b"\x03")  # One label changed.
    with pytest.raises(ValueError, match="corrupt Fashion-MNIST file .*sha256"):
        fashion_mnist.load_split(tmp_path, "test", sha256=SHA256["subset"])
    labels.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="corrupt Fashion-MNIST file"):
        fashion_mnist.load_split(tmp_path, "test")
    labels.write_bytes(gzip.compress(original)[:100])  # Truncated archive.
    with pytest.raises(ValueError, match="corrupt Fashion-MNIST file"):
        fashion_mnist.load_split(tmp_path, "test")
    write_gz(labels, original[:-5])  # Fewer labels than the header says.
    with pytest.raises(ValueError, match="header says \\[2000\\], but 1995 values follow"):
        fashion_mnist.load_split(tmp_path, "test")
    write_gz(labels, struct.pack(">II", 0x803, 2000) + original[8:])  # Wrong magic number.
    with pytest.raises(ValueError, match="magic number 0x00000803, expected 0x00000801"):
        fashion_mnist.load_split(tmp_path, "test")
    labels.unlink()
    with pytest.raises(ValueError, match="missing Fashion-MNIST file .*t10k-labels"):
        fashion_mnist.load_split(tmp_path, "test")


def test_parse_idx_reads_images_row_major():
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8)
    data = struct.pack(">IIII", 0x803, 2, 3, 4) + pixels.tobytes()
    np.testing.assert_array_equal(fashion_mnist.parse_idx(data, 3), pixels.reshape(2, 3, 4))
    with pytest.raises(ValueError, match="too short"):
        fashion_mnist.parse_idx(b"\x00\x00", 1)


def test_build_from_the_subset_serves_normalised_batches():
    config = ml_collections.ConfigDict({"source": "subset", "crop": "pad", "crop_padding": 2,
                                        "flip": True, "mean": (fashion_mnist.MEAN,),
                                        "std": (fashion_mnist.STD,)})
    data = fashion_mnist.build(config, workdir=None)
    assert (len(data.train_source), len(data.eval_sources["test"])) == (10_000, 2_000)
    assert data.eval_splits == ("test",)
    batch = next(data.eval_iter(batch_size=16, num_batches=1))
    again = next(data.eval_iter(batch_size=16, num_batches=1, split="test"))
    np.testing.assert_array_equal(again["image"], batch["image"])
    with pytest.raises(ValueError, match="unknown split 'train'; available: test"):
        data.eval_iter(batch_size=16, num_batches=1, split="train")
    images, labels = fashion_mnist.load_split(SUBSET_DIR, "test")
    np.testing.assert_array_equal(batch["label"], labels[:16])
    expected = (images[:16] / 255.0 - fashion_mnist.MEAN) / fashion_mnist.STD
    np.testing.assert_allclose(batch["image"], expected, atol=1e-5)


def test_auto_without_the_full_set_warns_once_when_read_and_takes_the_subset(
        tmp_path, caplog, monkeypatch):
    config = ml_collections.ConfigDict({"source": "auto", "data_dir": str(tmp_path)})
    reads = []
    load_split = fashion_mnist.load_split

    def counted(directory, split, **kwargs):
        reads.append(split)
        return load_split(directory, split, **kwargs)

    monkeypatch.setattr(fashion_mnist, "load_split", counted)
    with caplog.at_level(logging.WARNING, logger=fashion_mnist.__name__):
        data = fashion_mnist.build(config, workdir=None)
        # A command that only runs a trained model reads no split and hears nothing.
        assert (reads, caplog.records) == ([], [])
        assert len(data.train_source) == 10_000
        assert len(data.eval_sources["test"]) == 2_000
    assert reads == ["train", "test"]
    assert [r.getMessage() for r in caplog.records] == [
        (f"full Fashion-MNIST not found in {tmp_path}; using the embedded subset (10,000 train / "
         "2,000 test images)")]
