"""One loader for trained workdirs, used by every command that reads one.

`load_run(workdir)` gives the run's config, its data (the tokenizer from `DIR/assets`), its
task (and model) and the parameters of the newest readable checkpoint, of a given step, or
the mean of the last K. Commands that need no data set (a BERT run's `classify` and `tag`)
pass `vocabulary_spec` as the data instead, so that an imported checkpoint works without it.
A workdir that `jaxformer average` wrote records which checkpoints its own one is the mean of
(`AVERAGE_RECORD`), and its run says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from jaxformer import registry
from jaxformer.config import read_workdir_config
from jaxformer.errors import UserError, as_user_error
from jaxformer.registry import build_data_and_task
from jaxformer.tasks.base import Task
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.state import abstract_state

log = logging.getLogger(__name__)

# Written by `jaxformer average`: {"step": its checkpoint's step, "steps": the steps averaged,
# "workdir": the run they came from}.
AVERAGE_RECORD = "averaged.json"


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run, loaded."""

    workdir: str
    config: ml_collections.ConfigDict
    data: Any
    task: Task
    params: Any
    step: int
    averaged_steps: tuple[int, ...] = ()
    averaged_from: str = ""  # The workdir of `averaged_steps`, when not this one.

    def describe(self) -> str:
        if self.averaged_steps:
            source = f" of {self.averaged_from}" if self.averaged_from else ""
            return f"the mean of the checkpoints at steps {list(self.averaged_steps)}{source}"
        return f"the checkpoint at step {self.step}"


def vocabulary_spec(config: ml_collections.ConfigDict, workdir: str) -> Any:
    """What inference reads of a BERT run's data, without the data set: the spec of
    `config.data` (classes, sizes) with the workdir's WordPiece vocabulary."""
    from jaxformer.data import wordpiece

    path = wordpiece.saved_vocabulary(workdir)
    if not path.exists():
        raise UserError(f"{workdir} has no vocabulary ({path})")
    spec = registry.lookup("data", config.data.name).spec(config.data)
    return dataclasses.replace(spec, tokenizer=wordpiece.WordPiece.load(path))


def load_run(workdir: str, *, step: int | None = None, average_last: int = 0,
             sharding: jax.sharding.Sharding | Callable[[tuple[int, ...]], Any] | None = None,
             data: Callable[[ml_collections.ConfigDict, str], Any] | None = None) -> Run:
    """The run in `workdir`, its params placed with `sharding` (default: the first device),
    one for all leaves or a function of a leaf's shape (`parallel.Sharded.leaf_sharding`).
    `data(config, workdir)` gives the data the task is built with (default: the run's data,
    built as in training)."""
    if average_last < 0:
        raise UserError(f"--average_last must be >= 0, got {average_last}")
    if average_last > 1 and step is not None:
        raise UserError("give --step or --average_last, not both")
    config = read_workdir_config(workdir)
    with as_user_error(workdir):
        if data is None:
            data, task = build_data_and_task(config, workdir)
        else:
            data = data(config, workdir)
            task = registry.lookup("tasks", config.task.name).build(config, data)
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = abstract_state(config, task, sharding)
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints, async_save=False,
                                set_aside_corrupt=False)
    try:
        if average_last > 1:
            params, steps = checkpointer.average_params(abstract, average_last)
            if len(steps) < average_last:
                log.warning("--average_last=%d: only %d readable checkpoints to average",
                            average_last, len(steps))
            return Run(workdir, config, data, task, params, steps[-1], tuple(steps))
        state = checkpointer.restore(abstract, step=step)
    finally:
        checkpointer.close()
    if state is None:
        raise UserError(f"no checkpoint in {workdir}/checkpoints: train first")
    step = int(np.asarray(state.step))
    record = read_average_record(workdir)
    if record and record["step"] == step:
        return Run(workdir, config, data, task, state.params, step, tuple(record["steps"]),
                   record["workdir"])
    return Run(workdir, config, data, task, state.params, step)


def write_average_record(workdir: str, run: Run) -> None:
    """Records in `workdir` that its checkpoint at `run.step` holds `run`'s mean params."""
    record = {"step": run.step, "steps": list(run.averaged_steps),
              "workdir": os.path.abspath(run.workdir)}
    with open(os.path.join(workdir, AVERAGE_RECORD), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def read_average_record(workdir: str) -> dict | None:
    """The record `write_average_record` left in `workdir`, or None (none, or unreadable)."""
    path = os.path.join(workdir, AVERAGE_RECORD)
    try:
        with open(path) as f:
            record = json.load(f)
        steps = record.get("steps")
        if (isinstance(record.get("step"), int) and isinstance(record.get("workdir"), str)
                and isinstance(steps, list) and all(isinstance(s, int) for s in steps)):
            return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        pass
    log.warning("ignoring unreadable %s", path)
    return None
