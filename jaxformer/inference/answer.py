"""Extractive question answering with a fine-tuned run (`jaxformer answer`), and the choice of
each question's answer from its windows' best spans (shared with the `squad` evaluator).

A question and its context are encoded as in training (`question_answering_pipeline.encode`):
the context in windows of the run's `data.seq_length`, each window's best span found on the
device (`tasks.question_answering.best_spans`: starting where the window gives the token the
most context, at most `max_answer_length` tokens). The question's answer is the best of its
windows' spans; with `no_answer` (SQuAD 2.0), nothing when the best score of answering nothing
(the lowest over its windows, as BERT's `run_squad.py`) beats it by more than `null_threshold`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxformer.data import question_answering_pipeline as pipeline
from jaxformer.errors import UserError
from jaxformer.tasks.question_answering import best_spans


@dataclasses.dataclass(frozen=True)
class Answer:
    """A question's answer: `text` ("" for none), its `[start, end)` characters in the
    context (-1 for none), `score` (first + last logit; -inf when no span was valid) and
    `null_score` (that of answering nothing)."""

    text: str
    start: int
    end: int
    score: float
    null_score: float


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises UserError unless `config` is a question answering run."""
    if config.task.name != "question_answering":
        raise UserError(f"{workdir} holds a {config.task.name!r} run; answer needs a question "
                        "answering (task 'question_answering') run")


def choose(windows: pipeline.Windows, contexts: Sequence[str], spans: dict[str, np.ndarray],
           *, no_answer: bool, null_threshold: float = 0.0) -> list[Answer]:
    """Each question's answer from the best span of each of its windows (`spans`: `first`,
    `last`, `score`, `null` per window, as `best_spans` gives them, for the first windows:
    those of whole questions); `contexts` by question."""
    answers = []
    owners = windows.question[:len(spans["score"])]
    bounds = np.flatnonzero(np.diff(owners, prepend=-1, append=-1))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        best = lo + int(np.argmax(spans["score"][lo:hi]))
        score, null = float(spans["score"][best]), float(np.min(spans["null"][lo:hi]))
        if not np.isfinite(score) or (no_answer and null - score > null_threshold):
            answers.append(Answer("", -1, -1, score, null))
            continue
        start, end = windows.characters(best, spans["first"][best], spans["last"][best])
        context = contexts[windows.question[best]]
        answers.append(Answer(context[start:end], start, end, score, null))
    return answers


def window_spans(predict: Callable[[dict], Any], rows: pipeline.SpanRows, batch_size: int,
                 max_answer_length: int) -> dict[str, np.ndarray]:
    """`best_spans` of every window of `rows`, in batches of `batch_size` (the last one
    padded, so every batch has one shape); `predict(batch)` gives the logits."""
    find = jax.jit(best_spans, static_argnums=2)
    parts = []
    for start in range(0, len(rows), batch_size):
        indices = list(range(start, min(start + batch_size, len(rows))))
        batch = rows.make(indices + [None] * (batch_size - len(indices)))
        found = jax.device_get(find(predict(batch), batch["context"], max_answer_length))
        parts.append({k: np.asarray(v)[:len(indices)] for k, v in found.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def answer_questions(run: Any, questions: pipeline.Questions, *, batch_size: int = 32
                     ) -> list[Answer]:
    """The answer to each of `questions` (their gold answers are not read) under `run` (a
    loaded question answering run, see `jaxformer.inference.workdir.load_run`), with the
    run's `task.max_answer_length`, `no_answer` and `null_threshold`; windows go through the
    model in batches of `batch_size`."""
    check_config(run.config, run.workdir)
    for i, (question, context) in enumerate(zip(questions.questions, questions.contexts,
                                                strict=True)):
        if not question.strip() or not context.strip():
            raise UserError(f"question {questions.ids[i]!r}: the question and the context "
                            "must not be empty")
    task, tokenizer, data = run.task, run.data.tokenizer, run.config.data
    windows = pipeline.encode(
        tokenizer, questions, seq_length=task.seq_length,
        doc_stride=pipeline.get(data, "doc_stride"),
        max_query_length=pipeline.get(data, "max_query_length"), drop_unfound=False)
    rows = pipeline.SpanRows(windows, task.seq_length, (tokenizer.cls_id, tokenizer.sep_id))
    spans = window_spans(lambda batch: task.predict(run.params, batch), rows,
                         min(batch_size, len(rows)), task.max_answer_length)
    return choose(windows, questions.contexts, spans, no_answer=task.no_answer,
                  null_threshold=task.null_threshold)


def answer(run: Any, question: str, context: str, *, batch_size: int = 8) -> Answer:
    """The answer to `question` in `context` under `run` (see `answer_questions`)."""
    if not question.strip() or not context.strip():
        raise UserError("the question and the context must not be empty")
    questions = pipeline.Questions(["0"], [question], [context], [[]])
    return answer_questions(run, questions, batch_size=batch_size)[0]
