"""The Task contract: a loss over the whole global batch gives the same value and gradient on
one device, on 8 devices under jit (global arrays, or a per-device step under shard_map), and
on 8 devices under pmap (collectives)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from jaxformer.tasks.base import Average, Task, all_gather, global_sum, shard_offset
from jaxformer.train import parallel
from jaxformer.train.state import create_state

BATCH, WIDTH = 16, 6


class TwoTowers(nn.Module):
    @nn.compact
    def __call__(self, x, y):
        return nn.Dense(4, name="left")(x), nn.Dense(4, name="right")(y)


class Contrastive(Task):
    """Symmetric InfoNCE: every row's negatives are all the other rows of the global batch."""

    model = TwoTowers()

    def dummy_batch(self, batch_size):
        return {"x": jnp.zeros((batch_size, WIDTH)), "y": jnp.zeros((batch_size, WIDTH))}

    def model_inputs(self, batch):
        return batch["x"], batch["y"]

    def loss(self, params, batch, rng, *, train, axis_name=None):
        left, right = self.model.apply({"params": params}, batch["x"], batch["y"])
        all_left, all_right = all_gather(left, axis_name), all_gather(right, axis_name)
        labels = shard_offset(left.shape[0], axis_name) + jnp.arange(left.shape[0])
        to_right = optax.softmax_cross_entropy_with_integer_labels(left @ all_right.T, labels)
        to_left = optax.softmax_cross_entropy_with_integer_labels(right @ all_left.T, labels)
        # The global number of rows, as a metric: it must be the same on every split.
        rows = global_sum(jnp.float32(left.shape[0]), axis_name)
        return Average.of((to_right + to_left) / 2), {"rows": Average(rows * left.shape[0],
                                                                        left.shape[0])}


def one_step(strategy):
    task = Contrastive()
    tx = optax.sgd(1.0)  # The update is minus the gradient.
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(BATCH, WIDTH)).astype(np.float32),
             "y": rng.normal(size=(BATCH, WIDTH)).astype(np.float32)}
    state = strategy.init_state(lambda: create_state(task, tx, 0))
    before = jax.device_get(strategy.host_state(state).params)
    state, metrics = strategy.train_step(task, tx, 1)(state, strategy.place_batch(batch))
    after = jax.device_get(strategy.host_state(state).params)
    return jax.device_get(metrics), jax.tree.map(lambda a, b: a - b, before, after)


def reference_loss():
    """The same loss computed directly on the whole batch with numpy."""
    task = Contrastive()
    params = jax.device_get(create_state(task, optax.sgd(1.0), 0).params)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, WIDTH)).astype(np.float32)
    y = rng.normal(size=(BATCH, WIDTH)).astype(np.float32)
    left = x @ params["left"]["kernel"] + params["left"]["bias"]
    right = y @ params["right"]["kernel"] + params["right"]["bias"]
    logits = left.astype(np.float64) @ right.T

    def xent(z):
        z = z - z.max(1, keepdims=True)
        return -(np.diag(z) - np.log(np.exp(z).sum(1)))

    return float(((xent(logits) + xent(logits.T)) / 2).mean())


STRATEGIES = {
    "sharded8": lambda: parallel.Sharded(per_device_step=False),
    "sharded8_per_device": lambda: parallel.Sharded(per_device_step=True),
    "pmap8": parallel.Pmap,
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_global_batch_loss_matches_one_device(strategy):
    assert jax.device_count() == 8
    single_metrics, single_grads = one_step(
        parallel.Sharded(devices=jax.devices()[:1], per_device_step=False))
    metrics, grads = one_step(STRATEGIES[strategy]())
    assert single_metrics["loss"] == pytest.approx(reference_loss(), rel=1e-5)
    assert metrics["loss"] == pytest.approx(single_metrics["loss"], rel=1e-5)
    assert metrics["rows"] == single_metrics["rows"] == BATCH
    for a, b in zip(jax.tree.leaves(single_grads), jax.tree.leaves(grads)):
        assert np.abs(a).max() > 1e-4  # A real gradient, not zeros on both sides.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_train_step_compiles_ahead_of_time(strategy):
    """Benchmarks lower and compile the step themselves to read its memory and FLOPs."""
    strategy = STRATEGIES[strategy]()
    task, tx = Contrastive(), optax.sgd(1.0)
    batch = strategy.place_batch({"x": np.ones((BATCH, WIDTH), np.float32),
                                  "y": np.ones((BATCH, WIDTH), np.float32)})
    step = strategy.train_step(task, tx, 1)
    state = strategy.init_state(lambda: create_state(task, tx, 0))
    compiled = step.lower(state, batch).compile()
    assert compiled.memory_analysis().argument_size_in_bytes > 0
    _, metrics = compiled(state, batch)
    _, expected = step(strategy.init_state(lambda: create_state(task, tx, 0)), batch)
    loss = np.asarray(jax.device_get(metrics["loss"])).reshape(-1)[0]  # pmap: per device.
    np.testing.assert_allclose(loss, jax.device_get(expected["loss"]), rtol=1e-6)


def test_average_combines_parts_exactly():
    values = jnp.array([1.0, 2.0, 3.0, 10.0])
    weights = jnp.array([1.0, 1.0, 0.0, 2.0])
    whole = Average.of(values, weights)
    parts = jax.tree.map(jnp.add, Average.of(values[:2], weights[:2]),
                         Average.of(values[2:], weights[2:]))
    assert float(whole.value()) == float(parts.value()) == pytest.approx(23 / 4)
