"""SQuAD (Rajpurkar et al., 2016; 2.0: 2018), extractive question answering over Wikipedia
paragraphs, for BERT fine-tuning (the BERT paper's SQuAD v1.1 and v2.0 experiments).

Two sources, neither downloadable here (the data must be on disk):
  * `path`: a directory of SQuAD JSON files, `train-v1.1.json` and `dev-v1.1.json` (version
    "1.1") or `train-v2.0.json` and `dev-v2.0.json` ("2.0"), as the SQuAD site serves them;
    `files` renames them. Other data sets in the SQuAD format (e.g. translated SQuADs) read
    the same way.
  * otherwise tfds `squad/v1.1` or `squad/v2.0`, prepared as array_record in `data_dir` by
    the user (`tfds build squad/v1.1 --file_format=array_record`).
The splits are `train` and `validation` (SQuAD's dev set; its test set is hidden). A question
of SQuAD 2.0 marked `is_impossible` has no answer. Windows and the vocabulary come from
`question_answering_pipeline`.
"""

from __future__ import annotations

import json
import logging

import ml_collections
import numpy as np

from jaxformer.data import common, image_pipeline
from jaxformer.data import question_answering_pipeline as pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.question_answering_pipeline import QuestionAnsweringData, Questions

VERSIONS = ("1.1", "2.0")
SPLITS = ("train", "validation")
FILES = {"train": "train-v{}.json", "validation": "dev-v{}.json"}


def get_version(config: ml_collections.ConfigDict) -> str:
    version = config.get("version", "1.1")
    if version not in VERSIONS:
        raise ValueError(f"unknown data.version {version!r}; available: {', '.join(VERSIONS)}")
    return version


def default_files(config: ml_collections.ConfigDict) -> dict[str, str]:
    """Split -> the SQuAD site's file name of `config.version`."""
    return {split: name.format(get_version(config)) for split, name in FILES.items()}


def split_files(config: ml_collections.ConfigDict) -> dict[str, str]:
    """Split -> the path of its JSON file under `config.path`."""
    return common.split_files(config, default_files(config))


def parse_squad(document: dict, *, source: str) -> Questions:
    """The questions of a SQuAD JSON document (`{"data": [{"paragraphs": [{"context", "qas":
    [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}`)."""
    ids, questions, contexts, answers = [], [], [], []
    try:
        for article in document["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    gold = [] if qa.get("is_impossible", False) else [
                        (int(a["answer_start"]), str(a["text"])) for a in qa["answers"]]
                    ids.append(str(qa["id"]))
                    questions.append(str(qa["question"]))
                    contexts.append(str(paragraph["context"]))
                    answers.append(gold)
    except KeyError as e:
        raise ValueError(f"{source} is not a SQuAD file: an entry has no {e}") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source} is not a SQuAD file: {e}") from e
    return Questions(ids, questions, contexts, answers)


def read_squad(path: str) -> Questions:
    """The questions of the SQuAD JSON file at `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a JSON file: {e}") from e
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a SQuAD file: no 'data' list")
    return parse_squad(document, source=path)


def text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds_split(source) -> Questions:
    """The questions of a tfds `squad` data source."""
    ids, questions, contexts, answers = [], [], [], []
    for i in range(len(source)):
        record = source[i]
        gold = record["answers"]
        impossible = bool(np.asarray(record.get("is_impossible", False)))
        ids.append(text(record["id"]))
        questions.append(text(record["question"]))
        contexts.append(text(record["context"]))
        answers.append([] if impossible else [
            (int(start), text(answer))
            for start, answer in zip(gold["answer_start"], gold["text"], strict=True)])
    return Questions(ids, questions, contexts, answers)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, before anything is read."""
    get_version(config)
    pipeline.check_config(config)
    common.check_files_or_data_dir(config, default_files(config))


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """`vocab_size` WordPiece ids, without reading any data."""
    get_version(config)
    return pipeline.spec(config)


def read_splits(config: ml_collections.ConfigDict) -> dict[str, Questions]:
    """Each split's questions, from `config.path` or tfds."""
    if config.get("path", ""):
        return {split: read_squad(path) for split, path in split_files(config).items()}
    import tensorflow_datasets.datasets.squad.squad_dataset_builder  # noqa: F401 (registers it)

    name = f"squad/v{get_version(config)}"
    try:
        _, sources = image_pipeline.tfds_sources(name, data_dir=config.get("data_dir", ""),
                                                 splits=SPLITS)
    except ValueError as e:
        raise ValueError(f"{e}; or give the SQuAD files' directory as data.path") from e
    return {split: read_tfds_split(source) for split, source in zip(SPLITS, sources,
                                                                   strict=True)}


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> QuestionAnsweringData:
    """SQuAD (or files in its format) as question answering data; evaluation reads
    `validation`.

    Args:
        config: the `data` part of the experiment config: `version` ("1.1" or "2.0"), `path`
            and `files`, or `data_dir` (see the module docstring), `vocab_size`, `seq_length`
            (384), `doc_stride` (128), `max_query_length` (64), `train_examples` (-1: all; else
            that many questions drawn with `subset_seed`) and `tokenizer_workdir` (see
            `wordpiece.for_workdir`).
        workdir: the experiment's directory; the vocabulary is kept in its `assets/`. None
            keeps it in memory only.
    """
    check_config(config)
    splits = read_splits(config)
    data = pipeline.build_data(config, workdir=workdir, train=splits["train"],
                               evals={"validation": splits["validation"]})
    if data.train.skipped:
        logging.getLogger(__name__).warning(
            "left out %d training questions whose answer is not the context's text at its "
            "answer_start", data.train.skipped)
    return data
