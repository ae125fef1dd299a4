"""Sequence-to-sequence translation: label-smoothed teacher forcing and token accuracy.

Batches are `{"inputs": int32[b, s], "targets": int32[b, t]}`, both ending in EOS and padded
with id 0. Losses and accuracy are averaged over the non-padding target tokens. Translations
and BLEU come from the `bleu` evaluator and `jaxformer translate` (`jaxformer.inference`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer import registry
from jaxformer.losses.cross_entropy import label_smoothed_nll
from jaxformer.tasks.base import Average, Task, compute_dtype


class TranslationTask(Task):
    """Teacher-forced training of `config.model` on `{"inputs", "targets"}` batches."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        tokenizer = data.tokenizer
        self.tokenizer = tokenizer
        self.pad_id, self.bos_id, self.eos_id = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
        if self.pad_id != 0:
            raise ValueError(f"the tokenizer's pad id must be 0, got {self.pad_id}")
        self.label_smoothing = config.task.label_smoothing
        self.max_source_length = config.data.max_source_length
        self.max_target_length = config.data.max_target_length
        self.max_decode_length = config.task.max_decode_length
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=tokenizer.vocab_size,
            max_len=max(self.max_source_length, self.max_target_length, self.max_decode_length),
            bos_id=self.bos_id, dtype=compute_dtype(config.train.compute_dtype),
            remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        return {"inputs": jnp.ones((batch_size, self.max_source_length), jnp.int32),
                "targets": jnp.ones((batch_size, self.max_target_length), jnp.int32)}

    def model_inputs(self, batch):
        return batch["inputs"], batch["targets"]

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        logits = self.model.apply({"params": params}, batch["inputs"], batch["targets"],
                                  train=train, rngs={"dropout": rng})
        targets = batch["targets"]
        real = targets != self.pad_id
        loss, nll = label_smoothed_nll(logits, targets, self.label_smoothing)
        correct = logits.argmax(-1) == targets
        return Average.of(loss, real), {"nll": Average.of(nll, real),
                                        "accuracy": Average.of(correct, real)}

    def encode_source(self, text: str) -> list[int]:
        """Source ids ending in EOS, truncated to `max_source_length` tokens."""
        return self.tokenizer.encode(text)[:self.max_source_length - 1] + [self.eos_id]

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one full-length pair: 6 per weight per token it multiplies, plus
        attention scores and sums (PaLM appendix B's counting)."""
        size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
        s, t = self.max_source_length, self.max_target_length
        d, layers = self.model.d_model, self.model.num_layers
        width = self.model.num_heads * self.model.head_dim or d  # Of queries, keys, values.
        head = d * self.model.vocab_size  # The output projection, once per target token.
        matmuls = 6 * (size(params["encoder"]) * s + (size(params["decoder"]) + head) * t)
        attention = 12 * layers * width * (s * s + t * t + t * s)
        return float(matmuls + attention)


def build(config: ml_collections.ConfigDict, data: Any) -> TranslationTask:
    return TranslationTask(config, data)
