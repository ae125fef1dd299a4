"""Text classification batches for BERT fine-tuning: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`.

Texts are encoded once with a WordPiece vocabulary and truncated to `seq_length` tokens (of a
pair, the longer text loses its last token until the pair fits, as in BERT's
`run_classifier.py`). A batch is `{"input_ids": int32[b, L]` (0 = [PAD] after the example),
`"segment_ids": int32[b, L]` (1 from the token after the first [SEP] to the last [SEP]),
`"label": int32[b]}`.

Training is an endless stream of epochs, each in its own order: the permutation of epoch `e`
is drawn from a generator seeded with `(seed, e)`, and global batch `k` holds positions
`k * G ... (k + 1) * G - 1` of that stream. A batch depends only on the seed and the step, so
a grain iterator resumes exactly from its saved state and processes share global batches (see
`common.Shard`). Evaluation reads a split once, in order; rows past its end are padding rows,
`[CLS] [SEP]` labelled -1.

The vocabulary is a pretraining run's (`tokenizer_workdir`: its `assets/wordpiece.json`,
copied into this run's assets), or one trained here on the training texts and kept in this
run's assets (fine-tuning from scratch).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import grain
import ml_collections
import numpy as np

from jaxformer.data import common, wordpiece
from jaxformer.data.common import Batch, DataSpec, EpochOrders, Shard, TokenizerSpec
from jaxformer.data.wordpiece import WordPiece

PAD_LABEL = -1
MIN_SEQ_LENGTH = 4
MAX_SEQ_LENGTH = 512
DEFAULTS = {"seq_length": 128, "train_examples": -1, "subset_seed": 0,
            "tokenizer_workdir": "", "data_dir": ""}


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """Encoded examples, flattened: example `i` is `tokens[starts[i]:starts[i + 1]]` (with its
    [CLS] and [SEP]s), its first `first_lengths[i]` tokens in segment 0, label `labels[i]`."""

    tokens: np.ndarray
    starts: np.ndarray
    first_lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.starts[i]:self.starts[i + 1]]


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """`a` and `b` with the last token of the longer one (of `b` on ties, as BERT's
    `_truncate_seq_pair`) dropped until together they have at most `max_tokens`."""
    a_len, b_len = len(a), len(b)
    while a_len + b_len > max_tokens:
        if a_len > b_len:
            a_len -= 1
        else:
            b_len -= 1
    return a[:a_len], b[:b_len]


def encode(tokenizer: WordPiece, first: Sequence[str], second: Sequence[str] | None,
           labels: Sequence[int], seq_length: int) -> Examples:
    """`[CLS] first [SEP]` (or `[CLS] first [SEP] second [SEP]`) of each example, truncated to
    `seq_length` tokens."""
    if second is not None and len(second) != len(first):
        raise ValueError(f"{len(first)} first texts but {len(second)} second ones")
    if len(labels) != len(first):
        raise ValueError(f"{len(first)} texts but {len(labels)} labels")
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    a_ids = tokenizer.encode_batch(list(first))
    b_ids = tokenizer.encode_batch(list(second)) if second is not None else None
    pieces, first_lengths = [], []
    for i, a in enumerate(a_ids):
        if b_ids is None:
            ids = [cls, *a[:seq_length - 2], sep]
            first_lengths.append(len(ids))
        else:
            a, b = truncate_pair(a, b_ids[i], seq_length - 3)
            ids = [cls, *a, sep, *b, sep]
            first_lengths.append(len(a) + 2)
        pieces.append(np.asarray(ids, np.int32))
    return Examples(
        tokens=np.concatenate(pieces) if pieces else np.zeros([0], np.int32),
        starts=np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64),
        first_lengths=np.asarray(first_lengths, np.int32),
        labels=np.asarray(labels, np.int32))


def stratified_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices (sorted) of `count` of the examples, each label's share as in `labels` (to the
    nearest whole example: floors, then the largest remainders), drawn with `seed`."""
    labels = np.asarray(labels)
    if not 0 < count <= len(labels):
        raise ValueError(f"cannot take {count} of {len(labels)} examples")
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    quotas = np.floor(exact).astype(np.int64)
    extra = np.argsort(-(exact - quotas), kind="stable")[:count - quotas.sum()]
    quotas[extra] += 1
    rng = np.random.default_rng(seed)
    chosen = [np.flatnonzero(labels == c)[rng.permutation(n)[:q]]
              for c, n, q in zip(classes, sizes, quotas, strict=True)]
    return np.sort(np.concatenate(chosen))


class ExampleRows:
    """A split's encoded examples as batch rows: `make` turns example indices (None: a
    padding row, `[CLS] [SEP]` labelled -1) into a batch; subclasses `fill` a row."""

    def __init__(self, examples: Any, seq_length: int, padding: tuple[int, int]):
        self.examples, self.seq_length, self.padding = examples, seq_length, padding

    def __len__(self) -> int:
        return len(self.examples)

    def empty(self, rows: int) -> Batch:
        """A batch of `rows` rows of [PAD], labelled -1."""
        shape = (rows, self.seq_length)
        return {"input_ids": np.zeros(shape, np.int32), "segment_ids": np.zeros(shape, np.int32),
                "label": np.full((rows, *self.label_shape()), PAD_LABEL, np.int32)}

    def make(self, indices: Iterable[int | None]) -> Batch:
        indices = list(indices)
        batch = self.empty(len(indices))
        for row, index in enumerate(indices):
            if index is None:
                batch["input_ids"][row, :2] = self.padding
            else:
                self.fill(batch, row, index)
        return batch

    def label_shape(self) -> tuple[int, ...]:
        """The shape of one row's label: () for one label per example."""
        return ()

    def fill(self, batch: Batch, row: int, index: int) -> None:
        raise NotImplementedError


class ClassifiedRows(ExampleRows):
    def fill(self, batch: Batch, row: int, index: int) -> None:
        ids = self.examples.ids(index)
        batch["input_ids"][row, :len(ids)] = ids
        batch["segment_ids"][row, self.examples.first_lengths[index]:len(ids)] = 1
        batch["label"][row] = self.examples.labels[index]


class TrainBatch:
    """Step -> this process's rows of the step's global batch, from the endless stream of
    epochs."""

    def __init__(self, rows: ExampleRows, shard: Shard, seed: int):
        self.rows, self.shard = rows, shard
        self.orders = EpochOrders(len(rows), seed)

    def __call__(self, step: int) -> Batch:
        positions = step * self.shard.global_batch + self.shard.rows
        return self.rows.make(self.orders.example(p) for p in positions)


class EvalBatch:
    """Batch index -> this process's rows of that global batch; rows past the end padded."""

    def __init__(self, rows: ExampleRows, shard: Shard):
        self.rows, self.shard = rows, shard

    def __call__(self, index: int) -> Batch:
        positions = index * self.shard.global_batch + self.shard.rows
        return self.rows.make(int(p) if p < len(self.rows) else None for p in positions)


def train_iterator(rows: ExampleRows, *, batch_size: int, seed: int, process_index: int,
                   process_count: int) -> grain.DatasetIterator:
    """An endless iterator over this process's `batch_size` rows per batch of `rows`."""
    make = TrainBatch(rows, Shard(batch_size, process_index, process_count), seed)
    dataset = grain.MapDataset.range(sys.maxsize).map(make)
    return iter(dataset.to_iter_dataset(common.read_options()))


def eval_iterator(rows: ExampleRows, *, batch_size: int, num_batches: int, process_index: int,
                  process_count: int) -> grain.DatasetIterator:
    """The first `num_batches` batches of `rows` in order (-1: all of them, once)."""
    shard = Shard(batch_size, process_index, process_count)
    count = common.in_order_batches(len(rows), shard.global_batch, num_batches)
    dataset = grain.MapDataset.range(count).map(EvalBatch(rows, shard))
    return iter(dataset.to_iter_dataset(common.read_options()))


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedSplits:
    """Encoded train and eval splits of a data set, with their vocabulary; subclasses name
    how their examples become batch rows (`row_type`).

    Attributes:
        tokenizer: the WordPiece vocabulary the texts are encoded with.
        train: the training examples.
        eval: split name -> examples, the first split the default of `eval_iter`.
        class_names: the name of each label.
        vocab_size: the model's number of token ids (at least the tokenizer's).
        seq_length: the length of every row of a batch.
    """

    row_type: ClassVar[type[ExampleRows]]
    tokenizer: WordPiece
    train: Any
    eval: Mapping[str, Any]
    class_names: tuple[str, ...]
    vocab_size: int
    seq_length: int

    def __post_init__(self):
        if self.tokenizer.vocab_size > self.vocab_size:
            raise ValueError(f"the tokenizer has {self.tokenizer.vocab_size} tokens, more than "
                             f"data.vocab_size {self.vocab_size}")
        if not self.eval:
            raise ValueError("no eval split")
        for name, examples in {"train": self.train, **self.eval}.items():
            if len(examples) == 0:
                raise ValueError(f"the {name} split is empty")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(self.eval)

    def _rows(self, examples: Any) -> ExampleRows:
        padding = (self.tokenizer.cls_id, self.tokenizer.sep_id)
        return self.row_type(examples, self.seq_length, padding)

    def train_iter(self, *, batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1) -> grain.DatasetIterator:
        """An endless iterator over this process's `batch_size` training examples per batch."""
        return train_iterator(self._rows(self.train), batch_size=batch_size, seed=seed,
                              process_index=process_index, process_count=process_count)

    def eval_iter(self, *, batch_size: int, num_batches: int, process_index: int = 0,
                  process_count: int = 1, split: str | None = None) -> grain.DatasetIterator:
        """The first `num_batches` batches of `split` (None: the first of `eval_splits`) in
        order (-1: the whole split, once). Rows past its end are `[CLS] [SEP]` labelled -1."""
        examples = self.eval[common.choose_split(split, self.eval_splits)]
        return eval_iterator(self._rows(examples), batch_size=batch_size,
                             num_batches=num_batches, process_index=process_index,
                             process_count=process_count)


@dataclasses.dataclass(frozen=True, eq=False)
class TextClassificationData(EncodedSplits):
    """A text classification data set (see `EncodedSplits`); `texts` holds the raw texts of
    `train` and of each eval split (for word-level baselines)."""

    row_type: ClassVar[type[ExampleRows]] = ClassifiedRows
    texts: Mapping[str, Texts] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        for name, examples in {"train": self.train, **self.eval}.items():
            if examples.labels.min() < 0 or examples.labels.max() >= len(self.class_names):
                raise ValueError(f"the {name} split has labels outside [0, "
                                 f"{len(self.class_names)})")


# --- Config ------------------------------------------------------------------------------

def get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def check_text_config(config: ml_collections.ConfigDict, *, files: bool = True,
                      default_seq_length: int = DEFAULTS["seq_length"]) -> None:
    """Raises ValueError for `seq_length` (`default_seq_length` when not set), `vocab_size`,
    `train_examples`, `subset_seed` or `tokenizer_workdir` values `build` would reject (with
    `files`, a `tokenizer_workdir` without a saved vocabulary too)."""
    seq_length = common.require_int(config, "seq_length", minimum=MIN_SEQ_LENGTH,
                                    default=default_seq_length)
    if seq_length > MAX_SEQ_LENGTH:
        raise ValueError(f"data.seq_length must be at most {MAX_SEQ_LENGTH}, got {seq_length}")
    common.require_int(config, "vocab_size", minimum=len(wordpiece.SPECIAL_TOKENS) + 1)
    if common.require_int(config, "train_examples", minimum=-1,
                          default=DEFAULTS["train_examples"]) == 0:
        raise ValueError("data.train_examples must be -1 (all) or positive, got 0")
    common.require_int(config, "subset_seed", minimum=0, default=DEFAULTS["subset_seed"])
    source = get(config, "tokenizer_workdir")
    if files or not isinstance(source, str):
        wordpiece.check_source_workdir(source)


def text_spec(config: ml_collections.ConfigDict, class_names: Sequence[str]) -> DataSpec:
    """`vocab_size` WordPiece ids ([PAD] 0) and `class_names`, without reading anything."""
    check_text_config(config, files=False)
    return DataSpec(vocab_size=config.vocab_size, class_names=tuple(class_names),
                    tokenizer=TokenizerSpec(config.vocab_size, pad_id=WordPiece.pad_id))


def train_indices(config: ml_collections.ConfigDict, labels: Sequence[int]) -> np.ndarray:
    """The training examples to use, by index: all, or the stratified subset of
    `config.train_examples` drawn with `config.subset_seed`."""
    count = get(config, "train_examples")
    if count == -1:
        return np.arange(len(labels))
    if count > len(labels):
        raise ValueError(f"data.train_examples is {count}, the training set has only "
                         f"{len(labels)}")
    return stratified_subset(np.asarray(labels), count, get(config, "subset_seed"))


def random_subset(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
    """The training examples to use, by index (in corpus order): all `count`, or
    `config.train_examples` of them drawn with `config.subset_seed`."""
    take = get(config, "train_examples")
    if take == -1:
        return np.arange(count)
    if take > count:
        raise ValueError(f"data.train_examples is {take}, the training set has only {count}")
    rng = np.random.default_rng(get(config, "subset_seed"))
    return np.sort(rng.permutation(count)[:take])


@dataclasses.dataclass(frozen=True)
class Texts:
    """A split's raw examples: one text each (`second` None) or a pair, and a label."""

    first: Sequence[str]
    second: Sequence[str] | None
    labels: Sequence[int]

    def take(self, indices: np.ndarray) -> Texts:
        def pick(values: Sequence) -> list:
            return [values[int(i)] for i in indices]

        return Texts(pick(self.first), None if self.second is None else pick(self.second),
                     pick(self.labels))

    def all_texts(self) -> Iterable[str]:
        yield from self.first
        yield from self.second or ()


def build_data(config: ml_collections.ConfigDict, *, workdir: str | None, train: Texts,
               evals: Mapping[str, Texts], class_names: Sequence[str]) -> TextClassificationData:
    """The data of `config` (after `check_text_config`): the training subset it asks for, the
    vocabulary (`tokenizer_workdir`'s, or trained on that subset's texts) and every split
    encoded."""
    train = train.take(train_indices(config, train.labels))
    tokenizer = wordpiece.for_workdir(common.assets_dir(workdir), train.all_texts,
                                     config.vocab_size,
                                     source_workdir=get(config, "tokenizer_workdir"))
    seq_length = get(config, "seq_length")

    def encoded(texts: Texts) -> Examples:
        return encode(tokenizer, texts.first, texts.second, texts.labels, seq_length)

    return TextClassificationData(
        tokenizer=tokenizer, train=encoded(train),
        eval={name: encoded(texts) for name, texts in evals.items()},
        class_names=tuple(class_names), vocab_size=config.vocab_size, seq_length=seq_length,
        texts={"train": train, **evals})
