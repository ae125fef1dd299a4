"""The events file against TensorBoard's own reader, and the checksum against known values."""

import math
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from jaxformer.train import tensorboard
from jaxformer.train.metrics import MetricWriter


def test_crc32c_of_the_standard_check_string_and_of_zeros():
    # RFC 3720 (iSCSI), appendix B.4: CRC32C test vectors.
    assert tensorboard.crc32c(b"123456789") == 0xE3069283
    assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA
    assert tensorboard.crc32c(b"\xff" * 32) == 0x62A8AB43


def test_tensorboard_reads_every_scalar_at_its_step(tmp_path):
    writer = MetricWriter(str(tmp_path))
    writer.write(1, {"train/loss": 2.5, "train/lr": 1e-3})
    writer.write(300, {"train/loss": 1.25, "eval/val/perplexity": 1e300})
    writer.write(2**40, {"train/loss": -0.5})
    writer.close()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["eval/val/perplexity", "train/loss", "train/lr"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 300, 2**40]
    assert [e.value for e in loss] == [2.5, 1.25, -0.5]
    assert events.Scalars("train/lr")[0].value == pytest.approx(1e-3, rel=1e-7)
    assert events.Scalars("eval/val/perplexity")[0].value == math.inf  # Beyond float32.
    assert np.all(np.diff([e.wall_time for e in loss]) >= 0)


def test_a_resumed_run_appends_a_second_file_that_tensorboard_reads_after_the_first(tmp_path):
    for steps in ([1, 2], [3]):
        writer = MetricWriter(str(tmp_path))
        for step in steps:
            writer.write(step, {"train/loss": float(step)})
        writer.close()
    assert len(os.listdir(tmp_path / "tensorboard")) == 2
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0), (2, 2.0),
                                                                          (3, 3.0)]


def test_negative_step_is_refused():
    with pytest.raises(ValueError, match="step must be >= 0"):
        tensorboard.event(-1, 0.0)


def test_files_opened_in_one_second_are_read_in_the_order_they_were_opened(tmp_path,
                                                                            monkeypatch):
    """Twelve resumed runs within one second (a file number 10 once sorted before 9)."""
    monkeypatch.setattr(tensorboard.time, "time", lambda: 1_700_000_000.5)
    for step in range(12):
        writer = tensorboard.EventWriter(str(tmp_path))
        writer.scalars(step, {"train/loss": float(step)})
        writer.close()
    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(12))
