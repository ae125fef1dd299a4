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

from jaxformer.config import parse_arg
from jaxformer.models.transformer import VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="base", runlocal=False)
    if arg.variant not in VARIANTS:
        raise ValueError(f"unknown variant {arg.variant!r}; known: {', '.join(VARIANTS)}")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        name="transformer", variant=arg.variant, num_layers=6, d_model=512, num_heads=8,
        mlp_dim=2048, dropout_rate=0.1, attention_dropout_rate=0.0, norm_first=False,
        positions="sinusoidal", share_embeddings=True))
    config.task = ml_collections.ConfigDict(dict(
        name="translation", label_smoothing=0.1, beam_size=4, length_penalty=0.6,
        extra_decode_length=50, max_decode_length=256, decode_batch_size=128,
        bleu_every=10_000, bleu_examples=-1, test_bleu=True))
    config.data = ml_collections.ConfigDict(dict(
        name="wmt14_ende", source="en", target="de", vocab_size=37_000, max_source_length=256,
        max_target_length=256, tokenizer_sentences=2_000_000, data_dir=""))
    big = arg.variant == "big"
    num_steps = 300_000 if big else 100_000
    config.train = ml_collections.ConfigDict(dict(
        batch_size=768, num_steps=num_steps, grad_accum_steps=1, compute_dtype="bfloat16",
        remat=False, strategy="sharded", log_every=100, eval_every=5000, eval_batches=-1,
        checkpoint_every=2000 if not big else 5000, keep_checkpoints=20 if big else 5,
        average_last=20 if big else 5))
    d_model = VARIANTS[arg.variant]["d_model"]
    config.optim = ml_collections.ConfigDict(dict(
        name="adam", lr=d_model**-0.5, min_lr=0.0, schedule="rsqrt", warmup_steps=4000,
        decay_steps=num_steps, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0, grad_clip=0.0))

    if arg.runlocal:
        config.model.variant = "tiny"
        config.task.update(decode_batch_size=8, bleu_every=2, bleu_examples=8, test_bleu=False,
                           max_decode_length=24, extra_decode_length=8)
        config.data.update(vocab_size=400, max_source_length=32, max_target_length=32,
                           tokenizer_sentences=2000)
        config.train.update(batch_size=8, num_steps=2, compute_dtype="float32", log_every=1,
                            eval_every=2, eval_batches=2, checkpoint_every=2, keep_checkpoints=2,
                            average_last=2)
        config.optim.update(warmup_steps=1, decay_steps=2, lr=32**-0.5)
    return config
