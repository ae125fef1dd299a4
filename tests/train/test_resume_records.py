"""A run stopped by a signal between two metrics records, then resumed, writes the records an
uninterrupted run writes: the open window of steps travels in the checkpoint."""

import json
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.train.test_trainer import CHAR, _env

STEPS, LOG_EVERY = 40, 5


def _args(workdir, data_dir, num_steps):
    return [sys.executable, "-m", "jaxformer", "train", f"--config={CHAR}:runlocal",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
            f"--config.train.num_steps={num_steps}", f"--config.train.log_every={LOG_EVERY}",
            "--config.train.checkpoint_every=1000", "--config.evals.val.every_steps=0"]


def _records(workdir):
    """Every record, without the throughput figures (times differ from run to run)."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_per_sec")}
            for line in lines]


@pytest.mark.slow
def test_a_stop_between_records_changes_no_record(tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    straight = tmp_path / "straight"
    subprocess.run(_args(straight, data_dir, STEPS), check=True, cwd=ROOT, env=_env(),
                   capture_output=True, timeout=300)

    stopped = tmp_path / "stopped"
    first = subprocess.Popen(_args(stopped, data_dir, 100_000), cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in first.stdout:
        if line.startswith(f"step {LOG_EVERY}/"):
            break
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    step = int(err.split(" at step ")[1].split(";")[0])
    assert step < STEPS
    subprocess.run(_args(stopped, data_dir, STEPS), check=True, cwd=ROOT, env=_env(),
                   capture_output=True, timeout=300)

    assert _records(stopped) == _records(straight)
    if step % LOG_EVERY:  # The stop fell inside a window: it was carried, not written.
        assert step not in [r["step"] for r in _records(stopped)]
