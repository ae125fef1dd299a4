"""The Task contract: what the trainer, the evaluators and the commands ask of an objective.

A task owns its model and turns batches into a loss. Its metrics are `Average`s (a sum and a
count), so that they combine exactly over micro-batches, devices, hosts and eval batches: the
trainer adds the sums and the counts up, and divides once at the end.

Losses over the whole global batch (contrastive negatives, set matching normalised by the
number of boxes on every device) use `axis_name`: where a step is jitted over the whole
mesh (the `sharded` strategy on accelerators) the task sees the global batch and `axis_name`
is None; in a step written per device (`pmap`; `sharded` on CPUs) each device sees its shard
and `axis_name` names the device axis. `all_gather` and `global_sum` below work in both;
`per_batch_shard` keeps per-example host callbacks on each device's share of the batch.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from jaxformer.losses.cross_entropy import smoothed_cross_entropy

Params = Any
Batch = dict[str, jax.Array]

# The mesh axes the batch is split over (`train.parallel`).
BATCH_AXES = ("data", "fsdp")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> Any:
    """The jnp dtype of `train.compute_dtype` (parameters stay float32)."""
    if name not in DTYPES:
        raise ValueError(f"unknown compute dtype {name!r}; available: {', '.join(DTYPES)}")
    return DTYPES[name]


@flax.struct.dataclass
class Average:
    """A mean kept as `total / count`, so that parts combine by adding both."""

    total: jax.Array
    count: jax.Array

    @classmethod
    def of(cls, values: jax.Array, weights: jax.Array | None = None) -> Average:
        """The (weighted) mean of `values`; zero weights leave rows out (padding)."""
        values = jnp.asarray(values, jnp.float32)
        if weights is None:
            return cls(values.sum(), jnp.float32(values.size))
        weights = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), values.shape)
        return cls((values * weights).sum(), weights.sum())

    def value(self) -> jax.Array:
        return self.total / jnp.maximum(self.count, 1e-9)


Metrics = dict[str, Average]


def classification_loss(logits: jax.Array, labels: jax.Array, num_classes: int,
                        label_smoothing: float = 0.0) -> tuple[Average, Metrics]:
    """(Label-smoothed) cross-entropy and accuracy of `[batch, classes]` logits; rows labelled
    -1 (padding of an eval batch) carry no weight."""
    real = labels >= 0
    safe_labels = jnp.maximum(labels, 0)
    loss = smoothed_cross_entropy(logits, safe_labels, num_classes, label_smoothing)
    correct = logits.argmax(-1) == safe_labels
    return Average.of(loss, real), {"accuracy": Average.of(correct, real)}


def all_gather(x: jax.Array, axis_name: str | None) -> jax.Array:
    """`x` of every device concatenated along axis 0 (the global batch); `x` itself when the
    task already sees the global batch (axis_name None)."""
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def global_sum(x: jax.Array, axis_name: str | None) -> jax.Array:
    """The sum of `x` over all devices (itself when the batch is global)."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def per_batch_shard(fn: Callable, batch_axis: int) -> Callable:
    """`fn` applied to each device's share of the batch when the step is jitted over a mesh
    (`train.parallel.Sharded` sets it while tracing), else `fn` itself (also in a step
    already written per device).

    Every argument and result of `fn` has the batch at dimension `batch_axis`. For per-example
    host callbacks (`jax.pure_callback`), which would otherwise bring the whole batch to one
    device and back.
    """
    mesh = jax.sharding.get_abstract_mesh()
    axes = () if mesh.empty else tuple(
        a for a in BATCH_AXES if a in mesh.axis_names and a not in mesh.manual_axes)
    if not axes:
        return fn
    spec = P(*[None] * batch_axis, axes)
    shards = math.prod(mesh.shape[a] for a in axes)

    def mapped(*args):
        if any(x.shape[batch_axis] % shards for x in args):
            return fn(*args)
        return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec,
                             check_vma=False)(*args)

    return mapped


def shard_offset(rows: int, axis_name: str | None) -> jax.Array:
    """Index of this device's first row in the global batch (0 when the batch is global)."""
    return jnp.int32(0) if axis_name is None else jax.lax.axis_index(axis_name) * rows


class Task(abc.ABC):
    """An objective over one model.

    Subclasses set `model` and implement `dummy_batch`, `model_inputs` and `loss`; the other
    methods have working defaults.
    """

    model: nn.Module

    @abc.abstractmethod
    def dummy_batch(self, batch_size: int) -> Batch:
        """A batch of the shapes and dtypes training sees (used to initialise and to check
        shapes without computing anything)."""

    @abc.abstractmethod
    def model_inputs(self, batch: Batch) -> tuple:
        """The positional arguments of `model.apply` for `batch`."""

    @abc.abstractmethod
    def loss(self, params: Params, batch: Batch, rng: jax.Array, *, train: bool,
             axis_name: str | None = None) -> tuple[Average, Metrics]:
        """(the loss to minimise, other metrics), all as `Average`s over this batch.

        The trainer differentiates `loss.total / global count`, so the loss of a part of the
        batch must be a sum over its items. Padding rows of eval batches get zero weight.
        """

    def init(self, rng: jax.Array) -> Params:
        """Fresh parameters for the model."""
        return self.model.init(rng, *self.model_inputs(self.dummy_batch(1)))["params"]

    def predict(self, params: Params, batch: Batch) -> jax.Array:
        """The model's outputs for `batch` in evaluation mode (logits for most tasks)."""
        return self.model.apply({"params": params}, *self.model_inputs(batch), train=False)

    def items_per_example(self) -> tuple[int, str]:
        """(items per example, their unit) for throughput: tokens for sequence tasks."""
        return 1, "ex"

    def flops_per_example(self, params: Params) -> float | None:
        """Training FLOPs of one example (forward + backward), or None when not known."""
        del params
        return None

    def resize_param(self, path: str, value: Any, shape: tuple[int, ...]) -> Any:
        """`value`, a parameter from another run, made to fit `shape` when loading with
        `init_from` (position embeddings at a new resolution); by default a mismatch is an
        error."""
        raise ValueError(f"parameter {path} has shape {tuple(value.shape)} in the source, the "
                         f"model needs {tuple(shape)}")
