"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Encoder: N blocks of bidirectional self-attention + ReLU feed-forward. Decoder: N blocks of
causal self-attention, cross-attention to the encoder output and feed-forward. Every sub-layer
is `LayerNorm(x + Dropout(f(x)))` (post-LN, the paper's layout) or, as an option, pre-LN with a
final LayerNorm. Token embeddings are scaled by sqrt(d_model) and summed with sinusoidal (or
learned) positions, then dropped out. With a shared vocabulary one embedding table serves the
source, the target and, transposed, the output softmax (paper section 3.4).

With a 37k shared vocabulary, `base` has 63.1M parameters and `big` 214M (the paper: 65M, 213M).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from jaxformer.layers import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    TransformerStack,
    make_padding_mask,
)
from jaxformer.layers.dense import matmul_2d
from jaxformer.models import variants

SIZE_KEYS = ("num_layers", "d_model", "num_heads", "mlp_dim", "dropout_rate")  # A variant's.
VARIANTS: dict[str, dict[str, Any]] = {
    "base": dict(num_layers=6, d_model=512, num_heads=8, mlp_dim=2048, dropout_rate=0.1),
    "big": dict(num_layers=6, d_model=1024, num_heads=16, mlp_dim=4096, dropout_rate=0.3),
    "tiny": dict(num_layers=2, d_model=32, num_heads=4, mlp_dim=64, dropout_rate=0.0),
}
POSITIONS = ("sinusoidal", "learned")


class Transformer(nn.Module):
    """Sequence-to-sequence model: source ids `[b, s]`, target ids `[b, t]` -> logits `[b, t, v]`.

    Id 0 is padding in both sequences. The decoder input is the target shifted right by one,
    starting with `bos_id`.

    Attributes:
      vocab_size: size of the (shared) vocabulary.
      max_len: longest source or target sequence (size of the position tables).
      num_layers: blocks in the encoder and in the decoder.
      num_heads: attention heads.
      d_model: model width.
      mlp_dim: feed-forward hidden width (d_ff).
      head_dim: width of each head's queries, keys and values (d_k = d_v); 0: d_model //
        num_heads.
      dropout_rate: dropout on embeddings and sub-layer outputs (P_drop).
      attention_dropout_rate: dropout on attention weights (not in the paper; tensor2tensor's).
      norm_first: pre-LN instead of the paper's post-LN.
      positions: "sinusoidal" (the paper) or "learned".
      share_embeddings: one table for source, target and output softmax.
      bos_id: first decoder input.
      dtype: computation dtype (logits are float32).
    """

    vocab_size: int
    max_len: int
    num_layers: int = 6
    num_heads: int = 8
    d_model: int = 512
    mlp_dim: int = 2048
    head_dim: int = 0
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    norm_first: bool = False
    positions: str = "sinusoidal"
    share_embeddings: bool = True
    bos_id: int = 1
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; available: "
                             f"{', '.join(POSITIONS)}")
        # N(0, d^-0.5) so that the sqrt(d)-scaled embeddings have unit variance.
        embed = lambda name: TokenEmbedding(  # noqa: E731
            self.vocab_size, self.d_model, dtype=self.dtype, name=name,
            embedding_init=nn.initializers.normal(stddev=self.d_model**-0.5))
        self.source_embedding = embed("embedding" if self.share_embeddings else "source_embedding")
        self.target_embedding = (self.source_embedding if self.share_embeddings
                                 else embed("target_embedding"))
        if not self.share_embeddings:
            self.output = self.param("output_kernel", nn.initializers.xavier_uniform(),
                                     (self.d_model, self.vocab_size))
        position = (SinusoidalPositionalEncoding if self.positions == "sinusoidal"
                    else LearnedPositionalEmbedding)
        self.source_positions = position(self.max_len, self.d_model, dtype=self.dtype)
        self.target_positions = position(self.max_len, self.d_model, dtype=self.dtype)
        if self.head_dim < 0:
            raise ValueError(f"head_dim must be >= 0 (0: d_model // num_heads), got "
                             f"{self.head_dim}")
        qkv_features = self.num_heads * self.head_dim or None
        stack = lambda causal, name: TransformerStack(  # noqa: E731
            num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
            qkv_features=qkv_features,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            norm_first=self.norm_first, causal=causal, cross_attention=causal,
            activation=jax.nn.relu, layer_norm_epsilon=1e-6,
            kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype, remat=self.remat,
            name=name)
        self.encoder = stack(False, "encoder")
        self.decoder = stack(True, "decoder")
        self.embedding_dropout = nn.Dropout(self.dropout_rate)

    def __call__(self, inputs: jax.Array, targets: jax.Array, *, train: bool = False
                 ) -> jax.Array:
        """Teacher-forced next-token logits for every target position."""
        encoded = self.encode(inputs, train=train)
        return self.decode(encoded, inputs, shift_right(targets, self.bos_id), train=train)

    def encode(self, inputs: jax.Array, *, train: bool = False) -> jax.Array:
        """Source ids `[b, s]` -> encoder output `[b, s, d_model]`; padded keys are masked."""
        x = self._embed(self.source_embedding, self.source_positions, inputs, train, False)
        return self.encoder(x, mask=make_padding_mask(inputs), train=train)

    def decode(self, encoded: jax.Array, inputs: jax.Array, decoder_inputs: jax.Array, *,
               train: bool = False, decode: bool = False) -> jax.Array:
        """Decoder logits `[b, t, vocab]` (float32) for decoder inputs `[b, t]`.

        `inputs` (the source ids) supply the cross-attention padding mask. With `decode=True`
        the call extends the self-attention KV cache by the given positions, starting from a
        cache made by `init_cache`.
        """
        x = self._embed(self.target_embedding, self.target_positions, decoder_inputs, train,
                        decode)
        # Keys only: queries at padded positions produce outputs that no loss or step reads.
        cross_mask = make_padding_mask(inputs)
        mask = None  # Decoding: the cache mask is causal, and decoder inputs are never padding.
        if not decode:  # The decoder blocks add the causal mask to this padding mask.
            mask = make_padding_mask(decoder_inputs).at[:, :, :, 0].set(True)  # BOS is real.
        x = self.decoder(x, encoded, mask=mask, cross_mask=cross_mask, train=train,
                         decode=decode)
        if self.share_embeddings:
            return self.target_embedding.attend(x)
        return matmul_2d(x, self.output.astype(self.dtype)).astype(jnp.float32)

    def _embed(self, table: TokenEmbedding, positions: nn.Module, tokens: jax.Array,
               train: bool, decode: bool) -> jax.Array:
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len {self.max_len}")
        x = table(tokens) * jnp.sqrt(jnp.asarray(self.d_model, self.dtype))
        x = x + positions(tokens.shape[1], decode=decode)
        return self.embedding_dropout(x, deterministic=not train)


def shift_right(targets: jax.Array, bos_id: int) -> jax.Array:
    """Decoder inputs: `bos_id` followed by all but the last target token."""
    return jnp.concatenate(
        [jnp.full_like(targets[:, :1], bos_id), targets[:, :-1]], axis=1)


def build(config: ml_collections.ConfigDict, *, vocab_size: int, max_len: int, bos_id: int,
          dtype: Any, remat: bool) -> Transformer:
    """A `Transformer` from the `config.model` subtree.

    Keys: `variant` (a name in `VARIANTS`, or "" for the explicit size fields `num_layers`,
    `d_model`, `num_heads`, `mlp_dim`, `dropout_rate`), `attention_dropout_rate`,
    `norm_first`, `positions`, `share_embeddings` and, optionally, `head_dim` (0, the default:
    d_model // num_heads). A variant overrides the size fields.
    """
    sizes = variants.choose(config, SIZE_KEYS, family="Transformer", variants=VARIANTS)
    return Transformer(
        vocab_size=vocab_size, max_len=max_len, bos_id=bos_id, dtype=dtype, remat=remat,
        attention_dropout_rate=config.attention_dropout_rate, norm_first=config.norm_first,
        positions=config.positions, share_embeddings=config.share_embeddings,
        head_dim=config.get("head_dim", 0), **sizes)
