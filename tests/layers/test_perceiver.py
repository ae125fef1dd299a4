"""Perceiver Resampler: parameter count, shapes, NumPy reference, media/frame embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jaxformer.layers import PerceiverResampler

BATCH, DIM, LATENTS, HEADS, HEAD_DIM, DEPTH = 2, 16, 4, 2, 8, 2
SMALL = dict(depth=DEPTH, num_latents=LATENTS, num_heads=HEADS, head_dim=HEAD_DIM)


def _normal(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _init(module, x, seed=0):
    params = jax.jit(module.init)(jax.random.key(seed), x)["params"]
    # Non-trivial LayerNorm parameters.
    return jax.tree_util.tree_map_with_path(
        lambda path, a: np.asarray(a) + (0.1 * _normal(1, a.shape)
                                         if path[-1].key in ("scale", "bias") else 0), params)


def _apply(module, params, x):
    return np.asarray(jax.jit(module.apply)({"params": params}, x))


def _count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def test_parameter_count_flamingo_defaults_width_1024():
    module = PerceiverResampler()
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 2, 1, 257, 1024)))
    # latents 64 * 1024 + 6 * (3 LayerNorms + q + kv + out + MLP) + final LayerNorm.
    per_layer = 3 * 2 * 1024 + 1024 * 512 + 1024 * 1024 + 512 * 1024 + 2 * 1024 * 4096
    assert _count(shapes) == 64 * 1024 + 6 * per_layer + 2 * 1024 == 63_019_008
    assert shapes["params"]["latents"].shape == (64, 1024)


def _layer_norm(x, p, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_resampler(params, x):
    """NumPy open_flamingo PerceiverResampler (no media/frame embeddings), float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    batch, media, frames, tokens, dim = x.shape
    x = np.asarray(x, np.float64).reshape(batch, media, frames * tokens, dim)
    latents = np.broadcast_to(p["latents"], (batch, media, LATENTS, dim))
    for i in range(DEPTH):
        a = p[f"attention_{i}"]
        m = _layer_norm(x, a["media_norm"])
        lat = _layer_norm(latents, a["latents_norm"])
        q = (lat @ a["attention"]["query"]["kernel"]).reshape(batch, media, LATENTS, HEADS, -1)
        kv = np.concatenate([m, lat], axis=2) @ a["attention"]["kv"]["kernel"]
        k, v = np.split(kv, 2, axis=-1)
        k = k.reshape(*k.shape[:3], HEADS, -1)
        v = v.reshape(*v.shape[:3], HEADS, -1)
        weights = _softmax(np.einsum("bmqhd,bmkhd->bmhqk", q, k) * HEAD_DIM ** -0.5)
        out = np.einsum("bmhqk,bmkhd->bmqhd", weights, v).reshape(batch, media, LATENTS, -1)
        latents = latents + out @ a["attention"]["out"]["kernel"]
        h = _layer_norm(latents, p[f"mlp_norm_{i}"]) @ p[f"mlp_{i}"]["fc"]["kernel"]
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))  # Exact GELU.
        latents = latents + h @ p[f"mlp_{i}"]["proj"]["kernel"]
    return _layer_norm(latents, p["final_norm"])


def test_matches_numpy_reference():
    x = _normal(2, (BATCH, 3, 2, 5, DIM))
    module = PerceiverResampler(**SMALL)
    params = _init(module, x)
    out = _apply(module, params, x)
    assert out.shape == (BATCH, 3, LATENTS, DIM)
    np.testing.assert_allclose(out, reference_resampler(params, x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_output_shape_independent_of_visual_tokens_and_media():
    module = PerceiverResampler(**SMALL)
    params = _init(module, _normal(0, (BATCH, 1, 1, 16, DIM)))
    for media in (1, 3):
        for tokens in (16, 49):
            out = _apply(module, params, _normal(3, (BATCH, media, 1, tokens, DIM)))
            assert out.shape == (BATCH, media, LATENTS, DIM)
            assert np.isfinite(out).all()


def test_four_dim_input_is_one_frame():
    x = _normal(4, (BATCH, 2, 9, DIM))
    module = PerceiverResampler(**SMALL)
    params = _init(module, x)
    out = _apply(module, params, x)
    assert out.shape == (BATCH, 2, LATENTS, DIM)
    np.testing.assert_array_equal(out, _apply(module, params, x[:, :, None]))
    with pytest.raises(ValueError, match="expected"):
        module.apply({"params": params}, x[0])


def test_media_items_are_resampled_independently():
    x = _normal(5, (BATCH, 2, 1, 9, DIM))
    module = PerceiverResampler(**SMALL)
    params = _init(module, x)
    out = _apply(module, params, x)
    perturbed = x.copy()
    perturbed[:, 1] += _normal(7, perturbed[:, 1].shape)  # (A constant would be normalised away.)
    out_perturbed = _apply(module, params, perturbed)
    np.testing.assert_array_equal(out_perturbed[:, 0], out[:, 0])
    assert np.abs(out_perturbed[:, 1] - out[:, 1]).max() > 1e-2


@pytest.mark.slow
def test_media_time_and_frame_embeddings():
    x = _normal(6, (BATCH, 2, 2, 9, DIM))
    x[:, 1] = x[:, 0]  # Two identical media items ...
    x_swapped = x[:, :, ::-1]  # ... and the same media with their two frames swapped.
    plain = PerceiverResampler(**SMALL)
    plain_params = _init(plain, x)
    out = _apply(plain, plain_params, x)
    # Without embeddings, media position and frame order are invisible.
    np.testing.assert_allclose(out[:, 1], out[:, 0], atol=1e-6)
    np.testing.assert_allclose(_apply(plain, plain_params, x_swapped), out, atol=1e-5)

    module = PerceiverResampler(**SMALL, max_num_media=3, max_num_frames=4)
    params = _init(module, x)
    assert params["media_time_embeddings"].shape == (3, DIM)
    assert params["frame_embeddings"].shape == (4, DIM)
    assert _count(params) == _count(plain_params) + (3 + 4) * DIM
    out = _apply(module, params, x)
    assert np.abs(out[:, 1] - out[:, 0]).max() > 1e-2
    assert np.abs(_apply(module, params, x_swapped) - out).max() > 1e-2

    # With the embeddings zeroed the model is the plain one again.
    zeroed = dict(params, media_time_embeddings=np.zeros((3, DIM), np.float32),
                  frame_embeddings=np.zeros((4, DIM), np.float32))
    plain_like = {k: v for k, v in zeroed.items() if not k.endswith("embeddings")}
    np.testing.assert_allclose(_apply(module, zeroed, x), _apply(plain, plain_like, x), atol=1e-6)

    with pytest.raises(ValueError, match="max_num_media"):
        module.apply({"params": params}, np.zeros((1, 4, 1, 3, DIM), np.float32))
    with pytest.raises(ValueError, match="max_num_frames"):
        module.apply({"params": params}, np.zeros((1, 1, 5, 3, DIM), np.float32))
