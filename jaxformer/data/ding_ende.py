"""English-German example sentences from the Ding dictionary, read from the installed package.

The Debian package `dict-freedict-eng-deu` (GPL-3+, so read where it is installed,
never shipped here) holds the FreeDict English-German dictionary in dictd format:
`freedict-eng-deu.index`, lines of headword, offset and length (numbers in base 64,
digits `A-Za-z0-9+/`), into `freedict-eng-deu.dict.dz`, a gzip file of entries. An
entry's first line is its headword (then the pronunciation in slashes), the next
lines its translations, then indented examples (`"English"  - German`), synonyms
and cross references.

A pair is a headword with its translation, or an example, whose English is a
sentence: at least 4 words, a capital first letter, a final `.`, `!` or `?`. Tags
like `[ugs.]` or `<masc>` are removed, of comma-separated alternative
translations the first is kept, and pairs with placeholders (`sth.`, `jdm.`) are
left out: about 18k unique pairs of ~8 words. So that no sentence is in two splits,
pairs that share an English or German sentence are kept together, and each such
group goes to a split by a hash of its first English sentence: 5% validation, 5%
test, the rest train (unlike a shuffle, a hash moves few pairs when entries change).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from typing import ClassVar

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxformer.data import common, translation_pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.local_info import LocalDatasetInfo
from jaxformer.data.translation_pairs import Pair
from jaxformer.data.translation_pipeline import TranslationData

DICTD_DIR = "/usr/share/dictd"
DICTIONARY = "freedict-eng-deu"
PACKAGE = "dict-freedict-eng-deu"
LANGUAGES = ("en", "de")
SPLITS = translation_pipeline.SPLITS
VALIDATION_FRACTION = 0.05
TEST_FRACTION = 0.05
MIN_WORDS = 4

_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DIGIT_VALUES = {c: i for i, c in enumerate(_DIGITS)}
_HEADWORD = re.compile(r"(.*?) /[^/]*/(?: \(.*\))?")  # "headword /pronunciation/ (symbol)"
_EXAMPLE = re.compile(r'\s+"(.*)"\s+-\s+(.*)')
_SECTION_END = re.compile(r"\s+(?:see:|Synonyms?:|Note:|\")")
_TAG = re.compile(r"\[[^\]]*\]|<[^>]*>")
_ALTERNATIVES = re.compile(r"(?<=[.!?…\"“”]),\s+(?=[A-ZÄÖÜ„\"])")
_PLACEHOLDER = re.compile(r"\b(?:sth|sb|etw|jd|jdn|jdm|jds)\.")


class DingEnde(tfds.core.GeneratorBasedBuilder):
    """English-German sentence pairs from the installed Ding dictionary."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Sentence headwords and examples of freedict-eng-deu."}
    # tfds 4.9.10 finds a packaged builder's source file through `importlib_resources`,
    # which it does not install on Python >= 3.9 (tensorflow/datasets#11212).
    code_path: ClassVar[epath.Path] = epath.Path(__file__)

    def __init__(self, *, dictd_dir: str = DICTD_DIR, **kwargs):
        self.dictd_dir = dictd_dir
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return LocalDatasetInfo(
            builder=self,
            description="English-German sentence pairs of the Ding dictionary (FreeDict).",
            features=tfds.features.FeaturesDict({
                "index": np.int32,  # Position of the pair in its split.
                "en": tfds.features.Text(),
                "de": tfds.features.Text(),
            }),
            disable_shuffling=True,
            homepage="https://freedict.org/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Read from the installed package.
        splits = assign_splits(read_pairs(self.dictd_dir))
        return {name: self._generate_examples(splits[name]) for name in SPLITS}

    def _generate_examples(self, pairs: list[Pair]):
        for index, (en, de) in enumerate(pairs):
            yield index, {"index": index, "en": en, "de": de}


def decode_number(digits: str) -> int:
    """A dictd index number: base 64, digits `A-Za-z0-9+/`, most significant first."""
    value = 0
    for digit in digits:
        if digit not in _DIGIT_VALUES:
            raise ValueError(f"{digits!r} is not a dictd number")
        value = value * 64 + _DIGIT_VALUES[digit]
    return value


def dictionary_files(dictd_dir: str = DICTD_DIR, name: str = DICTIONARY) -> tuple[str, str]:
    """The index and dict files of a dictd dictionary, which must exist."""
    index_path = os.path.join(dictd_dir, f"{name}.index")
    dict_path = os.path.join(dictd_dir, f"{name}.dict.dz")
    if not (os.path.isfile(index_path) and os.path.isfile(dict_path)):
        raise ValueError(f"{index_path} and {dict_path} not found: the Ding dictionary is read "
                         f"from the Debian package {PACKAGE} (apt-get install {PACKAGE})")
    return index_path, dict_path


def read_entries(dictd_dir: str = DICTD_DIR, name: str = DICTIONARY) -> Iterator[str]:
    """Each distinct entry of a dictd dictionary, in the order of the dict file."""
    index_path, dict_path = dictionary_files(dictd_dir, name)
    try:
        with open(index_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        with gzip.open(dict_path) as f:
            data = f.read()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"cannot read the dictd dictionary in {dictd_dir}: {e}") from e
    spans = set()
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{index_path}:{number}: expected headword, offset and length")
        offset, length = decode_number(fields[1]), decode_number(fields[2])
        if offset + length > len(data):
            raise ValueError(f"{index_path}:{number}: entry past the end of {dict_path}")
        spans.add((offset, length))
    for offset, length in sorted(spans):
        try:
            yield data[offset:offset + length].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{dict_path}: entry at {offset} is not UTF-8: {e}") from e


def entry_pairs(entry: str) -> list[Pair]:
    """The (English, German) sentence pairs of one dictionary entry."""
    lines = entry.split("\n")
    match = _HEADWORD.fullmatch(lines[0])
    headword = match.group(1) if match else lines[0]
    translation = []
    for line in lines[1:]:
        if not line.strip() or _SECTION_END.match(line):
            break
        translation.append(line)
    candidates = [(headword, " ".join(translation))]
    candidates += [m.groups() for line in lines[1:] if (m := _EXAMPLE.fullmatch(line))]
    pairs = []
    for en, de in candidates:
        en, de = _clean(en), _ALTERNATIVES.split(_clean(de))[0]
        if is_sentence(en) and de and not (_PLACEHOLDER.search(en) or _PLACEHOLDER.search(de)):
            pairs.append((en, de))
    return pairs


def is_sentence(text: str) -> bool:
    """At least `MIN_WORDS` words, a capital first letter and a final `.`, `!` or `?`."""
    return len(text.split()) >= MIN_WORDS and text[:1].isupper() and text[-1:] in ".!?"


def read_pairs(dictd_dir: str = DICTD_DIR) -> list[Pair]:
    """The unique sentence pairs of the installed dictionary, sorted."""
    return sorted({pair for entry in read_entries(dictd_dir) for pair in entry_pairs(entry)})


def assign_splits(pairs: Sequence[Pair]) -> dict[str, list[Pair]]:
    """Splits `pairs` so that pairs sharing a sentence (either side) share a split."""
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[tuple[int, str], int] = {}
    for i, pair in enumerate(pairs):
        for side, sentence in enumerate(pair):
            j = first_with.setdefault((side, sentence), i)
            parent[root(i)] = root(j)
    key: dict[int, str] = {}
    for i, (en, _) in enumerate(pairs):
        key[root(i)] = min(key.get(root(i), en), en)
    splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for i, pair in enumerate(pairs):
        splits[_split_of(key[root(i)])].append(pair)
    return splits


def _split_of(sentence: str) -> str:
    digest = hashlib.sha256(sentence.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if fraction < VALIDATION_FRACTION:
        return "validation"
    return "test" if fraction < VALIDATION_FRACTION + TEST_FRACTION else "train"


def _clean(text: str) -> str:
    return " ".join(_TAG.sub(" ", text).split())


def prepare(data_dir: str, *, dictd_dir: str = DICTD_DIR) -> DingEnde:
    """Returns the builder for `data_dir`, preparing the data there from `dictd_dir` if needed."""
    return common.prepare_builder(
        lambda: DingEnde(data_dir=data_dir, file_format="array_record", dictd_dir=dictd_dir),
        "ding_ende", data_dir, check=lambda: dictionary_files(dictd_dir))  # A missing package.


def read_splits(builder: DingEnde) -> dict[str, list[Pair]]:
    """The (English, German) pairs of each split, in order."""
    splits = {}
    try:
        sources = builder.as_data_source()
        for name in SPLITS:
            records = sources[name].__getitems__(range(len(sources[name])))
            records = sorted(records, key=lambda r: int(r["index"]))
            if [int(r["index"]) for r in records] != list(range(len(records))):
                raise ValueError(f"{name} records are not numbered 0..{len(records) - 1}")
            splits[name] = [(r["en"].decode("utf-8"), r["de"].decode("utf-8"))
                            for r in records]
    except Exception as e:  # The record readers raise many kinds of errors for damaged files.
        raise ValueError(f"malformed ding_ende data in {builder.data_dir}: {e}") from e
    return splits


def check_config(config: ml_collections.ConfigDict, *, dictd_dir: str = DICTD_DIR) -> None:
    """Raises ValueError for settings `build` would reject, before anything is written: the
    dictionary package must be installed unless the data is prepared already."""
    translation_pipeline.check_translation_config(config, LANGUAGES, data_dir_must_exist=False)
    data_dir = common.default_data_dir(config.get("data_dir", ""))
    if not DingEnde(data_dir=data_dir, file_format="array_record").is_prepared():
        dictionary_files(dictd_dir)


def spec(config: ml_collections.ConfigDict, *, dictd_dir: str = DICTD_DIR) -> DataSpec:
    """The tokenizer's size and special ids, without reading the pairs."""
    check_config(config, dictd_dir=dictd_dir)
    return translation_pipeline.data_spec(config)


def build(
    config: ml_collections.ConfigDict, *, workdir: str | None, dictd_dir: str = DICTD_DIR
) -> TranslationData:
    """Ding's sentence pairs as translation data, in the direction and sizes `config` says.

    Args:
        config: the `data` part of the experiment config: `source` and `target` ("en"
            and "de", either way round), `vocab_size`, `max_source_length`,
            `max_target_length`, `tokenizer_sentences` and `data_dir` (a tfds data
            dir; "" means $TFDS_DATA_DIR or ~/tensorflow_datasets).
        workdir: the experiment's directory; the tokenizer is kept in its `assets/`
            and reused from there. None builds the tokenizer afresh in memory.
        dictd_dir: where the dictd files are (the package installs them in
            /usr/share/dictd).
    """
    check_config(config, dictd_dir=dictd_dir)
    source, _ = translation_pipeline.direction(config, LANGUAGES)
    builder = prepare(common.resolve_data_dir(config.get("data_dir", ""), create=True),
                      dictd_dir=dictd_dir)
    splits = read_splits(builder)
    pairs = {name: [pair if source == "en" else pair[::-1] for pair in split]
             for name, split in splits.items()}
    return translation_pipeline.make_data(pairs, config, workdir=workdir,
                                          token_dir=epath.Path(builder.data_dir) / "tokens")
