"""`type="loss"`: the task's loss and metrics over an eval split, and optionally perplexity.

Options: `split` (default: the data's first eval split), `num_batches` (-1: the whole split),
`perplexity_of` (a metric whose exp is reported as `perplexity`, e.g. "loss" for an LM).
"""

from __future__ import annotations

import math

import jax
import ml_collections

from jaxformer.evaluators.base import BatchEvaluator, Context


class LossEvaluator(BatchEvaluator):
    def sums(self, params, batch):
        loss, metrics = self.context.task.loss(params, batch, jax.random.key(0), train=False,
                                               axis_name=self.context.strategy.axis_name)
        return {"loss": loss, **metrics}

    def metrics(self, totals) -> dict[str, float]:
        names = ["loss", *sorted(k for k in totals if k != "loss")]
        metrics = {k: float(totals[k].total / max(totals[k].count, 1e-9)) for k in names}
        of = self.config.get("perplexity_of", "")
        if of:
            metrics["perplexity"] = math.exp(min(metrics[of], 700.0))
        return metrics


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> LossEvaluator:
    return LossEvaluator(name, config, context)
