"""A 2-process "pod" on 127.0.0.1 (jax.distributed, gloo collectives) trains like one process."""

import os
import subprocess
import sys

import jax
import pytest

from tests.helpers import xla_flags
from tests.train.test_trainer import CHAR, ROOT, assert_close_params, final_params, tiny_config


def run_pod(tmp_path, workdir, overrides) -> str:
    """`train` as 2 processes x 4 devices on 127.0.0.1; its stdout."""
    result = subprocess.run(
        [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=4",
         f"--log_dir={tmp_path}", "--", "train", f"--config={CHAR}:runlocal",
         f"--workdir={workdir}", *(f"--config.{o}" for o in overrides)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, XLA_FLAGS=xla_flags(None)))
    other = (tmp_path / "process_1.log").read_text()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + other[-2000:]
    return result.stdout


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    overrides = ["train.num_steps=6", "train.batch_size=16", "evals.val.every_steps=3",
                 "train.checkpoint_every=3", f"data.data_dir={data_dir}"]
    pod = tmp_path / "pod"
    assert "8 devices (sharded)" in run_pod(tmp_path, pod, overrides)

    from jaxformer.train import trainer

    config = tiny_config(*overrides[:-1], data_dir=str(data_dir))
    single = tmp_path / "single"
    trainer.train(config, str(single))
    assert jax.device_count() == 8
    step_pod, params_pod = final_params(pod, config)
    step_one, params_one = final_params(single, config)
    assert step_pod == step_one == 6
    assert_close_params(params_pod, params_one)


@pytest.mark.slow
@pytest.mark.parametrize("parallelism, described", [
    ("train.strategy=pmap", "8 devices (pmap)"),
    ("train.fsdp=8", "8 devices (sharded, fsdp 8)"),  # The state split across both processes.
])
def test_two_processes_checkpoint_resume_and_match_one(tmp_path, parallelism, described):
    """Under `pmap`, or with each of the pod's 8 devices holding an eighth of the large leaves
    of the train state, the pod saves global checkpoints and resumes from them (a stop at step
    4 of 6, then the same command with more steps), ending where one process ends."""
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    overrides = [parallelism, "train.batch_size=16", "evals.val.every_steps=0",
                 "train.checkpoint_every=2", f"data.data_dir={data_dir}"]
    pod = tmp_path / "pod"
    assert described in run_pod(tmp_path, pod, ["train.num_steps=4", *overrides])
    assert "resuming from step 4" in run_pod(tmp_path, pod, ["train.num_steps=6", *overrides])

    from jaxformer.train import trainer

    config = tiny_config("train.num_steps=6", *overrides[:-1], data_dir=str(data_dir))
    single = tmp_path / "single"
    trainer.train(config, str(single))
    step_pod, params_pod = final_params(pod, config)
    step_one, params_one = final_params(single, config)
    assert step_pod == step_one == 6
    assert_close_params(params_pod, params_one)
