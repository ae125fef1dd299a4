"""Transformer blocks (pre-/post-LN, cross-attention) and stacks (loop, scan, remat)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxformer.layers import (
    MLP,
    MultiHeadAttention,
    TransformerBlock,
    TransformerStack,
    make_padding_mask,
)

BATCH, SEQ, SRC, D_MODEL, HEADS = 2, 6, 5, 16, 4


def _inputs():
    x = jax.random.normal(jax.random.key(0), (BATCH, SEQ, D_MODEL))
    encoded = jax.random.normal(jax.random.key(1), (BATCH, SRC, D_MODEL))
    return x, encoded


def _layer_norm(params, x):
    return nn.LayerNorm(epsilon=1e-5).apply({"params": params}, x)


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_wiring_matches_composition_of_sublayers(norm_first):
    x, encoded = _inputs()
    cross_mask = make_padding_mask(jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))[:, :, :, :]
    block = TransformerBlock(num_heads=HEADS, mlp_dim=32, norm_first=norm_first, causal=True,
                             cross_attention=True)
    params = block.init(jax.random.key(2), x, encoded)["params"]
    params = jax.tree.map(  # Non-trivial LayerNorm parameters.
        lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), params)
    out = block.apply({"params": params}, x, encoded, cross_mask=cross_mask)

    attention = MultiHeadAttention(num_heads=HEADS)
    mlp = MLP(hidden_dim=32)
    self_attn = lambda h: attention.apply(  # noqa: E731
        {"params": params["attention"]}, h, is_causal=True)
    cross_attn = lambda h: attention.apply(  # noqa: E731
        {"params": params["cross_attention"]}, h, encoded, mask=cross_mask)
    feed_forward = lambda h: mlp.apply({"params": params["mlp"]}, h)  # noqa: E731
    h = x
    for fn, norm in [(self_attn, "attention_norm"), (cross_attn, "cross_attention_norm"),
                     (feed_forward, "mlp_norm")]:
        if norm_first:
            h = h + fn(_layer_norm(params[norm], h))
        else:
            h = _layer_norm(params[norm], h + fn(h))
    np.testing.assert_allclose(out, h, atol=1e-5, rtol=1e-5)


def _stack(**kwargs):
    return TransformerStack(num_layers=3, num_heads=HEADS, mlp_dim=32, causal=True, **kwargs)


def _loop_to_scan(params, num_layers=3):
    blocks = [params[f"block_{i}"] for i in range(num_layers)]
    return {"layers": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks),
            "final_norm": params["final_norm"]}


@pytest.mark.parametrize("remat,scan_layers", [(True, False), (False, True), (True, True)])
def test_stack_remat_and_scan_match_the_loop(remat, scan_layers):
    x, _ = _inputs()
    loop = _stack()
    params = loop.init(jax.random.key(0), x)["params"]
    other = _stack(remat=remat, scan_layers=scan_layers)
    other_params = _loop_to_scan(params) if scan_layers else params
    assert jax.tree.structure(other.init(jax.random.key(0), x)["params"]) == jax.tree.structure(
        other_params)

    def loss(module, p):
        return jnp.sum(module.apply({"params": p}, x) ** 2)

    np.testing.assert_allclose(
        other.apply({"params": other_params}, x), loop.apply({"params": params}, x), atol=1e-5)
    grads = jax.grad(lambda p: loss(loop, p))(params)
    other_grads = jax.grad(lambda p: loss(other, p))(other_params)
    if scan_layers:
        grads = _loop_to_scan(grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
                 other_grads, grads)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cross_attention_stack_decodes_like_full_pass(scan_layers):
    x, encoded = _inputs()
    stack = _stack(cross_attention=True, scan_layers=scan_layers)
    params = stack.init(jax.random.key(0), x, encoded)["params"]
    expected = stack.apply({"params": params}, x, encoded)
    cache = stack.init(jax.random.key(0), x, encoded, decode=True)["cache"]
    cache = jax.tree.map(jnp.zeros_like, cache)
    step = jax.jit(lambda cache, token: stack.apply(
        {"params": params, "cache": cache}, token, encoded, decode=True, mutable=["cache"]))
    outputs = []
    for t in range(SEQ):
        out, state = step(cache, x[:, t:t + 1])
        cache = state["cache"]
        outputs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), expected, atol=1e-5)


def test_stack_sows_attention_weights_per_layer():
    x, _ = _inputs()
    stack = _stack(norm_first=False)
    params = stack.init(jax.random.key(0), x)["params"]
    assert "final_norm" not in params  # Post-LN blocks already end normalised.
    out, state = stack.apply({"params": params}, x, mutable=["intermediates"])
    np.testing.assert_allclose(out, stack.apply({"params": params}, x), atol=1e-5)
    for i in range(3):
        (weights,) = state["intermediates"][f"block_{i}"]["attention"]["attention_weights"]
        assert weights.shape == (BATCH, HEADS, SEQ, SEQ)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(jnp.triu(weights, k=1), 0.0)  # Causal.


def test_dropout_is_active_only_in_training():
    x, _ = _inputs()
    stack = _stack(dropout_rate=0.3, attention_dropout_rate=0.3)
    params = stack.init(jax.random.key(0), x)["params"]
    clean = stack.apply({"params": params}, x)
    noisy = lambda seed: stack.apply(  # noqa: E731
        {"params": params}, x, train=True, rngs={"dropout": jax.random.key(seed)})
    np.testing.assert_array_equal(noisy(0), noisy(0))
    assert not np.allclose(noisy(0), clean, atol=1e-3)
    assert not np.allclose(noisy(0), noisy(1), atol=1e-3)
