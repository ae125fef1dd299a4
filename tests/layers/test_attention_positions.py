"""Positional embeddings added to queries and keys but not values (DETR), in attention and in
post-LN blocks, against NumPy transcriptions of DETR's encoder and decoder layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers import MultiHeadAttention, TransformerBlock, TransformerStack

D, HEADS = 16, 4


def attention(q_in, k_in, v_in, wq, bq, wk, bk, wv, bv, out, key_valid=None):
    """nn.MultiheadAttention in NumPy: `[b, len, d]` inputs, `out` the output Dense params."""
    def heads(x):
        return x.reshape(*x.shape[:2], HEADS, -1)
    q, k, v = heads(q_in @ wq + bq), heads(k_in @ wk + bk), heads(v_in @ wv + bv)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if key_valid is not None:
        logits = np.where(key_valid[:, None, None, :], logits, -1e30)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*q_in.shape[:2], -1)
    return o @ out["kernel"] + out["bias"]


def self_attention(p, q_in, v_in, key_valid=None):
    w, b = p["qkv"]["kernel"], p["qkv"]["bias"]
    return attention(q_in, q_in, v_in, w[:, :D], b[:D], w[:, D:2 * D], b[D:2 * D],
                     w[:, 2 * D:], b[2 * D:], p["out"], key_valid)


def cross_attention(p, q_in, k_in, v_in, key_valid=None):
    w, b = p["kv"]["kernel"], p["kv"]["bias"]
    return attention(q_in, k_in, v_in, p["query"]["kernel"], p["query"]["bias"], w[:, :D],
                     b[:D], w[:, D:], b[D:], p["out"], key_valid)


def layer_norm(x, p, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def ffn(p, x):
    hidden = np.maximum(x @ p["fc"]["kernel"] + p["fc"]["bias"], 0)
    return hidden @ p["proj"]["kernel"] + p["proj"]["bias"]


def encoder_layer(p, src, pos, key_valid):
    """DETR's TransformerEncoderLayer.forward_post."""
    src = layer_norm(src + self_attention(p["attention"], src + pos, src, key_valid),
                     p["attention_norm"])
    return layer_norm(src + ffn(p["mlp"], src), p["mlp_norm"])


def decoder_layer(p, tgt, memory, query_pos, pos, memory_valid):
    """DETR's TransformerDecoderLayer.forward_post."""
    tgt = layer_norm(tgt + self_attention(p["attention"], tgt + query_pos, tgt),
                     p["attention_norm"])
    tgt2 = cross_attention(p["cross_attention"], tgt + query_pos, memory + pos, memory,
                           memory_valid)
    tgt = layer_norm(tgt + tgt2, p["cross_attention_norm"])
    return layer_norm(tgt + ffn(p["mlp"], tgt), p["mlp_norm"])


def numpy_params(variables):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def test_self_attention_positions_reach_queries_and_keys_only():
    x, pos = normal(0, (2, 5, D)), normal(1, (1, 5, D))  # Positions broadcast over the batch.
    layer = MultiHeadAttention(HEADS)
    variables = layer.init(jax.random.key(2), x, query_pos=pos)
    p = numpy_params(variables)
    expected = self_attention(p, np.asarray(x + pos), np.asarray(x))
    np.testing.assert_allclose(layer.apply(variables, x, query_pos=pos), expected, atol=1e-5)
    np.testing.assert_allclose(layer.apply(variables, x, query_pos=jnp.zeros_like(pos)),
                               layer.apply(variables, x), atol=1e-6)


def test_cross_attention_positions():
    x, memory = normal(0, (2, 3, D)), normal(1, (2, 6, D))
    query_pos, key_pos = normal(2, (1, 3, D)), normal(3, (2, 6, D))
    layer = MultiHeadAttention(HEADS)
    variables = layer.init(jax.random.key(4), x, memory)
    p = numpy_params(variables)
    out = layer.apply(variables, x, memory, query_pos=query_pos, key_pos=key_pos)
    expected = cross_attention(p, np.asarray(x + query_pos), np.asarray(memory + key_pos),
                               np.asarray(memory))
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.slow
def test_post_ln_blocks_are_detrs_encoder_and_decoder_layers():
    src, pos = normal(0, (2, 6, D)), normal(1, (2, 6, D))
    valid = np.array([[True] * 6, [True] * 4 + [False] * 2])
    mask = jnp.asarray(valid)[:, None, None, :]
    block = dict(num_heads=HEADS, mlp_dim=32, norm_first=False, activation=jax.nn.relu)

    encoder = TransformerBlock(**block)
    variables = encoder.init(jax.random.key(2), src, mask=mask, pos=pos)
    out = encoder.apply(variables, src, mask=mask, pos=pos)
    expected = encoder_layer(numpy_params(variables), np.asarray(src), np.asarray(pos), valid)
    np.testing.assert_allclose(out, expected, atol=1e-5)

    tgt, query_pos = normal(3, (2, 3, D)), normal(4, (1, 3, D))
    decoder = TransformerBlock(**block, cross_attention=True)
    variables = decoder.init(jax.random.key(5), tgt, src, cross_mask=mask, pos=query_pos,
                             encoded_pos=pos)
    out = decoder.apply(variables, tgt, src, cross_mask=mask, pos=query_pos, encoded_pos=pos)
    expected = decoder_layer(numpy_params(variables), np.asarray(tgt), np.asarray(src),
                             np.asarray(query_pos), np.asarray(pos), valid)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_stack_passes_positions_to_every_block_scanned_or_not():
    x, pos = normal(0, (2, 5, D)), normal(1, (2, 5, D))
    loop = TransformerStack(2, HEADS, 32, norm_first=False)
    variables = loop.init(jax.random.key(2), x, pos=pos)
    out = loop.apply(variables, x, pos=pos)
    params = variables["params"]
    expected = x
    for i in range(2):
        expected = TransformerBlock(HEADS, 32, norm_first=False).apply(
            {"params": params[f"block_{i}"]}, expected, pos=pos)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert not np.allclose(out, loop.apply(variables, x), atol=1e-3)

    scanned = TransformerStack(2, HEADS, 32, norm_first=False, scan_layers=True, remat=True)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), params["block_0"],
                           params["block_1"])
    np.testing.assert_allclose(scanned.apply({"params": {"layers": stacked}}, x, pos=pos), out,
                               atol=1e-5)


def test_key_positions_need_cross_attention():
    x = jnp.zeros((1, 2, D))
    with pytest.raises(ValueError, match="key_pos is for cross-attention"):
        MultiHeadAttention(HEADS).init(jax.random.key(0), x, key_pos=x)
