"""DETR, the DEtection TRansformer (Carion et al., 2020: "End-to-End Object Detection with
Transformers").

    images [b, H, W, 3], pixel_mask [b, H, W]
      -> ResNet with frozen BatchNorm (`backbone`) -> [b, h, w, C], the mask resized to [b, h, w]
      -> 1x1 projection to d_model (`input_proj`) -> memory tokens [b, h * w, d_model]
      -> post-LN encoder (`encoder`)
    `num_queries` learned object queries (`query_embed`)
      -> post-LN decoder over the memory (`decoder`) -> every layer's output through one
         shared LayerNorm -> [layers, b, num_queries, d_model]
      -> `class_embed` (num_classes + 1 logits, the last "no object") and `bbox_embed` (3-layer
         ReLU MLP, sigmoid) -> boxes (cx, cy, w, h) relative to the unpadded image

Positions enter every attention layer, never the values: the 2-D sine encoding of the
feature map (`layers.position_2d`, from the resized mask, so a real cell's encoding ignores
the padding) is added to the queries and keys of the encoder's self-attention and to the keys
of the decoder's cross-attention; the query embeddings are added to the queries and keys of
the decoder's self-attention and to the queries of its cross-attention. The decoder input
itself starts at zero. Padded cells (`pixel_mask` false, padding at the bottom and right) are
masked out as keys everywhere. Dropout (0.1 in DETR) is on attention weights, the FFN hidden
layer and every residual branch; the FFNs use ReLU. Every decoder layer's predictions are
returned, for the auxiliary losses (`losses.detection`).

Parameter names map to facebookresearch/detr's (and Hugging Face's `DetrForObjectDetection`):
`backbone` is torchvision's ResNet (`models.resnet`); `input_proj/kernel` `[C, d]` is
`input_proj.weight[:, :, 0, 0].T`; in `encoder/block_i` and `decoder/block_i`,
`attention/qkv` is `self_attn.in_proj_*` (transposed), `attention/out` is `out_proj`,
`mlp/fc` and `mlp/proj` are `linear1` and `linear2`, `attention_norm`,
`cross_attention_norm` and `mlp_norm` are `norm1`, `norm2` and the last norm; the decoder's
`cross_attention/query` and `cross_attention/kv` split `multihead_attn.in_proj_*` after
d_model rows; `decoder/final_norm` is `decoder.norm`; `bbox_embed/layer_i` is
`bbox_embed.layers.i`. `weights.detr` maps Hugging Face's checkpoints (`jaxformer
import-weights --family=detr`, `export-weights`), whose outputs this model reproduces.

DETR-R50 with 91 classes has 41,631,008 parameter values here: 41,524,768 without BatchNorm
(Hugging Face's count, BatchNorm being buffers there), 41,577,888 with its scale and shift,
and DETR trains 41,302,368 of them (`parameter_counts`). `FREEZE` is DETR's freezing rule
as `config.freeze` patterns.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jaxformer.layers import Dense, TransformerBlock, TransformerStack
from jaxformer.layers.position_2d import sine_position_encoding_2d
from jaxformer.models import resnet, variants

SIZE_KEYS = ("backbone", "d_model", "num_heads", "num_encoder_layers", "num_decoder_layers",
             "mlp_dim", "num_queries")
_PAPER = dict(d_model=256, num_heads=8, num_encoder_layers=6, num_decoder_layers=6,
              mlp_dim=2048, num_queries=100)
# The paper's models by backbone, and a small one for 64x64 images on a CPU.
VARIANTS: dict[str, dict[str, Any]] = {
    "r50": dict(_PAPER, backbone="resnet50"),
    "r101": dict(_PAPER, backbone="resnet101"),
    "r18": dict(_PAPER, backbone="resnet18"),
    "r34": dict(_PAPER, backbone="resnet34"),
    "cpu": dict(backbone="tiny", d_model=64, num_heads=4, num_encoder_layers=2,
                num_decoder_layers=2, mlp_dim=256, num_queries=10),
}

# `config.freeze` patterns. DETR's rule for a pretrained backbone (with a backbone learning
# rate > 0): every BatchNorm tensor of the backbone, its stem and its first stage are not
# trained; `FREEZE_BACKBONE`: none of the backbone is. A backbone trained from scratch (the
# `cpu` variant) needs neither: its BatchNorm statistics get no gradient and stay as they are.
BATCHNORM = r"backbone/(.*/)?bn\d?/.*"
FREEZE = (BATCHNORM, r"backbone/(conv1|layer1)/.*")
FREEZE_BACKBONE = (r"backbone/.*",)

# PyTorch's default initialisation of Linear and Conv2d weights, as DETR's heads and input
# projection have it: uniform(+-1 / sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def resize_mask(mask: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour resize of a `[batch, H, W]` mask to `[batch, *size]`, as torch's
    `F.interpolate` (mode "nearest": output cell i reads input row `floor(i * H / h)`)."""
    height, width = mask.shape[1:]
    rows = np.arange(size[0]) * height // size[0]
    cols = np.arange(size[1]) * width // size[1]
    return mask[:, rows][:, :, cols]


class BoxHead(nn.Module):
    """`num_layers` Dense layers (ReLU between them) and a sigmoid: `[..., d]` -> boxes
    `[..., 4]`, (cx, cy, w, h) in (0, 1)."""

    hidden_dim: int
    num_layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            x = Dense(4 if last else self.hidden_dim, kernel_init=torch_default_init,
                      dtype=self.dtype, name=f"layer_{i}")(x)
            x = x if last else nn.relu(x)
        return jax.nn.sigmoid(x.astype(jnp.float32))


class Decoder(nn.Module):
    """Post-LN decoder blocks from a zero input, every layer's output normalised by one
    shared LayerNorm (`final_norm`): -> `[num_layers, batch, queries, d_model]`.

    The block fields mean what they mean on `layers.TransformerBlock`.
    """

    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, query_pos: jax.Array, memory: jax.Array, memory_pos: jax.Array,
                 memory_mask: jax.Array, *, train: bool = False) -> jax.Array:
        """Decodes the object queries against the encoder output.

        Args:
          query_pos: object queries `[1 | batch, queries, d_model]`.
          memory: encoder output `[batch, tokens, d_model]`.
          memory_pos: its positions `[batch, tokens, d_model]`.
          memory_mask: cross-attention mask `[batch, 1, 1, tokens]`.
          train: enables dropout.
        """
        block_cls = TransformerBlock
        if self.remat:  # Static: train, decode (arguments 5, 6 counting `self`).
            block_cls = nn.remat(TransformerBlock, static_argnums=(5, 6))
        norm = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="final_norm")
        x = jnp.zeros((memory.shape[0], *query_pos.shape[1:]), self.dtype)
        outputs = []
        for i in range(self.num_layers):
            x = block_cls(**_block_fields(self), cross_attention=True, name=f"block_{i}")(
                x, memory, None, memory_mask, train, False, query_pos, memory_pos)
            outputs.append(norm(x))
        return jnp.stack(outputs)


def _block_fields(module: nn.Module) -> dict[str, Any]:
    """DETR's transformer block: post-LN, ReLU FFN, one dropout rate, xavier-uniform
    kernels (the reference's initialisation of every matrix of its transformer)."""
    return dict(num_heads=module.num_heads, mlp_dim=module.mlp_dim,
                dropout_rate=module.dropout_rate, attention_dropout_rate=module.dropout_rate,
                norm_first=False, activation=jax.nn.relu, layer_norm_epsilon=1e-5,
                kernel_init=nn.initializers.xavier_uniform(), dtype=module.dtype)


class DETR(nn.Module):
    """Images `[batch, H, W, C]` and `pixel_mask` `[batch, H, W]` (true on the image's own
    pixels) -> `{"logits": [layers, batch, queries, num_classes + 1], "boxes": [layers,
    batch, queries, 4]}`, both float32, for every decoder layer (the last one is the model's
    prediction).

    Attributes:
      num_classes: object classes; the logits have one more, "no object", last.
      backbone: a `resnet.VARIANTS` name.
      d_model: transformer width.
      num_heads: attention heads.
      num_encoder_layers: encoder blocks.
      num_decoder_layers: decoder blocks (and predictions per image).
      mlp_dim: FFN hidden width.
      num_queries: object queries (predicted boxes per image).
      dropout_rate: dropout of the transformer (attention weights, FFN, residual branches).
      dtype: computation dtype (outputs are float32).
      remat: recompute each transformer block's activations in the backward pass.
    """

    num_classes: int
    backbone: str = "resnet50"
    d_model: int = 256
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    mlp_dim: int = 2048
    num_queries: int = 100
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, pixel_mask: jax.Array | None = None, *,
                 train: bool = False) -> dict[str, jax.Array]:
        if pixel_mask is None:
            pixel_mask = jnp.ones(images.shape[:3], jnp.bool_)
        features = resnet.resnet(self.backbone, dtype=self.dtype, name="backbone")(images)
        batch, height, width, _ = features.shape
        valid = resize_mask(pixel_mask.astype(jnp.bool_), (height, width))  # [b, h, w]
        pos = sine_position_encoding_2d(valid, self.d_model // 2, dtype=self.dtype)
        pos = pos.reshape(batch, height * width, self.d_model)
        x = Dense(self.d_model, kernel_init=torch_default_init, dtype=self.dtype,
                  name="input_proj")(features).reshape(batch, height * width, self.d_model)
        key_mask = valid.reshape(batch, 1, 1, height * width)  # padded cells are no keys

        memory = TransformerStack(
            num_layers=self.num_encoder_layers, **_block_fields(self), remat=self.remat,
            name="encoder")(x, mask=key_mask, pos=pos, train=train)
        query_embed = self.param("query_embed", nn.initializers.normal(stddev=1.0),
                                 (self.num_queries, self.d_model))
        hidden = Decoder(self.num_decoder_layers, self.num_heads, self.mlp_dim,
                         dropout_rate=self.dropout_rate, dtype=self.dtype, remat=self.remat,
                         name="decoder")(query_embed[None].astype(self.dtype), memory, pos,
                                         key_mask, train=train)  # [layers, b, queries, d]

        logits = Dense(self.num_classes + 1, kernel_init=torch_default_init, dtype=self.dtype,
                       name="class_embed")(hidden)
        boxes = BoxHead(self.d_model, dtype=self.dtype, name="bbox_embed")(hidden)
        return {"logits": logits.astype(jnp.float32), "boxes": boxes}


def parameter_counts(params: Any) -> dict[str, int]:
    """Parameter counts of a DETR's `params` (arrays or shapes) under DETR's freezing rule:

      total: every value, BatchNorm statistics included;
      without_statistics: BatchNorm statistics left out, scale and shift counted;
      without_batchnorm: no BatchNorm tensor counted (they are buffers in PyTorch DETR);
      trainable: what DETR trains, all but the `FREEZE` patterns (BatchNorm, stem, layer1).
    """
    counts = dict.fromkeys(("total", "without_statistics", "without_batchnorm", "trainable"), 0)
    for key, leaf in traverse_util.flatten_dict(params).items():
        path, size = "/".join(key), int(np.prod(leaf.shape))
        batchnorm = re.fullmatch(BATCHNORM, path) is not None
        counts["total"] += size
        counts["without_statistics"] += 0 if batchnorm and key[-1] in ("mean", "var") else size
        counts["without_batchnorm"] += 0 if batchnorm else size
        counts["trainable"] += 0 if any(re.fullmatch(p, path) for p in FREEZE) else size
    return counts


def model_sizes(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `SIZE_KEYS` of `config.model`: those of `config.variant`, or the explicit fields
    when the variant is ""."""
    return variants.choose(config, SIZE_KEYS, family="DETR", variants=VARIANTS,
                           may_be_zero=("num_encoder_layers",))


def build(config: ml_collections.ConfigDict, *, num_classes: int, dtype: Any = jnp.float32,
          remat: bool = False) -> DETR:
    """A `DETR` from the `config.model` subtree.

    Keys: `variant` (a name in `VARIANTS`, or "" for the explicit size fields `backbone`,
    `d_model`, `num_heads`, `num_encoder_layers`, `num_decoder_layers`, `mlp_dim`,
    `num_queries`) and, optionally, `dropout_rate` (default 0.1). A variant overrides the
    size fields.
    """
    sizes = model_sizes(config)
    if sizes["backbone"] not in resnet.VARIANTS:
        raise ValueError(f"unknown DETR backbone {sizes['backbone']!r}; available: "
                         f"{', '.join(resnet.VARIANTS)}")
    d_model, heads = sizes["d_model"], sizes["num_heads"]
    if heads < 1 or d_model % heads:
        raise ValueError(f"model.d_model {d_model} is not divisible by {heads} heads")
    if d_model % 4:
        raise ValueError(f"model.d_model must be a multiple of 4 (2-D sine positions), got "
                         f"{d_model}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    dropout_rate = config.get("dropout_rate", 0.1)
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"model.dropout_rate must be in [0, 1), got {dropout_rate}")
    return DETR(num_classes=num_classes, dropout_rate=dropout_rate, dtype=dtype, remat=remat,
                **sizes)
