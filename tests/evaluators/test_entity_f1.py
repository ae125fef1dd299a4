"""The `entity_f1` evaluator: span counts against seqeval (a port of CoNLL's conlleval) on
random IOB, IOB1-style and IOBES sequences, a hand-checked example, the tagged words taken
from between word pieces, and the evaluator over 8 devices."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from jaxformer.data.token_classification_pipeline import TagScheme
from jaxformer.evaluators.base import Context
from jaxformer.evaluators.entity_f1 import EntityF1Evaluator, scores, span_counts, word_tags
from jaxformer.train import parallel

IOB = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
IOBES = ("O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B")


def counts(gold, predicted, tags):
    return np.asarray(span_counts(jnp.asarray(gold, jnp.int32), jnp.asarray(predicted, jnp.int32),
                                  TagScheme.of(tags)))


def named(rows, lengths, tags):
    return [[tags[t] for t in row[:n]] for row, n in zip(rows, lengths, strict=True)]


def test_hand_checked_example():
    tags = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    # Gold: [John Smith]PER visited [New York]LOC ; [Ann]PER [Lee]PER (IOB1: I-, then B-).
    gold = [[1, 2, 0, 3, 4, 0, 2, 1]]
    # Predicted: John Smith right; New York cut short (wrong); Ann and Lee merged (wrong).
    predicted = [[1, 2, 0, 3, 0, 0, 2, 2]]
    got = counts(gold, predicted, tags)
    np.testing.assert_array_equal(got, [[3, 1], [2, 1], [1, 0]])  # rows: gold, predicted, found
    metrics = scores(got, ("PER", "LOC"))
    assert metrics["precision"] == pytest.approx(1 / 3) and metrics["recall"] == 0.25
    assert metrics["f1"] == pytest.approx(2 / 7)  # 2 p r / (p + r)
    assert metrics["f1_PER"] == pytest.approx(0.4) and metrics["f1_LOC"] == 0.0


@pytest.mark.parametrize("tags", [IOB, IOBES])
def test_span_counts_match_seqeval(tags):
    rng = np.random.default_rng(0)
    for _ in range(100):
        rows, words = 4, 12
        gold = rng.integers(0, len(tags), (rows, words))
        predicted = np.where(rng.random((rows, words)) < 0.6, gold,
                             rng.integers(0, len(tags), (rows, words)))
        lengths = rng.integers(0, words + 1, rows)
        for row, n in enumerate(lengths):
            gold[row, n:] = predicted[row, n:] = -1
        y_true, y_pred = named(gold, lengths, tags), named(predicted, lengths, tags)
        true = {(row, *span) for row, s in enumerate(y_true) for span in get_entities(s)}
        pred = {(row, *span) for row, s in enumerate(y_pred) for span in get_entities(s)}
        got = counts(gold, predicted, tags)
        assert got.sum(axis=1).tolist() == [len(true), len(pred), len(true & pred)]
        if true and pred:
            metrics = scores(got, TagScheme.of(tags).kind_names)
            assert metrics["f1"] == pytest.approx(f1_score(y_true, y_pred), abs=1e-12)
            assert metrics["precision"] == pytest.approx(precision_score(y_true, y_pred))
            assert metrics["recall"] == pytest.approx(recall_score(y_true, y_pred))


def test_word_tags_are_the_tagged_positions_in_order():
    labels = np.array([[-1, 1, -1, 2, 0, -1, -1], [-1, -1, -1, -1, -1, -1, -1]], np.int32)
    logits = np.zeros((2, 7, 3), np.float32)
    logits[0, [1, 2, 3, 4], [2, 1, 2, 0]] = 1.0  # Position 2 (a second piece) is ignored.
    gold, predicted = word_tags(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_array_equal(gold, [[1, 2, 0, -1, -1, -1, -1], [-1] * 7])
    np.testing.assert_array_equal(predicted, [[2, 2, 0, -1, -1, -1, -1], [-1] * 7])


def test_types_without_spans_are_not_reported_and_nothing_divides_by_zero():
    metrics = scores(np.zeros((3, 2)), ("PER", "LOC"))
    assert metrics == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="neither O nor"):
        TagScheme.of(("O", "PER"))


class _FixedLogits:
    """A task whose predictions are given logits (the evaluator's view of a tagger)."""

    def __init__(self, logits):
        self.logits = logits

    def predict(self, params, batch):
        return jnp.take(self.logits, batch["row"], axis=0)


@pytest.mark.parametrize("strategy", ["sharded", "pmap"])
def test_evaluator_over_eight_devices_matches_seqeval_on_the_split(strategy):
    rng = np.random.default_rng(1)
    rows, seq = 20, 10
    labels = np.where(rng.random((rows, seq)) < 0.7, rng.integers(0, len(IOB), (rows, seq)), -1)
    labels[:, 0] = -1
    logits = rng.normal(size=(rows, seq, len(IOB))).astype(np.float32)
    logits[np.arange(rows)[:, None], np.arange(seq), np.maximum(labels, 0)] += 1.5
    # Two batches of 16 rows; the last 12 rows are padding (all -1).
    padded = np.full((32, seq), -1, np.int32)
    padded[:rows] = labels
    batches = [{"row": np.arange(i, i + 16) % rows, "label": padded[i:i + 16]} for i in (0, 16)]
    data = types.SimpleNamespace(class_names=IOB, eval_iter=lambda **kwargs: iter(batches))
    context = Context(task=_FixedLogits(jnp.asarray(logits)), data=data,
                      strategy=parallel.make_strategy(strategy), batch_size=16)
    assert len(jax.devices()) == 8
    got = EntityF1Evaluator("val", ml_collections.ConfigDict(dict(type="entity_f1")),
                            context).run(None)
    predicted = logits.argmax(-1)
    y_true = [[IOB[t] for t in labels[r][labels[r] >= 0]] for r in range(rows)]
    y_pred = [[IOB[t] for t in predicted[r][labels[r] >= 0]] for r in range(rows)]
    assert got["f1"] == pytest.approx(f1_score(y_true, y_pred), abs=1e-9)
    assert got["recall"] == pytest.approx(recall_score(y_true, y_pred), abs=1e-9)
    tagged = labels >= 0
    assert got["accuracy"] == pytest.approx((predicted == labels)[tagged].mean())
