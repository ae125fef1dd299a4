"""Train state and the generic train step (one optimizer step per call)."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxformer.tasks.base import Task
from jaxformer.train.optimizer import make_optimizer


@flax.struct.dataclass
class TrainState:
    step: jax.Array        # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    rng: jax.Array         # uint32 key data; step k uses fold_in(rng, k)


def create_state(task: Task, tx: optax.GradientTransformation, seed: int,
                 params: Any = None) -> TrainState:
    """Fresh parameters (or `params`, e.g. from `init_from`) and optimizer state; call under
    jit to place them directly."""
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    if params is None:
        params = task.init(init_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=jax.random.key_data(train_rng))


def make_train_step(task: Task, tx: optax.GradientTransformation, *, grad_accum_steps: int = 1,
                    axis_name: str | None = None, frozen: Any = None,
                    params_in_use: Callable[[Any], Any] | None = None):
    """Returns `train_step(state, batch) -> (state, metrics)`, metrics as float32 scalars.

    The task's loss is a sum over the items of its (micro-)batch with a count (see
    `tasks.base.Average`). Sums and counts are added over micro-batches (rows i, i+k, i+2k,
    ... form micro-batch i, so a batch sharded over devices stays sharded) and, with
    `axis_name` (a step written per device: pmap, shard_map), over devices (`psum_flat`); the
    gradient is then divided by the total count, so the step is one pass over the global batch
    whatever the split. `frozen`, a tree of bools like the params, stops gradients at the
    frozen ones, so that their backward pass is not computed.
    `params_in_use` maps the params as stored to the params the loss reads (FSDP: gathered
    whole, so that the passes are split over the batch alone).
    """

    def summed_grads(params, batch, rng):
        def total(params):
            if params_in_use is not None:
                params = params_in_use(params)
            if frozen is not None:
                params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p,
                                      params, frozen)
            loss, metrics = task.loss(params, batch, rng, train=True, axis_name=axis_name)
            return loss.total, {"loss": loss, **metrics}

        grads, metrics = jax.grad(total, has_aux=True)(params)
        return grads, metrics

    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        if grad_accum_steps == 1:
            grads, metrics = summed_grads(state.params, batch, rng)
        else:
            k = grad_accum_steps
            micro = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch)

            def accumulate(carry, inputs):
                i, micro_batch = inputs
                part = summed_grads(state.params, micro_batch, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, part), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                summed_grads, state.params, jax.tree.map(lambda x: x[0], micro), rng))
            (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(k), micro))
        if axis_name is not None:
            grads, metrics = psum_flat((grads, metrics), axis_name)
        count = jnp.maximum(metrics["loss"].count, 1e-9)
        grads = jax.tree.map(lambda g: g / count, grads)
        scalars = {name: average.value() for name, average in metrics.items()}
        scalars["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), scalars

    return train_step


def psum_flat(tree: Any, axis_name: str) -> Any:
    """`lax.psum(tree, axis_name)` as one all-reduce per dtype, of all leaves concatenated.

    XLA:CPU's collectives synchronise the host devices once per buffer: the 55 gradient and
    metric leaves of the nano GPT CPU recipe, summed one by one, took ~5 ms of its ~35 ms step
    on two host devices; as one buffer the step takes ~31 ms (experiments/results).
    """
    leaves, treedef = jax.tree.flatten(tree)
    groups: dict[Any, list[int]] = {}
    for i, leaf in enumerate(leaves):
        groups.setdefault(jnp.result_type(leaf), []).append(i)
    summed = list(leaves)
    for indices in groups.values():
        flat = jax.lax.psum(jnp.concatenate([jnp.ravel(leaves[i]) for i in indices]), axis_name)
        bounds = np.cumsum([0] + [np.size(leaves[i]) for i in indices])
        for i, start, stop in zip(indices, bounds[:-1], bounds[1:]):
            summed[i] = flat[start:stop].reshape(np.shape(leaves[i]))
    return jax.tree.unflatten(treedef, summed)


def abstract_state(config: ml_collections.ConfigDict, task: Task,
                   sharding: jax.sharding.Sharding | Callable[[tuple[int, ...]], Any]
                   ) -> TrainState:
    """Shapes, dtypes and shardings of the run's train state, computed without allocating;
    `sharding` is that of every leaf, or a function of a leaf's shape
    (`parallel.Sharded.leaf_sharding`)."""
    tx = make_optimizer(config.optim, tuple(config.get("freeze", ())))
    shapes = jax.eval_shape(lambda: create_state(task, tx, config.seed))
    sharding_of = sharding if callable(sharding) else (lambda _: sharding)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_of(x.shape)), shapes)
