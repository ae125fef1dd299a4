"""BERT fine-tuning for extractive question answering on SQuAD v1.1 or v2.0 (the BERT paper's
SQuAD experiments), from SQuAD JSON files or tfds `squad` (see jaxformer/data/squad.py).

The recipe and arg strings of tweet_sentiment.py (the paper's lr grid with `jaxformer sweep`),
with the paper's SQuAD settings: 384-token windows 128 tokens apart, questions cut to 64
tokens, answers of at most 30 tokens; v1.1: batch 32, 3 epochs; v2.0: batch 48, 2 epochs, and
a question may have no answer. Plus:
  version=V     "1.1" (default) or "2.0".
  path=DIR      a directory of SQuAD files (train-v1.1.json, dev-v1.1.json; or -v2.0); ""
                (default) reads tfds squad/v1.1 (or v2.0) from data_dir.
  data_dir=DIR  the tfds data dir ("": $TFDS_DATA_DIR or ~/tensorflow_datasets).

Exact match and F1 (the official script's) on the dev set every epoch and at the end; with
v2.0 also the F1 of the best no-answer threshold (`task.null_threshold` for later runs).

  jaxformer train --workdir=runs/bert_squad \
      --config=configs/bert/squad.py:path=data/squad,init_from=runs/bert_books
  jaxformer answer --workdir=runs/bert_squad --question="..." --context="..."
"""

import ml_collections

from configs.bert import tweet_sentiment
from configs.bert.tweet_sentiment import get_sweep  # noqa: F401 (the paper's lr grid)

# Training questions, batch size and epochs of each version (the paper's section 4.2, 4.3).
RECIPES = {"1.1": (87_599, 32, 3), "2.0": (130_319, 48, 2)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = tweet_sentiment.parse(arg, version="1.1", path="", data_dir="", epochs=0)
    if arg.version not in RECIPES:
        raise ValueError(f"unknown version {arg.version!r}; available: {', '.join(RECIPES)}")
    questions, batch_size, epochs = RECIPES[arg.version]
    arg.epochs = arg.epochs or epochs
    data = ml_collections.ConfigDict(dict(
        name="squad", version=arg.version, path=arg.path, data_dir=arg.data_dir,
        seq_length=384, doc_stride=128, max_query_length=64, subset_seed=0))
    config = tweet_sentiment.finetuning_config(
        arg, data, train_size=questions, eval_splits=("validation", "validation"),
        task="question_answering", evaluator=dict(type="squad"), batch_size=batch_size)
    config.task.update(max_answer_length=30, no_answer=arg.version == "2.0",
                       null_threshold=0.0)
    if arg.init_from:
        config.init_from.mapping = tweet_sentiment.ENCODER_PARTS
    if arg.runlocal:
        config.data.update(seq_length=48, doc_stride=16, max_query_length=16)
    return config
