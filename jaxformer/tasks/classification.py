"""Image classification: softmax cross-entropy (optionally label-smoothed).

Batches are `{"image": float32[batch, H, W, C], "label": int32[batch]}`. Evaluation batches
may be padded to a fixed size with rows whose label is -1; those rows carry no weight.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer import registry
from jaxformer.models.vit import ViT, resize_position_embedding
from jaxformer.tasks.base import Task, classification_loss, compute_dtype


class ClassificationTask(Task):
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

    def model_inputs(self, batch):
        return (batch["image"],)

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        logits = self.model.apply({"params": params}, batch["image"], train=train,
                                  rngs={"dropout": rng})
        return classification_loss(logits, batch["label"], self.num_classes,
                                   self.label_smoothing)

    def flops_per_example(self, params) -> float | None:
        """Training FLOPs of one image through a ViT: 3x the forward matmul FLOPs (forward +
        backward); None for other models.

        Forward, per image with T tokens of width d: the patch embedding `2 P p^2 C d` for P
        patches; per layer the projections `8 T d^2`, the attention scores and weighted values
        `4 T^2 d`, the MLP `4 T d m`; the pre-logits and head layers.
        """
        del params  # The count follows from the architecture.
        model = self.model
        if not isinstance(model, ViT):
            return None  # Known for the ViT only.
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

    def resize_param(self, path: str, value: Any, shape: tuple[int, ...]) -> Any:
        """Position embeddings are resampled to a new patch grid (fine-tuning at another
        image size, as in the ViT paper); a colour patch embedding is summed over its input
        channels for grey images (the same outputs as the grey image repeated in each
        channel)."""
        source, shape = tuple(value.shape), tuple(shape)
        grey_from_colour = (path.endswith("embedding/kernel") and len(shape) == 4
                            and source[2] == 3 and shape[2] == 1
                            and source[:2] + source[3:] == shape[:2] + shape[3:])
        if grey_from_colour:
            return value.sum(axis=2, keepdims=True)
        if path.endswith("pos_embedding"):
            prefix = 1 if self.model.pool_type == "tok" else 0
            height, width = self.image_shape[:2]
            grid = (height // self.model.patch_size, width // self.model.patch_size)
            return resize_position_embedding(value, grid, num_prefix_tokens=prefix)
        return super().resize_param(path, value, shape)


def build(config: ml_collections.ConfigDict, data: Any) -> ClassificationTask:
    return ClassificationTask(config, data)
