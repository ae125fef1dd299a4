"""Vision Transformer (Dosovitskiy et al., 2021: "An Image is Worth 16x16 Words").

An image `[batch, H, W, C]` is cut into non-overlapping `p x p` patches, each linearly
embedded by a strided convolution (kernel `p x p`, stride `p`); the token of patch (i, j)
sits at index `i * W / p + j` (row-major). A learnable [class] token is prepended, learned
1-D position embeddings are added (one per token, the class token's included), and the
sequence runs through pre-LN encoder blocks (exact GELU, LayerNorm epsilon 1e-6 unless
`layer_norm_epsilon` says otherwise: Hugging Face checkpoints use 1e-12) that end in a
LayerNorm. The image is then represented by the [class] token (`pool_type="tok"`) or,
without a class token, by the mean of the patch tokens (`pool_type="gap"`); the classifier
is an optional tanh representation layer (the paper's pre-training MLP head) and a linear
head.

`ViTEncoder` is the image tower alone (reused by two-tower and captioning models): it
returns the token sequence and the pooled representation. `ViT` adds the classifier and
exposes the tower as `ViT.encode`. Attention weights are sown by every attention layer as
`intermediates/.../attention_weights` when applied with `mutable=["intermediates"]`.

Initialisation follows the reference implementation (google-research/vision_transformer):
xavier-uniform projections, position embeddings normal(0.02), zero class token, zero head.
ViT-B/16 at 224 x 224 with 1000 classes has 86,567,656 parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.ndimage
from flax import linen as nn
from flax import traverse_util

from jaxformer.layers import Dense, TransformerStack, gelu_exact
from jaxformer.models import variants

Initializer = Callable[..., jax.Array]
POOL_TYPES = ("tok", "gap")

# Sizes of the named variants (ViT paper, Table 1; Ti and S from DeiT / "How to train your
# ViT"). A variant name is "<size>/<patch size>", e.g. "B/16".
SIZE_KEYS = ("patch_size", "num_layers", "num_heads", "d_model", "mlp_dim")  # A variant's.
VARIANTS: dict[str, dict[str, int]] = {
    "Ti": dict(d_model=192, num_layers=12, num_heads=3, mlp_dim=768),
    "S": dict(d_model=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "B": dict(d_model=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "L": dict(d_model=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "H": dict(d_model=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}

# The paper's GELU is the exact one, 0.5 x (1 + erf(x / sqrt(2))), not GPT-2's tanh form.


def parse_variant(variant: str, variants: dict[str, dict[str, int]] = VARIANTS,
                  family: str = "ViT") -> dict[str, int]:
    """`"B/16"` -> the sizes of `variants["B"]` with `patch_size=16`."""
    size, slash, patch = variant.partition("/")
    if size not in variants or not slash or not patch.isdigit() or int(patch) < 1:
        raise ValueError(f"unknown {family} variant {variant!r}: expected <size>/<patch size> "
                         f"with size one of {', '.join(variants)}, e.g. '{next(iter(variants))}"
                         "/16'")
    return dict(variants[size], patch_size=int(patch))


class PatchEmbedding(nn.Module):
    """Images `[batch, H, W, C]` -> patch tokens `[batch, (H / p) * (W / p), features]`.

    A convolution with a `p x p` kernel and stride `p` (parameters as `flax.linen.Conv`:
    `kernel [p, p, C, features]`, `bias [features]` unless `use_bias=False`, as in CLIP),
    i.e. each flattened patch times a `[p * p * C, features]` matrix. Patch (i, j) becomes
    token `i * W / p + j`.
    """

    features: int
    patch_size: int
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        batch, height, width, channels = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch "
                             f"size {p}")
        kernel = self.param("kernel", self.kernel_init, (p, p, channels, self.features),
                            self.param_dtype)
        # The strided convolution as one matmul of the flattened patches (faster than XLA's
        # convolution on CPUs, the same on accelerators): [batch, patches, p * p * C].
        patches = images.astype(self.dtype).reshape(
            batch, height // p, p, width // p, p, channels).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(batch, -1, p * p * channels)
        x = patches @ kernel.astype(self.dtype).reshape(p * p * channels, self.features)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                              self.param_dtype)
            x = x + bias.astype(self.dtype)
        return x  # [batch, (H / p) * (W / p), features], row-major over the patch grid.


class ViTEncoder(nn.Module):
    """The image tower: images `[batch, H, W, C]` -> (tokens, pooled).

    Attributes:
      patch_size: side of the square patches; H and W must be multiples of it.
      num_layers: encoder blocks.
      num_heads: attention heads per block.
      d_model: token width.
      mlp_dim: hidden width of the block MLPs.
      pool_type: "tok" (prepend a [class] token and pool it) or "gap" (no class token;
        pool the mean of the patch tokens).
      dropout_rate: dropout after the position embeddings and on every residual branch.
      attention_dropout_rate: dropout on the attention weights.
      dtype: computation dtype (parameters are float32).
      remat: recompute each block's activations in the backward pass.
      scan_layers: run the blocks under `nn.scan`.

    Options for other towers of the same shape (the defaults are ViT's; CLIP's image tower
    sets all of them):
      patch_bias: a bias in the patch embedding (CLIP's has none).
      pre_norm: a LayerNorm on the tokens after the position embeddings, before the blocks
        (CLIP's `ln_pre`), under the parameter name `pre_norm`.
      activation: MLP non-linearity (ViT: exact GELU; OpenAI CLIP: quick GELU).
      layer_norm_epsilon: epsilon of every LayerNorm (ViT 1e-6, CLIP 1e-5).
      cls_init: initializer of the [class] token (ViT: zeros; CLIP: normal(d ** -0.5)).
      pos_init: initializer of the position embeddings (ViT: normal(0.02); CLIP:
        normal(d ** -0.5)).
    """

    patch_size: int
    num_layers: int
    num_heads: int
    d_model: int
    mlp_dim: int
    pool_type: str = "tok"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False
    patch_bias: bool = True
    pre_norm: bool = False
    activation: Callable[[jax.Array], jax.Array] = gelu_exact
    layer_norm_epsilon: float = 1e-6
    cls_init: Initializer = nn.initializers.zeros_init()
    pos_init: Initializer = nn.initializers.normal(stddev=0.02)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: 1 (the [class] token) for "tok", else 0."""
        return 1 if self.pool_type == "tok" else 0

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Returns the encoded sequence `[batch, prefix + patches, d_model]` (the [class]
        token first, then patches in row-major order) and the pooled `[batch, d_model]`."""
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"unknown pool_type {self.pool_type!r}; available: "
                             f"{', '.join(POOL_TYPES)}")
        batch = images.shape[0]
        x = PatchEmbedding(self.d_model, self.patch_size, use_bias=self.patch_bias,
                           dtype=self.dtype, name="embedding")(images)  # [batch, patches, d]
        if self.pool_type == "tok":
            cls = self.param("cls", self.cls_init, (1, 1, self.d_model))
            x = jnp.concatenate([jnp.tile(cls.astype(self.dtype), (batch, 1, 1)), x], axis=1)
        pos_embedding = self.param("pos_embedding", self.pos_init,
                                   (1, x.shape[1], self.d_model))
        x = x + pos_embedding.astype(self.dtype)
        if self.pre_norm:
            x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                             name="pre_norm")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)

        x = TransformerStack(
            num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            norm_first=True, causal=False, activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype, remat=self.remat,
            scan_layers=self.scan_layers, name="transformer")(x, train=train)
        pooled = x[:, 0] if self.pool_type == "tok" else x.mean(axis=1)
        return x, pooled


class ViT(nn.Module):
    """ViT classifier: images `[batch, H, W, C]` -> float32 logits `[batch, num_classes]`.

    Attributes (besides the `ViTEncoder` ones):
      num_classes: classes of the linear head; 0 means no head (the output is the
        representation).
      representation_size: width of the tanh pre-logits layer; 0 means none (a linear head on
        the pooled token, as when fine-tuning).
      layer_norm_epsilon: epsilon of every LayerNorm.
    """

    num_classes: int
    patch_size: int
    num_layers: int
    num_heads: int
    d_model: int
    mlp_dim: int
    pool_type: str = "tok"
    representation_size: int = 0
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False
    layer_norm_epsilon: float = 1e-6

    def setup(self):
        self.encoder = ViTEncoder(
            patch_size=self.patch_size, num_layers=self.num_layers, num_heads=self.num_heads,
            d_model=self.d_model, mlp_dim=self.mlp_dim, pool_type=self.pool_type,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            dtype=self.dtype, remat=self.remat, scan_layers=self.scan_layers,
            layer_norm_epsilon=self.layer_norm_epsilon)
        if self.representation_size:
            self.pre_logits = Dense(self.representation_size, dtype=self.dtype)
        if self.num_classes:
            self.head = Dense(self.num_classes, kernel_init=nn.initializers.zeros_init(),
                              dtype=self.dtype)

    def encode(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """The image tower: (tokens `[batch, prefix + patches, d_model]`, pooled
        `[batch, d_model]`); see `ViTEncoder`."""
        return self.encoder(images, train=train)

    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        _, x = self.encode(images, train=train)  # [batch, d_model]
        if self.representation_size:
            x = jnp.tanh(self.pre_logits(x))  # [batch, representation_size]
        if self.num_classes:
            x = self.head(x)  # [batch, num_classes]
        return x.astype(jnp.float32)


def resize_position_embedding(
    posemb: np.ndarray | jax.Array, grid: tuple[int, int], *, num_prefix_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resizes learned position embeddings to a new patch grid (fine-tuning at another size).

    `posemb` is `[1, prefix + h * w, d]` with the patch positions in row-major order; the
    `num_prefix_tokens` leading rows (the [class] token's) are kept as they are and the
    `h x w` grid is resampled to `grid` by bilinear interpolation (`scipy.ndimage.zoom`,
    order 1, corners aligned), as big_vision and the ViT reference code do. `old_grid`
    defaults to a square grid. Returns float32 `[1, prefix + grid[0] * grid[1], d]`.
    """
    posemb = np.asarray(posemb, dtype=np.float32)
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(f"position embeddings must be [1, tokens, width], got {posemb.shape}")
    prefix, patches = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(len(patches))
        if side * side != len(patches):
            raise ValueError(f"{len(patches)} patch positions do not form a square grid; "
                             "give old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != len(patches):
        raise ValueError(f"old_grid {old_grid} does not hold {len(patches)} patch positions")
    old = patches.reshape(*old_grid, -1)
    if tuple(grid) == tuple(old_grid):
        new = old
    else:
        zoom = (grid[0] / old_grid[0], grid[1] / old_grid[1], 1)
        new = scipy.ndimage.zoom(old, zoom, order=1)
        if new.shape[:2] != tuple(grid):  # zoom rounds the output size.
            raise ValueError(f"cannot resize a {old_grid} grid to {grid}")
    return np.concatenate([prefix, new.reshape(1, -1, old.shape[-1])], axis=1)


def adapt_params(params: Any, target: Any, *, num_prefix_tokens: int = 1) -> dict:
    """Trained ViT `params` made to fit `target`, the params (or their shapes) of the model
    to fine-tune, as in the paper's fine-tuning: position embeddings are resized to the
    target's patch grid, the head is replaced by a zero head when its class count differs,
    and layers the target lacks (the pre-logits layer) are dropped."""
    source = traverse_util.flatten_dict(params)
    adapted = {}
    for key, wanted in traverse_util.flatten_dict(target).items():
        name = "/".join(key)
        if key not in source:
            raise ValueError(f"the trained parameters have no {name}")
        value = source[key]
        if value.shape == wanted.shape:
            adapted[key] = value
        elif key[-1] == "pos_embedding":
            side = math.isqrt(wanted.shape[1] - num_prefix_tokens)
            if side * side != wanted.shape[1] - num_prefix_tokens:
                raise ValueError(f"{name}: the target's patch grid is not square; resize with "
                                 "resize_position_embedding and an explicit grid")
            adapted[key] = resize_position_embedding(value, (side, side),
                                                     num_prefix_tokens=num_prefix_tokens)
        elif key[0] == "head":
            adapted[key] = np.zeros(wanted.shape, wanted.dtype)
        else:
            raise ValueError(f"parameter {name} has shape {value.shape}, the target model "
                             f"needs {wanted.shape}")
    return traverse_util.unflatten_dict(adapted)


def build(
    config: ml_collections.ConfigDict, *, num_classes: int, image_shape: tuple[int, int, int],
    dtype: Any, remat: bool,
) -> ViT:
    """A `ViT` from the `config.model` subtree.

    Keys: `variant` ("B/16"... see `VARIANTS`, or "" to use the explicit size fields),
    `patch_size`, `num_layers`, `num_heads`, `d_model`, `mlp_dim`, `pool_type`,
    `representation_size`, `dropout_rate`, `attention_dropout_rate`, and optionally
    `scan_layers` and `layer_norm_epsilon` (default 1e-6). A variant overrides the size
    fields.
    """
    sizes = variants.choose(config, SIZE_KEYS, family="ViT", parse=parse_variant)
    height, width = image_shape[:2]
    if height % sizes["patch_size"] or width % sizes["patch_size"]:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size "
                         f"{sizes['patch_size']}")
    if sizes["d_model"] % sizes["num_heads"]:
        raise ValueError(f"d_model {sizes['d_model']} is not divisible by {sizes['num_heads']} "
                         "heads")
    if config.pool_type not in POOL_TYPES:
        raise ValueError(f"unknown pool_type {config.pool_type!r}; available: "
                         f"{', '.join(POOL_TYPES)}")
    return ViT(
        num_classes=num_classes, pool_type=config.pool_type,
        representation_size=config.representation_size, dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.get("attention_dropout_rate", 0.0), dtype=dtype,
        remat=remat, scan_layers=config.get("scan_layers", False),
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-6), **sizes)
