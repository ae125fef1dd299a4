"""How the sharded strategy sums gradients over devices: the partitioner's all-reduces, or a
per-device step (the default on CPUs) with one all-reduce of a flat buffer per dtype."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxformer.tasks.base import Average, Task
from jaxformer.train import parallel
from jaxformer.train.state import create_state, psum_flat

BATCH, WIDTH = 16, 8


class ThreeLayers(Task):
    """Regression through three Dense layers: six parameter leaves."""

    model = nn.Sequential([nn.Dense(WIDTH), nn.relu, nn.Dense(WIDTH), nn.relu, nn.Dense(1)])

    def dummy_batch(self, batch_size):
        return {"x": jnp.zeros((batch_size, WIDTH)), "y": jnp.zeros((batch_size,))}

    def model_inputs(self, batch):
        return (batch["x"],)

    def loss(self, params, batch, rng, *, train, axis_name=None):
        pred = self.model.apply({"params": params}, batch["x"])[:, 0]
        return Average.of((pred - batch["y"]) ** 2), {}


def all_reduces(strategy) -> list[list[str]]:
    """The operand shapes of each all-reduce in the compiled train step of `ThreeLayers`."""
    task, tx = ThreeLayers(), optax.adam(1e-3)
    batch = strategy.place_batch({"x": np.ones((BATCH, WIDTH), np.float32),
                                  "y": np.ones((BATCH,), np.float32)})
    state = strategy.init_state(lambda: create_state(task, tx, 0))
    text = strategy.train_step(task, tx, 1).lower(state, batch).compile().as_text()
    found = re.findall(r"= (\(.*?\)|\S+) all-reduce\(", text)
    return [re.findall(r"[a-z]+\d*\[[\d,]*\]", shapes) for shapes in found]


def test_psum_flat_equals_psum_leaf_by_leaf():
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    tree = {"w": rng.normal(size=(8, 3, 5)).astype(np.float32),
            "b": rng.normal(size=(8, 5)).astype(np.float32),
            "scale": rng.normal(size=(8,)).astype(np.float32),
            "count": rng.integers(0, 9, size=(8, 2)).astype(np.int32)}

    def summed(reduce):
        fn = jax.shard_map(lambda t: reduce(jax.tree.map(lambda x: x[0], t), "data"),
                           mesh=mesh, in_specs=P("data"), out_specs=P(), check_vma=False)
        return jax.device_get(jax.jit(fn)(tree))

    flat, leafwise = summed(psum_flat), summed(jax.lax.psum)
    for key in tree:
        assert flat[key].dtype == tree[key].dtype and flat[key].shape == tree[key].shape[1:]
        np.testing.assert_allclose(flat[key], tree[key].sum(0), rtol=1e-6)
        np.testing.assert_array_equal(flat[key], leafwise[key])


def test_per_device_step_sums_gradients_in_one_buffer_per_dtype():
    per_device = all_reduces(parallel.Sharded(per_device_step=True))
    # The six gradient leaves (72 + 72 + 9 floats) and the loss's sum and count, in one buffer.
    assert per_device == [["f32[155]"]]
    # The partitioner's step: one operand per gradient leaf at least.
    partitioned = all_reduces(parallel.Sharded(per_device_step=False))
    assert sum(len(shapes) for shapes in partitioned) >= 6


def test_the_per_device_step_is_the_cpu_default_with_a_replicated_state():
    assert jax.default_backend() == "cpu"
    assert parallel.Sharded().per_device_step
    assert not parallel.Sharded(fsdp=2).per_device_step
    with pytest.raises(ValueError, match="replicated"):
        parallel.Sharded(fsdp=2, per_device_step=True)
