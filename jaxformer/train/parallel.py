"""Data-parallel strategies: `sharded` (jit over a Mesh, default) and `pmap`.

Both take per-process batches (each process reads its own shard of the data) and give the
same numbers: the loss and gradients are means over the global batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer.errors import UserError
from jaxformer.tasks.base import BATCH_AXES
from jaxformer.train.state import TrainState, make_train_step

STRATEGIES = ("sharded", "pmap")
MESH_AXES = ("data", "fsdp", "tensor")


def local_batch_size(global_batch_size: int) -> int:
    """This process's share of the global batch; must split evenly over all devices."""
    devices = jax.device_count()
    if global_batch_size % devices:
        raise UserError(f"train.batch_size {global_batch_size} does not split over {devices} "
                        f"devices; use a multiple of {devices}")
    return global_batch_size // jax.process_count()


class Sharded:
    """`jax.jit` over a (data, fsdp, tensor) mesh: params replicated, batch split over data."""

    name = "sharded"
    axis_name = None  # The jitted step sees the global batch.

    def __init__(self, devices: list[jax.Device] | None = None,
                 mesh_shape: tuple[int, int, int] | None = None):
        devices = devices or jax.devices()
        mesh_shape = mesh_shape or (len(devices), 1, 1)
        self.mesh = Mesh(np.asarray(devices).reshape(mesh_shape), MESH_AXES)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(BATCH_AXES))

    def init_state(self, create: Callable[..., TrainState], *args) -> TrainState:
        return jax.jit(create, out_shardings=self.replicated)(*args)

    def place_state(self, state: TrainState) -> TrainState:
        return jax.device_put(state, self.replicated)

    def host_state(self, state: TrainState) -> TrainState:
        """The state as checkpoints store it (global arrays)."""
        return state

    def place_batch(self, batch: dict) -> dict:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x)),
            batch)

    def train_step(self, task, tx, grad_accum_steps: int, frozen=None) -> Callable:
        step = make_train_step(task, tx, grad_accum_steps=grad_accum_steps, frozen=frozen)
        return self._in_mesh(jax.jit(
            step, in_shardings=(self.replicated, self.batch_sharding),
            out_shardings=(self.replicated, self.replicated), donate_argnums=0))

    def reduce_fn(self, fn: Callable) -> Callable:
        """`fn(params, batch) -> pytree of sums` over the global batch, jitted."""
        return self._in_mesh(jax.jit(fn, in_shardings=(self.replicated, self.batch_sharding),
                                     out_shardings=self.replicated))

    def _in_mesh(self, jitted: Callable) -> Callable:
        """`jitted`, called (and so traced) with the mesh set: tasks can then split
        per-example work over it (`tasks.base.per_batch_shard`). Its `lower(*args)` lowers
        it under the mesh too, for ahead-of-time compilation."""
        def call(*args):
            with jax.set_mesh(self.mesh):
                return jitted(*args)

        def lower(*args):
            with jax.set_mesh(self.mesh):
                return jitted.lower(*args)

        call.lower = lower
        return call


class Pmap:
    """Classic replicated data parallelism: `jax.pmap` with `lax.pmean` over local devices."""

    name = "pmap"
    axis_name = "batch"

    def init_state(self, create: Callable[..., TrainState], *args) -> TrainState:
        return self.place_state(jax.jit(create)(*args))

    def __init__(self):
        mesh = Mesh(np.asarray(jax.local_devices()), (self.axis_name,))
        self.stacked = NamedSharding(mesh, P(self.axis_name))
        # What checkpoints store: one copy, as arrays replicated over every process's devices.
        self.replicated = NamedSharding(Mesh(np.asarray(jax.devices()), (self.axis_name,)), P())

    def place_state(self, state: TrainState) -> TrainState:
        """One copy per local device, stacked on a leading axis."""
        n = jax.local_device_count()
        return jax.device_put(
            jax.tree.map(lambda x: np.broadcast_to(x, (n, *np.shape(x))), jax.device_get(state)),
            self.stacked)

    def host_state(self, state: TrainState) -> TrainState:
        """One copy of the stacked state, as global arrays (host-local ones cannot be
        checkpointed by several processes)."""
        def unstack(x):
            copy = np.asarray(x.addressable_data(0))[0]
            return jax.make_array_from_callback(copy.shape, self.replicated, lambda _: copy)

        return jax.tree.map(unstack, state)

    def place_batch(self, batch: dict) -> dict:
        n = jax.local_device_count()
        return jax.tree.map(lambda x: np.asarray(x).reshape(n, x.shape[0] // n, *x.shape[1:]),
                            batch)

    def train_step(self, task, tx, grad_accum_steps: int, frozen=None) -> Callable:
        step = make_train_step(task, tx, grad_accum_steps=grad_accum_steps,
                               axis_name=self.axis_name, frozen=frozen)
        pstep = jax.pmap(step, axis_name=self.axis_name, donate_argnums=0)

        def train_step(state, batch):
            state, metrics = pstep(state, batch)
            return state, jax.tree.map(lambda x: x[0], metrics)

        train_step.lower = pstep.lower  # Its compiled program returns one metric per device.
        return train_step

    def reduce_fn(self, fn: Callable) -> Callable:
        """`fn(params, batch) -> pytree of sums`, run per device and added over devices."""
        pfn = jax.pmap(lambda params, batch: jax.lax.psum(fn(params, batch), self.axis_name),
                       axis_name=self.axis_name)
        return lambda params, batch: jax.tree.map(lambda x: x[0], pfn(params, batch))


def make_strategy(name: str):
    if name == "sharded":
        return Sharded()
    if name == "pmap":
        return Pmap()
    raise UserError(f"unknown train.strategy {name!r}; available: {', '.join(STRATEGIES)}")
