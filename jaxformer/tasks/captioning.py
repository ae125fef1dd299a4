"""Captioning over interleaved image-text sequences: the language-model loss on the text tokens,
conditioned on the images (the Flamingo-style model's objective).

Batches `{"images": float32[batch, media, H, W, C], "inputs", "targets": int32[batch, seq],
"weights": float32[batch, seq]}` (see `data.interleaved_pipeline`); the loss is the
cross-entropy of the weighted targets (caption text and `<|endofchunk|>`; not `<image>`, not
padding).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxformer import registry
from jaxformer.tasks.base import Average, Task, compute_dtype


class CaptioningTask(Task):
    """Next-token prediction of the text of interleaved sequences, given their images."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.seq_length = data.seq_length
        self.max_images = data.max_images
        self.image_shape = tuple(data.image_shape)
        self.tokenizer = data.tokenizer
        self.media_id, self.end_of_chunk_id = data.media_id, data.end_of_chunk_id
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=data.vocab_size, block_size=config.model.block_size,
            media_id=data.media_id, image_shape=self.image_shape,
            dtype=compute_dtype(config.train.compute_dtype), remat=config.train.remat)
        if self.seq_length > config.model.block_size:
            raise ValueError(f"data.seq_length {self.seq_length} exceeds the language model's "
                             f"block_size {config.model.block_size}")

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        tokens = jnp.zeros((batch_size, self.seq_length), jnp.int32)
        return {"images": jnp.zeros((batch_size, self.max_images, *self.image_shape)),
                "inputs": tokens, "targets": tokens,
                "weights": jnp.zeros((batch_size, self.seq_length))}

    def model_inputs(self, batch):
        return batch["images"], batch["inputs"]

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        logits = self.model.apply({"params": params}, *self.model_inputs(batch), train=train,
                                  rngs={"dropout": rng})
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = logits.argmax(-1) == batch["targets"]
        weights = batch["weights"]
        return Average.of(nll, weights), {"accuracy": Average.of(correct, weights)}

    def items_per_example(self) -> tuple[int, str]:
        return self.seq_length, "tok"


def build(config: ml_collections.ConfigDict, data: Any) -> CaptioningTask:
    return CaptioningTask(config, data)
