"""`type="squad"`: exact match and F1 of a question answering run's answers, as SQuAD's official
evaluation scripts (v1.1 and v2.0) compute them.

Each window's best span is found on the devices (`tasks.question_answering.best_spans`, over
the global batch: rows are placed by their window index and added over devices and hosts);
each question's answer is then the best of its windows' (`inference.answer.choose`), the
context's text between the span's first and last character. An answer and a gold answer are
compared after normalisation (lowercased, punctuation and the articles a / an / the removed,
white space collapsed): exact match is 1 when they are equal, F1 is over their shared words;
a question scores its best over its gold answers. A question without answers (SQuAD 2.0, the
task's `no_answer`) scores 1 for answering nothing, 0 otherwise.

Options: `split` (default the data's first eval split), `num_batches` (-1: all; else the
questions whose windows all lie in those batches). Reports `exact` and `f1` (means over
questions, 0-1); with `no_answer` also `has_answer_exact`, `has_answer_f1` and
`no_answer_exact` (over the questions with and without answers), and `best_f1` with
`best_f1_threshold`: the F1 of the best `task.null_threshold` for this split, and that
threshold (the official script's `best_f1`).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxformer.data.question_answering_pipeline import QuestionAnsweringData
from jaxformer.evaluators.base import Context, Evaluator
from jaxformer.inference.answer import choose
from jaxformer.tasks.question_answering import QuestionAnsweringTask, best_spans

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)
SPAN_FIELDS = ("first", "last", "score", "null")


def normalize_answer(text: str) -> str:
    """Lowercase, without punctuation, articles and extra white space (the official script's
    `normalize_answer`)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """F1 over the normalised words of `prediction` and `gold` (1 when both have none)."""
    predicted, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not truth:
        return float(predicted == truth)
    shared = sum((collections.Counter(predicted) & collections.Counter(truth)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(truth)
    return 2 * precision * recall / (precision + recall)


def question_scores(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of `prediction`: the best over `golds` (those that normalise to
    nothing left out; none left: the empty answer is the gold one)."""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return (max(exact_match(prediction, g) for g in golds),
            max(f1_score(prediction, g) for g in golds))


def best_threshold(answered: np.ndarray, abstained: np.ndarray, null_margin: np.ndarray
                   ) -> tuple[float, float]:
    """(best mean score, its threshold t) when a question answers if `null_margin` (null
    score - best span score) <= t and abstains otherwise; `answered` and `abstained` are each
    question's score either way. Questions with an infinite margin always abstain."""
    finite = np.isfinite(null_margin)
    order = np.argsort(np.where(finite, null_margin, np.inf), kind="stable")
    margins = null_margin[order]
    # Answering the first k questions of `order` (k = 0 .. count of finite margins).
    gains = np.concatenate([[0.0], np.cumsum((answered - abstained)[order])])
    candidates = np.arange(finite.sum() + 1)
    # A threshold can only separate different margins: cut after the last of equal ones.
    last_of_equal = np.concatenate([margins[:-1] != margins[1:], [True]]) if len(margins) \
        else np.zeros(0, bool)
    allowed = (candidates == 0) | last_of_equal[np.maximum(candidates - 1, 0)]
    scores = np.where(allowed, abstained.sum() + gains[candidates], -np.inf)
    k = int(np.argmax(scores))
    threshold = margins[k - 1] if k else (margins[0] - 1.0 if finite.any() else 0.0)
    return float(scores[k] / max(len(null_margin), 1)), float(threshold)


class SquadEvaluator(Evaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        if not (isinstance(context.task, QuestionAnsweringTask)
                and isinstance(context.data, QuestionAnsweringData)):
            raise ValueError(f"evals.{name}: squad needs a question answering task and data")
        self.split = config.get("split", "") or context.data.eval_splits[0]
        if self.split not in context.data.eval:
            raise ValueError(f"evals.{name}.split {self.split!r} is not an eval split; "
                             f"available: {', '.join(context.data.eval_splits)}")
        self.rows = context.batch_size * jax.process_count()  # Of a global batch.
        task = context.task

        def spans(params, batch):
            found = best_spans(task.predict(params, batch), batch["context"],
                               task.max_answer_length)
            values = jnp.stack([found[k].astype(jnp.float32) for k in SPAN_FIELDS], axis=-1)
            real = batch["window"] >= 0
            row = jnp.where(real, batch["window"] % self.rows, self.rows)
            return jnp.zeros((self.rows, len(SPAN_FIELDS)), jnp.float32).at[row].add(
                jnp.where(real[:, None], values, 0.0), mode="drop")

        self._spans = context.strategy.reduce_fn(spans)

    def window_spans(self, params) -> dict[str, np.ndarray]:
        """The best span of each window of the split's first `num_batches` batches."""
        windows = self.context.data.eval[self.split]
        parts = []
        for index, batch in enumerate(self.context.batches(self.split,
                                                           self.config.get("num_batches", -1))):
            table = jax.device_get(self._spans(params, self.context.strategy.place_batch(batch)))
            parts.append(np.asarray(table)[:len(windows) - index * self.rows])
        if not parts:
            raise ValueError(f"evals.{self.name}: the split has no eval batches")
        table = np.concatenate(parts)
        if len(table) < len(windows):  # Leave out a question cut by the last batch.
            table = table[:np.searchsorted(windows.question, windows.question[len(table)])]
            if not len(table):
                raise ValueError(f"evals.{self.name}: the first question's windows do not fit "
                                 "in num_batches batches; give more")
        found = dict(zip(SPAN_FIELDS, table.T, strict=True))
        found["first"], found["last"] = (found[k].astype(np.int64) for k in ("first", "last"))
        return found

    def run(self, params) -> dict[str, float]:
        data, task = self.context.data, self.context.task
        questions = data.questions[self.split]
        answers = choose(data.eval[self.split], questions.contexts, self.window_spans(params),
                         no_answer=False)
        golds = [[text for _, text in gold] for gold in questions.answers[:len(answers)]]
        answered = np.asarray([question_scores(a.text, g) for a, g in zip(answers, golds,
                                                                          strict=True)])
        if not task.no_answer:
            return {"exact": float(answered[:, 0].mean()), "f1": float(answered[:, 1].mean())}
        abstained = np.asarray([question_scores("", g) for g in golds])
        margin = np.asarray([a.null_score - a.score for a in answers])
        abstain = margin > task.null_threshold
        final = np.where(abstain[:, None], abstained, answered)
        has_answer = np.asarray([bool(a) for a in questions.answers[:len(answers)]])
        best_f1, threshold = best_threshold(answered[:, 1], abstained[:, 1], margin)

        def mean(values):
            return float(values.mean()) if len(values) else 0.0

        return {"exact": mean(final[:, 0]), "f1": mean(final[:, 1]),
                "has_answer_exact": mean(final[has_answer, 0]),
                "has_answer_f1": mean(final[has_answer, 1]),
                "no_answer_exact": mean(final[~has_answer, 0]),
                "best_f1": best_f1, "best_f1_threshold": threshold}


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> SquadEvaluator:
    return SquadEvaluator(name, config, context)
