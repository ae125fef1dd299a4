"""The captions' tokenizer: lowercased byte-level BPE (Hugging Face `tokenizers`), as CLIP's,
trained on a data set's training captions and kept in the workdir's assets, or a pretrained
CLIP's own (`clip_bpe`, carried over by `jaxformer import-weights`).

The start and end of text are the vocabulary's `<|startoftext|>` and `<|endoftext|>`, padding
its `<pad>` (0 when it has none, as OpenAI's CLIP pads); a trained vocabulary has them at ids
0, 1, 2. A caption becomes the row `[start] tokens [end]`, its tokens cut so that the
end-of-text token always fits, then padding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tokenizers
from etils import epath
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

from jaxformer.data import common
from jaxformer.data.wordpiece import read_hf_tokenizer

PAD_ID, BOS_ID, EOT_ID = 0, 1, 2  # The ids of a trained vocabulary's special tokens.
PAD_TOKEN, BOS_TOKEN, EOT_TOKEN = SPECIAL_TOKENS = ("<pad>", "<|startoftext|>", "<|endoftext|>")
ASSET_NAME = "caption_bpe.json"
MIN_VOCAB_SIZE = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS) + 1
# OpenAI CLIP's pre-tokenisation (as Hugging Face's CLIPTokenizer): words, single digits and
# runs of other symbols; BPE pieces end a word with "</w>".
CLIP_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                r"|[^\s\p{L}\p{N}]+")
CLIP_WORD_SUFFIX = "</w>"


class CaptionTokenizer:
    """Lowercased byte-level BPE (as CLIP's), with start and end of text (and padding) found
    in its vocabulary by name.

    A trained vocabulary's special tokens are plain entries that no text encodes to (text that
    spells "<|endoftext|>" is cut into its pieces), so a caption cannot end a row early; a
    pretrained CLIP's encode as its own tokenizer encodes them.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        missing = [name for name in (BOS_TOKEN, EOT_TOKEN) if name not in vocab]
        if missing:
            raise ValueError(f"the vocabulary has no {' or '.join(missing)} token")
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError("the vocabulary ids are not 0..vocab_size-1")
        self._tokenizer = tokenizer
        self.bos_id, self.eot_id = vocab[BOS_TOKEN], vocab[EOT_TOKEN]
        self.pad_id = vocab.get(PAD_TOKEN, 0)
        self.eos_id = self.eot_id  # The name other tokenizers give it.
        self.pad_is_token = PAD_TOKEN in vocab  # A trained vocabulary's; CLIP's pads with 0.
        # Left out of decoded text: the start, and padding when it is a token of its own.
        self._hidden = {self.bos_id} | ({self.pad_id} if self.pad_is_token else set())
        # CLIP's BPE ends a word's last piece with "</w>"; a trained one has no suffix.
        self.word_suffix = getattr(tokenizer.model, "end_of_word_suffix", None) or ""

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
            if i == self.eot_id:
                break
            if i not in self._hidden:
                kept.append(i)
        text = self._tokenizer.decode(kept)
        if self.word_suffix:
            text = text.replace(self.word_suffix, " ")
        return text.strip()

    def to_json(self) -> str:
        """The `tokenizers` JSON of this tokenizer (`tokenizer.json`)."""
        return self._tokenizer.to_str()

    def save(self, path: str | os.PathLike) -> None:
        epath.Path(path).write_text(self._tokenizer.to_str(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CaptionTokenizer:
        return cls(read_hf_tokenizer(path, models.BPE, "caption tokenizer"))

    @classmethod
    def from_json(cls, text: str) -> CaptionTokenizer:
        """A `tokenizers` JSON (a Hugging Face `tokenizer.json` of a BPE model), without the
        padding and truncation it may be saved with (rows are laid out by `token_rows`)."""
        try:
            spec = json.loads(text)
            spec.update(padding=None, truncation=None)
            tokenizer = tokenizers.Tokenizer.from_str(json.dumps(spec))
        except Exception as e:  # tokenizers raises plain Exceptions for malformed JSON.
            raise ValueError(f"not a tokenizers JSON: {e}") from e
        if not isinstance(tokenizer.model, models.BPE):
            raise ValueError(f"a {type(tokenizer.model).__name__} model, not BPE")
        return cls(tokenizer)


def _byte_level(model: models.Model) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def clip_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """OpenAI CLIP's words (`CLIP_PATTERN`) as byte-level strings."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])


def clip_bpe(vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> CaptionTokenizer:
    """OpenAI CLIP's tokenizer of a vocabulary and its merges (`vocab.json`, `merges.txt`),
    as Hugging Face's `CLIPTokenizer` builds it: NFC, whitespace runs as one space,
    lowercase, CLIP's word pattern, byte-level pieces ending words with "</w>"."""
    tokenizer = tokenizers.Tokenizer(models.BPE(
        vocab=dict(vocab), merges=[tuple(m) for m in merges], continuing_subword_prefix="",
        end_of_word_suffix=CLIP_WORD_SUFFIX, fuse_unk=False, unk_token=EOT_TOKEN))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = clip_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([BOS_TOKEN, EOT_TOKEN])
    return CaptionTokenizer(tokenizer)


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
    that the end fits, then padding."""
    rows = np.full((len(texts), context_length), tokenizer.pad_id, np.int32)
    for row, ids in zip(rows, tokenizer.encode_batch(texts) if texts else [], strict=True):
        ids = [tokenizer.bos_id, *ids[:context_length - 2], tokenizer.eot_id]
        row[:len(ids)] = ids
    return rows
