"""A WordPiece vocabulary, as BERT's, on Hugging Face `tokenizers`.

Text is normalised as BERT's: control characters dropped, Chinese characters spaced, accents
stripped and lowercased (a vocabulary imported from a cased BERT keeps case and accents); it
is split at whitespace and punctuation, and each word into the longest vocabulary pieces from
its start, pieces after the first prefixed with "##". A word with no such split is `[UNK]`.
A vocabulary trained here has the special tokens at ids 0-4 (`SPECIAL_TOKENS`); any other
(e.g. Google's BERT vocabularies: [UNK], [CLS], [SEP], [MASK] at 100-103) has them where its
vocabulary puts them, except [PAD], which is always 0, the id the models mask.
The model saves to one JSON file (the `tokenizers` format), `ASSET_NAME` in a workdir's assets.
"""

from __future__ import annotations

import collections
import heapq
import os
import re
from collections.abc import Callable, Iterable

import numpy as np
import tokenizers
from etils import epath
from tokenizers import decoders, models, normalizers, pre_tokenizers

from jaxformer.data import common

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # Ids 0-4 when trained here.
ASSET_NAME = "wordpiece.json"
SUBWORD_PREFIX = "##"
_MAX_WORD_CHARS = 100
_MIN_PAIR_COUNT = 2
TRAINING_VERSION = 1  # Names the vocabularies `train` makes: bump it when they change.


class WordPiece:
    """Maps text to WordPiece ids and back.

    An instance has the ids of its vocabulary's `[PAD]` (always 0), `[UNK]`, `[CLS]`, `[SEP]`
    and `[MASK]`; the class attributes are those of a vocabulary trained here (0-4), and
    `WordPiece.pad_id` is every vocabulary's.
    """

    pad_id = 0
    unk_id = 1
    cls_id = 2
    sep_id = 3
    mask_id = 4

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        missing = [name for name in SPECIAL_TOKENS if name not in vocab]
        if missing:
            raise ValueError(f"the vocabulary has no {', '.join(missing)}")
        if vocab["[PAD]"] != WordPiece.pad_id:
            raise ValueError(f"[PAD] has id {vocab['[PAD]']}; it must be {WordPiece.pad_id}, "
                             "the id the models mask")
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError("the vocabulary ids are not 0..vocab_size-1")
        self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[name] for name in SPECIAL_TOKENS[1:])
        self._tokenizer = tokenizer
        self._tokens = [""] * len(vocab)
        for name, index in vocab.items():
            self._tokens[index] = name
        self._starts = np.array([not t.startswith(SUBWORD_PREFIX) for t in self._tokens])

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The ids of `SPECIAL_TOKENS`, in that order."""
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token, by id."""
        return tuple(self._tokens)

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, normalised and without special tokens added."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of each of `texts`."""
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode_batch_with_offsets(self, texts: list[str]
                                  ) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """The ids of each of `texts` and, for each id, the `[start, end)` characters of the
        text it covers."""
        return [(e.ids, e.offsets)
                for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`, "##" pieces joined to the word before them."""
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def token(self, id: int) -> str:
        if not 0 <= int(id) < len(self._tokens):
            raise ValueError(f"id {id} is not in [0, {len(self._tokens)})")
        return self._tokens[int(id)]

    def id(self, token: str) -> int:
        index = self._tokenizer.token_to_id(token)
        if index is None:
            raise ValueError(f"{token!r} is not in the vocabulary")
        return index

    def word_starts(self, ids) -> np.ndarray:
        """True where a token starts a word (not a "##" piece); special tokens count as starts."""
        return self._starts[np.asarray(ids, dtype=np.int64)]

    def save(self, path: str | os.PathLike) -> None:
        epath.Path(path).write_text(self._tokenizer.to_str(), encoding="utf-8")

    def to_str(self) -> str:
        """The `tokenizers` JSON of the tokenizer (what `save` writes)."""
        return self._tokenizer.to_str()

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordPiece:
        return cls(read_hf_tokenizer(path, models.WordPiece, "WordPiece model"))

    @classmethod
    def from_tokens(cls, tokens: Iterable[str], *, lowercase: bool = True,
                    strip_accents: bool | None = None, chinese_chars: bool = True) -> WordPiece:
        """BERT's tokenizer over `tokens` (id = position, as the lines of a `vocab.txt`), with
        the options of the reference tokenizer: `lowercase`, `strip_accents` (None: as
        `lowercase`) and `chinese_chars` (space Chinese characters). As there, the special
        tokens written in a text are those tokens (a vocabulary trained here splits them)."""
        vocab: dict[str, int] = {}
        for token in tokens:
            if token in vocab:
                raise ValueError(f"the token {token!r} is in the vocabulary twice")
            vocab[token] = len(vocab)
        tokenizer = _bert_tokenizer(vocab, lowercase=lowercase, strip_accents=strip_accents,
                                    chinese_chars=chinese_chars)
        tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                                      for t in SPECIAL_TOKENS if t in vocab])
        return cls(tokenizer)


def read_hf_tokenizer(path: str | os.PathLike, model_type: type,
                      description: str) -> tokenizers.Tokenizer:
    """A Hugging Face `tokenizers` JSON file whose model is a `model_type`; anything else is a
    ValueError naming `description`."""
    try:
        tokenizer = tokenizers.Tokenizer.from_str(epath.Path(path).read_text("utf-8"))
    except Exception as e:  # tokenizers raises plain Exceptions for malformed JSON.
        raise ValueError(f"cannot read {description} {path}: {e}") from e
    if not isinstance(tokenizer.model, model_type):
        raise ValueError(f"{path} is not a {model_type.__name__} model")
    return tokenizer


def _bert_tokenizer(vocab: dict[str, int] | None = None, *, lowercase: bool = True,
                    strip_accents: bool | None = True,
                    chinese_chars: bool = True) -> tokenizers.Tokenizer:
    """A tokenizer with BERT's normaliser, pre-tokeniser and decoder around a WordPiece model
    of `vocab` (None: empty, for training)."""
    tokenizer = tokenizers.Tokenizer(models.WordPiece(
        vocab, unk_token="[UNK]", continuing_subword_prefix=SUBWORD_PREFIX,
        max_input_chars_per_word=_MAX_WORD_CHARS))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese_chars, strip_accents=strip_accents,
        lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX, cleanup=True)
    return tokenizer


def train(texts: Iterable[str], vocab_size: int) -> WordPiece:
    """Trains a vocabulary of at most `vocab_size` tokens on `texts`, as the `tokenizers`
    WordPiece trainer does (BPE merges of the words' characters, "##" marking pieces inside
    a word, pairs seen at least twice) but with ties broken by the pieces' text, so that the
    same texts give the same vocabulary (the trainer breaks them in hash order)."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    counts = _word_counts(texts)
    if not counts:
        raise ValueError("cannot train a WordPiece vocabulary on empty text")
    # The special tokens stay plain vocabulary entries, so text never encodes to them:
    # "[MASK]" in text is "[", "mask", "]".
    tokens = list(SPECIAL_TOKENS) + _learn(counts, vocab_size - len(SPECIAL_TOKENS))
    return WordPiece(_bert_tokenizer({t: i for i, t in enumerate(tokens)}))


def _word_counts(texts: Iterable[str], chunk_chars: int = 1 << 20
                 ) -> collections.Counter[str]:
    """How often each word of `texts`, normalised and pre-tokenised as BERT's tokenizer does,
    occurs (words over `_MAX_WORD_CHARS` characters left out).

    Both steps act on each character alone, so they run over chunks of texts joined by
    spaces: an ASCII text is normalised by a table of what the normaliser makes of each
    ASCII character (any other text by the normaliser), and a chunk is split by a regular
    expression over the characters that the pre-tokeniser finds to be white space or
    punctuation (the same words as `pre_tokenize_str`, without a Python object per word).
    """
    bert = _bert_tokenizer()
    normalize, pre_tokenize = bert.normalizer.normalize_str, bert.pre_tokenizer.pre_tokenize_str
    ascii_table = {c: normalize(chr(c)) for c in range(128)}
    separators, punctuation, seen = {" "}, set(), {" "}
    counts: collections.Counter[str] = collections.Counter()
    chunk: list[str] = []
    size = 0

    def count_chunk():
        text = " ".join(chunk)
        for c in set(text) - seen:
            pieces = len(pre_tokenize("a" + c + "a"))  # 1: part of a word.
            (separators if pieces == 2 else punctuation if pieces == 3 else seen).add(c)
        seen.update(separators, punctuation)
        split = "".join(map(re.escape, sorted(separators | punctuation)))
        isolated = "".join(map(re.escape, sorted(punctuation)))
        words = re.findall(f"[^{split}]+|[{isolated}]" if isolated else f"[^{split}]+", text)
        counts.update(words)
        chunk.clear()

    for text in texts:
        chunk.append(text.translate(ascii_table) if text.isascii() else normalize(text))
        size += len(text)
        if size >= chunk_chars:
            count_chunk()
            size = 0
    if chunk:
        count_chunk()
    for word in [w for w in counts if len(w) > _MAX_WORD_CHARS]:
        del counts[word]
    return counts


def _learn(counts: collections.Counter[str], size: int) -> list[str]:
    """Up to `size` pieces: the characters (first in a word, and "##" inside one) by the
    count of the words they are in, then merges of the most frequent adjacent pair, ties to
    the smallest pair."""
    words = sorted(counts)
    freq = [counts[w] for w in words]
    symbols = [[w[0]] + [SUBWORD_PREFIX + c for c in w[1:]] for w in words]
    alphabet: collections.Counter[str] = collections.Counter()
    for word, n in zip(symbols, freq, strict=True):
        alphabet.update({s: n for s in word})
    vocab = sorted(alphabet, key=lambda s: (-alphabet[s], s))[:size]
    known = set(vocab)
    pairs: collections.Counter[tuple[str, str]] = collections.Counter()
    where: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    for i, word in enumerate(symbols):
        for pair in zip(word, word[1:]):
            pairs[pair] += freq[i]
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    while heap and len(vocab) < size:
        count, pair = heapq.heappop(heap)
        if pairs.get(pair, 0) != -count:
            continue  # Stale: the pair's count changed after this entry.
        if -count < _MIN_PAIR_COUNT:
            break
        if not (pair[0] in known and pair[1] in known):
            del pairs[pair]
            continue  # A character left out of the alphabet.
        merged = pair[0] + pair[1].removeprefix(SUBWORD_PREFIX)
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        changes: collections.Counter[tuple[str, str]] = collections.Counter()
        for i in where.pop(pair):
            symbols[i] = _merge(symbols[i], pair, merged, freq[i], changes, where, i)
        del pairs[pair]  # Every occurrence is merged.
        for p, change in changes.items():
            if change and p != pair:
                pairs[p] += change
                if pairs[p] > 0:
                    heapq.heappush(heap, (-pairs[p], p))
    return vocab


def _merge(word: list[str], pair: tuple[str, str], merged: str, count: int,
           changes: collections.Counter, where: dict[tuple[str, str], set[int]],
           index: int) -> list[str]:
    """`word` with each occurrence of `pair` (left to right) made `merged`; adds to
    `changes` how the counts of the pairs around them change (`count` per occurrence) and
    `index` to the `where` of each pair it creates."""
    first, second = pair
    out: list[str] = []
    i, end = 0, len(word)
    while i < end:
        if i + 1 < end and word[i] == first and word[i + 1] == second:
            if out:
                changes[out[-1], first] -= count
                changes[out[-1], merged] += count
                where[out[-1], merged].add(index)
            out.append(merged)
            i += 2
            if i < end:
                changes[second, word[i]] -= count
                changes[merged, word[i]] += count
                where[merged, word[i]].add(index)
        else:
            out.append(word[i])
            i += 1
    return out


def saved_vocabulary(workdir: str) -> epath.Path:
    """Where a run in `workdir` keeps its vocabulary."""
    return epath.Path(os.path.expanduser(workdir)) / "assets" / ASSET_NAME


def check_source_workdir(workdir: str, key: str = "data.tokenizer_workdir") -> None:
    """Raises ValueError unless `workdir` ("" for none) holds a saved vocabulary."""
    if not isinstance(workdir, str):
        raise ValueError(f"{key} must be a workdir path or '', got {workdir!r}")
    if workdir and not saved_vocabulary(workdir).exists():
        raise ValueError(f"{key} {workdir!r} has no saved vocabulary (assets/{ASSET_NAME}); "
                         "pretrain there first")


def for_workdir(assets_dir: str | None, texts: Callable[[], Iterable[str]],
                vocab_size: int, *, source_workdir: str = "",
                cache_dir: epath.Path | None = None) -> WordPiece:
    """This run's vocabulary, kept as `ASSET_NAME` in `assets_dir` (None: in memory only).

    With `source_workdir` (a pretraining run), it is that run's vocabulary, copied here;
    otherwise the one saved here, or one trained on `texts()` and saved (atomically). With
    `cache_dir`, a vocabulary trained on the same texts at the same size is kept there too,
    so that the next run on them copies it instead of training.
    """
    if source_workdir:
        check_source_workdir(source_workdir)
        source = saved_vocabulary(source_workdir)
        wordpiece = WordPiece.load(source)
        if assets_dir is not None:
            copy = epath.Path(assets_dir) / ASSET_NAME
            if not copy.exists():
                common.save_atomically(copy, lambda p: p.write_bytes(source.read_bytes()))
            elif copy.read_bytes() != source.read_bytes():
                raise ValueError(f"{copy} is not the vocabulary of data.tokenizer_workdir "
                                 f"{source}; use another workdir")
        return wordpiece
    path = None if assets_dir is None else epath.Path(assets_dir) / ASSET_NAME
    if path is not None and path.exists():
        return WordPiece.load(path)
    wordpiece = _trained(list(texts()), vocab_size, cache_dir)
    if path is not None:
        common.save_atomically(path, wordpiece.save)
    return wordpiece


def _trained(texts: list[str], vocab_size: int, cache_dir: epath.Path | None) -> WordPiece:
    """`train(texts, vocab_size)`, through a cache in `cache_dir` keyed by the texts, the
    size and `TRAINING_VERSION`."""
    if cache_dir is None:
        return train(texts, vocab_size)
    key = common.digest([f"{TRAINING_VERSION} {vocab_size}", *texts])
    return common.cached(cache_dir / f"wordpiece-{vocab_size}-{key}.json",
                         lambda: train(texts, vocab_size), load=WordPiece.load,
                         save=WordPiece.save)
