"""Train state and the generic train / eval steps (one optimizer step per call)."""

from __future__ import annotations

from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax


class Task(Protocol):
    """What the trainer needs from a task (see jaxformer/tasks/)."""

    def init(self, rng: jax.Array) -> Any: ...
    def loss(self, params: Any, batch: dict, rng: jax.Array, *, train: bool
             ) -> tuple[jax.Array, dict]: ...
    def eval_metrics(self, params: Any, batch: dict) -> dict: ...


@flax.struct.dataclass
class TrainState:
    step: jax.Array        # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    rng: jax.Array         # uint32 key data; step k uses fold_in(rng, k)


def create_state(task: Task, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Fresh parameters and optimizer state (call under jit to place them directly)."""
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    params = task.init(init_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=jax.random.key_data(train_rng))


def make_train_step(task: Task, tx: optax.GradientTransformation, *, grad_accum_steps: int = 1,
                    axis_name: str | None = None):
    """Returns `train_step(state, batch) -> (state, metrics)`.

    With `grad_accum_steps > 1` the batch is split into that many micro-batches (rows
    i, i+k, i+2k, ... form micro-batch i, so a batch sharded over devices stays sharded) and
    their gradients are combined in a scan. With `axis_name` (pmap), gradients and metrics are
    combined over that axis. A task whose loss is a mean over a varying number of items (the
    non-padding tokens of a translation batch) reports that number as the metric `weight`;
    parts are then combined weighted by it, so that the step equals one pass over the whole
    batch. Without `weight`, parts count equally.
    """

    def weighted_grads(params, batch, rng):
        """(grads and metrics times the part's weight, the weight)."""
        (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(
            params, batch, rng, train=True)
        metrics = {"loss": loss, **metrics}
        weight = jnp.asarray(metrics.pop("weight", 1.0), jnp.float32)
        return jax.tree.map(lambda x: x * weight, (grads, metrics)), weight

    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        if grad_accum_steps == 1:
            summed, weight = weighted_grads(state.params, batch, rng)
        else:
            k = grad_accum_steps
            micro = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch)

            def accumulate(carry, inputs):
                i, micro_batch = inputs
                part = weighted_grads(state.params, micro_batch, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, part), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                weighted_grads, state.params, jax.tree.map(lambda x: x[0], micro), rng))
            (summed, weight), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(k), micro))
        if axis_name is not None:
            summed, weight = jax.lax.psum((summed, weight), axis_name)
        grads, metrics = jax.tree.map(lambda x: x / jnp.maximum(weight, 1e-9), summed)
        metrics["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(task: Task, *, axis_name: str | None = None):
    """Returns `eval_step(params, batch) -> metrics`.

    A task's metrics are either means over the batch, or, when they include a `weight` (the
    number of real tokens or examples in the batch), sums over those: across devices, means
    are averaged and sums added, and the trainer divides the summed totals by the total weight.
    """

    def eval_step(params, batch):
        metrics = task.eval_metrics(params, batch)
        if axis_name is not None:
            reduce = jax.lax.psum if "weight" in metrics else jax.lax.pmean
            metrics = reduce(metrics, axis_name)
        return metrics

    return eval_step
