"""Masked-LM and next-sentence examples, as in BERT's `create_pretraining_data.py`.

An example is `[CLS] A [SEP] B [SEP]`: A is one or more consecutive sentences of a document;
B is the sentences after them (IsNext, half the time) or consecutive sentences from a random
other document (NotNext); with `next_sentence=False` (pretraining without that task), B is
always the sentences after A. A chunk of consecutive sentences from a random sentence on fills a
target length of `seq_length - 3` tokens (a random length in [2, seq_length - 3] for 10% of
examples); A is a random prefix of it; the longer of A and B is trimmed, at a random end,
until the pair fits. Then 15% of the tokens other than [CLS] and [SEP] (at most
`max_predictions`; with whole-word masking, whole words up to that count) are predicted:
80% of them become [MASK], 10% a random token and 10% stay as they are.

Example `i` is drawn from a generator seeded with `(seed, i)`, and global batch `k` holds
examples `k * G ... (k + 1) * G - 1`: a batch depends only on the seed and the step, so an
iterator resumes exactly from its saved step and processes share global batches (see
`common.Shard`). Batches are `{"input_ids", "segment_ids": int32[b, L], "mlm_positions",
"mlm_ids": int32[b, P], "mlm_weights": float32[b, P], "next_sentence": int32[b]}` (0 IsNext,
1 NotNext, -1 an evaluation padding row).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable

import grain
import numpy as np
from etils import epath

from jaxformer.data import common
from jaxformer.data.common import Batch, Shard
from jaxformer.data.wordpiece import WordPiece

SHORT_SEQ_PROB = 0.1
MASK_PROB = 0.15
EVAL_SEED = 0


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedDocuments:
    """Documents of sentences of token ids, flattened.

    Sentence `s` is `tokens[sentence_starts[s]:sentence_starts[s + 1]]`; document `d` is
    sentences `document_starts[d]` to `document_starts[d + 1] - 1`.
    """

    tokens: np.ndarray
    sentence_starts: np.ndarray
    document_starts: np.ndarray

    @classmethod
    def from_ids(cls, documents: list[list[list[int]]]) -> EncodedDocuments:
        """From each document's sentences' ids; empty sentences and documents are left out."""
        documents = [[s for s in doc if len(s)] for doc in documents]
        documents = [doc for doc in documents if doc]
        lengths = [len(s) for doc in documents for s in doc]
        flat = [t for doc in documents for s in doc for t in s]
        return cls(tokens=np.asarray(flat, np.int32),
                   sentence_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                   document_starts=np.cumsum([0] + [len(d) for d in documents], dtype=np.int64))

    def save(self, path: epath.Path) -> None:
        common.save_arrays(self, path)

    @classmethod
    def load(cls, path: epath.Path, *, vocab_size: int) -> EncodedDocuments:
        """Reads a saved file, checking its layout and that its ids are below `vocab_size`."""
        encoded = common.load_arrays(cls, path)
        tokens = encoded.tokens
        if (tokens.ndim != 1 or tokens.dtype != np.int32
                or (tokens.size and not 0 <= tokens.min() <= tokens.max() < vocab_size)
                or not _starts(encoded.sentence_starts, len(tokens))
                or not _starts(encoded.document_starts, encoded.num_sentences)):
            raise ValueError(f"malformed token cache {path}: expected documents of sentences of "
                             f"ids below {vocab_size}")
        return encoded

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    def sentence(self, s: int) -> np.ndarray:
        return self.tokens[self.sentence_starts[s]:self.sentence_starts[s + 1]]

    def document_of(self, s: int) -> int:
        return int(np.searchsorted(self.document_starts, s, side="right")) - 1


def _starts(starts: np.ndarray, end: int) -> bool:
    """Whether `starts` are int64 offsets rising from 0 to `end`, each part non-empty."""
    return bool(starts.ndim == 1 and starts.dtype == np.int64 and len(starts) >= 1
                and starts[0] == 0 and starts[-1] == end and np.all(np.diff(starts) > 0))


class DeferredDocuments:
    """`EncodedDocuments` encoded when first used: a command that builds a run's data for its
    tokenizer alone (`jaxformer fill-mask`) encodes no corpus."""

    def __init__(self, encode: Callable[[], EncodedDocuments]):
        self._encode = encode

    @functools.cached_property
    def documents(self) -> EncodedDocuments:
        return self._encode()

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.documents, name)


def encoded(documents: EncodedDocuments | DeferredDocuments) -> EncodedDocuments:
    return documents.documents if isinstance(documents, DeferredDocuments) else documents


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    seq_length: int
    max_predictions: int
    whole_word_masking: bool = False
    vocab_size: int = 0  # Random replacements: the ids below it but the special tokens'.
    next_sentence: bool = True  # False: every B follows its A (no NotNext pairs).


class PretrainingExamples:
    """Example index -> one MLM + NSP example (see the module docstring)."""

    def __init__(self, documents: EncodedDocuments, tokenizer: WordPiece, masking: MaskingConfig,
                 seed: int):
        documents = encoded(documents)
        if documents.num_documents < 2:
            raise ValueError("next-sentence pairs need at least 2 documents, got "
                             f"{documents.num_documents}")
        self.docs, self.tokenizer, self.masking, self.seed = documents, tokenizer, masking, seed
        self.replacements = np.setdiff1d(np.arange(masking.vocab_size), tokenizer.special_ids)
        # A chunk starts at a sentence with a successor in its document, so that every chunk
        # can be split into A and an IsNext B.
        last = documents.document_starts[1:] - 1
        starts = np.setdiff1d(np.arange(documents.num_sentences), last)
        if not len(starts):
            raise ValueError("no document has two sentences")
        self.chunk_starts = starts

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        a, b, is_random = self._pair(rng)
        tokens = np.concatenate([[self.tokenizer.cls_id], a, [self.tokenizer.sep_id], b,
                                 [self.tokenizer.sep_id]]).astype(np.int32)
        segments = np.concatenate([np.zeros(len(a) + 2, np.int32), np.ones(len(b) + 1, np.int32)])
        inputs, positions, labels = self._mask(tokens, rng)
        return {"input_ids": inputs, "segment_ids": segments, "mlm_positions": positions,
                "mlm_ids": labels, "next_sentence": np.int32(is_random)}

    def _pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        docs = self.docs
        max_tokens = self.masking.seq_length - 3
        target = max_tokens
        if rng.random() < SHORT_SEQ_PROB:
            target = int(rng.integers(2, max_tokens + 1))
        is_random = bool(rng.random() < 0.5) and self.masking.next_sentence
        start = int(self.chunk_starts[rng.integers(len(self.chunk_starts))])
        document = docs.document_of(start)
        end = docs.document_starts[document + 1]
        chunk, length = [start], len(docs.sentence(start))
        while chunk[-1] + 1 < end and (length < target or len(chunk) < 2):
            chunk.append(chunk[-1] + 1)
            length += len(docs.sentence(chunk[-1]))
        a_count = int(rng.integers(1, len(chunk)))  # At least one sentence left for B.
        a = np.concatenate([docs.sentence(s) for s in chunk[:a_count]])
        if is_random:
            other = int(rng.integers(docs.num_documents - 1))
            other += other >= document
            first, stop = docs.document_starts[other], docs.document_starts[other + 1]
            s = int(rng.integers(first, stop))
            pieces, b_length = [], 0
            while s < stop and b_length < target - len(a):
                pieces.append(docs.sentence(s))
                b_length += len(pieces[-1])
                s += 1
            b = np.concatenate(pieces) if pieces else docs.sentence(first)
        else:
            b = np.concatenate([docs.sentence(s) for s in chunk[a_count:]])
        a, b = _truncate_pair(a, b, max_tokens, rng)
        return a, b, is_random

    def _mask(self, tokens: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        specials = (tokens == self.tokenizer.cls_id) | (tokens == self.tokenizer.sep_id)
        candidates = np.flatnonzero(~specials)
        if self.masking.whole_word_masking:
            starts = self.tokenizer.word_starts(tokens[candidates])
            # A "##" piece right after a special token starts a word of its own.
            starts |= np.concatenate([[True], np.diff(candidates) > 1])
            words = np.split(candidates, np.flatnonzero(starts)[1:])
        else:
            words = np.split(candidates, np.arange(1, len(candidates)))
        num_to_predict = min(self.masking.max_predictions,
                             max(1, int(round(len(tokens) * MASK_PROB))))
        chosen: list[int] = []
        for w in rng.permutation(len(words)):
            if len(chosen) >= num_to_predict:
                break
            if len(chosen) + len(words[w]) > num_to_predict:
                continue
            chosen.extend(words[w].tolist())
        positions = np.sort(np.asarray(chosen, np.int32))
        labels = tokens[positions]
        inputs = tokens.copy()
        draw = rng.random(len(positions))
        replacements = self.replacements[rng.integers(len(self.replacements),
                                                      size=len(positions))]
        inputs[positions[draw < 0.8]] = self.tokenizer.mask_id
        random = draw >= 0.9
        inputs[positions[random]] = replacements[random]
        return inputs, positions, labels


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Trims the longer of `a` and `b` by one token at a random end until they fit."""
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_tokens:
        if a_hi - a_lo > b_hi - b_lo:
            if rng.random() < 0.5:
                a_lo += 1
            else:
                a_hi -= 1
        elif rng.random() < 0.5:
            b_lo += 1
        else:
            b_hi -= 1
    return a[a_lo:a_hi], b[b_lo:b_hi]


class PretrainingBatches:
    """Step -> this process's rows of global batch `step`, padded to `seq_length` and
    `max_predictions`; rows past `num_examples` (if set) are padding rows."""

    def __init__(self, examples: PretrainingExamples, shard: Shard,
                 num_examples: int | None = None):
        self.examples, self.shard, self.num_examples = examples, shard, num_examples

    def __call__(self, step: int) -> Batch:
        masking = self.examples.masking
        b, length, p = self.shard.batch_size, masking.seq_length, masking.max_predictions
        batch = {"input_ids": np.zeros((b, length), np.int32),
                 "segment_ids": np.zeros((b, length), np.int32),
                 "mlm_positions": np.zeros((b, p), np.int32),
                 "mlm_ids": np.zeros((b, p), np.int32),
                 "mlm_weights": np.zeros((b, p), np.float32),
                 "next_sentence": np.full((b,), -1, np.int32)}
        for row, index in enumerate(step * self.shard.global_batch + self.shard.rows):
            if self.num_examples is not None and index >= self.num_examples:
                continue
            example = self.examples(int(index))
            n, m = len(example["input_ids"]), len(example["mlm_positions"])
            for key in ("input_ids", "segment_ids"):
                batch[key][row, :n] = example[key]
            for key in ("mlm_positions", "mlm_ids"):
                batch[key][row, :m] = example[key]
            batch["mlm_weights"][row, :m] = 1.0
            batch["next_sentence"][row] = example["next_sentence"]
        return batch


@dataclasses.dataclass(frozen=True, eq=False)
class PretrainingData:
    """Train and held-out documents with their WordPiece tokenizer, as MLM + NSP batches.

    `eval_iter` reads a fixed set of `eval_examples` examples of the held-out documents.
    """

    tokenizer: WordPiece
    train_documents: EncodedDocuments | DeferredDocuments
    eval_documents: EncodedDocuments | DeferredDocuments
    vocab_size: int
    seq_length: int
    max_predictions: int
    whole_word_masking: bool = False
    next_sentence: bool = True
    eval_examples: int = 2048

    def __post_init__(self):
        if self.tokenizer.vocab_size > self.vocab_size:
            raise ValueError(f"the tokenizer has {self.tokenizer.vocab_size} tokens, more than "
                             f"vocab_size {self.vocab_size}")
        if self.seq_length < 8:
            raise ValueError(f"seq_length must be at least 8, got {self.seq_length}")

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return ("validation",)

    def _masking(self) -> MaskingConfig:
        return MaskingConfig(self.seq_length, self.max_predictions, self.whole_word_masking,
                             self.tokenizer.vocab_size, self.next_sentence)

    def train_iter(self, *, batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1) -> grain.DatasetIterator:
        """An endless iterator over this process's rows of each global batch."""
        examples = PretrainingExamples(self.train_documents, self.tokenizer, self._masking(),
                                       seed)
        batches = PretrainingBatches(examples, Shard(batch_size, process_index, process_count))
        dataset = grain.MapDataset.range(sys.maxsize).map(batches)
        return iter(dataset.to_iter_dataset(common.read_options()))

    def eval_iter(self, *, batch_size: int, num_batches: int, process_index: int = 0,
                  process_count: int = 1, split: str | None = None) -> grain.DatasetIterator:
        """The first `num_batches` batches (-1: all) of the fixed held-out examples; rows past
        the last example are padding (`next_sentence` -1, no predictions)."""
        common.choose_split(split, self.eval_splits)
        shard = Shard(batch_size, process_index, process_count)
        count = common.in_order_batches(self.eval_examples, shard.global_batch, num_batches)
        examples = PretrainingExamples(self.eval_documents, self.tokenizer, self._masking(),
                                       EVAL_SEED)
        batches = PretrainingBatches(examples, shard, num_examples=self.eval_examples)
        dataset = grain.MapDataset.range(count).map(batches)
        return iter(dataset.to_iter_dataset(common.read_options()))
