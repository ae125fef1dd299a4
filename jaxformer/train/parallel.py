"""Data-parallel strategies: `sharded` (jit over a Mesh, default) and `pmap`.

Both take per-process batches (each process reads its own shard of the data) and give the
same numbers: the loss and gradients are means over the global batch. `sharded` can also
split the train state over devices (`train.fsdp`, fully sharded data parallelism).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer.errors import UserError
from jaxformer.tasks.base import BATCH_AXES
from jaxformer.train.cpu_matmuls import check as check_cpu_matmuls
from jaxformer.train.cpu_matmuls import compiler_options
from jaxformer.train.state import TrainState, make_train_step

STRATEGIES = ("sharded", "pmap")
MESH_AXES = ("data", "fsdp")
# Under FSDP, leaves with fewer elements stay replicated: gathering a bias or a LayerNorm
# scale at every use costs more than the memory it saves.
MIN_SHARDED_SIZE = 2**12


def fsdp_axis(shape: tuple[int, ...], fsdp: int) -> int | None:
    """The axis of a train-state leaf of `shape` that FSDP splits `fsdp` ways: its largest
    axis that `fsdp` divides (the first of equal ones); None (replicated) for small leaves or
    when no axis divides."""
    if fsdp == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
        return None
    divisible = [axis for axis, size in enumerate(shape) if size % fsdp == 0]
    return max(divisible, key=lambda axis: shape[axis]) if divisible else None


def local_batch_size(global_batch_size: int) -> int:
    """This process's share of the global batch; must split evenly over all devices."""
    devices = jax.device_count()
    if global_batch_size % devices:
        raise UserError(f"train.batch_size {global_batch_size} does not split over {devices} "
                        f"devices; use a multiple of {devices}")
    return global_batch_size // jax.process_count()


class Sharded:
    """`jax.jit` over a (data, fsdp) device mesh, the batch split over all its devices.

    The train state is replicated, or with `fsdp` > 1 each of its large leaves (parameters
    and the optimizer's moments alike) is split over the `fsdp` mesh axis (`fsdp_axis`), as
    ZeRO-3 / FSDP do: each device keeps 1/fsdp of it between steps; in the step XLA gathers
    the parameters for the forward and backward passes, and each device updates its own
    part. The numbers are those of the replicated step, up to the order of float additions.

    With a replicated state the step's gradients are summed over devices either where XLA's
    partitioner puts the all-reduces (one per gradient leaf, combined and overlapped with the
    backward pass by XLA: the default on GPUs and TPUs), or, with `per_device_step`, by a
    step written per device (`shard_map` over the `data` axis, as `pmap` runs it) that sums
    them in one all-reduce of a flat buffer (`state.psum_flat`): the default on CPUs, whose
    collectives synchronise the host devices once per buffer. A per-device step draws its
    random numbers per device (dropout masks then depend on the number of devices).
    `cpu_matmuls` picks the library of the train step's matmuls on CPUs (cpu_matmuls.py).
    """

    axis_name = None  # `reduce_fn`'s function sees the global batch.

    def __init__(self, devices: list[jax.Device] | None = None, fsdp: int = 1,
                 per_device_step: bool | None = None, cpu_matmuls: str = "xla"):
        devices = devices or jax.devices()
        if fsdp < 1 or len(devices) % fsdp:
            raise UserError(f"train.fsdp must divide the {len(devices)} devices, got {fsdp}")
        if per_device_step is None:
            per_device_step = fsdp == 1 and devices[0].platform == "cpu"
        if per_device_step and fsdp != 1:
            raise ValueError("a per-device step keeps the state replicated (fsdp 1)")
        self.fsdp = fsdp
        self.per_device_step = per_device_step
        self.step_options = compiler_options(cpu_matmuls, devices[0].platform)
        self.name = "sharded" if fsdp == 1 else f"sharded, fsdp {fsdp}"
        self.mesh = Mesh(np.asarray(devices).reshape(len(devices) // fsdp, fsdp), MESH_AXES)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(BATCH_AXES))

    def leaf_sharding(self, shape: tuple[int, ...]) -> NamedSharding:
        axis = fsdp_axis(tuple(shape), self.fsdp)
        if axis is None:
            return self.replicated
        return NamedSharding(self.mesh, P(*(None,) * axis, "fsdp"))

    def state_sharding(self, tree: Any) -> Any:
        """The sharding of each leaf of a train state (arrays or shapes): a function of the
        leaf's shape alone, so a state restored, averaged or built anew lands the same way."""
        return jax.tree.map(lambda x: self.leaf_sharding(np.shape(x)), tree)

    def _constrain_state(self, tree: Any) -> Any:
        return jax.lax.with_sharding_constraint(tree, self.state_sharding(tree))

    def init_state(self, create: Callable[..., TrainState], *args) -> TrainState:
        return jax.jit(lambda *a: self._constrain_state(create(*a)))(*args)

    def place_state(self, state: TrainState) -> TrainState:
        return jax.device_put(state, self.state_sharding(state))

    def host_state(self, state: TrainState) -> TrainState:
        """The state as checkpoints store it (global arrays)."""
        return state

    def place_batch(self, batch: dict) -> dict:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x)),
            batch)

    def train_step(self, task, tx, grad_accum_steps: int, frozen=None) -> Callable:
        if self.per_device_step:
            step = make_train_step(task, tx, grad_accum_steps=grad_accum_steps,
                                   axis_name="data", frozen=frozen)
            per_device = jax.shard_map(step, mesh=self.mesh, in_specs=(P(), P(BATCH_AXES)),
                                       out_specs=P(), check_vma=False)
            return self._in_mesh(jax.jit(per_device, donate_argnums=0,
                                         compiler_options=self.step_options))
        # Split parameters are gathered whole where the loss reads them: the forward and
        # backward passes are then split over the batch alone, instead of following the
        # parameters' splits into the activations.
        gather = None if self.fsdp == 1 else (
            lambda params: jax.lax.with_sharding_constraint(params, self.replicated))
        step = make_train_step(task, tx, grad_accum_steps=grad_accum_steps, frozen=frozen,
                               params_in_use=gather)

        def sharded_step(state: TrainState, batch: dict):
            # The state's shardings follow from its shapes, so they are set here, at trace
            # time, on the way in and out (the state arrives placed by `place_state`).
            batch = jax.lax.with_sharding_constraint(batch, self.batch_sharding)
            state, metrics = step(self._constrain_state(state), batch)
            return (self._constrain_state(state),
                    jax.lax.with_sharding_constraint(metrics, self.replicated))

        return self._in_mesh(jax.jit(sharded_step, donate_argnums=0,
                                     compiler_options=self.step_options))

    def reduce_fn(self, fn: Callable) -> Callable:
        """`fn(params, batch) -> pytree of sums` over the global batch, jitted; `params` as
        placed (replicated or by `place_state`)."""
        def sums(params, batch):
            return fn(params, jax.lax.with_sharding_constraint(batch, self.batch_sharding))

        return self._in_mesh(jax.jit(sums, out_shardings=self.replicated))

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


def make_strategy(name: str, fsdp: int = 1, cpu_matmuls: str = "xla"):
    """The strategy `train.strategy` names; `fsdp` (`train.fsdp`) > 1 splits the train state
    over that many devices (sharded only); `cpu_matmuls` (`train.cpu_matmuls`, sharded only)
    picks the library of the train step's matmuls on CPUs (jaxformer/train/cpu_matmuls.py)."""
    if name == "sharded":
        return Sharded(fsdp=fsdp, cpu_matmuls=cpu_matmuls)
    if name == "pmap":
        check_cpu_matmuls(cpu_matmuls)
        if fsdp != 1:
            raise UserError(f"train.fsdp={fsdp} needs train.strategy=sharded (pmap keeps a "
                            "whole copy of the state on every device)")
        return Pmap()
    raise UserError(f"unknown train.strategy {name!r}; available: {', '.join(STRATEGIES)}")
