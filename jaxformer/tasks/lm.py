"""Next-token prediction: cross-entropy over every position of `{"inputs", "targets"}`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxformer import registry
from jaxformer.tasks.base import Average, Task, compute_dtype


class LMTask(Task):
    """Causal language modelling on batches `{"inputs", "targets"}: int32[batch, block_size]`."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.block_size = config.data.block_size
        self.tokenizer = data.tokenizer
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=data.vocab_size, block_size=self.block_size,
            dtype=compute_dtype(config.train.compute_dtype), remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        tokens = jnp.zeros((batch_size, self.block_size), jnp.int32)
        return {"inputs": tokens, "targets": tokens}

    def model_inputs(self, batch):
        return (batch["inputs"],)

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        logits = self.model.apply({"params": params}, batch["inputs"], train=train,
                                  rngs={"dropout": rng})
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = logits.argmax(-1) == batch["targets"]
        return Average.of(nll), {"accuracy": Average.of(correct)}

    def items_per_example(self) -> tuple[int, str]:
        return self.block_size, "tok"

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one sequence: 6N per token plus attention (PaLM appendix B)."""
        model = self.model
        n = sum(x.size for x in jax.tree.leaves(params))
        n -= model.block_size * model.d_model  # Position embeddings do no matmul work.
        per_token = 6 * n + 12 * model.num_layers * model.d_model * self.block_size
        return float(per_token * self.block_size)


def build(config: ml_collections.ConfigDict, data: Any) -> LMTask:
    return LMTask(config, data)
