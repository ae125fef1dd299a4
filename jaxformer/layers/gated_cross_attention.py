"""Flamingo's gated cross-attention from text to the visual tokens of interleaved images.

Flamingo ("Flamingo: a Visual Language Model for Few-Shot Learning", Alayrac et al. 2022)
inserts GATED XATTN-DENSE blocks between the layers of a frozen language model. Text tokens
cross-attend to the resampled visual tokens of the most recent `<image>` token before them
(tokens before any image attend to nothing and get 0); both residual branches are scaled by
`tanh` of a gate initialised at 0, so that at initialisation the block is the identity and the
language model is unchanged.

A text position's image is given by its `text_time`: the 1-based index of the most recent
`<image>` token at or before it (`media_time`), 0 before the first. The block takes
`text_time` for the positions it processes rather than the whole token sequence, so that a
KV-cached decode step can pass the `text_time` of the new positions only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxformer.layers.attention import MultiHeadAttention
from jaxformer.layers.mlp import MLP, gelu_exact


def media_time(tokens: jax.Array, media_token_id: int) -> jax.Array:
    """int32 `[batch, seq]`: number of `media_token_id` tokens at or before each position.

    This is the 1-based index of the most recent media item, 0 before the first one.
    """
    return jnp.cumsum(tokens == media_token_id, axis=-1, dtype=jnp.int32)


def media_attention_mask(text_time: jax.Array, num_media: int, num_latents: int) -> jax.Array:
    """bool `[batch, 1, seq, num_media * num_latents]`: text attends to its own media only.

    Position t may attend to the `num_latents` visual tokens of media item `text_time[t]`
    (1-based), and to nothing when `text_time[t]` is 0 (or beyond `num_media`).
    """
    media_index = jnp.repeat(jnp.arange(1, num_media + 1, dtype=jnp.int32), num_latents)
    return text_time[:, None, :, None] == media_index[None, None, None, :]


class MaskedCrossAttention(nn.Module):
    """LayerNorm'd text attends to the visual tokens of its most recent media item.

    Queries from the normalised text (`dim -> heads * head_dim`), keys and values from the
    visual tokens (`dim_visual -> 2 * heads * head_dim`), output back to `dim`; no biases.
    Positions that see no visual token (before the first media item) output exactly 0.
    """

    num_heads: int = 8
    head_dim: int = 64
    layer_norm_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, visual: jax.Array, text_time: jax.Array) -> jax.Array:
        """Cross-attention from text to visual tokens.

        Args:
          x: text `[batch, seq, dim]`.
          visual: visual tokens `[batch, num_media, num_latents, dim_visual]`.
          text_time: int `[batch, seq]`, the media item (1-based, 0 = none) of each position.

        Returns:
          `[batch, seq, dim]`, 0 at positions with `text_time` 0.
        """
        batch, num_media, num_latents, dim_visual = visual.shape
        visual = visual.reshape(batch, num_media * num_latents, dim_visual)
        mask = media_attention_mask(text_time, num_media, num_latents)  # [b, 1, seq, kv]
        sees_media = mask.any(axis=-1, keepdims=True)  # [b, 1, seq, 1]
        # Rows with no visible key attend to every key (well defined, finite gradients on every
        # backend); their output is then replaced by 0.
        mask = mask | ~sees_media
        x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="norm")(x)
        out = MultiHeadAttention(
            num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim, use_bias=False,
            dtype=self.dtype, param_dtype=self.param_dtype, name="attention",
        )(x, visual, mask=mask)  # [b, seq, dim]
        return jnp.where(sees_media[:, 0], out, jnp.zeros((), out.dtype))


class GatedCrossAttentionBlock(nn.Module):
    """Flamingo's GATED XATTN-DENSE block, the identity at initialisation.

    `y = x + tanh(attention_gate) * MaskedCrossAttention(x, visual, text_time)`,
    `out = y + tanh(mlp_gate) * MLP(LayerNorm(y))`, with scalar gates initialised to 0 and an
    MLP `dim -> dim * mlp_ratio -> dim` (exact GELU, no biases).

    Attributes:
      num_heads: attention heads.
      head_dim: width of each head.
      mlp_ratio: feed-forward hidden width, as a multiple of `dim`.
      gated: False drops the gates (plain residual branches: the ablation of Flamingo's
        Table 3, not the identity at initialisation).
      layer_norm_epsilon: LayerNorm epsilon.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    num_heads: int = 8
    head_dim: int = 64
    mlp_ratio: int = 4
    gated: bool = True
    layer_norm_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, visual: jax.Array, text_time: jax.Array) -> jax.Array:
        """`[batch, seq, dim]` -> `[batch, seq, dim]`; arguments as `MaskedCrossAttention`."""
        def gate(name: str) -> jax.Array:  # tanh of a scalar that starts at 0; 1 ungated.
            if not self.gated:
                return jnp.ones((), self.param_dtype)
            return jnp.tanh(self.param(name, nn.initializers.zeros_init(), (),
                                       self.param_dtype))

        h = MaskedCrossAttention(
            num_heads=self.num_heads, head_dim=self.head_dim,
            layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype,
            param_dtype=self.param_dtype, name="cross_attention",
        )(x, visual, text_time)
        x = x + (gate("attention_gate") * h).astype(x.dtype)

        h = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="mlp_norm")(x)
        h = MLP(x.shape[-1] * self.mlp_ratio, activation=gelu_exact, use_bias=False,
                dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")(h)
        return x + (gate("mlp_gate") * h).astype(x.dtype)
