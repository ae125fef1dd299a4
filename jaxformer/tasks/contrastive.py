"""Contrastive image-text pretraining (CLIP; Radford et al., 2021), or SigLIP's pairwise
sigmoid loss (Zhai et al., 2023) with `task.loss="sigmoid"`.

Batches are `{"image": float32[batch, H, W, C], "text": int32[batch, context]}`, the i-th
caption describing the i-th image; evaluation batches may carry `label` (-1 marks padding
rows, which are neither scored nor used as negatives). The negatives of each pair are every
other pair of the global batch: under `pmap` the embeddings are gathered over devices inside
the step (`losses.contrastive`), so the loss does not depend on how the batch is split. For the
same reason gradient accumulation is refused: micro-batches would see fewer negatives.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer import registry
from jaxformer.losses.contrastive import sigmoid_contrastive, softmax_contrastive
from jaxformer.tasks.base import Average, Task, compute_dtype

LOSSES = ("softmax", "sigmoid")


class ContrastiveTask(Task):
    """Image and text towers trained to embed matching pairs close together."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.loss_type = config.task.get("loss", "softmax")
        if self.loss_type not in LOSSES:
            raise ValueError(f"unknown task.loss {self.loss_type!r}; available: "
                             f"{', '.join(LOSSES)}")
        if config.model.get("loss", self.loss_type) != self.loss_type:
            raise ValueError(f"model.loss {config.model.loss!r} differs from task.loss "
                             f"{self.loss_type!r}")
        if config.train.get("grad_accum_steps", 1) != 1:
            raise ValueError("contrastive losses take their negatives from the whole batch: "
                             "train.grad_accum_steps must be 1")
        self.image_shape = tuple(data.image_shape)
        self.context_length = data.context_length
        self.eot_id = data.eot_id
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=data.vocab_size, context_length=data.context_length,
            eot_id=data.eot_id, image_shape=self.image_shape,
            dtype=compute_dtype(config.train.compute_dtype), remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        text = jnp.zeros((batch_size, self.context_length), jnp.int32)
        return {"image": jnp.zeros((batch_size, *self.image_shape), jnp.float32),
                "text": text.at[:, 1].set(self.eot_id)}

    def model_inputs(self, batch):
        return batch["image"], batch["text"]

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        outputs = self.model.apply({"params": params}, batch["image"], batch["text"],
                                   train=train, rngs={"dropout": rng})
        images, texts, scale = outputs[:3]
        weights = (batch["label"] >= 0) if "label" in batch else None
        if self.loss_type == "sigmoid":
            loss, metrics = sigmoid_contrastive(images, texts, scale, outputs[3], axis_name,
                                                weights=weights)
        else:
            loss, metrics = softmax_contrastive(images, texts, scale, axis_name,
                                                weights=weights)
        # The temperature, logged as an average with the loss's count (it averages like it).
        scale = Average(jnp.asarray(scale, jnp.float32) * loss.count, loss.count)
        return loss, dict(metrics, logit_scale=scale)

    def encode_images(self, params, images: jax.Array) -> jax.Array:
        """L2-normalised image embeddings `[batch, embed_dim]` (evaluation mode)."""
        return self.model.apply({"params": params}, images, method="encode_image")

    def encode_texts(self, params, tokens: jax.Array) -> jax.Array:
        """L2-normalised text embeddings `[batch, embed_dim]` of token rows (evaluation
        mode)."""
        return self.model.apply({"params": params}, tokens, method="encode_text")

    def logit_scale(self, params) -> jax.Array:
        """The learned inverse temperature (at most 100)."""
        return self.model.apply({"params": params}, method="logit_scale")

    def predict(self, params, batch):
        """Image-to-text logits of the batch's pairs, `[batch, batch]`."""
        images, texts, scale = self.model.apply({"params": params}, *self.model_inputs(batch),
                                                train=False)[:3]
        return scale * images @ texts.T

    def items_per_example(self) -> tuple[int, str]:
        return 1, "pairs"


def build(config: ml_collections.ConfigDict, data: Any) -> ContrastiveTask:
    return ContrastiveTask(config, data)
