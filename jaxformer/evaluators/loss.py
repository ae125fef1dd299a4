"""`type="loss"`: the task's loss and metrics over an eval split, and optionally perplexity.

Options: `split` (default: the data's first eval split), `num_batches` (-1: the whole split),
`perplexity_of` (a metric whose exp is reported as `perplexity`, e.g. "loss" for an LM).
"""

from __future__ import annotations

import math

import jax
import ml_collections

from jaxformer.evaluators.base import Context, Evaluator, sum_over_batches


class LossEvaluator(Evaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        task, axis_name = context.task, context.strategy.axis_name

        def sums(params, batch):
            loss, metrics = task.loss(params, batch, jax.random.key(0), train=False,
                                      axis_name=axis_name)
            return {"loss": loss, **metrics}

        self._sums = context.strategy.reduce_fn(sums)

    def run(self, params) -> dict[str, float]:
        cfg = self.config
        batches = self.context.batches(cfg.get("split", ""), cfg.get("num_batches", -1))
        totals = sum_over_batches(self._sums, params, batches, self.context.strategy)
        if totals is None:
            raise ValueError(f"evals.{self.name}: no eval batches")
        loss = totals.pop("loss")
        metrics = {"loss": float(loss.total / max(loss.count, 1e-9))}
        metrics.update({k: float(v.total / max(v.count, 1e-9)) for k, v in totals.items()})
        of = cfg.get("perplexity_of", "")
        if of:
            metrics["perplexity"] = math.exp(min(metrics[of], 700.0))
        return metrics


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> LossEvaluator:
    return LossEvaluator(name, config, context)
