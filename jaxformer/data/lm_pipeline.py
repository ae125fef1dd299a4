"""Language-model batches from a 1-D token array, as a grain pipeline.

As in nanoGPT, a batch holds windows of `block_size + 1` consecutive tokens at
uniformly random positions, split into `inputs` and `targets` shifted by one. The
positions of step `k` are drawn from a generator seeded with `(seed, k)`: a batch
depends only on the seed and the step, so iterators resume exactly from a saved
step, and the rows of the global batch are split between processes (see
`common.Shard`). Iterators are grain `DatasetIterator`s, whose state (the next step)
can be checkpointed.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterable, Sequence

import grain
import ml_collections
import numpy as np
from etils import epath

from jaxformer.data import common, tokenizers
from jaxformer.data.common import Batch, Shard
from jaxformer.data.tokenizers import Tokenizer

EVAL_SEED = 0
EVAL_SPLITS = ("validation",)
TOKENIZER_FILES = {"char": tokenizers.CHAR_FILENAME, "bpe": tokenizers.BPE_FILENAME,
                   "byte_bpe": tokenizers.BYTE_BPE_FILENAME}
TOKENIZER_CLASSES = {"char": tokenizers.CharTokenizer, "bpe": tokenizers.SentencePieceTokenizer,
                     "byte_bpe": tokenizers.ByteLevelBPETokenizer}
TOKENIZERS = tuple(TOKENIZER_FILES)


@dataclasses.dataclass(frozen=True, eq=False)
class LMData:
    """Train and validation token streams of one corpus, with their tokenizer.

    `eval_iter` reads the validation stream, the only one of `eval_splits`.
    """

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

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return EVAL_SPLITS

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's `batch_size` training windows per batch."""
        dataset = window_batches(self.train_tokens, self.block_size, batch_size=batch_size,
                                 seed=seed, process_index=process_index,
                                 process_count=process_count)
        return iter(dataset.to_iter_dataset(common.read_options()))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, process_index: int = 0,
        process_count: int = 1, split: str | None = None,
    ) -> grain.DatasetIterator:
        """`num_batches` batches of random validation windows, the same ones on every call
        (the stream has no end to read to, so -1 is not a count here)."""
        common.choose_split(split, self.eval_splits)  # The only split: this checks `split`.
        if num_batches < 0:
            raise ValueError(f"num_batches must be non-negative, got {num_batches}")
        dataset = window_batches(self.eval_tokens, self.block_size, batch_size=batch_size,
                                 seed=EVAL_SEED, process_index=process_index,
                                 process_count=process_count)
        return iter(dataset[:num_batches].to_iter_dataset(common.read_options()))


def window_batches(
    tokens: np.ndarray, block_size: int, *, batch_size: int, seed: int,
    process_index: int = 0, process_count: int = 1,
) -> grain.MapDataset:
    """An endless `MapDataset` whose element `k` is this process's batch for step `k`.

    Each element is `{"inputs": int32[batch_size, block_size], "targets":
    int32[batch_size, block_size]}` with `targets[:, i] == inputs[:, i + 1]` for
    `i < block_size - 1`.
    """
    shard = Shard(batch_size, process_index, process_count)
    if len(tokens) <= block_size:
        raise ValueError(f"{len(tokens)} tokens are too few for block_size {block_size}")
    return grain.MapDataset.range(sys.maxsize).map(_RandomWindows(tokens, block_size, shard,
                                                                  seed))


@dataclasses.dataclass(frozen=True, eq=False)
class _RandomWindows:
    """Step -> batch: the step's global batch of window starts, this process's rows of it."""

    tokens: np.ndarray
    block_size: int
    shard: Shard
    seed: int

    def __call__(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(len(self.tokens) - self.block_size,
                              size=self.shard.global_batch)[self.shard.rows]
        windows = self.tokens[starts[:, None] + np.arange(self.block_size + 1)]
        return {"inputs": np.ascontiguousarray(windows[:, :-1]),
                "targets": np.ascontiguousarray(windows[:, 1:])}


def tokenize(tokenizer: Tokenizer, texts: Iterable[str]) -> np.ndarray:
    """Encodes consecutive pieces of one text into a single int32 token array."""
    parts = [np.asarray(tokenizer.encode(text), dtype=np.int32) for text in texts]
    return np.concatenate(parts) if parts else np.zeros([0], np.int32)


def cached_tokens(
    path: epath.Path | None, make: Callable[[], np.ndarray], vocab_size: int
) -> np.ndarray:
    """The tokens saved at `path`, or `make()`'s, saved there (`common.cached`). A file that
    is not a 1-D int32 array of ids below `vocab_size` is an error."""
    return common.cached(path, make, load=functools.partial(_load_tokens, vocab_size=vocab_size),
                         save=_save_npy)


def check_lm_config(config: ml_collections.ConfigDict, *, kinds: Sequence[str] = TOKENIZERS,
                    default_kind: str | None = None, max_block_size: int | None = None) -> None:
    """Raises ValueError for a `tokenizer` not in `kinds` (absent: `default_kind`), a
    `block_size` below 1 (or above `max_block_size`), a `bpe` tokenizer's `vocab_size` too
    small for any text, a `byte_bpe` one's below its bytes and end of text, or a
    `tokenizer_workdir` that is not a directory."""
    kind = common.require_choice(config, "tokenizer", kinds, default=default_kind)
    block_size = common.require_int(config, "block_size", minimum=1)
    if max_block_size is not None and block_size > max_block_size:
        raise ValueError(f"data.block_size must be at most {max_block_size}, got {block_size}")
    if kind == "bpe":
        common.require_int(config, "vocab_size", minimum=tokenizers.min_bpe_vocab_size())
    if kind == "byte_bpe":
        common.require_int(config, "vocab_size", minimum=tokenizers.MIN_BYTE_BPE_VOCAB_SIZE)
    source = config.get("tokenizer_workdir", "")
    if not isinstance(source, str):
        raise ValueError(f"data.tokenizer_workdir must be a path (or empty), got {source!r}")
    if source and not epath.Path(source).is_dir():
        raise ValueError(f"data.tokenizer_workdir {source} is not a directory")


def tokenizer_for(
    kind: str, *, assets_dir: epath.PathLike | None, corpus: Callable[[], str],
    train_text: Callable[[], str], vocab_size: int, extra_symbols: Sequence[str] = (),
    source: str = "",
) -> Tokenizer:
    """The tokenizer saved in `assets_dir`, else `source`'s, else a new one; saved there.

    Args:
        kind: "char" (every character of `corpus`), "bpe" (SentencePiece BPE of
            `vocab_size` pieces trained on `train_text`) or "byte_bpe" (a byte-level BPE of
            at most `vocab_size` tokens, GPT-2's kind: an imported model's, `source`'s, or
            one trained on `train_text`).
        assets_dir: where the tokenizer is kept (`<workdir>/assets`); None keeps it
            in memory only.
        corpus: returns the whole corpus, train and validation.
        train_text: returns the training split.
        vocab_size: the model's vocabulary: a BPE's size, a byte-level BPE's bound; unused
            for "char".
        extra_symbols: strings a new BPE tokenizer keeps as pieces of their own (see
            `SentencePieceTokenizer.train`); for "bpe" only.
        source: a workdir (or a folder) whose tokenizer a run without one copies (a
            fine-tuning run, from the run it starts from); "" for none.
    """
    if kind not in TOKENIZER_FILES:
        raise ValueError(f"unknown tokenizer {kind!r}; available: {', '.join(TOKENIZERS)}")
    path = epath.Path(assets_dir) / TOKENIZER_FILES[kind] if assets_dir is not None else None
    if path is not None and path.exists():
        return _checked(tokenizers.load_tokenizer(path), kind, vocab_size, path)
    if path is not None:
        for other in set(TOKENIZER_FILES.values()) - {path.name}:
            if (path.parent / other).exists():
                raise ValueError(f"{path.parent} holds {other}, not the {kind} tokenizer "
                                 "the config asks for")
    if source:
        try:
            tokenizer = _checked(tokenizers.load_tokenizer(source), kind, vocab_size, source)
        except ValueError as e:
            raise ValueError(f"data.tokenizer_workdir: {e}") from e
    elif kind == "char":
        tokenizer = tokenizers.CharTokenizer.from_text(corpus())
    elif kind == "bpe":
        tokenizer = tokenizers.SentencePieceTokenizer.train(train_text(), vocab_size,
                                                            extra_symbols=extra_symbols)
    else:
        tokenizer = tokenizers.ByteLevelBPETokenizer.train(train_text(), vocab_size)
    if path is not None:
        common.save_atomically(path, tokenizer.save)
    return tokenizer


def _checked(tokenizer: Tokenizer, kind: str, vocab_size: int, path: epath.PathLike
             ) -> Tokenizer:
    """`tokenizer` if it is of `kind` and fits a model of `vocab_size` ids (a byte-level BPE
    is padded to it)."""
    if not isinstance(tokenizer, TOKENIZER_CLASSES[kind]):
        found = next(k for k, c in TOKENIZER_CLASSES.items() if isinstance(tokenizer, c))
        raise ValueError(f"{path} holds a {found} tokenizer, not the {kind} tokenizer the "
                         "config asks for")
    if kind == "bpe" and tokenizer.vocab_size != vocab_size:
        raise ValueError(f"{path} has {tokenizer.vocab_size} pieces, the config asks for "
                         f"{vocab_size}")
    if kind == "byte_bpe":
        if tokenizer.vocab_size > vocab_size:
            raise ValueError(f"{path} has {tokenizer.vocab_size} tokens, more than the "
                             f"config's data.vocab_size {vocab_size}")
        tokenizer = tokenizer.with_vocab_size(vocab_size)
    return tokenizer


def _save_npy(tokens: np.ndarray, path: epath.Path) -> None:
    with path.open("wb") as f:
        np.save(f, tokens, allow_pickle=False)


def _load_tokens(path: epath.Path, vocab_size: int) -> np.ndarray:
    try:
        with path.open("rb") as f:
            tokens = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"unreadable cache file {path} ({e})") from e
    if (tokens.ndim != 1 or tokens.dtype != np.int32
            or (tokens.size and not 0 <= tokens.min() <= tokens.max() < vocab_size)):
        raise ValueError(f"malformed token cache {path}: expected int32 ids below {vocab_size}")
    return tokens
