"""metrics.jsonl across a resume, its reader, and log lines into a pipe closed early."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxformer.train.metrics import MetricWriter, read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _write(workdir, steps, value, **kwargs):
    writer = MetricWriter(str(workdir), **kwargs)
    for step in steps:
        writer.write(step, {"train/loss": value + step})
    writer.close()


def test_a_resume_drops_the_records_after_the_resumed_step(tmp_path):
    _write(tmp_path, range(1, 7), 10.0)
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 7, "train/lo')  # Killed mid-write.
    inode = path.stat().st_ino
    _write(tmp_path, [5, 6, 7], 20.0, resume_step=4)
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["train/loss"] for r in records] == [11.0, 12.0, 13.0, 14.0, 25.0, 26.0, 27.0]
    assert path.stat().st_ino != inode  # Replaced by a complete new file, not edited in place.
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "tensorboard"]


def test_counts_stay_integers_and_other_scalars_are_floats(tmp_path):
    writer = MetricWriter(str(tmp_path))
    writer.write(3, {"eval/loss": np.float32(2.5), "eval/accuracy": 1, "averaged_checkpoints": 3,
                     "eval/flag": True})
    writer.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    assert line == ('{"step": 3, "eval/loss": 2.5, "eval/accuracy": 1, '
                    '"averaged_checkpoints": 3, "eval/flag": 1.0}\n')


def test_appending_after_a_line_cut_short_drops_that_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "eval/loss": 2.5}\n{"step": 2, "ev')
    _write(tmp_path, [2], 1.0)
    assert read_metrics(str(tmp_path)) == [{"step": 1, "eval/loss": 2.5},
                                           {"step": 2, "train/loss": 3.0}]


def test_read_metrics_tolerates_only_a_last_line_cut_short(tmp_path):
    assert read_metrics(str(tmp_path)) == []
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert read_metrics(str(tmp_path)) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a\n{"step": 3, "a": 3.0}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2 is not a JSON record"):
        read_metrics(str(tmp_path))


_LOG_MANY_LINES = textwrap.dedent("""
    import sys
    from jaxformer.console import log

    for i in range(20000):  # Far more than a pipe buffers.
        log(f"step {i}")
    print("finished", file=sys.stderr)
""")


def test_log_into_a_pipe_closed_early_goes_on_quietly():
    child = subprocess.Popen([sys.executable, "-c", _LOG_MANY_LINES], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "step 0\n"
    child.stdout.close()  # As `head -n 1` does.
    stderr = child.stderr.read()
    child.stderr.close()
    assert child.wait(timeout=60) == 0, stderr
    assert stderr == "finished\n"
