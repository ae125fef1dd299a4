"""GPT-2: a decoder-only transformer language model (Radford et al., 2019; after nanoGPT).

Pre-LN blocks of causal self-attention and a 4x GELU MLP, learned absolute positions, a final
LayerNorm and an output head tied to the token embedding. Weights are initialised as GPT-2:
normal(0.02), with the projections that write into the residual stream scaled down to
normal(0.02 / sqrt(2 * num_layers)); zero biases; LayerNorm scale 1 and bias 0.

With vocab 50257 and block_size 1024, `gpt2-small` has 124,439,808 parameters.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from jaxformer.layers import LearnedPositionalEmbedding, TokenEmbedding, TransformerStack
from jaxformer.models import variants

SIZE_KEYS = ("num_layers", "num_heads", "d_model")  # What a variant sets.
VARIANTS: dict[str, dict[str, int]] = {
    "gpt2-small": dict(num_layers=12, num_heads=12, d_model=768),
    "gpt2-medium": dict(num_layers=24, num_heads=16, d_model=1024),
    "gpt2-large": dict(num_layers=36, num_heads=20, d_model=1280),
    "gpt2-xl": dict(num_layers=48, num_heads=25, d_model=1600),
    "nano": dict(num_layers=4, num_heads=4, d_model=128),  # nanoGPT's CPU Shakespeare recipe.
    "tiny": dict(num_layers=2, num_heads=2, d_model=32),  # For tests.
}


EMBEDDING_INIT = nn.initializers.normal(stddev=0.02)


class GPT(nn.Module):
    """GPT-2 language model: int32 tokens `[batch, seq]` -> float32 logits `[batch, seq, vocab]`.

    Attributes:
      vocab_size: number of token ids.
      block_size: maximum context length (size of the position table).
      num_layers: transformer blocks.
      num_heads: attention heads per block.
      d_model: width of the residual stream.
      mlp_ratio: MLP hidden width / d_model.
      layer_norm_epsilon: epsilon of every LayerNorm.
      dropout_rate: dropout on embeddings, residual branches and attention weights.
      dtype: computation dtype (parameters are float32; logits are always float32).
      remat: recompute each block's activations in the backward pass.
      scan_layers: run the blocks under `nn.scan` instead of a Python loop.
    """

    vocab_size: int
    block_size: int
    num_layers: int
    num_heads: int
    d_model: int
    mlp_ratio: int = 4
    layer_norm_epsilon: float = 1e-5
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False

    @nn.compact
    def __call__(
        self, tokens: jax.Array, *, train: bool = False, decode: bool = False
    ) -> jax.Array:
        """Next-token logits for every position.

        With `decode=True` the call extends the KV cache: `tokens` are the next positions
        (`[batch, 1]` for one step, or a whole prompt at once), placed after those already
        cached. The cache is created by `init(..., decode=True)` with `[batch, max_len]` tokens
        (see `jaxformer.decode.init_cache`).
        """
        seq_len = tokens.shape[1]
        if seq_len > self.block_size:
            raise ValueError(f"sequence length {seq_len} exceeds block_size {self.block_size}")
        token_embedding = TokenEmbedding(
            self.vocab_size, self.d_model, embedding_init=EMBEDDING_INIT, dtype=self.dtype,
            name="token_embedding")
        x = token_embedding(tokens)  # [batch, seq, d_model]
        x = x + LearnedPositionalEmbedding(
            self.block_size, self.d_model, embedding_init=EMBEDDING_INIT, dtype=self.dtype,
            name="position_embedding")(seq_len, decode=decode)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)

        x = TransformerStack(
            num_layers=self.num_layers, remat=self.remat, scan_layers=self.scan_layers,
            name="transformer", **block_fields(self))(x, train=train, decode=decode)

        return token_embedding.attend(x)  # [batch, seq, vocab], float32


def block_fields(gpt: GPT) -> dict[str, Any]:
    """The fields of each of `gpt`'s `TransformerBlock`s (pre-LN, causal, GPT-2's
    initialisation), for models that run a GPT's blocks one at a time."""
    return dict(
        num_heads=gpt.num_heads, mlp_dim=gpt.mlp_ratio * gpt.d_model,
        dropout_rate=gpt.dropout_rate, attention_dropout_rate=gpt.dropout_rate, norm_first=True,
        causal=True, layer_norm_epsilon=gpt.layer_norm_epsilon, kernel_init=EMBEDDING_INIT,
        out_kernel_init=nn.initializers.normal(stddev=0.02 / math.sqrt(2 * gpt.num_layers)),
        dtype=gpt.dtype)


def build(
    config: ml_collections.ConfigDict, *, vocab_size: int, block_size: int, dtype: Any,
    remat: bool
) -> GPT:
    """A `GPT` from the `config.model` subtree, for windows of `block_size` tokens.

    Keys: `variant` (a name in `VARIANTS`, or "" to use the explicit size fields),
    `num_layers`, `num_heads`, `d_model`, `mlp_ratio`, `dropout_rate`, and optionally
    `scan_layers`, `layer_norm_epsilon` (1e-5) and `max_positions` (the size of the position
    table, at least `block_size`; 0 or absent: `block_size`, e.g. a pretrained model's
    1024 positions read in shorter windows). A variant overrides the size fields.
    """
    if config.mlp_ratio < 1:
        raise ValueError(f"model.mlp_ratio must be at least 1, got {config.mlp_ratio}")
    return GPT(
        vocab_size=vocab_size, block_size=max_positions(config, block_size),
        mlp_ratio=config.mlp_ratio,
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
        dropout_rate=config.dropout_rate, dtype=dtype, remat=remat,
        scan_layers=config.get("scan_layers", False), **sizes(config))


def max_positions(config: ml_collections.ConfigDict, block_size: int) -> int:
    """The size of the position table: `max_positions` where set, else `block_size`."""
    positions = config.get("max_positions", 0) or block_size
    if positions < block_size:
        raise ValueError(f"data.block_size {block_size} exceeds model.max_positions "
                         f"{positions}")
    return positions


def sizes(config: ml_collections.ConfigDict) -> dict[str, int]:
    """`num_layers`, `num_heads`, `d_model` of a `config.model` subtree: its variant's, or
    its explicit fields."""
    return variants.choose(config, SIZE_KEYS, family="GPT", variants=VARIANTS)
