"""Fill-mask with a BERT pretraining run (`jaxformer fill-mask`), trained here or imported
(`jaxformer import-weights --family=bert`): the masked-LM head's most likely tokens at each
`[MASK]` of a text.

The text is encoded as `[CLS] text [SEP]` (segment 0) and padded with [PAD] to the run's
`data.seq_length`; a text longer than that is an error (nothing is cut off). Each literal
`[MASK]` (exactly so, in capitals) becomes the mask token: the text is split at them and the
pieces encoded one by one, since the WordPiece normaliser would lowercase "[MASK]" and split it
at its brackets. Probabilities are the softmax of the masked-LM logits over the model's whole
output; the top k are chosen among the tokenizer's tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from jaxformer.errors import UserError

MASK = "[MASK]"


@dataclasses.dataclass(frozen=True)
class MaskPrediction:
    """The top tokens at one `[MASK]`, most likely first."""

    position: int  # In the encoded sequence ([CLS] is 0).
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    probabilities: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class FillMaskResult:
    """The predictions at each `[MASK]`, in text order, and the text with each replaced by
    its most likely token (normalised as the tokenizer does, e.g. lowercased; "##" pieces
    joined)."""

    input_ids: tuple[int, ...]  # [CLS] text [SEP], without padding.
    predictions: tuple[MaskPrediction, ...]
    filled_text: str


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises UserError unless `config` is a run whose model fills masks: a bidirectional BERT
    trained by `bert_pretraining` (not the left-to-right "ltr" ablation)."""
    task = config.task.name
    if task != "bert_pretraining":
        raise UserError(f"{workdir} holds a {task!r} run; fill-mask needs a BERT pretraining "
                        "(task 'bert_pretraining') run")
    if config.task.get("objective", "mlm_nsp") == "ltr" or config.model.get("causal", False):
        raise UserError(f"{workdir} holds a left-to-right BERT (task.objective 'ltr'), which "
                        "predicts the next token and does not fill masks")


def check_text(text: str) -> None:
    """Raises UserError unless `text` has a `[MASK]`."""
    if MASK not in text:
        hint = " (write it in capitals)" if MASK.lower() in text.lower() else ""
        raise UserError(f"the text has no {MASK} to fill{hint}")


def encode(tokenizer: Any, text: str, seq_length: int) -> tuple[list[int], list[int]]:
    """`[CLS] text [SEP]` as ids, each `[MASK]` the mask id, and the masks' positions."""
    check_text(text)
    pieces = text.split(MASK)
    ids = [tokenizer.cls_id]
    positions = []
    for i, piece in enumerate(pieces):
        if i:
            positions.append(len(ids))
            ids.append(tokenizer.mask_id)
        ids.extend(tokenizer.encode(piece))
    ids.append(tokenizer.sep_id)
    if len(ids) > seq_length:
        raise UserError(f"the text is {len(ids)} tokens with [CLS] and [SEP], more than the "
                        f"model's data.seq_length {seq_length}; shorten it")
    return ids, positions


def softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis, in float64."""
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def fill_mask(run: Any, text: str, top_k: int = 5) -> FillMaskResult:
    """The `top_k` most likely tokens at each `[MASK]` of `text` under `run` (a loaded BERT
    pretraining run, see `jaxformer.inference.workdir.load_run`)."""
    check_config(run.config, run.workdir)
    if top_k < 1:
        raise UserError(f"--top_k must be >= 1, got {top_k}")
    tokenizer = run.data.tokenizer
    seq_length = run.task.seq_length
    ids, positions = encode(tokenizer, text, seq_length)
    input_ids = np.zeros((1, seq_length), np.int32)  # [PAD] is 0.
    input_ids[0, :len(ids)] = ids
    batch = {"input_ids": input_ids, "segment_ids": np.zeros_like(input_ids),
             "mlm_positions": np.asarray([positions], np.int32)}
    probabilities = softmax(run.task.predict(run.params, batch)[0])  # [masks, vocab]
    candidates = probabilities[:, :tokenizer.vocab_size]  # Ids past it have no token.
    k = min(top_k, candidates.shape[-1])
    best = np.argsort(-candidates, axis=-1, kind="stable")[:, :k]
    predictions = tuple(
        MaskPrediction(position, tuple(int(i) for i in row),
                       tuple(tokenizer.token(i) for i in row),
                       tuple(float(p) for p in candidates[m, row]))
        for m, (position, row) in enumerate(zip(positions, best, strict=True)))
    filled = list(ids)
    for prediction in predictions:
        filled[prediction.position] = prediction.ids[0]
    return FillMaskResult(tuple(ids), predictions, tokenizer.decode(filled[1:-1]))
