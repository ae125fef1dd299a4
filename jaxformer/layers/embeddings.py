"""Token embeddings (with a tied output head) and positional embeddings.

The positional modules take a sequence length and return `[1, seq_len, features]`. In decode
mode they keep a `cache_index` in the 'cache' collection, so that successive calls get the
positions that follow the ones already decoded (created, at 0, by the call that creates the
attention caches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxformer.layers.dense import matmul_2d

Initializer = Callable[..., jax.Array]


class TokenEmbedding(nn.Module):
    """Lookup table `[vocab_size, features]`; `attend` reuses it as the output projection."""

    vocab_size: int
    features: int
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding", self.embedding_init, (self.vocab_size, self.features), self.param_dtype)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """int `[batch, seq]` -> `[batch, seq, features]` in `dtype`."""
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output head: `x @ embedding.T`, `[..., features]` -> float32 `[..., vocab]`."""
        embedding = self.embedding.astype(self.dtype)
        return matmul_2d(x.astype(self.dtype), embedding.T).astype(jnp.float32)


def sinusoidal_positions(
    length: int, features: int, max_timescale: float = 10_000.0
) -> np.ndarray:
    """The Transformer's encoding, float32 `[length, features]` ("Attention Is All You Need").

    PE[pos, 2i] = sin(pos / max_timescale^(2i / features)),
    PE[pos, 2i + 1] = cos(pos / max_timescale^(2i / features)).
    """
    if features % 2:
        raise ValueError(f"sinusoidal encoding needs an even number of features, got {features}")
    position = np.arange(length, dtype=np.float64)[:, None]  # [length, 1]
    inv_freq = max_timescale ** (-np.arange(0, features, 2, dtype=np.float64) / features)
    angles = position * inv_freq[None, :]  # [length, features / 2]
    encoding = np.empty((length, features), dtype=np.float64)
    encoding[:, 0::2] = np.sin(angles)
    encoding[:, 1::2] = np.cos(angles)
    return encoding.astype(np.float32)


def _decode_start(module: nn.Module, seq_len: int, decode: bool) -> jax.Array | int:
    """First position of this call: 0, or the decode cache index (advanced by `seq_len`)."""
    if not decode:
        return 0
    initialized = module.has_variable("cache", "cache_index")
    cache_index = module.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not initialized:  # The call that creates the cache covers positions 0..seq_len-1.
        return 0
    start = cache_index.value
    cache_index.value = start + seq_len
    return start


class LearnedPositionalEmbedding(nn.Module):
    """A trained table `[max_length, features]` of absolute positions (GPT-2's `wpe`)."""

    max_length: int
    features: int
    embedding_init: Initializer = nn.initializers.normal(stddev=0.02)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, seq_len: int, *, decode: bool = False) -> jax.Array:
        """Embeddings of the next `seq_len` positions, `[1, seq_len, features]`."""
        if seq_len > self.max_length:
            raise ValueError(f"sequence length {seq_len} exceeds max_length {self.max_length}")
        table = self.param(
            "embedding", self.embedding_init, (self.max_length, self.features), self.param_dtype)
        start = _decode_start(self, seq_len, decode)
        positions = jax.lax.dynamic_slice_in_dim(table, start, seq_len)  # [seq_len, features]
        return positions[None].astype(self.dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding of absolute positions (no parameters)."""

    max_length: int
    features: int
    max_timescale: float = 10_000.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, seq_len: int, *, decode: bool = False) -> jax.Array:
        """Encodings of the next `seq_len` positions, `[1, seq_len, features]`."""
        if seq_len > self.max_length:
            raise ValueError(f"sequence length {seq_len} exceeds max_length {self.max_length}")
        table = jnp.asarray(sinusoidal_positions(self.max_length, self.features,
                                                 self.max_timescale))
        start = _decode_start(self, seq_len, decode)
        positions = jax.lax.dynamic_slice_in_dim(table, start, seq_len)  # [seq_len, features]
        return positions[None].astype(self.dtype)
