"""Uniformly random tokens of any vocabulary size, for throughput benchmarks (no corpus needed).

The model, step and batch shapes are those of a real run (e.g. GPT-2 with its 50,257-token
vocabulary and 1,024-token context); only the token values carry no information.
"""

from __future__ import annotations

from collections.abc import Iterable

import ml_collections
import numpy as np

from jaxformer.data import common, lm_pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.lm_pipeline import LMData

TRAIN_TOKENS, EVAL_TOKENS = 1 << 22, 1 << 18
TOKENIZER = "ids"


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


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for a `tokenizer` other than "ids" (the default), a `vocab_size` below
    2, or a `block_size` the eval stream is too short for."""
    lm_pipeline.check_lm_config(config, kinds=(TOKENIZER,), default_kind=TOKENIZER,
                                max_block_size=EVAL_TOKENS - 1)
    common.require_int(config, "vocab_size", minimum=2)


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The vocabulary of `config.vocab_size` ids."""
    check_config(config)
    return DataSpec(vocab_size=config.vocab_size, tokenizer=IdTokenizer(config.vocab_size))


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> LMData:
    """Random train / eval token streams over `config.vocab_size` ids."""
    del workdir  # Nothing to keep: the streams are a pure function of the vocabulary size.
    check_config(config)
    rng = np.random.default_rng(0)
    train, evaluation = (rng.integers(config.vocab_size, size=n, dtype=np.int32)
                         for n in (TRAIN_TOKENS, EVAL_TOKENS))
    return LMData(tokenizer=IdTokenizer(config.vocab_size), train_tokens=train,
                  eval_tokens=evaluation, block_size=config.block_size)
