"""BERT fine-tuning on the embedded tweet-sentiment corpus (negative / neutral / positive).

The paper's fine-tuning recipe: batch 32, 3 epochs, AdamW with 10 % warmup then linear decay,
lr in {5e-5, 3e-5, 2e-5} (`get_sweep`: `jaxformer sweep --config=...`; pick the best on
validation), dropout 0.1; accuracy and macro-F1 on the validation split every epoch and on the
test split at the end.

Variants (arg string):
  init_from=DIR     a pretraining workdir (configs/bert/books_pretraining.py, or one written
                    by `jaxformer import-weights --family=bert`): its encoder and pooler are
                    loaded and its vocabulary reused; the classifier is new. The model's size
                    and options and the vocabulary size are the run's (its config.json, once
                    it has one). Without it the model trains from scratch, with a vocabulary
                    of 8,192 trained on the training tweets.
  variant=X         the BERT size (default mini; that of the pretraining run).
  lr=F              peak learning rate (default 5e-5).
  epochs=N          training epochs (default 3).
  train_examples=N  a stratified subset of N training tweets (default -1: all 29,749).
  causal            a left-to-right model (to fine-tune an `objective=ltr` pretraining run).
  runlocal          a tiny model for a few steps (smoke tests).

  jaxformer train --workdir=runs/bert_tweets \
      --config=configs/bert/tweet_sentiment.py:init_from=runs/bert_books
  jaxformer sweep --workdir=runs/bert_tweets_lr \
      --config=configs/bert/tweet_sentiment.py:init_from=runs/bert_books
"""

import math
import os

import ml_collections

from configs import common
from configs.bert import books_pretraining
from jaxformer.config import parse_arg, read_workdir_config

TRAIN_EXAMPLES = 29_749
PAPER_LEARNING_RATES = (5e-5, 3e-5, 2e-5)
# The model fields a fine-tuning run takes from the pretraining run it starts from.
# A pretraining run's encoder without its pooler, for heads that read every token (as Hugging
# Face's BertForTokenClassification and BertForQuestionAnswering).
ENCODER_PARTS = tuple((f"encoder/{part}",) * 2 for part in (
    "token_embedding", "position_embedding", "segment_embedding", "embedding_norm",
    "transformer"))
SOURCE_MODEL_KEYS = ("variant", "num_layers", "num_heads", "d_model", "mlp_dim", "max_position",
                     "type_vocab", "layer_norm_epsilon", "activation", "causal")


def source_run(init_from: str) -> ml_collections.ConfigDict | None:
    """The config of the pretraining run in `init_from`, or None while it has none (a sweep
    checks its points before the run they start from has begun)."""
    if init_from and os.path.isfile(os.path.join(init_from, "config.json")):
        return read_workdir_config(init_from)
    return None


CLASSIFICATION_EVAL = dict(type="classification", top_k=(1,), macro_f1=True)


def finetuning_config(arg: ml_collections.ConfigDict, data: ml_collections.ConfigDict, *,
                      train_size: int, eval_splits: tuple[str, str],
                      task: str = "text_classification",
                      evaluator: dict = CLASSIFICATION_EVAL,
                      batch_size: int = 32) -> ml_collections.ConfigDict:
    """The fine-tuning recipe of `task` for `data` of `train_size` examples in batches of
    `batch_size`, evaluated by `evaluator` (type and options) on `eval_splits`: the first every
    epoch, the second at the end (one evaluator when they are the same split)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        name="bert", variant=arg.variant, num_layers=4, num_heads=4, d_model=256, mlp_dim=1024,
        dropout_rate=0.1, attention_dropout_rate=0.1, causal=arg.causal))
    config.task = ml_collections.ConfigDict(dict(name=task, label_smoothing=0.0))
    examples = train_size if arg.train_examples < 0 else arg.train_examples
    data.update(vocab_size=books_pretraining.VOCAB_SIZE, train_examples=arg.train_examples,
                tokenizer_workdir=arg.init_from)
    config.data = data
    epoch = math.ceil(examples / batch_size)
    num_steps = arg.epochs * epoch
    config.train = common.train(batch_size=batch_size, num_steps=num_steps,
                                log_every=max(epoch // 10, 1), checkpoint_every=epoch,
                                keep_checkpoints=1)
    every_epoch, at_end = eval_splits
    config.evals = ml_collections.ConfigDict()
    kind, options = evaluator["type"], {k: v for k, v in evaluator.items() if k != "type"}
    config.evals[every_epoch] = common.evaluator(kind, every_steps=epoch, split=every_epoch,
                                                 num_batches=-1, **options)
    if at_end != every_epoch:
        config.evals[at_end] = common.evaluator(kind, split=at_end, num_batches=-1, **options)
    common.add_transfer(config)
    if arg.init_from:
        config.init_from.update(workdir=arg.init_from, mapping=(("encoder", "encoder"),))
    source = source_run(arg.init_from)
    if source is not None:
        config.model.update({k: source.model[k] for k in SOURCE_MODEL_KEYS if k in source.model})
        config.data.vocab_size = source.data.vocab_size
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=arg.lr, min_lr=0.0, schedule="linear",
        warmup_steps=num_steps // 10, decay_steps=num_steps, b1=0.9, b2=0.999, eps=1e-6,
        weight_decay=0.01, grad_clip=1.0))

    if arg.runlocal:
        config.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
        config.data.seq_length = 32
        if source is None:
            config.model.variant = "tiny"
            config.data.vocab_size = 512
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        for entry in config.evals.values():
            entry.update(every_steps=2 if entry.every_steps else 0, num_batches=2)
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config


def parse(arg: str | None, **extra) -> ml_collections.ConfigDict:
    """The arg string of a fine-tuning config (see the module docstring); `extra` adds args or
    changes their defaults."""
    defaults = dict(init_from="", variant="mini", lr=5e-5, epochs=3, train_examples=-1,
                    causal=False, runlocal=False)
    return parse_arg(arg, **{**defaults, **extra})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse(arg)
    data = ml_collections.ConfigDict(dict(name="tweet_sentiment", seq_length=64,
                                          subset_seed=0))
    return finetuning_config(arg, data, train_size=TRAIN_EXAMPLES,
                             eval_splits=("validation", "test"))


def get_sweep(hyper) -> list[dict]:
    """The paper's fine-tuning grid of peak learning rates."""
    return hyper.sweep("config.optim.lr", PAPER_LEARNING_RATES)
