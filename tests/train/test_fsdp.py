"""`train.fsdp`: the train state split over devices trains as the replicated one does."""

import shutil

import jax
import numpy as np
import pytest

from jaxformer.errors import UserError
from jaxformer.train import parallel, trainer
from tests.train.test_trainer import (
    assert_close_params,
    assert_same_params,
    final_params,
    losses_and_state,
    tiny_config,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.parametrize("shape, fsdp, axis", [
    ((4096,), 4, 0),
    ((32, 128), 4, 1),         # The largest axis that 4 divides.
    ((128, 32), 4, 0),
    ((64, 64), 8, 0),          # Equal axes: the first.
    ((1000, 7), 8, 0),         # 7 does not split 8 ways.
    ((7, 1001), 8, None),      # No axis splits 8 ways.
    ((3, 4096), 4, 1),
    ((32, 96), 4, None),       # 3,072 elements: small, replicated.
    ((), 4, None),
    ((4096, 4096), 1, None),   # fsdp 1: everything replicated.
])
def test_fsdp_axis(shape, fsdp, axis):
    assert parallel.fsdp_axis(shape, fsdp) == axis


def device_bytes(tree, device):
    """Bytes of `tree` held on `device`."""
    return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
               for shard in leaf.addressable_shards if shard.device == device)


def test_fsdp_splits_the_state_and_trains_as_replicated(tmp_path, data_dir):
    config = tiny_config("train.batch_size=16", data_dir=data_dir)
    losses, replicated = losses_and_state(config, parallel.Sharded(), 4, tmp_path)
    fsdp_losses, state = losses_and_state(config, parallel.Sharded(fsdp=4), 4, tmp_path)

    np.testing.assert_allclose(fsdp_losses, losses, rtol=1e-6)
    assert_close_params(jax.device_get(state.params), jax.device_get(replicated.params))
    # Every large leaf (parameters and Adam's moments alike) is split 4 ways over the fsdp
    # axis, each device holding a quarter; the small ones are whole on every device.
    split = 0
    for leaf in jax.tree.leaves(state):
        axis = parallel.fsdp_axis(leaf.shape, 4)
        shard = leaf.addressable_shards[0].data.shape
        if axis is None:
            assert leaf.sharding.is_fully_replicated and shard == leaf.shape
        else:
            split += 1
            assert shard[axis] * 4 == leaf.shape[axis], (leaf.shape, shard)
    assert split >= 3 * 4  # Two blocks' MLP kernels, in the params and both moments.
    device = jax.devices()[0]
    expected = sum(leaf.nbytes // (1 if parallel.fsdp_axis(leaf.shape, 4) is None else 4)
                   for leaf in jax.tree.leaves(state))
    assert device_bytes(state, device) == expected < device_bytes(replicated, device)


@pytest.mark.slow
def test_fsdp_resume_is_exact_and_may_change_the_split(tmp_path, data_dir):
    """A run split 4 ways stopped at step 2 and resumed ends bit-identical to the run that
    did not stop; resumed replicated instead, it ends where the replicated run does."""
    def config(steps, fsdp):
        return tiny_config(f"train.num_steps={steps}", "train.checkpoint_every=2",
                           "train.batch_size=16", f"train.fsdp={fsdp}",
                           "evals.val.every_steps=0", data_dir=data_dir)

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    trainer.train(config(4, 4), str(straight))
    trainer.train(config(2, 4), str(stopped))
    shutil.copytree(stopped, tmp_path / "regrouped")
    trainer.train(config(4, 4), str(stopped))
    trainer.train(config(4, 1), str(tmp_path / "regrouped"))
    replicated = tmp_path / "replicated"
    trainer.train(config(4, 1), str(replicated))

    step, params = final_params(straight)
    assert step == 4
    assert_same_params(final_params(stopped)[1], params)
    assert_close_params(final_params(tmp_path / "regrouped")[1], params)
    assert_close_params(final_params(replicated)[1], params)


@pytest.mark.parametrize("strategy, fsdp, message", [
    ("sharded", 3, "train.fsdp must divide the 8 devices, got 3"),
    ("sharded", 0, "train.fsdp must divide the 8 devices, got 0"),
    ("pmap", 2, "train.fsdp=2 needs train.strategy=sharded"),
])
def test_bad_fsdp_is_refused_before_the_workdir_is_written(tmp_path, data_dir, strategy, fsdp,
                                                           message):
    config = tiny_config(f"train.strategy={strategy}", f"train.fsdp={fsdp}",
                         "train.batch_size=16", data_dir=data_dir)
    workdir = tmp_path / "run"
    with pytest.raises(UserError, match=message):
        trainer.train(config, str(workdir))
    assert not (workdir / "config.json").exists()
