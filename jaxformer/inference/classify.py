"""Text classification with a fine-tuned run (`jaxformer classify`): the probability of each
class for a text or a sentence pair, or for many of them in batches.

The text is encoded as in training (`text_classification_pipeline.encode`): `[CLS] text [SEP]`
or `[CLS] text [SEP] pair [SEP]`, cut to the run's `data.seq_length` tokens the way training
cuts long examples (of a pair, the longer text loses its last token until the pair fits).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxformer.data import text_classification_pipeline as pipeline
from jaxformer.errors import UserError
from jaxformer.inference.fill_mask import softmax


@dataclasses.dataclass(frozen=True)
class Classified:
    """Every class with its probability, most likely first; `truncated` when the text did not
    fit in the run's sequence length."""

    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    truncated: bool


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises UserError unless `config` is a text classification run."""
    if config.task.name != "text_classification":
        raise UserError(f"{workdir} holds a {config.task.name!r} run; classify needs a text "
                        "classification (task 'text_classification') run")


def classify_texts(run: Any, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                   batch_size: int = 32) -> list[Classified]:
    """The class probabilities of each of `texts` (with `pairs`, each text's second sentence)
    under `run` (a loaded text classification run, see
    `jaxformer.inference.workdir.load_run`), in batches of `batch_size` examples."""
    check_config(run.config, run.workdir)
    if pairs is not None and len(pairs) != len(texts):
        raise UserError(f"{len(texts)} texts but {len(pairs)} second sentences")
    for i, text in enumerate(texts):
        if not text.strip() or (pairs is not None and not pairs[i].strip()):
            raise UserError("the text to classify is empty" if len(texts) == 1 else
                            f"text {i + 1} to classify is empty")
    tokenizer, seq_length = run.data.tokenizer, run.task.seq_length
    examples = pipeline.encode(tokenizer, texts, pairs, [0] * len(texts), seq_length)
    full = [len(ids) + 2 for ids in tokenizer.encode_batch(list(texts))]
    if pairs is not None:
        full = [n + len(ids) + 1 for n, ids in zip(full, tokenizer.encode_batch(list(pairs)),
                                                    strict=True)]
    rows = pipeline.ClassifiedRows(examples, seq_length, (tokenizer.cls_id, tokenizer.sep_id))
    names = tuple(run.data.class_names)
    batch_size = min(batch_size, len(texts))
    results = []
    for start in range(0, len(texts), batch_size):
        indices = list(range(start, min(start + batch_size, len(texts))))
        batch = rows.make(indices + [None] * (batch_size - len(indices)))  # One shape.
        del batch["label"]
        logits = np.asarray(run.task.predict(run.params, batch))
        for row, index in enumerate(indices):
            probabilities = softmax(logits[row])
            order = np.argsort(-probabilities, kind="stable")
            results.append(Classified(tuple(names[i] for i in order),
                                      tuple(float(probabilities[i]) for i in order),
                                      full[index] > len(examples.ids(index))))
    return results


def classify(run: Any, text: str, pair: str | None = None) -> Classified:
    """The class probabilities of `text` (and `pair`, for sentence-pair tasks) under `run`
    (see `classify_texts`)."""
    return classify_texts(run, [text], None if pair is None else [pair])[0]
