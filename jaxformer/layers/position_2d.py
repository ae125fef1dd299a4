"""DETR's 2-D sine positional encoding of a feature map (Carion et al., 2020).

Each position of a `[batch, h, w]` map gets `num_pos_feats` channels encoding its row and as
many encoding its column: the sine/cosine encoding of "Attention Is All You Need" applied to
the running count of real (unpadded) pixels down its column (`y`) and along its row (`x`).
With `normalize`, both counts are divided by the count at the map's last row (column) and
scaled to `(0, scale]`, so that a real position's encoding depends on where it lies within
the image's own extent, not on how much padding follows it (padding is at the bottom and on
the right). As `PositionEmbeddingSine` of facebookresearch/detr, channels last.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def sine_position_encoding_2d(
    valid: jax.Array, num_pos_feats: int, *, temperature: float = 10_000.0,
    normalize: bool = True, scale: float = 2 * math.pi, dtype: Any = jnp.float32,
) -> jax.Array:
    """Encodings `[batch, h, w, 2 * num_pos_feats]` of a pixel mask `[batch, h, w]`.

    `valid` is true on real pixels. The first `num_pos_feats` channels encode the row, the
    others the column; within each half, channel `2i` is `sin(p / temperature ** (2i / n))`
    and channel `2i + 1` is `cos` of the same angle (`n = num_pos_feats`, which must be even).
    DETR uses `num_pos_feats = d_model / 2`.
    """
    if num_pos_feats % 2:
        raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
    valid = valid.astype(jnp.float32)
    y = jnp.cumsum(valid, axis=1)  # [b, h, w]: real pixels at or above, in the column
    x = jnp.cumsum(valid, axis=2)  # [b, h, w]: real pixels at or left of, in the row
    if normalize:
        eps = 1e-6
        y = y / (y[:, -1:, :] + eps) * scale
        x = x / (x[:, :, -1:] + eps) * scale
    exponent = (2 * (jnp.arange(num_pos_feats) // 2) / num_pos_feats).astype(jnp.float32)
    wavelength = temperature ** exponent  # [n]: channels 2i and 2i + 1 share one

    def encode(p: jax.Array) -> jax.Array:
        angles = p[..., None] / wavelength  # [b, h, w, n]
        sin, cos = jnp.sin(angles[..., 0::2]), jnp.cos(angles[..., 1::2])
        return jnp.stack([sin, cos], axis=-1).reshape(angles.shape)  # sin, cos interleaved

    return jnp.concatenate([encode(y), encode(x)], axis=-1).astype(dtype)
