"""Sentence-pair batches for translation, as grain pipelines.

`TranslationData` holds a corpus's train, validation and test pairs of (source,
target) sentences and the joint SentencePiece BPE tokenizer trained on the train
split (`<pad>` is id 0; `</s>` ends every sequence; see `translation_pairs`). Its
iterators serve length-bucketed training batches and in-order evaluation batches of
`{"inputs": int32[batch, S], "targets": int32[batch, T]}` (see `translation_batches`);
the model shifts the targets right itself.

Padding on the Bible pair (8k vocabulary, lengths at most 128, batches of 64; see
tests/data/test_translation_pipeline.py) is 15.5% of the tokens of an epoch of
bucketed batches, against 54% for random batches padded to their longest pair and
74% for random batches padded to the maximum lengths.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence

import grain
import ml_collections
import numpy as np
from etils import epath

from jaxformer.data import common, tokenizers, translation_batches, translation_pairs
from jaxformer.data.common import DataSpec, Shard, TokenizerSpec
from jaxformer.data.tokenizers import SentencePieceTokenizer
from jaxformer.data.translation_pairs import EncodedPairs, Pair

SPLITS = ("train", "validation", "test")
EVAL_SPLITS = ("validation", "test")


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
        translation_pairs.check_tokenizer(self.tokenizer)
        missing = [name for name in SPLITS if name not in self.pairs]
        if missing:
            raise ValueError(f"no {', '.join(missing)} split among {sorted(self.pairs)}")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2 (a token and EOS), "
                                 f"got {getattr(self, name)}")
        longest = max(self.max_source_length, self.max_target_length)
        lengths = (tuple(self.bucket_lengths)
                   or translation_batches.default_bucket_lengths(longest))
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

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return EVAL_SPLITS

    @property
    def max_lengths(self) -> tuple[int, int]:
        return (self.max_source_length, self.max_target_length)

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
            path = self.cache_dir / f"{split}.npz" if self.cache_dir is not None else None
            self._memo[split] = translation_pairs.cached_encoding(path, self.tokenizer,
                                                                  self._split(split))
        return self._memo[split]

    def train_iter(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """An endless iterator over this process's length-bucketed training batches."""
        shard = Shard(batch_size, process_index, process_count)
        batches = translation_batches.BucketedBatches(
            self.encoded("train"), self.train_buckets(shard.global_batch),
            max_lengths=self.max_lengths, eos_id=self.eos_id, shard=shard, seed=seed)
        dataset = grain.MapDataset.range(sys.maxsize).map(batches)
        return iter(dataset.to_iter_dataset(common.read_options()))

    def eval_iter(
        self, *, batch_size: int, num_batches: int, split: str | None = None,
        process_index: int = 0, process_count: int = 1,
    ) -> grain.DatasetIterator:
        """The first `num_batches` batches of `split` (None: "validation") in order (-1: all
        of it, once).

        Global batch `k` holds pairs `k * G` to `(k + 1) * G - 1`, `G = batch_size *
        process_count`, process `p` taking the `p`-th block of `batch_size` rows; rows
        past the end of the split are all padding. Sources and targets longer than the
        maximum lengths are truncated (EOS kept). Each batch is padded to the smallest
        bucket length that holds its global batch.
        """
        shard = Shard(batch_size, process_index, process_count)
        encoded = self.encoded(common.choose_split(split, self.eval_splits))
        count = common.in_order_batches(len(encoded), shard.global_batch, num_batches)
        batches = translation_batches.InOrderBatches(
            encoded, bucket_lengths=self.bucket_lengths, max_lengths=self.max_lengths,
            eos_id=self.eos_id, shard=shard)
        dataset = grain.MapDataset.range(count).map(batches)
        return iter(dataset.to_iter_dataset(common.read_options()))

    def train_buckets(self, global_batch: int) -> list[tuple[int, np.ndarray]]:
        """(length, indices of train pairs) of each bucket, for global batches of
        `global_batch` (see `translation_batches.train_buckets`)."""
        return translation_batches.train_buckets(self.encoded("train"), self._kept_train_pairs(),
                                                 self.bucket_lengths, global_batch)

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


def direction(config: ml_collections.ConfigDict, languages: Sequence[str]) -> tuple[str, str]:
    """The (source, target) languages `config` asks for, checked against `languages`."""
    source, target = config.get("source"), config.get("target")
    if source not in languages or target not in languages or source == target:
        raise ValueError(f"source={source!r}, target={target!r}: this dataset translates "
                         f"between {' and '.join(repr(lang) for lang in languages)}")
    return source, target


def check_translation_config(config: ml_collections.ConfigDict, languages: Sequence[str], *,
                             data_dir_must_exist: bool) -> None:
    """Raises ValueError for the direction, sizes or data dir that `make_data` and the data
    modules would reject, without reading or writing anything.

    Args:
        config: the `data` part of the experiment config.
        languages: the two languages of the corpus.
        data_dir_must_exist: whether the default tfds data dir must exist (else it is made).
    """
    direction(config, languages)
    common.require_int(config, "vocab_size",
                       minimum=tokenizers.min_bpe_vocab_size(special_tokens=True))
    for key in ("max_source_length", "max_target_length", "tokenizer_sentences"):
        common.require_int(config, key, minimum=2)
    common.check_data_dir(config.get("data_dir", ""), default_must_exist=data_dir_must_exist)


def data_spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The size and special ids of the tokenizer `make_data` trains (`vocab_size` pieces,
    `special_tokens=True`), without training it."""
    tokenizer = TokenizerSpec(config.vocab_size, pad_id=tokenizers.PAD_ID,
                              bos_id=tokenizers.BOS_ID, eos_id=tokenizers.EOS_ID)
    return DataSpec(vocab_size=config.vocab_size, tokenizer=tokenizer)


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
    tokenizer = translation_pairs.tokenizer_for(
        common.assets_dir(workdir), pairs["train"], vocab_size=config.vocab_size,
        max_sentences=config.tokenizer_sentences)
    cache_dir = None
    if token_dir is not None:
        cache_dir = (epath.Path(token_dir) / tokenizers.fingerprint(tokenizer)
                     / f"{config.source}-{config.target}")
    return TranslationData(tokenizer=tokenizer, pairs=pairs,
                           max_source_length=config.max_source_length,
                           max_target_length=config.max_target_length, cache_dir=cache_dir)
