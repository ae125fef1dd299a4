"""Image-text contrastive losses over the global batch: CLIP's symmetric softmax (InfoNCE;
Radford et al., 2021) and SigLIP's pairwise sigmoid (Zhai et al., 2023).

Each device scores its own rows against the embeddings of the whole global batch
(`all_gather` over `axis_name`; the batch itself when `axis_name` is None), so every pair has
all the others as negatives however the batch is split. The loss is returned as an `Average`
whose total is the sum over this device's rows: added over devices and divided by the global
count, it is the mean over the global batch, with the same value and gradient as on one
device. Optional `weights` (`[rows]`, 0 for padding) leave padding rows out both as rows and
as negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxformer.tasks.base import Average, Metrics, all_gather, shard_offset

# Logit of an excluded (padding) column: exp() of it is 0 next to any real logit (|logit| is
# at most logit_scale), yet it stays finite so that no NaN reaches the gradients.
_MASKED = -1e9


def _gather(image_emb: jax.Array, text_emb: jax.Array, weights: jax.Array | None,
            axis_name: str | None) -> tuple[jax.Array, ...]:
    """float32 local embeddings, all images and texts, local and all validity, and the global
    index of each local row."""
    images, texts = image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
    rows = images.shape[0]
    valid = jnp.ones((rows,), bool) if weights is None else jnp.asarray(weights) > 0
    labels = shard_offset(rows, axis_name) + jnp.arange(rows)
    return (images, texts, all_gather(images, axis_name), all_gather(texts, axis_name), valid,
            all_gather(valid, axis_name), labels)


def _mask_columns(logits: jax.Array, all_valid: jax.Array) -> jax.Array:
    """`logits` `[rows, global rows]` with the padding columns excluded."""
    return jnp.where(all_valid[None, :], logits, _MASKED)


def _accuracies(image_logits: jax.Array, text_logits: jax.Array, labels: jax.Array,
                valid: jax.Array) -> Metrics:
    """Top-1 retrieval accuracy within the global batch, both ways."""
    return {"image_to_text_accuracy": Average.of(image_logits.argmax(-1) == labels, valid),
            "text_to_image_accuracy": Average.of(text_logits.argmax(-1) == labels, valid)}


def softmax_contrastive(
    image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, axis_name: str | None,
    *, weights: jax.Array | None = None,
) -> tuple[Average, Metrics]:
    """CLIP's loss: per row, the mean of the image->text and text->image cross-entropies of
    `logit_scale * x . y` against all texts (images) of the global batch, the pair's own the
    label.

    Args:
      image_emb, text_emb: this device's `[rows, dim]` embeddings, row i a matching pair.
      logit_scale: the temperature's inverse, a scalar.
      axis_name: the device axis under `pmap`; None when the batch is global.
      weights: optional `[rows]`; rows with weight 0 are neither scored nor negatives.

    Returns (loss, metrics): Averages over the rows (image_to_text_accuracy,
    text_to_image_accuracy).
    """
    images, texts, all_images, all_texts, valid, all_valid, labels = _gather(
        image_emb, text_emb, weights, axis_name)

    image_logits = _mask_columns(logit_scale * images @ all_texts.T, all_valid)
    text_logits = _mask_columns(logit_scale * texts @ all_images.T, all_valid)
    per_row = (optax.softmax_cross_entropy_with_integer_labels(image_logits, labels)
               + optax.softmax_cross_entropy_with_integer_labels(text_logits, labels)) / 2
    per_row = jnp.where(valid, per_row, 0.0)
    return Average.of(per_row, valid), _accuracies(image_logits, text_logits, labels, valid)


def sigmoid_contrastive(
    image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array,
    axis_name: str | None, *, weights: jax.Array | None = None,
) -> tuple[Average, Metrics]:
    """SigLIP's loss: each pair (image i, text j) of the global batch is a binary
    classification, `-log_sigmoid(z_ij * (logit_scale * x_i . y_j + logit_bias))` with
    z = 1 for matching pairs and -1 otherwise. A row's loss is the sum over all texts, so the
    mean over rows is the paper's loss (the sum over pairs divided by the batch size).

    Arguments as `softmax_contrastive`, plus the learned scalar `logit_bias`. Returns (loss,
    metrics) as `softmax_contrastive`.
    """
    images, texts, all_images, all_texts, valid, all_valid, labels = _gather(
        image_emb, text_emb, weights, axis_name)
    image_logits = logit_scale * images @ all_texts.T + logit_bias  # [rows, global rows]
    signs = jnp.where(labels[:, None] == jnp.arange(all_texts.shape[0])[None, :], 1.0, -1.0)
    pair_loss = -jax.nn.log_sigmoid(signs * image_logits)
    per_row = jnp.where(all_valid[None, :], pair_loss, 0.0).sum(axis=-1)
    per_row = jnp.where(valid, per_row, 0.0)
    text_logits = logit_scale * texts @ all_images.T  # For the accuracy only.
    return Average.of(per_row, valid), _accuracies(
        _mask_columns(image_logits, all_valid), _mask_columns(text_logits, all_valid), labels,
        valid)
