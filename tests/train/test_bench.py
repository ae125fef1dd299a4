"""`jaxformer bench`: the trainer's step timed, with what each device holds of the state."""

import numpy as np
import pytest

from jaxformer.commands import params as params_command
from jaxformer.config import load_config
from jaxformer.train import bench
from tests.helpers import ROOT
from tests.train.test_trainer import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.parametrize("fsdp", [1, 4])
def test_bench_times_the_step_and_measures_the_state_per_device(data_dir, fsdp):
    config = tiny_config("train.batch_size=16", f"train.fsdp={fsdp}", data_dir=data_dir)
    result = bench.run(config, steps=3, warmup=1)
    shapes = params_command.summary(config)  # From shapes alone, without running anything.
    assert result["num_params"] == shapes["total"]
    assert result["num_devices"] == 8 and result["global_batch"] == 16
    assert 0 < result["step_seconds_median"] < result["compile_seconds"] + 1
    tokens = 16 * config.data.block_size
    assert np.isclose(result["tok_per_sec"], tokens / result["step_seconds_median"])
    # The arrays' shards on the first device against the sharding rule applied to shapes; the
    # difference is the step counter and the RNG key, which `params` leaves out.
    held = result["state_bytes_per_device"] - shapes["state_bytes_per_device"]
    assert 0 <= held < 64
    if fsdp == 1:
        assert shapes["state_bytes_per_device"] == (shapes["param_bytes"]
                                                    + shapes["optimizer_state_bytes"])
    else:
        assert shapes["state_bytes_per_device"] < 0.8 * (shapes["param_bytes"]
                                                         + shapes["optimizer_state_bytes"])


def test_a_model_without_variants_is_named_by_its_model():
    """The Flamingo-style model has no `model.variant` (its towers come from other runs)."""
    config = load_config(f"{ROOT}/configs/flamingo/emoji.py:runlocal")
    assert "variant" not in config.model
    assert bench.run(config, steps=1, warmup=0)["config"] == "flamingo"
