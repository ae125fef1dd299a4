"""Cross-entropy variants and top-k correctness, shared by the classification-like tasks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                           label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy `[batch]` against one-hot targets smoothed towards uniform:
    `(1 - label_smoothing) * onehot + label_smoothing / num_classes` (Szegedy et al. 2016)."""
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def label_smoothed_nll(logits: jax.Array, targets: jax.Array, smoothing: float
                       ) -> tuple[jax.Array, jax.Array]:
    """Per-token (smoothed loss, plain negative log-likelihood), both `[...]`.

    The smoothed target puts `1 - smoothing` on the true token and spreads `smoothing` over the
    other `vocab - 1` tokens (the Transformer paper's convention). Its entropy is subtracted,
    so the loss is the KL divergence to the smoothed target: 0 for a perfect fit.
    """
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    if smoothing == 0.0:
        return nll, nll
    confidence, low = 1.0 - smoothing, smoothing / (vocab - 1)
    entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low))
    # Cross-entropy with the smoothed target: the true token's share plus the others'.
    cross_entropy = (confidence - low) * nll - low * log_probs.sum(axis=-1)
    return cross_entropy - entropy, nll


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Whether each label is among the `k` highest logits, float32 `[...]`.

    Ties count against the label: at most `k - 1` other classes may score as high as it
    (so constant logits, as from a zero-initialised head, are never correct).
    """
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)  # [..., 1]
    rivals = (logits >= label_logit).sum(axis=-1) - 1  # Other classes scoring at least as high.
    return (rivals < k).astype(jnp.float32)
