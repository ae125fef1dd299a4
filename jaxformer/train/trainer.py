"""The generic training loop: config -> (data, task, evaluators) -> steps, evals, checkpoints.

Nothing here knows which model family it trains. A run goes in three phases:
  1. check: the config's parts are built (data into a staging directory, the model's shapes
     with `jax.eval_shape`) and every mistake is a `UserError` before the workdir changes;
  2. claim: the workdir is locked, its newest readable checkpoint (if any) is checked against
     the model, and only then are `config.json` and the assets written;
  3. train: resume order in one place: a fresh state (or `init_from`) unless a checkpoint
     restores the state and the data iterator position; then the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxformer import config as config_lib
from jaxformer import registry
from jaxformer.console import log
from jaxformer.data import common as data_common
from jaxformer.errors import UserError, as_user_error
from jaxformer.evaluators.base import Context, build_evaluators
from jaxformer.registry import build_data_and_task
from jaxformer.train import cpu_matmuls, parallel, transfer
from jaxformer.train.checkpoint import Checkpointer, CheckpointMismatchError
from jaxformer.train.metrics import AVERAGED, MetricWriter, progress_line, read_metrics
from jaxformer.train.optimizer import make_optimizer, make_schedule
from jaxformer.train.profiler import StepProfiler
from jaxformer.train.state import TrainState, abstract_state, create_state
from jaxformer.train.workdir import check_workdir_path, lock_workdir, save_config


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf."""

    exit_code = 3


class Interrupted(Exception):
    """The run was stopped by a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; "
                         "checkpoint saved, rerun the same command to resume")
        self.exit_code = 128 + signum


class _StopOnSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signum: int | None = None

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle)
                          for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # A second Ctrl-C stops at once.
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def check_train_config(config: ml_collections.ConfigDict) -> None:
    """Values the trainer itself needs; raises ValueError."""
    cfg = config.train
    for name in ("num_steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints",
                 "grad_accum_steps"):
        if cfg[name] < 1:
            raise ValueError(f"train.{name} must be >= 1, got {cfg[name]}")
    if cfg.average_last < 0 or cfg.average_last > cfg.keep_checkpoints:
        raise ValueError(f"train.average_last must be in [0, keep_checkpoints="
                         f"{cfg.keep_checkpoints}], got {cfg.average_last}")
    if cfg.profile_steps < 0 or cfg.profile_start < 2:
        raise ValueError(f"train.profile_steps must be >= 0 and train.profile_start >= 2 (step "
                         f"1 compiles), got {cfg.profile_steps} and {cfg.profile_start}")
    if cfg.profile_steps and cfg.profile_start > cfg.num_steps:
        raise ValueError(f"train.profile_start {cfg.profile_start} is beyond train.num_steps "
                         f"{cfg.num_steps}")
    if cfg.batch_size % cfg.grad_accum_steps:
        raise ValueError(f"train.batch_size {cfg.batch_size} does not split into "
                         f"{cfg.grad_accum_steps} micro-batches")
    registry.lookup("models", config.model.name)
    registry.lookup("tasks", config.task.name)
    registry.lookup("data", config.data.name).check_config(config.data)


@dataclasses.dataclass
class _Parts:
    """What a run is built from."""

    data: Any
    task: Any
    tx: Any
    strategy: Any
    evaluators: dict
    abstract: TrainState
    init_from: dict | None  # Parameters to start from (`config.init_from`), when not resuming.


def _check(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The config values and the workdir path, before anything is built."""
    check_workdir_path(workdir)
    with as_user_error("config"):
        check_train_config(config)
        local_batch = parallel.local_batch_size(config.train.batch_size)
        if local_batch % (config.train.grad_accum_steps * jax.local_device_count()):
            raise ValueError(f"train.batch_size {config.train.batch_size} must split into "
                             f"{config.train.grad_accum_steps} micro-batches over "
                             f"{jax.device_count()} devices")


def _build_parts(config: ml_collections.ConfigDict, assets_workdir: str, *, resuming: bool
                 ) -> _Parts:
    """Data (its assets read from or written to `assets_workdir/assets`), task, optimizer,
    evaluators, the train state's shapes and `init_from`'s parameters (unless resuming); a
    ValueError here is a config mistake."""
    with as_user_error("config"):
        strategy = parallel.make_strategy(config.train.strategy, config.train.fsdp,
                                          cpu_matmuls.chosen(config.train))
        data, task = build_data_and_task(config, assets_workdir)
        data_common.open_lazy_sources(data)
        freeze = tuple(config.get("freeze", ()))
        tx = make_optimizer(config.optim, freeze)
        abstract = abstract_state(config, task, _state_sharding(strategy))
        transfer.check_freeze(abstract.params, freeze)
        local_batch = parallel.local_batch_size(config.train.batch_size)
        evaluators = build_evaluators(config, Context(task, data, strategy, local_batch))
        loaded = None
        if not resuming and transfer.sources(config):
            loaded = transfer.init_from(config, task, abstract.params)
    return _Parts(data, task, tx, strategy, evaluators, abstract, loaded)


def _state_sharding(strategy):
    """Where restored states land: by leaf shape under the mesh; on one device for pmap."""
    if isinstance(strategy, parallel.Sharded):
        return strategy.leaf_sharding
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _commit(config: ml_collections.ConfigDict, workdir: str, staging: str | None) -> None:
    """Once the run is known to be valid: config.json and the new assets, moved out of
    `staging`, which is removed (process 0)."""
    save_config(config, workdir)
    if staging is not None:
        if os.path.isdir(os.path.join(staging, "assets")):
            shutil.move(os.path.join(staging, "assets"), os.path.join(workdir, "assets"))
        shutil.rmtree(staging, ignore_errors=True)


def _saved_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains to `config.train.num_steps`, resuming from `workdir`; returns the last metrics."""
    _check(config, workdir)
    read_metrics(workdir)  # A damaged metrics.jsonl is reported before anything is written.
    saved = _saved_steps(workdir)
    if saved and saved[-1] > config.train.num_steps:
        raise UserError(f"train.num_steps {config.train.num_steps} is below the step of the "
                        f"workdir's newest checkpoint ({saved[-1]}); use a new --workdir or "
                        "more steps")
    lead = jax.process_index() == 0
    # Process 0 builds first, new assets into a staging directory, removed whatever happens.
    staging = None
    if lead and not os.path.isdir(os.path.join(workdir, "assets")):
        staging = tempfile.mkdtemp(prefix="jaxformer-assets-")
    try:
        parts = _build_parts(config, staging or workdir, resuming=bool(saved)) if lead else None
        with (lock_workdir(workdir) if lead else contextlib.nullcontext()):
            if lead:
                try:
                    Checkpointer.check_compatible(workdir, parts.abstract.params)
                except CheckpointMismatchError as e:
                    raise UserError(str(e)) from e
                _commit(config, workdir, staging)
                staging = None  # Gone: none is left behind by a run killed while it trains.
                log(config_lib.to_json(config))  # Printed once the run is known to be valid.
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("jaxformer: workdir ready")
            if not lead:  # The other processes read the assets process 0 wrote.
                parts = _build_parts(config, workdir, resuming=bool(saved))
            return _train(config, workdir, parts)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _train(config: ml_collections.ConfigDict, workdir: str, parts: _Parts) -> dict[str, float]:
    cfg = config.train
    data, task, tx, strategy = parts.data, parts.task, parts.tx, parts.strategy
    batch_size = parallel.local_batch_size(cfg.batch_size)
    train_iter = data.train_iter(batch_size=batch_size, seed=config.seed,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    checkpointer = Checkpointer(workdir, keep=cfg.keep_checkpoints)
    restored = checkpointer.restore(parts.abstract, train_iter)
    if restored is not None:
        state = strategy.place_state(restored)
    else:
        state = _fresh_state(config, parts)
    start = int(np.asarray(strategy.host_state(state).step))
    params = strategy.host_state(state).params
    trained, frozen_count = transfer.count_frozen(params, tuple(config.get("freeze", ())))
    log(f"{'resuming from step ' + str(start) if start else 'starting'}: "
        f"{trained + frozen_count:,} parameters ({trained:,} trained, {frozen_count:,} frozen), "
        f"{jax.device_count()} devices ({strategy.name}), global batch {cfg.batch_size}")

    schedule = make_schedule(config.optim)
    frozen_mask = transfer.frozen_mask(parts.abstract.params, tuple(config.get("freeze", ())))
    train_step = strategy.train_step(task, tx, cfg.grad_accum_steps, frozen_mask)
    evaluators = parts.evaluators
    writer = MetricWriter(workdir, resume_step=start)
    items_per_example, item_name = task.items_per_example()

    def evaluate(state: TrainState, step: int, final: bool) -> dict[str, float]:
        due = {name: e for name, e in evaluators.items() if e.due(step, final=final)}
        if not due:
            return {}
        params, averaged = state.params, {}
        if final and cfg.average_last > 1:
            checkpointer.wait()  # The average includes the step just saved.
            host = strategy.host_state(state)
            mean, steps = checkpointer.average_params(parts.abstract, cfg.average_last)
            log(f"final evaluation of the average of the checkpoints at steps {steps}")
            params = strategy.place_state(host.replace(params=mean)).params
            averaged = {AVERAGED: len(steps)}
        scalars = {}
        for name, evaluator in due.items():
            scalars.update({f"eval/{name}/{k}": v for k, v in evaluator.run(params).items()})
        writer.write(step, {**scalars, **averaged})
        log(" | ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
        return scalars

    profiler = StepProfiler(workdir, cfg.profile_start, cfg.profile_steps)
    pending: list[tuple[int, Any]] = []  # Steps whose metrics are still on the devices.
    # The fetched metrics of the steps since the last record (a stopped run's, restored).
    window = checkpointer.read_window(start) if restored is not None else []
    last: dict[str, float] = {}
    timer, timed_steps = time.perf_counter(), 0

    def fetch() -> None:
        """Moves the pending steps' metrics into `window`; stops on a non-finite loss."""
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), metrics in zip(pending, fetched):
            if not math.isfinite(float(metrics["loss"])):
                checkpointer.wait()
                good = checkpointer.steps()
                raise NonFiniteLossError(
                    f"loss is {float(metrics['loss'])} at step {s}; stopping. Last good "
                    f"checkpoint: {'step ' + str(good[-1]) if good else 'none'} in {workdir}")
        window.extend({k: float(v) for k, v in metrics.items()} for metrics in fetched)
        pending.clear()

    def flush(step: int) -> None:
        """Writes the record of the steps since the last one."""
        nonlocal timer, timed_steps, last
        fetch()
        elapsed = time.perf_counter() - timer
        rate = timed_steps * cfg.batch_size * items_per_example / elapsed if timed_steps else 0.0
        mean = {f"train/{k}": float(np.mean([m[k] for m in window])) for k in window[-1]}
        mean["train/lr"] = float(schedule(step - 1))
        mean[f"train/{item_name}_per_sec"] = rate
        writer.write(step, mean)
        eta = (cfg.num_steps - step) * elapsed / max(timed_steps, 1)
        log(progress_line(step, cfg.num_steps, {k: mean[k] for k in ("train/loss", "train/lr")},
                          items_per_sec=rate, item_name=item_name, eta_seconds=eta))
        window.clear()
        last = mean
        timer, timed_steps = time.perf_counter(), 0

    try:
        if start == cfg.num_steps and not _final_eval_done(workdir, evaluators, start):
            log(f"step {start} reached; running the final evaluation that did not complete")
            last.update(evaluate(state, start, final=True))
        with _StopOnSignal() as stop:
            for step in range(start + 1, cfg.num_steps + 1):  # Updates done after this one.
                profiler.before(step)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch = strategy.place_batch(next(train_iter))
                    state, metrics = train_step(state, batch)
                pending.append((step, metrics))
                profiler.after(step, metrics)
                if len(pending) > 1:  # At most one step queued behind the running one.
                    jax.block_until_ready(pending[-2][1])
                if step == start + 1:  # Compilation: report it, keep it out of the throughput.
                    jax.block_until_ready(metrics)
                    log(f"first step (compile + run) took {time.perf_counter() - timer:.1f}s")
                    timer = time.perf_counter()
                else:
                    timed_steps += 1
                is_last = step == cfg.num_steps
                signum = stop.signum  # Read once: a signal may arrive at any moment.
                on_schedule = is_last or step % cfg.checkpoint_every == 0
                # A stop between two records writes none: its window goes into the checkpoint,
                # so that the resumed run writes the records an uninterrupted one would.
                stopped_mid_window = (signum is not None and not on_schedule
                                      and step % cfg.log_every != 0)
                if stopped_mid_window:
                    fetch()
                elif on_schedule or step % cfg.log_every == 0:
                    flush(step)
                if on_schedule or signum is not None:
                    checkpointer.save(step, strategy.host_state(state), train_iter,
                                      window=window if stopped_mid_window else None)
                scalars = evaluate(state, step, final=is_last)
                if scalars:
                    last.update(scalars)
                    timer = time.perf_counter()
                if signum is not None:
                    checkpointer.wait()
                    raise Interrupted(signum, step)
    finally:
        profiler.stop()
        checkpointer.wait()
        checkpointer.close()
        writer.close()
    return last


def _fresh_state(config: ml_collections.ConfigDict, parts: _Parts) -> TrainState:
    """A new train state, starting from `init_from`'s parameters where the config names some."""
    task, tx, strategy = parts.task, parts.tx, parts.strategy
    if parts.init_from is None:
        return strategy.init_state(lambda: create_state(task, tx, config.seed))
    init_rng = jax.random.split(jax.random.key(config.seed))[0]  # As create_state's.
    params = transfer.with_loaded(jax.device_get(jax.jit(task.init)(init_rng)), parts.init_from)
    return strategy.init_state(lambda p: create_state(task, tx, config.seed, params=p), params)


def _final_eval_done(workdir: str, evaluators: dict, step: int) -> bool:
    """Whether metrics.jsonl holds, at `step`, a metric of every end-of-run evaluator."""
    names = {name for name, e in evaluators.items() if e.due(step, final=True)}
    logged = {key.split("/")[1] for record in read_metrics(workdir) if record["step"] == step
              for key in record if key.startswith("eval/")}
    return names <= logged
