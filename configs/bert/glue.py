"""BERT fine-tuning on a GLUE classification task, from tfds `glue/<task>` (prepared by the
user as array_record in `data_dir`; see jaxformer/data/glue.py).

The recipe and arg strings of tweet_sentiment.py, plus:
  task=X        cola, sst2 (default), mrpc, qqp, mnli, qnli, rte or wnli.
  data_dir=DIR  the tfds data dir ("": $TFDS_DATA_DIR or ~/tensorflow_datasets).

Sentences are cut to 128 tokens. Accuracy and macro-F1 on the validation split every epoch
(GLUE's test labels are hidden); for mnli, validation_matched every epoch and
validation_mismatched at the end.

  jaxformer train --workdir=runs/bert_sst2 \
      --config=configs/bert/glue.py:task=sst2,init_from=runs/bert_books
  jaxformer sweep --workdir=runs/bert_sst2_lr \
      --config=configs/bert/glue.py:task=sst2,init_from=runs/bert_books
"""

import ml_collections

from configs.bert import tweet_sentiment
from configs.bert.tweet_sentiment import get_sweep  # noqa: F401 (the paper's lr grid)

# Training examples of each task (tfds glue 2.0.0).
TRAIN_EXAMPLES = {"cola": 8_551, "sst2": 67_349, "mrpc": 3_668, "qqp": 363_846,
                  "mnli": 392_702, "qnli": 104_743, "rte": 2_490, "wnli": 635}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = tweet_sentiment.parse(arg, task="sst2", data_dir="")
    if arg.task not in TRAIN_EXAMPLES:
        raise ValueError(f"unknown GLUE task {arg.task!r}; available: "
                         f"{', '.join(TRAIN_EXAMPLES)}")
    data = ml_collections.ConfigDict(dict(name="glue", task=arg.task, data_dir=arg.data_dir,
                                          seq_length=128, subset_seed=0))
    splits = (("validation_matched", "validation_mismatched") if arg.task == "mnli"
              else ("validation",) * 2)
    return tweet_sentiment.finetuning_config(arg, data, train_size=TRAIN_EXAMPLES[arg.task],
                                             eval_splits=splits)
