"""A Flamingo-style visual language model (Alayrac et al., 2022) over a frozen GPT.

    images [batch, media, H, W, C] -> frozen CLIP image tower -> Perceiver Resampler
        -> [batch, media, num_latents, vision_width] visual tokens
    tokens [batch, seq] -> the frozen GPT's blocks, with a GATED XATTN-DENSE block before
        every `cross_attention_every`-th one -> logits [batch, seq, vocab]

`<image>` tokens (`media_id`) mark where each image appears in the text; a text token
attends only to the visual tokens of the most recent `<image>` at or before it, and tokens
before any image to none (`layers.media_time`). The gates start at 0, so an untrained model
computes exactly the frozen language model.

Parameter names: `vision_encoder` is CLIP's `image_encoder` (`clip.image_tower`); `lm` holds
GPT's `token_embedding`, `position_embedding` and `transformer/block_i`, `final_norm` under
GPT's names, plus the trained `gated_block_i`; `resampler` (or `connector_projection` for
the mean-pool ablation). configs/flamingo/emoji.py loads the two frozen parts from their runs
with `init_from` and freezes them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from jaxformer.layers import (
    Dense,
    GatedCrossAttentionBlock,
    LearnedPositionalEmbedding,
    PerceiverResampler,
    TokenEmbedding,
    TransformerBlock,
    media_time,
)
from jaxformer.models import clip, gpt

CONNECTORS = ("resampler", "mean")


class LMBlocks(nn.Module):
    """A GPT's blocks and final LayerNorm under GPT's parameter names (`block_i`,
    `final_norm`), called one at a time so that other layers can run between them."""

    spec: gpt.GPT

    def setup(self):
        for i in range(self.spec.num_layers):
            setattr(self, f"block_{i}", TransformerBlock(**gpt.block_fields(self.spec)))
        self.final_norm = nn.LayerNorm(epsilon=self.spec.layer_norm_epsilon, dtype=self.spec.dtype)

    def block(self, i: int, x: jax.Array, *, train: bool, decode: bool,
              mask: jax.Array | None = None) -> jax.Array:
        return getattr(self, f"block_{i}")(x, mask=mask, train=train, decode=decode)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.final_norm(x)


def packed_layout(is_media: jax.Array, segments: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rows that pack a shared prefix (segment 0, first) and continuations of it (segments
    1, 2, ...; each contiguous) -> per token its media time, its position id, and the
    self-attention mask `[batch, 1, seq, seq]` (the blocks add causality) under which each
    continuation sees the prefix and itself only: as if it followed the prefix alone."""
    seq = segments.shape[1]
    same = segments[:, :, None] == segments[:, None, :]  # [batch, query, key]
    before = same & jnp.tril(jnp.ones((seq, seq), jnp.bool_))
    in_prefix = segments == 0
    own_index = before.sum(-1) - 1  # Within its segment.
    own_media = (before & is_media[:, None, :]).sum(-1)
    prefix_length = in_prefix.sum(-1, keepdims=True)
    prefix_media = (is_media & in_prefix).sum(-1, keepdims=True)
    text_time = jnp.where(in_prefix, own_media, prefix_media + own_media).astype(jnp.int32)
    position_ids = jnp.where(in_prefix, own_index, prefix_length + own_index)
    mask = same | in_prefix[:, None, :]
    return text_time, position_ids, mask[:, None]


class FlamingoLM(nn.Module):
    """The frozen GPT with gated cross-attention blocks: tokens and visual tokens -> logits.

    Attributes:
      spec: the frozen language model's architecture (an unbound `GPT`).
      media_id: the `<image>` token.
      cross_attention_every: a gated block before every n-th LM block (1: before each; 4:
        before blocks 3, 7, ...).
      num_heads, head_dim, mlp_ratio: the gated blocks' attention and MLP.
      gated: tanh gates (Flamingo); False adds the blocks' outputs ungated (an ablation).
    """

    spec: gpt.GPT
    media_id: int
    cross_attention_every: int = 1
    num_heads: int = 8
    head_dim: int = 64
    mlp_ratio: int = 4
    gated: bool = True

    @nn.compact
    def __call__(self, visual: jax.Array, tokens: jax.Array, *, train: bool = False,
                 decode: bool = False, segments: jax.Array | None = None,
                 logits_at: jax.Array | None = None) -> jax.Array:
        """visual `[batch, media, latents, width]`, int32 tokens `[batch, seq]` -> float32
        logits `[batch, seq, vocab]`, or `[batch, n, vocab]` at the int32 indices
        `logits_at` `[batch, n]` only (the vocabulary projection skipped elsewhere). With
        `decode=True` the tokens extend the KV cache (as `GPT`), and the count of `<image>`
        tokens seen so far is kept in the cache too. int32 `segments` `[batch, seq]` pack a
        prefix and its continuations in a row (`packed_layout`; not with `decode`): each
        continuation's logits are those it has after the prefix alone, whose length plus the
        continuation's must not exceed `block_size`."""
        spec = self.spec
        if segments is None and tokens.shape[1] > spec.block_size:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds block_size "
                             f"{spec.block_size}")
        if segments is not None and decode:
            raise ValueError("packed segments are for whole sequences, not for decoding")
        mask = position_ids = None
        if segments is None:
            text_time = media_time(tokens, self.media_id)  # [batch, seq]
        else:
            text_time, position_ids, mask = packed_layout(tokens == self.media_id, segments)
        if decode:
            is_initialized = self.has_variable("cache", "media_count")
            count = self.variable("cache", "media_count", jnp.zeros, tokens.shape[:1],
                                  jnp.int32)
            if is_initialized:  # Not while the cache is being created.
                text_time = text_time + count.value[:, None]
                count.value = text_time[:, -1]

        token_embedding = TokenEmbedding(spec.vocab_size, spec.d_model,
                                         embedding_init=gpt.EMBEDDING_INIT, dtype=spec.dtype,
                                         name="token_embedding")
        position_embedding = LearnedPositionalEmbedding(
            spec.block_size, spec.d_model, embedding_init=gpt.EMBEDDING_INIT,
            dtype=spec.dtype, name="position_embedding")
        if position_ids is None:
            x = token_embedding(tokens) + position_embedding(tokens.shape[1], decode=decode)
        else:
            table = position_embedding(spec.block_size)[0]
            x = token_embedding(tokens) + jnp.take(table, position_ids, axis=0, mode="clip")
        x = nn.Dropout(spec.dropout_rate)(x, deterministic=not train)
        blocks = LMBlocks(spec, name="transformer")
        for i in range(spec.num_layers):
            if (i + 1) % self.cross_attention_every == 0:
                x = GatedCrossAttentionBlock(
                    num_heads=self.num_heads, head_dim=self.head_dim, mlp_ratio=self.mlp_ratio,
                    gated=self.gated, dtype=spec.dtype, name=f"gated_block_{i}",
                )(x, visual.astype(spec.dtype), text_time)
            x = blocks.block(i, x, train=train, decode=decode, mask=mask)
        if logits_at is not None:
            x = jnp.take_along_axis(x, logits_at[..., None], axis=1)
        return token_embedding.attend(blocks(x))  # [batch, seq | n, vocab], float32


class Flamingo(nn.Module):
    """Images and interleaved text -> next-token logits.

    Attributes:
      lm_spec: the frozen language model's architecture (an unbound `GPT`).
      vision: the frozen image tower's architecture (`clip.image_tower`'s arguments), as
        sorted (name, value) pairs so that the module hashes (a static `jit` argument).
      media_id: the `<image>` token.
      connector: "resampler" (Perceiver Resampler) or "mean" (the mean of the image tower's
        tokens, projected linearly: one visual token per image; an ablation).
      num_latents, resampler_depth: the resampler's output tokens per image and layers.
      max_num_media: > 0 adds learned media-time embeddings for up to that many images.
      num_heads, head_dim, mlp_ratio: the resampler's and gated blocks' attention and MLP.
      cross_attention_every, gated: as `FlamingoLM`.
    """

    lm_spec: gpt.GPT
    vision: tuple[tuple[str, Any], ...]
    media_id: int
    connector: str = "resampler"
    num_latents: int = 64
    resampler_depth: int = 6
    max_num_media: int = 0
    num_heads: int = 8
    head_dim: int = 64
    mlp_ratio: int = 4
    cross_attention_every: int = 1
    gated: bool = True

    def setup(self):
        if self.connector not in CONNECTORS:
            raise ValueError(f"unknown connector {self.connector!r}; available: "
                             f"{', '.join(CONNECTORS)}")
        self.vision_encoder = clip.image_tower(**dict(self.vision), dtype=self.lm_spec.dtype)
        if self.connector == "resampler":
            self.resampler = PerceiverResampler(
                depth=self.resampler_depth, num_latents=self.num_latents,
                num_heads=self.num_heads, head_dim=self.head_dim, mlp_ratio=self.mlp_ratio,
                max_num_media=self.max_num_media, dtype=self.lm_spec.dtype)
        else:
            width = dict(self.vision)["width"]
            self.connector_projection = Dense(width, dtype=self.lm_spec.dtype)
        self.lm = FlamingoLM(
            self.lm_spec, self.media_id, cross_attention_every=self.cross_attention_every,
            num_heads=self.num_heads, head_dim=self.head_dim, mlp_ratio=self.mlp_ratio,
            gated=self.gated)

    def encode_images(self, images: jax.Array) -> jax.Array:
        """float32 images `[batch, media, H, W, C]` -> visual tokens
        `[batch, media, latents, vision_width]` (latents 1 for the "mean" connector)."""
        batch, media = images.shape[:2]
        tokens, _ = self.vision_encoder(images.reshape(batch * media, *images.shape[2:]))
        tokens = tokens.reshape(batch, media, *tokens.shape[1:])  # [batch, media, T, width]
        if self.connector == "resampler":
            return self.resampler(tokens)
        return self.connector_projection(tokens.mean(axis=2, keepdims=True))

    def decode_text(self, visual: jax.Array, tokens: jax.Array, *, train: bool = False,
                    decode: bool = False, segments: jax.Array | None = None,
                    logits_at: jax.Array | None = None) -> jax.Array:
        """Logits of `tokens` given the visual tokens of `encode_images` (the generation
        loop's context); `segments` and `logits_at` as `FlamingoLM`'s."""
        return self.lm(visual, tokens, train=train, decode=decode, segments=segments,
                       logits_at=logits_at)

    def __call__(self, images: jax.Array, tokens: jax.Array, *, train: bool = False,
                 decode: bool = False) -> jax.Array:
        return self.decode_text(self.encode_images(images), tokens, train=train, decode=decode)


def build(config: ml_collections.ConfigDict, *, vocab_size: int, block_size: int,
          media_id: int, image_shape: tuple[int, ...], dtype: Any, remat: bool) -> Flamingo:
    """A `Flamingo` from the `config.model` subtree.

    Keys: `lm` (the frozen GPT's `model` block, as in its run's config: `variant` or
    `num_layers`, `num_heads`, `d_model`; `mlp_ratio`; `layer_norm_epsilon` and
    `max_positions` where set), `vision` (the CLIP run's `model`
    block, whose image tower is used), `connector`, `num_latents`, `resampler_depth`,
    `max_num_media`, `num_heads`, `head_dim`, `mlp_ratio`, `cross_attention_every`, `gated`,
    `dropout_rate` (the language model's; 0 in Flamingo).
    """
    lm = gpt.GPT(vocab_size=vocab_size, block_size=gpt.max_positions(config.lm, block_size),
                 mlp_ratio=config.lm.mlp_ratio,
                 layer_norm_epsilon=config.lm.get("layer_norm_epsilon", 1e-5),
                 dropout_rate=config.get("dropout_rate", 0.0), dtype=dtype, remat=remat,
                 parent=None, **gpt.sizes(config.lm))
    vision = clip.image_tower_fields(config.vision)
    if image_shape[0] % vision["patch_size"] or image_shape[1] % vision["patch_size"]:
        raise ValueError(f"image size {image_shape[0]}x{image_shape[1]} is not a multiple of "
                         f"the image tower's patch size {vision['patch_size']}")
    every = config.get("cross_attention_every", 1)
    if not isinstance(every, int) or not 1 <= every <= lm.num_layers:
        raise ValueError(f"model.cross_attention_every must be in 1..{lm.num_layers}, got "
                         f"{every!r}")
    if not 0 <= media_id < vocab_size:
        raise ValueError(f"the <image> token {media_id} is outside the vocabulary of "
                         f"{vocab_size}")
    return Flamingo(
        lm_spec=lm, vision=tuple(sorted(vision.items())), media_id=media_id,
        connector=config.get("connector", "resampler"),
        num_latents=config.get("num_latents", 64),
        resampler_depth=config.get("resampler_depth", 6),
        max_num_media=config.get("max_num_media", 0), num_heads=config.get("num_heads", 8),
        head_dim=config.get("head_dim", 64), mlp_ratio=config.get("mlp_ratio", 4),
        cross_attention_every=every, gated=config.get("gated", True))
