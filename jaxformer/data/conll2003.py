"""CoNLL-2003 named entity recognition (Tjong Kim Sang and De Meulder, 2003), and other
corpora in its file format, for BERT fine-tuning (the BERT paper's NER experiment).

Two sources, neither downloadable here (the data must be on disk):
  * `path`: a directory of CoNLL files, `train.txt`, `valid.txt` and `test.txt` (the names in
    the archive that tfds and Hugging Face read; `files` renames them, e.g. `eng.train`,
    `eng.testa`, `eng.testb`). One word per line, its columns separated by spaces or tabs, the
    tag last; a blank line ends a sentence; `-DOCSTART-` lines are skipped.
  * otherwise tfds `conll2003`, prepared as array_record in `data_dir` by the user (`tfds
    build conll2003 --file_format=array_record`).
`tags` names the tag set (default CoNLL-2003's nine IOB tags); a tag outside it is an error
naming the file and line, so CoNLL-2002 or WikiNER files work with their own `tags`. Batches
and the vocabulary come from `token_classification_pipeline`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import ml_collections
import numpy as np

from jaxformer.data import common, image_pipeline
from jaxformer.data import text_classification_pipeline as text_pipeline
from jaxformer.data import token_classification_pipeline as pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.token_classification_pipeline import Sentences, TokenClassificationData

TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
SPLITS = ("train", "validation", "test")
EVAL_SPLITS = ("validation", "test")
FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
TFDS_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
DOCUMENT_START = "-DOCSTART-"


def get_tags(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    tags = config.get("tags", TAGS)
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"data.tags must be a sequence of tag names, got {tags!r}")
    pipeline.TagScheme.of(tags)
    return tuple(tags)


def split_files(config: ml_collections.ConfigDict) -> dict[str, str]:
    """Split -> the path of its CoNLL file under `config.path`."""
    return common.split_files(config, FILES)


def parse_conll(lines: Iterable[str], tags: Sequence[str], *, source: str) -> Sentences:
    """The sentences of CoNLL-format `lines` (see the module docstring), tags as indices into
    `tags`; a malformed line or an unknown tag is a ValueError naming `source` and the line."""
    index = {tag: i for i, tag in enumerate(tags)}
    sentences, words, labels = [], [], []

    def end_sentence():
        if words:
            sentences.append((tuple(words), tuple(labels)))
            words.clear()
            labels.clear()

    for number, line in enumerate(lines, 1):
        columns = line.split()
        if not columns:
            end_sentence()
            continue
        if columns[0] == DOCUMENT_START:
            end_sentence()
            continue
        if len(columns) < 2:
            text = line.rstrip("\n")
            raise ValueError(f"{source}:{number}: expected a word and its tag, got {text!r}")
        if columns[-1] not in index:
            raise ValueError(f"{source}:{number}: unknown tag {columns[-1]!r}; data.tags: "
                             f"{', '.join(tags)}")
        words.append(columns[0])
        labels.append(index[columns[-1]])
    end_sentence()
    return Sentences([w for w, _ in sentences], [t for _, t in sentences])


def read_conll(path: str, tags: Sequence[str]) -> Sentences:
    """The sentences of the CoNLL file at `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_conll(f, tags, source=path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from e


def read_tfds_split(source, tfds_tags: Sequence[str], tags: Sequence[str]) -> Sentences:
    """The sentences of a tfds `conll2003` data source (its `ner` ids name `tfds_tags`)."""
    index = {tag: i for i, tag in enumerate(tags)}
    unknown = sorted(set(tfds_tags) - set(index))
    if unknown:
        raise ValueError(f"tfds conll2003 has tags {unknown} outside data.tags")
    remap = np.asarray([index[t] for t in tfds_tags], np.int64)
    words, labels = [], []
    for i in range(len(source)):
        record = source[i]
        words.append(tuple(w.decode("utf-8") if isinstance(w, bytes) else str(w)
                           for w in record["tokens"]))
        labels.append(tuple(int(t) for t in remap[np.asarray(record["ner"], np.int64)]))
    return Sentences(words, labels)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, before anything is read."""
    get_tags(config)
    text_pipeline.check_text_config(config)
    common.check_files_or_data_dir(config, FILES)


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """`vocab_size` WordPiece ids and the tags, without reading any data."""
    return pipeline.tagging_spec(config, get_tags(config))


def read_splits(config: ml_collections.ConfigDict) -> dict[str, Sentences]:
    """Each split's sentences, from `config.path` or tfds."""
    tags = get_tags(config)
    if config.get("path", ""):
        return {split: read_conll(path, tags) for split, path in split_files(config).items()}
    import tensorflow_datasets.text.conll2003  # noqa: F401  (registers the builder)

    try:
        builder, sources = image_pipeline.tfds_sources(
            "conll2003", data_dir=config.get("data_dir", ""),
            splits=[TFDS_SPLITS[split] for split in SPLITS])
    except ValueError as e:
        raise ValueError(f"{e}; or give the CoNLL files' directory as data.path") from e
    tfds_tags = builder.info.features["ner"].feature.names
    return {split: read_tfds_split(source, tfds_tags, tags)
            for split, source in zip(SPLITS, sources, strict=True)}


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> TokenClassificationData:
    """CoNLL-2003 (or files in its format) as tagging data; evaluation reads `validation`
    (the default) and `test`.

    Args:
        config: the `data` part of the experiment config: `path` and `files`, or `data_dir`
            (see the module docstring), `tags`, `vocab_size`, `seq_length` (default 128),
            `train_examples` (-1: all; else that many sentences drawn with `subset_seed`) and
            `tokenizer_workdir` (see `wordpiece.for_workdir`).
        workdir: the experiment's directory; the vocabulary is kept in its `assets/`. None
            keeps it in memory only.
    """
    check_config(config)
    splits = read_splits(config)
    return pipeline.build_data(config, workdir=workdir, train=splits["train"],
                               evals={name: splits[name] for name in EVAL_SPLITS},
                               tags=get_tags(config))
