"""Multi-head attention against a NumPy softmax(QK^T / sqrt(d)) V reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers import (
    MultiHeadAttention,
    combine_masks,
    make_attention_mask,
    make_causal_mask,
    make_padding_mask,
)

BATCH, SEQ, D_MODEL, HEADS = 2, 7, 16, 4
HEAD_DIM = D_MODEL // HEADS
CAUSAL = np.tril(np.ones((SEQ, SEQ), bool))[None, None]


def _normal(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_attention(params, x_q, x_kv=None, mask=None):
    """NumPy multi-head attention from the module's parameters: (output, weights)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x_q = np.asarray(x_q, np.float64)

    def split(a, n):  # [..., n * heads * head_dim] -> [..., n, heads, head_dim]
        return a.reshape(*a.shape[:-1], n, HEADS, -1)

    if x_kv is None:
        w, b = split(p["qkv"]["kernel"], 3), split(p["qkv"]["bias"], 3)
        q = np.einsum("bsd,dhe->bshe", x_q, w[:, 0]) + b[0]
        k = np.einsum("bsd,dhe->bshe", x_q, w[:, 1]) + b[1]
        v = np.einsum("bsd,dhe->bshe", x_q, w[:, 2]) + b[2]
    else:
        x_kv = np.asarray(x_kv, np.float64)
        q = (np.einsum("bsd,dhe->bshe", x_q, split(p["query"]["kernel"], 1)[:, 0])
             + split(p["query"]["bias"], 1)[0])
        w, b = split(p["kv"]["kernel"], 2), split(p["kv"]["bias"], 2)
        k = np.einsum("bsd,dhe->bshe", x_kv, w[:, 0]) + b[0]
        v = np.einsum("bsd,dhe->bshe", x_kv, w[:, 1]) + b[1]
    batch, q_len, heads, head_dim = q.shape
    kv_len = k.shape[1]
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask), (batch, heads, q_len, kv_len))
    weights = np.zeros((batch, heads, q_len, kv_len))
    out = np.zeros(q.shape)
    for b in range(batch):
        for h in range(heads):
            scores = q[b, :, h] @ k[b, :, h].T / np.sqrt(head_dim)  # [q_len, kv_len]
            if mask is not None:
                scores = np.where(mask[b, h], scores, -np.inf)
            weights[b, h] = _softmax(scores)
            out[b, :, h] = weights[b, h] @ v[b, :, h]
    out = out.reshape(batch, q_len, heads * head_dim) @ p["out"]["kernel"] + p["out"]["bias"]
    return out, weights


def _apply(module, **static_kwargs):
    """Jitted `module.apply` returning NumPy; `static_kwargs` (is_causal, train, decode, mutable)
    are fixed at compile time."""
    fn = jax.jit(functools.partial(module.apply, **static_kwargs))
    return lambda *args, **kwargs: jax.tree.map(np.asarray, fn(*args, **kwargs))


def _with_weights(module, **static_kwargs):
    """Jitted apply returning (output, sown attention weights)."""
    apply = _apply(module, mutable=["intermediates"], **static_kwargs)

    def fn(*args, **kwargs):
        out, state = apply(*args, **kwargs)
        (weights,) = state["intermediates"]["attention_weights"]
        return out, weights

    return fn


def _module(**kwargs):
    return MultiHeadAttention(num_heads=HEADS, **kwargs)


def _init(module, x_q, x_kv=None, seed=0):
    params = jax.jit(module.init)(jax.random.key(seed), x_q, x_kv)["params"]
    # Non-zero biases so that the reference checks them too.
    return jax.tree.map(lambda a: np.asarray(a) + 0.1 * _normal(seed + 1, a.shape), params)


@pytest.fixture
def x():
    return _normal(42, (BATCH, SEQ, D_MODEL))


def test_self_attention_matches_reference(x):
    module = _module()
    params = _init(module, x)
    expected, expected_weights = reference_attention(params, x)
    out = _apply(module)({"params": params}, x)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    out_explicit, weights = _with_weights(module)({"params": params}, x)
    np.testing.assert_allclose(out_explicit, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)


def test_causal_matches_reference_and_ignores_the_future(x):
    module = _module()
    params = _init(module, x)
    expected, _ = reference_attention(params, x, mask=CAUSAL)
    causal_apply = _apply(module, is_causal=True)
    out = causal_apply({"params": params}, x)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    out_masked = _apply(module)({"params": params}, x, mask=make_causal_mask(SEQ))
    np.testing.assert_allclose(out_masked, expected, atol=1e-5, rtol=1e-5)

    t = 3
    changed = x.copy()
    changed[:, t + 1:] = _normal(7, changed[:, t + 1:].shape)
    out_changed = causal_apply({"params": params}, changed)
    np.testing.assert_allclose(out_changed[:, : t + 1], out[:, : t + 1], atol=1e-6)
    assert not np.allclose(out_changed[:, t + 1:], out[:, t + 1:], atol=1e-3)


def test_per_head_mask_combined_with_causal_matches_reference(x):
    module = _module()
    params = _init(module, x)
    mask = np.random.default_rng(3).random((BATCH, HEADS, SEQ, SEQ)) < 0.7
    mask[..., 0] = True  # Every query keeps at least one key.
    expected, expected_weights = reference_attention(params, x, mask=mask & CAUSAL)
    out = _apply(module, is_causal=True)({"params": params}, x, mask=mask)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    _, weights = _with_weights(module, is_causal=True)({"params": params}, x, mask=mask)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)


def test_padding_mask_gives_zero_weight_to_padded_keys(x):
    tokens = np.array([[5, 3, 9, 2, 0, 0, 0], [1, 2, 3, 4, 5, 6, 0]])
    mask = np.asarray(make_padding_mask(tokens, pad_id=0))
    assert mask.shape == (BATCH, 1, 1, SEQ)
    module = _module()
    params = _init(module, x)
    out, weights = _with_weights(module)({"params": params}, x, mask=mask)
    assert weights.shape == (BATCH, HEADS, SEQ, SEQ)
    np.testing.assert_array_equal(weights[0, :, :, 4:], 0.0)
    np.testing.assert_array_equal(weights[1, :, :, 6:], 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    expected, _ = reference_attention(params, x, mask=mask)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    fused = _apply(module)({"params": params}, x, mask=mask)
    np.testing.assert_allclose(fused, expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_with_different_kv_length(x):
    kv_len, kv_features = 5, 24
    memory = _normal(1, (BATCH, kv_len, kv_features))
    key_valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    mask = np.asarray(make_attention_mask(np.ones((BATCH, SEQ), bool), key_valid))
    assert mask.shape == (BATCH, 1, SEQ, kv_len)
    module = _module()
    params = _init(module, x, memory)
    assert params["kv"]["kernel"].shape == (kv_features, 2 * HEADS * HEAD_DIM)
    assert "qkv" not in params
    expected, _ = reference_attention(params, x, memory, mask=mask)
    out = _apply(module)({"params": params}, x, memory, mask=mask)
    assert out.shape == (BATCH, SEQ, D_MODEL)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    _, weights = _with_weights(module)({"params": params}, x, memory, mask=mask)
    assert weights.shape == (BATCH, HEADS, SEQ, kv_len)
    np.testing.assert_array_equal(weights[0, ..., 3:], 0.0)


@pytest.mark.slow
def test_dropout_on_attention_weights(x):
    module = _module(dropout_rate=0.5)
    params = _init(module, x)
    expected, expected_weights = reference_attention(params, x)
    np.testing.assert_allclose(_apply(module)({"params": params}, x), expected, atol=1e-5)

    train_apply = _apply(module, train=True)
    train = lambda seed: train_apply(  # noqa: E731
        {"params": params}, x, rngs={"dropout": jax.random.key(seed)})
    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), expected, atol=1e-3)
    assert not np.allclose(train(1), train(2), atol=1e-3)
    # The sown weights are those before dropout.
    _, weights = _with_weights(module, train=True)(
        {"params": params}, x, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)


def test_bfloat16_compute_is_close_to_float32(x):
    params = _init(_module(), x)
    out32 = _apply(_module(), is_causal=True)({"params": params}, x)
    out16 = jax.jit(functools.partial(_module(dtype=jnp.bfloat16).apply, is_causal=True))(
        {"params": params}, x)
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), out32, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("prefill", [0, 3])
def test_kv_cache_decoding_matches_causal_attention(x, prefill):
    module = _module()
    params = _init(module, x)
    expected = _apply(module, is_causal=True)({"params": params}, x)
    cache = jax.jit(functools.partial(module.init, decode=True))(jax.random.key(0), x)["cache"]
    assert cache["cached_key"].shape == (BATCH, SEQ, HEADS, HEAD_DIM)
    cache = jax.tree.map(np.zeros_like, cache)
    chunks = ([x[:, :prefill]] if prefill else []) + [
        x[:, t:t + 1] for t in range(prefill, SEQ)]
    step = _apply(module, decode=True, mutable=["cache"])
    outputs = []
    for chunk in chunks:
        out, state = step({"params": params, "cache": cache}, chunk)
        cache = state["cache"]
        outputs.append(out)
    assert int(cache["cache_index"]) == SEQ
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)


def test_mask_helpers():
    np.testing.assert_array_equal(
        make_causal_mask(3)[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    query_valid = np.array([[1, 1, 0]])
    key_valid = np.array([[1, 0]])
    np.testing.assert_array_equal(
        make_attention_mask(query_valid, key_valid)[0, 0], [[1, 0], [1, 0], [0, 0]])
    np.testing.assert_array_equal(
        make_padding_mask(np.array([[7, 0, 3]]), pad_id=0)[0, 0, 0], [1, 0, 1])
    a = np.array([[True, False], [True, True]])
    b = np.array([[True, True], [False, True]])
    np.testing.assert_array_equal(combine_masks(a, None, b), [[1, 0], [0, 1]])
    assert combine_masks(None, None) is None
