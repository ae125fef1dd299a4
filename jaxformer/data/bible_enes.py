"""The Bible in English (King James) and Spanish (Reina-Valera 1909), verse by verse.

The corpus ships with the package (`assets/bible_enes/bible_enes.tsv.xz`, public
domain; see PROVENANCE.md there): 31,084 verses that are non-empty in both
translations. Whole books are held out, so no verse is in two splits:

    validation  Acts, Ecclesiastes, James     1,006 + 222 + 108 = 1,336 pairs
    test        John, Proverbs, Romans         879 + 915 + 433 = 2,227 pairs
    train       the other 60 books                         27,521 pairs

Each held-out set mixes narrative, wisdom and letters, as the train split does; no
synoptic gospel is held out, since its parallels in the others would be in train.
The tfds builder stores the splits as array_record; token ids are cached next to
them, keyed by the tokenizer's fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
import pathlib
from typing import ClassVar

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxformer.data import common, translation_pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.local_info import LocalDatasetInfo
from jaxformer.data.translation_pipeline import TranslationData

CORPUS_PATH = pathlib.Path(__file__).parent / "assets" / "bible_enes" / "bible_enes.tsv.xz"
# sha256 of the decompressed TSV.
CORPUS_SHA256 = "eab47bf2980fae4ddafbdf61db48c7250dc0c0eee3b7e9bd4b5613f41c0416a3"
HEADER = "book\tchapter\tverse\ten\tes"
LANGUAGES = ("en", "es")
SPLITS = translation_pipeline.SPLITS
VALIDATION_BOOKS = ("Acts", "Eccl", "Jas")
TEST_BOOKS = ("John", "Prov", "Rom")
SPLIT_SIZES = {"train": 27_521, "validation": 1_336, "test": 2_227}


@dataclasses.dataclass(frozen=True)
class Verse:
    """One verse in both languages; `index` is its position in the corpus."""

    index: int
    book: str
    chapter: int
    verse: int
    en: str
    es: str

    @property
    def id(self) -> str:
        """The OSIS reference, e.g. "Gen.1.1"."""
        return f"{self.book}.{self.chapter}.{self.verse}"


class BibleEnes(tfds.core.GeneratorBasedBuilder):
    """The embedded English-Spanish Bible as verse records."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "KJV / Reina-Valera 1909 from the SWORD modules; books held out."}
    # tfds 4.9.10 finds a packaged builder's source file through `importlib_resources`,
    # which it does not install on Python >= 3.9 (tensorflow/datasets#11212).
    code_path: ClassVar[epath.Path] = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return LocalDatasetInfo(
            builder=self,
            description="English (KJV) - Spanish (Reina-Valera 1909) Bible verse pairs.",
            features=tfds.features.FeaturesDict({
                "index": np.int32,  # Position of the verse in the corpus.
                "verse": tfds.features.Text(),  # OSIS reference, "Gen.1.1".
                "en": tfds.features.Text(),
                "es": tfds.features.Text(),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The corpus ships with the package.
        splits = split_verses(read_corpus())
        return {name: self._generate_examples(splits[name]) for name in SPLITS}

    def _generate_examples(self, verses: list[Verse]):
        for verse in verses:
            yield verse.index, {"index": verse.index, "verse": verse.id, "en": verse.en,
                                "es": verse.es}


def read_corpus() -> list[Verse]:
    """The embedded verses, checked against the recorded sha256."""
    data = lzma.decompress(CORPUS_PATH.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise ValueError(f"{CORPUS_PATH} holds text with sha256 {digest}, expected "
                         f"{CORPUS_SHA256}")
    lines = data.decode("utf-8").split("\n")
    if lines[0] != HEADER or lines[-1]:
        raise ValueError(f"{CORPUS_PATH} is not a TSV with header {HEADER!r}")
    verses = []
    for index, line in enumerate(lines[1:-1]):
        book, chapter, verse, en, es = line.split("\t")
        verses.append(Verse(index, book, int(chapter), int(verse), en, es))
    return verses


def split_of(book: str) -> str:
    """The split that holds `book` (an OSIS book id)."""
    if book in VALIDATION_BOOKS:
        return "validation"
    return "test" if book in TEST_BOOKS else "train"


def split_verses(verses: list[Verse]) -> dict[str, list[Verse]]:
    """The verses of each split, in corpus order."""
    splits: dict[str, list[Verse]] = {name: [] for name in SPLITS}
    for verse in verses:
        splits[split_of(verse.book)].append(verse)
    return splits


def prepare(data_dir: str) -> BibleEnes:
    """Returns the builder for `data_dir`, preparing the data there if needed."""
    return common.prepare_builder(
        lambda: BibleEnes(data_dir=data_dir, file_format="array_record"), "bible_enes", data_dir)


def read_splits(builder: BibleEnes) -> dict[str, list[Verse]]:
    """The verses of each split as stored by `builder`, checked against the corpus."""
    splits = {}
    try:
        sources = builder.as_data_source()
        for name in SPLITS:
            records = sources[name].__getitems__(range(len(sources[name])))
            splits[name] = sorted(
                (Verse(int(r["index"]), *_parse_id(r["verse"].decode("utf-8")),
                       r["en"].decode("utf-8"), r["es"].decode("utf-8")) for r in records),
                key=lambda v: v.index)
    except Exception as e:  # The record readers raise many kinds of errors for damaged files.
        raise ValueError(f"malformed bible_enes data in {builder.data_dir}: {e}") from e
    if splits != split_verses(read_corpus()):
        raise ValueError(f"the data in {builder.data_dir} is not the embedded corpus; delete "
                         "that directory to prepare it again")
    return splits


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, before anything is written."""
    translation_pipeline.check_translation_config(config, LANGUAGES, data_dir_must_exist=False)
    if not CORPUS_PATH.is_file():
        raise ValueError(f"the embedded corpus {CORPUS_PATH} is missing; reinstall jaxformer")


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The tokenizer's size and special ids, without reading the pairs."""
    check_config(config)
    return translation_pipeline.data_spec(config)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> TranslationData:
    """The Bible pair as translation data, in the direction and sizes `config` says.

    Args:
        config: the `data` part of the experiment config: `source` and `target` ("en"
            and "es", either way round), `vocab_size`, `max_source_length`,
            `max_target_length`, `tokenizer_sentences` and `data_dir` (a tfds data
            dir; "" means $TFDS_DATA_DIR or ~/tensorflow_datasets).
        workdir: the experiment's directory; the tokenizer is kept in its `assets/`
            and reused from there. None builds the tokenizer afresh in memory.
    """
    check_config(config)
    source, target = translation_pipeline.direction(config, LANGUAGES)
    builder = prepare(common.resolve_data_dir(config.get("data_dir", ""), create=True))
    splits = read_splits(builder)
    pairs = {name: [(getattr(v, source), getattr(v, target)) for v in verses]
             for name, verses in splits.items()}
    return translation_pipeline.make_data(pairs, config, workdir=workdir,
                                          token_dir=epath.Path(builder.data_dir) / "tokens")


def _parse_id(verse_id: str) -> tuple[str, int, int]:
    book, chapter, verse = verse_id.split(".")
    return book, int(chapter), int(verse)
