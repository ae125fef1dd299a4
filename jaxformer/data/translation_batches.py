"""Batches of encoded sentence pairs: length buckets for training, in order for evaluation.

A batch is `{"inputs": int32[batch, S], "targets": int32[batch, T]}`: source and target
ids, each followed by EOS and padded with 0, truncated to the maximum lengths.

Training batches are bucketed by length: a pair goes to the smallest bucket length that
holds both of its sequences, and a batch is a global batch of pairs of one bucket, padded
to that length (so only a few shapes are compiled). Each epoch shuffles the pairs within
each bucket and the order of the batches, drawing from a generator seeded with
`(seed, epoch)`, and leaves out the remainder of each bucket that does not fill a batch.
Step `k`'s batch depends only on the seed and `k`, so an iterator resumes exactly from its
saved state, and processes split each global batch (see `common.Shard`).

Evaluation batches keep the split's order (so rows line up with its references), each
padded to the smallest bucket length that holds the longest row of its global batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from jaxformer.data.common import Batch, Shard
from jaxformer.data.translation_pairs import EncodedPairs


def default_bucket_lengths(max_length: int) -> tuple[int, ...]:
    """16, 24, then three lengths per octave (32, 40, 48, 64, 80, 96, ...), up to `max_length`."""
    lengths, octave = {16, 24}, 32
    while octave < max_length:
        lengths |= {octave, octave * 5 // 4, octave * 3 // 2}
        octave *= 2
    return tuple(sorted({n for n in lengths if n < max_length} | {max_length}))


def train_buckets(encoded: EncodedPairs, kept: np.ndarray, bucket_lengths: Sequence[int],
                  global_batch: int) -> list[tuple[int, np.ndarray]]:
    """(length, indices of pairs) of each bucket of the `kept` pairs of `encoded`.

    Buckets with fewer than `global_batch` pairs are merged into the next longer one (the
    longest into the one before it), so that each fills a batch.
    """
    if len(kept) < global_batch:
        raise ValueError(f"the train split has {len(kept)} pairs within the maximum "
                         f"lengths, fewer than a global batch of {global_batch}")
    longest = np.maximum(encoded.source_lengths[kept], encoded.target_lengths[kept]) + 1
    lengths = list(bucket_lengths)
    while True:
        bucket = np.searchsorted(lengths, longest)
        sizes = np.bincount(bucket, minlength=len(lengths))
        small = [i for i, size in enumerate(sizes) if size < global_batch]
        if not small:
            break
        # Drop a boundary: the bucket's pairs go to the next longer one.
        del lengths[small[0] if small[0] < len(lengths) - 1 else small[0] - 1]
    return [(length, kept[bucket == i]) for i, length in enumerate(lengths)]


def padding_fraction(batches: Iterable[Batch]) -> float:
    """The fraction of padding tokens in the `inputs` and `targets` of `batches`."""
    pad = total = 0
    for batch in batches:
        for key in ("inputs", "targets"):
            pad += int(np.count_nonzero(batch[key] == 0))
            total += batch[key].size
    return pad / total if total else 0.0


class BucketedBatches:
    """Step -> this process's rows of the step's global batch, drawn from one bucket."""

    def __init__(self, encoded: EncodedPairs, buckets: list[tuple[int, np.ndarray]], *,
                 max_lengths: tuple[int, int], eos_id: int, shard: Shard, seed: int):
        self.encoded, self.buckets = encoded, buckets
        self.max_lengths, self.eos_id = max_lengths, eos_id
        self.shard, self.seed = shard, seed
        self.batches_per_epoch = sum(len(ids) // shard.global_batch for _, ids in buckets)
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's global batches: pair indices `[batches, G]`, bucket lengths `[batches]`."""
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            global_batch = self.shard.global_batch
            rows, lengths = [], []
            for length, ids in self.buckets:
                count = len(ids) // global_batch
                rows.append(rng.permutation(ids)[:count * global_batch]
                            .reshape(count, global_batch))
                lengths.append(np.full(count, length))
            order = rng.permutation(self.batches_per_epoch)
            self._epoch = (epoch, np.concatenate(rows)[order], np.concatenate(lengths)[order])
        return self._epoch[1], self._epoch[2]

    def __call__(self, step: int) -> Batch:
        epoch, index = divmod(step, self.batches_per_epoch)
        rows, lengths = self._plan(epoch)
        pairs = rows[index, self.shard.rows]
        length = int(lengths[index])
        widths = [min(length, m) for m in self.max_lengths]
        return _batch(self.encoded, pairs, widths, len(pairs), self.eos_id)


class InOrderBatches:
    """Index -> this process's rows of the split's `index`-th global batch, in order."""

    def __init__(self, encoded: EncodedPairs, *, bucket_lengths: Sequence[int],
                 max_lengths: tuple[int, int], eos_id: int, shard: Shard):
        self.encoded, self.bucket_lengths = encoded, np.asarray(bucket_lengths)
        self.max_lengths, self.eos_id, self.shard = max_lengths, eos_id, shard

    def __call__(self, index: int) -> Batch:
        start = index * self.shard.global_batch
        everyone = np.arange(start, min(start + self.shard.global_batch, len(self.encoded)))
        widths = []
        for lengths, max_length in zip((self.encoded.source_lengths,
                                        self.encoded.target_lengths), self.max_lengths,
                                       strict=True):
            longest = min(int(lengths[everyone].max()) + 1, max_length)
            bucket = self.bucket_lengths[np.searchsorted(self.bucket_lengths, longest)]
            widths.append(min(int(bucket), max_length))
        mine = start + self.shard.rows
        return _batch(self.encoded, mine[mine < len(self.encoded)], widths,
                      self.shard.batch_size, self.eos_id)


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
