"""Tagging with a token classification run (`jaxformer tag`): each word's tag and the spans
(entities) they form.

Words are the text split at white space, as CoNLL files give them; each is encoded into
WordPieces and tagged from its first piece, as in training. A sentence longer than the run's
`data.seq_length` pieces (with [CLS] and [SEP]) is an error. Many sentences (a file, one per
line) are tagged in batches. Spans follow conlleval's rules
(`jaxformer.evaluators.entity_f1`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxformer.data import token_classification_pipeline as pipeline
from jaxformer.errors import UserError
from jaxformer.evaluators.entity_f1 import span_marks


@dataclasses.dataclass(frozen=True)
class Span:
    kind: str
    start: int  # First word.
    stop: int  # One past the last word.
    text: str


@dataclasses.dataclass(frozen=True)
class Tagged:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    spans: tuple[Span, ...]


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises UserError unless `config` is a token classification run."""
    if config.task.name != "token_classification":
        raise UserError(f"{workdir} holds a {config.task.name!r} run; tag needs a token "
                        "classification (task 'token_classification') run")


def spans(words: tuple[str, ...], tags: tuple[str, ...], names: tuple[str, ...]
          ) -> tuple[Span, ...]:
    """The spans that `tags` (each one of the tag set `names`) mark on `words`."""
    scheme = pipeline.TagScheme.of(names)
    ids = np.asarray([names.index(t) for t in tags], np.int64)
    prefix, kind = np.asarray(scheme.prefixes)[ids], np.asarray(scheme.kinds)[ids]
    _, starts, continues = (np.asarray(m) for m in span_marks(prefix, kind))
    found = []
    for start in np.flatnonzero(starts):
        stop = start + 1
        while stop < len(words) and continues[stop]:
            stop += 1
        found.append(Span(scheme.kind_names[kind[start]], int(start), int(stop),
                          " ".join(words[start:stop])))
    return tuple(found)


def tag_sentences(run: Any, sentences: Sequence[Sequence[str]], *, batch_size: int = 32
                  ) -> list[Tagged]:
    """The tags of each sentence's words under `run` (a loaded token classification run, see
    `jaxformer.inference.workdir.load_run`), in batches of `batch_size` sentences."""
    check_config(run.config, run.workdir)
    sentences = [tuple(words) for words in sentences]
    if not sentences or not all(sentences):
        raise UserError("no words to tag" if not sentences else
                        f"sentence {[bool(s) for s in sentences].index(False) + 1} has no words")
    tokenizer, seq_length = run.data.tokenizer, run.task.seq_length
    examples = pipeline.encode(
        tokenizer, pipeline.Sentences(sentences, [(0,) * len(s) for s in sentences]), seq_length)
    rows = pipeline.TaggedRows(examples, seq_length, (tokenizer.cls_id, tokenizer.sep_id))
    names = tuple(run.data.class_names)
    tagged = []
    for start in range(0, len(sentences), batch_size):
        indices = list(range(start, min(start + batch_size, len(sentences))))
        batch = rows.make(indices + [None] * (batch_size - len(indices)))  # One shape.
        labels = batch.pop("label")
        logits = np.asarray(run.task.predict(run.params, batch))
        for row, index in enumerate(indices):
            words = sentences[index]
            predicted = logits[row][labels[row] >= 0].argmax(-1)
            if len(predicted) < len(words):
                raise UserError(
                    f"sentence {index + 1} is more than the model's data.seq_length {seq_length} "
                    "WordPieces with [CLS] and [SEP]; shorten it")
            tags = tuple(names[i] for i in predicted)
            tagged.append(Tagged(words, tags, spans(words, tags, names)))
    return tagged


def tag(run: Any, text: str) -> Tagged:
    """The tags of the words of `text` (split at white space) under `run`."""
    words = tuple(text.split())
    if not words:
        raise UserError("the text has no words to tag")
    return tag_sentences(run, [words], batch_size=1)[0]
