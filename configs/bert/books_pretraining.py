"""BERT pretraining (masked LM + next sentence) on the embedded books corpus.

Variants (arg string):
  (none)          BERT-mini (4 layers, 4 heads, width 256; 5.5M parameters with the 8,192
                  WordPiece vocabulary trained on the corpus), sequences of 128 tokens with up
                  to 20 predictions, batch 64, 20,000 steps; AdamW lr 5e-4 (the paper's
                  recipe, with the higher lr that small models take), weight decay 0.01,
                  1 % warmup then linear decay; dropout 0.1.
  variant=X       a size from jaxformer.models.bert.VARIANTS: base, large, tiny, mini, ...
  steps=N         train for N steps.
  phase=2         the paper's second phase: 512-token sequences (up to 80 predictions) for a
                  tenth of the steps, every parameter loaded from the phase-1 run `init_from`
                  and its vocabulary reused (phase 1 trains 90 % of the steps at 128).
  init_from=DIR   the phase-1 workdir (phase 2 only).
  objective=X     mlm_nsp (the paper's), mlm (no next-sentence loss; every pair is
                  consecutive text) or ltr (a left-to-right LM: causal attention, next-token
                  loss, no next-sentence loss), the pretraining tasks of the paper's Table 5.
  runlocal        a tiny model for a few steps (smoke tests).

  jaxformer train --config=configs/bert/books_pretraining.py --workdir=runs/bert_books
  jaxformer train --config=configs/bert/books_pretraining.py:phase=2,init_from=runs/bert_books \
      --workdir=runs/bert_books_512
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg

VOCAB_SIZE = 8192
PHASES = {1: dict(seq_length=128, max_predictions=20), 2: dict(seq_length=512,
                                                               max_predictions=80)}
OBJECTIVES = ("mlm_nsp", "mlm", "ltr")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="mini", steps=20_000, phase=1, init_from="",
                    objective="mlm_nsp", runlocal=False)
    if arg.phase not in PHASES:
        raise ValueError(f"unknown phase {arg.phase}; available: 1, 2")
    if (arg.phase == 2) != bool(arg.init_from):
        raise ValueError("phase=2 needs init_from=<the phase-1 workdir>, and only phase 2 "
                         "takes one")
    if arg.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {arg.objective!r}; available: "
                         f"{', '.join(OBJECTIVES)}")
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        name="bert", variant=arg.variant, num_layers=4, num_heads=4, d_model=256, mlp_dim=1024,
        dropout_rate=0.1, attention_dropout_rate=0.1, causal=arg.objective == "ltr"))
    config.task = ml_collections.ConfigDict(dict(name="bert_pretraining",
                                                 objective=arg.objective))
    config.data = ml_collections.ConfigDict(dict(
        name="books", source="embedded", data_dir="", vocab_size=VOCAB_SIZE,
        whole_word_masking=False, next_sentence=arg.objective == "mlm_nsp", eval_examples=2048,
        **PHASES[arg.phase]))
    num_steps = arg.steps if arg.phase == 1 else max(arg.steps // 9, 1)
    config.train = common.train(batch_size=64, num_steps=num_steps, log_every=100,
                                checkpoint_every=2000)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("loss", every_steps=1000, split="validation",
                                        num_batches=-1)
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, min_lr=0.0, schedule="linear", warmup_steps=num_steps // 100,
        decay_steps=num_steps, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, grad_clip=1.0))
    if arg.phase == 2:
        config.init_from.workdir = arg.init_from
        config.data.tokenizer_workdir = arg.init_from
        config.train.batch_size = 16  # 4x the tokens per sequence.
        config.evals.val.every_steps = max(num_steps // 4, 1)

    if arg.runlocal:
        config.model.update(variant="tiny", dropout_rate=0.0, attention_dropout_rate=0.0)
        config.data.update(vocab_size=512, eval_examples=16, seq_length=32, max_predictions=5)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        config.evals.val.update(every_steps=2, num_batches=1)
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config
