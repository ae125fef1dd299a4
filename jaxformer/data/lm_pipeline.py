"""Language-model batches from a 1-D token array, as a grain pipeline.

Every batch holds random windows of `block_size + 1` consecutive tokens, split
into `inputs` and `targets` shifted by one. Window starts are a seeded shuffle of
all positions, reshuffled each epoch; process `p` of `n` takes every `n`-th start
from `p`, so the processes' batches are disjoint and together make up the global
batch. Iterators are grain `DatasetIterator`s whose state can be checkpointed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator

import grain
import numpy as np
from etils import epath

from jaxformer.data import tokenizers
from jaxformer.data.tokenizers import Tokenizer

Batch = dict[str, np.ndarray]

EVAL_SEED = 0

# Batches are gathered with numpy from memory: worker threads would only contend for the GIL.
_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


@dataclasses.dataclass(frozen=True)
class LMData:
    """Train and validation token streams of one corpus, with their tokenizer."""

    tokenizer: Tokenizer
    train_tokens: np.ndarray
    eval_tokens: np.ndarray
    block_size: int

    def __post_init__(self):
        if self.block_size < 1:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        for name in ("train_tokens", "eval_tokens"):
            tokens = getattr(self, name)
            if tokens.ndim != 1 or tokens.dtype != np.int32:
                raise ValueError(f"{name} must be a 1-D int32 array, got {tokens.dtype}"
                                 f"{list(tokens.shape)}")
            if len(tokens) <= self.block_size:
                raise ValueError(f"{name} has {len(tokens)} tokens, too few for "
                                 f"block_size {self.block_size}")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's `batch_size` training windows per batch."""
        dataset = window_batches(self.train_tokens, self.block_size, batch_size=batch_size,
                                 seed=seed, process_index=process_index,
                                 process_count=process_count)
        return iter(dataset.to_iter_dataset(_READ_OPTIONS))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[Batch]:
        """`num_batches` validation batches, the same ones on every call."""
        if num_batches < 0:
            raise ValueError(f"num_batches must be non-negative, got {num_batches}")
        dataset = window_batches(self.eval_tokens, self.block_size, batch_size=batch_size,
                                 seed=EVAL_SEED, process_index=process_index,
                                 process_count=process_count)
        return iter(dataset[:num_batches].to_iter_dataset(_READ_OPTIONS))


def window_batches(
    tokens: np.ndarray, block_size: int, *, batch_size: int, seed: int,
    process_index: int = 0, process_count: int = 1,
) -> grain.MapDataset:
    """An endless `MapDataset` of batches of random windows of `tokens`.

    Returns:
        A dataset whose elements are `{"inputs": int32[batch_size, block_size],
        "targets": int32[batch_size, block_size]}` with `targets[:, i] ==
        inputs[:, i + 1]` for `i < block_size - 1`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    num_windows = len(tokens) - block_size
    if num_windows < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for block_size {block_size}")
    starts = (
        grain.MapDataset.range(num_windows)
        .shuffle(seed=_shuffle_seed(seed))
        .repeat()
        [process_index::process_count]
    )
    gather = functools.partial(_gather_windows, tokens, block_size)
    return starts.batch(batch_size, drop_remainder=True).map(gather)


def _shuffle_seed(seed: int) -> int:
    # Grain shuffles epoch e with seed + e: spread user seeds apart so that runs with
    # neighbouring seeds do not share epochs.
    return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint32)[0])


def _gather_windows(tokens: np.ndarray, block_size: int, starts: np.ndarray) -> Batch:
    windows = tokens[starts[:, None] + np.arange(block_size + 1)]
    return {"inputs": np.ascontiguousarray(windows[:, :-1]),
            "targets": np.ascontiguousarray(windows[:, 1:])}


def tokenize(tokenizer: Tokenizer, texts: Iterable[str]) -> np.ndarray:
    """Encodes consecutive pieces of one text into a single int32 token array."""
    parts = [np.asarray(tokenizer.encode(text), dtype=np.int32) for text in texts]
    return np.concatenate(parts) if parts else np.zeros([0], np.int32)


def cached_tokens(
    path: epath.Path | None, make: Callable[[], np.ndarray], vocab_size: int
) -> np.ndarray:
    """Loads tokens saved at `path`, or makes them and saves them there.

    Saving is best effort: without a writable `path` the tokens are only returned.
    A file that is not a 1-D int32 array of ids below `vocab_size` is an error.
    """
    if path is not None and path.exists():
        try:
            with path.open("rb") as f:
                tokens = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"unreadable token cache {path} ({e}); delete it to rebuild") from e
        if (tokens.ndim != 1 or tokens.dtype != np.int32
                or (tokens.size and not 0 <= tokens.min() <= tokens.max() < vocab_size)):
            raise ValueError(f"malformed token cache {path}: expected int32 ids below "
                             f"{vocab_size}; delete it to rebuild")
        return tokens
    tokens = make()
    if path is not None:
        try:
            save_atomically(path, functools.partial(_save_npy, tokens=tokens))
        except OSError as e:
            logging.warning("not caching tokens at %s: %s", path, e)
    return tokens


def tokenizer_for(
    kind: str, *, assets_dir: epath.PathLike | None, corpus: Callable[[], str],
    train_text: Callable[[], str], vocab_size: int,
) -> Tokenizer:
    """The tokenizer saved in `assets_dir`, or a new one, saved there.

    Args:
        kind: "char" (every character of `corpus`) or "bpe" (SentencePiece BPE of
            `vocab_size` pieces trained on `train_text`).
        assets_dir: where the tokenizer is kept (`<workdir>/assets`); None keeps it
            in memory only.
        corpus: returns the whole corpus, train and validation.
        train_text: returns the training split.
        vocab_size: the BPE vocabulary size; unused for "char".
    """
    filenames = {"char": tokenizers.CHAR_FILENAME, "bpe": tokenizers.BPE_FILENAME}
    if kind not in filenames:
        raise ValueError(f"unknown tokenizer {kind!r}; available: {', '.join(filenames)}")
    if assets_dir is not None:
        assets_dir = epath.Path(assets_dir)
        other = next(name for k, name in filenames.items() if k != kind)
        if (assets_dir / other).exists() and not (assets_dir / filenames[kind]).exists():
            raise ValueError(f"{assets_dir} holds {other}, not the {kind} tokenizer the "
                             "config asks for")
        path = assets_dir / filenames[kind]
        if path.exists():
            tokenizer = tokenizers.load_tokenizer(path)
            if kind == "bpe" and tokenizer.vocab_size != vocab_size:
                raise ValueError(f"{path} has {tokenizer.vocab_size} pieces, the config asks "
                                 f"for {vocab_size}")
            return tokenizer
    if kind == "char":
        tokenizer = tokenizers.CharTokenizer.from_text(corpus())
    else:
        tokenizer = tokenizers.SentencePieceTokenizer.train(train_text(), vocab_size)
    if assets_dir is not None:
        save_atomically(path, tokenizer.save)
    return tokenizer


def fingerprint(tokenizer: Tokenizer) -> str:
    """A short hash of the tokenizer's saved form: equal fingerprints, equal ids."""
    with tempfile.TemporaryDirectory() as folder:
        path = epath.Path(folder) / "tokenizer"
        tokenizer.save(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def save_atomically(path: epath.Path, save: Callable[[epath.Path], None]) -> None:
    """Runs `save` on a temporary name next to `path`, then renames it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        save(partial)
        partial.rename(path)
    finally:
        if partial.exists():
            partial.unlink()


def _save_npy(path: epath.Path, tokens: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, tokens, allow_pickle=False)
