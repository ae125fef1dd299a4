"""Cross-entropy variants and top-k correctness against hand-computed values."""

import jax.numpy as jnp
import numpy as np

from jaxformer.losses.cross_entropy import smoothed_cross_entropy, top_k_correct


def test_cross_entropy_with_and_without_label_smoothing():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = jnp.array([0, 1])
    exp = np.exp(np.asarray(logits, np.float64))
    log_probs = np.log(exp / exp.sum(1, keepdims=True))
    plain = smoothed_cross_entropy(logits, labels, 3)
    np.testing.assert_allclose(plain, [-log_probs[0, 0], -log_probs[1, 1]], rtol=1e-6)
    # Smoothing 0.3 over 3 classes: target 0.8 on the label and 0.1 elsewhere.
    smoothed = smoothed_cross_entropy(logits, labels, 3, 0.3)
    targets = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    np.testing.assert_allclose(smoothed, -(targets * log_probs).sum(1), rtol=1e-6)
    np.testing.assert_allclose(plain, [0.1698460, 2.6520085], rtol=1e-5)


def test_top_k_correct():
    logits = jnp.array([[0.1, 0.5, 0.3, 0.9, 0.0, 0.2, 0.8],
                        [0.1, 0.5, 0.3, 0.9, 0.0, 0.2, 0.8],
                        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    labels = jnp.array([3, 2, 1])  # Rank 1; rank 4; tied for first (ties count against).
    np.testing.assert_array_equal(top_k_correct(logits, labels, 1), [1, 0, 0])
    np.testing.assert_array_equal(top_k_correct(logits, labels, 2), [1, 0, 1])
    np.testing.assert_array_equal(top_k_correct(logits, labels, 3), [1, 0, 1])
    np.testing.assert_array_equal(top_k_correct(logits, labels, 5), [1, 1, 1])
    labels = jnp.array([4, 4, 2])  # Last; last; tied with four others, behind two.
    np.testing.assert_array_equal(top_k_correct(logits, labels, 5), [0, 0, 0])
