"""Named evaluators from `config.evals`, in the manner of big_vision's.

    config.evals.val = dict(type="loss", split="validation", every_steps=250, num_batches=20)

Each entry has a `type` (a module in `jaxformer/evaluators/` defining `build(name, config,
context)`), how often it runs (`every_steps`, 0 for only at the end; `at_end`) and its own
options. An evaluator returns `{metric: value}`; the trainer and `jaxformer evaluate` write
them as `eval/<name>/<metric>`. A new family registers its evaluators by adding modules here;
the trainer does not change.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxformer import registry
from jaxformer.config import runs_at_end
from jaxformer.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class Context:
    """What evaluators share: the task, the data, the devices and the per-process batch."""

    task: Task
    data: Any
    strategy: Any
    batch_size: int  # Rows per process of an eval batch.

    def batches(self, split: str | None, num_batches: int) -> Iterator[dict]:
        """This process's rows of `num_batches` eval batches of `split` (-1: all of it)."""
        return self.data.eval_iter(
            batch_size=self.batch_size, num_batches=num_batches, split=split or None,
            process_index=jax.process_index(), process_count=jax.process_count())


class Evaluator(abc.ABC):
    """One named evaluation; subclasses implement `run`."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        self.name = name
        self.config = config
        self.context = context
        self.every_steps = config.get("every_steps", 0)
        self.at_end = runs_at_end(config)
        if self.every_steps < 0:
            raise ValueError(f"evals.{name}.every_steps must be >= 0, got {self.every_steps}")

    def due(self, step: int, *, final: bool) -> bool:
        return (final and self.at_end) or bool(self.every_steps and step % self.every_steps == 0)

    @abc.abstractmethod
    def run(self, params: Any) -> dict[str, float]:
        """The metrics of `params` (placed as the strategy places train-state params)."""


class BatchEvaluator(Evaluator):
    """An evaluator that adds up per-batch sums over an eval split (options `split`,
    `num_batches`: -1 for all of it) and turns the totals into metrics."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        self._sums = context.strategy.reduce_fn(self.sums)

    @abc.abstractmethod
    def sums(self, params: Any, batch: dict) -> Any:
        """A pytree of sums over `batch` (traced under jit; padding rows add nothing)."""

    @abc.abstractmethod
    def metrics(self, totals: Any) -> dict[str, float]:
        """The metrics of the sums added up over all batches."""

    def run(self, params: Any) -> dict[str, float]:
        cfg = self.config
        batches = self.context.batches(cfg.get("split", ""), cfg.get("num_batches", -1))
        totals = sum_over_batches(self._sums, params, batches, self.context.strategy)
        if totals is None:
            raise ValueError(f"evals.{self.name}: the split has no eval batches")
        return self.metrics(totals)


def build_evaluators(config: ml_collections.ConfigDict, context: Context
                     ) -> dict[str, Evaluator]:
    """The evaluators of `config.evals`, by name, in the config's order."""
    evaluators = {}
    for name, entry in config.get("evals", {}).items():
        if "type" not in entry:
            raise ValueError(f"evals.{name} has no type; available: "
                             f"{', '.join(registry.available('evaluators'))}")
        module = registry.lookup("evaluators", entry.type)
        evaluators[name] = module.build(name, entry, context)
    return evaluators


def sum_over_batches(fn: Any, params: Any, batches: Iterator[dict], strategy: Any) -> Any:
    """The sum over `batches` of `fn(params, batch)`, a pytree of sums over the global batch
    (added over devices by the strategy), as numpy float64."""
    total = None
    for batch in batches:
        part = jax.tree.map(lambda x: np.asarray(x, np.float64),
                            jax.device_get(fn(params, strategy.place_batch(batch))))
        total = part if total is None else jax.tree.map(np.add, total, part)
    return total
