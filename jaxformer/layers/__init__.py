"""Shared transformer layers: attention, MLP, embeddings, blocks and stacks."""

from jaxformer.layers.attention import (
    MultiHeadAttention,
    attention_weights,
    combine_masks,
    make_attention_mask,
    make_causal_mask,
    make_padding_mask,
)
from jaxformer.layers.dense import Dense, matmul_2d
from jaxformer.layers.embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    sinusoidal_positions,
)
from jaxformer.layers.gated_cross_attention import (
    GatedCrossAttentionBlock,
    MaskedCrossAttention,
    media_attention_mask,
    media_time,
)
from jaxformer.layers.mlp import MLP, gelu_exact, gelu_tanh
from jaxformer.layers.perceiver import PerceiverAttention, PerceiverResampler
from jaxformer.layers.transformer import TransformerBlock, TransformerStack

__all__ = [
    "Dense",
    "GatedCrossAttentionBlock",
    "MLP",
    "LearnedPositionalEmbedding",
    "MaskedCrossAttention",
    "MultiHeadAttention",
    "PerceiverAttention",
    "PerceiverResampler",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "TransformerBlock",
    "TransformerStack",
    "attention_weights",
    "combine_masks",
    "gelu_exact",
    "gelu_tanh",
    "make_attention_mask",
    "make_causal_mask",
    "make_padding_mask",
    "matmul_2d",
    "media_attention_mask",
    "media_time",
    "sinusoidal_positions",
]
