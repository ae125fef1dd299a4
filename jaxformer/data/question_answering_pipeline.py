"""Extractive question answering batches for BERT fine-tuning (SQuAD): `[CLS] question [SEP]
context window [SEP]`, the answer marked by its first and last token.

A question keeps at most `max_query_length` pieces. A context longer than what is left of
`seq_length` is cut into windows of that many pieces, `doc_stride` pieces apart, the last one
reaching its end (BERT's `run_squad.py`); each window is one row:
  * `input_ids`, `segment_ids` (1 from the window's first token to the last [SEP]);
  * `label` int32 `[b, 2]`: the first and last token of the question's first answer in the
    row; 0 and 0 ([CLS]) when the window does not hold the whole answer or there is none;
  * `window` int32 `[b]`: the row's window in its split (its question is `Windows.question`);
  * `context` int32 `[b, L]`: 0 off the context, 2 on a context token whose window is the one
    that gives it the most context on both sides (BERT's `_check_is_max_context`: where a
    predicted answer may start), 1 on the other context tokens.
Padding rows have label -1 and window -1.

Each piece keeps the `[start, end)` characters it covers in its context, so an answer is the
context's own text from its first piece's start to its last piece's end. Training order,
resumption and per-process sharding are those of `text_classification_pipeline`; a training
question whose answer is not the context's text at its `answer_start` is left out and counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

import ml_collections
import numpy as np

from jaxformer.data import common, wordpiece
from jaxformer.data import text_classification_pipeline as text_pipeline
from jaxformer.data.common import Batch, DataSpec, TokenizerSpec
from jaxformer.data.wordpiece import WordPiece

PAD_LABEL = text_pipeline.PAD_LABEL
OUTSIDE, CONTEXT, MAX_CONTEXT = 0, 1, 2  # `context` values.
DEFAULTS = {"seq_length": 384, "doc_stride": 128, "max_query_length": 64}


@dataclasses.dataclass(frozen=True)
class Questions:
    """A split's questions: each one's id, text and context, and its gold answers as
    (character start in the context, text) pairs; none for an unanswerable question."""

    ids: Sequence[str]
    questions: Sequence[str]
    contexts: Sequence[str]
    answers: Sequence[Sequence[tuple[int, str]]]

    def __post_init__(self):
        counts = {len(self.ids), len(self.questions), len(self.contexts), len(self.answers)}
        if len(counts) != 1:
            raise ValueError(f"{len(self.ids)} ids, {len(self.questions)} questions, "
                             f"{len(self.contexts)} contexts and {len(self.answers)} answer lists")

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: np.ndarray) -> Questions:
        def pick(values):
            return [values[int(i)] for i in indices]

        return Questions(pick(self.ids), pick(self.questions), pick(self.contexts),
                         pick(self.answers))


@dataclasses.dataclass(frozen=True, eq=False)
class Windows:
    """Encoded windows, flattened: window `i` is `tokens[starts[i]:starts[i + 1]]`, its first
    `first_lengths[i]` tokens `[CLS] question [SEP]`; `labels[i]` its answer tokens,
    `question[i]` the index of its question. Per token, `offsets` `[tokens, 2]` are the context
    characters it covers (-1 off the context; None for training windows, which never map
    an answer back to text) and `context` its `context` value. `skipped` questions were left
    out."""

    tokens: np.ndarray
    starts: np.ndarray
    first_lengths: np.ndarray
    labels: np.ndarray
    question: np.ndarray
    offsets: np.ndarray | None
    context: np.ndarray
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.first_lengths)

    def span(self, i: int) -> slice:
        return slice(self.starts[i], self.starts[i + 1])

    def characters(self, i: int, first: int, last: int) -> tuple[int, int]:
        """The context characters `[start, end)` from token `first` to token `last` (row
        positions) of window `i`."""
        if self.offsets is None:
            raise ValueError("these windows keep no character offsets (training windows)")
        offsets = self.offsets[self.span(i)]
        return int(offsets[first, 0]), int(offsets[last, 1])


def window_starts(length: int, room: int, stride: int) -> list[int]:
    """The first piece of each window of `room` pieces over `length` pieces, `stride` apart
    (no further than `room`), the last one reaching the end."""
    starts = [0]
    while starts[-1] + room < length:
        starts.append(starts[-1] + min(room, stride))
    return starts


def max_context(length: int, starts: Sequence[int], room: int) -> np.ndarray:
    """int `[length]`: for each piece, the window (an index into `starts`) where it has the
    most context, `min(left, right) + 0.01 * window length` (the first such window on ties)."""
    best = np.zeros(length, np.int64)
    best_score = np.full(length, -np.inf)
    position = np.arange(length)
    for w, start in enumerate(starts):
        end = min(start + room, length)
        inside = (position >= start) & (position < end)
        score = np.minimum(position - start, end - 1 - position) + 0.01 * (end - start)
        better = inside & (score > best_score)
        best[better], best_score[better] = w, score[better]
    return best


def answer_pieces(offsets: np.ndarray, start: int, text: str, context: str
                  ) -> tuple[int, int] | None:
    """The first and last piece (of pieces covering `offsets` `[n, 2]` characters) of the
    answer `text` at character `start` of `context`, or None when the context does not hold
    that text there (or it covers no piece)."""
    end = start + len(text)
    if not text.strip() or context[start:end] != text:
        return None
    covering = np.flatnonzero((offsets[:, 1] > start) & (offsets[:, 0] < end))
    return (int(covering[0]), int(covering[-1])) if len(covering) else None


def encode(tokenizer: WordPiece, questions: Questions, *, seq_length: int, doc_stride: int,
           max_query_length: int, drop_unfound: bool, keep_offsets: bool = True) -> Windows:
    """The windows of every question (see the module docstring); with `drop_unfound`, the
    questions whose first answer is not in their context are left out; without
    `keep_offsets`, the windows keep no character offsets (8 bytes a token)."""
    contexts = sorted(set(questions.contexts))
    encoded = {context: (np.asarray(ids, np.int32), np.asarray(spans, np.int32).reshape(-1, 2))
               for context, (ids, spans) in zip(
                   contexts, tokenizer.encode_batch_with_offsets(contexts), strict=True)}
    question_ids = tokenizer.encode_batch(list(questions.questions)) if len(questions) else []
    sep = np.asarray([tokenizer.sep_id], np.int32)
    tokens, offsets, marks = [], [], []
    first_lengths, labels, owners = [], [], []
    skipped = 0
    for q, (query, context) in enumerate(zip(question_ids, questions.contexts, strict=True)):
        ids, spans = encoded[context]
        answer = None
        if questions.answers[q]:
            answer = answer_pieces(spans, *questions.answers[q][0], context)
            if answer is None and drop_unfound:
                skipped += 1
                continue
        head = np.asarray([tokenizer.cls_id, *query[:max_query_length], tokenizer.sep_id],
                          np.int32)
        room = seq_length - len(head) - 1
        starts = window_starts(len(ids), room, doc_stride)
        best = max_context(len(ids), starts, room)
        for w, start in enumerate(starts):
            end = min(start + room, len(ids))
            tokens += [head, ids[start:end], sep]
            if keep_offsets:
                offsets += [np.full((len(head), 2), -1, np.int32), spans[start:end],
                            np.full((1, 2), -1, np.int32)]
            marks += [np.full(len(head), OUTSIDE, np.int8),
                      np.where(best[start:end] == w, MAX_CONTEXT, CONTEXT).astype(np.int8),
                      np.full(1, OUTSIDE, np.int8)]
            inside = answer is not None and start <= answer[0] and answer[1] < end
            labels.append((answer[0] - start + len(head), answer[1] - start + len(head))
                          if inside else (0, 0))
            first_lengths.append(len(head))
            owners.append(q)
    lengths = [sum(len(part) for part in tokens[i:i + 3]) for i in range(0, len(tokens), 3)]
    return Windows(
        tokens=np.concatenate(tokens) if tokens else np.zeros(0, np.int32),
        starts=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
        first_lengths=np.asarray(first_lengths, np.int32),
        labels=np.asarray(labels, np.int32).reshape(-1, 2),
        question=np.asarray(owners, np.int32),
        offsets=(None if not keep_offsets else np.concatenate(offsets) if offsets
                 else np.zeros((0, 2), np.int32)),
        context=np.concatenate(marks) if marks else np.zeros(0, np.int8), skipped=skipped)


class SpanRows(text_pipeline.ExampleRows):
    def label_shape(self) -> tuple[int, ...]:
        return (2,)

    def empty(self, rows: int) -> Batch:
        batch = super().empty(rows)
        batch["window"] = np.full((rows,), PAD_LABEL, np.int32)
        batch["context"] = np.zeros((rows, self.seq_length), np.int32)
        return batch

    def fill(self, batch: Batch, row: int, index: int) -> None:
        windows = self.examples
        span = windows.span(index)
        length = span.stop - span.start
        batch["input_ids"][row, :length] = windows.tokens[span]
        batch["segment_ids"][row, windows.first_lengths[index]:length] = 1
        batch["label"][row] = windows.labels[index]
        batch["window"][row] = index
        batch["context"][row, :length] = windows.context[span]


@dataclasses.dataclass(frozen=True, eq=False)
class QuestionAnsweringData(text_pipeline.EncodedSplits):
    """A question answering data set (see `EncodedSplits`): questions as `Windows`, and each
    eval split's `Questions` (contexts and gold answers) in `questions`."""

    row_type: ClassVar[type[text_pipeline.ExampleRows]] = SpanRows
    questions: Mapping[str, Questions] = dataclasses.field(default_factory=dict)

    def answer_text(self, split: str, window: int, first: int, last: int) -> str:
        """The context's text from token `first` to token `last` (row positions) of a window
        of `split`."""
        windows = self.eval[split]
        start, end = windows.characters(window, first, last)
        return self.questions[split].contexts[windows.question[window]][start:end]


def get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def check_config(config: ml_collections.ConfigDict, *, files: bool = True) -> None:
    """Raises ValueError for `seq_length`, `doc_stride`, `max_query_length` and the settings of
    `check_text_config` that `build_data` would reject."""
    text_pipeline.check_text_config(config, files=files,
                                    default_seq_length=DEFAULTS["seq_length"])
    query = common.require_int(config, "max_query_length", minimum=1,
                               default=DEFAULTS["max_query_length"])
    room = get(config, "seq_length") - query - 3
    if room < 1:
        raise ValueError(f"data.seq_length {get(config, 'seq_length')} leaves no room for the "
                         f"context after a question of data.max_query_length {query} pieces")
    stride = common.require_int(config, "doc_stride", minimum=1, default=DEFAULTS["doc_stride"])
    if stride > room:
        raise ValueError(f"data.doc_stride {stride} is more than the {room} context pieces of a "
                         "window (seq_length - max_query_length - 3): pieces would be skipped")


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """`vocab_size` WordPiece ids ([PAD] 0), without reading anything."""
    check_config(config, files=False)
    return DataSpec(vocab_size=config.vocab_size, class_names=(),
                    tokenizer=TokenizerSpec(config.vocab_size, pad_id=WordPiece.pad_id))


def build_data(config: ml_collections.ConfigDict, *, workdir: str | None, train: Questions,
               evals: Mapping[str, Questions]) -> QuestionAnsweringData:
    """The data of `config` (after `check_config`): the training questions it asks for, the
    vocabulary (`tokenizer_workdir`'s, or trained on those questions and their contexts) and
    every split encoded."""
    train = train.take(text_pipeline.random_subset(config, len(train)))
    tokenizer = wordpiece.for_workdir(
        common.assets_dir(workdir), lambda: [*train.questions, *sorted(set(train.contexts))],
        config.vocab_size, source_workdir=text_pipeline.get(config, "tokenizer_workdir"))
    sizes = dict(seq_length=get(config, "seq_length"), doc_stride=get(config, "doc_stride"),
                 max_query_length=get(config, "max_query_length"))
    return QuestionAnsweringData(
        tokenizer=tokenizer,
        train=encode(tokenizer, train, drop_unfound=True, keep_offsets=False, **sizes),
        eval={name: encode(tokenizer, questions, drop_unfound=False, **sizes)
              for name, questions in evals.items()},
        class_names=(), vocab_size=config.vocab_size, seq_length=sizes["seq_length"],
        questions=dict(evals))
