"""A Transformer for English -> Spanish on the embedded Bible pair (KJV / Reina-Valera 1909).

The paper's model and training recipe ("Attention Is All You Need": post-LN, sinusoidal
positions, shared embeddings, label smoothing 0.1, Adam (0.9, 0.98, 1e-9) with the inverse
square root schedule, beam 4, length penalty 0.6, checkpoint averaging) at a size that trains
on a 2-core CPU in under an hour: 3 + 3 layers of width 256, an 8k joint BPE vocabulary.

Variants (arg string):
  (none)        the CPU recipe above.
  variant=base  the paper's base model on the same data (for an accelerator).
  reverse       Spanish -> English.
  runlocal      a tiny model for a few steps (smoke tests).

  jaxformer train --config=configs/translation/bible_enes.py --workdir=/tmp/bible
  echo "In the beginning was the Word." | jaxformer translate --workdir=/tmp/bible
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="", reverse=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        name="transformer", variant=arg.variant, num_layers=3, d_model=256, num_heads=4,
        mlp_dim=1024, dropout_rate=0.1, attention_dropout_rate=0.0, norm_first=False,
        positions="sinusoidal", share_embeddings=True))
    config.task = ml_collections.ConfigDict(dict(
        name="translation", label_smoothing=0.1, max_decode_length=160))
    source, target = ("es", "en") if arg.reverse else ("en", "es")
    config.data = ml_collections.ConfigDict(dict(
        name="bible_enes", source=source, target=target, vocab_size=8000,
        max_source_length=128, max_target_length=128, tokenizer_sentences=100_000,
        data_dir=""))
    # XLA's own matmuls: faster than oneDNN's for this model (jaxformer/train/cpu_matmuls.py).
    config.train = common.train(batch_size=64, num_steps=2000, checkpoint_every=100,
                                keep_checkpoints=5, average_last=5, cpu_matmuls="xla")
    config.evals = common.translation_evals(loss_every=500, bleu_every=1000,
                                            bleu_examples=400)
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adam", lr=256**-0.5, min_lr=0.0, schedule="rsqrt", warmup_steps=800,
        decay_steps=2000, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0, grad_clip=0.0))

    if arg.variant:
        widths = common.TRANSFORMER_WIDTHS
        if arg.variant not in widths:
            raise ValueError(f"unknown variant {arg.variant!r}; known: {', '.join(widths)}")
        config.optim.lr = widths[arg.variant] ** -0.5
        config.optim.warmup_steps = 4000
    if arg.runlocal:
        config.model.variant = "tiny"
        config.task.max_decode_length = 24
        config.evals.val.update(every_steps=2, num_batches=2)
        config.evals.val_bleu.update(every_steps=2, max_examples=8, decode_batch_size=8,
                                     extra_decode_length=8)
        del config.evals["test_bleu"]
        config.data.update(vocab_size=400, max_source_length=32, max_target_length=32,
                           tokenizer_sentences=2000)
        config.train.update(batch_size=8, num_steps=2, log_every=1, checkpoint_every=1,
                            keep_checkpoints=2, average_last=2)
        config.optim.update(warmup_steps=1, decay_steps=2, lr=32**-0.5)
    return config
