"""The generic training loop: config -> (data, task) from the registry -> steps, evals, checkpoints.

Nothing here knows which model family it trains. Resume order, in one place: the data
pipeline and task are built from the config, a fresh state is initialised, then the newest
readable checkpoint (if any) overwrites the state and the data iterator position.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxformer import config as config_lib
from jaxformer import registry
from jaxformer.train import parallel
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.metrics import MetricWriter, log, progress_line
from jaxformer.train.optimizer import make_optimizer, make_schedule
from jaxformer.train.state import TrainState, create_state


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


def _modules(config: ml_collections.ConfigDict):
    """The data and task modules the config names (and a check that its model exists)."""
    registry.lookup("models", config.model.name)
    return registry.lookup("data", config.data.name), registry.lookup("tasks", config.task.name)


def build(config: ml_collections.ConfigDict, workdir: str | None):
    """(data, task) named by the config; used by train and bench."""
    data_module, task_module = _modules(config)
    # Process 0 prepares the dataset and tokenizer first; the others then read what it wrote.
    if jax.process_index() == 0:
        data = data_module.build(config.data, workdir=workdir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("jaxformer: data prepared")
    if jax.process_index() != 0:
        data = data_module.build(config.data, workdir=workdir)
    return data, task_module.build(config, data)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes config.json; an earlier run's different config is kept beside it."""
    path = os.path.join(workdir, "config.json")
    text = config_lib.to_json(config)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
        os.replace(path, os.path.join(workdir, f"config.{int(time.time())}.json"))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains to `config.train.num_steps`, resuming from `workdir`; returns the last metrics."""
    cfg = config.train
    strategy = parallel.make_strategy(cfg.strategy)
    tx = make_optimizer(config.optim)
    schedule = make_schedule(config.optim)
    batch_size = parallel.local_batch_size(cfg.batch_size)
    if batch_size % (cfg.grad_accum_steps * jax.local_device_count()):
        raise ValueError(f"train.batch_size {cfg.batch_size} must split into "
                         f"{cfg.grad_accum_steps} micro-batches over {jax.device_count()} devices")
    if cfg.average_last > cfg.keep_checkpoints:
        raise ValueError(f"train.average_last {cfg.average_last} needs keep_checkpoints >= "
                         f"{cfg.average_last}, got {cfg.keep_checkpoints}")
    _modules(config)  # Unknown names fail here, before anything is written.
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        save_config(config, workdir)
    data, task = build(config, workdir)

    train_iter = data.train_iter(batch_size=batch_size, seed=config.seed,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    state = strategy.init_state(lambda: create_state(task, tx, config.seed))
    checkpointer = Checkpointer(workdir, keep=cfg.keep_checkpoints)
    restored = checkpointer.restore(_abstract(strategy.host_state(state)), train_iter)
    if restored is not None:
        state = strategy.place_state(restored)
    start = int(np.asarray(strategy.host_state(state).step))
    num_params = sum(x.size for x in jax.tree.leaves(strategy.host_state(state).params))
    log(f"{'resuming from step ' + str(start) if start else 'starting'}: "
        f"{num_params:,} parameters, {jax.device_count()} devices ({strategy.name}), "
        f"global batch {cfg.batch_size}")

    train_step = strategy.train_step(task, tx, cfg.grad_accum_steps)
    eval_step = strategy.eval_step(task)
    writer = MetricWriter(workdir)
    items_per_example = getattr(task, "tokens_per_example", 1)
    item_name = "tok" if hasattr(task, "tokens_per_example") else "ex"

    def averaged(state: TrainState) -> TrainState:
        """`state` with the mean parameters of the last `train.average_last` checkpoints."""
        checkpointer.wait()  # The average includes the step just saved.
        host = strategy.host_state(state)
        params, steps = checkpointer.average_params(_abstract(host), cfg.average_last)
        log(f"final evaluation of the average of the checkpoints at steps {steps}")
        return strategy.place_state(host.replace(params=params))

    pending: list[tuple[int, Any]] = []
    last: dict[str, float] = {}
    timer, timed_steps = time.perf_counter(), 0

    def flush(step: int) -> None:
        """Fetches the metrics of the steps since the last flush; stops on a non-finite loss."""
        nonlocal timer, timed_steps, last
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), metrics in zip(pending, fetched):
            if not math.isfinite(float(metrics["loss"])):
                checkpointer.wait()
                good = checkpointer.steps()
                raise NonFiniteLossError(
                    f"loss is {float(metrics['loss'])} at step {s}; stopping. Last good "
                    f"checkpoint: {'step ' + str(good[-1]) if good else 'none'} in {workdir}")
        elapsed = time.perf_counter() - timer
        rate = timed_steps * cfg.batch_size * items_per_example / elapsed if timed_steps else 0.0
        mean = {f"train/{k}": float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
        mean["train/lr"] = float(schedule(step - 1))
        mean[f"train/{item_name}_per_sec"] = rate
        writer.write(step, mean)
        eta = (cfg.num_steps - step) * elapsed / max(timed_steps, 1)
        log(progress_line(step, cfg.num_steps, {k: mean[k] for k in ("train/loss", "train/lr")},
                          items_per_sec=rate, item_name=item_name, eta_seconds=eta))
        pending.clear()
        last = mean
        timer, timed_steps = time.perf_counter(), 0

    try:
        with _StopOnSignal() as stop:
            for step in range(start + 1, cfg.num_steps + 1):  # Updates done after this one.
                batch = strategy.place_batch(next(train_iter))
                state, metrics = train_step(state, batch)
                pending.append((step, metrics))
                if step == start + 1:  # Compilation: report it, keep it out of the throughput.
                    jax.block_until_ready(metrics)
                    log(f"first step (compile + run) took {time.perf_counter() - timer:.1f}s")
                    timer = time.perf_counter()
                else:
                    timed_steps += 1
                is_last = step == cfg.num_steps
                signum = stop.signum  # Read once: a signal may arrive at any moment.
                save_now = is_last or signum is not None or step % cfg.checkpoint_every == 0
                if save_now or step % cfg.log_every == 0:
                    flush(step)
                if save_now:
                    checkpointer.save(step, strategy.host_state(state), train_iter)
                if is_last or (cfg.eval_every and step % cfg.eval_every == 0):
                    average = is_last and cfg.average_last > 1
                    scalars = run_eval(config, strategy, eval_step, data, task,
                                       averaged(state) if average else state, step=step,
                                       final=is_last)
                    writer.write(step, scalars)
                    log(" | ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
                    last.update(scalars)
                    timer = time.perf_counter()
                if signum is not None:
                    checkpointer.wait()
                    raise Interrupted(signum, step)
    finally:
        checkpointer.wait()
        checkpointer.close()
        writer.close()
    return last


def run_eval(config: ml_collections.ConfigDict, strategy: Any, eval_step: Any, data: Any,
             task: Any, state: TrainState, *, step: int, final: bool) -> dict[str, float]:
    """Eval-split metrics over `train.eval_batches` batches, plus the task's decode metrics."""
    totals: dict[str, float] = {}
    batches = data.eval_iter(batch_size=parallel.local_batch_size(config.train.batch_size),
                             num_batches=config.train.eval_batches,
                             process_index=jax.process_index(), process_count=jax.process_count())
    for batch in batches:
        metrics = jax.device_get(eval_step(state.params, strategy.place_batch(batch)))
        metrics.setdefault("weight", 1.0)  # Per-batch means count once each.
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    weight = totals.pop("weight", 0.0)
    scalars = {f"eval/{k}": v / max(weight, 1e-9) for k, v in totals.items()}
    if hasattr(task, "decode_metrics"):  # Metrics of generated outputs (e.g. BLEU).
        scalars.update(task.decode_metrics(strategy.host_state(state).params, data, step=step,
                                           final=final))
    return scalars


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, average_last: int = 0
             ) -> dict[str, float]:
    """Evaluates the newest checkpoint in `workdir` (or the mean of the newest
    `average_last`) as at the end of training, and appends the metrics to metrics.jsonl."""
    strategy = parallel.make_strategy(config.train.strategy)
    tx = make_optimizer(config.optim)
    _modules(config)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"no checkpoints in {workdir}: train first")
    data, task = build(config, workdir)
    state = strategy.init_state(lambda: create_state(task, tx, config.seed))
    abstract = _abstract(strategy.host_state(state))
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints, async_save=False)
    try:
        restored = checkpointer.restore(abstract)
        if restored is None:
            raise FileNotFoundError(f"no checkpoints in {workdir}: train first")
        if average_last > 1:
            params, steps = checkpointer.average_params(abstract, average_last)
            log(f"evaluating the average of the checkpoints at steps {steps}")
            restored = restored.replace(params=params)
    finally:
        checkpointer.close()
    state = strategy.place_state(restored)
    step = int(np.asarray(restored.step))
    scalars = run_eval(config, strategy, strategy.eval_step(task), data, task, state, step=step,
                       final=True)
    writer = MetricWriter(workdir)
    writer.write(step, scalars)
    writer.close()
    log(" | ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    return scalars


def _abstract(state: TrainState) -> TrainState:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
