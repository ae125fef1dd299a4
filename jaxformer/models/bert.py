"""BERT: a bidirectional transformer encoder (Devlin et al., 2019).

The input is `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, padded with id 0 ([PAD]). Token,
learned position and segment (token type) embeddings are summed, normalised (LayerNorm,
epsilon 1e-12) and run through post-LN encoder blocks (exact GELU, biases everywhere; padded
keys are masked out of attention, see `attention_mask`). A pooler (dense + tanh) reads the
[CLS] token (position 0). The LayerNorm epsilon and the activation (of the blocks and of the
masked-LM head) are options, for checkpoints that differ (`jaxformer.weights.bert`).

The embeddings, blocks and pooler live under one parameter subtree, `encoder`, so that a
fine-tuning model starts from a pretraining run with `init_from.mapping =
(("encoder", "encoder"),)`. The heads:
  * `BertForPreTraining`: the masked-LM head (dense + GELU + LayerNorm, then a decoder tied to
    the token embedding, with its own output bias) at the gathered masked positions, and the
    next-sentence head (dense to 2) on the pooled output;
  * `BertClassifier`: dropout + dense on the pooled output (single sentences and pairs);
  * `BertTokenClassifier`: dropout + dense on every token (no pooler, as Hugging Face's
    `BertForTokenClassification`);
  * `BertSpanClassifier`: dense to 2 (answer start, end) on every token (no pooler, as
    `BertForQuestionAnswering`).

Weights are initialised as the reference implementation: truncated normal(0.02) (cut at two
standard deviations), zero biases, LayerNorm scale 1 and bias 0. With vocab 30,522,
`BertForPreTraining` has 110,106,428 parameters for `base` and 336,226,108 for `large`, as the
Hugging Face checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from jaxformer.layers import (
    Dense,
    LearnedPositionalEmbedding,
    TokenEmbedding,
    TransformerStack,
    gelu_exact,
    gelu_tanh,
    make_padding_mask,
)
from jaxformer.models import variants

# Sizes of BERT (Table 1 of the paper) and of the miniatures of Turc et al. (2019), which fit
# a CPU. The MLP is 4x the width everywhere.
SIZE_KEYS = ("num_layers", "d_model", "num_heads", "mlp_dim")  # What a variant sets.
VARIANTS: dict[str, dict[str, int]] = {
    "base": dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
    "large": dict(num_layers=24, d_model=1024, num_heads=16, mlp_dim=4096),
    "tiny": dict(num_layers=2, d_model=128, num_heads=2, mlp_dim=512),
    "mini": dict(num_layers=4, d_model=256, num_heads=4, mlp_dim=1024),
    "small": dict(num_layers=4, d_model=512, num_heads=8, mlp_dim=2048),
    "medium": dict(num_layers=8, d_model=512, num_heads=8, mlp_dim=2048),
}
HEADS = ("pretraining", "sequence", "token", "span")
PAD_ID = 0
LAYER_NORM_EPSILON = 1e-12
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu_exact, "gelu_tanh": gelu_tanh, "relu": jax.nn.relu}


def default_init() -> Callable[..., jax.Array]:
    """The reference initialiser: normal(0.02) truncated at two standard deviations."""
    return nn.initializers.truncated_normal(stddev=0.02)


def attention_mask(input_ids: jax.Array) -> jax.Array:
    """`[batch, 1, 1, seq]`: every query sees the keys that are not [PAD], and always the
    first one ([CLS] in a real row), so that an all-padding row (of an eval batch) has no
    fully masked softmax."""
    first = jnp.arange(input_ids.shape[1]) == 0
    return make_padding_mask(input_ids, PAD_ID) | first[None, None, None, :]


class _EncoderFields(nn.Module):
    """The fields of `BertEncoder`, shared by the models that wrap it with heads."""

    vocab_size: int
    num_layers: int
    num_heads: int
    d_model: int
    mlp_dim: int
    max_position: int = 512
    type_vocab: int = 2
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False
    causal: bool = False
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: Callable[[jax.Array], jax.Array] = gelu_exact

    def make_encoder(self, **options) -> BertEncoder:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(_EncoderFields)
                  if f.name not in ("parent", "name")}
        return BertEncoder(**fields, **options, name="encoder")


class BertEncoder(_EncoderFields):
    """Embeddings, encoder blocks and pooler: `(input_ids, segment_ids)` -> (sequence, pooled).

    Attributes:
      vocab_size: number of token ids (0 is [PAD]).
      num_layers: encoder blocks.
      num_heads: attention heads per block.
      d_model: hidden width.
      mlp_dim: hidden width of the block MLPs.
      max_position: size of the position table (the longest input).
      type_vocab: number of segment ids.
      dropout_rate: dropout after the embeddings and on every residual branch.
      attention_dropout_rate: dropout on the attention weights.
      dtype: computation dtype (parameters are float32).
      remat: recompute each block's activations in the backward pass.
      scan_layers: run the blocks under `nn.scan`.
      causal: left-to-right attention (the LTR ablation of the paper's Table 5): each token
        sees itself and the tokens before it, and the pooler reads the last real token, the
        only one that has seen the whole input.
      layer_norm_epsilon: epsilon of every LayerNorm.
      activation: the MLP non-linearity (and that of the masked-LM head).
      add_pooler: whether the encoder has the pooler (without it, pooled is None).
    """

    add_pooler: bool = True

    def setup(self):
        init = default_init()
        self.token_embedding = TokenEmbedding(self.vocab_size, self.d_model,
                                              embedding_init=init, dtype=self.dtype)
        self.position_embedding = LearnedPositionalEmbedding(
            self.max_position, self.d_model, embedding_init=init, dtype=self.dtype)
        self.segment_embedding = TokenEmbedding(self.type_vocab, self.d_model,
                                                embedding_init=init, dtype=self.dtype)
        self.embedding_norm = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.transformer = TransformerStack(
            num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            norm_first=False, causal=self.causal, activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon, use_bias=True, kernel_init=init,
            dtype=self.dtype, remat=self.remat, scan_layers=self.scan_layers)
        if self.add_pooler:
            self.pooler = Dense(self.d_model, kernel_init=init, dtype=self.dtype)

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, *,
                 train: bool = False) -> tuple[jax.Array, jax.Array | None]:
        """int32 `[batch, seq]` ids and segment ids -> (`[batch, seq, d_model]`,
        pooled `[batch, d_model]`), in `dtype`."""
        x = self.token_embedding(input_ids)
        x = x + self.position_embedding(input_ids.shape[1])
        x = x + self.segment_embedding(segment_ids)
        x = self.dropout(self.embedding_norm(x), deterministic=not train)
        x = self.transformer(x, mask=attention_mask(input_ids), train=train)
        if not self.add_pooler:
            return x, None
        return x, jnp.tanh(self.pooler(self.pooled_token(x, input_ids)))

    def pooled_token(self, x: jax.Array, input_ids: jax.Array) -> jax.Array:
        """`[batch, d_model]`: the [CLS] token's state, or with `causal` the last real token's."""
        if not self.causal:
            return x[:, 0]
        last = jnp.maximum(jnp.sum(input_ids != PAD_ID, axis=1) - 1, 0)
        return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]

    def embedding_matrix(self) -> jax.Array:
        """The token embedding table `[vocab_size, d_model]` (float32), for tied decoders."""
        return self.token_embedding.embedding


@jax.custom_vjp
def tied_logits(x: jax.Array, embedding: jax.Array) -> jax.Array:
    """`x @ embedding.T`, `[n, d]` and `[vocab, d]` -> `[n, vocab]`, whose embedding gradient
    is computed as `(x.T @ g).T`.

    Autodiff's `g.T @ x` contracts the rows of both operands, a layout that XLA's CPU backend
    runs ~1.7x slower than `x.T @ g` at the masked-LM head's shapes (BERT-tiny, `[640, 8192]`
    logits per device: 35 -> 21 ms); the optimization barrier keeps XLA from folding the
    transpose back into the dot. It is the same product, summed over the same axis (the
    gradients of the train step came out bit-identical to autodiff's in a check).
    """
    return x @ embedding.T


def _tied_logits_fwd(x, embedding):
    return x @ embedding.T, (x, embedding)


def _tied_logits_bwd(residuals, g):
    x, embedding = residuals
    return g @ embedding, jax.lax.optimization_barrier(x.T @ g).T


tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)


class MaskedLMHead(nn.Module):
    """Hidden states `[..., d]` -> float32 vocabulary logits `[..., vocab]`: dense + GELU (or
    `activation`) + LayerNorm, then `x @ embedding.T + output_bias` with the (tied)
    `embedding` passed in."""

    vocab_size: int
    dtype: Any = jnp.float32
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: Callable[[jax.Array], jax.Array] = gelu_exact

    @nn.compact
    def __call__(self, x: jax.Array, embedding: jax.Array) -> jax.Array:
        x = Dense(x.shape[-1], kernel_init=default_init(), dtype=self.dtype, name="transform")(x)
        x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                         name="norm")(self.activation(x))
        bias = self.param("output_bias", nn.initializers.zeros_init(), (self.vocab_size,))
        lead = x.shape[:-1]
        logits = tied_logits(x.astype(self.dtype).reshape(-1, x.shape[-1]),
                             embedding.astype(self.dtype))
        return logits.reshape(*lead, self.vocab_size).astype(jnp.float32) + bias


class BertForPreTraining(_EncoderFields):
    """BERT with its pretraining heads: `(input_ids, segment_ids, mlm_positions)` ->
    (masked-LM logits `[batch, P, vocab]`, next-sentence logits `[batch, 2]`), float32.

    Logits are computed only at the `P` gathered `mlm_positions` (int32 `[batch, P]`), not at
    every token. Next-sentence class 0 is IsNext, 1 NotNext.
    """

    def setup(self):
        self.encoder = self.make_encoder()
        self.mlm_head = MaskedLMHead(self.vocab_size, dtype=self.dtype,
                                     layer_norm_epsilon=self.layer_norm_epsilon,
                                     activation=self.activation)
        self.nsp_head = Dense(2, kernel_init=default_init(), dtype=self.dtype)

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, mlm_positions: jax.Array,
                 *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        sequence, pooled = self.encoder(input_ids, segment_ids, train=train)
        gathered = jnp.take_along_axis(sequence, mlm_positions[..., None], axis=1)  # [b, P, d]
        mlm_logits = self.mlm_head(gathered, self.encoder.embedding_matrix())
        nsp_logits = self.nsp_head(pooled).astype(jnp.float32)
        return mlm_logits, nsp_logits


class BertClassifier(_EncoderFields):
    """Sequence (or sentence-pair) classifier: `(input_ids, segment_ids)` -> float32 logits
    `[batch, num_classes]`, from dropout + dense on the pooled [CLS] output."""

    num_classes: int = 2

    def setup(self):
        self.encoder = self.make_encoder()
        self.classifier_dropout = nn.Dropout(self.dropout_rate)
        self.classifier = Dense(self.num_classes, kernel_init=default_init(), dtype=self.dtype)

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, *,
                 train: bool = False) -> jax.Array:
        _, pooled = self.encoder(input_ids, segment_ids, train=train)
        pooled = self.classifier_dropout(pooled, deterministic=not train)
        return self.classifier(pooled).astype(jnp.float32)


class BertTokenClassifier(_EncoderFields):
    """Token classifier (tagging): `(input_ids, segment_ids)` -> float32 logits
    `[batch, seq, num_classes]`, from dropout + dense on every token."""

    num_classes: int = 2

    def setup(self):
        self.encoder = self.make_encoder(add_pooler=False)
        self.classifier_dropout = nn.Dropout(self.dropout_rate)
        self.classifier = Dense(self.num_classes, kernel_init=default_init(), dtype=self.dtype)

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, *,
                 train: bool = False) -> jax.Array:
        sequence, _ = self.encoder(input_ids, segment_ids, train=train)
        sequence = self.classifier_dropout(sequence, deterministic=not train)
        return self.classifier(sequence).astype(jnp.float32)


class BertSpanClassifier(_EncoderFields):
    """Answer span extraction (SQuAD): `(input_ids, segment_ids)` -> float32 logits
    `[batch, seq, 2]`, each token's score as the answer's first (`[..., 0]`) and last
    (`[..., 1]`) token, from a dense layer on every token (BERT's `run_squad.py` has no
    dropout there)."""

    def setup(self):
        self.encoder = self.make_encoder(add_pooler=False)
        self.classifier = Dense(2, kernel_init=default_init(), dtype=self.dtype)

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, *,
                 train: bool = False) -> jax.Array:
        sequence, _ = self.encoder(input_ids, segment_ids, train=train)
        return self.classifier(sequence).astype(jnp.float32)


def sizes(config: ml_collections.ConfigDict) -> dict[str, int]:
    """`num_layers`, `d_model`, `num_heads`, `mlp_dim` of a `config.model` block: its variant's,
    or its explicit fields when `variant` is ""."""
    found = variants.choose(config, SIZE_KEYS, family="BERT", variants=VARIANTS)
    if found["d_model"] % found["num_heads"]:
        raise ValueError(f"d_model {found['d_model']} is not divisible by "
                         f"{found['num_heads']} heads")
    return found


def build(
    config: ml_collections.ConfigDict, *, vocab_size: int, head: str = "pretraining",
    num_classes: int = 0, dtype: Any = jnp.float32, remat: bool = False,
) -> nn.Module:
    """A BERT model from the `config.model` subtree.

    Keys: `variant` (a name in `VARIANTS`, or "" to use the explicit size fields
    `num_layers`, `d_model`, `num_heads`, `mlp_dim`; a variant overrides them), and optionally
    `dropout_rate` (0.1), `attention_dropout_rate` (0.1), `max_position` (512), `type_vocab`
    (2), `scan_layers` (false), `causal` (false: see `BertEncoder`), `layer_norm_epsilon`
    (1e-12) and `activation` ("gelu", exact; "gelu_tanh" or "relu").

    Args:
      config: the `model` part of the experiment config.
      vocab_size: number of token ids.
      head: "pretraining" (`BertForPreTraining`), "sequence" (`BertClassifier`), "token"
        (`BertTokenClassifier`) or "span" (`BertSpanClassifier`).
      num_classes: classes of a classifier head.
      dtype: computation dtype.
      remat: recompute each block's activations in the backward pass.
    """
    if head not in HEADS:
        raise ValueError(f"unknown BERT head {head!r}; available: {', '.join(HEADS)}")
    activation = config.get("activation", "gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown model.activation {activation!r}; available: "
                         f"{', '.join(ACTIVATIONS)}")
    fields = dict(
        vocab_size=vocab_size, max_position=config.get("max_position", 512),
        type_vocab=config.get("type_vocab", 2), dropout_rate=config.get("dropout_rate", 0.1),
        attention_dropout_rate=config.get("attention_dropout_rate", 0.1), dtype=dtype,
        remat=remat, scan_layers=config.get("scan_layers", False),
        causal=config.get("causal", False),
        layer_norm_epsilon=config.get("layer_norm_epsilon", LAYER_NORM_EPSILON),
        activation=ACTIVATIONS[activation], **sizes(config))
    if head == "pretraining":
        return BertForPreTraining(**fields)
    if head == "span":
        return BertSpanClassifier(**fields)
    if num_classes < 1:
        raise ValueError(f"a BERT classifier needs at least one class, got {num_classes}")
    cls = BertClassifier if head == "sequence" else BertTokenClassifier
    return cls(num_classes=num_classes, **fields)
