"""Token classification (tagging) batches for BERT fine-tuning: `[CLS] w1 w2 ... [SEP]`, one
tag per word, on the word's first WordPiece (as BERT's NER fine-tuning does).

A batch is `{"input_ids": int32[b, L]` (0 = [PAD] after the sentence), `"segment_ids"` (all
0), `"label": int32[b, L]}`: the word's tag id at its first piece, -1 on its other pieces, on
[CLS], [SEP] and padding. A word the vocabulary has no piece for is one [UNK]. A sentence
longer than `seq_length` pieces keeps the words that fit whole; the tags of the others are
counted in `Examples.dropped_tags` (no training signal, not evaluated).

Tags are IOB (B-X begins a span of type X, I-X continues it), IOBES (E-X ends a span, S-X is a
one-word span) or O (outside); `TagScheme` reads their names. Training order, resumption and
per-process sharding are those of `text_classification_pipeline`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

import ml_collections
import numpy as np

from jaxformer.data import common, wordpiece
from jaxformer.data import text_classification_pipeline as text_pipeline
from jaxformer.data.common import Batch, DataSpec, TokenizerSpec
from jaxformer.data.wordpiece import WordPiece

PAD_LABEL = text_pipeline.PAD_LABEL
OUTSIDE, BEGIN, INSIDE, END, SINGLE = range(5)
PREFIXES = {"B": BEGIN, "I": INSIDE, "E": END, "S": SINGLE}


@dataclasses.dataclass(frozen=True)
class TagScheme:
    """The tags' structure: for tag id `t`, `prefixes[t]` (OUTSIDE, BEGIN, INSIDE, END or
    SINGLE) and `kinds[t]` (an index into `kind_names`; -1 for O)."""

    prefixes: tuple[int, ...]
    kinds: tuple[int, ...]
    kind_names: tuple[str, ...]

    @classmethod
    def of(cls, tags: Sequence[str]) -> TagScheme:
        """The scheme of tag names "O", "B-PER", "I-PER", ... (types in order of appearance)."""
        if len(set(tags)) != len(tags):
            raise ValueError(f"repeated tags in {list(tags)}")
        prefixes, kinds, kind_names = [], [], []
        for tag in tags:
            prefix, _, kind = tag.partition("-")
            if tag == "O":
                prefixes.append(OUTSIDE)
                kinds.append(-1)
                continue
            if prefix not in PREFIXES or not kind:
                raise ValueError(f"tag {tag!r} is neither O nor B-, I-, E- or S- and a type")
            if kind not in kind_names:
                kind_names.append(kind)
            prefixes.append(PREFIXES[prefix])
            kinds.append(kind_names.index(kind))
        return cls(tuple(prefixes), tuple(kinds), tuple(kind_names))


@dataclasses.dataclass(frozen=True)
class Sentences:
    """A split's sentences: the words of each and a tag id per word."""

    words: Sequence[Sequence[str]]
    tags: Sequence[Sequence[int]]

    def __post_init__(self):
        if len(self.words) != len(self.tags):
            raise ValueError(f"{len(self.words)} sentences but {len(self.tags)} tag sequences")
        for i, (words, tags) in enumerate(zip(self.words, self.tags, strict=True)):
            if len(words) != len(tags):
                raise ValueError(f"sentence {i} has {len(words)} words but {len(tags)} tags")

    def __len__(self) -> int:
        return len(self.words)

    def take(self, indices: np.ndarray) -> Sentences:
        return Sentences([self.words[int(i)] for i in indices],
                         [self.tags[int(i)] for i in indices])


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """Encoded sentences, flattened: sentence `i` is `tokens[starts[i]:starts[i + 1]]` (with
    [CLS] and [SEP]) and `labels` the same slice of the labels (-1 where no tag is read);
    `dropped_tags` tags did not fit in `seq_length`."""

    tokens: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    dropped_tags: int = 0

    def __len__(self) -> int:
        return len(self.starts) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(self.starts[i], self.starts[i + 1])
        return self.tokens[span], self.labels[span]


def encode(tokenizer: WordPiece, sentences: Sentences, seq_length: int) -> Examples:
    """`[CLS] words [SEP]` of each sentence, each word's tag on its first piece; the words that
    do not fit whole in `seq_length` tokens are left out."""
    flat = [word for words in sentences.words for word in words]
    pieces = iter(tokenizer.encode_batch(flat) if flat else [])
    tokens, labels, lengths, dropped = [], [], [], 0
    for tags in sentences.tags:
        ids, row_labels = [tokenizer.cls_id], [PAD_LABEL]
        for position, tag in enumerate(tags):
            word = next(pieces) or [tokenizer.unk_id]
            if len(ids) + len(word) > seq_length - 1:
                dropped += len(tags) - position
                for _ in range(len(tags) - position - 1):
                    next(pieces)
                break
            ids.extend(word)
            row_labels.extend([tag] + [PAD_LABEL] * (len(word) - 1))
        ids.append(tokenizer.sep_id)
        row_labels.append(PAD_LABEL)
        tokens.extend(ids)
        labels.extend(row_labels)
        lengths.append(len(ids))
    return Examples(tokens=np.asarray(tokens, np.int32), labels=np.asarray(labels, np.int32),
                    starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    dropped_tags=dropped)


class TaggedRows(text_pipeline.ExampleRows):
    def label_shape(self) -> tuple[int, ...]:
        return (self.seq_length,)

    def fill(self, batch: Batch, row: int, index: int) -> None:
        ids, labels = self.examples.row(index)
        batch["input_ids"][row, :len(ids)] = ids
        batch["label"][row, :len(labels)] = labels


@dataclasses.dataclass(frozen=True, eq=False)
class TokenClassificationData(text_pipeline.EncodedSplits):
    """A tagging data set (see `EncodedSplits`): sentences as `Examples`, the tag names as
    `class_names`, in tag-id order."""

    row_type: ClassVar[type[text_pipeline.ExampleRows]] = TaggedRows


def tagging_spec(config: ml_collections.ConfigDict, tags: Sequence[str]) -> DataSpec:
    """`vocab_size` WordPiece ids ([PAD] 0) and the tags as classes, without reading anything."""
    text_pipeline.check_text_config(config, files=False)
    TagScheme.of(tags)
    return DataSpec(vocab_size=config.vocab_size, class_names=tuple(tags),
                    tokenizer=TokenizerSpec(config.vocab_size, pad_id=WordPiece.pad_id))


def build_data(config: ml_collections.ConfigDict, *, workdir: str | None, train: Sentences,
               evals: Mapping[str, Sentences], tags: Sequence[str]) -> TokenClassificationData:
    """The data of `config` (after `check_text_config`): the training sentences it asks for,
    the vocabulary (`tokenizer_workdir`'s, or trained on those sentences) and every split
    encoded."""
    train = train.take(text_pipeline.random_subset(config, len(train)))
    tokenizer = wordpiece.for_workdir(
        common.assets_dir(workdir),
        lambda: (" ".join(words) for words in train.words), config.vocab_size,
        source_workdir=text_pipeline.get(config, "tokenizer_workdir"))
    seq_length = text_pipeline.get(config, "seq_length")
    return TokenClassificationData(
        tokenizer=tokenizer, train=encode(tokenizer, train, seq_length),
        eval={name: encode(tokenizer, sentences, seq_length)
              for name, sentences in evals.items()},
        class_names=tuple(tags), vocab_size=config.vocab_size, seq_length=seq_length)
