"""Character-level GPT on the embedded Shakespeare corpus (nanoGPT's shakespeare_char).

Variants (arg string):
  (none)      nanoGPT's GPU recipe: 6 layers, 6 heads, width 384, block 256, batch 64, 5000 steps.
  cpu         nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, block 64, batch 12, 2000 steps.
  runlocal    a tiny model for a few steps (smoke tests).
  variant=X   a named model size from jaxformer.models.gpt.VARIANTS (e.g. gpt2-small).

  jaxformer train --config=configs/gpt/shakespeare_char.py:cpu --workdir=/tmp/shakespeare
  jaxformer sweep --config=configs/gpt/shakespeare_char.py:cpu --workdir=/tmp/lr_sweep  # get_sweep
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, cpu=False, runlocal=False, variant="", tokenizer="char")
    config = ml_collections.ConfigDict()
    config.seed = 1337

    config.model = ml_collections.ConfigDict(dict(
        name="gpt", variant=arg.variant, num_layers=6, num_heads=6, d_model=384, mlp_ratio=4,
        dropout_rate=0.2))
    config.task = ml_collections.ConfigDict(dict(name="lm"))
    config.data = ml_collections.ConfigDict(dict(
        name="shakespeare", tokenizer=arg.tokenizer, vocab_size=2000, block_size=256,
        data_dir=""))
    config.train = common.train(batch_size=64, num_steps=5000, log_every=10,
                                checkpoint_every=1000)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("loss", every_steps=250, split="validation",
                                        num_batches=200, perplexity_of="loss")
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, min_lr=1e-4, schedule="cosine", warmup_steps=100,
        decay_steps=5000, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1, grad_clip=1.0))
    config.sample = ml_collections.ConfigDict(dict(
        prompt="\n", max_new_tokens=500, temperature=0.8, top_k=200, top_p=1.0))

    if arg.tokenizer == "bpe":  # Several characters per piece: more text per window.
        config.data.block_size = 128
    if arg.cpu:
        config.model.update(num_layers=4, num_heads=4, d_model=128, dropout_rate=0.0)
        config.data.block_size = 64
        config.train.update(batch_size=12, num_steps=2000, checkpoint_every=500, log_every=50)
        config.evals.val.num_batches = 20
        config.optim.decay_steps = 2000
    if arg.runlocal:
        config.model.update(variant="tiny", dropout_rate=0.0)
        config.data.update(block_size=32, vocab_size=512)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        config.evals.val.update(every_steps=2, num_batches=2)
        config.optim.update(warmup_steps=1, decay_steps=4)
        config.sample.max_new_tokens = 20
    return config


def get_sweep(hyper, arg=None):
    """Peak learning rates around nanoGPT's 1e-3 (`jaxformer sweep --config=...:cpu`)."""
    del arg
    return hyper.sweep("config.optim.lr", [3e-4, 1e-3, 3e-3])
