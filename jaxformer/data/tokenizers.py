"""Tokenizers: characters, SentencePiece BPE and byte-level BPE (GPT-2's).

The kinds share the small `Tokenizer` interface and save to a single file:
`tokenizer.json` for characters, `tokenizer.model` (a SentencePiece model proto)
for BPE, `tokenizer.json` in Hugging Face's `tokenizers` format for byte-level BPE
(a pretrained model's, carried over by `jaxformer import-weights`, or one learned here).
`load_tokenizer` reads any of them back. A BPE model trained with `special_tokens=True`
(for translation) also has padding (id 0), end- and begin-of-sequence ids.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import sentencepiece as spm
import tokenizers as hf_tokenizers
from etils import epath
from tokenizers import decoders, models, pre_tokenizers, trainers

PathLike = str | os.PathLike

CHAR_FILENAME = "tokenizer.json"
BPE_FILENAME = "tokenizer.model"
BYTE_BPE_FILENAME = "tokenizer.json"  # Told apart from the character kind by its contents.
END_OF_TEXT = "<|endoftext|>"
MIN_BYTE_BPE_VOCAB_SIZE = 257  # The bytes and the end of text.

_NUM_BYTE_PIECES = 256
# Ids of the special tokens of a model trained with `special_tokens=True`.
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


@runtime_checkable
class Tokenizer(Protocol):
    """Maps text to token ids in `[0, vocab_size)` and back."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, path: PathLike) -> None: ...


class CharTokenizer:
    """One token per character; the vocabulary is a sorted set of characters."""

    def __init__(self, chars: Iterable[str]):
        chars = sorted(set(chars))
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("a character vocabulary needs one or more single characters")
        self._chars = chars
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Builds the vocabulary from every character that occurs in `text`."""
        return cls(set(text))

    @property
    def chars(self) -> list[str]:
        return list(self._chars)

    @property
    def vocab_size(self) -> int:
        return len(self._chars)

    def encode(self, text: str) -> list[int]:
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.minimum(np.searchsorted(self._codepoints, codepoints), len(self._chars) - 1)
        unknown = self._codepoints[ids] != codepoints
        if unknown.any():
            missing = "".join(sorted({chr(c) for c in codepoints[unknown]}))
            raise ValueError(f"characters not in the vocabulary: {missing!r}")
        return ids.tolist()

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._chars[int(i)] for i in ids)

    def save(self, path: PathLike) -> None:
        spec = {"type": "char", "chars": self._chars}
        epath.Path(path).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: PathLike) -> CharTokenizer:
        return _parse_char_json(_read_bytes(path), path)


class SentencePieceTokenizer:
    """A SentencePiece BPE model that reproduces its input exactly.

    Text is not normalized, whitespace is kept as is, a newline is a token of its
    own, and characters outside the vocabulary fall back to their UTF-8 bytes, so
    `decode(encode(text)) == text` for any text.
    """

    def __init__(self, model_proto: bytes):
        self._proto = bytes(model_proto)
        self._processor = spm.SentencePieceProcessor(model_proto=self._proto)

    @classmethod
    def train(
        cls, text: str | Sequence[str], vocab_size: int, *, max_sentences: int | None = None,
        seed: int = 0, special_tokens: bool = False, extra_symbols: Sequence[str] = (),
    ) -> SentencePieceTokenizer:
        """Trains a BPE model on the lines of `text`; the same input gives the same model.

        Args:
            text: training text, each non-empty line one sentence; or a sequence of
                sentences.
            vocab_size: size of the vocabulary, counting the 256 byte tokens, `<unk>`,
                the newline, the special tokens, the extra symbols and every character of
                `text`.
            max_sentences: if set, train on this many sentences drawn with `seed`.
            seed: seed for drawing the sentences.
            special_tokens: if true, ids 0, 1, 2 and 3 are `<pad>`, `</s>` (end of
                sequence), `<s>` (begin of sequence) and `<unk>`; otherwise `<unk>` is
                id 0 and there are no others.
            extra_symbols: strings that, like the newline, are pieces of their own (ids
                right after the newline's, in order): each encodes to exactly one id, and
                text is split around them wherever they occur.
        """
        extra = [] if isinstance(extra_symbols, str) else list(extra_symbols)
        if (isinstance(extra_symbols, str)
                or not all(isinstance(s, str) and s and "\n" not in s for s in extra)
                or len(set(extra)) != len(extra)):
            raise ValueError("extra_symbols must be a sequence of distinct non-empty strings "
                             f"without newlines, got {extra_symbols!r}")
        lines = text.split("\n") if isinstance(text, str) else text
        sentences = [line for line in lines if line]
        if not sentences:
            raise ValueError("cannot train a tokenizer on empty text")
        if max_sentences is not None and max_sentences < len(sentences):
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(len(sentences), max_sentences, replace=False))
            sentences = [sentences[i] for i in keep]
        chars = set().union(*sentences)
        min_size = min_bpe_vocab_size(len(chars - {"\n"}), special_tokens=special_tokens,
                                      extra_symbols=len(extra))
        if vocab_size < min_size:
            specials = "<unk>, <pad>, </s>, <s>" if special_tokens else "<unk>"
            symbols = f", {len(extra)} extra symbols" if extra else ""
            raise ValueError(
                f"bpe vocab_size {vocab_size} is too small: at least {min_size} are needed "
                f"({_NUM_BYTE_PIECES} byte tokens, {specials}, newline{symbols} and "
                f"{len(chars)} characters)")
        if special_tokens:
            ids = {"pad_id": PAD_ID, "eos_id": EOS_ID, "bos_id": BOS_ID, "unk_id": UNK_ID}
        else:
            ids = {"unk_id": 0, "bos_id": -1, "eos_id": -1, "pad_id": -1}
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                model_type="bpe",
                vocab_size=vocab_size,
                character_coverage=1.0,
                byte_fallback=True,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                split_digits=True,
                user_defined_symbols=["\n", *extra],
                **ids,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                num_threads=1,  # The learned merges depend on the number of threads.
                minloglevel=2,
            )
        except RuntimeError as e:
            raise ValueError(f"cannot train a bpe tokenizer of size {vocab_size}: {e}") from e
        return cls(model.getvalue())

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    @property
    def model_proto(self) -> bytes:
        return self._proto

    @property
    def pad_id(self) -> int | None:
        """Id of padding, or None if the model has none."""
        return _optional_id(self._processor.pad_id())

    @property
    def eos_id(self) -> int | None:
        """Id of end of sequence, or None if the model has none."""
        return _optional_id(self._processor.eos_id())

    @property
    def bos_id(self) -> int | None:
        """Id of begin of sequence, or None if the model has none."""
        return _optional_id(self._processor.bos_id())

    def pieces(self, text: str) -> list[str]:
        """The subword strings that `text` is split into."""
        return self._processor.encode(text, out_type=str)

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode([int(i) for i in ids])

    def save(self, path: PathLike) -> None:
        epath.Path(path).write_bytes(self._proto)

    @classmethod
    def load(cls, path: PathLike) -> SentencePieceTokenizer:
        return _parse_sentencepiece(_read_bytes(path), path)


class ByteLevelBPETokenizer:
    """A Hugging Face `tokenizers` byte-level BPE, as GPT-2's (a pretrained model's, or one
    trained here): text is split into UTF-8 bytes before merging, so any text encodes and
    `decode(encode(text)) == text`.

    Special tokens written in the text (GPT-2's `<|endoftext|>`) encode to their own ids, as
    in `transformers`; nothing is added around the text. A model whose vocabulary is padded
    past the tokenizer's (`vocab_size`) decodes the ids past it to nothing.
    """

    def __init__(self, tokenizer: hf_tokenizers.Tokenizer, vocab_size: int | None = None):
        if not isinstance(tokenizer.model, models.BPE):
            raise ValueError(f"not a BPE model: {type(tokenizer.model).__name__}")
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab_size is not None and vocab_size < size:
            raise ValueError(f"the tokenizer has {size} tokens, more than the {vocab_size} "
                             "asked for")
        self._tokenizer = tokenizer
        self._vocab_size = size if vocab_size is None else vocab_size

    @classmethod
    def from_vocab_merges(cls, vocab: PathLike, merges: PathLike, *,
                          special_tokens: Sequence[str] = (END_OF_TEXT,),
                          add_prefix_space: bool = False) -> ByteLevelBPETokenizer:
        """GPT-2's tokenizer from its `vocab.json` and `merges.txt`; those of
        `special_tokens` that are in the vocabulary match in text as a whole."""
        try:
            tokenizer = hf_tokenizers.Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        except Exception as e:  # tokenizers raises plain Exceptions for malformed files.
            raise ValueError(f"cannot read {vocab} and {merges}: {e}") from e
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        tokenizer.decoder = decoders.ByteLevel()
        known = tokenizer.get_vocab()
        tokenizer.add_special_tokens([t for t in special_tokens if t in known])
        return cls(tokenizer)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> ByteLevelBPETokenizer:
        """GPT-2's kind of tokenizer learned from `text`: the 256 bytes, `<|endoftext|>`
        (id 0) and merges up to `vocab_size` tokens (fewer if the text has no more pairs to
        merge; the ids past them decode to nothing)."""
        if vocab_size < MIN_BYTE_BPE_VOCAB_SIZE:
            raise ValueError(f"a byte-level BPE needs vocab_size >= {MIN_BYTE_BPE_VOCAB_SIZE}, "
                             f"got {vocab_size}")
        tokenizer = hf_tokenizers.Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.train_from_iterator([text], trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        return cls(tokenizer, vocab_size)

    def with_vocab_size(self, vocab_size: int) -> ByteLevelBPETokenizer:
        """The same tokenizer for a model of `vocab_size` ids (at least the tokenizer's)."""
        return type(self)(self._tokenizer, vocab_size)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def token_id(self, token: str) -> int | None:
        """The id of `token` (e.g. "<|endoftext|>"), or None if it is not in the vocabulary."""
        return self._tokenizer.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, path: PathLike) -> None:
        epath.Path(path).write_text(self._tokenizer.to_str(), encoding="utf-8")

    @classmethod
    def load(cls, path: PathLike) -> ByteLevelBPETokenizer:
        return _parse_hf_json(_read_bytes(path), path)


def min_bpe_vocab_size(num_chars: int = 1, *, special_tokens: bool = False,
                       extra_symbols: int = 0) -> int:
    """The smallest BPE vocabulary for text of `num_chars` distinct characters (newline aside):
    the byte tokens, `<unk>`, the newline, the special tokens if any, `extra_symbols` extra
    symbols, and the characters."""
    return _NUM_BYTE_PIECES + 2 + (3 if special_tokens else 0) + extra_symbols + num_chars


def fingerprint(tokenizer: Tokenizer) -> str:
    """A short hash of the tokenizer's saved form: equal fingerprints, equal ids."""
    with tempfile.TemporaryDirectory() as folder:
        path = epath.Path(folder) / "tokenizer"
        tokenizer.save(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_tokenizer(path: PathLike
                   ) -> CharTokenizer | SentencePieceTokenizer | ByteLevelBPETokenizer:
    """Loads a saved tokenizer, telling its kind from the file's contents.

    Args:
        path: a `tokenizer.json` or `tokenizer.model` file, or a directory that holds
            one directly or in `assets/` (an experiment's workdir, say).
    """
    path = epath.Path(path)
    if path.is_dir():
        path = _find_tokenizer_file(path)
    data = _read_bytes(path)
    if data.lstrip().startswith(b"{"):
        return _parse_json(data, path)
    return _parse_sentencepiece(data, path)


def _find_tokenizer_file(directory: epath.Path) -> epath.Path:
    for folder in (directory, directory / "assets"):
        for name in (BPE_FILENAME, CHAR_FILENAME):
            if (folder / name).is_file():
                return folder / name
    raise ValueError(f"no {BPE_FILENAME} or {CHAR_FILENAME} in {directory} or its assets/")


def _read_bytes(path: PathLike) -> bytes:
    try:
        return epath.Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read tokenizer {path}: {e}") from e


def _parse_char_json(data: bytes, path: PathLike) -> CharTokenizer:
    try:
        spec = json.loads(data)
        if spec.get("type") != "char":
            raise ValueError(f"type is {spec.get('type')!r}, not 'char'")
        return CharTokenizer(spec["chars"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed character tokenizer {path}: {e}") from e


def _parse_json(data: bytes, path: PathLike) -> CharTokenizer | ByteLevelBPETokenizer:
    """A `tokenizer.json` of either kind: Hugging Face's has a `model`."""
    try:
        spec = json.loads(data)
    except ValueError as e:
        raise ValueError(f"malformed tokenizer {path}: {e}") from e
    if isinstance(spec, dict) and "model" in spec:
        return _parse_hf_json(data, path)
    return _parse_char_json(data, path)


def _parse_hf_json(data: bytes, path: PathLike) -> ByteLevelBPETokenizer:
    try:
        return ByteLevelBPETokenizer(hf_tokenizers.Tokenizer.from_str(data.decode("utf-8")))
    except Exception as e:  # tokenizers raises plain Exceptions for malformed JSON.
        raise ValueError(f"malformed byte-level BPE tokenizer {path}: {e}") from e


def _optional_id(piece_id: int) -> int | None:
    return None if piece_id < 0 else piece_id


def _parse_sentencepiece(data: bytes, path: PathLike) -> SentencePieceTokenizer:
    try:
        return SentencePieceTokenizer(data)
    except RuntimeError as e:
        raise ValueError(f"malformed SentencePiece model {path}: {e}") from e
