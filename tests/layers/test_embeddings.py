"""Token and positional embeddings, and the MLP."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers import (
    MLP,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    sinusoidal_positions,
)


def test_sinusoidal_values_at_hand_computed_positions():
    d = 8
    table = sinusoidal_positions(50, d)
    assert table.shape == (50, d) and table.dtype == np.float32
    # Position 0: sin(0) = 0 on even features, cos(0) = 1 on odd ones.
    np.testing.assert_allclose(table[0], [0, 1, 0, 1, 0, 1, 0, 1], atol=1e-7)
    # Position 1, pair i = 0: frequency 1 -> sin(1), cos(1).
    np.testing.assert_allclose(table[1, :2], [0.8414709848, 0.5403023059], atol=1e-6)
    # Position 1, pair i = 1: 1 / 10000^(2/8) = 0.1 -> sin(0.1), cos(0.1).
    np.testing.assert_allclose(table[1, 2:4], [0.0998334166, 0.9950041653], atol=1e-6)
    # Position 10, pair i = 2: 10 / 10000^(4/8) = 0.1.
    np.testing.assert_allclose(table[10, 4:6], [0.0998334166, 0.9950041653], atol=1e-6)
    # Position 49, pair i = 3: 49 / 10000^(6/8) = 0.049.
    np.testing.assert_allclose(table[49, 6:8], [math.sin(0.049), math.cos(0.049)], atol=1e-6)


def test_sinusoidal_module_and_decode_positions():
    module = SinusoidalPositionalEncoding(max_length=16, features=6)
    out = module.apply({}, 5)
    np.testing.assert_allclose(out[0], sinusoidal_positions(16, 6)[:5], atol=1e-7)
    cache = module.init(jax.random.key(0), 16, decode=True)["cache"]
    _, state = module.apply({"cache": cache}, 3, decode=True, mutable=["cache"])
    step, _ = module.apply(state, 1, decode=True, mutable=["cache"])
    np.testing.assert_allclose(step[0, 0], sinusoidal_positions(16, 6)[3], atol=1e-7)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(4, 5)


def test_learned_positions_slice_the_table_and_follow_the_cache():
    module = LearnedPositionalEmbedding(max_length=10, features=4)
    variables = module.init(jax.random.key(0), 10, decode=True)
    table = variables["params"]["embedding"]
    np.testing.assert_array_equal(module.apply(variables, 6)[0], table[:6])
    out, state = module.apply(variables, 4, decode=True, mutable=["cache"])
    np.testing.assert_array_equal(out[0], table[:4])
    out, state = module.apply({**variables, **state}, 1, decode=True, mutable=["cache"])
    np.testing.assert_array_equal(out[0, 0], table[4])
    with pytest.raises(ValueError, match="max_length"):
        module.apply(variables, 11)


def test_token_embedding_lookup_and_tied_head():
    module = TokenEmbedding(vocab_size=11, features=4, dtype=jnp.bfloat16)
    params = module.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
    table = np.asarray(params["embedding"])
    tokens = jnp.array([[3, 0, 10]])
    embedded = module.apply({"params": params}, tokens)
    assert embedded.dtype == jnp.bfloat16
    np.testing.assert_allclose(embedded.astype(jnp.float32)[0], table[[3, 0, 10]], rtol=1e-2)
    x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    logits = module.apply({"params": params}, x, method=TokenEmbedding.attend)
    assert logits.shape == (2, 3, 11) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, np.asarray(x) @ table.T, atol=0.1, rtol=0.05)


def test_mlp_matches_reference_with_tanh_gelu():
    module = MLP(hidden_dim=12, bias_init=jax.nn.initializers.normal(1.0))
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    params = jax.jit(module.init)(jax.random.key(1), x)["params"]
    p = jax.tree.map(np.asarray, params)
    h = np.asarray(x) @ p["fc"]["kernel"] + p["fc"]["bias"]
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    expected = h @ p["proj"]["kernel"] + p["proj"]["bias"]
    out = jax.jit(module.apply)({"params": params}, x)
    assert out.shape == (2, 3, 5)
    np.testing.assert_allclose(out, expected, atol=1e-5)
