"""Multi-head dot-product attention: self- and cross-attention, masks, dropout, KV cache.

Masks are boolean, `True` where a query may attend to a key, shaped
`[batch, 1 | heads, q_len, kv_len]` (any leading dimension may be 1 to broadcast).

Two execution paths share one set of parameters:
  * `jax.nn.dot_product_attention` (the fused kernel where the backend has one), the
    default on accelerators;
  * an explicit softmax over `[batch, heads, q_len, kv_len]` logits, taken on the CPU backend
    (where its backward is faster: nano GPT on a 2-core CPU, attention forward + backward
    2.8 -> 1.95 ms per layer), when attention dropout is active, or when the weights are
    requested: applying the module with `mutable=["intermediates"]` sows them as
    `intermediates/.../attention_weights` (attention maps for visualisation).
Both serve two modes:
  * full-sequence attention (training, scoring, the first decode call);
  * autoregressive decoding (`decode=True`, self-attention only) over a KV cache kept in the
    'cache' collection (`cached_key`, `cached_value`, `cache_index`), as in flax's lm1b/wmt
    examples. The cache is created by a call whose input length is the cache length (e.g.
    `model.init(..., decode=True)` with `[batch, max_len]` tokens); later calls write their
    keys/values at `cache_index` and attend to every cached position up to their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxformer.layers.dense import Dense, matmul_2d

Initializer = Callable[..., jax.Array]


def make_causal_mask(length: int) -> jax.Array:
    """`[1, 1, length, length]` mask letting position t attend to positions <= t."""
    return jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))[None, None]


def make_attention_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
    """Pairwise mask `[batch, 1, q_len, kv_len]` from per-position validity `[batch, len]`."""
    query_valid = query_valid.astype(jnp.bool_)
    key_valid = key_valid.astype(jnp.bool_)
    return query_valid[:, None, :, None] & key_valid[:, None, None, :]


def make_padding_mask(key_tokens: jax.Array, pad_id: int = 0) -> jax.Array:
    """`[batch, 1, 1, kv_len]` mask hiding padded keys from every query."""
    return (key_tokens != pad_id)[:, None, None, :]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the given masks (broadcasting); `None` entries are skipped."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    combined = masks[0].astype(jnp.bool_)
    for mask in masks[1:]:
        combined = jnp.logical_and(combined, mask)
    return combined


def attention_weights(
    query: jax.Array, key: jax.Array, mask: jax.Array | None = None, *, is_causal: bool = False
) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) in float32, masked: `[batch, heads, q_len, kv_len]`.

    `query` is `[batch, q_len, heads, head_dim]`, `key` is `[batch, kv_len, heads, head_dim]`.
    """
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    logits = logits * query.shape[-1] ** -0.5
    if is_causal:
        q_len, kv_len = logits.shape[-2:]
        causal = jnp.tril(jnp.ones((q_len, kv_len), dtype=jnp.bool_))[None, None]
        mask = combine_masks(mask, causal)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(logits, axis=-1)


def _project_positions(projection: Dense, pos: jax.Array, width: int) -> jax.Array:
    """`pos @ kernel[:, :width]` with the kernel of an applied `projection`, no bias:
    `(x + pos) W + b = (x W + b) + pos W`, so positions reach the first `width` outputs
    (queries and keys) of a fused projection and not the values."""
    kernel = projection.variables["params"]["kernel"][:, :width]
    return matmul_2d(pos.astype(projection.dtype), kernel.astype(projection.dtype))


class MultiHeadAttention(nn.Module):
    """Multi-head attention with fused projections.

    Self-attention (`inputs_kv=None`) projects queries, keys and values with one fused Dense
    (`qkv`, kernel `[d_model, 3 * heads * head_dim]`); cross-attention projects the queries
    (`query`) and the keys/values of `inputs_kv` (`kv`, kernel `[kv_features, 2 * heads *
    head_dim]`) separately. A given module instance must be used in one of the two ways.

    Attributes:
      num_heads: number of attention heads.
      qkv_features: total width of queries/keys/values (heads * head_dim); defaults to the
        width of `inputs_q`.
      out_features: output width; defaults to the width of `inputs_q`.
      dropout_rate: dropout on the attention weights (training only).
      use_bias: whether the projections have biases.
      kernel_init: initializer of the input projections.
      out_kernel_init: initializer of the output projection (defaults to `kernel_init`).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    dropout_rate: float = 0.0
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    out_kernel_init: Initializer | None = None
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        is_causal: bool = False,
        train: bool = False,
        decode: bool = False,
        query_pos: jax.Array | None = None,
        key_pos: jax.Array | None = None,
    ) -> jax.Array:
        """Attends from `inputs_q` `[batch, q_len, d]` to itself or to `inputs_kv`.

        Args:
          inputs_q: queries `[batch, q_len, d_model]`.
          inputs_kv: keys/values `[batch, kv_len, kv_features]` for cross-attention, or None.
          mask: boolean mask `[batch, 1 | heads, q_len, kv_len]`; in decode mode it must span
            the cache length.
          is_causal: apply a causal mask (query t sees keys <= t).
          train: enables attention dropout.
          decode: self-attention over the KV cache (causal by construction). Cross-attention
            keeps no cache: inside a jitted decoding loop the projection of a fixed `inputs_kv`
            is loop-invariant, and XLA computes it once, before the loop.
          query_pos: positional embeddings `[batch | 1, q_len, d_model]` added to `inputs_q`
            where it is projected to queries and, in self-attention, to keys, but not to
            values (DETR).
          key_pos: positional embeddings `[batch | 1, kv_len, kv_features]` added to
            `inputs_kv` where it is projected to keys, not to values (cross-attention).

        Returns:
          `[batch, q_len, out_features]`.
        """
        features = inputs_q.shape[-1]
        qkv_features = self.qkv_features or features
        if qkv_features % self.num_heads:
            raise ValueError(f"qkv_features {qkv_features} not divisible by {self.num_heads} heads")
        head_dim = qkv_features // self.num_heads
        dense = functools.partial(
            Dense, use_bias=self.use_bias, kernel_init=self.kernel_init,
            bias_init=self.bias_init, dtype=self.dtype, param_dtype=self.param_dtype)
        batch, q_len = inputs_q.shape[:2]

        if inputs_kv is None:
            if key_pos is not None:
                raise ValueError("key_pos is for cross-attention; self-attention adds query_pos "
                                 "to its queries and keys")
            qkv_projection = dense(3 * qkv_features, name="qkv")
            qkv = qkv_projection(inputs_q).reshape(batch, q_len, 3, self.num_heads, head_dim)
            query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [b, q, h, d] each
            if query_pos is not None:
                pos = _project_positions(qkv_projection, query_pos, 2 * qkv_features)
                pos = pos.reshape(*query_pos.shape[:2], 2, self.num_heads, head_dim)
                query, key = query + pos[:, :, 0], key + pos[:, :, 1]
        else:
            if query_pos is not None:
                inputs_q = inputs_q + query_pos
            query = dense(qkv_features, name="query")(inputs_q)
            query = query.reshape(batch, q_len, self.num_heads, head_dim)  # [b, q, h, d]
            kv_projection = dense(2 * qkv_features, name="kv")
            kv = kv_projection(inputs_kv)
            kv = kv.reshape(*inputs_kv.shape[:2], 2, self.num_heads, head_dim)
            key, value = kv[:, :, 0], kv[:, :, 1]  # [b, kv, h, d] each
            if key_pos is not None:
                pos = _project_positions(kv_projection, key_pos, qkv_features)
                key = key + pos.reshape(*key_pos.shape[:2], self.num_heads, head_dim)

        if decode and inputs_kv is None:
            key, value, cache_mask = self._update_cache(key, value)
            if cache_mask is not None:  # Cached decoding: the cache mask is already causal.
                mask, is_causal = combine_masks(mask, cache_mask), False

        dropout_active = train and self.dropout_rate > 0.0
        sow_weights = self.is_mutable_collection("intermediates") and not self.is_initializing()
        if dropout_active or sow_weights or jax.default_backend() == "cpu":
            weights = attention_weights(query, key, mask, is_causal=is_causal)
            if sow_weights:
                self.sow("intermediates", "attention_weights", weights)
            weights = nn.Dropout(self.dropout_rate)(weights, deterministic=not dropout_active)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
        else:
            out = jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal)
        # out: [batch, q_len, heads, head_dim]

        return Dense(
            self.out_features or features, use_bias=self.use_bias,
            kernel_init=self.out_kernel_init or self.kernel_init, bias_init=self.bias_init,
            dtype=self.dtype, param_dtype=self.param_dtype, name="out",
        )(out.reshape(batch, q_len, qkv_features))

    def _update_cache(
        self, key: jax.Array, value: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Writes `key`/`value` `[batch, len, heads, head_dim]` at `cache_index`.

        Returns the whole cached keys/values and a mask `[1, 1, len, cache_len]` letting the
        query at cache position `index + i` see positions <= `index + i`. On the call that
        creates the cache, returns the inputs unchanged and no mask.
        """
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:
            return key, value, None

        length, cache_len = key.shape[1], cached_key.value.shape[1]
        index = cache_index.value
        start = (0, index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        cache_index.value = index + length
        query_pos = index + jnp.arange(length)[:, None]  # [len, 1]
        mask = jnp.arange(cache_len)[None, :] <= query_pos  # [len, cache_len]
        return cached_key.value, cached_value.value, mask[None, None]
