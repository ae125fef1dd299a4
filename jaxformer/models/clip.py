"""CLIP: contrastive language-image pretraining (Radford et al., 2021: "Learning Transferable
Visual Models From Natural Language Supervision").

Two towers map images and texts into one embedding space:
  * the image tower is a `ViTEncoder` with CLIP's options (no patch bias, a LayerNorm
    `pre_norm` before the blocks, LayerNorm epsilon 1e-5 by default); the pooled [class]
    token (or the mean of the patch tokens with `pool_type="gap"`) after the stack's final
    LayerNorm (CLIP's `ln_post`) is projected linearly, without bias, to `embed_dim`;
  * the text tower embeds tokens and learned positions, runs causal pre-LN blocks and a final
    LayerNorm, and projects (without bias) the features at the end-of-text token: the first
    token equal to `eot_id` in each row (the last position when a row has none), the
    tokenizer's end of text. With causal attention that feature depends on the tokens up to
    the EOT only, so the padding after it (whatever its id) needs no mask.
Both embeddings are L2-normalised (float32). The logits of a pair are `logit_scale * x . y`
with a learned temperature `logit_scale = exp(log_scale)`, initialised to 1 / 0.07 and never
above 100 (the parameter is clipped at log(100) in the forward pass).

With `loss="sigmoid"` the model is set up for SigLIP's pairwise sigmoid loss (Zhai et al.,
2023): the scale starts at 10 and a learned `logit_bias` (init -10) is added to the logits;
the softmax model has no bias parameter.

The MLPs use OpenAI's quick GELU `x * sigmoid(1.702 x)` (`activation="quick_gelu"`) or the
exact GELU (`"gelu"`). Initialisation after the OpenAI code: token embeddings normal(0.02),
text positions normal(0.01), class token, image positions and projections normal(width ** -0.5),
the text blocks' input-side kernels normal(width ** -0.5) (OpenAI: (2 width) ** -0.5 for the
MLP's) and those writing into the residual stream normal(width ** -0.5 / sqrt(2 * layers));
the image blocks keep ViT's xavier-uniform. With vocab 49,408, context 77 and 224 x 224
images, `B/32` has 151,277,313 parameters, as openai/clip-vit-base-patch32.
"""

from __future__ import annotations

import math
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
)
from jaxformer.models import variants, vit
from jaxformer.models.vit import POOL_TYPES, ViTEncoder

LOSSES = ("softmax", "sigmoid")
SIZE_KEYS = ("embed_dim", "patch_size", "vision_width", "vision_layers", "vision_heads",
             "vision_mlp_dim", "text_width", "text_layers", "text_heads", "text_mlp_dim")

# Sizes of the OpenAI models (B and L; a variant name is "<size>/<patch size>", e.g. "B/32")
# and of small ones for a CPU.
VARIANTS: dict[str, dict[str, int]] = {
    "B": dict(embed_dim=512, vision_width=768, vision_layers=12, vision_heads=12,
              vision_mlp_dim=3072, text_width=512, text_layers=12, text_heads=8,
              text_mlp_dim=2048),
    "L": dict(embed_dim=768, vision_width=1024, vision_layers=24, vision_heads=16,
              vision_mlp_dim=4096, text_width=768, text_layers=12, text_heads=12,
              text_mlp_dim=3072),
    "small": dict(embed_dim=256, vision_width=256, vision_layers=6, vision_heads=4,
                  vision_mlp_dim=1024, text_width=256, text_layers=6, text_heads=4,
                  text_mlp_dim=1024),
    "tiny": dict(embed_dim=128, vision_width=128, vision_layers=4, vision_heads=4,
                 vision_mlp_dim=512, text_width=128, text_layers=4, text_heads=4,
                 text_mlp_dim=512),
}


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's GELU approximation, `x * sigmoid(1.702 x)`."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": gelu_exact,
}


def image_tower(*, patch_size: int, width: int, num_layers: int, num_heads: int, mlp_dim: int,
                pool_type: str = "tok", activation: Callable[[jax.Array], jax.Array] = quick_gelu,
                layer_norm_epsilon: float = 1e-5, **common: Any) -> ViTEncoder:
    """CLIP's image tower (unbound): a ViT encoder without patch bias, with `pre_norm`,
    LayerNorm epsilon 1e-5 (OpenAI's) and OpenAI's initialisation; `common` holds the dropout
    rates, dtype, remat and scan_layers. Other families load a trained CLIP's `image_encoder`
    parameters into it (`init_from`)."""
    std = width ** -0.5
    return ViTEncoder(
        patch_size=patch_size, num_layers=num_layers, num_heads=num_heads, d_model=width,
        mlp_dim=mlp_dim, pool_type=pool_type, patch_bias=False, pre_norm=True,
        layer_norm_epsilon=layer_norm_epsilon, activation=activation,
        cls_init=nn.initializers.normal(stddev=std), pos_init=nn.initializers.normal(stddev=std),
        **common)


def parse_variant(variant: str) -> dict[str, int]:
    """`"B/32"` -> the sizes of CLIP ViT-B with `patch_size=32`."""
    return vit.parse_variant(variant, VARIANTS, "CLIP")


def eot_positions(tokens: jax.Array, eot_id: int) -> jax.Array:
    """int32 `[batch]`: the first position of `eot_id` in each row of `[batch, length]`
    tokens, or the last position in a row without it."""
    is_eot = tokens == eot_id
    first = jnp.argmax(is_eot, axis=1).astype(jnp.int32)
    return jnp.where(is_eot.any(axis=1), first, tokens.shape[1] - 1)


def _normalise(x: jax.Array) -> jax.Array:
    """Rows of `x` scaled to unit L2 norm, in float32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


class TextEncoder(nn.Module):
    """The text tower before pooling: int32 tokens `[batch, length]` -> features
    `[batch, length, width]` after causal pre-LN blocks and the final LayerNorm."""

    vocab_size: int
    context_length: int
    width: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    activation: Callable[[jax.Array], jax.Array] = quick_gelu
    layer_norm_epsilon: float = 1e-5
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        x = TokenEmbedding(self.vocab_size, self.width,
                           embedding_init=nn.initializers.normal(stddev=0.02),
                           dtype=self.dtype, name="token_embedding")(tokens)
        x = x + LearnedPositionalEmbedding(
            self.context_length, self.width, embedding_init=nn.initializers.normal(stddev=0.01),
            dtype=self.dtype, name="position_embedding")(tokens.shape[1])
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        std = self.width ** -0.5
        return TransformerStack(
            num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            norm_first=True, causal=True, activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_init=nn.initializers.normal(stddev=std),
            out_kernel_init=nn.initializers.normal(stddev=std / math.sqrt(2 * self.num_layers)),
            dtype=self.dtype, remat=self.remat, scan_layers=self.scan_layers,
            name="transformer")(x, train=train)


class CLIP(nn.Module):
    """Image and text towers with a shared embedding space.

    Attributes:
      vocab_size: number of token ids.
      eot_id: the end-of-text token, whose features represent a text.
      embed_dim: width of the shared embedding space.
      patch_size, vision_width, vision_layers, vision_heads, vision_mlp_dim: the image tower.
      context_length, text_width, text_layers, text_heads, text_mlp_dim: the text tower.
      pool_type: image pooling, "tok" ([class] token) or "gap" (mean of the patch tokens).
      activation: MLP non-linearity of both towers.
      layer_norm_epsilon: epsilon of every LayerNorm of both towers.
      loss: "softmax" (CLIP) or "sigmoid" (SigLIP: another temperature init and a bias).
      dropout_rate, attention_dropout_rate: dropout of both towers (0 in CLIP).
      dtype: computation dtype (parameters and embeddings are float32).
      remat: recompute each block's activations in the backward pass.
      scan_layers: run the blocks under `nn.scan`.
    """

    vocab_size: int
    eot_id: int
    embed_dim: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp_dim: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp_dim: int
    context_length: int = 77
    pool_type: str = "tok"
    activation: Callable[[jax.Array], jax.Array] = quick_gelu
    layer_norm_epsilon: float = 1e-5
    loss: str = "softmax"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False

    def setup(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown CLIP loss {self.loss!r}; available: {', '.join(LOSSES)}")
        common = dict(dropout_rate=self.dropout_rate, activation=self.activation,
                      layer_norm_epsilon=self.layer_norm_epsilon,
                      attention_dropout_rate=self.attention_dropout_rate, dtype=self.dtype,
                      remat=self.remat, scan_layers=self.scan_layers)
        self.image_encoder = image_tower(
            patch_size=self.patch_size, width=self.vision_width, num_layers=self.vision_layers,
            num_heads=self.vision_heads, mlp_dim=self.vision_mlp_dim, pool_type=self.pool_type,
            **common)
        vision_std = self.vision_width ** -0.5
        self.image_projection = Dense(self.embed_dim, use_bias=False,
                                      kernel_init=nn.initializers.normal(stddev=vision_std),
                                      dtype=self.dtype)
        self.text_encoder = TextEncoder(
            vocab_size=self.vocab_size, context_length=self.context_length,
            width=self.text_width, num_layers=self.text_layers, num_heads=self.text_heads,
            mlp_dim=self.text_mlp_dim, **common)
        self.text_projection = Dense(
            self.embed_dim, use_bias=False,
            kernel_init=nn.initializers.normal(stddev=self.text_width ** -0.5),
            dtype=self.dtype)
        sigmoid = self.loss == "sigmoid"
        self.log_scale = self.param(
            "log_scale", nn.initializers.constant(math.log(10.0 if sigmoid else 1 / 0.07)), ())
        if sigmoid:
            self.logit_bias = self.param("logit_bias", nn.initializers.constant(-10.0), ())

    def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Images `[batch, H, W, C]` -> L2-normalised float32 `[batch, embed_dim]`."""
        _, pooled = self.image_encoder(images, train=train)
        return _normalise(self.image_projection(pooled))

    def encode_text(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        """int32 tokens `[batch, length]` (0-padded after the EOT) -> L2-normalised float32
        `[batch, embed_dim]`, read at each row's EOT token."""
        x = self.text_encoder(tokens, train=train)  # [batch, length, text_width]
        eot = eot_positions(tokens, self.eot_id)
        x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]  # [batch, text_width]
        return _normalise(self.text_projection(x))

    def logit_scale(self) -> jax.Array:
        """`exp(log_scale)` with the parameter clipped at log(100): at most 100."""
        return jnp.exp(jnp.minimum(self.log_scale, math.log(100.0))).astype(jnp.float32)

    def __call__(self, images: jax.Array, tokens: jax.Array, *, train: bool = False
                 ) -> tuple[jax.Array, ...]:
        """(image embeddings, text embeddings, logit_scale), and `logit_bias` last with
        `loss="sigmoid"`; the embeddings `[batch, embed_dim]` have unit norm."""
        outputs = (self.encode_image(images, train=train), self.encode_text(tokens, train=train),
                   self.logit_scale())
        if self.loss == "sigmoid":
            outputs += (self.logit_bias.astype(jnp.float32),)
        return outputs


def model_sizes(config: ml_collections.ConfigDict) -> dict[str, int]:
    """The size fields of a `config.model` subtree (its variant's, or its explicit ones),
    checked to be positive integers."""
    sizes = variants.choose(config, SIZE_KEYS, family="CLIP", parse=parse_variant)
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{key} must be a positive integer, got {value!r}")
    return sizes


def layer_norm_epsilon(config: ml_collections.ConfigDict) -> float:
    """`layer_norm_epsilon` of a `config.model` subtree (default 1e-5), checked positive."""
    epsilon = config.get("layer_norm_epsilon", 1e-5)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
        raise ValueError(f"model.layer_norm_epsilon must be a positive number, got {epsilon!r}")
    return float(epsilon)


def image_tower_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`image_tower`'s arguments for the CLIP of a `config.model` subtree (a CLIP run's),
    for models that embed its image tower."""
    sizes = model_sizes(config)
    activation = config.get("activation", "quick_gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; available: "
                         f"{', '.join(ACTIVATIONS)}")
    return dict(patch_size=sizes["patch_size"], width=sizes["vision_width"],
                num_layers=sizes["vision_layers"], num_heads=sizes["vision_heads"],
                mlp_dim=sizes["vision_mlp_dim"], pool_type=config.get("pool_type", "tok"),
                activation=ACTIVATIONS[activation], layer_norm_epsilon=layer_norm_epsilon(config))


def build(
    config: ml_collections.ConfigDict, *, vocab_size: int, context_length: int, eot_id: int,
    image_shape: tuple[int, ...], dtype: Any, remat: bool,
) -> CLIP:
    """A `CLIP` from the `config.model` subtree.

    Keys: `variant` ("B/32"... see `VARIANTS`, or "" to use the explicit size fields),
    `embed_dim`, `patch_size`, `vision_layers`, `vision_width`, `vision_heads`,
    `vision_mlp_dim`, `text_layers`, `text_width`, `text_heads`, `text_mlp_dim`,
    `pool_type`, `dropout_rate`, `activation` ("quick_gelu" or "gelu"), `loss` ("softmax" or
    "sigmoid"), and optionally `layer_norm_epsilon` (1e-5), `attention_dropout_rate` and
    `scan_layers`. A variant overrides the size fields.
    """
    sizes = model_sizes(config)
    for tower in ("vision", "text"):
        width, heads = sizes[f"{tower}_width"], sizes[f"{tower}_heads"]
        if width % heads:
            raise ValueError(f"model.{tower}_width {width} is not divisible by {heads} heads")
    height, width = image_shape[:2]
    if height % sizes["patch_size"] or width % sizes["patch_size"]:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size "
                         f"{sizes['patch_size']}")
    pool_type = config.get("pool_type", "tok")
    if pool_type not in POOL_TYPES:
        raise ValueError(f"unknown pool_type {pool_type!r}; available: {', '.join(POOL_TYPES)}")
    activation = config.get("activation", "quick_gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; available: "
                         f"{', '.join(ACTIVATIONS)}")
    loss = config.get("loss", "softmax")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; available: {', '.join(LOSSES)}")
    if context_length < 1:
        raise ValueError(f"context_length must be positive, got {context_length}")
    if not 0 <= eot_id < vocab_size:
        raise ValueError(f"eot_id {eot_id} is outside the vocabulary of {vocab_size} tokens")
    return CLIP(
        vocab_size=vocab_size, eot_id=eot_id, context_length=context_length,
        pool_type=pool_type, activation=ACTIVATIONS[activation],
        layer_norm_epsilon=layer_norm_epsilon(config), loss=loss,
        dropout_rate=config.get("dropout_rate", 0.0),
        attention_dropout_rate=config.get("attention_dropout_rate", 0.0), dtype=dtype,
        remat=remat, scan_layers=config.get("scan_layers", False), **sizes)
