"""Sentence pairs and their token ids: the joint tokenizer, encoding, and the token cache.

Translation uses one SentencePiece BPE model for both languages, trained on the train
pairs with special tokens (`<pad>` id 0, `</s>`, `<s>`). The ids of a split's pairs are
kept as `EncodedPairs`, concatenated arrays that are cheap to save and to slice, cached
next to the data under the tokenizer's fingerprint.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
from etils import epath

from jaxformer.data import common, tokenizers
from jaxformer.data.tokenizers import SentencePieceTokenizer

Pair = tuple[str, str]

TOKENIZER_SEED = 0
_ENCODE_CHUNK = 10_000


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedPairs:
    """Token ids (without EOS) of a split's pairs, concatenated.

    Pair `i`'s source is `source_ids[source_offsets[i]:source_offsets[i + 1]]`, and
    likewise its target.
    """

    source_ids: np.ndarray
    source_offsets: np.ndarray
    target_ids: np.ndarray
    target_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.source_offsets) - 1

    def source(self, i: int) -> np.ndarray:
        return self.source_ids[self.source_offsets[i]:self.source_offsets[i + 1]]

    def target(self, i: int) -> np.ndarray:
        return self.target_ids[self.target_offsets[i]:self.target_offsets[i + 1]]

    @property
    def source_lengths(self) -> np.ndarray:
        return np.diff(self.source_offsets)

    @property
    def target_lengths(self) -> np.ndarray:
        return np.diff(self.target_offsets)

    @classmethod
    def encode(cls, tokenizer: SentencePieceTokenizer, pairs: Sequence[Pair]) -> EncodedPairs:
        """Tokenizes `pairs`, a chunk at a time to keep memory small for big corpora."""
        ids = ([np.zeros([0], np.int32)], [np.zeros([0], np.int32)])
        lengths = ([np.zeros([0], np.int64)], [np.zeros([0], np.int64)])
        for start in range(0, len(pairs), _ENCODE_CHUNK):
            chunk = [pairs[i] for i in range(start, min(start + _ENCODE_CHUNK, len(pairs)))]
            for side in (0, 1):
                encoded = [tokenizer.encode(pair[side]) for pair in chunk]
                ids[side].append(np.fromiter(itertools.chain.from_iterable(encoded), np.int32))
                lengths[side].append(np.fromiter(map(len, encoded), np.int64, len(encoded)))
        offsets = [np.cumsum(np.concatenate([[0], *lengths[side]])) for side in (0, 1)]
        return cls(np.concatenate(ids[0]), offsets[0], np.concatenate(ids[1]), offsets[1])

    def save(self, path: epath.Path) -> None:
        common.save_arrays(self, path)

    @classmethod
    def load(cls, path: epath.Path, *, num_pairs: int, vocab_size: int) -> EncodedPairs:
        """Reads a saved file, checking it holds `num_pairs` pairs of ids below `vocab_size`."""
        encoded = common.load_arrays(cls, path)
        for ids, offsets in ((encoded.source_ids, encoded.source_offsets),
                             (encoded.target_ids, encoded.target_offsets)):
            if (ids.ndim != 1 or ids.dtype != np.int32 or offsets.shape != (num_pairs + 1,)
                    or offsets.dtype != np.int64 or offsets[0] != 0 or offsets[-1] != len(ids)
                    or np.any(np.diff(offsets) < 0)
                    or (ids.size and not 0 <= ids.min() <= ids.max() < vocab_size)):
                raise ValueError(f"malformed token cache {path}: expected {num_pairs} pairs of "
                                 f"ids below {vocab_size}")
        return encoded


def cached_encoding(path: epath.Path | None, tokenizer: SentencePieceTokenizer,
                    pairs: Sequence[Pair]) -> EncodedPairs:
    """The ids of `pairs`, read from `path` if it exists, else encoded and saved there
    (`common.cached`). None encodes in memory only."""
    return common.cached(
        path, lambda: EncodedPairs.encode(tokenizer, pairs), save=EncodedPairs.save,
        load=lambda p: EncodedPairs.load(p, num_pairs=len(pairs), vocab_size=tokenizer.vocab_size))


def check_tokenizer(tokenizer: object) -> None:
    """A translation tokenizer is a SentencePiece model with pad id 0, EOS and BOS ids."""
    if (not isinstance(tokenizer, SentencePieceTokenizer) or tokenizer.pad_id != 0
            or tokenizer.eos_id is None or tokenizer.bos_id is None):
        raise ValueError("translation needs a SentencePiece tokenizer with pad id 0 and EOS and "
                         "BOS ids (SentencePieceTokenizer.train(..., special_tokens=True))")


def train_tokenizer(
    pairs: Sequence[Pair], *, vocab_size: int, max_sentences: int, seed: int = TOKENIZER_SEED
) -> SentencePieceTokenizer:
    """A joint BPE tokenizer with special tokens, trained on both sides of `pairs`.

    If `pairs` hold more than `max_sentences` sentences, `max_sentences // 2` pairs
    drawn with `seed` are used, both of their sides.
    """
    if max_sentences < 2:
        raise ValueError(f"tokenizer_sentences must be at least 2, got {max_sentences}")
    if 2 * len(pairs) > max_sentences:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(pairs), max_sentences // 2, replace=False))
    else:
        chosen = np.arange(len(pairs))
    sentences = [sentence for i in chosen for sentence in pairs[int(i)]]
    return SentencePieceTokenizer.train(sentences, vocab_size, special_tokens=True)


def tokenizer_for(
    assets_dir: epath.PathLike | None, train_pairs: Sequence[Pair], *, vocab_size: int,
    max_sentences: int,
) -> SentencePieceTokenizer:
    """The tokenizer saved in `assets_dir`, or a new one trained on `train_pairs`, saved there.

    A saved tokenizer is never trained again: one of another size or kind is an error.
    """
    path = epath.Path(assets_dir) / tokenizers.BPE_FILENAME if assets_dir is not None else None
    if path is not None and path.exists():
        tokenizer = tokenizers.load_tokenizer(path)
        try:
            check_tokenizer(tokenizer)
        except ValueError as e:
            raise ValueError(f"{path} is not a translation tokenizer: {e}") from e
        if tokenizer.vocab_size != vocab_size:
            raise ValueError(f"{path} has {tokenizer.vocab_size} pieces, the config asks for "
                             f"{vocab_size}")
        return tokenizer
    if path is not None and (path.parent / tokenizers.CHAR_FILENAME).exists():
        raise ValueError(f"{path.parent} holds {tokenizers.CHAR_FILENAME}, not the bpe "
                         "tokenizer translation needs")
    tokenizer = train_tokenizer(train_pairs, vocab_size=vocab_size, max_sentences=max_sentences)
    if path is not None:
        common.save_atomically(path, tokenizer.save)
    return tokenizer


def lazy_pairs(records: Sequence[dict], source: str, target: str) -> Sequence[Pair]:
    """A read-only sequence of (source, target) text over records keyed by language."""
    return _RecordPairs(records, source, target)


class _RecordPairs(Sequence):
    """Reads the pair at an index from its record when asked (for corpora too big to copy)."""

    def __init__(self, records: Sequence[dict], source: str, target: str):
        self._records, self._source, self._target = records, source, target

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        record = self._records[index % len(self)]
        return _text(record[self._source]), _text(record[self._target])


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
