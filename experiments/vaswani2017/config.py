"""Vaswani et al. (2017), Table 3: variations on the Transformer, on the English-Spanish Bible.

Each row of the paper's Table 3 is a sweep point, named as in expected.json, that changes the
base model as the paper's row does (relative to the base of the chosen scale):
  base          post-LN, sinusoidal positions, shared embeddings, label smoothing 0.1.
  A1-A4         h = 1, h/2, 2h, 4h heads with d_k = d_v = d_model / h (same computation).
  B1-B2         d_k at 1/4 and 1/2 of the base's d_model / h; d_v follows (the attention has
                one head width), where the paper keeps d_v.
  C1-C3         N at 1/3, 2/3 and 4/3 of the base's layers.
  C4-C5         d_model halved / doubled (d_k = d_v with it), learning rate d_model^-0.5.
  C6-C7         d_ff halved / doubled.
  D1-D4         dropout 0.0 / 0.2; label smoothing 0.0 / 0.2.
  E             learned positions instead of sinusoids.
  big           d_model, d_ff and h doubled, dropout 0.3, 3x the steps.
As for the paper's table, the last checkpoint is evaluated (no checkpoint averaging): beam 4,
length penalty 0.6, BLEU on the test books.

Arg string:
  scale=cpu     (default) the Bible recipe of configs/translation/bible_enes.py shrunk to
                train the table on a 2-core CPU: N=3, d_model 128, d_ff 512, h=8 (d_k 16),
                8k BPE, the recipe's batches of 64 pairs and warmup of 800 steps, 1,500 steps
                (big: 4,500).
  scale=paper   the paper's base model: N=6, d_model 512, d_ff 2048, h=8, a shared BPE
                vocabulary of 37000, warmup 4000, 100k steps (big: 300k); the recipe's
                batches of 64 pairs.
  runlocal      a tiny model for 2 steps (smoke tests).

  jaxformer reproduce experiments/vaswani2017 [--scale=cpu|paper]
  jaxformer train --config=experiments/vaswani2017/config.py:scale=cpu --workdir=DIR \
      --config.model.num_heads=1    # one row by hand (A1)
"""

import ml_collections

from configs import common
from configs.translation import bible_enes

# The base model of each scale: layers, width, heads, feed-forward width and steps.
BASES = {
    "cpu": dict(num_layers=3, d_model=128, num_heads=8, mlp_dim=512, num_steps=1500),
    "paper": dict(num_layers=6, d_model=512, num_heads=8, mlp_dim=2048, num_steps=100_000),
}
RUNLOCAL = dict(num_layers=3, d_model=32, num_heads=8, mlp_dim=64, num_steps=2)


def _base(arg: str | None) -> tuple[ml_collections.ConfigDict, dict]:
    arg = common.experiment_arg(arg)
    return arg, dict(RUNLOCAL if arg.runlocal else BASES[arg.scale])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg, base = _base(arg)
    steps = base.pop("num_steps")
    config = bible_enes.get_config("runlocal" if arg.runlocal else None)
    config.model.update(variant="", head_dim=0, dropout_rate=0.1, **base)
    config.optim.update(lr=base["d_model"] ** -0.5, decay_steps=steps)
    config.train.update(num_steps=steps, average_last=0)
    if arg.runlocal:  # Test BLEU on a few verses, as the table reads it.
        del config.evals["val_bleu"]
        config.evals.test_bleu = common.evaluator(
            "bleu", split="test", max_examples=8, beam_size=4, length_penalty=0.6,
            extra_decode_length=8, decode_batch_size=8)
    elif arg.scale == "paper":
        config.data.vocab_size = 37_000
        config.optim.warmup_steps = 4000
        config.train.update(checkpoint_every=2000, keep_checkpoints=2, log_every=100)
        config.evals = common.translation_evals(loss_every=5000, bleu_every=10_000,
                                                bleu_examples=-1)
    else:
        config.train.update(checkpoint_every=steps // 6, keep_checkpoints=2)
        config.evals.val.every_steps = steps // 3
        del config.evals["val_bleu"]  # Decoding is the slow part: test BLEU at the end only.
    return config


def get_sweep(hyper, arg: str | None = None) -> list[dict]:
    """The rows of Table 3, each a point `{"name": row, "config.<key>": value, ...}`."""
    _, base = _base(arg)
    n, d, h, ff = base["num_layers"], base["d_model"], base["num_heads"], base["mlp_dim"]
    d_k, steps = d // h, base["num_steps"]
    rows = {
        "base": {},
        "A1": {"model.num_heads": 1},
        "A2": {"model.num_heads": h // 2},
        "A3": {"model.num_heads": 2 * h},
        "A4": {"model.num_heads": 4 * h},
        "B1": {"model.head_dim": d_k // 4},
        "B2": {"model.head_dim": d_k // 2},
        "C1": {"model.num_layers": n // 3},
        "C2": {"model.num_layers": 2 * n // 3},
        "C3": {"model.num_layers": 4 * n // 3},
        "C4": {"model.d_model": d // 2, "optim.lr": (d // 2) ** -0.5},
        "C5": {"model.d_model": 2 * d, "optim.lr": (2 * d) ** -0.5},
        "C6": {"model.mlp_dim": ff // 2},
        "C7": {"model.mlp_dim": 2 * ff},
        "D1": {"model.dropout_rate": 0.0},
        "D2": {"model.dropout_rate": 0.2},
        "D3": {"task.label_smoothing": 0.0},
        "D4": {"task.label_smoothing": 0.2},
        "E": {"model.positions": "learned"},
        "big": {"model.d_model": 2 * d, "model.mlp_dim": 2 * ff, "model.num_heads": 2 * h,
                "model.dropout_rate": 0.3, "optim.lr": (2 * d) ** -0.5,
                "train.num_steps": 3 * steps, "optim.decay_steps": 3 * steps},
    }
    return [{"name": name, **{f"config.{k}": v for k, v in overrides.items()}}
            for name, overrides in rows.items()]
