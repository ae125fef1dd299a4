"""Devlin et al., 2019 (BERT): does pretraining help, and which pretraining task (Table 5)?

Args (`jaxformer reproduce experiments/devlin2019 --scale=...`):
  scale=cpu    (default) the embedded tweet-sentiment corpus (3 classes; test accuracy and
               macro-F1): a TF-IDF + logistic regression baseline; BERT-tiny trained from
               scratch on the labels; BERT-tiny pretrained on the embedded books corpus
               (configs/bert/books_pretraining.py, 3,000 steps of 32 sequences of 128 tokens)
               then fine-tuned, on all 29,749 training tweets and on a stratified 1,000; and
               Table 5's pretraining tasks at that size: MLM + NSP, MLM alone (no NSP) and a
               left-to-right LM (no NSP), each fine-tuned the same way.
  scale=paper  BERT-base: the two-phase pretraining (900k steps at 128 tokens, batch 256, then
               100k at 512) on a tfds text corpus (`--config.data.source`, default
               wikipedia/20230601.en, prepared by the user) with the original 30,522-token
               vocabulary size, then fine-tuning on GLUE SST-2 and MNLI (tfds glue).
  runlocal     the rows with tiny models for a few steps (smoke tests).

A point's own settings come as `run=...` (and the fine-tuning keys of
configs/bert/tweet_sentiment.py) in its arg string; a fine-tuning row names the workdir of
the pretraining row it starts from (`init_from`).
"""

import ml_collections

from configs.bert import books_pretraining, glue, tweet_sentiment
from jaxformer.config import parse_arg

RUNS = ("pretrain", "pretrain512", "finetune", "glue")
CPU_PRETRAIN = dict(variant="tiny", steps=3000, batch_size=32)
PAPER_PRETRAIN = dict(variant="base", steps=900_000, batch_size=256)
SUBSET = 1000
SUBSET_EPOCHS = 10  # 1,000 tweets: 32 steps an epoch.
# Every BERT row (from scratch or fine-tuned) picks its learning rate on validation accuracy
# from one grid: the paper's 5e-5 and the larger steps small BERTs take (Turc et al., 2019,
# fine-tune BERT-tiny to BERT-medium with lr in {3e-4, 1e-4, 5e-5, 3e-5}).
LEARNING_RATES = ("5e-4", "3e-4", "1e-4", "5e-5")
PAPER_LEARNING_RATES = ("5e-5", "3e-5", "2e-5")  # The paper's grid for BERT-base.


def _arg(**items) -> str:
    return ",".join(f"{k}={v}" for k, v in items.items() if v not in ("", None))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, scale="cpu", runlocal=False, run="finetune", objective="mlm_nsp",
                    init_from="", lr=5e-5, epochs=3, train_examples=-1, glue_task="sst2")
    if arg.scale not in ("cpu", "paper"):
        raise ValueError(f"unknown scale {arg.scale!r}; available: cpu, paper")
    if arg.run not in RUNS:
        raise ValueError(f"unknown run {arg.run!r}; available: {', '.join(RUNS)}")
    sizes = CPU_PRETRAIN if arg.scale == "cpu" else PAPER_PRETRAIN
    local = "runlocal" if arg.runlocal else ""
    if arg.run.startswith("pretrain"):
        phase2 = arg.run == "pretrain512"
        config = books_pretraining.get_config(",".join(filter(None, [
            _arg(variant=sizes["variant"], steps=sizes["steps"], objective=arg.objective,
                 phase=2 if phase2 else 1, init_from=arg.init_from), local])))
        if not arg.runlocal:
            config.train.batch_size = sizes["batch_size"] // (4 if phase2 else 1)
        if arg.scale == "paper":
            # The paper's recipe for BERT-base: lr 1e-4, 10k warmup steps, 30,522 WordPieces.
            config.data.update(source="wikipedia/20230601.en", vocab_size=30_522)
            config.optim.update(lr=1e-4, warmup_steps=10_000 if not phase2 else 0)
        return config
    finetune = _arg(variant=sizes["variant"], init_from=arg.init_from, lr=arg.lr,
                    epochs=arg.epochs, train_examples=arg.train_examples)
    causal = ",causal" if arg.objective == "ltr" else ""
    spec = ",".join(filter(None, [finetune + causal, local]))
    if arg.run == "glue":
        config = glue.get_config(f"{spec},task={arg.glue_task}")
        # GLUE's test labels are hidden: the (matched) validation split, on which the learning
        # rate is chosen, also stands for the test set, so that both scales log the table's
        # keys (as the paper's dev-set results do).
        validation = next(v for v in config.evals.values() if v.every_steps)
        test = ml_collections.ConfigDict(validation.to_dict())
        test.every_steps = 0
        config.evals = ml_collections.ConfigDict(dict(validation=validation, test=test))
    else:
        config = tweet_sentiment.get_config(spec)
    if arg.scale == "paper":
        config.data.vocab_size = 30_522
    return config


def lr_grid(row: str, arg: str, learning_rates=LEARNING_RATES) -> list[dict]:
    """The points of table row `row`: one per learning rate (the row reports the best one on
    validation)."""
    return [{"name": f"{row}-lr{lr}", "row": row, "arg": f"{arg},lr={lr}"}
            for lr in learning_rates]


def get_sweep(hyper, arg: str | None = None) -> list[dict]:
    parsed = parse_arg(arg, scale="cpu", runlocal=False)
    pretrained = hyper.workdir_of
    if parsed.scale == "paper":
        return [
            {"name": "base-128", "arg": "run=pretrain"},
            {"name": "base-512", "arg": f"run=pretrain512,init_from={pretrained('base-128')}"},
            *[point for task in ("sst2", "mnli") for point in lr_grid(
                task, f"run=glue,glue_task={task},init_from={pretrained('base-512')}",
                PAPER_LEARNING_RATES)],
        ]
    subset = f"train_examples={SUBSET},epochs={SUBSET_EPOCHS}"

    rows = [
        {"name": "tfidf", "arg": "run=finetune", "command": "baseline"},
        {"name": "tfidf-1k", "arg": f"run=finetune,{subset}", "command": "baseline"},
        *lr_grid("scratch", "run=finetune"),
        *lr_grid("scratch-1k", f"run=finetune,{subset}"),
    ]
    for objective, suffix in (("mlm_nsp", ""), ("mlm", "-mlm"), ("ltr", "-ltr")):
        pretrain = f"pretrain{suffix}"
        start = f"run=finetune,objective={objective},init_from={pretrained(pretrain)}"
        rows += [{"name": pretrain, "arg": f"run=pretrain,objective={objective}"},
                 *lr_grid(f"bert{suffix}", start),
                 *lr_grid(f"bert{suffix}-1k", f"{start},{subset}")]
    return rows
