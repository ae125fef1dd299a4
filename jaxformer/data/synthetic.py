"""Uniformly random tokens of any vocabulary size, for throughput benchmarks (no corpus needed).

The model, step and batch shapes are those of a real run (e.g. GPT-2 with its 50,257-token
vocabulary and 1,024-token context); only the token values carry no information.
"""

from __future__ import annotations

from collections.abc import Iterable

import ml_collections
import numpy as np

from jaxformer.data.lm_pipeline import LMData

TRAIN_TOKENS, EVAL_TOKENS = 1 << 22, 1 << 18


class IdTokenizer:
    """Token ids written as space-separated integers."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        ids = [int(x) for x in text.split()]
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(str(int(i)) for i in ids)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> LMData:
    """Random train / eval token streams over `config.vocab_size` ids."""
    del workdir  # Nothing to keep: the streams are a pure function of the vocabulary size.
    if config.vocab_size < 2:
        raise ValueError(f"data.vocab_size must be at least 2, got {config.vocab_size}")
    rng = np.random.default_rng(0)
    train, evaluation = (rng.integers(config.vocab_size, size=n, dtype=np.int32)
                         for n in (TRAIN_TOKENS, EVAL_TOKENS))
    return LMData(tokenizer=IdTokenizer(config.vocab_size), train_tokens=train,
                  eval_tokens=evaluation, block_size=config.block_size)
