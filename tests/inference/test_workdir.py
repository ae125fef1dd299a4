"""The record `jaxformer average` leaves in its workdir, read back by `load_run`."""

import logging

import pytest

from jaxformer.inference import workdir as workdir_lib
from jaxformer.inference.workdir import Run, read_average_record, write_average_record


def test_average_record_round_trips(tmp_path):
    source = tmp_path / "run"
    run = Run(str(source), None, None, None, None, step=40, averaged_steps=(30, 35, 40))
    write_average_record(str(tmp_path), run)
    assert read_average_record(str(tmp_path)) == {"step": 40, "steps": [30, 35, 40],
                                                  "workdir": str(source)}
    described = Run(str(tmp_path), None, None, None, None, 40, (30, 35, 40), str(source))
    assert described.describe() == f"the mean of the checkpoints at steps [30, 35, 40] of {source}"
    assert run.describe() == "the mean of the checkpoints at steps [30, 35, 40]"


@pytest.mark.parametrize("text", ["{", "[]", '{"step": "4", "steps": [1], "workdir": "x"}',
                                  '{"step": 4, "steps": [1.5], "workdir": "x"}',
                                  '{"step": 4, "workdir": "x"}'])
def test_an_unreadable_average_record_is_ignored_with_a_warning(tmp_path, caplog, text):
    (tmp_path / workdir_lib.AVERAGE_RECORD).write_text(text)
    with caplog.at_level(logging.WARNING, logger=workdir_lib.__name__):
        assert read_average_record(str(tmp_path)) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"ignoring unreadable {tmp_path / workdir_lib.AVERAGE_RECORD}"]


def test_no_average_record(tmp_path, caplog):
    assert read_average_record(str(tmp_path)) is None
    assert not caplog.records
