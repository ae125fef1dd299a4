"""What the data modules share: process shards, in-order batch counts, eval splits, data dirs,
config checks and atomic saves."""

import os
import tempfile

import ml_collections
import numpy as np
import pytest
from etils import epath

from jaxformer.data import common, image_pipeline, wmt14_ende
from jaxformer.data.common import Shard


def test_processes_take_consecutive_blocks_of_the_global_batch():
    shards = [Shard(3, p, 4) for p in range(4)]
    assert all(shard.global_batch == 12 for shard in shards)
    np.testing.assert_array_equal(np.concatenate([s.rows for s in shards]), np.arange(12))
    assert Shard(5).start == 0 and Shard(5, 2, 3).start == 10
    with pytest.raises(ValueError, match="batch_size must be positive"):
        Shard(0)
    with pytest.raises(ValueError, match=r"process_index 2 is not in \[0, 2\)"):
        Shard(4, 2, 2)


def test_in_order_batches():
    assert common.in_order_batches(13, 5, -1) == 3  # The last one padded.
    assert common.in_order_batches(13, 5, 2) == 2
    assert common.in_order_batches(13, 5, 10) == 3  # Never past the end.
    assert common.in_order_batches(10, 5, -1) == 2
    assert common.in_order_batches(13, 5, 0) == 0
    with pytest.raises(ValueError, match="num_batches"):
        common.in_order_batches(13, 5, -2)


def test_choose_split():
    assert common.choose_split(None, ("validation", "test")) == "validation"
    assert common.choose_split("test", ("validation", "test")) == "test"
    with pytest.raises(ValueError, match="unknown split 'train'; available: validation, test"):
        common.choose_split("train", ("validation", "test"))


def test_read_options():
    assert common.read_options().num_threads == common.read_options().prefetch_buffer_size == 0
    options = common.read_options(4)
    assert (options.num_threads, options.prefetch_buffer_size) == (4, 8)


def test_data_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    assert common.default_data_dir("") == str(tmp_path / "default")
    assert common.default_data_dir(str(tmp_path)) == str(tmp_path)
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert common.default_data_dir("") == os.path.expanduser("~/tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    # A missing default is fine where it is made, and made only by resolve_data_dir.
    assert common.check_data_dir("", default_must_exist=False) == str(tmp_path / "default")
    assert not (tmp_path / "default").exists()
    with pytest.raises(ValueError, match="does not exist"):
        common.check_data_dir("", default_must_exist=True)
    with pytest.raises(ValueError, match="does not exist"):
        common.check_data_dir(str(tmp_path / "named"), default_must_exist=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        common.check_data_dir(str(tmp_path / "file"), default_must_exist=False)
    assert common.check_data_dir("gs://bucket/tfds", default_must_exist=True) == "gs://bucket/tfds"
    with pytest.raises(ValueError, match="does not exist"):
        common.resolve_data_dir("", create=False)
    assert common.resolve_data_dir("", create=True) == str(tmp_path / "default")
    assert (tmp_path / "default").is_dir()
    with pytest.raises(ValueError, match="does not exist"):  # A named one is never made.
        common.resolve_data_dir(str(tmp_path / "named"), create=True)


def test_assets_dir():
    assert common.assets_dir("/runs/a") == "/runs/a/assets"
    assert common.assets_dir(None) is None


def test_required_settings():
    config = ml_collections.ConfigDict({"size": 3, "flag": True, "kind": "bpe"})
    assert common.require_int(config, "size", minimum=1) == 3
    assert common.require_int(config, "absent", minimum=0, default=0) == 0
    for key, minimum in (("size", 4), ("flag", 0), ("absent", 0), ("kind", 0)):
        with pytest.raises(ValueError, match=f"data.{key} must be an integer >= {minimum}"):
            common.require_int(config, key, minimum=minimum)
    assert common.require_choice(config, "kind", ("char", "bpe")) == "bpe"
    assert common.require_choice(config, "absent", ("ids",), default="ids") == "ids"
    with pytest.raises(ValueError, match="unknown data.kind 'bpe'; available: char, ids"):
        common.require_choice(config, "kind", ("char", "ids"))


def test_save_atomically_leaves_no_partial_file(tmp_path):
    path = epath.Path(tmp_path) / "sub" / "file.bin"
    common.save_atomically(path, lambda p: p.write_bytes(b"data"))
    assert path.read_bytes() == b"data"

    def fail(partial):
        partial.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        common.save_atomically(epath.Path(tmp_path) / "sub" / "other.bin", fail)
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_cached_makes_once_then_loads(tmp_path):
    path = epath.Path(tmp_path) / "cache" / "value.txt"
    made = []

    def make():
        made.append(1)
        return "value"

    def load(p):
        text = p.read_text()
        if text != "value":
            raise ValueError(f"bad cache {p}")
        return text

    def save(value, p):
        p.write_text(value)

    assert common.cached(path, make, load=load, save=save) == "value"
    assert common.cached(path, make, load=load, save=save) == "value" and made == [1]
    assert common.cached(None, make, load=load, save=save) == "value" and made == [1, 1]
    path.write_text("damaged")
    with pytest.raises(ValueError, match=r"bad cache .*value.txt; delete it to rebuild"):
        common.cached(path, make, load=load, save=save)


def test_cached_without_a_writable_path_warns_and_returns(tmp_path, caplog):
    blocked = epath.Path(tmp_path) / "file"
    blocked.write_text("")  # A file where the cache's folder would be.
    value = common.cached(blocked / "value.txt", lambda: "value", load=epath.Path.read_text,
                          save=lambda value, p: p.write_text(value))
    assert value == "value" and "not caching" in caplog.text


def test_digest_separates_texts():
    assert common.digest(["ab", "c"]) == common.digest(iter(["ab", "c"]))
    assert len({common.digest(t) for t in (["ab", "c"], ["a", "bc"], ["abc"], [])}) == 4


def test_opening_a_missing_tfds_data_set_leaves_no_temporary_directory(tmp_path, monkeypatch):
    """tfds makes an empty temporary directory whenever a data set is not prepared; those of
    the data modules are removed."""
    import tensorflow_datasets.text.conll2003  # noqa: F401  (registers the builder)

    temp, data_dir = tmp_path / "tmp", tmp_path / "tfds"
    temp.mkdir()
    data_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(ValueError, match="cannot read conll2003"):
        image_pipeline.tfds_sources("conll2003", data_dir=str(data_dir), splits=["train"])
    with pytest.raises(ValueError, match="is not prepared"):
        wmt14_ende.open_splits(str(data_dir))
    assert os.listdir(temp) == [] and tempfile.gettempdir() == str(temp)
