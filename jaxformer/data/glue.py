"""GLUE classification tasks (Wang et al., 2018) through tfds `glue/<task>`, for BERT
fine-tuning.

The tasks must be prepared as array_record in `data_dir` by the user (`tfds build glue/sst2
--file_format=array_record`; tfds downloads them, which these machines cannot). Single
sentences (sst2, cola) are `[CLS] a [SEP]`, pairs (mnli, qnli, qqp, mrpc, rte, wnli)
`[CLS] a [SEP] b [SEP]` with segment ids. GLUE's test labels are hidden, so evaluation reads
the validation split (mnli: `validation_matched`, the default, and `validation_mismatched`).
STS-B is regression and is not offered here. Batches and the vocabulary (`tokenizer_workdir`
or one trained on the training texts) come from `text_classification_pipeline`.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from jaxformer.data import common, image_pipeline
from jaxformer.data import text_classification_pipeline as pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.text_classification_pipeline import TextClassificationData, Texts


@dataclasses.dataclass(frozen=True)
class Task:
    """A GLUE task's text features (`second` None for single sentences), labels and eval
    splits, as tfds names them."""

    first: str
    second: str | None
    class_names: tuple[str, ...]
    eval_splits: tuple[str, ...] = ("validation",)


_NLI = ("entailment", "not_entailment")
TASKS = {
    "cola": Task("sentence", None, ("unacceptable", "acceptable")),
    "sst2": Task("sentence", None, ("negative", "positive")),
    "mrpc": Task("sentence1", "sentence2", ("not_equivalent", "equivalent")),
    "qqp": Task("question1", "question2", ("not_duplicate", "duplicate")),
    "mnli": Task("premise", "hypothesis", ("entailment", "neutral", "contradiction"),
                 ("validation_matched", "validation_mismatched")),
    "qnli": Task("question", "sentence", _NLI),
    "rte": Task("sentence1", "sentence2", _NLI),
    "wnli": Task("sentence1", "sentence2", ("not_entailment", "entailment")),
}
REGRESSION = ("stsb",)


def get_task(config: ml_collections.ConfigDict) -> Task:
    """The `Task` of `config.task`."""
    name = config.get("task")
    if name in REGRESSION:
        raise ValueError(f"glue/{name} is a regression task (similarity scores), not "
                         f"classification; available: {', '.join(TASKS)}")
    if name not in TASKS:
        raise ValueError(f"unknown data.task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name]


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, before anything is read."""
    get_task(config)
    pipeline.check_text_config(config)
    common.check_data_dir(pipeline.get(config, "data_dir"), default_must_exist=True)


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """`vocab_size` WordPiece ids and the task's classes, without reading any data."""
    return pipeline.text_spec(config, get_task(config).class_names)


def read_split(source, task: Task) -> Texts:
    """The texts and labels of a tfds data source of a GLUE task, in its order."""
    def text(value) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    first, second, labels = [], [], []
    for i in range(len(source)):
        record = source[i]
        first.append(text(record[task.first]))
        if task.second is not None:
            second.append(text(record[task.second]))
        labels.append(int(np.asarray(record["label"])))
    return Texts(first, second if task.second is not None else None, labels)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> TextClassificationData:
    """GLUE task `config.task` as text classification data.

    Args:
        config: the `data` part of the experiment config: `task` (a key of `TASKS`),
            `data_dir` (the tfds data dir; "": $TFDS_DATA_DIR or ~/tensorflow_datasets),
            `vocab_size`, `seq_length` (default 128), `train_examples` (-1: all; else a
            stratified subset drawn with `subset_seed`) and `tokenizer_workdir` (see
            `wordpiece.for_workdir`).
        workdir: the experiment's directory; the vocabulary is kept in its `assets/`. None
            keeps it in memory only.
    """
    check_config(config)
    import tensorflow_datasets.text.glue  # noqa: F401  (registers the builder)

    task = get_task(config)
    splits = ("train", *task.eval_splits)
    _, sources = image_pipeline.tfds_sources(f"glue/{config.task}",
                                             data_dir=pipeline.get(config, "data_dir"),
                                             splits=list(splits))
    texts = {name: read_split(source, task) for name, source in zip(splits, sources, strict=True)}
    return pipeline.build_data(config, workdir=workdir, train=texts["train"],
                               evals={name: texts[name] for name in task.eval_splits},
                               class_names=task.class_names)
