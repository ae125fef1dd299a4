"""ResNet backbones (He et al., 2016) with frozen BatchNorm, as DETR uses them.

The layout is torchvision's: a 7x7 stride-2 stem convolution, BatchNorm, ReLU and a 3x3
stride-2 max-pool, then stages of basic blocks (two 3x3 convolutions; ResNet-18/34) or
bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion; ResNet-50/101) whose first block halves
the resolution (stages after the first) with the stride on the 3x3 convolution (ResNet
v1.5) and a 1x1 convolution + BatchNorm on the shortcut where the shape changes. The
convolutions have no bias. `ResNet` returns the last stage's feature map, of stride
`ResNet.stride`; without a classifier, ResNet-50 has 23,508,032 parameters (BatchNorm scale
and shift included, statistics not), as torchvision's `resnet50` without `fc`.

Every BatchNorm is a `FrozenBatchNorm`: `(x - mean) / sqrt(var + eps) * scale + bias` with
fixed statistics, as DETR's `FrozenBatchNorm2d`. All four tensors are ordinary parameters,
so that checkpoints, `init_from` and `jaxformer params` see them like any other: `mean` and
`var` never receive a gradient (being 1-D, they get no weight decay either, so no optimizer
of the trainer ever changes them), and `scale` and `bias` are frozen, as in DETR, by
`config.freeze` patterns such as `"backbone/(.*/)?bn\\d?/.*"`, which also leave all four out of
the optimizer state (a model trained from scratch may instead train the affine part).

Parameter names follow torchvision's, so that its weights map one to one (convolution
kernels are `[kh, kw, in, out]`, torch's `weight.permute(2, 3, 1, 0)`):

    conv1/kernel                               conv1.weight
    bn1/{scale,bias,mean,var}                  bn1.{weight,bias,running_mean,running_var}
    layer{s}/block_{i}/conv{j}/kernel          layer{s}.{i}.conv{j}.weight
    layer{s}/block_{i}/bn{j}/...               layer{s}.{i}.bn{j}.*
    layer{s}/block_{i}/downsample/conv/kernel  layer{s}.{i}.downsample.0.weight
    layer{s}/block_{i}/downsample/bn/...       layer{s}.{i}.downsample.1.*
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

# torchvision's initialisation of convolutions: He normal over the fan-out.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# Stage depths and block type of the torchvision models, and a small CPU backbone (stride 8:
# a 64x64 image gives an 8x8 map of 64 channels).
VARIANTS: dict[str, dict[str, Any]] = {
    "resnet18": dict(block="basic", stage_sizes=(2, 2, 2, 2), width=64),
    "resnet34": dict(block="basic", stage_sizes=(3, 4, 6, 3), width=64),
    "resnet50": dict(block="bottleneck", stage_sizes=(3, 4, 6, 3), width=64),
    "resnet101": dict(block="bottleneck", stage_sizes=(3, 4, 23, 3), width=64),
    "tiny": dict(block="basic", stage_sizes=(2, 2), width=32),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


class FrozenBatchNorm(nn.Module):
    """BatchNorm over the last axis with fixed statistics: `[..., C]` -> `[..., C]`.

    `y = (x - mean) / sqrt(var + epsilon) * scale + bias`, computed as one multiply-add per
    channel; `mean` and `var` are excluded from differentiation. Initialised to the identity
    statistics (mean 0, var 1) and affine map (scale 1, bias 0).
    """

    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones_init(), shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), shape, self.param_dtype)
        mean = self.param("mean", nn.initializers.zeros_init(), shape, self.param_dtype)
        var = self.param("var", nn.initializers.ones_init(), shape, self.param_dtype)
        mean, var = jax.lax.stop_gradient((mean, var))
        multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
        shift = bias - mean * multiplier
        return x.astype(self.dtype) * multiplier.astype(self.dtype) + shift.astype(self.dtype)


def _conv(features: int, size: int, strides: int, name: str, dtype: Any) -> nn.Conv:
    """A bias-free convolution padded as torch's: `(size - 1) // 2` on every side."""
    pad = (size - 1) // 2
    return nn.Conv(features, (size, size), strides=(strides, strides),
                   padding=((pad, pad), (pad, pad)), use_bias=False, kernel_init=conv_init,
                   dtype=dtype, name=name)


class Downsample(nn.Module):
    """The shortcut of a block that changes shape: 1x1 convolution (strided) + BatchNorm."""

    features: int
    strides: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _conv(self.features, 1, self.strides, "conv", self.dtype)(x)
        return FrozenBatchNorm(dtype=self.dtype, name="bn")(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (the first strided) and a shortcut: `[b, H, W, C]` ->
    `[b, H / s, W / s, features]`."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(_conv, dtype=self.dtype)
        norm = functools.partial(FrozenBatchNorm, dtype=self.dtype)
        y = nn.relu(norm(name="bn1")(conv(self.features, 3, self.strides, "conv1")(x)))
        y = norm(name="bn2")(conv(self.features, 3, 1, "conv2")(y))
        return nn.relu(y + _shortcut(x, self.features, self.strides, self.dtype))


class Bottleneck(nn.Module):
    """1x1 reduction to `features`, strided 3x3, 1x1 expansion to `4 * features`, and a
    shortcut: `[b, H, W, C]` -> `[b, H / s, W / s, 4 * features]`."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(_conv, dtype=self.dtype)
        norm = functools.partial(FrozenBatchNorm, dtype=self.dtype)
        out = EXPANSION["bottleneck"] * self.features
        y = nn.relu(norm(name="bn1")(conv(self.features, 1, 1, "conv1")(x)))
        y = nn.relu(norm(name="bn2")(conv(self.features, 3, self.strides, "conv2")(y)))
        y = norm(name="bn3")(conv(out, 1, 1, "conv3")(y))
        return nn.relu(y + _shortcut(x, out, self.strides, self.dtype))


def _shortcut(x: jax.Array, features: int, strides: int, dtype: Any) -> jax.Array:
    """`x` itself, or its projection (`downsample`) where the block changes its shape."""
    if strides == 1 and x.shape[-1] == features:
        return x
    return Downsample(features, strides, dtype=dtype, name="downsample")(x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class Stage(nn.Module):
    """`num_blocks` blocks (`block_0`, ...); the first one applies `strides`."""

    block: str
    num_blocks: int
    features: int
    strides: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_blocks):
            x = BLOCKS[self.block](self.features, strides=self.strides if i == 0 else 1,
                                   dtype=self.dtype, name=f"block_{i}")(x)
        return x


class ResNet(nn.Module):
    """Images `[batch, H, W, C]` -> the last stage's features
    `[batch, ceil(H / stride), ceil(W / stride), num_features]`.

    Attributes:
      stage_sizes: blocks per stage (stage `s` is named `layer{s + 1}`).
      block: "basic" or "bottleneck".
      width: channels of the stem and of the first stage's blocks, doubled at each stage
        (bottleneck blocks output 4x their width).
      dtype: computation dtype (parameters are float32).
    """

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    width: int = 64
    dtype: Any = jnp.float32

    @property
    def stride(self) -> int:
        """Input pixels per feature-map cell: 4 (stem) doubled by every stage after the first."""
        return 4 * 2 ** (len(self.stage_sizes) - 1)

    @property
    def num_features(self) -> int:
        """Channels of the output feature map."""
        return self.width * 2 ** (len(self.stage_sizes) - 1) * EXPANSION[self.block]

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if self.block not in BLOCKS:
            raise ValueError(f"unknown ResNet block {self.block!r}; available: "
                             f"{', '.join(BLOCKS)}")
        x = _conv(self.width, 7, 2, "conv1", self.dtype)(images)
        x = nn.relu(FrozenBatchNorm(dtype=self.dtype, name="bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, num_blocks in enumerate(self.stage_sizes):
            x = Stage(self.block, num_blocks, self.width * 2**s, strides=1 if s == 0 else 2,
                      dtype=self.dtype, name=f"layer{s + 1}")(x)
        return x


def resnet(variant: str, *, dtype: Any = jnp.float32, name: str | None = None) -> ResNet:
    """The `ResNet` named `variant` (a key of `VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ResNet variant {variant!r}; available: "
                         f"{', '.join(VARIANTS)}")
    return ResNet(**VARIANTS[variant], dtype=dtype, name=name)


class ResNetClassifier(nn.Module):
    """Images `[batch, H, W, C]` -> logits `[batch, num_classes]`: a `ResNet` (`backbone`),
    global average pooling and a linear layer (`fc`, torchvision's). Its `backbone` is what
    a DETR loads with `init_from` (the same names as `models.detr`'s)."""

    variant: str
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # No dropout; BatchNorm statistics are fixed.
        features = resnet(self.variant, dtype=self.dtype, name="backbone")(images)
        pooled = features.astype(jnp.float32).mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(pooled)


def build(config, *, num_classes: int, image_shape: tuple[int, int, int], dtype: Any,
          remat: bool) -> ResNetClassifier:
    """A `ResNetClassifier` from the `config.model` subtree (`variant`, a `VARIANTS` name)."""
    del image_shape, remat
    if config.get("variant", "") not in VARIANTS:
        raise ValueError(f"unknown ResNet variant {config.get('variant', '')!r}; available: "
                         f"{', '.join(VARIANTS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return ResNetClassifier(config.variant, num_classes, dtype=dtype)
