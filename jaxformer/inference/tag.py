"""Tagging with a token classification run (`jaxformer tag`): each word's tag and the spans
(entities) they form.

Words are the text split at white space, as CoNLL files give them; each is encoded into
WordPieces and tagged from its first piece, as in training. A text longer than the run's
`data.seq_length` pieces (with [CLS] and [SEP]) is an error. Spans follow conlleval's rules
(`jaxformer.evaluators.entity_f1`).
"""

from __future__ import annotations

import dataclasses
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


def tag(run: Any, text: str) -> Tagged:
    """The tags of the words of `text` under `run` (a loaded token classification run, see
    `jaxformer.inference.workdir.load_run`)."""
    check_config(run.config, run.workdir)
    words = tuple(text.split())
    if not words:
        raise UserError("the text has no words to tag")
    seq_length = run.task.seq_length
    examples = pipeline.encode(run.data.tokenizer,
                               pipeline.Sentences([words], [(0,) * len(words)]), seq_length)
    if examples.dropped_tags:
        raise UserError(f"the text is more than the model's data.seq_length {seq_length} "
                        "WordPieces with [CLS] and [SEP]; shorten it")
    ids, labels = examples.row(0)
    input_ids = np.zeros((1, seq_length), np.int32)
    input_ids[0, :len(ids)] = ids
    batch = {"input_ids": input_ids, "segment_ids": np.zeros_like(input_ids)}
    logits = np.asarray(run.task.predict(run.params, batch))[0, :len(ids)]
    names = tuple(run.data.class_names)
    tags = tuple(names[i] for i in logits[labels >= 0].argmax(-1))
    return Tagged(words, tags, spans(words, tags, names))
