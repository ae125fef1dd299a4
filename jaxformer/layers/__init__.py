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
from jaxformer.layers.mlp import MLP, gelu_tanh
from jaxformer.layers.transformer import TransformerBlock, TransformerStack

__all__ = [
    "Dense",
    "MLP",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "TransformerBlock",
    "TransformerStack",
    "attention_weights",
    "combine_masks",
    "gelu_tanh",
    "make_attention_mask",
    "make_causal_mask",
    "make_padding_mask",
    "matmul_2d",
    "sinusoidal_positions",
]
