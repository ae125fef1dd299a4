"""Transformer blocks (pre- or post-LayerNorm) and a stack of them.

One `TransformerBlock` covers the three classic layouts:
  * encoder block: bidirectional self-attention + MLP (`causal=False`);
  * decoder-only block (GPT): causal self-attention + MLP (`causal=True`);
  * encoder-decoder decoder block: causal self-attention + cross-attention to the encoder
    output + MLP (`causal=True, cross_attention=True`).
Every sub-layer is wrapped as `x + dropout(f(norm(x)))` (`norm_first=True`, pre-LN as in
GPT-2 and ViT) or `norm(x + dropout(f(x)))` (`norm_first=False`, post-LN as in the original
Transformer and BERT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxformer.layers.attention import MultiHeadAttention
from jaxformer.layers.mlp import MLP, gelu_tanh

Initializer = Callable[..., jax.Array]


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention and MLP, each with a residual connection.

    Attributes:
      num_heads: attention heads.
      mlp_dim: hidden width of the MLP.
      qkv_features: total width of queries, keys and values (heads * head_dim); None: the
        model width.
      dropout_rate: dropout on each sub-layer output before the residual add.
      attention_dropout_rate: dropout on the attention weights.
      norm_first: pre-LN (True) or post-LN (False).
      causal: causal self-attention.
      cross_attention: add a cross-attention sub-layer attending to `encoded`.
      activation: MLP non-linearity.
      layer_norm_epsilon: LayerNorm epsilon.
      use_bias: biases in the Dense layers.
      kernel_init: initializer of the input-side projections.
      out_kernel_init: initializer of the projections that write into the residual stream
        (attention output and MLP output); defaults to `kernel_init`.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    num_heads: int
    mlp_dim: int
    qkv_features: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    norm_first: bool = True
    causal: bool = False
    cross_attention: bool = False
    activation: Callable[[jax.Array], jax.Array] = gelu_tanh
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    out_kernel_init: Initializer | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        encoded: jax.Array | None = None,
        mask: jax.Array | None = None,
        cross_mask: jax.Array | None = None,
        train: bool = False,
        decode: bool = False,
        pos: jax.Array | None = None,
        encoded_pos: jax.Array | None = None,
    ) -> jax.Array:
        """`[batch, seq, d_model]` -> `[batch, seq, d_model]`.

        Args:
          x: the residual stream.
          encoded: encoder output `[batch, src_len, d_enc]` (cross-attention blocks only).
          mask: self-attention mask `[batch, 1 | heads, seq, seq]`, combined with `causal`.
          cross_mask: cross-attention mask `[batch, 1 | heads, seq, src_len]`.
          train: enables dropout.
          decode: self-attention over the KV cache.
          pos: positional embeddings of `x`, `[batch | 1, seq, d_model]`, added to it where it
            is a query or a key (not a value) in every attention sub-layer (DETR).
          encoded_pos: positional embeddings of `encoded`, `[batch | 1, src_len, d_enc]`, added
            to it where it is a key of the cross-attention (DETR).

        The arguments are positional-or-keyword so that `nn.remat` can mark `train` and
        `decode` static.
        """
        attention_norm = self._layer_norm("attention_norm")
        h = attention_norm(x) if self.norm_first else x
        h = self._attention("attention")(
            h, mask=mask, is_causal=self.causal, train=train, decode=decode, query_pos=pos)
        x = self._residual(x, h, attention_norm, train)

        if self.cross_attention:
            if encoded is None:
                raise ValueError("a cross-attention block needs the encoder output `encoded`")
            cross_norm = self._layer_norm("cross_attention_norm")
            h = cross_norm(x) if self.norm_first else x
            h = self._attention("cross_attention")(h, encoded, mask=cross_mask, train=train,
                                                   query_pos=pos, key_pos=encoded_pos)
            x = self._residual(x, h, cross_norm, train)

        mlp_norm = self._layer_norm("mlp_norm")
        h = mlp_norm(x) if self.norm_first else x
        h = MLP(self.mlp_dim, activation=self.activation, use_bias=self.use_bias,
                kernel_init=self.kernel_init, out_kernel_init=self.out_kernel_init,
                dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")(h, train=train)
        return self._residual(x, h, mlp_norm, train)

    def _layer_norm(self, name: str) -> nn.LayerNorm:
        return nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                            param_dtype=self.param_dtype, name=name)

    def _attention(self, name: str) -> MultiHeadAttention:
        return MultiHeadAttention(
            num_heads=self.num_heads, qkv_features=self.qkv_features,
            dropout_rate=self.attention_dropout_rate, use_bias=self.use_bias,
            kernel_init=self.kernel_init, out_kernel_init=self.out_kernel_init,
            dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def _residual(self, x: jax.Array, h: jax.Array, norm: nn.LayerNorm, train: bool) -> jax.Array:
        """`x + dropout(h)`, normalised afterwards in a post-LN block."""
        x = x + nn.Dropout(self.dropout_rate)(h, deterministic=not train)
        return x if self.norm_first else norm(x)


class TransformerStack(nn.Module):
    """`num_layers` transformer blocks; a pre-LN stack ends with a LayerNorm (`final_norm`).

    The block fields mean what they mean on `TransformerBlock`. `remat` recomputes each
    block's activations in the backward pass (less memory, about one more forward pass of
    compute); `scan_layers` runs the blocks under `nn.scan` (one compiled block, parameters
    stacked on a leading `[num_layers]` axis under `layers/`) instead of a Python loop
    (parameters under `block_0`, `block_1`, ...).
    """

    num_layers: int
    num_heads: int
    mlp_dim: int
    qkv_features: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    norm_first: bool = True
    causal: bool = False
    cross_attention: bool = False
    activation: Callable[[jax.Array], jax.Array] = gelu_tanh
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    out_kernel_init: Initializer | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        encoded: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        cross_mask: jax.Array | None = None,
        train: bool = False,
        decode: bool = False,
        pos: jax.Array | None = None,
        encoded_pos: jax.Array | None = None,
    ) -> jax.Array:
        """`[batch, seq, d_model]` -> `[batch, seq, d_model]`; arguments as `TransformerBlock`."""
        block_cls = TransformerBlock
        if self.remat:  # Static: train, decode (arguments 5, 6 counting `self`).
            block_cls = nn.remat(TransformerBlock, static_argnums=(5, 6))
        block_fields = dict(
            num_heads=self.num_heads, mlp_dim=self.mlp_dim, qkv_features=self.qkv_features,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            norm_first=self.norm_first, causal=self.causal, cross_attention=self.cross_attention,
            activation=self.activation, layer_norm_epsilon=self.layer_norm_epsilon,
            use_bias=self.use_bias, kernel_init=self.kernel_init,
            out_kernel_init=self.out_kernel_init, dtype=self.dtype, param_dtype=self.param_dtype)

        if self.scan_layers:
            def body(block: nn.Module, carry: jax.Array, _) -> tuple[jax.Array, None]:
                return block(carry, encoded, mask, cross_mask, train, decode, pos,
                             encoded_pos), None

            scan = nn.scan(
                body, length=self.num_layers,
                variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                split_rngs={"params": True, "dropout": True})
            x, _ = scan(block_cls(**block_fields, name="layers"), x, None)
        else:
            for i in range(self.num_layers):
                x = block_cls(**block_fields, name=f"block_{i}")(
                    x, encoded, mask, cross_mask, train, decode, pos, encoded_pos)

        if self.norm_first:
            x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                             param_dtype=self.param_dtype, name="final_norm")(x)
        return x
