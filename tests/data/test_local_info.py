"""Data sets built here from local files leave nothing in the temporary directory."""

import pytest

from jaxformer.data import bible_enes, shakespeare
from jaxformer.data.local_info import LocalDatasetInfo


@pytest.mark.parametrize("module", [shakespeare, bible_enes], ids=lambda m: m.__name__)
def test_preparing_leaves_no_temporary_directory(module, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    builder = module.prepare(str(tmp_path / "tfds"))
    assert builder.is_prepared() and isinstance(builder.info, LocalDatasetInfo)
    # tfds's GCS lookup of an unprepared builder used to leave one directory per builder.
    assert list(temp.iterdir()) == []
