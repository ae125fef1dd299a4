"""A pretrained GPT-2 on the embedded Shakespeare corpus, in the model's own byte-level BPE.

The base config of `jaxformer import-weights --family=gpt`: the import sets the model, the
vocabulary and the context from the checkpoint's config.json and keeps its tokenizer in the
workdir's assets, so that `evaluate` (validation loss on Shakespeare) and `sample` read the
imported workdir as a trained one. With `init_from=DIR` (an imported workdir, or a run
fine-tuned from one) it fine-tunes DIR's model on Shakespeare as nanoGPT's
finetune_shakespeare does: DIR's model, vocabulary and tokenizer; AdamW at a constant 3e-5,
no weight decay or dropout, 20 steps of 32 windows of the model's context.

Args: init_from=DIR, block=N (tokens per window; default: the model's context), batch=N,
steps=N, runlocal (a few short steps: smoke tests; without init_from, a tiny model and a
byte-level BPE of 512 tokens learned from the training text).

  jaxformer import-weights --from=hf/gpt2 --family=gpt --workdir=runs/gpt2
  jaxformer evaluate --workdir=runs/gpt2
  jaxformer sample --workdir=runs/gpt2 --prompt="ROMEO:"
  jaxformer train --config=configs/gpt/pretrained.py:init_from=runs/gpt2 \
      --workdir=runs/gpt2_shakespeare
"""

import os

import ml_collections

from configs import common
from jaxformer.config import parse_arg, read_workdir_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, init_from="", block=0, batch=32, steps=20, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 1337
    config.model = ml_collections.ConfigDict(dict(
        name="gpt", variant="", num_layers=12, num_heads=12, d_model=768, mlp_ratio=4,
        layer_norm_epsilon=1e-5, max_positions=1024, dropout_rate=0.0))
    config.task = ml_collections.ConfigDict(dict(name="lm"))
    config.data = ml_collections.ConfigDict(dict(
        name="shakespeare", tokenizer="byte_bpe", vocab_size=50257, block_size=1024,
        data_dir="", tokenizer_workdir=""))
    config.train = common.train(batch_size=arg.batch, num_steps=arg.steps, log_every=1,
                                checkpoint_every=arg.steps)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("loss", every_steps=5, split="validation",
                                        num_batches=5, perplexity_of="loss")
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=3e-5, min_lr=3e-5, schedule="constant", warmup_steps=0,
        decay_steps=arg.steps, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=1.0))
    config.sample = ml_collections.ConfigDict(dict(
        prompt="\n", max_new_tokens=200, temperature=0.8, top_k=200, top_p=1.0))

    if arg.init_from:
        if not os.path.isfile(os.path.join(arg.init_from, "config.json")):
            raise ValueError(f"init_from={arg.init_from} is not a workdir (no config.json)")
        source = read_workdir_config(arg.init_from)
        config.model = source.model
        config.data.update(vocab_size=source.data.vocab_size, tokenizer=source.data.tokenizer,
                           block_size=source.data.block_size, tokenizer_workdir=arg.init_from)
        config.model.update(dropout_rate=0.0, max_positions=source.model.get(
            "max_positions", 0) or source.data.block_size)
        config.init_from.workdir = arg.init_from
    if arg.runlocal:
        if not arg.init_from:  # A tiny model and a byte-level BPE learned from Shakespeare.
            config.model.update(num_layers=2, num_heads=2, d_model=32, max_positions=32)
            config.data.vocab_size = 512
        config.data.block_size = min(config.data.block_size, 32)
        config.train.update(batch_size=8, num_steps=2, checkpoint_every=2)
        config.evals.val.update(every_steps=2, num_batches=1)
        config.optim.decay_steps = 2
        config.sample.max_new_tokens = 10
    if arg.block:
        config.data.block_size = arg.block
    return config
