"""`type="classification"`: top-k accuracy (and macro-F1) of the task's logits over an eval
split.

Options: `split`, `num_batches` (-1: all), `top_k` (default (1, 5)), `label_key` (default
"label"), `macro_f1` (default false). Rows labelled -1 are padding and are not counted.
Reports `top1`, `top5`, ... and, with `macro_f1`, `macro_f1`: the mean over classes of each
class's F1 (`2 tp / (2 tp + fp + fn)`, the top-1 prediction against the label), from the
confusion counts of the whole split (summed over batches and devices before dividing).
Classes neither in the labels nor predicted are left out of the mean, as scikit-learn's
`f1_score(average="macro")` does.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

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
        sums = {**correct, "count": real.sum()}
        if self.config.get("macro_f1", False):
            sums["confusion"] = confusion_counts(logits, labels)
        return sums

    def metrics(self, totals) -> dict[str, float]:
        confusion = totals.pop("confusion", None)
        count = max(totals.pop("count"), 1e-9)
        metrics = {k: float(v / count) for k, v in totals.items()}
        if confusion is not None:
            metrics["macro_f1"] = macro_f1(np.asarray(confusion))
        return metrics


def confusion_counts(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """float32 `[classes, classes]`: how many rows of each label (rows) were predicted as each
    class (columns, the argmax of `logits`); rows labelled -1 add nothing."""
    classes = logits.shape[-1]
    predicted = jnp.argmax(logits, axis=-1).reshape(-1)
    labels = labels.reshape(-1)
    real = (labels >= 0).astype(jnp.float32)
    return jnp.zeros((classes, classes), jnp.float32).at[jnp.maximum(labels, 0), predicted].add(
        real)


def macro_f1(confusion: np.ndarray) -> float:
    """The mean F1 of the classes that occur as a label or a prediction in `confusion`."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    denominators = confusion.sum(0) + confusion.sum(1)  # 2 tp + fp + fn
    present = denominators > 0
    if not present.any():
        return 0.0
    return float(np.mean(2 * tp[present] / denominators[present]))


def build(name: str, config: ml_collections.ConfigDict,
          context: Context) -> ClassificationEvaluator:
    return ClassificationEvaluator(name, config, context)
