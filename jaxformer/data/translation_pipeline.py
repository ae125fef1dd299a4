"""Sentence-pair batches for translation, as grain pipelines.

`TranslationData` holds a corpus's train, validation and test pairs of (source,
target) sentences and the joint SentencePiece BPE tokenizer trained on the train
split (`<pad>` is id 0; `</s>` ends every sequence). A batch is
`{"inputs": int32[batch, S], "targets": int32[batch, T]}`: source and target ids,
each followed by EOS and padded with 0; the model shifts the targets right itself.

Training batches are bucketed by length: a pair goes to the smallest bucket length
that holds both of its sequences, and a batch is `batch_size` pairs of one bucket,
padded to that length (so only a few shapes are compiled). Each epoch shuffles the
pairs within each bucket and the order of the batches, drawing from a generator
seeded with `(seed, epoch)`, and leaves out the remainder of each bucket that does
not fill a batch. Step `k`'s batch depends only on the seed and `k`, so an iterator
resumes exactly from its saved state, and processes split the global batch of
`batch_size * process_count` rows, process `p` taking the `p`-th block.

Padding on the Bible pair (8k vocabulary, lengths at most 128, batches of 64; see
tests/data/test_translation_pipeline.py) is 15.5% of the tokens of an epoch of
bucketed batches, against 54% for random batches padded to their longest pair and
74% for random batches padded to the maximum lengths.

Evaluation batches keep the split's order (so rows line up with `references`),
each padded to the smallest bucket length that holds its longest row.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

import grain
import ml_collections
import numpy as np
from etils import epath

from jaxformer.data import lm_pipeline, tokenizers
from jaxformer.data.tokenizers import SentencePieceTokenizer

Batch = dict[str, np.ndarray]
Pair = tuple[str, str]

SPLITS = ("train", "validation", "test")
TOKENIZER_SEED = 0
_ENCODE_CHUNK = 10_000

# Batches are gathered with numpy from memory: worker threads would only contend for the GIL.
_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def default_bucket_lengths(max_length: int) -> tuple[int, ...]:
    """16, 24, then three lengths per octave (32, 40, 48, 64, 80, 96, ...), up to `max_length`."""
    lengths, octave = {16, 24}, 32
    while octave < max_length:
        lengths |= {octave, octave * 5 // 4, octave * 3 // 2}
        octave *= 2
    return tuple(sorted({n for n in lengths if n < max_length} | {max_length}))


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
        with path.open("wb") as f:
            np.savez(f, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path: epath.Path, *, num_pairs: int, vocab_size: int) -> EncodedPairs:
        """Reads a saved file, checking it holds `num_pairs` pairs of ids below `vocab_size`."""
        try:
            with path.open("rb") as f, np.load(f, allow_pickle=False) as arrays:
                encoded = cls(**{field.name: arrays[field.name]
                                 for field in dataclasses.fields(cls)})
        except (OSError, ValueError, EOFError, KeyError, TypeError) as e:
            raise ValueError(f"unreadable token cache {path} ({e}); delete it to rebuild") from e
        for ids, offsets in ((encoded.source_ids, encoded.source_offsets),
                             (encoded.target_ids, encoded.target_offsets)):
            if (ids.ndim != 1 or ids.dtype != np.int32 or offsets.shape != (num_pairs + 1,)
                    or offsets.dtype != np.int64 or offsets[0] != 0 or offsets[-1] != len(ids)
                    or np.any(np.diff(offsets) < 0)
                    or (ids.size and not 0 <= ids.min() <= ids.max() < vocab_size)):
                raise ValueError(f"malformed token cache {path}: expected {num_pairs} pairs of "
                                 f"ids below {vocab_size}; delete it to rebuild")
        return encoded


@dataclasses.dataclass(frozen=True, eq=False)
class TranslationData:
    """The sentence pairs of one corpus and direction, with their tokenizer.

    Attributes:
        tokenizer: joint source+target SentencePiece BPE with special tokens.
        pairs: "train", "validation" and "test" sequences of (source, target) text.
        max_source_length: longest source, EOS included; longer train pairs are left
            out, longer eval sources truncated.
        max_target_length: the same for targets.
        cache_dir: where the token ids of each split are kept (`<split>.npz`); None
            tokenizes in memory only.
        bucket_lengths: sequence lengths of the train buckets, increasing; by default
            `default_bucket_lengths(max(max_source_length, max_target_length))`.
    """

    tokenizer: SentencePieceTokenizer
    pairs: Mapping[str, Sequence[Pair]]
    max_source_length: int
    max_target_length: int
    cache_dir: epath.Path | None = None
    bucket_lengths: tuple[int, ...] = ()
    _memo: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        check_tokenizer(self.tokenizer)
        missing = [name for name in SPLITS if name not in self.pairs]
        if missing:
            raise ValueError(f"no {', '.join(missing)} split among {sorted(self.pairs)}")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2 (a token and EOS), "
                                 f"got {getattr(self, name)}")
        longest = max(self.max_source_length, self.max_target_length)
        lengths = tuple(self.bucket_lengths) or default_bucket_lengths(longest)
        if (any(b <= a for a, b in itertools.pairwise(lengths)) or lengths[0] < 1
                or lengths[-1] < longest):
            raise ValueError(f"bucket_lengths must increase and reach {longest}, got {lengths}")
        object.__setattr__(self, "bucket_lengths", lengths)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def bos_id(self) -> int:
        return self.tokenizer.bos_id

    def sources(self, split: str) -> list[str]:
        """The source sentences of `split`, in order."""
        return [source for source, _ in self._split(split)]

    def references(self, split: str) -> list[str]:
        """The target sentences of `split`, in order (the references for BLEU)."""
        return [target for _, target in self._split(split)]

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of output ids, up to the first EOS (padding and BOS decode to nothing)."""
        ids = [int(i) for i in ids]
        return self.tokenizer.decode(ids[:ids.index(self.eos_id)] if self.eos_id in ids else ids)

    def encoded(self, split: str) -> EncodedPairs:
        """The token ids of `split`, from the cache when it holds them."""
        if split not in self._memo:
            pairs = self._split(split)
            path = self.cache_dir / f"{split}.npz" if self.cache_dir is not None else None
            if path is not None and path.exists():
                encoded = EncodedPairs.load(path, num_pairs=len(pairs),
                                            vocab_size=self.vocab_size)
            else:
                encoded = EncodedPairs.encode(self.tokenizer, pairs)
                if path is not None:
                    try:
                        lm_pipeline.save_atomically(path, encoded.save)
                    except OSError as e:
                        logging.getLogger(__name__).warning("not caching tokens at %s: %s",
                                                            path, e)
            self._memo[split] = encoded
        return self._memo[split]

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's length-bucketed training batches."""
        _check_batching(batch_size, process_index, process_count)
        batches = _BucketedBatches(self, batch_size, seed, process_index, process_count)
        dataset = grain.MapDataset.range(sys.maxsize).map(batches)
        return iter(dataset.to_iter_dataset(_READ_OPTIONS))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, split: str = "validation",
        process_index: int = 0, process_count: int = 1,
    ) -> grain.DatasetIterator:
        """The first `num_batches` batches of `split` in order (-1: all of it, once).

        Global batch `k` holds pairs `k * G` to `(k + 1) * G - 1`, `G = batch_size *
        process_count`, process `p` taking the `p`-th block of `batch_size` rows; rows
        past the end of the split are all padding. Sources and targets longer than the
        maximum lengths are truncated (EOS kept). Each batch is padded to the smallest
        bucket length that holds its global batch.
        """
        _check_batching(batch_size, process_index, process_count)
        if num_batches < -1:
            raise ValueError(f"num_batches must be -1 (all) or non-negative, got {num_batches}")
        encoded = self.encoded(split)
        global_batch = batch_size * process_count
        total = -(-len(encoded) // global_batch)
        count = total if num_batches == -1 else min(num_batches, total)
        batches = _InOrderBatches(self, encoded, batch_size, process_index, process_count)
        return iter(grain.MapDataset.range(count).map(batches).to_iter_dataset(_READ_OPTIONS))

    def train_buckets(self, global_batch: int) -> list[tuple[int, np.ndarray]]:
        """(length, indices of train pairs) of each bucket, for global batches of `global_batch`.

        Buckets with fewer than `global_batch` pairs are merged into the next longer
        one (the longest into the one before it), so that each fills a batch.
        """
        kept = self._kept_train_pairs()
        encoded = self.encoded("train")
        longest = np.maximum(encoded.source_lengths[kept], encoded.target_lengths[kept]) + 1
        if len(kept) < global_batch:
            raise ValueError(f"the train split has {len(kept)} pairs within the maximum "
                             f"lengths, fewer than a global batch of {global_batch}")
        lengths = list(self.bucket_lengths)
        while True:
            bucket = np.searchsorted(lengths, longest)
            sizes = np.bincount(bucket, minlength=len(lengths))
            small = [i for i, size in enumerate(sizes) if size < global_batch]
            if not small:
                break
            # Drop a boundary: the bucket's pairs go to the next longer one.
            del lengths[small[0] if small[0] < len(lengths) - 1 else small[0] - 1]
        return [(length, kept[bucket == i]) for i, length in enumerate(lengths)]

    def _split(self, split: str) -> Sequence[Pair]:
        if split not in self.pairs:
            raise ValueError(f"unknown split {split!r}; available: {', '.join(self.pairs)}")
        return self.pairs[split]

    def _kept_train_pairs(self) -> np.ndarray:
        """Indices of the train pairs within the maximum lengths (EOS included)."""
        if "kept" not in self._memo:
            encoded = self.encoded("train")
            fits = ((encoded.source_lengths < self.max_source_length)
                    & (encoded.target_lengths < self.max_target_length))
            kept = np.flatnonzero(fits)
            logging.getLogger(__name__).info(
                "train split: %d of %d pairs are longer than max_source_length=%d or "
                "max_target_length=%d (EOS included) and are left out", len(encoded) - len(kept),
                len(encoded), self.max_source_length, self.max_target_length)
            self._memo["kept"] = kept
        return self._memo["kept"]


def padding_fraction(batches: Iterable[Batch]) -> float:
    """The fraction of padding tokens in the `inputs` and `targets` of `batches`."""
    pad = total = 0
    for batch in batches:
        for key in ("inputs", "targets"):
            pad += int(np.count_nonzero(batch[key] == 0))
            total += batch[key].size
    return pad / total if total else 0.0


class _BucketedBatches:
    """Step -> this process's rows of the step's global batch, drawn from one bucket."""

    def __init__(self, data: TranslationData, batch_size: int, seed: int, process_index: int,
                 process_count: int):
        global_batch = batch_size * process_count
        self.encoded = data.encoded("train")
        self.buckets = data.train_buckets(global_batch)
        self.max_lengths = (data.max_source_length, data.max_target_length)
        self.eos_id = data.eos_id
        self.seed = seed
        self.global_batch = global_batch
        self.rows = slice(process_index * batch_size, (process_index + 1) * batch_size)
        self.batches_per_epoch = sum(len(ids) // global_batch for _, ids in self.buckets)
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's global batches: pair indices `[batches, G]`, bucket lengths `[batches]`."""
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            rows, lengths = [], []
            for length, ids in self.buckets:
                count = len(ids) // self.global_batch
                rows.append(rng.permutation(ids)[:count * self.global_batch]
                            .reshape(count, self.global_batch))
                lengths.append(np.full(count, length))
            order = rng.permutation(self.batches_per_epoch)
            self._epoch = (epoch, np.concatenate(rows)[order], np.concatenate(lengths)[order])
        return self._epoch[1], self._epoch[2]

    def __call__(self, step: int) -> Batch:
        epoch, index = divmod(step, self.batches_per_epoch)
        rows, lengths = self._plan(epoch)
        pairs = rows[index, self.rows]
        length = int(lengths[index])
        widths = [min(length, m) for m in self.max_lengths]
        return _batch(self.encoded, pairs, widths, len(pairs), self.eos_id)


class _InOrderBatches:
    """Index -> this process's rows of the split's `index`-th global batch, in order."""

    def __init__(self, data: TranslationData, encoded: EncodedPairs, batch_size: int,
                 process_index: int, process_count: int):
        self.encoded = encoded
        self.batch_size = batch_size
        self.global_batch = batch_size * process_count
        self.offset = process_index * batch_size
        self.max_lengths = (data.max_source_length, data.max_target_length)
        self.bucket_lengths = np.asarray(data.bucket_lengths)
        self.eos_id = data.eos_id

    def __call__(self, index: int) -> Batch:
        start = index * self.global_batch
        everyone = np.arange(start, min(start + self.global_batch, len(self.encoded)))
        widths = []
        for lengths, max_length in zip((self.encoded.source_lengths,
                                        self.encoded.target_lengths), self.max_lengths,
                                       strict=True):
            longest = min(int(lengths[everyone].max()) + 1, max_length)
            bucket = self.bucket_lengths[np.searchsorted(self.bucket_lengths, longest)]
            widths.append(min(int(bucket), max_length))
        mine = np.arange(start + self.offset, start + self.offset + self.batch_size)
        return _batch(self.encoded, mine[mine < len(self.encoded)], widths, self.batch_size,
                      self.eos_id)


def _batch(encoded: EncodedPairs, pairs: np.ndarray, widths: Sequence[int], num_rows: int,
           eos_id: int) -> Batch:
    """`num_rows` rows of `pairs`' ids + EOS, truncated to `widths`, then all-padding rows."""
    batch = {}
    for key, get, width in (("inputs", encoded.source, widths[0]),
                            ("targets", encoded.target, widths[1])):
        array = np.zeros((num_rows, width), np.int32)
        for row, pair in enumerate(pairs):
            ids = get(int(pair))[:width - 1]
            array[row, :len(ids)] = ids
            array[row, len(ids)] = eos_id
        batch[key] = array
    return batch


def _check_batching(batch_size: int, process_index: int, process_count: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")


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
        lm_pipeline.save_atomically(path, tokenizer.save)
    return tokenizer


def direction(config: ml_collections.ConfigDict, languages: Sequence[str]) -> tuple[str, str]:
    """The (source, target) languages `config` asks for, checked against `languages`."""
    source, target = config.source, config.target
    if source not in languages or target not in languages or source == target:
        raise ValueError(f"source={source!r}, target={target!r}: this dataset translates "
                         f"between {' and '.join(repr(lang) for lang in languages)}")
    return source, target


def resolve_data_dir(data_dir: str, *, create: bool) -> str:
    """`data_dir`, or $TFDS_DATA_DIR, or ~/tensorflow_datasets, checked to be a readable dir.

    Args:
        data_dir: the config's `data_dir`; "" for the default.
        create: make the default directory if it does not exist.
    """
    path = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    path = os.path.expanduser(path)
    if "://" in path:
        return path
    if create and not data_dir:
        os.makedirs(path, exist_ok=True)
    if not os.path.isdir(path):
        raise ValueError(f"data_dir {path!r} does not exist or is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ValueError(f"data_dir {path!r} is not readable")
    return path


def make_data(
    pairs: Mapping[str, Sequence[Pair]], config: ml_collections.ConfigDict, *,
    workdir: str | None, token_dir: epath.PathLike | None,
) -> TranslationData:
    """`TranslationData` for `pairs` as `config` says, its tokenizer kept in `workdir/assets`.

    Args:
        pairs: the (source, target) pairs of each split, in the config's direction.
        config: the `data` part of the experiment config.
        workdir: the experiment's directory; None builds the tokenizer in memory.
        token_dir: where token ids are cached, under the tokenizer's fingerprint and
            the direction; None tokenizes in memory only.
    """
    tokenizer = tokenizer_for(
        os.path.join(workdir, "assets") if workdir else None, pairs["train"],
        vocab_size=config.vocab_size, max_sentences=config.tokenizer_sentences)
    cache_dir = None
    if token_dir is not None:
        cache_dir = (epath.Path(token_dir) / lm_pipeline.fingerprint(tokenizer)
                     / f"{config.source}-{config.target}")
    return TranslationData(tokenizer=tokenizer, pairs=pairs,
                           max_source_length=config.max_source_length,
                           max_target_length=config.max_target_length, cache_dir=cache_dir)


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
