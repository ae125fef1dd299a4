"""`type="entity_f1"`: span-level precision, recall and F1 of a tagging task, as the CoNLL
shared tasks' `conlleval` script computes them.

A span (entity) is a run of words of one type: it starts at B-X, S-X, or at I-X / E-X that
does not continue the span before (after O, E-, S- or another type); it continues over I-X
and E-X after B-X or I-X of the same type. A predicted span is correct when a gold span has
the same first word, last word and type. Precision, recall and F1 are over all the spans of
the split (micro averages; per type as `f1_<TYPE>`, for the types present), from counts added
up over batches and devices; `accuracy` is over tagged words.

Options: `split`, `num_batches` (-1: all). Reads the task's logits `[batch, seq, tags]` and
the batch's `label` (a tag id on each word's first piece, -1 elsewhere), and the tag names
from `data.class_names`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxformer.data.token_classification_pipeline import BEGIN, END, INSIDE, OUTSIDE, TagScheme
from jaxformer.evaluators.base import BatchEvaluator, Context


def span_marks(prefix: jax.Array, kind: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(inside, starts, continues), bool `[..., words]`: whether each word is in a span,
    begins one, or continues the one before it."""
    pad = [(0, 0)] * (prefix.ndim - 1) + [(1, 0)]
    previous = jnp.pad(prefix, pad, constant_values=OUTSIDE)[..., :-1]
    previous_kind = jnp.pad(kind, pad, constant_values=-1)[..., :-1]
    inside = prefix != OUTSIDE
    continues = (((prefix == INSIDE) | (prefix == END))
                 & ((previous == BEGIN) | (previous == INSIDE)) & (kind == previous_kind))
    return inside, inside & ~continues, continues


def span_counts(gold: jax.Array, predicted: jax.Array, scheme: TagScheme) -> jax.Array:
    """float32 `[3, types]`: gold spans, predicted spans and correct spans of each type.

    `gold` and `predicted` are int32 tag ids `[rows, words]`; words with gold id -1 (past a
    sentence's end) are outside every span, in both.
    """
    prefixes = jnp.asarray(scheme.prefixes, jnp.int32)
    kinds = jnp.asarray(scheme.kinds, jnp.int32)
    real = gold >= 0

    def parts(tags):
        safe = jnp.maximum(tags, 0)
        return jnp.where(real, prefixes[safe], OUTSIDE), jnp.where(real, kinds[safe], -1)

    gold_prefix, gold_kind = parts(gold)
    predicted_prefix, predicted_kind = parts(predicted)
    gold_in, gold_start, gold_continues = span_marks(gold_prefix, gold_kind)
    predicted_in, predicted_start, predicted_continues = span_marks(predicted_prefix,
                                                                   predicted_kind)
    # A gold span is found when every word of it agrees (in a predicted span of its type, that
    # starts where it starts) and the predicted span does not run on past its last word.
    agrees = predicted_in & (predicted_kind == gold_kind) & (predicted_start == gold_start)
    next_continues = lambda c: jnp.pad(c[..., 1:], [(0, 0), (0, 1)])  # noqa: E731
    overruns = ~next_continues(gold_continues) & next_continues(predicted_continues)
    wrong = gold_in & (~agrees | overruns)
    span_id = jnp.where(gold_in, jnp.cumsum(gold_start, axis=-1), 0)
    words = gold.shape[-1]
    wrong_per_span = jax.vmap(lambda w, s: jax.ops.segment_sum(w, s, words + 1))(
        wrong.astype(jnp.int32), span_id)
    found = gold_start & (jnp.take_along_axis(wrong_per_span, span_id, axis=-1) == 0)
    types = len(scheme.kind_names)

    def per_type(flags, kind):
        return (jax.nn.one_hot(kind, types) * flags[..., None]).sum(axis=tuple(range(kind.ndim)))

    return jnp.stack([per_type(gold_start, gold_kind), per_type(predicted_start, predicted_kind),
                      per_type(found, gold_kind)])


def word_tags(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(gold, predicted) tag ids `[rows, seq]` of the tagged positions (label >= 0), moved to
    the front of each row in order; -1 after them."""
    order = jnp.argsort(labels < 0, axis=-1, stable=True)
    gold = jnp.take_along_axis(labels, order, axis=-1)
    predicted = jnp.take_along_axis(logits.argmax(-1).astype(jnp.int32), order, axis=-1)
    return gold, jnp.where(gold >= 0, predicted, -1)


def scores(counts: np.ndarray, kind_names: tuple[str, ...]) -> dict[str, float]:
    """precision, recall and f1 over all types, and `f1_<TYPE>` of each type that has gold or
    predicted spans, from `span_counts`."""
    def f1(gold, predicted, correct):
        precision = correct / predicted if predicted else 0.0
        recall = correct / gold if gold else 0.0
        total = precision + recall
        return precision, recall, (2 * precision * recall / total if total else 0.0)

    gold, predicted, correct = np.asarray(counts, np.float64)
    precision, recall, overall = f1(gold.sum(), predicted.sum(), correct.sum())
    metrics = {"precision": precision, "recall": recall, "f1": overall}
    for i, name in enumerate(kind_names):
        if gold[i] or predicted[i]:
            metrics[f"f1_{name}"] = f1(gold[i], predicted[i], correct[i])[2]
    return metrics


class EntityF1Evaluator(BatchEvaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        self.scheme = TagScheme.of(context.data.class_names)
        super().__init__(name, config, context)

    def sums(self, params, batch):
        logits = self.context.task.predict(params, batch)
        gold, predicted = word_tags(logits, batch["label"])
        real = gold >= 0
        return {"spans": span_counts(gold, predicted, self.scheme),
                "correct_words": ((gold == predicted) & real).sum().astype(jnp.float32),
                "words": real.sum().astype(jnp.float32)}

    def metrics(self, totals) -> dict[str, float]:
        metrics = scores(totals["spans"], self.scheme.kind_names)
        metrics["accuracy"] = float(totals["correct_words"] / max(totals["words"], 1e-9))
        return metrics


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> EntityF1Evaluator:
    return EntityF1Evaluator(name, config, context)
