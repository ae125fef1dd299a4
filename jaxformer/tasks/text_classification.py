"""Text classification (single sentences or sentence pairs) with a BERT-style encoder.

Batches are `{"input_ids", "segment_ids": int32[batch, seq_length], "label": int32[batch]}`:
`[CLS] A [SEP]` (segment 0) or `[CLS] A [SEP] B [SEP]` (B in segment 1), padded with id 0.
Evaluation batches may be padded to a fixed size with rows whose label is -1; those rows
carry no weight. `predict` gives the logits `[batch, num_classes]` that the `classification`
evaluator reads.

Config: `task.name = "text_classification"`, `task.label_smoothing` (default 0.0); the model
is `model.name = "bert"` with a sequence head (see `jaxformer.models.bert.build`). Start from
a pretraining run with `init_from.mapping = (("encoder", "encoder"),)`. `data.seq_length`
gives the input length when the data object does not (a `DataSpec`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer import registry
from jaxformer.tasks.base import Task, classification_loss, compute_dtype
from jaxformer.tasks.bert_pretraining import data_size


class TextClassificationTask(Task):
    """Supervised classification of token sequences into `len(data.class_names)` classes."""

    head = "sequence"  # The BERT head (`jaxformer.models.bert.build`).

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.seq_length = data_size(config, data, "seq_length")
        self.class_names = tuple(data.class_names)
        self.num_classes = len(self.class_names)
        self.label_smoothing = config.task.get("label_smoothing", 0.0)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got "
                             f"{self.label_smoothing}")
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=data.vocab_size, head=self.head,
            num_classes=self.num_classes, dtype=compute_dtype(config.train.compute_dtype),
            remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        tokens = jnp.zeros((batch_size, self.seq_length), jnp.int32)
        return {"input_ids": tokens, "segment_ids": tokens,
                "label": jnp.zeros((batch_size,), jnp.int32)}

    def model_inputs(self, batch):
        return batch["input_ids"], batch["segment_ids"]

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        logits = self.model.apply({"params": params}, *self.model_inputs(batch), train=train,
                                  rngs={"dropout": rng})
        return classification_loss(logits, batch["label"], self.num_classes,
                                   self.label_smoothing)

    def items_per_example(self) -> tuple[int, str]:
        return self.seq_length, "tok"

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one sequence: 6N per item plus attention (PaLM appendix B): the
        encoder blocks on every token (attention `12 L d T` per token), the pooler and the
        classifier once. Embedding lookups do no matmul work."""
        model = self.model
        count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
        t = self.seq_length
        dense = (t * count(params["encoder"]["transformer"]) + count(params["encoder"]["pooler"])
                 + count(params["classifier"]))
        return float(6 * dense + 12 * model.num_layers * model.d_model * t * t)


def build(config: ml_collections.ConfigDict, data: Any) -> TextClassificationTask:
    return TextClassificationTask(config, data)
