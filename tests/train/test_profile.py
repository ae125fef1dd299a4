"""`train.profile_steps`: a `jax.profiler` trace of chosen steps in the workdir."""

import gzip
import json

import pytest

from jaxformer.errors import UserError
from jaxformer.train import trainer
from tests.train.test_trainer import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_trace_of_the_chosen_steps(tmp_path, data_dir, capsys):
    workdir = tmp_path / "run"
    config = tiny_config("train.num_steps=5", "train.profile_start=3", "train.profile_steps=2",
                         "evals.val.every_steps=0", data_dir=data_dir)
    trainer.train(config, str(workdir))
    assert f"profile of steps 3-4 written to {workdir / 'profile'}" in capsys.readouterr().out
    (trace,) = (workdir / "profile").glob("plugins/profile/*/*.trace.json.gz")
    (xplane,) = (workdir / "profile").glob("plugins/profile/*/*.xplane.pb")
    assert xplane.stat().st_size > 0
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    steps = sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "train")
    assert steps == [3, 4]
    assert any(e.get("name") == "ThunkExecutor::Execute" for e in events)  # XLA at work.


@pytest.mark.parametrize("overrides, message", [
    (("train.profile_steps=2", "train.profile_start=1"), "train.profile_start >= 2"),
    (("train.profile_steps=-1",), "train.profile_steps must be >= 0"),
    (("train.profile_steps=2", "train.profile_start=9", "train.num_steps=4"),
     "train.profile_start 9 is beyond train.num_steps 4"),
])
def test_bad_profile_window_is_refused(tmp_path, data_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        trainer.train(tiny_config(*overrides, data_dir=data_dir), str(tmp_path / "run"))
    assert not (tmp_path / "run" / "config.json").exists()
