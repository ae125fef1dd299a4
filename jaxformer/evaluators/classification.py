"""`type="classification"`: top-k accuracy of the task's logits over an eval split.

Options: `split`, `num_batches` (-1: all), `top_k` (default (1, 5)), `label_key` (default
"label"). Rows labelled -1 are padding and are not counted. Reports `top1`, `top5`, ...
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jaxformer.evaluators.base import BatchEvaluator, Context
from jaxformer.losses.cross_entropy import top_k_correct


class ClassificationEvaluator(BatchEvaluator):
    def sums(self, params, batch):
        logits = self.context.task.predict(params, batch)
        labels = batch[self.config.get("label_key", "label")]
        real = (labels >= 0).astype(jnp.float32)
        safe = jnp.maximum(labels, 0)
        correct = {f"top{k}": (top_k_correct(logits, safe, min(k, logits.shape[-1])) * real).sum()
                   for k in self.config.get("top_k", (1, 5))}
        return {**correct, "count": real.sum()}

    def metrics(self, totals) -> dict[str, float]:
        count = max(totals.pop("count"), 1e-9)
        return {k: float(v / count) for k, v in totals.items()}


def build(name: str, config: ml_collections.ConfigDict,
          context: Context) -> ClassificationEvaluator:
    return ClassificationEvaluator(name, config, context)
