"""`type="classification"`: top-k accuracy of the task's logits over an eval split.

Options: `split`, `num_batches` (-1: all), `top_k` (default (1, 5)), `label_key` (default
"label"). Rows labelled -1 are padding and are not counted. Reports `top1`, `top5`, ...
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jaxformer.evaluators.base import Context, Evaluator, sum_over_batches
from jaxformer.losses.cross_entropy import top_k_correct


class ClassificationEvaluator(Evaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        task = context.task
        top_k = tuple(config.get("top_k", (1, 5)))
        label_key = config.get("label_key", "label")

        def sums(params, batch):
            logits = task.predict(params, batch)
            labels = batch[label_key]
            real = (labels >= 0).astype(jnp.float32)
            safe = jnp.maximum(labels, 0)
            counts = {f"top{k}": (top_k_correct(logits, safe, min(k, logits.shape[-1])) * real
                                  ).sum() for k in top_k}
            return {**counts, "count": real.sum()}

        self._sums = context.strategy.reduce_fn(sums)

    def run(self, params) -> dict[str, float]:
        cfg = self.config
        batches = self.context.batches(cfg.get("split", ""), cfg.get("num_batches", -1))
        totals = sum_over_batches(self._sums, params, batches, self.context.strategy)
        if totals is None:
            raise ValueError(f"evals.{self.name}: no eval batches")
        count = totals.pop("count")
        return {k: float(v / max(count, 1e-9)) for k, v in totals.items()}


def build(name: str, config: ml_collections.ConfigDict,
          context: Context) -> ClassificationEvaluator:
    return ClassificationEvaluator(name, config, context)
