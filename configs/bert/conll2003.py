"""BERT fine-tuning for named entity recognition on CoNLL-2003 (the BERT paper's NER
experiment), from CoNLL files or tfds `conll2003` (see jaxformer/data/conll2003.py).

The recipe and arg strings of tweet_sentiment.py, plus:
  path=DIR      a directory of CoNLL files (train.txt, valid.txt, test.txt; rename them with
                `--config.data.files`); "" (default) reads tfds conll2003 from data_dir.
  data_dir=DIR  the tfds data dir ("": $TFDS_DATA_DIR or ~/tensorflow_datasets).

Every word is tagged from its first piece; sentences are cut to 128 pieces. Span-level F1
(conlleval's) on the validation split every epoch and on the test split at the end. Other
corpora in the CoNLL format train with their own `--config.data.tags`.

  jaxformer train --workdir=runs/bert_ner \
      --config=configs/bert/conll2003.py:path=data/conll2003,init_from=runs/bert_books
  jaxformer sweep --workdir=runs/bert_ner_lr \
      --config=configs/bert/conll2003.py:path=data/conll2003,init_from=runs/bert_books
"""

import ml_collections

from configs.bert import tweet_sentiment
from configs.bert.tweet_sentiment import get_sweep  # noqa: F401 (the paper's lr grid)

TRAIN_SENTENCES = 14_041


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = tweet_sentiment.parse(arg, path="", data_dir="")
    data = ml_collections.ConfigDict(dict(name="conll2003", path=arg.path,
                                          data_dir=arg.data_dir, seq_length=128, subset_seed=0))
    config = tweet_sentiment.finetuning_config(
        arg, data, train_size=TRAIN_SENTENCES, eval_splits=("validation", "test"),
        task="token_classification", evaluator=dict(type="entity_f1"))
    if arg.init_from:
        config.init_from.mapping = tweet_sentiment.ENCODER_PARTS
    return config
