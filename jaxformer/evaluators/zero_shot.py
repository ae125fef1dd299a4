"""`type="zero_shot"`: classification of an eval split's images by their similarity to a text
embedding of each class name, with no training on those classes (CLIP's zero-shot transfer).

Options: `split` (a split with class names and labels), `num_batches` (-1: all), `top_k`
(default (1, 5); k is capped at the number of classes), `templates`: "ensemble" (default:
every prompt template of the split, their normalised embeddings averaged per class), "single"
(the split's first template only) or a tuple of templates with "{}" for the class name.
Reports `top1`, `top5`, ...; rows labelled -1 are padding and are not counted.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jaxformer.evaluators import embeddings
from jaxformer.evaluators.base import BatchEvaluator, Context
from jaxformer.losses.cross_entropy import top_k_correct


class ZeroShotEvaluator(BatchEvaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        split = config.get("split", "")
        self.class_names = tuple(context.data.class_names(split or None))
        self.templates = self._templates(context.data.templates(split or None))

    def _templates(self, split_templates) -> tuple[str, ...]:
        choice = self.config.get("templates", "ensemble")
        if choice == "ensemble":
            return tuple(split_templates)
        if choice == "single":
            return tuple(split_templates[:1])
        if isinstance(choice, str) or not all("{}" in t for t in choice):
            raise ValueError(f"evals.{self.name}.templates must be 'ensemble', 'single' or "
                             f"templates with '{{}}', got {choice!r}")
        return tuple(choice)

    def run(self, params):
        classes = embeddings.class_embeddings(self.context, embeddings.host_params(
            self.context, params), self.class_names, self.templates)
        return super().run((params, self.context.strategy.place_state(classes)))

    def sums(self, inputs, batch):
        params, classes = inputs
        images = self.context.task.encode_images(params, batch["image"])  # [batch, D]
        logits = images @ classes.T  # [batch, classes]
        labels = batch["label"]
        real = (labels >= 0).astype(jnp.float32)
        safe = jnp.maximum(labels, 0)
        correct = {f"top{k}": (top_k_correct(logits, safe, min(k, logits.shape[-1])) * real
                               ).sum() for k in self.config.get("top_k", (1, 5))}
        return {**correct, "count": real.sum()}

    def metrics(self, totals) -> dict[str, float]:
        count = max(totals.pop("count"), 1e-9)
        return {k: float(v / count) for k, v in totals.items()}


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> ZeroShotEvaluator:
    return ZeroShotEvaluator(name, config, context)
