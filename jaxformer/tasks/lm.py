"""Next-token prediction: cross-entropy over every position, perplexity, sampling."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxformer import registry

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
    if name not in DTYPES:
        raise ValueError(f"unknown compute dtype {name!r}; available: {', '.join(DTYPES)}")
    return DTYPES[name]


class LMTask:
    """Causal language modelling on batches `{"inputs", "targets"}: int32[batch, block_size]`."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.block_size = config.data.block_size
        self.tokens_per_example = self.block_size
        self.tokenizer = data.tokenizer
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=data.vocab_size, block_size=self.block_size,
            dtype=compute_dtype(config.train.compute_dtype), remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        tokens = jnp.zeros((batch_size, self.block_size), jnp.int32)
        return {"inputs": tokens, "targets": tokens}

    def init(self, rng: jax.Array) -> Any:
        return self.model.init(rng, self.dummy_batch(1)["inputs"])["params"]

    def loss(self, params, batch, rng, *, train: bool):
        logits = self.model.apply({"params": params}, batch["inputs"], train=train,
                                  rngs={"dropout": rng})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()
        accuracy = (logits.argmax(-1) == batch["targets"]).mean()
        return loss, {"accuracy": accuracy}

    def eval_metrics(self, params, batch) -> dict[str, jax.Array]:
        loss, metrics = self.loss(params, batch, jax.random.key(0), train=False)
        return {"loss": loss, **metrics}

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one sequence: 6N per token plus attention (PaLM appendix B)."""
        model = self.model
        n = sum(x.size for x in jax.tree.leaves(params))
        n -= model.block_size * model.d_model  # Position embeddings do no matmul work.
        per_token = 6 * n + 12 * model.num_layers * model.d_model * self.block_size
        return float(per_token * self.block_size)


def build(config: ml_collections.ConfigDict, data: Any) -> LMTask:
    return LMTask(config, data)
