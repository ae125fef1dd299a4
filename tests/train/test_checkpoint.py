"""Checkpointer: keep-K, restore of the newest step, averaging of the last checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.train.checkpoint import Checkpointer, CheckpointError
from jaxformer.train.state import TrainState


class _Iterator:
    """Stands in for a data iterator: only its state is saved."""

    def get_state(self):
        return {"step": 0}


def _state(step, scale):
    params = {"w": jnp.full((2, 3), scale, jnp.float32), "b": jnp.full((3,), -scale, jnp.float32)}
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                      opt_state={"m": jnp.zeros((3,))}, rng=jnp.zeros((2,), jnp.uint32))


def _abstract(state):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def test_average_of_the_last_checkpoints(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    for step, scale in [(1, 100.0), (2, 1.0), (3, 2.0), (4, 6.0)]:
        checkpointer.save(step, _state(step, scale), _Iterator())
    assert checkpointer.steps() == [2, 3, 4]  # keep=3 dropped step 1
    params, steps = checkpointer.average_params(_abstract(_state(0, 0.0)), 2)
    assert steps == [3, 4]
    np.testing.assert_allclose(params["w"], np.full((2, 3), 4.0))
    np.testing.assert_allclose(params["b"], np.full((3,), -4.0))
    params, steps = checkpointer.average_params(_abstract(_state(0, 0.0)), 10)
    assert steps == [2, 3, 4]
    np.testing.assert_allclose(params["w"], np.full((2, 3), 3.0))
    restored = checkpointer.restore(_abstract(_state(0, 0.0)))
    assert int(restored.step) == 4
    checkpointer.close()


def test_average_without_checkpoints_is_an_error(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpointer.average_params(_abstract(_state(0, 0.0)), 5)
    checkpointer.close()
