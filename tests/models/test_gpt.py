"""GPT parameter counts against the closed-form formula, and causality of the model."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxformer.models import gpt


def build(variant, vocab_size, block_size, **kw):
    config = ml_collections.ConfigDict(dict(
        name="gpt", variant=variant, num_layers=0, num_heads=1, d_model=1, mlp_ratio=4,
        dropout_rate=0.0))
    return gpt.build(config, vocab_size=vocab_size, block_size=block_size, dtype=jnp.float32,
                     remat=False, **kw)


def count(model):
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def formula(layers, d, vocab, block):
    """GPT-2 with biases and a tied head: per block 2 LayerNorms (4d), qkv (3d^2+3d),
    projection (d^2+d), MLP (8d^2+5d); plus token and position tables and the final LayerNorm."""
    return layers * (12 * d * d + 13 * d) + vocab * d + block * d + 2 * d


def test_gpt2_small_has_124_439_808_parameters():
    assert count(build("gpt2-small", 50257, 1024)) == 124_439_808


@pytest.mark.parametrize("variant", ["gpt2-medium", "gpt2-large", "gpt2-xl", "nano", "tiny"])
def test_variant_counts_match_formula(variant):
    sizes = gpt.VARIANTS[variant]
    expected = formula(sizes["num_layers"], sizes["d_model"], 50257, 1024)
    assert count(build(variant, 50257, 1024)) == expected


def test_known_gpt2_sizes():
    # nanoGPT's reported counts (millions, position embeddings included).
    for variant, millions in [("gpt2-medium", 354.8), ("gpt2-large", 774.0), ("gpt2-xl", 1557.6)]:
        assert round(count(build(variant, 50257, 1024)) / 1e6, 1) == millions


def test_unknown_variant_lists_known():
    with pytest.raises(ValueError, match="known: gpt2-small"):
        build("gpt5", 100, 16)


def test_output_at_t_ignores_future_tokens():
    model = build("tiny", 50, 16)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 50)
    params = model.init(jax.random.key(0), tokens)["params"]
    changed = tokens.at[:, 9:].set((tokens[:, 9:] + 1) % 50)
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, changed)
    assert a.shape == (2, 16, 50) and a.dtype == jnp.float32
    np.testing.assert_allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not np.allclose(a[:, 9:], b[:, 9:])


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = ml_collections.ConfigDict(dict(
        name="gpt", variant="tiny", num_layers=0, num_heads=1, d_model=1, mlp_ratio=4,
        dropout_rate=0.0))
    model = gpt.build(config, vocab_size=50, block_size=16, dtype=jnp.bfloat16, remat=True)
    tokens = jnp.zeros((2, 16), jnp.int32)
    params = model.init(jax.random.key(0), tokens)["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    assert model.apply({"params": params}, tokens).dtype == jnp.float32
