"""`jaxformer bench`: compile time, median step time, throughput, MFU and memory of a config's
train step.

The step timed is exactly the trainer's (same strategy, optimizer, dtype, remat), fed one real
batch from the config's data pipeline, so data loading is not part of the figure.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax
import ml_collections
import numpy as np

from jaxformer.errors import UserError, as_user_error
from jaxformer.registry import build_data_and_task
from jaxformer.train import cpu_matmuls, parallel, transfer
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state

# Dense peak FLOP/s per device by compute dtype, from the vendors' data sheets.
PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 2},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 2},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 2},
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12 / 2},
}


def peak_flops(device: jax.Device, dtype: str) -> float | None:
    """The device's peak FLOP/s for `dtype`, or None where it is not known (e.g. CPUs)."""
    kind = device.device_kind
    for name, table in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return table.get(dtype)
    return None


def run(config: ml_collections.ConfigDict, *, steps: int = 20, warmup: int = 3,
        workdir: str | None = None) -> dict:
    cfg = config.train
    if steps < 1 or warmup < 0:
        raise UserError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    with tempfile.TemporaryDirectory() as scratch, as_user_error("config"):
        data, task = build_data_and_task(config, workdir or scratch)
        batch_size = parallel.local_batch_size(cfg.batch_size)
        batch = next(data.train_iter(batch_size=batch_size, seed=config.seed))
    strategy = parallel.make_strategy(cfg.strategy, cfg.fsdp, cpu_matmuls.chosen(cfg))
    tx = make_optimizer(config.optim, tuple(config.get("freeze", ())))
    state = strategy.init_state(lambda: create_state(task, tx, config.seed))
    batch = strategy.place_batch(batch)
    frozen = transfer.frozen_mask(strategy.host_state(state).params,
                                  tuple(config.get("freeze", ())))
    train_step = strategy.train_step(task, tx, cfg.grad_accum_steps, frozen)

    start = time.perf_counter()
    state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    for _ in range(warmup):
        state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)

    step_seconds = statistics.median(times)
    params = strategy.host_state(state).params
    result = {
        "config": config.model.get("variant") or config.model.name,
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "compute_dtype": cfg.compute_dtype,
        "cpu_matmuls": cpu_matmuls.chosen(cfg),
        "global_batch": cfg.batch_size,
        "num_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params))),
        "compile_seconds": round(compile_seconds, 3),
        "step_seconds_median": step_seconds,
        "examples_per_sec": cfg.batch_size / step_seconds,
    }
    # What one device holds of the train state (less with train.fsdp), and its peak memory
    # where the runtime reports it (GPUs, TPUs).
    device = jax.local_devices()[0]
    result["state_bytes_per_device"] = sum(
        shard.data.nbytes for leaf in jax.tree.leaves(state)
        for shard in leaf.addressable_shards if shard.device == device)
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["peak_bytes_in_use"] = stats["peak_bytes_in_use"]
    items, unit = task.items_per_example()
    if unit != "ex":
        result[f"{unit}_per_sec"] = cfg.batch_size * items / step_seconds
    peak = peak_flops(jax.devices()[0], cfg.compute_dtype)
    flops = task.flops_per_example(params)
    if peak and flops:
        result["mfu"] = flops * cfg.batch_size / step_seconds / (peak * jax.device_count())
    return result
