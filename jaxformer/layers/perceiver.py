"""Perceiver Resampler: a fixed number of latent tokens per image (or video) from visual features.

Flamingo ("Flamingo: a Visual Language Model for Few-Shot Learning", Alayrac et al. 2022) maps
the variable number of patch features of each image or video to `num_latents` tokens: learned
latents cross-attend to the features (and to themselves) in `depth` layers of attention and
feed-forward, each with a residual connection. The output shape depends neither on the
number of visual tokens nor on the image resolution.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxformer.layers.attention import MultiHeadAttention
from jaxformer.layers.mlp import MLP, gelu_exact

# Exact (erf) GELU, as torch's nn.GELU().


class PerceiverAttention(nn.Module):
    """Latents attend to `[LayerNorm(media) ; LayerNorm(latents)]`; projections without bias.

    Queries come from the normalised latents, keys and values from the concatenation of the
    normalised media features and the normalised latents. Logits are scaled by
    `head_dim ** -0.5`; the output is projected back to the latent width.
    """

    num_heads: int = 8
    head_dim: int = 64
    layer_norm_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, media: jax.Array, latents: jax.Array) -> jax.Array:
        """media `[batch, tokens, dim]`, latents `[batch, num_latents, dim]` -> like latents."""
        norm = functools.partial(nn.LayerNorm, epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        media = norm(name="media_norm")(media)
        latents = norm(name="latents_norm")(latents)
        kv_inputs = jnp.concatenate([media, latents], axis=1)  # [batch, tokens + latents, dim]
        return MultiHeadAttention(
            num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim, use_bias=False,
            dtype=self.dtype, param_dtype=self.param_dtype, name="attention",
        )(latents, kv_inputs)


class PerceiverResampler(nn.Module):
    """Visual features -> `num_latents` tokens per media item.

    Input `[batch, num_media, num_frames, tokens, dim]` (a media item is an image, one frame,
    or a video, several frames), or `[batch, num_media, tokens, dim]` for single-frame media;
    output `[batch, num_media, num_latents, dim]`. The frames of a media item are flattened
    into one sequence of `num_frames * tokens` keys; media items are resampled independently.

    Attributes:
      depth: number of attention + feed-forward layers.
      num_latents: output tokens per media item.
      num_heads: attention heads.
      head_dim: width of each head.
      mlp_ratio: feed-forward hidden width, as a multiple of `dim`.
      max_num_media: > 0 adds a learned embedding per media position (`media_time_embeddings`,
        `[max_num_media, dim]`) to the features; 0: none.
      max_num_frames: > 0 adds a learned embedding per frame (`frame_embeddings`,
        `[max_num_frames, dim]`) to the features; 0: none.
      layer_norm_epsilon: LayerNorm epsilon.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    depth: int = 6
    num_latents: int = 64
    num_heads: int = 8
    head_dim: int = 64
    mlp_ratio: int = 4
    max_num_media: int = 0
    max_num_frames: int = 0
    layer_norm_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[batch, media, (frames,) tokens, dim]` -> `[batch, media, num_latents, dim]`."""
        if x.ndim == 4:
            x = x[:, :, None]  # One frame per media item.
        if x.ndim != 5:
            raise ValueError(f"expected [batch, media, (frames,) tokens, dim], got {x.shape}")
        batch, num_media, num_frames, tokens, dim = x.shape
        embedding_init = nn.initializers.normal(stddev=1.0)  # torch.randn, as open_flamingo.

        if self.max_num_frames > 0:
            if num_frames > self.max_num_frames:
                raise ValueError(f"{num_frames} frames > max_num_frames={self.max_num_frames}")
            frame_embeddings = self.param("frame_embeddings", embedding_init,
                                          (self.max_num_frames, dim), self.param_dtype)
            x = x + frame_embeddings[:num_frames, None].astype(x.dtype)  # [frames, 1, dim]
        x = x.reshape(batch, num_media, num_frames * tokens, dim)
        if self.max_num_media > 0:
            if num_media > self.max_num_media:
                raise ValueError(f"{num_media} media > max_num_media={self.max_num_media}")
            media_time_embeddings = self.param("media_time_embeddings", embedding_init,
                                               (self.max_num_media, dim), self.param_dtype)
            x = x + media_time_embeddings[:num_media, None].astype(x.dtype)  # [media, 1, dim]

        # Each media item is resampled on its own: fold it into the batch.
        media = x.reshape(batch * num_media, num_frames * tokens, dim)
        latents = self.param("latents", embedding_init, (self.num_latents, dim), self.param_dtype)
        latents = jnp.broadcast_to(latents.astype(self.dtype),
                                   (batch * num_media, self.num_latents, dim))

        norm = functools.partial(nn.LayerNorm, epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        for i in range(self.depth):
            latents = latents + PerceiverAttention(
                num_heads=self.num_heads, head_dim=self.head_dim,
                layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f"attention_{i}",
            )(media, latents)
            h = norm(name=f"mlp_norm_{i}")(latents)
            latents = latents + MLP(
                dim * self.mlp_ratio, activation=gelu_exact, use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f"mlp_{i}",
            )(h)
        latents = norm(name="final_norm")(latents)  # [batch * num_media, num_latents, dim]
        return latents.reshape(batch, num_media, self.num_latents, dim)
