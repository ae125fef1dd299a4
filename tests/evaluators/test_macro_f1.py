"""Macro-F1 of the classification evaluator: exact over a whole split (counts summed over
padded batches and 8 devices before dividing), against a hand-counted confusion matrix and,
where it is installed, scikit-learn."""

import ml_collections
import numpy as np
import pytest

from jaxformer.evaluators import classification
from jaxformer.evaluators.base import Context
from jaxformer.train import parallel


def hand_macro_f1(labels, predicted, classes):
    """Per-class F1 from counts taken one example at a time; classes never seen left out."""
    scores = []
    for c in range(classes):
        tp = sum(1 for y, p in zip(labels, predicted) if y == c and p == c)
        fp = sum(1 for y, p in zip(labels, predicted) if y != c and p == c)
        fn = sum(1 for y, p in zip(labels, predicted) if y == c and p != c)
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def test_macro_f1_of_a_small_confusion_matrix():
    # Labels 0 0 0 1 1 2, predictions 0 0 1 1 2 2: F1 = 4/5, 2/4, 2/3.
    confusion = np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert classification.macro_f1(confusion) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # A class neither labelled nor predicted is left out; one predicted only scores 0.
    assert classification.macro_f1(np.array([[3, 0, 0], [0, 0, 0], [0, 0, 0]])) == 1.0
    assert classification.macro_f1(np.array([[2, 1], [0, 0]])) == pytest.approx((0.8 + 0) / 2)


class Logits:
    """A task whose prediction is the batch's `logits`."""

    def predict(self, params, batch):
        del params
        return batch["logits"]


class Rows:
    """Eval batches over fixed logits and labels; rows past the end labelled -1."""

    def __init__(self, logits, labels):
        self.logits, self.labels = logits, labels

    def eval_iter(self, *, batch_size, num_batches, split=None, process_index=0,
                  process_count=1):
        del num_batches, split, process_index, process_count
        for start in range(0, len(self.labels), batch_size):
            logits = np.zeros((batch_size, self.logits.shape[1]), np.float32)
            labels = np.full((batch_size,), -1, np.int32)
            part = slice(start, start + batch_size)
            n = len(self.labels[part])
            logits[:n], labels[:n] = self.logits[part], self.labels[part]
            logits[n:, 0] = 100.0  # Padding rows predict class 0, which must not count.
            yield {"logits": logits, "label": labels}


@pytest.mark.parametrize("strategy", [parallel.Sharded, parallel.Pmap])
def test_evaluator_macro_f1_is_exact_over_padded_batches_and_devices(strategy):
    rng = np.random.default_rng(0)
    classes, n = 5, 203  # 203 rows in batches of 16: the last one is padded.
    labels = rng.choice(classes, size=n, p=[0.5, 0.3, 0.1, 0.1, 0.0]).astype(np.int32)
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    logits[np.arange(n), labels] += 1.0  # Better than chance, worse than perfect.
    config = ml_collections.ConfigDict({"type": "classification", "macro_f1": True,
                                        "top_k": (1,)})
    evaluator = classification.build("test", config,
                                     Context(Logits(), Rows(logits, labels), strategy(), 16))
    got = evaluator.run(params={})
    predicted = logits.argmax(-1)
    assert got["top1"] == pytest.approx((predicted == labels).mean(), abs=1e-7)
    expected = hand_macro_f1(labels.tolist(), predicted.tolist(), classes)
    assert got["macro_f1"] == pytest.approx(expected, abs=1e-9)
    # Averaging per batch would not give the same number.
    per_batch = [hand_macro_f1(labels[s:s + 16].tolist(), predicted[s:s + 16].tolist(), classes)
                 for s in range(0, n, 16)]
    assert abs(np.mean(per_batch) - expected) > 1e-3
    try:
        from sklearn.metrics import f1_score
    except ImportError:
        return
    assert got["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"),
                                            abs=1e-9)


def test_without_the_option_there_is_no_macro_f1():
    labels = np.array([0, 1, 2, 1, 0, 2, 1, 1], np.int32)
    logits = np.eye(3, dtype=np.float32)[labels]
    config = ml_collections.ConfigDict({"type": "classification", "top_k": (1, 5)})
    evaluator = classification.build("test", config,
                                     Context(Logits(), Rows(logits, labels), parallel.Sharded(),
                                             8))
    assert evaluator.run(params={}) == {"top1": 1.0, "top5": 1.0}
