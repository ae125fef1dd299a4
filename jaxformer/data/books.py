"""Books for BERT pretraining: masked-LM and next-sentence examples from whole documents.

The embedded corpus (`source = "embedded"`; see assets/books/PROVENANCE.md) has 1,496
documents with their sentences in order: Shakespeare's 38 plays (the embedded Shakespeare
corpus cut by `assets/books/plays.tsv`; a speech is a paragraph), the 269 chapters of Jane
Austen's six novels (`assets/books/austen.tsv.xz`) and the 1,189 chapters of the King James
Bible (the English side of the embedded Bible corpus; a verse is a paragraph). Paragraphs
are cut into sentences by `split_sentences`. Every `HELD_OUT_EVERY`-th document in that
order is held out for evaluation (`"validation"`), the others are for training.

With `source` a tfds name (`"wikipedia/20230601.en"`, or any data set prepared as
array_record whose records have a `text` feature, one document each, with paragraphs on
separate lines), the first `max_documents` records of its train split are the documents.

A WordPiece vocabulary of `vocab_size` is trained on the training documents and kept in the
workdir's assets (or is there already: a run's, or one imported with its weights); the
documents are encoded when first read. Both are cached in the data dir (`CACHE_FOLDER`), by
the digests of what they are made from, so that the next run on the same text reuses them.
Examples and batches are made by `bert_pretraining_pipeline`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import lzma
import pathlib
import re
from collections.abc import Iterable

import ml_collections
from etils import epath

from jaxformer.data import bible_enes, common, image_pipeline, shakespeare, tokenizers, wordpiece
from jaxformer.data.bert_pretraining_pipeline import (
    DeferredDocuments,
    EncodedDocuments,
    PretrainingData,
)
from jaxformer.data.common import DataSpec, TokenizerSpec

ASSETS = pathlib.Path(__file__).parent / "assets" / "books"
AUSTEN_PATH = ASSETS / "austen.tsv.xz"
AUSTEN_SHA256 = "ad2b8c28e121831b3e4441d8165eeedf27bfdeefb76024f218bc110413f006f1"
PLAYS_PATH = ASSETS / "plays.tsv"
HELD_OUT_EVERY = 64
MAX_SEQ_LENGTH = 512
CACHE_FOLDER = "books"  # In the data dir: trained vocabularies and encoded documents.
DEFAULTS = {"source": "embedded", "seq_length": 128, "max_predictions": 20,
            "whole_word_masking": False, "next_sentence": True, "eval_examples": 2048,
            "max_documents": 100_000, "data_dir": "", "tokenizer_workdir": ""}


@dataclasses.dataclass(frozen=True)
class Document:
    """A play, a chapter or an article: its paragraphs, in order."""

    title: str
    paragraphs: tuple[str, ...]


# --- Sentences ---------------------------------------------------------------------------

# Words whose "." does not end a sentence (compared lowercased, without the ".").
ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr st sr jr col capt gen lt sgt rev hon prof esq co ch chap vol viz "
    "etc ibid cf vs no fig ed i.e e.g a.m p.m".split())
# A sentence ends at ".", "!" or "?" (with any closing quotes or brackets after it) followed
# by space and then an upper-case letter or digit, maybe after opening quotes or brackets.
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[_]*[A-Z0-9])")
_WORD_BEFORE = re.compile(r"([\w.]+)\.$")


# Part of the encoded documents' cache key: change it with any rule of `split_sentences`.
SENTENCE_RULES_VERSION = 1


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of `paragraph`, by rule: a stop, then space and a capital; not after an
    abbreviation ("Mr.", "St.") or an initial ("J. Smith")."""
    sentences, start = [], 0
    for match in _END.finditer(paragraph):
        stop = match.group().rstrip()
        if stop.endswith(".") and stop.count(".") == 1 and not stop.strip(".\"')]\u201d\u2019"):
            word = _WORD_BEFORE.search(paragraph, 0, match.start() + 1)
            if word and (word.group(1).lower() in ABBREVIATIONS or len(word.group(1)) == 1):
                continue
        sentences.append(paragraph[start:match.start() + len(stop)].strip())
        start = match.end()
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


# --- The embedded corpus -----------------------------------------------------------------

def shakespeare_documents() -> list[Document]:
    """Each play of the Shakespeare corpus, a speech (its lines joined, speaker left out) a
    paragraph."""
    text = shakespeare.read_corpus()
    documents = []
    for row in PLAYS_PATH.read_text("utf-8").splitlines()[1:]:
        title, start, count = row.split("\t")
        play = text[int(start):int(start) + int(count)]
        speeches = [" ".join(s.split("\n")[1:]) for s in play.split("\n\n")]
        documents.append(Document(title, tuple(s for s in speeches if s)))
    return documents


def austen_documents() -> list[Document]:
    """Each chapter of Austen's novels, checked against the recorded sha256."""
    data = lzma.decompress(AUSTEN_PATH.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != AUSTEN_SHA256:
        raise ValueError(f"{AUSTEN_PATH} holds text with sha256 {digest}, expected "
                         f"{AUSTEN_SHA256}")
    chapters: dict[tuple[str, str], list[str]] = {}
    for row in data.decode("utf-8").splitlines()[1:]:
        book, chapter, paragraph = row.split("\t")
        chapters.setdefault((book, chapter), []).append(paragraph)
    return [Document(f"{book} {chapter}", tuple(p)) for (book, chapter), p in chapters.items()]


def bible_documents() -> list[Document]:
    """Each chapter of the King James Bible, a verse a paragraph."""
    chapters: dict[tuple[str, int], list[str]] = {}
    for verse in bible_enes.read_corpus():
        chapters.setdefault((verse.book, verse.chapter), []).append(verse.en)
    return [Document(f"{book} {chapter}", tuple(v)) for (book, chapter), v in chapters.items()]


def embedded_documents() -> list[Document]:
    return shakespeare_documents() + austen_documents() + bible_documents()


def tfds_documents(name: str, *, data_dir: str, max_documents: int) -> list[Document]:
    """The first `max_documents` records of the train split of tfds data set `name`, each
    record's `text` a document, its non-empty lines the paragraphs."""
    if name.split("/")[0] == "wikipedia":
        import tensorflow_datasets.text.wikipedia  # noqa: F401  (registers the builder)
    _, (source,) = image_pipeline.tfds_sources(name, data_dir=data_dir, splits=["train"])
    documents = []
    for i in range(min(len(source), max_documents)):
        text = source[i]["text"]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        documents.append(Document(f"{name} {i}",
                                  tuple(p.strip() for p in text.split("\n") if p.strip())))
    return documents


def split_documents(documents: list[Document]) -> dict[str, list[Document]]:
    """"train" and "validation" (every `HELD_OUT_EVERY`-th document, from the middle one)."""
    held_out = [i % HELD_OUT_EVERY == HELD_OUT_EVERY // 2 for i in range(len(documents))]
    return {"train": [d for d, h in zip(documents, held_out, strict=True) if not h],
            "validation": [d for d, h in zip(documents, held_out, strict=True) if h]}


def encode(tokenizer: wordpiece.WordPiece, documents: Iterable[Document],
           cache_dir: epath.Path | None = None) -> EncodedDocuments:
    """The documents' sentences as token ids, kept in `cache_dir` (if given) under the
    tokenizer's digest and that of the paragraphs and the sentence rules, so that a cached
    corpus is neither split nor encoded again."""
    documents = list(documents)

    def make() -> EncodedDocuments:
        sentences = [[s for p in d.paragraphs for s in split_sentences(p)] for d in documents]
        flat = tokenizer.encode_batch([s for doc in sentences for s in doc])
        ids, start = [], 0
        for doc in sentences:
            ids.append(flat[start:start + len(doc)])
            start += len(doc)
        return EncodedDocuments.from_ids(ids)

    path = None
    if cache_dir is not None:  # A paragraph is never empty: "" ends a document.
        key = common.digest([f"sentence rules {SENTENCE_RULES_VERSION}", *(
            p for doc in documents for p in [*doc.paragraphs, ""])])
        path = cache_dir / "encoded" / tokenizers.fingerprint(tokenizer) / f"{key}.npz"
    return common.cached(path, make, save=EncodedDocuments.save, load=functools.partial(
        EncodedDocuments.load, vocab_size=tokenizer.vocab_size))


# --- The data module ---------------------------------------------------------------------

def _get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def check_config(config: ml_collections.ConfigDict, *, files: bool = True) -> None:
    """Raises ValueError for settings `build` would reject, before anything is written (with
    `files`, also a missing corpus, data dir or `tokenizer_workdir` vocabulary)."""
    seq_length = common.require_int(config, "seq_length", minimum=8,
                                    default=DEFAULTS["seq_length"])
    if seq_length > MAX_SEQ_LENGTH:
        raise ValueError(f"data.seq_length must be at most {MAX_SEQ_LENGTH}, got {seq_length}")
    common.require_int(config, "vocab_size", minimum=len(wordpiece.SPECIAL_TOKENS) + 1)
    common.require_int(config, "max_predictions", minimum=1,
                       default=DEFAULTS["max_predictions"])
    common.require_int(config, "eval_examples", minimum=1, default=DEFAULTS["eval_examples"])
    common.require_int(config, "max_documents", minimum=2, default=DEFAULTS["max_documents"])
    for key in ("whole_word_masking", "next_sentence"):
        if not isinstance(_get(config, key), bool):
            raise ValueError(f"data.{key} must be true or false, got {_get(config, key)!r}")
    source = _get(config, "source")
    if not isinstance(source, str) or not source:
        raise ValueError(f"data.source must be 'embedded' or a tfds name, got {source!r}")
    if not files:
        return
    wordpiece.check_source_workdir(_get(config, "tokenizer_workdir"))
    if source == "embedded":
        for path in (AUSTEN_PATH, PLAYS_PATH, shakespeare.CORPUS_PATH, bible_enes.CORPUS_PATH):
            if not path.is_file():
                raise ValueError(f"the embedded corpus file {path} is missing; reinstall "
                                 "jaxformer")
    else:
        common.check_data_dir(_get(config, "data_dir"), default_must_exist=True)


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """`vocab_size` WordPiece tokens, [PAD] id 0, without reading anything."""
    check_config(config, files=False)
    return DataSpec(vocab_size=config.vocab_size,
                    tokenizer=TokenizerSpec(config.vocab_size, pad_id=wordpiece.WordPiece.pad_id))


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> PretrainingData:
    """The documents of `config.source` as BERT pretraining data.

    Args:
        config: the `data` part of the experiment config: `vocab_size`, `seq_length`
            (default 128, at most 512), `max_predictions` (20), `whole_word_masking` (false),
            `next_sentence` (true: half the pairs are NotNext; false: every pair is
            consecutive text), `eval_examples` (2048, the fixed held-out set), `source`
            ("embedded" or a tfds name), `data_dir` (the tfds source's and the cache's: "" is
            $TFDS_DATA_DIR or ~/tensorflow_datasets), for tfds `max_documents` (100,000),
            and `tokenizer_workdir` (a run whose vocabulary to reuse, e.g. phase 1 of a
            two-phase recipe).
        workdir: the experiment's directory; the WordPiece vocabulary is kept in its
            `assets/` and reused from there. None keeps it in memory only.
    """
    check_config(config)
    source = _get(config, "source")
    if source == "embedded":
        documents = embedded_documents()
    else:
        documents = tfds_documents(source, data_dir=_get(config, "data_dir"),
                                   max_documents=_get(config, "max_documents"))
    splits = split_documents(documents)
    if len(splits["validation"]) < 2:
        raise ValueError(f"{source} has {len(documents)} documents, too few to hold out 2 "
                         f"(every {HELD_OUT_EVERY}th)")
    cache_dir = epath.Path(common.default_data_dir(_get(config, "data_dir"))) / CACHE_FOLDER
    tokenizer = wordpiece.for_workdir(
        common.assets_dir(workdir), lambda: (p for d in splits["train"] for p in d.paragraphs),
        config.vocab_size, source_workdir=_get(config, "tokenizer_workdir"),
        cache_dir=cache_dir)
    return PretrainingData(
        tokenizer=tokenizer,
        train_documents=DeferredDocuments(lambda: encode(tokenizer, splits["train"], cache_dir)),
        eval_documents=DeferredDocuments(
            lambda: encode(tokenizer, splits["validation"], cache_dir)),
        vocab_size=config.vocab_size,
        seq_length=_get(config, "seq_length"), max_predictions=_get(config, "max_predictions"),
        whole_word_masking=_get(config, "whole_word_masking"),
        next_sentence=_get(config, "next_sentence"), eval_examples=_get(config, "eval_examples"))
