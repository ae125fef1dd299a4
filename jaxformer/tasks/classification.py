"""Image classification: softmax cross-entropy (optionally label-smoothed), top-1 / top-5.

Batches are `{"image": float32[batch, H, W, C], "label": int32[batch]}`. Evaluation batches
may be padded to a fixed size with rows whose label is -1: `eval_metrics` sums over the real
rows only and reports their number as `weight`; the trainer adds both up over devices and
batches and divides, so the metrics are exact means over the real examples.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxformer import registry
from jaxformer.tasks.lm import compute_dtype


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                           label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy `[batch]` against one-hot targets smoothed towards uniform:
    `(1 - label_smoothing) * onehot + label_smoothing / num_classes` (Szegedy et al. 2016)."""
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Whether each label is among the `k` highest logits, float32 `[batch]`.

    Ties count against the label: at most `k - 1` other classes may score as high as it
    (so constant logits, as from a zero-initialised head, are never correct).
    """
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)  # [batch, 1]
    rivals = (logits >= label_logit).sum(axis=-1) - 1  # Other classes scoring at least as high.
    return (rivals < k).astype(jnp.float32)


class ClassificationTask:
    """Supervised classification of images into `data.num_classes` classes."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.num_classes = data.num_classes
        self.image_shape = tuple(data.image_shape)
        self.class_names = tuple(data.class_names)
        self.label_smoothing = config.task.get("label_smoothing", 0.0)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got "
                             f"{self.label_smoothing}")
        self.model = registry.lookup("models", config.model.name).build(
            config.model, num_classes=self.num_classes, image_shape=self.image_shape,
            dtype=compute_dtype(config.train.compute_dtype), remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        return {"image": jnp.zeros((batch_size, *self.image_shape), jnp.float32),
                "label": jnp.zeros((batch_size,), jnp.int32)}

    def init(self, rng: jax.Array) -> Any:
        return self.model.init(rng, self.dummy_batch(1)["image"])["params"]

    def loss(self, params, batch, rng, *, train: bool):
        logits = self.model.apply({"params": params}, batch["image"], train=train,
                                  rngs={"dropout": rng})
        loss = smoothed_cross_entropy(logits, batch["label"], self.num_classes,
                                      self.label_smoothing).mean()
        accuracy = (logits.argmax(-1) == batch["label"]).mean()
        return loss, {"accuracy": accuracy}

    def eval_metrics(self, params, batch) -> dict[str, jax.Array]:
        """Sums over the rows with a label >= 0, and their number as `weight` (the
        trainer's convention for weighted metrics, see `train.state.make_eval_step`)."""
        logits = self.model.apply({"params": params}, batch["image"], train=False)
        labels = batch["label"]
        real = (labels >= 0).astype(jnp.float32)
        safe_labels = jnp.maximum(labels, 0)
        per_example = {
            "loss": smoothed_cross_entropy(logits, safe_labels, self.num_classes,
                                           self.label_smoothing),
            "accuracy": top_k_correct(logits, safe_labels, 1),
            "top5_accuracy": top_k_correct(logits, safe_labels, min(5, self.num_classes)),
        }
        return {**{k: (v * real).sum() for k, v in per_example.items()}, "weight": real.sum()}

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one image: 3x the forward matmul FLOPs (forward + backward).

        Forward, per image with T tokens of width d: the patch embedding `2 P p^2 C d` for P
        patches; per layer the projections `8 T d^2`, the attention scores and weighted values
        `4 T^2 d`, the MLP `4 T d m`; the pre-logits and head layers.
        """
        del params  # The count follows from the architecture.
        model = self.model
        height, width, channels = self.image_shape
        patches = (height // model.patch_size) * (width // model.patch_size)
        tokens = patches + (1 if model.pool_type == "tok" else 0)
        d = model.d_model
        forward = 2 * patches * model.patch_size**2 * channels * d
        forward += model.num_layers * (8 * tokens * d * d + 4 * tokens * tokens * d
                                       + 4 * tokens * d * model.mlp_dim)
        head_in = d
        if model.representation_size:
            forward += 2 * d * model.representation_size
            head_in = model.representation_size
        forward += 2 * head_in * model.num_classes
        return float(3 * forward)


def build(config: ml_collections.ConfigDict, data: Any) -> ClassificationTask:
    return ClassificationTask(config, data)
