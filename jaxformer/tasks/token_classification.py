"""Token classification (tagging, e.g. named entities) with a BERT-style encoder.

Batches are `{"input_ids", "segment_ids", "label": int32[batch, seq_length]}` (see
`jaxformer.data.token_classification_pipeline`): a tag id on each word's first piece, -1 on
every other position, which carries no weight. The loss is the cross-entropy summed over the
tagged positions of the batch; `accuracy` is over those positions. `predict` gives the logits
`[batch, seq_length, num_tags]` that the `entity_f1` and `classification` evaluators read.

Config: `task.name = "token_classification"`, `task.label_smoothing` (default 0.0); the model
is `model.name = "bert"` with a token head. Start from a pretraining run with
`init_from.mapping = (("encoder", "encoder"),)`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer.tasks.text_classification import TextClassificationTask


class TokenClassificationTask(TextClassificationTask):
    """Supervised classification of every word into `len(data.class_names)` tags."""

    head = "token"

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        tokens = jnp.zeros((batch_size, self.seq_length), jnp.int32)
        return {"input_ids": tokens, "segment_ids": tokens, "label": tokens}

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one sequence: 6N per token for the encoder blocks and the
        classifier, plus attention (`12 L d T` per token; PaLM appendix B)."""
        count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
        t = self.seq_length
        dense = t * (count(params["encoder"]["transformer"]) + count(params["classifier"]))
        return float(6 * dense + 12 * self.model.num_layers * self.model.d_model * t * t)


def build(config: ml_collections.ConfigDict, data: Any) -> TokenClassificationTask:
    return TokenClassificationTask(config, data)
