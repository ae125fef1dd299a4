"""Preparing the data sets built here from local files: one line on stderr, nothing left in
the temporary directory."""

import logging

import pytest

from jaxformer.data import bible_enes, shakespeare
from jaxformer.data.local_info import LocalDatasetInfo


@pytest.mark.parametrize("module", [shakespeare, bible_enes], ids=lambda m: m.__name__)
def test_preparing_says_one_line_and_leaves_no_temporary_directory(module, tmp_path,
                                                                   monkeypatch, capsys, caplog):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    with caplog.at_level(logging.INFO):
        builder = module.prepare(str(tmp_path / "tfds"))
    assert builder.is_prepared() and isinstance(builder.info, LocalDatasetInfo)
    # tfds's GCS lookup of an unprepared builder used to leave one directory per builder.
    assert list(temp.iterdir()) == []
    # Nothing of tfds's own output: progress bars, size lines, version-folder warnings.
    name = module.__name__.rsplit(".", 1)[1]
    assert capsys.readouterr() == ("", f"prepared {name} in {builder.data_dir}\n")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    module.prepare(str(tmp_path / "tfds"))  # Prepared already: nothing to say.
    assert capsys.readouterr() == ("", "")
