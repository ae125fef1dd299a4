"""Transformer blocks (pre-/post-LN, cross-attention) and stacks (loop, scan, remat)."""

import functools

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

BATCH, SEQ, SRC, D_MODEL, HEADS, LAYERS = 2, 6, 5, 16, 4, 3


def _normal(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


X = _normal(0, (BATCH, SEQ, D_MODEL))
ENCODED = _normal(1, (BATCH, SRC, D_MODEL))


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_wiring_matches_composition_of_sublayers(norm_first):
    cross_mask = np.asarray(make_padding_mask(np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])))
    block = TransformerBlock(num_heads=HEADS, mlp_dim=32, norm_first=norm_first, causal=True,
                             cross_attention=True)
    params = jax.jit(block.init)(jax.random.key(2), X, ENCODED)["params"]
    params = jax.tree.map(  # Non-trivial LayerNorm parameters and biases.
        lambda a: np.asarray(a) + 0.1 * _normal(3, a.shape), params)
    out = jax.jit(block.apply)({"params": params}, X, ENCODED, cross_mask=cross_mask)

    @jax.jit
    def composed(params):
        attention, mlp, norm = MultiHeadAttention(HEADS), MLP(32), nn.LayerNorm(epsilon=1e-5)
        sublayers = [
            ("attention_norm", lambda h: attention.apply(
                {"params": params["attention"]}, h, is_causal=True)),
            ("cross_attention_norm", lambda h: attention.apply(
                {"params": params["cross_attention"]}, h, ENCODED, mask=cross_mask)),
            ("mlp_norm", lambda h: mlp.apply({"params": params["mlp"]}, h)),
        ]
        h = X
        for norm_name, fn in sublayers:
            if norm_first:
                h = h + fn(norm.apply({"params": params[norm_name]}, h))
            else:
                h = norm.apply({"params": params[norm_name]}, h + fn(h))
        return h

    np.testing.assert_allclose(out, composed(params), atol=1e-5, rtol=1e-5)


def _stack(**kwargs):
    return TransformerStack(num_layers=LAYERS, num_heads=HEADS, mlp_dim=32, causal=True,
                            **kwargs)


def _loop_to_scan(params):
    """Loop parameters (`block_i`) stacked into the scan layout (`layers`, leading axis)."""
    blocks = [params[f"block_{i}"] for i in range(LAYERS)]
    return {"layers": jax.tree.map(lambda *xs: np.stack(xs), *blocks),
            "final_norm": params["final_norm"]}


@pytest.mark.slow
@pytest.mark.parametrize("remat,scan_layers", [(True, False), (False, True), (True, True)])
def test_stack_remat_and_scan_match_the_loop(remat, scan_layers):
    loop = _stack()
    other = _stack(remat=remat, scan_layers=scan_layers)
    params = jax.tree.map(np.asarray, jax.jit(loop.init)(jax.random.key(0), X)["params"])
    other_params = _loop_to_scan(params) if scan_layers else params
    other_shapes = jax.eval_shape(other.init, jax.random.key(0), X)["params"]
    assert jax.tree.map(lambda s: s.shape, other_shapes) == jax.tree.map(
        np.shape, other_params)

    def value_and_grad(module, params):
        loss = lambda p: jnp.sum(module.apply({"params": p}, X) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    loss, grads = value_and_grad(loop, params)
    other_loss, other_grads = value_and_grad(other, other_params)
    np.testing.assert_allclose(other_loss, loss, rtol=1e-5)
    if scan_layers:
        grads = _loop_to_scan(grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
                 other_grads, grads)


@pytest.mark.slow
@pytest.mark.parametrize("scan_layers", [False, True])
def test_cross_attention_stack_decodes_like_full_pass(scan_layers):
    stack = _stack(cross_attention=True, scan_layers=scan_layers)
    params = jax.jit(stack.init)(jax.random.key(0), X, ENCODED)["params"]
    expected = jax.jit(stack.apply)({"params": params}, X, ENCODED)
    # The call that creates the cache projects the encoder output for cross-attention.
    _, state = jax.jit(functools.partial(stack.apply, decode=True, mutable=["cache"]))(
        {"params": params}, X, ENCODED)
    cache = state["cache"]  # Self-attention caches empty, at index 0.
    step = jax.jit(lambda cache, token: stack.apply(
        {"params": params, "cache": cache}, token, ENCODED, decode=True, mutable=["cache"]))
    outputs = []
    for t in range(SEQ):
        out, state = step(cache, X[:, t:t + 1])
        cache = state["cache"]
        outputs.append(out)
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)


def test_stack_sows_attention_weights_per_layer():
    stack = _stack(norm_first=False)
    params = jax.jit(stack.init)(jax.random.key(0), X)["params"]
    assert "final_norm" not in params  # Post-LN blocks already end normalised.
    out, state = jax.jit(functools.partial(stack.apply, mutable=["intermediates"]))(
        {"params": params}, X)
    np.testing.assert_allclose(out, jax.jit(stack.apply)({"params": params}, X), atol=1e-5)
    for i in range(LAYERS):
        (weights,) = state["intermediates"][f"block_{i}"]["attention"]["attention_weights"]
        weights = np.asarray(weights)
        assert weights.shape == (BATCH, HEADS, SEQ, SEQ)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(np.triu(weights, k=1), 0.0)  # Causal.


@pytest.mark.slow
def test_dropout_is_active_only_in_training():
    stack = _stack(dropout_rate=0.3, attention_dropout_rate=0.3)
    params = jax.jit(stack.init)(jax.random.key(0), X)["params"]
    clean = jax.jit(stack.apply)({"params": params}, X)
    train = jax.jit(lambda key: stack.apply({"params": params}, X, train=True,
                                            rngs={"dropout": key}))
    np.testing.assert_array_equal(train(jax.random.key(0)), train(jax.random.key(0)))
    assert not np.allclose(train(jax.random.key(0)), clean, atol=1e-3)
    assert not np.allclose(train(jax.random.key(0)), train(jax.random.key(1)), atol=1e-3)
