"""Flamingo gated cross-attention: media masking, NumPy reference, gates, parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jaxformer.layers import (
    GatedCrossAttentionBlock,
    MaskedCrossAttention,
    media_attention_mask,
    media_time,
)

IMG, T = 7, 3  # <image> token id and a text token.
BATCH, MEDIA, LATENTS, DIM, DIM_VISUAL, HEADS, HEAD_DIM = 2, 2, 3, 16, 12, 2, 8
SMALL = dict(num_heads=HEADS, head_dim=HEAD_DIM)
TOKENS = np.array([[T, IMG, T, T, IMG, T],
                   [IMG, T, IMG, IMG, T, T]])
TEXT_TIME = np.array([[0, 1, 1, 1, 2, 2],
                      [1, 1, 2, 3, 3, 3]])  # Row 1 references a 3rd image it is not given.


def _normal(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


X = _normal(0, (BATCH, TOKENS.shape[1], DIM))
VISUAL = _normal(1, (BATCH, MEDIA, LATENTS, DIM_VISUAL))


def _init(module, seed=0):
    params = jax.jit(module.init)(jax.random.key(seed), X, VISUAL, TEXT_TIME)["params"]
    return jax.tree.map(  # Non-trivial LayerNorm parameters (weights are random anyway).
        lambda a: np.asarray(a) + 0.1 * _normal(2, a.shape), params)


def _apply(module, params, *args):
    return np.asarray(jax.jit(module.apply)({"params": params}, *args))


def test_media_time_counts_images_up_to_each_position():
    text_time = media_time(jnp.asarray(TOKENS), IMG)
    assert text_time.dtype == jnp.int32
    np.testing.assert_array_equal(text_time, TEXT_TIME)
    np.testing.assert_array_equal(media_time(jnp.full((1, 4), T), IMG), [[0, 0, 0, 0]])


def test_media_attention_mask_rows():
    mask = np.asarray(media_attention_mask(jnp.asarray(TEXT_TIME), MEDIA, LATENTS))
    assert mask.shape == (BATCH, 1, 6, MEDIA * LATENTS) and mask.dtype == bool
    none, first, second = [0] * 6, [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(mask[0, 0], [none, first, first, first, second, second])
    # A text_time beyond the given media sees nothing.
    np.testing.assert_array_equal(mask[1, 0], [first, first, second, none, none, none])


def test_parameter_count_dim_768_visual_1024():
    shapes = jax.eval_shape(
        GatedCrossAttentionBlock().init, jax.random.key(0), jnp.zeros((1, 5, 768)),
        jnp.zeros((1, 2, 64, 1024)), jnp.zeros((1, 5), jnp.int32))["params"]
    count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
    # LN + q + kv + out, 2 gates, LN + MLP.
    expected = (2 * 768 + 768 * 512 + 1024 * 1024 + 512 * 768 + 2
                + 2 * 768 + 2 * 768 * 3072)
    assert count == expected == 6_556_674
    assert shapes["attention_gate"].shape == shapes["mlp_gate"].shape == ()


def _layer_norm(x, p, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def reference_cross_attention(params, x, visual, text_time):
    """NumPy masked cross-attention, one query at a time, float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    a = p["attention"]
    q = _layer_norm(np.asarray(x, np.float64), p["norm"]) @ a["query"]["kernel"]
    kv = np.asarray(visual, np.float64).reshape(BATCH, MEDIA * LATENTS, -1) @ a["kv"]["kernel"]
    k, v = np.split(kv, 2, axis=-1)
    out = np.zeros((*x.shape[:2], HEADS * HEAD_DIM))
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            m = text_time[b, t]
            if not 1 <= m <= MEDIA:
                continue  # No visible image: 0.
            keys = slice((m - 1) * LATENTS, m * LATENTS)
            for h in range(HEADS):
                heads = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
                scores = k[b, keys, heads] @ q[b, t, heads] / np.sqrt(HEAD_DIM)
                w = np.exp(scores - scores.max())
                out[b, t, heads] = (w / w.sum()) @ v[b, keys, heads]
    return out @ a["out"]["kernel"]


def test_masked_cross_attention_matches_numpy():
    module = MaskedCrossAttention(**SMALL)
    params = _init(module)
    out = _apply(module, params, X, VISUAL, TEXT_TIME)
    assert out.shape == X.shape
    np.testing.assert_allclose(out, reference_cross_attention(params, X, VISUAL, TEXT_TIME),
                               atol=1e-5, rtol=1e-5)


def test_positions_without_image_get_exactly_zero_and_finite_gradients():
    module = MaskedCrossAttention(**SMALL)
    params = _init(module)
    out = _apply(module, params, X, VISUAL, TEXT_TIME)
    np.testing.assert_array_equal(out[0, 0], np.zeros(DIM))  # Before any image.
    np.testing.assert_array_equal(out[1, 3:], np.zeros((3, DIM)))  # Image 3 not given.
    assert (np.abs(out[0, 1:]).max(-1) > 1e-3).all()

    def loss(x, visual):
        return module.apply({"params": params}, x, visual, TEXT_TIME).sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    dx, dvisual = grad(X, VISUAL)
    assert np.isfinite(dx).all() and np.isfinite(dvisual).all()
    np.testing.assert_array_equal(dx[0, 0], np.zeros(DIM))
    assert np.abs(dx[0, 1]).max() > 1e-3

    # No image anywhere: all zeros, zero (not NaN) gradients.
    no_image = np.zeros_like(TEXT_TIME)
    np.testing.assert_array_equal(_apply(module, params, X, VISUAL, no_image), np.zeros(X.shape))
    dx, dvisual = jax.jit(jax.grad(
        lambda x, v: module.apply({"params": params}, x, v, no_image).sum(), argnums=(0, 1)))(
            X, VISUAL)
    np.testing.assert_array_equal(dx, np.zeros(X.shape))
    np.testing.assert_array_equal(dvisual, np.zeros(VISUAL.shape))


def test_text_attends_only_to_its_own_image():
    module = MaskedCrossAttention(**SMALL)
    params = _init(module)
    out = _apply(module, params, X, VISUAL, TEXT_TIME)
    for image in (1, 2):
        perturbed = VISUAL.copy()
        perturbed[:, image - 1] += _normal(3, perturbed[:, image - 1].shape)
        out_perturbed = _apply(module, params, X, perturbed, TEXT_TIME)
        own = TEXT_TIME == image
        np.testing.assert_array_equal(out_perturbed[~own], out[~own])
        assert (np.abs(out_perturbed[own] - out[own]).max(-1) > 1e-3).all()


@pytest.mark.slow
def test_gates_at_zero_make_the_block_the_identity():
    for dtype in (jnp.float32, jnp.bfloat16):
        module = GatedCrossAttentionBlock(**SMALL, dtype=dtype)
        params = jax.jit(module.init)(jax.random.key(0), X, VISUAL, TEXT_TIME)["params"]
        assert params["attention_gate"] == 0 and params["mlp_gate"] == 0
        out = _apply(module, params, X, VISUAL, TEXT_TIME)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, X)


def test_block_with_open_gates_is_the_gated_composition():
    module = GatedCrossAttentionBlock(**SMALL)
    params = dict(_init(module), attention_gate=np.float32(0.5), mlp_gate=np.float32(-0.3))
    out = _apply(module, params, X, VISUAL, TEXT_TIME)
    assert np.abs(out - X).max() > 1e-2

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    y = X + np.tanh(0.5) * reference_cross_attention(params["cross_attention"], X, VISUAL,
                                                     TEXT_TIME)
    h = _layer_norm(y, p["mlp_norm"]) @ p["mlp"]["fc"]["kernel"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    expected = y + np.tanh(-0.3) * (h @ p["mlp"]["proj"]["kernel"])
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)

    # Only the attention gate open: positions without an image are left untouched.
    attention_only = dict(params, mlp_gate=np.float32(0.0))
    out = _apply(module, attention_only, X, VISUAL, TEXT_TIME)
    np.testing.assert_array_equal(out[0, 0], X[0, 0])
    assert (np.abs(out[0, 1:] - X[0, 1:]).max(-1) > 1e-3).all()


def test_block_on_a_slice_of_positions_matches_the_full_sequence():
    """A decode step passes only its positions and their text_time."""
    module = GatedCrossAttentionBlock(**SMALL)
    params = dict(_init(module), attention_gate=np.float32(1.0), mlp_gate=np.float32(1.0))
    full = _apply(module, params, X, VISUAL, TEXT_TIME)
    for t in (0, 3, 5):
        step = _apply(module, params, X[:, t:t + 1], VISUAL, TEXT_TIME[:, t:t + 1])
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-6)

