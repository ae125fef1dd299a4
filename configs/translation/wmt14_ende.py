"""The Transformer on WMT'14 English-German ("Attention Is All You Need", Vaswani et al. 2017).

Variants (arg string):
  variant=base  6 layers, d_model 512, 8 heads, d_ff 2048, dropout 0.1, 100k steps.
  variant=big   6 layers, d_model 1024, 16 heads, d_ff 4096, dropout 0.3, 300k steps.
  runlocal      a tiny model for a few steps (smoke tests).

Paper settings: shared BPE vocabulary of ~37k, Adam (0.9, 0.98, 1e-9), lr = d_model^-0.5 *
min(step^-0.5, step * 4000^-1.5), label smoothing 0.1, beam 4 with length penalty 0.6,
maximum output length input + 50, the last 5 (base) or 20 (big) checkpoints averaged. The
paper's batches hold ~25k source and ~25k target tokens; here 768 sentence pairs of ~33
tokens. Needs `wmt14_translate/de-en` prepared by tfds as array_record in data_dir.

  jaxformer train --config=configs/translation/wmt14_ende.py:variant=base --workdir=DIR
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="base", runlocal=False)
    if arg.variant not in common.TRANSFORMER_WIDTHS:
        raise ValueError(f"unknown variant {arg.variant!r}; known: "
                         f"{', '.join(common.TRANSFORMER_WIDTHS)}")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        name="transformer", variant=arg.variant, num_layers=6, d_model=512, num_heads=8,
        mlp_dim=2048, dropout_rate=0.1, attention_dropout_rate=0.0, norm_first=False,
        positions="sinusoidal", share_embeddings=True))
    config.task = ml_collections.ConfigDict(dict(
        name="translation", label_smoothing=0.1, max_decode_length=256))
    config.data = ml_collections.ConfigDict(dict(
        name="wmt14_ende", source="en", target="de", vocab_size=37_000, max_source_length=256,
        max_target_length=256, tokenizer_sentences=2_000_000, data_dir=""))
    big = arg.variant == "big"
    num_steps = 300_000 if big else 100_000
    config.train = common.train(
        batch_size=768, num_steps=num_steps, compute_dtype="bfloat16", log_every=100,
        checkpoint_every=2000 if not big else 5000, keep_checkpoints=20 if big else 5,
        average_last=20 if big else 5, cpu_matmuls="xla")  # As bible_enes.py.
    config.evals = common.translation_evals(loss_every=5000, bleu_every=10_000,
                                            bleu_examples=-1)
    common.add_transfer(config)
    d_model = common.TRANSFORMER_WIDTHS[arg.variant]
    config.optim = ml_collections.ConfigDict(dict(
        name="adam", lr=d_model**-0.5, min_lr=0.0, schedule="rsqrt", warmup_steps=4000,
        decay_steps=num_steps, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0, grad_clip=0.0))

    if arg.runlocal:
        config.model.variant = "tiny"
        config.task.max_decode_length = 24
        config.evals.val.update(every_steps=2, num_batches=2)
        config.evals.val_bleu.update(every_steps=2, max_examples=8, decode_batch_size=8,
                                     extra_decode_length=8)
        del config.evals["test_bleu"]
        config.data.update(vocab_size=400, max_source_length=32, max_target_length=32,
                           tokenizer_sentences=2000)
        config.train.update(batch_size=8, num_steps=2, compute_dtype="float32", log_every=1,
                            checkpoint_every=2, keep_checkpoints=2, average_last=2)
        config.optim.update(warmup_steps=1, decay_steps=2, lr=32**-0.5)
    return config
