"""Text classification with a fine-tuned run (`jaxformer classify`): the probability of each
class for one text or one sentence pair.

The text is encoded as in training (`text_classification_pipeline.encode`): `[CLS] text [SEP]`
or `[CLS] text [SEP] pair [SEP]`, cut to the run's `data.seq_length` tokens the way training
cuts long examples (of a pair, the longer text loses its last token until the pair fits).
"""

from __future__ import annotations

import dataclasses
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


def classify(run: Any, text: str, pair: str | None = None) -> Classified:
    """The class probabilities of `text` (and `pair`, for sentence-pair tasks) under `run` (a
    loaded text classification run, see `jaxformer.inference.workdir.load_run`)."""
    check_config(run.config, run.workdir)
    if not text.strip() or (pair is not None and not pair.strip()):
        raise UserError("the text to classify is empty")
    tokenizer, seq_length = run.data.tokenizer, run.task.seq_length
    examples = pipeline.encode(tokenizer, [text], None if pair is None else [pair], [0],
                               seq_length)
    full = len(tokenizer.encode(text)) + 2 + (0 if pair is None else
                                              len(tokenizer.encode(pair)) + 1)
    batch = pipeline.ClassifiedRows(examples, seq_length,
                                    (tokenizer.cls_id, tokenizer.sep_id)).make([0])
    del batch["label"]
    logits = run.task.predict(run.params, batch)
    probabilities = softmax(np.asarray(logits)[0])
    order = np.argsort(-probabilities, kind="stable")
    names = tuple(run.data.class_names)
    return Classified(tuple(names[i] for i in order),
                      tuple(float(probabilities[i]) for i in order),
                      full > len(examples.ids(0)))
