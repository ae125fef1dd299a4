"""Extractive question answering (SQuAD) with a BERT-style encoder.

Batches are `{"input_ids", "segment_ids": int32[batch, seq_length], "label": int32[batch, 2]}`
(see `jaxformer.data.question_answering_pipeline`): `[CLS] question [SEP] context [SEP]` and
the answer's first and last token, both 0 ([CLS]) where the window holds no answer; padding
rows are labelled -1 and carry no weight. The loss is BERT's: the mean of the cross-entropies
of the first and the last token over the row's positions; `accuracy` counts the two
positions separately. `predict` gives the logits `[batch, seq_length, 2]` (first, last) that
the `squad` evaluator and `jaxformer answer` read.

Config: `task.name = "question_answering"`, `task.label_smoothing` (default 0.0),
`task.max_answer_length` (tokens, default 30), `task.no_answer` (SQuAD 2.0: a question may
have no answer; default false) and `task.null_threshold` (with `no_answer`, answer nothing
when that scores more than this above the best span; default 0.0). The model is
`model.name = "bert"` with a span head. Start from a pretraining run with
`init_from.mapping` naming the encoder's parts (a span head has no pooler).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer.data.question_answering_pipeline import CONTEXT, MAX_CONTEXT
from jaxformer.tasks.base import classification_loss
from jaxformer.tasks.token_classification import TokenClassificationTask

MAX_ANSWER_LENGTH = 30  # Tokens, as BERT's run_squad.py.


class QuestionAnsweringTask(TokenClassificationTask):
    """Scores every token as the first and the last of the answer (FLOPs as a tagger's with
    two tags)."""

    head = "span"

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        super().__init__(config, data)
        self.no_answer = bool(config.task.get("no_answer", False))
        self.null_threshold = float(config.task.get("null_threshold", 0.0))
        self.max_answer_length = config.task.get("max_answer_length", MAX_ANSWER_LENGTH)
        if not isinstance(self.max_answer_length, int) or self.max_answer_length < 1:
            raise ValueError(f"task.max_answer_length must be an integer >= 1, got "
                             f"{self.max_answer_length!r}")

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        tokens = jnp.zeros((batch_size, self.seq_length), jnp.int32)
        return {"input_ids": tokens, "segment_ids": tokens,
                "label": jnp.zeros((batch_size, 2), jnp.int32)}

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        logits = self.model.apply({"params": params}, *self.model_inputs(batch), train=train,
                                  rngs={"dropout": rng})
        # [b, L, 2] -> [b, 2, L]: a choice among the L positions for the first and last token.
        return classification_loss(jnp.moveaxis(logits, -1, 1), batch["label"],
                                   self.seq_length, self.label_smoothing)


def build(config: ml_collections.ConfigDict, data: Any) -> QuestionAnsweringTask:
    return QuestionAnsweringTask(config, data)


def best_spans(logits: jax.Array, context: jax.Array, max_answer_length: int
               ) -> dict[str, jax.Array]:
    """The best answer of each window: `first` and `last` (int32 `[b]`, row positions) and
    `score` (their first + last logits; -inf when the window has no valid span), over the
    spans that start on a token of maximal context (`context` 2), end on a context token
    (`context` >= 1) and have 1 to `max_answer_length` tokens; and `null`, the score of
    answering nothing ([CLS] as first and last)."""
    first, last = logits[..., 0], logits[..., 1]
    length = logits.shape[-2]
    position = jnp.arange(length)
    offset = position[None, :] - position[:, None]  # last - first
    valid = ((context[:, :, None] == MAX_CONTEXT) & (context[:, None, :] >= CONTEXT)
             & (offset >= 0) & (offset < max_answer_length))
    scores = jnp.where(valid, first[:, :, None] + last[:, None, :], -jnp.inf)
    best = scores.reshape(scores.shape[0], -1).argmax(-1)
    return {"first": (best // length).astype(jnp.int32),
            "last": (best % length).astype(jnp.int32),
            "score": scores.reshape(scores.shape[0], -1).max(-1),
            "null": first[:, 0] + last[:, 0]}
