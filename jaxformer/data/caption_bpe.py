"""The captions' tokenizer: lowercased byte-level BPE (Hugging Face `tokenizers`), as CLIP's,
trained on a data set's training captions and kept in the workdir's assets.

Ids 0, 1, 2 are padding, start and end of text; a caption becomes the row
`[start] tokens [end]`, its tokens cut so that the end-of-text token always fits, then zeros.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tokenizers
from etils import epath
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from jaxformer.data import common
from jaxformer.data.wordpiece import read_hf_tokenizer

PAD_ID, BOS_ID, EOT_ID = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<|startoftext|>", "<|endoftext|>")  # ids 0, 1, 2
ASSET_NAME = "caption_bpe.json"
MIN_VOCAB_SIZE = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS) + 1


class CaptionTokenizer:
    """Lowercased byte-level BPE (as CLIP's); ids 0, 1, 2 are padding, start and end of text.

    The special tokens are plain vocabulary entries that no text encodes to (text that spells
    "<|endoftext|>" is cut into its pieces), so a caption cannot end a row early.
    """

    pad_id, bos_id, eot_id = PAD_ID, BOS_ID, EOT_ID
    eos_id = EOT_ID  # The name other tokenizers give it.

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        for index, name in enumerate(SPECIAL_TOKENS):
            if vocab.get(name) != index:
                raise ValueError(f"{name} has id {vocab.get(name)}, expected {index}")
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError("the vocabulary ids are not 0..vocab_size-1")
        self._tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> CaptionTokenizer:
        """A vocabulary of exactly `vocab_size` tokens learned from `texts` (the same texts
        give the same one); ValueError when the texts support fewer merges."""
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE}, got {vocab_size}")
        texts = [text for text in texts if text]
        if not texts:
            raise ValueError("cannot train a tokenizer on no text")
        tokenizer = _byte_level(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(texts, trainer)
        if tokenizer.get_vocab_size() < vocab_size:
            raise ValueError(f"the training captions support at most "
                             f"{tokenizer.get_vocab_size()} BPE tokens; lower data.vocab_size "
                             f"(asked for {vocab_size})")
        spec = json.loads(tokenizer.to_str())
        spec["added_tokens"] = []  # Keep the special tokens out of the text's matching.
        return cls(tokenizers.Tokenizer.from_str(json.dumps(spec)))

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """The BPE ids of `text`, without start or end."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts),
                                                            add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids` up to the first end of text, padding and start left out."""
        kept = []
        for i in map(int, ids):
            if i == EOT_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                kept.append(i)
        return self._tokenizer.decode(kept).strip()

    def save(self, path: str | os.PathLike) -> None:
        epath.Path(path).write_text(self._tokenizer.to_str(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CaptionTokenizer:
        return cls(read_hf_tokenizer(path, models.BPE, "caption tokenizer"))


def _byte_level(model: models.Model) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def tokenizer_for_workdir(assets_dir: str | None, texts: Callable[[], Iterable[str]],
                          vocab_size: int) -> CaptionTokenizer:
    """The tokenizer saved as `ASSET_NAME` in `assets_dir`, or one trained on `texts()` and
    saved there (atomically; None: kept in memory). A saved one of another size is an
    error."""
    path = epath.Path(assets_dir) / ASSET_NAME if assets_dir is not None else None
    if path is not None and path.exists():
        tokenizer = CaptionTokenizer.load(path)
        if tokenizer.vocab_size != vocab_size:
            raise ValueError(f"{path} has {tokenizer.vocab_size} tokens, but data.vocab_size "
                             f"is {vocab_size}; use another workdir")
        return tokenizer
    tokenizer = CaptionTokenizer.train(texts(), vocab_size)
    if path is not None:
        common.save_atomically(path, tokenizer.save)
    return tokenizer


def token_rows(tokenizer: CaptionTokenizer, texts: Sequence[str],
               context_length: int) -> np.ndarray:
    """int32 `[len(texts), context_length]`: `[start] ids [end]` of each text, its ids cut so
    that the end fits, then zeros."""
    rows = np.zeros((len(texts), context_length), np.int32)
    for row, ids in zip(rows, tokenizer.encode_batch(texts) if texts else [], strict=True):
        ids = [BOS_ID, *ids[:context_length - 2], EOT_ID]
        row[:len(ids)] = ids
    return rows
